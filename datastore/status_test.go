package datastore

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEndpointStatusKey(t *testing.T) {
	tests := []struct {
		node, ns, name string
		want           string
	}{
		{"host-1", "default", "host--1-k8s-web-eth0", "/terrace/status/v1/host-1/endpoints/default/host--1-k8s-web-eth0"},
		{"n", "kube-system", "x", "/terrace/status/v1/n/endpoints/kube-system/x"},
	}
	for _, tt := range tests {
		got := EndpointStatusKey(tt.node, tt.ns, tt.name)
		if got != tt.want {
			t.Errorf("EndpointStatusKey(%q,%q,%q) = %q, want %q", tt.node, tt.ns, tt.name, got, tt.want)
		}
		n, ns, name, err := ParseEndpointStatusKey(got)
		if err != nil || n != tt.node || ns != tt.ns || name != tt.name {
			t.Errorf("ParseEndpointStatusKey(%q) = %q %q %q %v", got, n, ns, name, err)
		}
		if p := EndpointStatusPrefix(tt.node); got[:len(p)] != p {
			t.Errorf("key %q not under prefix %q", got, p)
		}
	}
}

func TestParseEndpointStatusKeyBad(t *testing.T) {
	for _, k := range []string{
		"", "/terrace/v1/workloadendpoints/a/b", "/terrace/status/v1/n/endpoints/ns",
		"/terrace/status/v1/n/other/ns/x", "/terrace/status/v1//endpoints/ns/x", "/terrace/status/v1/n/endpoints/ns/x/y",
		"/terrace/status/v1/n/endpoints//x",
	} {
		if _, _, _, err := ParseEndpointStatusKey(k); err == nil {
			t.Errorf("ParseEndpointStatusKey(%q) accepted", k)
		}
	}
}

func TestEndpointStatusRoundTrip(t *testing.T) {
	tests := []struct {
		in   EndpointStatus
		json string
	}{
		{EndpointStatus{Programmed: true, Revision: 42}, `{"programmed":true,"revision":42}`},
		{EndpointStatus{}, `{"programmed":false,"revision":0}`},
	}
	for _, tt := range tests {
		b := tt.in.Marshal()
		if string(b) != tt.json {
			t.Errorf("Marshal(%+v) = %s, want %s", tt.in, b, tt.json)
		}
		got, err := ParseEndpointStatus(b)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(tt.in, got); d != "" {
			t.Errorf("round trip (-want +got):\n%s", d)
		}
	}
	if _, err := ParseEndpointStatus([]byte("{")); err == nil {
		t.Error("truncated JSON accepted")
	}
}

func FuzzParseEndpointStatusKey(f *testing.F) {
	f.Add("/terrace/status/v1/n/endpoints/ns/x")
	f.Add("/terrace/status/v1/n/endpoints/ns/")
	f.Fuzz(func(t *testing.T, key string) {
		n, ns, name, err := ParseEndpointStatusKey(key)
		if err != nil {
			return
		}
		if back := EndpointStatusKey(n, ns, name); back != key {
			t.Fatalf("parse(%q) = %q %q %q, which builds %q", key, n, ns, name, back)
		}
	})
}

func FuzzParseEndpointStatus(f *testing.F) {
	f.Add([]byte(`{"programmed":true,"revision":3}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseEndpointStatus(data)
		if err != nil {
			return
		}
		again, err := ParseEndpointStatus(st.Marshal())
		if err != nil || again != st {
			t.Fatalf("re-parse of %+v: %+v %v", st, again, err)
		}
	})
}
