package felix

import (
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
)

func TestApplyFelixConfig(t *testing.T) {
	ptr := func(v int) *int { return &v }
	yes, no := true, false
	sec := func(d time.Duration) *api.Duration { return &api.Duration{Duration: d} }
	base := ComponentConfig{HealthListen: DefaultHealthListen, MetricsListen: DefaultMetricsListen}
	tests := []struct {
		name  string
		cc    ComponentConfig
		specs []*api.FelixConfigurationSpec
		want  ComponentConfig
	}{
		{"no configuration", base, nil, base},
		{"ports and host", base, []*api.FelixConfigurationSpec{{HealthPort: ptr(9199), PrometheusMetricsHost: "203.0.113.5", PrometheusMetricsPort: ptr(9191)}},
			ComponentConfig{HealthListen: "127.0.0.1:9199", MetricsListen: "203.0.113.5:9191"}},
		{"node overrides default", base, []*api.FelixConfigurationSpec{
			{HealthPort: ptr(9199), IptablesRefreshInterval: sec(time.Minute)},
			{HealthPort: ptr(9299), PrometheusMetricsEnabled: &no},
		}, ComponentConfig{HealthListen: "127.0.0.1:9299", MetricsListen: "", Refresh: RefreshIntervals{Iptables: time.Minute}}},
		{"disabled health, zero refresh", base, []*api.FelixConfigurationSpec{{HealthEnabled: &no, IptablesRefreshInterval: &api.Duration{}}},
			ComponentConfig{HealthListen: "", MetricsListen: DefaultMetricsListen, Refresh: RefreshIntervals{Iptables: -1}}},
		{"enabled where the flag default was off", ComponentConfig{Refresh: RefreshEvery(time.Second)},
			[]*api.FelixConfigurationSpec{{HealthEnabled: &yes}},
			ComponentConfig{HealthListen: DefaultHealthListen, Refresh: RefreshEvery(time.Second)}},
		{"explicit flags win", ComponentConfig{HealthListen: "127.0.0.1:1", MetricsListen: "", Refresh: RefreshEvery(time.Second),
			Explicit: Explicit{HealthListen: true, MetricsListen: true, Refresh: true}},
			[]*api.FelixConfigurationSpec{{HealthPort: ptr(2), PrometheusMetricsEnabled: &yes, IptablesRefreshInterval: sec(time.Hour)}},
			ComponentConfig{HealthListen: "127.0.0.1:1", MetricsListen: "", Refresh: RefreshEvery(time.Second),
				Explicit: Explicit{HealthListen: true, MetricsListen: true, Refresh: true}}},
		{"one explicit flag wins, the others follow the node over the default",
			ComponentConfig{HealthListen: "127.0.0.1:1", MetricsListen: DefaultMetricsListen, Explicit: Explicit{HealthListen: true}},
			[]*api.FelixConfigurationSpec{
				{HealthPort: ptr(2), PrometheusMetricsPort: ptr(3), IptablesRefreshInterval: sec(time.Hour)},
				{HealthPort: ptr(4), PrometheusMetricsPort: ptr(5)},
			},
			ComponentConfig{HealthListen: "127.0.0.1:1", MetricsListen: "127.0.0.1:5", Refresh: RefreshIntervals{Iptables: time.Hour},
				Explicit: Explicit{HealthListen: true}}},
		{"back end and IPv6, node over default", base, []*api.FelixConfigurationSpec{
			{IptablesBackend: "Legacy", IPv6Support: &yes},
			{IptablesBackend: "NFT"},
		}, ComponentConfig{HealthListen: DefaultHealthListen, MetricsListen: DefaultMetricsListen,
			Backend: BackendNFT, IPv6: IPv6On}},
		{"Auto back end, IPv6 off", ComponentConfig{Backend: BackendLegacy, IPv6: IPv6Auto},
			[]*api.FelixConfigurationSpec{{IptablesBackend: "Auto", IPv6Support: &no}},
			ComponentConfig{Backend: BackendAuto, IPv6: IPv6Off}},
		{"explicit back end and IPv6 win", ComponentConfig{Backend: BackendLegacy, IPv6: IPv6Auto, Explicit: Explicit{Backend: true, IPv6: true}},
			[]*api.FelixConfigurationSpec{{IptablesBackend: "NFT", IPv6Support: &yes}},
			ComponentConfig{Backend: BackendLegacy, IPv6: IPv6Auto, Explicit: Explicit{Backend: true, IPv6: true}}},
		{"node re-enables what the default disabled", base, []*api.FelixConfigurationSpec{
			{HealthEnabled: &no, PrometheusMetricsEnabled: &no},
			{HealthEnabled: &yes, HealthHost: "::1"},
		}, ComponentConfig{HealthListen: "[::1]:9099", MetricsListen: ""}},
	}
	for _, tt := range tests {
		got := applyFelixConfig(tt.cc, tt.specs)
		if d := cmp.Diff(tt.want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, d)
		}
	}
}

