package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/node"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{errors.New("boom"), exitRuntime},
		{usageErrorf("bad flag"), exitInput},
		{fmt.Errorf("wrapped: %w", &api.ValidationError{Kind: "IPPool"}), exitInput},
		{reported{exitRuntime}, exitRuntime},
		{fmt.Errorf("x: %w", reported{exitInput}), exitInput},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestDocLabelAndDescribe(t *testing.T) {
	p := pool("foo", "198.18.0.0/16", false)
	ve := &api.ValidationError{Kind: "IPPool", Name: "foo", Fields: []api.FieldError{
		{Path: "spec.cidr", Reason: "bad"}, {Path: "spec.blockSize", Reason: "too\nbig"}}}
	tests := []struct {
		d         doc
		wantLabel string
		wantDesc  string
	}{
		{d: doc{file: "x.yaml", Document: api.Document{Index: 2, Line: 14, Resource: p}, problem: ve},
			wantLabel: "document 3 (IPPool/foo, x.yaml:14)", wantDesc: "spec.cidr: bad; spec.blockSize: too big"},
		{d: doc{file: "stdin", Document: api.Document{Index: 0, Line: 1}, problem: errors.New("parse YAML: oops")},
			wantLabel: "document 1 (stdin:1)", wantDesc: "parse YAML: oops"},
		{d: doc{file: "n.yaml", Document: api.Document{Index: 0, Line: 1, Resource: netset("prod", "s")}, problem: errors.New("x")},
			wantLabel: "document 1 (NetworkSet/prod/s, n.yaml:1)", wantDesc: "x"},
	}
	for _, tt := range tests {
		if got := tt.d.label(); got != tt.wantLabel {
			t.Errorf("label = %q, want %q", got, tt.wantLabel)
		}
		if got := describeErr(tt.d.problem); got != tt.wantDesc {
			t.Errorf("describe = %q, want %q", got, tt.wantDesc)
		}
	}
}

func TestPlaceNamespace(t *testing.T) {
	tests := []struct {
		name     string
		r        api.Resource
		ns       string
		explicit bool
		wantNS   string
		wantErr  string
	}{
		{name: "fills default", r: netset("", "a"), ns: "default", wantNS: "default"},
		{name: "keeps own", r: netset("prod", "a"), ns: "default", wantNS: "prod"},
		{name: "contradicts -n", r: netset("prod", "a"), ns: "dev", explicit: true, wantErr: `does not match --namespace "dev"`},
		{name: "cluster kind with namespace", r: func() api.Resource { p := pool("p", "198.18.0.0/16", false); p.Metadata.Namespace = "x"; return p }(),
			ns: "default", wantErr: "IPPool is not namespaced"},
		{name: "cluster kind stays cluster", r: pool("p", "198.18.0.0/16", false), ns: "prod", explicit: true, wantNS: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := placeNamespace(tt.r, tt.ns, tt.explicit)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.r.GetObjectMeta().Namespace; got != tt.wantNS {
				t.Errorf("namespace = %q, want %q", got, tt.wantNS)
			}
		})
	}
}

func TestPrintNodeStatus(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	base := node.Status{NodeName: "host-1", IPv4: "192.0.2.1/24", StartTime: start, Version: "v1",
		Autodetection: node.AddressInfo{Method: "can-reach=192.0.2.254", Interface: "eth0", Reason: "because"}}
	withBGP := base
	withBGP.Components = map[string]node.ComponentStatus{
		"felix": {State: "in-sync", Since: start},
		"bgp":   {State: "running", Since: start, Details: map[string]any{"peers": []string{"192.0.2.254 Established"}}},
	}
	tests := []struct {
		name    string
		st      node.Status
		want    []string
		notWant []string
	}{
		{name: "no components", st: base,
			want: []string{"Node: host-1", "Started: 2026-01-01T00:00:00Z (up 1m30s)", "IPv4: 192.0.2.1/24", "IPv6: -",
				"Address method: can-reach=192.0.2.254", "Interface: eth0", "Reason: because",
				"none running", "BGP peers:", "not available"}},
		{name: "components", st: withBGP,
			want:    []string{"NAME STATE SINCE DETAIL", "bgp running 2026-01-01T00:00:00Z -", "felix in-sync", `["192.0.2.254 Established"]`},
			notWant: []string{"not available", "none running"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := printNodeStatus(&buf, tt.st, start.Add(90*time.Second)); err != nil {
				t.Fatal(err)
			}
			out := strings.Join(norm(buf.String()), "\n")
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}

func FuzzParseLabelArgs(f *testing.F) {
	for _, s := range []string{"a=b", "a-", "a=b=c", "=", "-", "a", "a=b a-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Fields(s)
		ch, err := parseLabelArgs(args)
		if err != nil {
			if exitCode(err) != exitInput {
				t.Fatalf("parse error %v is not a usage error", err)
			}
			return
		}
		if len(ch) != len(args) {
			t.Fatalf("%d changes from %d args", len(ch), len(args))
		}
		got, _, err := applyLabels(nil, ch, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range ch {
			v, ok := got[c.key]
			if c.remove == ok || (!c.remove && v != c.value) {
				t.Fatalf("change %+v not reflected in %v", c, got)
			}
		}
	})
}

func TestRefResources(t *testing.T) {
	tests := []struct {
		refs    []string
		want    []string // refOf of each result
		wantErr string
	}{
		{refs: []string{"ippool/p1", "GNP/deny", "np/prod/allow"}, want: []string{"ippool/p1", "globalnetworkpolicy/deny", "networkpolicy/prod/allow"}},
		{refs: []string{"netset/s"}, want: []string{"networkset/dev/s"}}, // -n dev below
		{refs: []string{"ippool/ns/p1"}, wantErr: "IPPool is not namespaced"},
		{refs: []string{"ippool/"}, wantErr: "want KIND/NAME"},
		{refs: []string{"np/a/b/c"}, wantErr: "want KIND/NAME"},
		{refs: []string{"pods/x"}, wantErr: `unknown kind`},
	}
	for _, tt := range tests {
		rs, err := refResources(tt.refs, "dev")
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || exitCode(err) != exitInput {
				t.Errorf("%v: err %v, want %q with exit %d", tt.refs, err, tt.wantErr, exitInput)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tt.refs, err)
			continue
		}
		var got []string
		for _, r := range rs {
			got = append(got, refOf(r))
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%v (-want +got):\n%s", tt.refs, diff)
		}
	}
}
