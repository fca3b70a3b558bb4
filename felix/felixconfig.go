package felix

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/internal/loglevel"
)

// Explicit says which ComponentConfig settings the operator gave on the command line (or in the
// environment or file); those win over FelixConfiguration, as a flag does in Calico.
// Refresh is --felix-resync-interval, which sets all three refresh intervals.
type Explicit struct {
	HealthListen, MetricsListen, Refresh, LogLevel, IPv6, Backend bool
}

// RestartError ends the agent's Run when FelixConfiguration changes a setting the dataplane is
// built with (the iptables back end, IPv6): the component builds a new one and runs again, as
// Calico's felix restarts for such settings. The writers take over what the kernel holds, so
// policy stays in force meanwhile.
type RestartError struct {
	Setting, Old, New string
	// next is the configuration the change gives, which the next run is built with: read again
	// instead, it could differ from what the agent's syncer sees (an undecodable resource is an
	// error to a read and absent to the syncer) and the runs would restart each other for ever.
	next ComponentConfig
}

func (e *RestartError) Error() string {
	return fmt.Sprintf("felix setting %s changed from %s to %s: the dataplane is built again", e.Setting, e.Old, e.New)
}

// readFelixConfig returns the cluster-wide FelixConfiguration and this node's (node.<name>),
// either of which may be nil.
func readFelixConfig(ctx context.Context, c *datastore.Client, nodeName string) ([]*api.FelixConfigurationSpec, error) {
	var out []*api.FelixConfigurationSpec
	for _, name := range []string{api.DefaultConfigName, api.NodeConfigPrefix + nodeName} {
		r, err := c.Get(ctx, api.KindFelixConfiguration, "", name)
		if errors.Is(err, datastore.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read FelixConfiguration %s: %w", name, err)
		}
		if fc, ok := r.(*api.FelixConfiguration); ok {
			out = append(out, &fc.Spec)
		}
	}
	return out, nil
}

// applyFelixConfig resolves the settings FelixConfiguration may carry for the agent itself
// (health and metrics addresses, the three refresh intervals), later specs (the node's)
// overriding earlier ones field by field and explicit flags overriding both. It is pure:
// Component.Run uses it for the start and the agent (live) again on every change.
func applyFelixConfig(cc ComponentConfig, specs []*api.FelixConfigurationSpec) ComponentConfig {
	healthOn, healthHost, healthPort := cc.HealthListen != "", "", 0
	metricsOn, metricsHost, metricsPort := cc.MetricsListen != "", "", 0
	var iptablesRefresh, ipsetsRefresh, routeRefresh *api.Duration
	var level, backend string
	var ipv6 *bool
	for _, s := range specs {
		if s.IptablesBackend != "" {
			backend = s.IptablesBackend
		}
		if s.IPv6Support != nil {
			ipv6 = s.IPv6Support
		}
		if s.LogSeverityScreen != "" {
			level = s.LogSeverityScreen
		}
		if s.HealthEnabled != nil {
			healthOn = *s.HealthEnabled
		}
		if s.HealthHost != "" {
			healthHost = s.HealthHost
		}
		if s.HealthPort != nil {
			healthPort = *s.HealthPort
		}
		if s.PrometheusMetricsEnabled != nil {
			metricsOn = *s.PrometheusMetricsEnabled
		}
		if s.PrometheusMetricsHost != "" {
			metricsHost = s.PrometheusMetricsHost
		}
		if s.PrometheusMetricsPort != nil {
			metricsPort = *s.PrometheusMetricsPort
		}
		if s.IptablesRefreshInterval != nil {
			iptablesRefresh = s.IptablesRefreshInterval
		}
		if s.IpsetsRefreshInterval != nil {
			ipsetsRefresh = s.IpsetsRefreshInterval
		}
		if s.RouteRefreshInterval != nil {
			routeRefresh = s.RouteRefreshInterval
		}
	}
	listen := func(on bool, cur, host string, port int, dflt string) string {
		if !on {
			return ""
		}
		if cur == "" {
			cur = dflt
		}
		h, p, err := net.SplitHostPort(cur)
		if err != nil {
			return cur
		}
		if host != "" {
			h = host
		}
		if port != 0 {
			p = strconv.Itoa(port)
		}
		return net.JoinHostPort(h, p)
	}
	if !cc.Explicit.HealthListen {
		cc.HealthListen = listen(healthOn, cc.HealthListen, healthHost, healthPort, DefaultHealthListen)
	}
	if !cc.Explicit.MetricsListen {
		cc.MetricsListen = listen(metricsOn, cc.MetricsListen, metricsHost, metricsPort, DefaultMetricsListen)
	}
	if !cc.Explicit.LogLevel && level != "" {
		cc.LogLevel = level
	}
	if !cc.Explicit.Backend && backend != "" {
		// Validation allows Legacy, NFT and Auto only, the flag's values in Calico's spelling.
		cc.Backend, _ = ParseBackend(backend)
	}
	if !cc.Explicit.IPv6 && ipv6 != nil {
		// Calico's ipv6Support: true programs ip6tables whether or not the node has an address.
		cc.IPv6 = IPv6Off
		if *ipv6 {
			cc.IPv6 = IPv6On
		}
	}
	if !cc.Explicit.Refresh {
		// --felix-resync-interval sets all three when given; otherwise each field is its own.
		refresh := func(to *time.Duration, d *api.Duration) {
			if d == nil {
				return
			}
			*to = d.Duration
			if *to == 0 {
				*to = -1 // Calico: 0 disables the periodic refresh
			}
		}
		refresh(&cc.Refresh.Iptables, iptablesRefresh)
		refresh(&cc.Refresh.IPSets, ipsetsRefresh)
		refresh(&cc.Refresh.Routes, routeRefresh)
	}
	return cc
}