// TestApplyFelixConfigRefresh: each of the three refresh intervals is taken from
// FelixConfiguration on its own, the node's over the default's field by field, 0 meaning
// disabled; --felix-resync-interval given explicitly sets all three and wins over both.
func TestApplyFelixConfigRefresh(t *testing.T) {
	d := func(v time.Duration) *api.Duration { return &api.Duration{Duration: v} }
	tests := []struct {
		name  string
		flag  *time.Duration // --felix-resync-interval when given
		specs []*api.FelixConfigurationSpec
		want  RefreshIntervals
	}{
		{"nothing set: defaults later", nil, nil, RefreshIntervals{}},
		{"each from the default", nil, []*api.FelixConfigurationSpec{
			{IptablesRefreshInterval: d(time.Minute), IpsetsRefreshInterval: d(2 * time.Minute), RouteRefreshInterval: d(3 * time.Minute)},
		}, RefreshIntervals{Iptables: time.Minute, IPSets: 2 * time.Minute, Routes: 3 * time.Minute}},
		{"one alone", nil, []*api.FelixConfigurationSpec{{RouteRefreshInterval: d(5 * time.Second)}},
			RefreshIntervals{Routes: 5 * time.Second}},
		{"node overrides the default field by field", nil, []*api.FelixConfigurationSpec{
			{IptablesRefreshInterval: d(time.Minute), IpsetsRefreshInterval: d(2 * time.Minute), RouteRefreshInterval: d(3 * time.Minute)},
			{IpsetsRefreshInterval: d(20 * time.Second)},
		}, RefreshIntervals{Iptables: time.Minute, IPSets: 20 * time.Second, Routes: 3 * time.Minute}},
		{"0 disables each", nil, []*api.FelixConfigurationSpec{
			{IptablesRefreshInterval: d(0), IpsetsRefreshInterval: d(0), RouteRefreshInterval: d(0)},
		}, RefreshIntervals{Iptables: -1, IPSets: -1, Routes: -1}},
		{"node disables one the default set", nil, []*api.FelixConfigurationSpec{
			{RouteRefreshInterval: d(30 * time.Second), IpsetsRefreshInterval: d(30 * time.Second)},
			{RouteRefreshInterval: d(0)},
		}, RefreshIntervals{IPSets: 30 * time.Second, Routes: -1}},
		{"node enables one the default disabled", nil, []*api.FelixConfigurationSpec{
			{IpsetsRefreshInterval: d(0)},
			{IpsetsRefreshInterval: d(5 * time.Second)},
		}, RefreshIntervals{IPSets: 5 * time.Second}},
		{"explicit flag sets all three over both", new(10 * time.Second), []*api.FelixConfigurationSpec{
			{IptablesRefreshInterval: d(time.Minute), IpsetsRefreshInterval: d(time.Minute), RouteRefreshInterval: d(time.Minute)},
			{IpsetsRefreshInterval: d(0)},
		}, RefreshIntervals{Iptables: 10 * time.Second, IPSets: 10 * time.Second, Routes: 10 * time.Second}},
		{"explicit flag 0 disables all three", new(time.Duration(0)), []*api.FelixConfigurationSpec{
			{IptablesRefreshInterval: d(time.Minute), RouteRefreshInterval: d(time.Minute)},
		}, RefreshIntervals{Iptables: -1, IPSets: -1, Routes: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := ComponentConfig{}
			if tt.flag != nil {
				base.Refresh, base.Explicit.Refresh = RefreshEvery(*tt.flag), true
			}
			got := applyFelixConfig(base, tt.specs).Refresh
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("applyFelixConfig (-want +got):\n%s", d)
			}
		})
	}
}

