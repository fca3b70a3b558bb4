package felix

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terracenet/terrace/datastore/api"
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
	}
	for _, tt := range tests {
		got := applyFelixConfig(tt.cc, tt.specs)
		if d := cmp.Diff(tt.want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, d)
		}
	}
}
