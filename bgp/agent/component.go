package agent

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/terracenet/terrace/internal/loglevel"
	"github.com/terracenet/terrace/node"
)

// ComponentConfig is the bgp part of terrace-node's configuration.
type ComponentConfig struct {
	StateDir       string
	DebugListen    string
	ResyncInterval time.Duration
	// LogLevel is the bgp part's starting log level (terrace-node's --log-level); unless
	// LogLevelFixed, BGPConfiguration logSeverityScreen changes it while it runs.
	LogLevel      string
	LogLevelFixed bool
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
	log := env.Log
	var level *slog.LevelVar
	if !c.cfg.LogLevelFixed {
		lv, err := loglevel.Parse(c.cfg.LogLevel)
		if err != nil {
			return fmt.Errorf("run bgp: %w", err)
		}
		level = new(slog.LevelVar)
		level.Set(lv)
		var adjustable bool
		if log, adjustable = loglevel.Derive(log, level); !adjustable {
			level = nil
		}
	}
	underlay, err := SubscribeUnderlay(ctx, log)
	if err != nil {
		// Routes flushed with a link that went down then come back at the resync.
		log.Warn("no link updates for the bgp route writer", "err", err)
	}
	underlayRoutes, err := SubscribeUnderlayRoutes(ctx, log)
	if err != nil {
		log.Warn("no route updates for the bgp next-hop resolver; underlay route changes are followed at the resync", "err", err)
	}
	a, err := New(Config{
		UnderlayEvents: underlay,
		UnderlayRoutes: underlayRoutes,
		NodeName:       env.Node.Metadata.Name,
		Client:         env.Client,
		StateDir:       c.cfg.StateDir,
		DebugListen:    c.cfg.DebugListen,
		ResyncInterval: c.cfg.ResyncInterval,
		Logger:         log,
		LogLevel:       level,
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