// TestEffectiveConfigRefresh: unset intervals get Calico's defaults (iptables 180 s, ipsets and
// routes 90 s), so a FelixConfiguration spelling the default out compares equal to none; a
// disabled one stays disabled, also when the flag disabled it.
func TestEffectiveConfigRefresh(t *testing.T) {
	d := func(v time.Duration) *api.Duration { return &api.Duration{Duration: v} }
	defaults := RefreshIntervals{Iptables: 180 * time.Second, IPSets: 90 * time.Second, Routes: 90 * time.Second}
	tests := []struct {
		name  string
		base  ComponentConfig
		specs []*api.FelixConfigurationSpec
		want  RefreshIntervals
	}{
		{"defaults", ComponentConfig{}, nil, defaults},
		{"defaults spelled out", ComponentConfig{}, []*api.FelixConfigurationSpec{
			{IptablesRefreshInterval: d(3 * time.Minute), IpsetsRefreshInterval: d(90 * time.Second), RouteRefreshInterval: d(90 * time.Second)},
		}, defaults},
		{"one set, the others default", ComponentConfig{}, []*api.FelixConfigurationSpec{{IpsetsRefreshInterval: d(time.Second)}},
			RefreshIntervals{Iptables: 180 * time.Second, IPSets: time.Second, Routes: 90 * time.Second}},
		{"one disabled", ComponentConfig{}, []*api.FelixConfigurationSpec{{RouteRefreshInterval: d(0)}},
			RefreshIntervals{Iptables: 180 * time.Second, IPSets: 90 * time.Second, Routes: -1}},
		{"flag 0 given: never, not the defaults", ComponentConfig{Refresh: RefreshEvery(0), Explicit: Explicit{Refresh: true}}, nil,
			RefreshIntervals{Iptables: -1, IPSets: -1, Routes: -1}},
		{"flag given", ComponentConfig{Refresh: RefreshEvery(3 * time.Second), Explicit: Explicit{Refresh: true}},
			[]*api.FelixConfigurationSpec{{IpsetsRefreshInterval: d(time.Hour)}},
			RefreshIntervals{Iptables: 3 * time.Second, IPSets: 3 * time.Second, Routes: 3 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := cmp.Diff(tt.want, effectiveConfig(tt.base, tt.specs).Refresh); d != "" {
				t.Errorf("effectiveConfig (-want +got):\n%s", d)
			}
		})
	}
}

func felixConfigUpdate(name string, spec *api.FelixConfigurationSpec) datastore.ResourceUpdate {
	u := datastore.ResourceUpdate{Type: kv.UpdateDelete, Kind: api.KindFelixConfiguration, Name: name}
	if spec != nil {
		u.Type = kv.UpdatePut
		u.Resource = &api.FelixConfiguration{Metadata: api.ObjectMeta{Name: name}, Spec: *spec}
	}
	return u
}

