package felix

import (
	"testing"

	"github.com/terracenet/terrace/datastore/api"
)

func TestWantIPv6(t *testing.T) {
	v4only := &api.Node{Spec: api.NodeSpec{BGP: &api.NodeBGPSpec{IPv4Address: "192.0.2.1/31"}}}
	dual := &api.Node{Spec: api.NodeSpec{BGP: &api.NodeBGPSpec{IPv4Address: "192.0.2.1/31", IPv6Address: "2001:db8::1/64"}}}
	for _, tt := range []struct {
		name string
		mode string
		node *api.Node
		want bool
	}{
		{"auto, IPv4-only node", IPv6Auto, v4only, false},
		{"auto, dual-stack node", IPv6Auto, dual, true},
		{"auto, node without BGP spec", IPv6Auto, &api.Node{}, false},
		{"auto, no node", IPv6Auto, nil, false},
		{"on, IPv4-only node", IPv6On, v4only, true},
		{"off, dual-stack node", IPv6Off, dual, false},
	} {
		if got, why := WantIPv6(tt.mode, tt.node); got != tt.want || why == "" {
			t.Errorf("%s: WantIPv6 = %v (%q), want %v with a reason", tt.name, got, why, tt.want)
		}
	}
}

func TestParseIPv6Mode(t *testing.T) {
	for _, ok := range []string{"auto", "true", "false"} {
		if got, err := ParseIPv6Mode(ok); err != nil || got != ok {
			t.Errorf("ParseIPv6Mode(%q) = %q, %v", ok, got, err)
		}
	}
	for _, bad := range []string{"", "yes", "on", "True", "1"} {
		if _, err := ParseIPv6Mode(bad); err == nil {
			t.Errorf("ParseIPv6Mode(%q) accepted", bad)
		}
	}
}
