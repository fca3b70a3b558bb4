package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/terracenet/terrace/cmd/internal/cliconf"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/felix"
	"github.com/terracenet/terrace/felix/dataplane/routes"
	"github.com/terracenet/terrace/node"
)

func addFelixFlags(f *pflag.FlagSet) {
	f.Bool("felix", true, "run felix (policy, routes to workloads, interface settings); false where iptables is unavailable")
	f.String("felix-health-listen", felix.DefaultHealthListen, "address of felix's /liveness and /readiness; empty disables (unless given, FelixConfiguration healthEnabled/healthHost/healthPort apply)")
	f.String("felix-metrics-listen", felix.DefaultMetricsListen, "address of felix's Prometheus /metrics; empty disables (unless given, FelixConfiguration prometheusMetrics* apply)")
	f.Duration("felix-resync-interval", 0, fmt.Sprintf("how often felix re-reads iptables, ipsets and routes and repairs drift: 0 (never) or at least 1s; "+
		"when given it sets FelixConfiguration's iptablesRefreshInterval, ipsetsRefreshInterval and routeRefreshInterval alike, "+
		"else those apply (defaults %s, %s and %s)",
		felix.DefaultIptablesRefreshInterval, felix.DefaultIPSetsRefreshInterval, felix.DefaultRouteRefreshInterval))
	f.Duration("felix-apply-interval", felix.DefaultApplyInterval, "least time between two dataplane applies while updates keep coming")
	f.String("felix-ipv6", felix.IPv6Auto, "program ip6tables too: auto (when the node has an IPv6 address), true or false; off when ip6tables-restore is missing (unless given, FelixConfiguration ipv6Support applies)")
	f.String("felix-iptables-backend", felix.BackendAuto, "iptables back end: auto (the one other tools' rules are in), legacy or nft (unless given, FelixConfiguration iptablesBackend applies)")
	f.String("felix-fast-path", felix.FastPathAuto, "forward packets of established flows past the IP stack and iptables with a tc program: auto (where the kernel can: Linux 6.6 with BTF), true (required) or false; sets net.netfilter.nf_conntrack_tcp_be_liberal=1")
	f.String("rt-protos-file", routes.ProtocolNamesFile, "iproute2 file naming Terrace's route protocols; empty: do not write it")
}

// felixComponent resolves felix's settings.
func felixComponent(cfg *cliconf.Config) (node.Component, error) {
	resync, err := cfg.Duration("felix-resync-interval")
	if err != nil {
		return nil, fmt.Errorf("parse --felix-resync-interval: %w", err)
	}
	// The bounds FelixConfiguration's refresh intervals have: a few milliseconds would keep a
	// core busy re-reading the kernel, a negative value would switch repair off unnoticed.
	if resync < 0 || (resync > 0 && resync < api.MinRefreshInterval) {
		return nil, fmt.Errorf("--felix-resync-interval %s: want 0 (no periodic resync) or at least %s", resync, api.MinRefreshInterval)
	}
	explicitResync := cfg.Source("felix-resync-interval") != cliconf.SourceDefault
	var refresh felix.RefreshIntervals // zero: each class's default, unless FelixConfiguration says
	if explicitResync {
		refresh = felix.RefreshEvery(resync)
	}
	apply, err := cfg.Duration("felix-apply-interval")
	if err != nil {
		return nil, fmt.Errorf("parse --felix-apply-interval: %w", err)
	}
	if apply < 0 {
		return nil, fmt.Errorf("--felix-apply-interval %s: must not be negative", apply)
	}
	ipv6, err := felix.ParseIPv6Mode(cfg.String("felix-ipv6"))
	if err != nil {
		return nil, fmt.Errorf("--felix-ipv6: %w", err)
	}
	backend, err := felix.ParseBackend(cfg.String("felix-iptables-backend"))
	if err != nil {
		return nil, fmt.Errorf("--felix-iptables-backend: %w", err)
	}
	fastPath, err := felix.ParseFastPathMode(cfg.String("felix-fast-path"))
	if err != nil {
		return nil, fmt.Errorf("--felix-fast-path: %w", err)
	}
	return felix.NewComponent(felix.ComponentConfig{
		HealthListen:  cfg.String("felix-health-listen"),
		MetricsListen: cfg.String("felix-metrics-listen"),
		Refresh:       refresh,
		ApplyInterval: apply,
		IPv6:          ipv6,
		Backend:       backend,
		FastPath:      fastPath,
		LogLevel:      cfg.String("log-level"),
		Explicit: felix.Explicit{
			HealthListen:  cfg.Source("felix-health-listen") != cliconf.SourceDefault,
			MetricsListen: cfg.Source("felix-metrics-listen") != cliconf.SourceDefault,
			Refresh:       explicitResync,
			LogLevel:      cfg.Source("log-level") != cliconf.SourceDefault,
			IPv6:          cfg.Source("felix-ipv6") != cliconf.SourceDefault,
			Backend:       cfg.Source("felix-iptables-backend") != cliconf.SourceDefault,
		},
	}), nil
}

func writeProtocolNames(path string) error {
	dir := filepath.Dir(path)
	if _, err := os.Stat(filepath.Dir(dir)); err != nil {
		// No iproute2 configuration directory at all: nothing would read the file.
		return fmt.Errorf("write protocol names: %w", err)
	}
	return routes.WriteProtocolNames(path)
}
