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
	base := ComponentConfig{HealthListen: DefaultHealthListen, MetricsListen: DefaultMetricsListen, ResyncInterval: 90 * time.Second}
	tests := []struct {
		name  string
		cc    ComponentConfig
		specs []*api.FelixConfigurationSpec
		want  ComponentConfig
	}{
		{"no configuration", base, nil, base},
		{"ports and host", base, []*api.FelixConfigurationSpec{{HealthPort: ptr(9199), PrometheusMetricsHost: "203.0.113.5", PrometheusMetricsPort: ptr(9191)}},
			ComponentConfig{HealthListen: "127.0.0.1:9199", MetricsListen: "203.0.113.5:9191", ResyncInterval: 90 * time.Second}},
		{"node overrides default", base, []*api.FelixConfigurationSpec{
			{HealthPort: ptr(9199), IptablesRefreshInterval: &api.Duration{Duration: time.Minute}},
			{HealthPort: ptr(9299), PrometheusMetricsEnabled: &no},
		}, ComponentConfig{HealthListen: "127.0.0.1:9299", MetricsListen: "", ResyncInterval: time.Minute}},
		{"disabled health, zero refresh", base, []*api.FelixConfigurationSpec{{HealthEnabled: &no, IptablesRefreshInterval: &api.Duration{}}},
			ComponentConfig{HealthListen: "", MetricsListen: DefaultMetricsListen, ResyncInterval: -1}},
		{"enabled where the flag default was off", ComponentConfig{ResyncInterval: time.Second},
			[]*api.FelixConfigurationSpec{{HealthEnabled: &yes}},
			ComponentConfig{HealthListen: DefaultHealthListen, ResyncInterval: time.Second}},
		{"explicit flags win", ComponentConfig{HealthListen: "127.0.0.1:1", MetricsListen: "", ResyncInterval: time.Second,
			Explicit: Explicit{HealthListen: true, MetricsListen: true, ResyncInterval: true}},
			[]*api.FelixConfigurationSpec{{HealthPort: ptr(2), PrometheusMetricsEnabled: &yes, IptablesRefreshInterval: &api.Duration{Duration: time.Hour}}},
			ComponentConfig{HealthListen: "127.0.0.1:1", MetricsListen: "", ResyncInterval: time.Second,
				Explicit: Explicit{HealthListen: true, MetricsListen: true, ResyncInterval: true}}},
		{"one explicit flag wins, the others follow the node over the default",
			ComponentConfig{HealthListen: "127.0.0.1:1", MetricsListen: DefaultMetricsListen, ResyncInterval: time.Second,
				Explicit: Explicit{HealthListen: true}},
			[]*api.FelixConfigurationSpec{
				{HealthPort: ptr(2), PrometheusMetricsPort: ptr(3), IptablesRefreshInterval: &api.Duration{Duration: time.Hour}},
				{HealthPort: ptr(4), PrometheusMetricsPort: ptr(5)},
			},
			ComponentConfig{HealthListen: "127.0.0.1:1", MetricsListen: "127.0.0.1:5", ResyncInterval: time.Hour,
				Explicit: Explicit{HealthListen: true}}},
		{"back end and IPv6, node over default", base, []*api.FelixConfigurationSpec{
			{IptablesBackend: "Legacy", IPv6Support: &yes},
			{IptablesBackend: "NFT"},
		}, ComponentConfig{HealthListen: DefaultHealthListen, MetricsListen: DefaultMetricsListen, ResyncInterval: 90 * time.Second,
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
		}, ComponentConfig{HealthListen: "[::1]:9099", MetricsListen: "", ResyncInterval: 90 * time.Second}},
	}
	for _, tt := range tests {
		got := applyFelixConfig(tt.cc, tt.specs)
		if d := cmp.Diff(tt.want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, d)
		}
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
// and checks what the agent would then serve and how often it would resync.
func TestLiveFollowsFelixConfiguration(t *testing.T) {
	ptr := func(v int) *int { return &v }
	no := false
	type want struct {
		health, metrics string
		resync          time.Duration
	}
	type step struct {
		what string
		ups  []datastore.ResourceUpdate
		want want
	}
	flags := ComponentConfig{HealthListen: DefaultHealthListen, MetricsListen: DefaultMetricsListen, ResyncInterval: DefaultResyncInterval}
	defaults := want{DefaultHealthListen, DefaultMetricsListen, DefaultResyncInterval}
	tests := []struct {
		name  string
		base  *ComponentConfig
		start ComponentConfig
		steps []step
	}{
		{"precedence node over default over flags", &flags, flags, []step{
			{"default sets ports and refresh", []datastore.ResourceUpdate{felixConfigUpdate("default",
				&api.FelixConfigurationSpec{HealthPort: ptr(9199), IptablesRefreshInterval: &api.Duration{Duration: 10 * time.Second}})},
				want{"127.0.0.1:9199", DefaultMetricsListen, 10 * time.Second}},
			{"another node's configuration is not ours", []datastore.ResourceUpdate{felixConfigUpdate("node.other",
				&api.FelixConfigurationSpec{HealthPort: ptr(1), PrometheusMetricsEnabled: &no})},
				want{"127.0.0.1:9199", DefaultMetricsListen, 10 * time.Second}},
			{"this node's overrides the default", []datastore.ResourceUpdate{felixConfigUpdate("node."+testNode,
				&api.FelixConfigurationSpec{HealthPort: ptr(9299), PrometheusMetricsEnabled: &no})},
				want{"127.0.0.1:9299", "", 10 * time.Second}},
			{"default changes host and disables the refresh", []datastore.ResourceUpdate{felixConfigUpdate("default",
				&api.FelixConfigurationSpec{HealthHost: "0.0.0.0", IptablesRefreshInterval: &api.Duration{}})},
				want{"0.0.0.0:9299", "", -1}},
			{"node's deleted: the default alone", []datastore.ResourceUpdate{felixConfigUpdate("node."+testNode, nil)},
				want{"0.0.0.0:9099", DefaultMetricsListen, -1}},
			{"default deleted: back to the flags", []datastore.ResourceUpdate{felixConfigUpdate("default", nil)}, defaults},
			{"both in one batch", []datastore.ResourceUpdate{
				felixConfigUpdate("node."+testNode, &api.FelixConfigurationSpec{PrometheusMetricsPort: ptr(9391)}),
				felixConfigUpdate("default", &api.FelixConfigurationSpec{PrometheusMetricsPort: ptr(9191), HealthPort: ptr(9199)}),
			}, want{"127.0.0.1:9199", "127.0.0.1:9391", DefaultResyncInterval}},
		}},
		{"explicit flags win over both", &ComponentConfig{HealthListen: "127.0.0.1:1", MetricsListen: "", ResyncInterval: time.Minute,
			Explicit: Explicit{HealthListen: true, MetricsListen: true, ResyncInterval: true}},
			ComponentConfig{HealthListen: "127.0.0.1:1", MetricsListen: "", ResyncInterval: time.Minute}, []step{
				{"default and node try", []datastore.ResourceUpdate{
					felixConfigUpdate("default", &api.FelixConfigurationSpec{HealthPort: ptr(2), IptablesRefreshInterval: &api.Duration{Duration: time.Hour}}),
					felixConfigUpdate("node."+testNode, &api.FelixConfigurationSpec{PrometheusMetricsPort: ptr(3)}),
				}, want{"127.0.0.1:1", "", time.Minute}},
			}},
		{"no base: settings fixed by Config", nil, flags, []step{
			{"ignored", []datastore.ResourceUpdate{felixConfigUpdate("default", &api.FelixConfigurationSpec{HealthPort: ptr(9199)})}, defaults},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &Agent{cfg: Config{NodeName: testNode, FelixConfigBase: tt.base, HealthListen: tt.start.HealthListen,
				MetricsListen: tt.start.MetricsListen, ResyncInterval: tt.start.ResyncInterval}, log: testLogger(t),
				metrics: newMetrics()}
			a.cfg.setDefaults()
			a.health = newHealth(nil, liveWindow(a.cfg.ResyncInterval))
			l := a.newLive()
			l.resync.set(a.cfg.ResyncInterval)
			defer l.resync.stop()
			for _, st := range tt.steps {
				l.observe(st.ups)
				got := want{l.health.wanted(), l.metrics.wanted(), l.resync.every}
				if d := cmp.Diff(st.want, got, cmp.AllowUnexported(want{})); d != "" {
					t.Errorf("%s (-want +got):\n%s", st.what, d)
				}
				if ticking := l.resync.C() != nil; ticking != (st.want.resync > 0) {
					t.Errorf("%s: resync ticker running = %v for interval %v", st.what, ticking, st.want.resync)
				}
				if lw := a.health.liveWindow; lw != liveWindow(st.want.resync) {
					t.Errorf("%s: liveness window %v, want %v", st.what, lw, liveWindow(st.want.resync))
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
	flags := ComponentConfig{HealthListen: DefaultHealthListen, ResyncInterval: DefaultResyncInterval, IPv6: IPv6Auto, Backend: BackendAuto}
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
			a.health = newHealth(nil, liveWindow(a.cfg.ResyncInterval))
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
				ResyncInterval: DefaultResyncInterval, LogLevel: "info", Explicit: Explicit{LogLevel: tt.explicit}}
			level := new(slog.LevelVar)
			a := &Agent{cfg: Config{NodeName: testNode, FelixConfigBase: &base, LogLevel: level, HealthListen: base.HealthListen,
				MetricsListen: base.MetricsListen, ResyncInterval: base.ResyncInterval}, log: testLogger(t), metrics: newMetrics()}
			a.cfg.setDefaults()
			a.health = newHealth(nil, liveWindow(a.cfg.ResyncInterval))
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