// TestLiveFollowsFelixConfiguration feeds FelixConfiguration updates as the syncer delivers them
// and checks what the agent would then serve, how often each writer class would resync, and the
// liveness window, which follows the longest refresh that is on.
func TestLiveFollowsFelixConfiguration(t *testing.T) {
	ptr := func(v int) *int { return &v }
	d := func(v time.Duration) *api.Duration { return &api.Duration{Duration: v} }
	no := false
	type want struct {
		health, metrics string
		refresh         RefreshIntervals
	}
	type step struct {
		what string
		ups  []datastore.ResourceUpdate
		want want
	}
	flags := ComponentConfig{HealthListen: DefaultHealthListen, MetricsListen: DefaultMetricsListen}
	dflt := RefreshIntervals{}.withDefaults()
	defaults := want{DefaultHealthListen, DefaultMetricsListen, dflt}
	refresh := func(ipt, ips, rt time.Duration) RefreshIntervals {
		return RefreshIntervals{Iptables: ipt, IPSets: ips, Routes: rt}
	}
	tests := []struct {
		name  string
		base  *ComponentConfig
		start ComponentConfig
		steps []step
	}{
		{"precedence node over default over flags", &flags, effectiveConfig(flags, nil), []step{
			{"default sets ports and refresh", []datastore.ResourceUpdate{felixConfigUpdate("default",
				&api.FelixConfigurationSpec{HealthPort: ptr(9199), IptablesRefreshInterval: d(10 * time.Second)})},
				want{"127.0.0.1:9199", DefaultMetricsListen, refresh(10*time.Second, dflt.IPSets, dflt.Routes)}},
			{"another node's configuration is not ours", []datastore.ResourceUpdate{felixConfigUpdate("node.other",
				&api.FelixConfigurationSpec{HealthPort: ptr(1), PrometheusMetricsEnabled: &no, RouteRefreshInterval: d(time.Second)})},
				want{"127.0.0.1:9199", DefaultMetricsListen, refresh(10*time.Second, dflt.IPSets, dflt.Routes)}},
			{"this node's overrides the default", []datastore.ResourceUpdate{felixConfigUpdate("node."+testNode,
				&api.FelixConfigurationSpec{HealthPort: ptr(9299), PrometheusMetricsEnabled: &no, IpsetsRefreshInterval: d(5 * time.Second)})},
				want{"127.0.0.1:9299", "", refresh(10*time.Second, 5*time.Second, dflt.Routes)}},
			{"default changes host and disables the iptables refresh", []datastore.ResourceUpdate{felixConfigUpdate("default",
				&api.FelixConfigurationSpec{HealthHost: "0.0.0.0", IptablesRefreshInterval: d(0), RouteRefreshInterval: d(time.Hour)})},
				want{"0.0.0.0:9299", "", refresh(-1, 5*time.Second, time.Hour)}},
			{"default disables them all but the node's", []datastore.ResourceUpdate{felixConfigUpdate("default",
				&api.FelixConfigurationSpec{HealthHost: "0.0.0.0", IptablesRefreshInterval: d(0), IpsetsRefreshInterval: d(0), RouteRefreshInterval: d(0)})},
				want{"0.0.0.0:9299", "", refresh(-1, 5*time.Second, -1)}},
			{"node's deleted: the default alone", []datastore.ResourceUpdate{felixConfigUpdate("node."+testNode, nil)},
				want{"0.0.0.0:9099", DefaultMetricsListen, refresh(-1, -1, -1)}},
			{"default deleted: back to the flags", []datastore.ResourceUpdate{felixConfigUpdate("default", nil)}, defaults},
			{"both in one batch", []datastore.ResourceUpdate{
				felixConfigUpdate("node."+testNode, &api.FelixConfigurationSpec{PrometheusMetricsPort: ptr(9391), RouteRefreshInterval: d(7 * time.Second)}),
				felixConfigUpdate("default", &api.FelixConfigurationSpec{PrometheusMetricsPort: ptr(9191), HealthPort: ptr(9199), RouteRefreshInterval: d(time.Minute)}),
			}, want{"127.0.0.1:9199", "127.0.0.1:9391", refresh(dflt.Iptables, dflt.IPSets, 7*time.Second)}},
		}},
		{"explicit flag wins over both", &ComponentConfig{HealthListen: "127.0.0.1:1", MetricsListen: "", Refresh: RefreshEvery(time.Minute),
			Explicit: Explicit{HealthListen: true, MetricsListen: true, Refresh: true}},
			ComponentConfig{HealthListen: "127.0.0.1:1", MetricsListen: "", Refresh: RefreshEvery(time.Minute)}, []step{
				{"default and node try", []datastore.ResourceUpdate{
					felixConfigUpdate("default", &api.FelixConfigurationSpec{HealthPort: ptr(2), IptablesRefreshInterval: d(time.Hour),
						IpsetsRefreshInterval: d(time.Hour)}),
					felixConfigUpdate("node."+testNode, &api.FelixConfigurationSpec{PrometheusMetricsPort: ptr(3), RouteRefreshInterval: d(0)}),
				}, want{"127.0.0.1:1", "", RefreshEvery(time.Minute)}},
			}},
		{"no base: settings fixed by Config", nil, effectiveConfig(flags, nil), []step{
			{"ignored", []datastore.ResourceUpdate{felixConfigUpdate("default", &api.FelixConfigurationSpec{HealthPort: ptr(9199),
				RouteRefreshInterval: d(time.Second)})}, defaults},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &Agent{cfg: Config{NodeName: testNode, FelixConfigBase: tt.base, HealthListen: tt.start.HealthListen,
				MetricsListen: tt.start.MetricsListen, Refresh: tt.start.Refresh}, log: testLogger(t),
				metrics: newMetrics()}
			a.cfg.setDefaults()
			a.health = newHealth(nil, liveWindow(a.cfg.Refresh.longest()))
			l := a.newLive()
			l.resync.set(a.cfg.Refresh)
			defer l.resync.stop()
			for _, st := range tt.steps {
				l.observe(st.ups)
				got := want{l.health.wanted(), l.metrics.wanted(),
					refresh(l.resync[classIptables].every, l.resync[classIPSets].every, l.resync[classRoutes].every)}
				if d := cmp.Diff(st.want, got, cmp.AllowUnexported(want{})); d != "" {
					t.Errorf("%s (-want +got):\n%s", st.what, d)
				}
				for c := range numClasses {
					if ticking := l.resync[c].C() != nil; ticking != (st.want.refresh.of(c) > 0) {
						t.Errorf("%s: %s ticker running = %v for interval %v", st.what, c, ticking, st.want.refresh.of(c))
					}
				}
				if lw, want := a.health.liveWindow, liveWindow(st.want.refresh.longest()); lw != want {
					t.Errorf("%s: liveness window %v, want %v", st.what, lw, want)
				}
			}
		})
	}
}

