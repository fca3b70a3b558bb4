package felix

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
)

// Explicit says which ComponentConfig settings the operator gave on the command line (or in the
// environment or file); those win over FelixConfiguration, as a flag does in Calico.
type Explicit struct {
	HealthListen, MetricsListen, ResyncInterval bool
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

// applyFelixConfig resolves the start-time settings FelixConfiguration may carry (health and
// metrics addresses, iptablesRefreshInterval as the resync interval), later specs (the node's)
// overriding earlier ones field by field. Changing them takes a restart of terrace-node.
func applyFelixConfig(cc ComponentConfig, specs []*api.FelixConfigurationSpec) ComponentConfig {
	healthOn, healthHost, healthPort := cc.HealthListen != "", "", 0
	metricsOn, metricsHost, metricsPort := cc.MetricsListen != "", "", 0
	var refresh *api.Duration
	for _, s := range specs {
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
			refresh = s.IptablesRefreshInterval
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
	if !cc.Explicit.ResyncInterval && refresh != nil {
		cc.ResyncInterval = refresh.Duration
		if cc.ResyncInterval == 0 {
			cc.ResyncInterval = -1 // Calico: 0 disables the periodic refresh
		}
	}
	return cc
}
