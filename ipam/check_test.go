package ipam

import (
	"net/netip"
	"testing"

	"github.com/terracenet/terrace/datastore/api"
)

func TestLeakReason(t *testing.T) {
	wep := func(ns, name, pod, cid string, ips ...string) *api.WorkloadEndpoint {
		w := &api.WorkloadEndpoint{Metadata: api.ObjectMeta{Namespace: ns, Name: name}}
		w.Spec.Pod, w.Spec.ContainerID, w.Spec.IPNetworks = pod, cid, ips
		return w
	}
	w := &world{nodes: map[string]bool{"h1": true}, weps: map[string]*api.WorkloadEndpoint{},
		byIP: map[netip.Addr][]string{}, byPod: map[string][]string{}}
	for _, e := range []*api.WorkloadEndpoint{
		wep("ns", "web-eth0", "web", "c-new", "198.18.0.1/32"),
		wep("ns", "db-eth0", "db", ""),
	} {
		k := e.Metadata.Namespace + "/" + e.Metadata.Name
		w.weps[k] = e
		w.byPod[e.Metadata.Namespace+"/"+e.Spec.Pod] = append(w.byPod[e.Metadata.Namespace+"/"+e.Spec.Pod], k)
		for _, n := range e.Spec.IPNetworks {
			p := netip.MustParsePrefix(n)
			w.byIP[p.Addr()] = append(w.byIP[p.Addr()], k)
		}
	}
	tests := []struct {
		name  string
		ip    string
		attrs map[string]string
		leak  bool
	}{
		{"endpoint lists the address", "198.18.0.1", map[string]string{AttrNode: "gone"}, false},
		{"endpoint named, same container", "198.18.0.9", map[string]string{AttrNamespace: "ns", AttrWorkload: "web-eth0", AttrContainerID: "c-new"}, false},
		{"endpoint named, container replaced", "198.18.0.9", map[string]string{AttrNamespace: "ns", AttrWorkload: "web-eth0", AttrContainerID: "c-old"}, true},
		{"endpoint named, gone", "198.18.0.9", map[string]string{AttrNamespace: "ns", AttrWorkload: "x-eth0"}, true},
		{"pod without container id on endpoint", "198.18.0.9", map[string]string{AttrNamespace: "ns", AttrPod: "db", AttrContainerID: "c1"}, false},
		{"pod in another namespace", "198.18.0.9", map[string]string{AttrNamespace: "other", AttrPod: "db"}, true},
		{"no workload, node exists", "198.18.0.9", map[string]string{AttrNode: "h1"}, true},
		{"no workload, node gone", "198.18.0.9", map[string]string{AttrNode: "gone"}, true},
		// terrace-ipam for another plugin: no endpoint is ever written, only the node can tell.
		{"IPAM alone, node exists", "198.18.0.9", map[string]string{AttrNode: "h1", AttrNamespace: "ns", AttrPod: "web2", AttrIPAMOnly: "true"}, false},
		{"IPAM alone, node gone", "198.18.0.9", map[string]string{AttrNode: "gone", AttrNamespace: "ns", AttrPod: "web2", AttrIPAMOnly: "true"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reason := w.leakReason(netip.MustParseAddr(tt.ip), tt.attrs)
			if (reason != "") != tt.leak {
				t.Fatalf("leakReason = %q, want leak %v", reason, tt.leak)
			}
		})
	}
}
