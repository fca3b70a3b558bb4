package cni

import (
	"regexp"
	"testing"

	"github.com/terracenet/terrace/datastore/api"
)

var hostIfRE = regexp.MustCompile(`^trc[0-9a-f]{11}$`)

func TestHostInterfaceName(t *testing.T) {
	a := HostInterfaceName("net1", "c1", "eth0")
	if !hostIfRE.MatchString(a) {
		t.Fatalf("%q does not match %v", a, hostIfRE)
	}
	if a != HostInterfaceName("net1", "c1", "eth0") {
		t.Fatal("not deterministic")
	}
	for _, other := range []string{HostInterfaceName("net2", "c1", "eth0"), HostInterfaceName("net1", "c2", "eth0"), HostInterfaceName("net1", "c1", "eth1")} {
		if other == a {
			t.Fatalf("identity part ignored: %q", other)
		}
	}
}

func TestWorkloadEndpointName(t *testing.T) {
	long := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct{ node, orch, pod, ifn, want string }{
		{"host-1", "k8s", "web", "eth0", "host--1-k8s-web-eth0"},
		{"n1", "k8s", "a-b", "eth0", "n1-k8s-a--b-eth0"},
		{"n1", "k8s", "web.v2", "eth0", "n1-k8s-web.v2-eth0"},
		{"n1", "k8s", "Web_X", "eth0", "n1-k8s-web--x-eth0"},
		{"n1", "cni", long, "eth0", ""},
	}
	for _, tc := range tests {
		got := WorkloadEndpointName(tc.node, tc.orch, tc.pod, tc.ifn)
		if tc.want != "" && got != tc.want {
			t.Errorf("WorkloadEndpointName(%q,%q,%q,%q) = %q, want %q", tc.node, tc.orch, tc.pod, tc.ifn, got, tc.want)
		}
		if !isSubdomain(got) {
			t.Errorf("%q is not an RFC 1123 subdomain", got)
		}
	}
	if WorkloadEndpointName("n1", "k8s", "a-b", "c") == WorkloadEndpointName("n1", "k8s", "a", "b-c") {
		t.Error("escaping lets two attachments share a name")
	}
	if WorkloadEndpointName("n1", "cni", long, "eth0") == WorkloadEndpointName("n1", "cni", long[:63]+"0", "eth0") {
		t.Error("hashed names collide")
	}
}

// FuzzWorkloadEndpointName: whatever the runtime passes, the name is a valid resource name that
// the datastore's own validation accepts.
func FuzzWorkloadEndpointName(f *testing.F) {
	f.Add("host-1", "web-0", "eth0")
	f.Add("n", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "net1")
	f.Add("n", "..", "-")
	f.Fuzz(func(t *testing.T, node, pod, ifn string) {
		name := WorkloadEndpointName(node, "k8s", pod, ifn)
		if !isSubdomain(name) {
			t.Fatalf("%q is not a subdomain", name)
		}
		if WorkloadEndpointName(node, "k8s", pod, ifn) != name {
			t.Fatal("not deterministic")
		}
		w := &api.WorkloadEndpoint{
			TypeMeta: api.TypeMeta{Kind: "WorkloadEndpoint", APIVersion: api.GroupVersion},
			Metadata: api.ObjectMeta{Name: name, Namespace: "default"},
			Spec:     api.WorkloadEndpointSpec{Node: "n1", InterfaceName: "trc0123456789a"},
		}
		if err := api.Validate(w); err != nil {
			t.Fatalf("datastore rejects %q: %v", name, err)
		}
	})
}

func TestEndpointStatus(t *testing.T) {
	if got, want := EndpointStatusKey("host-1", "default", "w1"), "/terrace/status/v1/host-1/endpoints/default/w1"; got != want {
		t.Fatalf("key %q, want %q", got, want)
	}
	st, err := ParseEndpointStatus([]byte(`{"programmed":true,"revision":42}`))
	if err != nil || !st.Programmed || st.Revision != 42 {
		t.Fatalf("parse = %+v, %v", st, err)
	}
	if _, err := ParseEndpointStatus([]byte(`{"programmed":`)); err == nil {
		t.Fatal("truncated status accepted")
	}
}