// effectiveConfig is applyFelixConfig with the agent's defaults filled in, so equal settings
// compare equal however they were expressed.
func effectiveConfig(base ComponentConfig, specs []*api.FelixConfigurationSpec) ComponentConfig {
	cc := applyFelixConfig(base, specs)
	cc.Refresh = cc.Refresh.withDefaults()
	cc.IPv6, cc.Backend = cmp.Or(cc.IPv6, IPv6Auto), cmp.Or(cc.Backend, BackendAuto)
	return cc
}

// live follows FelixConfiguration "default" and "node.<name>" while the agent runs and applies
// changes of the agent's own settings in place: the health and metrics endpoints move (see
// endpointServer) and each writer class's refresh ticker changes its period. None of this
// touches the dataplane; settings the calculation reads (defaultEndpointToHostAction, failsafe
// ports, natOutgoingAddress) reach it through the calculator's own FelixConfiguration updates.
// Apart from the endpoint servers, which run on their own goroutines, live belongs to the
// agent's loop.
type live struct {
	base *ComponentConfig // nil: the settings are fixed by Config
	// restart is set when a change needs a new dataplane; the agent's loop then ends Run with it.
	restart *RestartError
	node    string
	specs   map[string]*api.FelixConfigurationSpec // by slot: "default", "node"
	cur     ComponentConfig

	health, metrics *endpointServer
	resync          resyncTickers
	hl              *health
	log             *slog.Logger
	level           *slog.LevelVar // nil: the log level is not felix's to change
}

func (a *Agent) newLive() *live {
	cfg := a.cfg
	l := &live{
		base: cfg.FelixConfigBase, node: cfg.NodeName, specs: map[string]*api.FelixConfigurationSpec{},
		cur: ComponentConfig{HealthListen: cfg.HealthListen, MetricsListen: cfg.MetricsListen, Refresh: cfg.Refresh,
			IPv6: cfg.IPv6Mode, Backend: cfg.Backend},
		hl: a.health, log: a.log, level: cfg.LogLevel,
	}
	l.health = newEndpointServer("health", "healthListen", cfg.HealthListen, a.healthHandler(), cfg.Listen, a.log, a.health, cfg.RetryMin, cfg.RetryMax)
	l.metrics = newEndpointServer("metrics", "metricsListen", cfg.MetricsListen, a.metricsHandler(), cfg.Listen, a.log, a.health, cfg.RetryMin, cfg.RetryMax)
	return l
}

