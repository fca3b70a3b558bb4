package api

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// docSummary is what a test checks about one decoded document.
type docSummary struct {
	Index int
	Line  int
	Kind  string
	Name  string
	Err   string // a substring of the error, "" for none
}

func summarize(t *testing.T, docs []Document, wantErrs []string) []docSummary {
	t.Helper()
	var out []docSummary
	for i, d := range docs {
		s := docSummary{Index: d.Index, Line: d.Line}
		if d.Resource != nil {
			s.Kind = d.Resource.GetTypeMeta().Kind
			s.Name = d.Resource.GetObjectMeta().Name
			if d.Resource.GetTypeMeta().APIVersion != GroupVersion {
				t.Errorf("document %d: apiVersion %q, want %q", i, d.Resource.GetTypeMeta().APIVersion, GroupVersion)
			}
		}
		if (d.Err == nil) == (d.Resource == nil) {
			t.Errorf("document %d: exactly one of Resource and Err must be set: %v / %v", i, d.Resource, d.Err)
		}
		if d.Err != nil {
			s.Err = d.Err.Error()
			// Keep only the expected substring so the table stays readable.
			if i < len(wantErrs) && wantErrs[i] != "" && strings.Contains(s.Err, wantErrs[i]) {
				s.Err = wantErrs[i]
			}
		}
		out = append(out, s)
	}
	return out
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []docSummary
	}{
		{
			name: "calicoctl list output (IPPoolList) as YAML",
			input: `apiVersion: projectcalico.org/v3
items:
- apiVersion: projectcalico.org/v3
  kind: IPPool
  metadata:
    name: pool-a
  spec:
    cidr: 198.18.0.0/16
kind: IPPoolList
metadata:
  resourceVersion: "42"
`,
			want: []docSummary{{Index: 0, Line: 3, Kind: "IPPool", Name: "pool-a"}},
		},
		{
			name:  "calicoctl list output as JSON",
			input: `{"apiVersion":"projectcalico.org/v3","kind":"NetworkPolicyList","items":[{"apiVersion":"projectcalico.org/v3","kind":"NetworkPolicy","metadata":{"name":"p","namespace":"prod"},"spec":{"selector":"all()"}}]}`,
			want:  []docSummary{{Index: 0, Line: 1, Kind: "NetworkPolicy", Name: "p"}},
		},
		{
			name:  "a list whose items are not a sequence is an error, not nothing",
			input: "apiVersion: v1\nkind: List\nitems:\n  apiVersion: projectcalico.org/v3\n  kind: IPPool\n",
			want:  []docSummary{{Index: 0, Line: 1, Err: "items must be a sequence"}},
		},
		{
			name:  "YAML in flow style, starting with a brace",
			input: "{apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {name: pool-f}, spec: {cidr: 198.18.0.0/16}}\n",
			want:  []docSummary{{Index: 0, Line: 1, Kind: "IPPool", Name: "pool-f"}},
		},
		{
			name: "multi-document YAML with comments and empty documents",
			input: `# leading comment
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
spec:
  cidr: 198.18.0.0/16
---
---
# only a comment
---
apiVersion: terrace.dev/v1
kind: Node
metadata:
  name: host-1
`,
			want: []docSummary{
				{Index: 0, Line: 3, Kind: "IPPool", Name: "pool-a"},
				{Index: 1, Line: 13, Kind: "Node", Name: "host-1"},
			},
		},
		{
			name: "bad documents do not hide good ones",
			input: `apiVersion: terrace.dev/v1
kind: Node
metadata: {name: a}
spec: {bogus: 1}
---
apiVersion: terrace.dev/v1
kind: Pod
metadata: {name: b}
---
apiVersion: v1
kind: Node
metadata: {name: c}
---
kind: Node
metadata: {name: d}
---
apiVersion: terrace.dev/v1
kind: Node
metadata: {name: e
---
apiVersion: terrace.dev/v1
kind: Node
metadata:
  name: f
  name: g
---
apiVersion: terrace.dev/v1
metadata: {name: h}
---
- 1
---
apiVersion: terrace.dev/v1
kind: Node
metadata: {name: ok}
`,
			want: []docSummary{
				{Index: 0, Line: 1, Err: `unknown field "bogus"`},
				{Index: 1, Line: 6, Err: `unknown kind "Pod"`},
				{Index: 2, Line: 10, Err: `apiVersion "v1" is not accepted`},
				{Index: 3, Line: 14, Err: `apiVersion is missing`},
				{Index: 4, Line: 17, Err: `parse YAML`},
				{Index: 5, Line: 21, Err: `key "name" at line 25 repeats the one at line 24`},
				{Index: 6, Line: 27, Err: `kind is missing`},
				{Index: 7, Line: 30, Err: `want a mapping`},
				{Index: 8, Line: 32, Kind: "Node", Name: "ok"},
			},
		},
		{
			name: "YAML List and top-level sequence",
			input: `apiVersion: v1
kind: List
items:
- apiVersion: terrace.dev/v1
  kind: GlobalNetworkSet
  metadata: {name: s1}
- apiVersion: terrace.dev/v1
  kind: GlobalNetworkSet
  metadata: {name: s2}
---
- apiVersion: terrace.dev/v1
  kind: NetworkSet
  metadata: {name: s3, namespace: ns}
`,
			want: []docSummary{
				{Index: 0, Line: 4, Kind: "GlobalNetworkSet", Name: "s1"},
				{Index: 1, Line: 7, Kind: "GlobalNetworkSet", Name: "s2"},
				{Index: 2, Line: 11, Kind: "NetworkSet", Name: "s3"},
			},
		},
		{
			name:  "JSON object",
			input: `{"apiVersion":"terrace.dev/v1","kind":"BGPPeer","metadata":{"name":"tor"},"spec":{"peerIP":"192.0.2.1","asNumber":65001}}`,
			want:  []docSummary{{Index: 0, Line: 1, Kind: "BGPPeer", Name: "tor"}},
		},
		{
			name: "JSON array, List and stream",
			input: `[
 {"apiVersion":"terrace.dev/v1","kind":"Node","metadata":{"name":"a"}},
 {"apiVersion":"terrace.dev/v1","kind":"Node","metadata":{"name":"b"},"spec":{"x":1}}
]
{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"terrace.dev/v1","kind":"Node","metadata":{"name":"c"}}]}
{"apiVersion":"terrace.dev/v1","kind":"Node","metadata":{"name":"d"}} {"broken":`,
			want: []docSummary{
				{Index: 0, Line: 1, Kind: "Node", Name: "a"},
				{Index: 1, Line: 1, Err: `unknown field "x"`},
				{Index: 2, Line: 5, Kind: "Node", Name: "c"},
				{Index: 3, Line: 6, Kind: "Node", Name: "d"},
				{Index: 4, Line: 6, Err: "parse JSON"},
			},
		},
		{
			name: "JSON repeated keys: different values refused with their path, the same value accepted",
			input: `{"apiVersion":"terrace.dev/v1","kind":"IPPool","metadata":{"name":"p"},"spec":{"cidr":"198.18.0.0/16","cidr":"198.19.0.0/16"}}
{"apiVersion":"terrace.dev/v1","kind":"GlobalNetworkPolicy","metadata":{"name":"g"},"spec":{"ingress":[{"action":"Allow","action":"Deny"}]}}
{"apiVersion":"terrace.dev/v1","kind":"Node","metadata":{"name":"n","labels":{"a":"1","a":"1"}}}`,
			want: []docSummary{
				{Index: 0, Line: 1, Err: `key "cidr" at spec.cidr is given twice with different values`},
				{Index: 1, Line: 2, Err: `key "action" at spec.ingress[0].action is given twice with different values`},
				{Index: 2, Line: 3, Kind: "Node", Name: "n"},
			},
		},
		{
			name: "YAML 1.2 strings stay strings and numbers land in string fields",
			input: `apiVersion: terrace.dev/v1
kind: WorkloadEndpoint
metadata:
  name: n
  namespace: "on"
  labels:
    enabled: yes
spec:
  node: "no"
  containerID: 1337
`,
			want: []docSummary{{Index: 0, Line: 1, Kind: "WorkloadEndpoint", Name: "n"}},
		},
		{
			name: "field names are case-sensitive",
			input: `apiVersion: terrace.dev/v1
kind: IPPool
metadata: {name: p}
spec: {CIDR: 198.18.0.0/16}
---
apiVersion: terrace.dev/v1
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  ingress:
  - action: Allow
    destination: {Ports: [80]}
---
{"apiVersion":"terrace.dev/v1","Kind":"Node","kind":"Node","metadata":{"name":"x"}}
`,
			want: []docSummary{
				{Index: 0, Line: 1, Err: `unknown field "CIDR" at spec (field names are case-sensitive: did you mean "cidr"?)`},
				{Index: 1, Line: 6, Err: `unknown field "Ports" at spec.ingress[0].destination`},
				{Index: 2, Line: 14, Err: `unknown field "Kind"`},
			},
		},
		{
			name: "unknown fields are named with their path",
			input: `apiVersion: terrace.dev/v1
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  ingress:
  - action: Allow
    destination: {portz: [80]}
---
{"apiVersion":"terrace.dev/v1","kind":"IPPool","metadata":{"name":"q"},"spec":{"cidr":"198.18.0.0/16","bogus":1}}
`,
			want: []docSummary{
				{Index: 0, Line: 1, Err: `unknown field "portz" at spec.ingress[0].destination`},
				{Index: 1, Line: 9, Err: `unknown field "bogus" at spec`},
			},
		},
		{name: "empty input", input: "", want: nil},
		{name: "only comments", input: "# nothing\n---\n", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := Decode([]byte(tt.input))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			var wantErrs []string
			for _, w := range tt.want {
				wantErrs = append(wantErrs, w.Err)
			}
			if diff := cmp.Diff(tt.want, summarize(t, docs, wantErrs)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeKeepsYAMLStrings(t *testing.T) {
	docs, err := Decode([]byte(`apiVersion: terrace.dev/v1
kind: WorkloadEndpoint
metadata:
  name: n
  namespace: "on"
  labels:
    enabled: yes
spec:
  node: "no"
  containerID: 1337
`))
	if err != nil || len(docs) != 1 || docs[0].Err != nil {
		t.Fatalf("Decode: %v %+v", err, docs)
	}
	w := docs[0].Resource.(*WorkloadEndpoint)
	got := []string{w.Metadata.Name, w.Metadata.Namespace, w.Metadata.Labels["enabled"], w.Spec.Node, w.Spec.ContainerID}
	if diff := cmp.Diff([]string{"n", "on", "yes", "no", "1337"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestDecodeManifestCountsLists(t *testing.T) {
	pool := "apiVersion: terrace.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.10.0.0/16}\n"
	tests := []struct {
		name      string
		input     string
		wantDocs  int
		wantLists int
	}{
		{name: "empty input", input: "", wantDocs: 0, wantLists: 0},
		{name: "comments only", input: "# nothing\n", wantDocs: 0, wantLists: 0},
		{name: "YAML List with no items", input: "apiVersion: v1\nkind: List\nitems: []\n", wantDocs: 0, wantLists: 1},
		{name: "YAML List with null items", input: "kind: List\nitems:\n", wantDocs: 0, wantLists: 1},
		{name: "JSON List with no items", input: `{"kind": "List", "items": []}`, wantDocs: 0, wantLists: 1},
		{name: "JSON List without items", input: `{"kind": "List"}`, wantDocs: 0, wantLists: 1},
		{name: "typed List", input: "kind: IPPoolList\nitems: []\n", wantDocs: 0, wantLists: 1},
		{name: "two Lists, one with an item", input: "kind: List\nitems: []\n---\nkind: List\nitems:\n- " +
			strings.ReplaceAll(strings.TrimSuffix(pool, "\n"), "\n", "\n  ") + "\n", wantDocs: 1, wantLists: 2},
		{name: "plain document", input: pool, wantDocs: 1, wantLists: 0},
		{name: "empty JSON array is not a List", input: `[]`, wantDocs: 0, wantLists: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, lists, err := DecodeManifest([]byte(tt.input))
			if err != nil {
				t.Fatalf("DecodeManifest: %v", err)
			}
			for _, d := range docs {
				if d.Err != nil {
					t.Errorf("document %d: %v", d.Index, d.Err)
				}
			}
			if len(docs) != tt.wantDocs || lists != tt.wantLists {
				t.Errorf("got %d documents and %d lists, want %d and %d", len(docs), lists, tt.wantDocs, tt.wantLists)
			}
		})
	}
}

func TestDecodeOuterError(t *testing.T) {
	for _, in := range []string{"\xff\xfe", `{"apiVersion": `} {
		if _, err := Decode([]byte(in)); err == nil {
			t.Errorf("Decode(%q): want an error for input that cannot be split", in)
		}
	}
}

func TestMarshalUnmarshal(t *testing.T) {
	order := 10.5
	gnp := &GlobalNetworkPolicy{Metadata: ObjectMeta{Name: "x"}, Spec: GlobalNetworkPolicySpec{Order: &order,
		Ingress: []Rule{{Action: ActionAllow, Protocol: &Protocol{Name: "TCP"},
			Destination: EntityRule{Ports: []Port{SinglePort(80), {MinPort: 1, MaxPort: 9}}}}}}}
	b, err := Marshal(gnp)
	if err != nil {
		t.Fatal(err)
	}
	// Marshal sets kind/apiVersion on the copy only.
	if gnp.Kind != "" {
		t.Errorf("Marshal modified its argument's TypeMeta: %+v", gnp.TypeMeta)
	}
	if !strings.Contains(string(b), `"kind":"GlobalNetworkPolicy","apiVersion":"terrace.dev/v1"`) {
		t.Errorf("Marshal = %s", b)
	}
	back, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	gnp.TypeMeta = tm(KindGlobalNetworkPolicy)
	if diff := cmp.Diff(Resource(gnp), back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	// Stored data may carry fields from a newer version: Unmarshal tolerates them.
	if _, err := Unmarshal([]byte(`{"kind":"Node","apiVersion":"terrace.dev/v1","metadata":{"name":"a"},"spec":{"future":1}}`)); err != nil {
		t.Errorf("Unmarshal with an unknown field: %v", err)
	}
	for _, bad := range []string{`{"kind":"Nope","apiVersion":"terrace.dev/v1"}`, `{"kind":"Node","apiVersion":"v1"}`, `[]`, ``} {
		if _, err := Unmarshal([]byte(bad)); err == nil {
			t.Errorf("Unmarshal(%s): want error", bad)
		}
	}
	if _, err := Marshal((*Node)(nil)); err == nil {
		t.Errorf("Marshal(nil): want error")
	}
}

func TestDecodeAliasBomb(t *testing.T) {
	// A "billion laughs" document must be refused quickly, not expanded.
	bomb := `a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
kind: Node
apiVersion: terrace.dev/v1
`
	start := time.Now()
	docs, err := Decode([]byte(bomb))
	if err != nil || len(docs) != 1 || docs[0].Err == nil {
		t.Fatalf("Decode = %+v, %v; want one document with an error", docs, err)
	}
	// The refusal must come from the alias limit, before anything walks the expanded tree (the
	// unknown keys a..g must not lead the key-path walk into expanding it).
	if !strings.Contains(docs[0].Err.Error(), "excessive aliasing") {
		t.Errorf("Decode error %q, want the alias limit's refusal", docs[0].Err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Decode took %v", d)
	}
}

// TestDecodeKeepsOwnHints: YAML input goes through sigs.k8s.io/yaml, whose wrappers are dropped,
// but not the hints of Terrace's own decoders under them.
func TestDecodeKeepsOwnHints(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"apiVersion: terrace.dev/v1\nkind: BGPPeer\nmetadata: {name: s}\nspec: {peerIP: 192.0.2.1, asNumber: 65000, holdTime: 90}\n",
			`decode BGPPeer "s": decode duration: want a string like "90s"`},
		{"apiVersion: terrace.dev/v1\nkind: IPPool\nmetadata: {name: s}\nspec: {cidr: 198.18.0.0/16, blockSize: x}\n",
			`decode IPPool "s": json: cannot unmarshal string into Go struct field IPPoolSpec.spec.blockSize`},
	} {
		docs, err := Decode([]byte(tc.in))
		if err != nil || len(docs) != 1 || docs[0].Err == nil {
			t.Fatalf("Decode(%q) = %v, %v; want one document with an error", tc.in, docs, err)
		}
		if got := docs[0].Err.Error(); !strings.HasPrefix(got, tc.want) {
			t.Errorf("error %q, want it to start %q", got, tc.want)
		}
	}
}
