package main

import (
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"github.com/terracenet/terrace/bgp/agent"
	"github.com/terracenet/terrace/bgp/speaker"
	"github.com/terracenet/terrace/internal/nstest"
	"github.com/terracenet/terrace/node"
)

func TestPrintBGPStatus(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 10, 0, 0, time.UTC)
	st := agent.Status{ASN: 64512, RouterID: "192.0.2.1", Advertised: 2,
		Routes: agent.RouteStats{Learned: 6, Installed: 2, Unresolved: 1, HeldBack: 1, LinkDown: 1, Refused: 1,
			LastError: "1 learned routes refused, first: set route 198.18.9.0/24: bad"},
		Peers: []speaker.PeerStatus{
			{Address: netip.MustParseAddr("192.0.2.0"), Type: speaker.PeerTypeNode, ASN: 65000, State: "established",
				EstablishedAt: now.Add(-90 * time.Second), Received: 5, Accepted: 4, Advertised: 2},
			{Address: netip.MustParseAddr("192.0.2.3"), Type: speaker.PeerTypeMesh, ASN: 64512, State: "active", LastError: "connection refused"},
		}}
	// Through JSON, as the socket delivers it.
	b, _ := json.Marshal(st.Details())
	var details map[string]any
	if err := json.Unmarshal(b, &details); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		details map[string]any
		want    []string
	}{
		{name: "typed", details: details, want: []string{
			"BGP: AS 64512, router ID 192.0.2.1, 2 prefixes advertised, 6 routes learned, 2 installed, 1 without a reachable next hop, 1 held back by another protocol's route, 1 refused by the route writer, 1 waiting for their interface to come up",
			"route error: 1 learned routes refused, first: set route 198.18.9.0/24: bad",
			"ADDRESS TYPE AS STATE UPTIME RECEIVED ACCEPTED ADVERTISED INFO",
			"192.0.2.0 node 65000 established 1m30s 5 4 2 -",
			"192.0.2.3 mesh 64512 active - 0 0 0 connection refused"}},
		{name: "no peers", details: map[string]any{"asn": 64512}, want: []string{"none configured"}},
		{name: "unknown shape printed raw", details: map[string]any{"peers": []string{"x"}}, want: []string{`["x"]`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			printBGPStatus(&out, node.ComponentStatus{State: "running", Details: tc.details}, now)
			got := strings.Join(strings.Fields(out.String()), " ")
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

func TestToRouteRow(t *testing.T) {
	_, dst, _ := net.ParseCIDR("198.18.0.64/26")
	names := func(i int) string { return map[int]string{2: "tor-1", 3: "tor-2"}[i] }
	tests := []struct {
		name string
		r    netlink.Route
		want routeRow
	}{
		{name: "single", r: netlink.Route{Dst: dst, Gw: net.ParseIP("192.0.2.0"), LinkIndex: 2, Priority: 32},
			want: routeRow{Prefix: "198.18.0.64/26", Gateways: []string{"192.0.2.0"}, Devices: []string{"tor-1"}, Metric: 32}},
		{name: "ecmp", r: netlink.Route{Dst: dst, MultiPath: []*netlink.NexthopInfo{
			{Gw: net.ParseIP("192.0.2.0"), LinkIndex: 2}, {Gw: net.ParseIP("198.51.100.0"), LinkIndex: 3}}},
			want: routeRow{Prefix: "198.18.0.64/26", Gateways: []string{"192.0.2.0", "198.51.100.0"}, Devices: []string{"tor-1", "tor-2"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, toRouteRow(tc.r, names)); diff != "" {
				t.Errorf("row (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNodeRoutesInNamespace: `node routes` lists protocol-81 routes only, and with none it prints
// an empty JSON list, which `jq '.[]'` can iterate, not null.
func TestNodeRoutesInNamespace(t *testing.T) {
	ns := nstest.New(t)
	if out := strings.TrimSpace(nstest.Run(t, ns, ctlBin, "node", "routes", "-o", "json")); out != "[]" {
		t.Errorf("node routes -o json with no BGP routes = %q, want []", out)
	}
	nstest.Run(t, ns, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
	nstest.Run(t, ns, "ip", "link", "set", "up0", "up")
	nstest.Run(t, ns, "ip", "addr", "add", "192.0.2.1/24", "dev", "up0")
	nstest.Run(t, ns, "ip", "route", "add", "198.18.4.0/26", "via", "192.0.2.2", "proto", "81", "metric", "32")
	nstest.Run(t, ns, "ip", "route", "add", "198.18.5.0/26", "via", "192.0.2.3", "proto", "static")
	var rows []map[string]any
	out := nstest.Run(t, ns, ctlBin, "node", "routes", "-o", "json")
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 1 || !strings.Contains(out, "198.18.4.0/26") || rows[0]["metric"] != 32.0 {
		t.Errorf("node routes -o json = %s (%v), want the one protocol-81 route, at metric 32", out, err)
	}
	table := strings.Join(strings.Fields(nstest.Run(t, ns, ctlBin, "node", "routes")), " ")
	if want := "PREFIX GATEWAYS DEVICES METRIC 198.18.4.0/26 192.0.2.2 up0 32"; table != want {
		t.Errorf("node routes = %q, want %q", table, want)
	}
}
