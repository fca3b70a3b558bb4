package api

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// fieldError is what a test expects of one FieldError: its path and a substring of its reason.
type fieldError struct{ Path, Reason string }

// fieldErrors runs defaults and validation and returns the field errors, each reason cut down to
// the expected substring when it contains it, so that tables compare with cmp.
func fieldErrors(t *testing.T, r Resource, want []fieldError) []fieldError {
	t.Helper()
	fields := validationFields(t, r)
	if fields == nil {
		return nil
	}
	var out []fieldError
	for i, f := range fields {
		got := fieldError{f.Path, f.Reason}
		if i < len(want) && want[i].Reason != "" && strings.Contains(f.Reason, want[i].Reason) {
			got.Reason = want[i].Reason
		}
		out = append(out, got)
	}
	return out
}

func TestValidateBGPFilter(t *testing.T) {
	filter := func(spec string) string { return hdr + "kind: BGPFilter\nmetadata: {name: f}\nspec:\n" + spec }
	many := func(list string, n int) string {
		return filter("  " + list + ":\n" + strings.Repeat("  - {action: Accept}\n", n))
	}
	tests := []struct {
		name     string
		manifest string
		want     []fieldError
	}{
		{"empty", hdr + "kind: BGPFilter\nmetadata: {name: f}\n", nil},
		{"catch-all rules", filter("  exportV4: [{action: Reject}]\n  importV4: [{action: Accept}]\n  exportV6: [{action: Reject}]\n  importV6: [{action: Accept}]\n"), nil},
		{"every operator", filter("  importV4:\n  - {action: Accept, matchOperator: Equal, cidr: 198.18.0.0/15}\n  - {action: Reject, matchOperator: NotEqual, cidr: 198.18.0.1/32}\n  - {action: Accept, matchOperator: In, cidr: 0.0.0.0/0}\n  - {action: Reject, matchOperator: NotIn, cidr: 192.0.2.0/24}\n"), nil},
		{"prefixLength bounds at their limits", filter("  exportV4:\n  - {action: Accept, matchOperator: In, cidr: 198.18.0.0/15, prefixLength: {min: 15, max: 32}}\n  - {action: Reject, matchOperator: NotIn, cidr: 198.18.0.0/15, prefixLength: {min: 24}}\n  - {action: Reject, matchOperator: In, cidr: 198.18.0.0/15, prefixLength: {max: 24}}\n  - {action: Reject, matchOperator: In, cidr: 198.18.0.0/15, prefixLength: {min: 20, max: 20}}\n  exportV6:\n  - {action: Accept, matchOperator: In, cidr: '2001:db8:1000::/48', prefixLength: {min: 64, max: 128}}\n"), nil},
		{"RemotePeers in exports", filter("  exportV4: [{action: Reject, source: RemotePeers}]\n  exportV6: [{action: Accept, source: RemotePeers, matchOperator: In, cidr: '2001:db8::/32'}]\n"), nil},
		{"1000 rules", many("importV6", 1000), nil},

		{"action missing", filter("  exportV4: [{cidr: 198.18.0.0/15, matchOperator: In}]\n"),
			[]fieldError{{"spec.exportV4[0].action", "is required: Accept or Reject"}}},
		{"action misspelt", filter("  importV6: [{action: Accept}, {action: accept}]\n"),
			[]fieldError{{"spec.importV6[1].action", `"accept" is not one of Accept, Reject`}}},
		{"cidr without matchOperator", filter("  importV4: [{action: Accept, cidr: 198.18.0.0/15}]\n"),
			[]fieldError{{"spec.importV4[0].matchOperator", "is required with cidr"}}},
		{"matchOperator without cidr", filter("  importV4: [{action: Accept, matchOperator: In}]\n"),
			[]fieldError{{"spec.importV4[0].cidr", "is required with matchOperator"}}},
		{"cidr not a prefix", filter("  exportV4:\n  - {action: Accept, matchOperator: In, cidr: 198.18.0.0/33}\n  - {action: Accept, matchOperator: In, cidr: 198.18.0.1}\n  - {action: Accept, matchOperator: In, cidr: 'fe80::/64%eth0'}\n"),
			[]fieldError{
				{"spec.exportV4[0].cidr", `"198.18.0.0/33" is not a CIDR`},
				{"spec.exportV4[1].cidr", `"198.18.0.1" is not a CIDR`},
				{"spec.exportV4[2].cidr", "is not a CIDR"},
			}},
		{"IPv6 cidr in a v4 list", filter("  importV4: [{action: Accept, matchOperator: Equal, cidr: '2001:db8::/32'}]\n"),
			[]fieldError{{"spec.importV4[0].cidr", `"2001:db8::/32" is IPv6 but spec.importV4 holds IPv4 routes`}}},
		{"IPv4 cidr in a v6 list", filter("  exportV6: [{action: Accept, matchOperator: Equal, cidr: 198.18.0.0/15}]\n"),
			[]fieldError{{"spec.exportV6[0].cidr", `"198.18.0.0/15" is IPv4 but spec.exportV6 holds IPv6 routes`}}},
		{"host bits set", filter("  importV4: [{action: Accept, matchOperator: In, cidr: 77.0.0.1/16}]\n  importV6: [{action: Accept, matchOperator: In, cidr: '5000::1/64'}]\n"),
			[]fieldError{
				{"spec.importV4[0].cidr", `"77.0.0.1/16" has host bits set; the network address is 77.0.0.0/16`},
				{"spec.importV6[0].cidr", `"5000::1/64" has host bits set; the network address is 5000::/64`},
			}},
		{"unknown matchOperator", filter("  importV4: [{action: Accept, matchOperator: Contains, cidr: 198.18.0.0/15}]\n"),
			[]fieldError{{"spec.importV4[0].matchOperator", `"Contains" is not one of Equal, NotEqual, In, NotIn`}}},
		{"prefixLength without cidr", filter("  importV4: [{action: Accept, prefixLength: {min: 24}}]\n"),
			[]fieldError{{"spec.importV4[0].prefixLength", "requires cidr and matchOperator In or NotIn"}}},
		{"prefixLength with Equal", filter("  importV4: [{action: Accept, matchOperator: Equal, cidr: 198.18.0.0/15, prefixLength: {max: 24}}]\n"),
			[]fieldError{{"spec.importV4[0].prefixLength", "requires cidr and matchOperator In or NotIn"}}},
		{"prefixLength below the cidr", filter("  importV4: [{action: Accept, matchOperator: In, cidr: 77.0.0.0/16, prefixLength: {min: 8, max: -1}}]\n"),
			[]fieldError{
				{"spec.importV4[0].prefixLength.min", "8 is outside 16-32 (from the cidr's prefix length"},
				{"spec.importV4[0].prefixLength.max", "-1 is outside 16-32"},
				{"spec.importV4[0].prefixLength", "min 8 is greater than max -1"},
			}},
		{"prefixLength above the family", filter("  exportV4: [{action: Accept, matchOperator: NotIn, cidr: 77.0.0.0/16, prefixLength: {max: 33}}]\n  exportV6: [{action: Accept, matchOperator: In, cidr: '2001:db8::/32', prefixLength: {min: 129}}]\n"),
			[]fieldError{
				{"spec.exportV4[0].prefixLength.max", "33 is outside 16-32"},
				{"spec.exportV6[0].prefixLength.min", "129 is outside 32-128"},
			}},
		{"prefixLength with a bad cidr is bounded by the family", filter("  exportV6: [{action: Accept, matchOperator: In, cidr: nope, prefixLength: {min: 0, max: 129}}]\n"),
			[]fieldError{
				{"spec.exportV6[0].cidr", `"nope" is not a CIDR`},
				{"spec.exportV6[0].prefixLength.max", "129 is outside 0-128"},
			}},
		{"min above max", filter("  importV4: [{action: Accept, matchOperator: In, cidr: 77.0.0.0/16, prefixLength: {min: 28, max: 24}}]\n"),
			[]fieldError{{"spec.importV4[0].prefixLength", "min 28 is greater than max 24"}}},
		{"unknown source", filter("  exportV4: [{action: Accept, source: Local}]\n"),
			[]fieldError{{"spec.exportV4[0].source", `"Local" is not a known source: only RemotePeers is`}}},
		{"RemotePeers in imports", filter("  importV4: [{action: Accept, source: RemotePeers}]\n  importV6: [{action: Reject, source: RemotePeers}]\n"),
			[]fieldError{
				{"spec.importV4[0].source", "RemotePeers is allowed only in exportV4 and exportV6"},
				{"spec.importV6[0].source", "RemotePeers is allowed only in exportV4 and exportV6"},
			}},
		{"interface", filter("  exportV4: [{action: Accept, interface: 'eth*'}]\n"),
			[]fieldError{{"spec.exportV4[0].interface", "Terrace does not match routes by interface; must be empty"}}},
		{"too many rules", many("exportV4", 1001),
			[]fieldError{{"spec.exportV4", "has 1001 rules; at most 1000 are allowed"}}},
		{"several problems in one rule", filter("  importV6: [{action: Drop, cidr: 198.18.0.0/15, prefixLength: {min: 1}, source: RemotePeers, interface: eth0}]\n"),
			[]fieldError{
				{"spec.importV6[0].action", `"Drop" is not one of Accept, Reject`},
				{"spec.importV6[0].matchOperator", "is required with cidr"},
				{"spec.importV6[0].cidr", "is IPv4 but spec.importV6 holds IPv6 routes"},
				{"spec.importV6[0].prefixLength", "requires cidr and matchOperator In or NotIn"},
				{"spec.importV6[0].source", "RemotePeers is allowed only in exportV4 and exportV6"},
				{"spec.importV6[0].interface", "must be empty"},
			}},
		{"bad metadata", hdr + "kind: BGPFilter\nmetadata: {name: My_Filter, namespace: x}\n",
			[]fieldError{
				{"metadata.name", "must be an RFC 1123 subdomain"},
				{"metadata.namespace", "must be empty: BGPFilter is not namespaced"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fieldErrors(t, decodeOne(t, tt.manifest), tt.want)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("field errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidateBGPPeerFilters(t *testing.T) {
	peer := func(filters string) string {
		return hdr + "kind: BGPPeer\nmetadata: {name: tor-1}\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 65001\n  filters: " + filters + "\n"
	}
	tests := []struct {
		name     string
		manifest string
		want     []fieldError
	}{
		{"names", peer("[export-only, rack.a, f]"), nil},
		{"not a resource name", peer("[ok, Bad_Name, '']"),
			[]fieldError{
				{"spec.filters[1]", `BGPFilter name "Bad_Name" must be an RFC 1123 subdomain`},
				{"spec.filters[2]", `BGPFilter name "" must not be empty`},
			}},
		{"duplicate", peer("[a, b, a, b]"),
			[]fieldError{
				{"spec.filters[2]", `"a" is already listed at spec.filters[0]`},
				{"spec.filters[3]", `"b" is already listed at spec.filters[1]`},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fieldErrors(t, decodeOne(t, tt.manifest), tt.want)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("field errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBGPFilterCodec(t *testing.T) {
	i32 := func(v int32) *int32 { return &v }
	want := &BGPFilter{
		TypeMeta: tm(KindBGPFilter),
		Metadata: ObjectMeta{Name: "my-filter", Labels: map[string]string{"rack": "a"}},
		Spec: BGPFilterSpec{
			ExportV4: []BGPFilterRule{
				{Action: BGPFilterAccept, MatchOperator: BGPFilterIn, CIDR: "77.0.0.0/16",
					PrefixLength: &BGPFilterPrefixLength{Min: i32(24), Max: i32(28)}},
				{Action: BGPFilterReject, Source: BGPFilterSourceRemotePeers},
			},
			ImportV4: []BGPFilterRule{{Action: BGPFilterReject, MatchOperator: BGPFilterNotIn, CIDR: "44.0.0.0/16"}},
			ExportV6: []BGPFilterRule{{Action: BGPFilterReject, Source: BGPFilterSourceRemotePeers}},
			ImportV6: []BGPFilterRule{{Action: BGPFilterAccept, MatchOperator: BGPFilterEqual, CIDR: "5000::0/64"}},
		},
	}
	const spec = `metadata:
  name: my-filter
  labels: {rack: a}
spec:
  exportV4:
    - {action: Accept, matchOperator: In, cidr: 77.0.0.0/16, prefixLength: {min: 24, max: 28}}
    - {action: Reject, source: RemotePeers}
  importV4:
    - {action: Reject, matchOperator: NotIn, cidr: 44.0.0.0/16}
  exportV6:
    - {action: Reject, source: RemotePeers}
  importV6:
    - {action: Accept, matchOperator: Equal, cidr: '5000::0/64'}
`
	const jsonSpec = `"metadata":{"name":"my-filter","labels":{"rack":"a"}},"spec":{` +
		`"exportV4":[{"action":"Accept","matchOperator":"In","cidr":"77.0.0.0/16","prefixLength":{"min":24,"max":28}},{"action":"Reject","source":"RemotePeers"}],` +
		`"importV4":[{"action":"Reject","matchOperator":"NotIn","cidr":"44.0.0.0/16"}],` +
		`"exportV6":[{"action":"Reject","source":"RemotePeers"}],` +
		`"importV6":[{"action":"Accept","matchOperator":"Equal","cidr":"5000::0/64"}]}`
	inputs := map[string]string{
		"YAML terrace.dev/v1":       "apiVersion: terrace.dev/v1\nkind: BGPFilter\n" + spec,
		"YAML projectcalico.org/v3": "apiVersion: projectcalico.org/v3\nkind: BGPFilter\n" + spec,
		"JSON terrace.dev/v1":       `{"apiVersion":"terrace.dev/v1","kind":"BGPFilter",` + jsonSpec + "}",
		"JSON projectcalico.org/v3": `{"apiVersion":"projectcalico.org/v3","kind":"BGPFilter",` + jsonSpec + "}",
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			r := decodeOne(t, in)
			if diff := cmp.Diff(Resource(want), r); diff != "" {
				t.Fatalf("Decode (-want +got):\n%s", diff)
			}
			SetDefaults(r)
			if err := Validate(r); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			b, err := Marshal(r)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if !strings.Contains(string(b), `"kind":"BGPFilter","apiVersion":"terrace.dev/v1"`) {
				t.Errorf("Marshal = %s", b)
			}
			back, err := Unmarshal(b)
			if err != nil {
				t.Fatalf("Unmarshal(%s): %v", b, err)
			}
			if diff := cmp.Diff(r, back, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Marshal/Unmarshal round trip (-want +got):\n%s", diff)
			}
			// The stored JSON decodes strictly as a manifest too.
			if diff := cmp.Diff(r, decodeOne(t, string(b)), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Decode of stored JSON (-want +got):\n%s", diff)
			}
			c, err := Clone(r)
			if err != nil {
				t.Fatalf("Clone: %v", err)
			}
			// A deep copy: changing the clone's rules must not reach the original.
			c.(*BGPFilter).Spec.ExportV4[0].PrefixLength.Min = i32(30)
			if *r.(*BGPFilter).Spec.ExportV4[0].PrefixLength.Min != 24 {
				t.Errorf("Clone shares prefixLength with the original")
			}
		})
	}
}

func TestBGPFilterUnknownFields(t *testing.T) {
	const head = "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: f}\n"
	tests := []struct {
		name, input, want string
	}{
		{"unknown rule field", head + "spec:\n  exportV4: [{action: Accept, community: '1:2'}]\n",
			`unknown field "community" at spec.exportV4[0]`},
		{"rule field in the wrong case", head + "spec:\n  importV4: [{action: Accept, CIDR: 198.18.0.0/15, matchOperator: In}]\n",
			`unknown field "CIDR" at spec.importV4[0] (field names are case-sensitive: did you mean "cidr"?)`},
		{"list in the wrong case", head + "spec:\n  exportv6: [{action: Accept}]\n",
			`unknown field "exportv6" at spec (field names are case-sensitive: did you mean "exportV6"?)`},
		{"Calico's pre-split list name", head + "spec:\n  export: [{action: Accept}]\n",
			`unknown field "export" at spec`},
		{"unknown prefixLength field", head + "spec:\n  importV6: [{action: Accept, cidr: '2001:db8::/32', matchOperator: In, prefixLength: {minimum: 64}}]\n",
			`unknown field "minimum" at spec.importV6[0].prefixLength`},
		{"JSON", `{"apiVersion":"terrace.dev/v1","kind":"BGPFilter","metadata":{"name":"f"},"spec":{"importV4":[{"action":"Accept","interfaces":"eth0"}]}}`,
			`unknown field "interfaces" at spec.importV4[0]`},
		{"wrong type", head + "spec:\n  importV4: [{action: Accept, cidr: 198.18.0.0/15, matchOperator: In, prefixLength: {min: x}}]\n",
			`BGPFilter "f"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := Decode([]byte(tt.input))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if len(docs) != 1 || docs[0].Err == nil || docs[0].Resource != nil {
				t.Fatalf("Decode = %+v, want one document with an error", docs)
			}
			if !strings.Contains(docs[0].Err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", docs[0].Err, tt.want)
			}
		})
	}
}