// serve runs both HTTP endpoints until ctx is done.
func (l *live) serve(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- l.health.run(ctx) }()
	go func() { errc <- l.metrics.run(ctx) }()
	return errors.Join(<-errc, <-errc)
}

// observe takes the FelixConfiguration updates among ups and applies what they change.
func (l *live) observe(ups []datastore.ResourceUpdate) {
	if l.base == nil {
		return
	}
	seen := false
	for _, u := range ups {
		if u.Kind != api.KindFelixConfiguration {
			continue
		}
		var slot string
		switch u.Name {
		case api.DefaultConfigName:
			slot = "default"
		case api.NodeConfigPrefix + l.node:
			slot = "node"
		default:
			continue // another node's
		}
		seen = true
		if fc, _ := u.Resource.(*api.FelixConfiguration); fc != nil {
			spec := fc.Spec
			l.specs[slot] = &spec
		} else {
			delete(l.specs, slot)
		}
	}
	if !seen {
		return
	}
	var specs []*api.FelixConfigurationSpec
	for _, slot := range []string{"default", "node"} { // the node's wins
		if s := l.specs[slot]; s != nil {
			specs = append(specs, s)
		}
	}
	l.apply(effectiveConfig(*l.base, specs))
}

// apply restarts only the pieces whose setting changed. The endpoint servers log their own
// change once it is in effect (a bind may fail and be retried).
func (l *live) apply(next ComponentConfig) {
	// Decided afresh by each change: a change and its revert in one batch need no new dataplane.
	switch {
	case l.cur.IPv6 != "" && next.IPv6 != l.cur.IPv6:
		l.restart = &RestartError{Setting: "ipv6Support", Old: l.cur.IPv6, New: next.IPv6, next: next}
	case l.cur.Backend != "" && next.Backend != l.cur.Backend:
		l.restart = &RestartError{Setting: "iptablesBackend", Old: l.cur.Backend, New: next.Backend, next: next}
	default:
		l.restart = nil
	}
	if next.HealthListen != l.cur.HealthListen {
		l.health.set(next.HealthListen)
	}
	if next.MetricsListen != l.cur.MetricsListen {
		l.metrics.set(next.MetricsListen)
	}
	for c := range numClasses {
		if old, now := l.cur.Refresh.of(c), next.Refresh.of(c); now != old {
			l.resync[c].set(now)
			l.log.Info("applied felix setting change", "setting", c.setting(), "old", intervalString(old), "new", intervalString(now))
		}
	}
	if next.Refresh != l.cur.Refresh {
		l.hl.setLiveWindow(liveWindow(next.Refresh.longest()))
	}
	if l.level != nil {
		if lv := parseLevel(next.LogLevel, l.log); lv != l.level.Level() {
			// Said before the change, so it is seen whichever way the level moves.
			l.log.Info("applied felix setting change", "setting", "logSeverityScreen", "old", l.level.Level().String(), "new", lv.String())
			l.level.Set(lv)
		}
	}
	l.cur.HealthListen, l.cur.MetricsListen, l.cur.Refresh = next.HealthListen, next.MetricsListen, next.Refresh
}

// parseLevel reads a level validation has already accepted; anything else is info, said once.
func parseLevel(s string, log *slog.Logger) slog.Level {
	lv, err := loglevel.Parse(s)
	if err != nil {
		log.Warn("log level not understood, using info", "err", err)
		return slog.LevelInfo
	}
	return lv
}
