// GoBGP sets TCP MD5 signatures on its sockets, which fails on multipath TCP sockets (Go's
// default for listeners since 1.24): every binary embedding the speaker must turn MPTCP off.
//go:debug multipathtcp=0

package main

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/terracenet/terrace/bgp/agent"
	"github.com/terracenet/terrace/bgp/speaker"
	"github.com/terracenet/terrace/cmd/internal/cliconf"
	"github.com/terracenet/terrace/node"
)

func addBGPFlags(f *pflag.FlagSet) {
	f.Bool("bgp", true, "run the BGP speaker (advertise this node's blocks, program learned routes)")
	f.String("bgp-debug-listen", "", "loopback address (e.g. 127.0.0.1:50051) for GoBGP's gRPC API, for the gobgp CLI; empty: none")
	f.Duration("bgp-resync-interval", agent.DefaultResyncInterval, "how often BGP routes in the kernel are read back and repaired (at least 1s; 0: the default)")
}

// bgpComponent resolves the BGP settings; a debug listener off loopback is bad usage.
func bgpComponent(cfg *cliconf.Config) (node.Component, error) {
	dbg := cfg.String("bgp-debug-listen")
	if dbg != "" {
		// The speaker's own check, so what passes here is what it will listen on.
		if err := speaker.CheckDebugListen(dbg); err != nil {
			return nil, fmt.Errorf("--bgp-debug-listen: %w", err)
		}
	}
	resync, err := cfg.Duration("bgp-resync-interval")
	if err != nil {
		return nil, fmt.Errorf("parse --bgp-resync-interval: %w", err)
	}
	if resync != 0 && resync < time.Second {
		return nil, fmt.Errorf("--bgp-resync-interval %s: want at least 1s, or 0 for the default %s", resync, agent.DefaultResyncInterval)
	}
	return agent.NewComponent(agent.ComponentConfig{
		StateDir:       cfg.String("state-dir"),
		DebugListen:    dbg,
		ResyncInterval: resync,
		LogLevel:       cfg.String("log-level"),
		LogLevelFixed:  cfg.Source("log-level") != cliconf.SourceDefault,
	}), nil
}