// TestLiveAsksForRestart: a FelixConfiguration change of the iptables back end or of IPv6 asks
// for a new dataplane; one that only spells the settings in use, or a change of anything else,
// does not; nor does any change when the settings in use are not known (Config without them).
func TestLiveAsksForRestart(t *testing.T) {
	yes := true
	flags := ComponentConfig{HealthListen: DefaultHealthListen, IPv6: IPv6Auto, Backend: BackendAuto}
	tests := []struct {
		name          string
		ipv6, backend string // what the dataplane was built with
		spec          api.FelixConfigurationSpec
		revert        bool // the resource is deleted again in the next event, before the loop checks
		want          *RestartError
	}{
		{"same settings spelled out", IPv6Auto, BackendLegacy, api.FelixConfigurationSpec{IptablesBackend: "Legacy"}, false, nil},
		{"another setting", IPv6Auto, BackendAuto, api.FelixConfigurationSpec{HealthPort: new(9199)}, false, nil},
		{"back end", IPv6Auto, BackendAuto, api.FelixConfigurationSpec{IptablesBackend: "NFT"}, false,
			&RestartError{Setting: "iptablesBackend", Old: BackendAuto, New: BackendNFT}},
		{"back end to auto", IPv6Auto, BackendNFT, api.FelixConfigurationSpec{}, false,
			&RestartError{Setting: "iptablesBackend", Old: BackendNFT, New: BackendAuto}},
		{"IPv6", IPv6Auto, BackendAuto, api.FelixConfigurationSpec{IPv6Support: &yes}, false,
			&RestartError{Setting: "ipv6Support", Old: IPv6Auto, New: IPv6On}},
		{"not followed", "", "", api.FelixConfigurationSpec{IptablesBackend: "NFT", IPv6Support: &yes}, false, nil},
		{"changed and reverted before the loop checks", IPv6Auto, BackendAuto, api.FelixConfigurationSpec{IptablesBackend: "NFT"}, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &Agent{cfg: Config{NodeName: testNode, FelixConfigBase: &flags, IPv6Mode: tt.ipv6, Backend: tt.backend},
				log: testLogger(t), metrics: newMetrics()}
			a.cfg.setDefaults()
			a.health = newHealth(nil, liveWindow(a.cfg.Refresh.longest()))
			l := a.newLive()
			defer l.resync.stop()
			l.observe([]datastore.ResourceUpdate{felixConfigUpdate("default", &tt.spec)})
			if tt.revert {
				// A second event, handled before the loop looks at restart.
				l.observe([]datastore.ResourceUpdate{felixConfigUpdate("default", nil)})
			}
			if d := cmp.Diff(tt.want, l.restart, cmpopts.IgnoreUnexported(RestartError{})); d != "" {
				t.Errorf("restart (-want +got):\n%s", d)
			}
		})
	}
}

