package cni

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/terracenet/terrace/datastore"
)

// The plugin repeats datastore's endpoint status key and value (so it need not link etcd); they
// must stay identical to what felix writes.
func TestEndpointStatusMatchesDatastore(t *testing.T) {
	for _, tc := range []struct{ node, ns, name string }{{"host-a", "default", "w1"}, {"n.example", "kube-system", "a-b-c"}} {
		key := EndpointStatusKey(tc.node, tc.ns, tc.name)
		if want := datastore.EndpointStatusKey(tc.node, tc.ns, tc.name); key != want {
			t.Errorf("EndpointStatusKey = %q, datastore says %q", key, want)
		}
		n, ns, name, err := parseEndpointStatusKey(key)
		if err != nil || n != tc.node || ns != tc.ns || name != tc.name {
			t.Errorf("parse %q = %q %q %q %v", key, n, ns, name, err)
		}
	}
	for _, v := range []datastore.EndpointStatus{{Programmed: true, Revision: 42}, {}} {
		got, err := ParseEndpointStatus(v.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(EndpointStatus{Programmed: v.Programmed, Revision: v.Revision}, got); diff != "" {
			t.Errorf("status (-want +got):\n%s", diff)
		}
	}
}

// FuzzParseEndpointStatusKey: the plugin's parser agrees with datastore's on every input.
func FuzzParseEndpointStatusKey(f *testing.F) {
	for _, s := range []string{"/terrace/status/v1/host-a/endpoints/default/w1", "/terrace/status/v1/", "/terrace/status/v1/a/b/c/d", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		n1, ns1, name1, err1 := parseEndpointStatusKey(key)
		n2, ns2, name2, err2 := datastore.ParseEndpointStatusKey(key)
		if (err1 == nil) != (err2 == nil) || n1 != n2 || ns1 != ns2 || name1 != name2 {
			t.Fatalf("%q: plugin %q %q %q %v, datastore %q %q %q %v", key, n1, ns1, name1, err1, n2, ns2, name2, err2)
		}
	})
}
