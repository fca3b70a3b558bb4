package agent

import (
	"context"
	"time"

	"github.com/terracenet/terrace/node"
)

// ComponentConfig is the bgp part of terrace-node's configuration.
type ComponentConfig struct {
	StateDir       string
	DebugListen    string
	ResyncInterval time.Duration
}

// Component plugs the agent into terrace-node.
type Component struct{ cfg ComponentConfig }

// NewComponent returns the bgp component of terrace-node.
func NewComponent(cfg ComponentConfig) *Component { return &Component{cfg: cfg} }

// Name implements node.Component.
func (c *Component) Name() string { return "bgp" }

// Run implements node.Component. The speaker is not stopped on return: see Config.StopOnExit.
func (c *Component) Run(ctx context.Context, env node.ComponentEnv) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	underlay, err := SubscribeUnderlay(ctx, env.Log)
	if err != nil {
		// Routes flushed with a link that went down then come back at the resync.
		env.Log.Warn("no link updates for the bgp route writer", "err", err)
	}
	a, err := New(Config{
		UnderlayEvents: underlay,
		NodeName:       env.Node.Metadata.Name,
		Client:         env.Client,
		StateDir:       c.cfg.StateDir,
		DebugListen:    c.cfg.DebugListen,
		ResyncInterval: c.cfg.ResyncInterval,
		Logger:         env.Log,
		Publish: func(s Status) {
			if env.Board != nil {
				env.Board.SetComponent("bgp", node.ComponentStatus{State: s.State, Detail: s.Detail, Details: s.Details()})
			}
		},
	})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}