// TestLiveFollowsLogSeverityScreen: felix's log level follows logSeverityScreen, the node's over
// the default's, back to the flag's when neither sets it, and not at all when the flag was given.
func TestLiveFollowsLogSeverityScreen(t *testing.T) {
	type step struct {
		ups  []datastore.ResourceUpdate
		want slog.Level
	}
	tests := []struct {
		name     string
		explicit bool
		steps    []step
	}{
		{"follows", false, []step{
			{[]datastore.ResourceUpdate{felixConfigUpdate("default", &api.FelixConfigurationSpec{LogSeverityScreen: "Warning"})}, slog.LevelWarn},
			{[]datastore.ResourceUpdate{felixConfigUpdate("node."+testNode, &api.FelixConfigurationSpec{LogSeverityScreen: "Debug"})}, slog.LevelDebug},
			{[]datastore.ResourceUpdate{felixConfigUpdate("node.other", &api.FelixConfigurationSpec{LogSeverityScreen: "Error"})}, slog.LevelDebug},
			{[]datastore.ResourceUpdate{felixConfigUpdate("node."+testNode, nil)}, slog.LevelWarn},
			{[]datastore.ResourceUpdate{felixConfigUpdate("default", nil)}, slog.LevelInfo},
		}},
		{"explicit --log-level wins", true, []step{
			{[]datastore.ResourceUpdate{felixConfigUpdate("default", &api.FelixConfigurationSpec{LogSeverityScreen: "Debug"})}, slog.LevelInfo},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := ComponentConfig{HealthListen: DefaultHealthListen, MetricsListen: DefaultMetricsListen,
				LogLevel: "info", Explicit: Explicit{LogLevel: tt.explicit}}
			level := new(slog.LevelVar)
			a := &Agent{cfg: Config{NodeName: testNode, FelixConfigBase: &base, LogLevel: level, HealthListen: base.HealthListen,
				MetricsListen: base.MetricsListen, Refresh: base.Refresh}, log: testLogger(t), metrics: newMetrics()}
			a.cfg.setDefaults()
			a.health = newHealth(nil, liveWindow(a.cfg.Refresh.longest()))
			l := a.newLive()
			defer l.resync.stop()
			for i, st := range tt.steps {
				l.observe(st.ups)
				if got := level.Level(); got != st.want {
					t.Errorf("step %d: level %v, want %v", i, got, st.want)
				}
			}
		})
	}
}
