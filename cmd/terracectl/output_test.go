package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/terracenet/terrace/datastore/api"
)

func pool(name, cidr string, nat bool) *api.IPPool {
	p := &api.IPPool{}
	p.Metadata.Name = name
	p.Spec = api.IPPoolSpec{CIDR: cidr, BlockSize: 26, NATOutgoing: nat, NodeSelector: "all()", IPIPMode: "Never"}
	return p
}

func netset(ns, name string, nets ...string) *api.NetworkSet {
	s := &api.NetworkSet{}
	s.Metadata.Name, s.Metadata.Namespace = name, ns
	s.Metadata.Labels = map[string]string{"b": "2", "a": "1"}
	s.Spec.Nets = nets
	return s
}

// norm collapses the padding of table output so tests pin the content, not the spacing.
func norm(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		out = append(out, strings.Join(strings.Fields(l), " "))
	}
	return out
}

func TestPrintTable(t *testing.T) {
	tests := []struct {
		name string
		rs   []api.Resource
		opts printOptions
		want []string
	}{
		{
			name: "ippool table",
			rs:   []api.Resource{pool("pool-1", "198.18.0.0/16", true), pool("pool-2", "2001:db8:1000::/48", false)},
			want: []string{
				"NAME CIDR BLOCKSIZE NAT DISABLED SELECTOR",
				"pool-1 198.18.0.0/16 26 true - all()",
				"pool-2 2001:db8:1000::/48 26 false - all()",
			},
		},
		{
			name: "ippool wide",
			rs:   []api.Resource{pool("pool-1", "198.18.0.0/16", true)},
			opts: printOptions{format: outWide},
			want: []string{
				"NAME CIDR BLOCKSIZE NAT DISABLED SELECTOR DISABLEBGPEXPORT ALLOWEDUSES IPIP VXLAN",
				"pool-1 198.18.0.0/16 26 true - all() - - Never -",
			},
		},
		{
			name: "namespaced with -A shows namespace, wide shows sorted labels",
			rs:   []api.Resource{netset("prod", "partners", "198.51.100.0/28", "198.51.100.64/28")},
			opts: printOptions{format: outWide, showNamespace: true},
			want: []string{
				"NAMESPACE NAME NETS LABELS",
				"prod partners 198.51.100.0/28,198.51.100.64/28 a=1,b=2",
			},
		},
		{
			name: "mixed kinds get one table each in registry order",
			rs:   []api.Resource{netset("prod", "x", "198.51.100.0/28"), pool("p", "198.18.0.0/16", false)},
			want: []string{
				"NAME CIDR BLOCKSIZE NAT DISABLED SELECTOR",
				"p 198.18.0.0/16 26 false - all()",
				"",
				"NAME NETS",
				"x 198.51.100.0/28",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := printResources(&buf, tt.rs, tt.opts); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, norm(buf.String())); diff != "" {
				t.Errorf("table (-want +got):\n%s\nraw:\n%s", diff, buf.String())
			}
		})
	}
}

func TestPrintStructured(t *testing.T) {
	p := pool("pool-1", "198.18.0.0/16", true)
	tests := []struct {
		name   string
		rs     []api.Resource
		opts   printOptions
		decode func([]byte) (map[string]any, error)
		want   map[string]any
	}{
		{
			name: "json list is a stable List object even with one item",
			rs:   []api.Resource{p},
			opts: printOptions{format: outJSON},
			want: map[string]any{"kind": "List", "items": []any{map[string]any{
				"kind": "IPPool", "apiVersion": "terrace.dev/v1", "metadata": map[string]any{"name": "pool-1"},
				"spec": map[string]any{"cidr": "198.18.0.0/16", "blockSize": 26.0, "natOutgoing": true, "nodeSelector": "all()", "ipipMode": "Never"},
			}}},
		},
		{
			name: "empty json list has items []",
			rs:   nil,
			opts: printOptions{format: outJSON},
			want: map[string]any{"kind": "List", "items": []any{}},
		},
		{
			name: "single by name is the object itself, in yaml",
			rs:   []api.Resource{p},
			opts: printOptions{format: outYAML, single: true},
			want: map[string]any{
				"kind": "IPPool", "apiVersion": "terrace.dev/v1", "metadata": map[string]any{"name": "pool-1"},
				"spec": map[string]any{"cidr": "198.18.0.0/16", "blockSize": 26.0, "natOutgoing": true, "nodeSelector": "all()", "ipipMode": "Never"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := printResources(&buf, tt.rs, tt.opts); err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			var err error
			if tt.opts.format == outYAML {
				got, err = yamlToMap(buf.Bytes())
			} else {
				err = json.Unmarshal(buf.Bytes(), &got)
			}
			if err != nil {
				t.Fatalf("decode output: %v\n%s", err, buf.String())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPrintName(t *testing.T) {
	var buf bytes.Buffer
	rs := []api.Resource{pool("pool-1", "198.18.0.0/16", true), netset("prod", "partners")}
	if err := printResources(&buf, rs, printOptions{format: outName}); err != nil {
		t.Fatal(err)
	}
	want := "ippool/pool-1\nnetworkset/prod/partners\n"
	if buf.String() != want {
		t.Errorf("got %q, want %q", buf.String(), want)
	}
}

func TestCell(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{nil, "-"}, {"", "-"}, {"x", "x"}, {true, "true"}, {json.Number("26"), "26"},
		{[]any{"a", "b"}, "a,b"}, {[]any{}, "-"},
		{map[string]any{"z": "1", "a": "2"}, "a=2,z=1"}, {map[string]any{}, "-"},
	}
	for _, tt := range tests {
		if got := cell(tt.in); got != tt.want {
			t.Errorf("cell(%#v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCheckOutput(t *testing.T) {
	for _, o := range []string{"", "wide", "yaml", "json", "name"} {
		if err := checkOutput(o); err != nil {
			t.Errorf("checkOutput(%q) = %v", o, err)
		}
	}
	err := checkOutput("xml")
	if exitCode(err) != exitInput {
		t.Errorf("checkOutput(xml) exit %d, want %d (%v)", exitCode(err), exitInput, err)
	}
}
