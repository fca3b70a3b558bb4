package api

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzDecode: decoding and validating arbitrary input must not panic, and anything that validates
// must survive Marshal → Unmarshal (and a strict re-Decode) unchanged and still be valid.
func FuzzDecode(f *testing.F) {
	for _, ex := range calicoExamples {
		f.Add([]byte(ex.manifest))
	}
	f.Add([]byte(`{"apiVersion":"terrace.dev/v1","kind":"BGPPeer","metadata":{"name":"t"},"spec":{"peerIP":"192.0.2.1","asNumber":"1.10"}}`))
	f.Add([]byte(`{"apiVersion":"terrace.dev/v1","kind":"BGPPeer","metadata":{"name":"t"},"spec":{"peerSelector":"all()","filters":["a","b.c"]}}`))
	f.Add([]byte(hdr + "kind: BGPFilter\nmetadata: {name: f}\nspec:\n  importV6:\n  - {action: Accept, matchOperator: NotIn, cidr: '2001:db8::/32', prefixLength: {min: 48, max: 64}}\n  exportV4: [{action: Reject, source: RemotePeers, interface: eth0}]\n"))
	f.Add([]byte("apiVersion: v1\nkind: List\nitems:\n- apiVersion: terrace.dev/v1\n  kind: Node\n  metadata: {name: a}\n---\n[]\n"))
	f.Add([]byte(hdr + "kind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n  ingress:\n  - action: Deny\n    protocol: UDP\n    notProtocol: 17\n    destination: {ports: ['1:2', http], notNets: [198.18.0.0/15]}\n    icmp: {type: 3}\n"))
	f.Add([]byte(hdr + "kind: FelixConfiguration\nmetadata: {name: default}\nspec: {failsafeInboundHostPorts: [], natPortRange: '1:2'}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := Decode(data)
		if err != nil {
			return
		}
		for _, d := range docs {
			if d.Err != nil {
				if d.Resource != nil {
					t.Fatalf("document %d has both an error and a resource", d.Index)
				}
				continue
			}
			r := d.Resource
			SetDefaults(r)
			if Validate(r) != nil {
				continue
			}
			b, err := Marshal(r)
			if err != nil {
				t.Fatalf("Marshal of a valid resource: %v", err)
			}
			back, err := Unmarshal(b)
			if err != nil {
				t.Fatalf("Unmarshal(%s): %v", b, err)
			}
			if diff := cmp.Diff(r, back, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("round trip of %s (-want +got):\n%s", b, diff)
			}
			if err := Validate(back); err != nil {
				t.Fatalf("valid resource invalid after round trip: %v", err)
			}
			again, err := Decode(b)
			if err != nil || len(again) != 1 || again[0].Err != nil {
				t.Fatalf("strict Decode of stored %s: %v %+v", b, err, again)
			}
		}
	})
}

// FuzzParsePortRange: anything accepted prints back to text that parses to the same port.
func FuzzParsePortRange(f *testing.F) {
	for _, s := range []string{"80", "1:65535", "http", "0", "2:1", "1:x", ""} {
		f.Add(s)
	}
	f.Add("1000-2000")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePortRange(s)
		if err != nil {
			return
		}
		back, err := ParsePortRange(p.String())
		if err != nil || back != p {
			t.Fatalf("ParsePortRange(%q) = %+v, reparsed from %q as %+v, %v", s, p, p.String(), back, err)
		}
		if p.PortName == "" && (p.MinPort < 1 || p.MaxPort > 65535 || p.MinPort > p.MaxPort) {
			t.Fatalf("ParsePortRange(%q) accepted an invalid range %+v", s, p)
		}
		// A name validation accepts is one an endpoint can declare: never digits and dashes
		// alone (a mistyped range), never upper case or longer than 15.
		var v validator
		v.port("p", p, true)
		if n := p.PortName; n != "" && len(v.errs) == 0 {
			if !strings.ContainsAny(n, "abcdefghijklmnopqrstuvwxyz") || strings.ContainsAny(n, "ABCDEFGHIJKLMNOPQRSTUVWXYZ:") || len(n) > 15 || strings.Contains(n, "--") {
				t.Fatalf("validation accepted port name %q", n)
			}
		}
	})
}

// FuzzParseASNumber: anything accepted prints as a plain number that parses to the same value.
func FuzzParseASNumber(f *testing.F) {
	for _, s := range []string{"64512", "1.10", "65535.65535", "4294967296", "1.", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseASNumber(s)
		if err != nil {
			return
		}
		back, err := ParseASNumber(a.String())
		if err != nil || back != a {
			t.Fatalf("ParseASNumber(%q) = %d, reparsed as %d, %v", s, a, back, err)
		}
	})
}
