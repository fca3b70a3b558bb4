package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/go-cmp/cmp"
)

const testNS = "/var/run/netns/trctest-pod"

type harness struct {
	be  *fakeBackend
	dp  *fakeDataplane
	out bytes.Buffer
	p   *Plugin
}

func newHarness() *harness {
	h := &harness{be: newFakeBackend(), dp: newFakeDataplane(testNS)}
	h.p = &Plugin{Connect: h.be.connector(), Dataplane: h.dp, Stdout: &h.out, Getenv: envOf(nil),
		Hostname: fixedHost("node-a"), Log: slog.New(slog.DiscardHandler)}
	return h
}

func conf(extra string) []byte {
	return []byte(`{"cniVersion":"1.1.0","name":"net1","type":"terrace","nodename":"node-a"` + extra + `}`)
}

func cmdArgs(cid string, stdin []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: cid, Netns: testNS, IfName: "eth0", Args: "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0", StdinData: stdin}
}

func code(t *testing.T, err error) uint {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not a CNI error", err)
	}
	return e.Code
}

// assertEmpty fails if anything of an attachment is left anywhere.
func (h *harness) assertEmpty(t *testing.T) {
	t.Helper()
	if len(h.be.weps) != 0 || len(h.be.allocs) != 0 || len(h.dp.links) != 0 || len(h.dp.podIfs) != 0 {
		t.Fatalf("left behind: weps=%v allocs=%v links=%v podIfs=%v", h.be.weps, h.be.allocs, h.dp.links, h.dp.podIfs)
	}
}

func TestAddWritesEndpointAndResult(t *testing.T) {
	h := newHarness()
	stdin := conf(`,"ipam":{"assign_ipv6":"true"},"args":{"cni":{"labels":[{"key":"app","value":"web"}]}}`)
	if err := h.p.Add(cmdArgs("c1", stdin)); err != nil {
		t.Fatal(err)
	}
	hostIf := HostInterfaceName("net1", "c1", "eth0")
	// The plugin chooses the pod's MAC (the dataplane is told it), so that the endpoint can be
	// written while the veth is made: a unicast, locally administered address.
	mac := h.dp.links[hostIf].PodMAC
	if !h.dp.links[hostIf].IPv6Host {
		t.Errorf("host side not readied for IPv6 for a dual-stack pod")
	}
	if hw, err := net.ParseMAC(mac); err != nil || len(hw) != 6 || hw[0]&0x01 != 0 || hw[0]&0x02 == 0 {
		t.Fatalf("pod MAC %q given to the dataplane: want a unicast, locally administered address (%v)", mac, err)
	}
	var got, want map[string]any
	if err := json.Unmarshal(h.out.Bytes(), &got); err != nil {
		t.Fatalf("result %s: %v", h.out.String(), err)
	}
	wantRes := BuildResult(Attachment{HostIf: hostIf, PodIf: "eth0", PodMAC: mac, Sandbox: testNS,
		IPv4: []netip.Addr{netip.MustParseAddr("198.18.0.1")}, IPv6: []netip.Addr{netip.MustParseAddr("2001:db8:1000::1")}})
	wantJSON, _ := json.Marshal(wantRes)
	json.Unmarshal(wantJSON, &want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("result (-want +got):\n%s", diff)
	}
	name := WorkloadEndpointName("node-a", "k8s", "web-0", "eth0")
	w := h.be.weps["prod/"+name]
	if w == nil {
		t.Fatalf("no endpoint prod/%s in %v", name, h.be.weps)
	}
	wantSpec := w.Spec
	wantSpec.Orchestrator, wantSpec.Node, wantSpec.ContainerID, wantSpec.Pod = "k8s", "node-a", "c1", "web-0"
	wantSpec.Endpoint, wantSpec.InterfaceName, wantSpec.MAC = "eth0", hostIf, mac
	wantSpec.IPNetworks = []string{"198.18.0.1/32", "2001:db8:1000::1/128"}
	wantSpec.IPv4Gateway, wantSpec.IPv6Gateway = GatewayIPv4, GatewayIPv6
	if diff := cmp.Diff(wantSpec, w.Spec); diff != "" {
		t.Errorf("endpoint spec (-want +got):\n%s", diff)
	}
	wantLabels := map[string]string{"app": "web", LabelNamespace: "prod", LabelOrchestrator: "k8s"}
	if diff := cmp.Diff(wantLabels, w.Metadata.Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	a := h.be.allocs[netip.MustParseAddr("198.18.0.1")]
	if a.Handle != "net1.c1" || a.Attrs["namespace"] != "prod" || a.Attrs["pod"] != "web-0" || a.Attrs["containerID"] != "c1" || a.Attrs["node"] != "node-a" {
		t.Errorf("allocation %+v lacks handle or attributes", a)
	}

	// CHECK with the result as prevResult passes; after the endpoint vanishes it fails.
	var prev map[string]any
	json.Unmarshal(h.out.Bytes(), &prev)
	pr, _ := json.Marshal(prev)
	checkConf := conf(`,"ipam":{"assign_ipv6":"true"},"prevResult":` + string(pr))
	if err := h.p.Check(cmdArgs("c1", checkConf)); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	delete(h.be.weps, "prod/"+name)
	if err := h.p.Check(cmdArgs("c1", checkConf)); err == nil || code(t, err) != CodeCheckFailed {
		t.Fatalf("CHECK without endpoint = %v, want code %d", err, CodeCheckFailed)
	}
}

func TestAddFailureAtEachStepLeavesNothing(t *testing.T) {
	for _, step := range []string{"ipam", "veth", "host", "pod", "route", "endpoint", "policy"} {
		t.Run(step, func(t *testing.T) {
			h := newHarness()
			h.p.FailAt = step
			err := h.p.Add(cmdArgs("c1", conf(`,"ipam":{"assign_ipv6":true}`)))
			if err == nil || !strings.Contains(err.Error(), "injected failure at step \""+step+"\"") {
				t.Fatalf("err = %v, want the injected failure", err)
			}
			if h.out.Len() != 0 {
				t.Fatalf("printed a result on failure: %s", h.out.String())
			}
			h.assertEmpty(t)
		})
	}
}

func TestAddErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(h *harness, a *skel.CmdArgs)
		code  uint
	}{
		{"netns missing", func(h *harness, a *skel.CmdArgs) { a.Netns = "/var/run/netns/trctest-gone" }, types.ErrUnknownContainer},
		{"datastore down", func(h *harness, a *skel.CmdArgs) { h.be.down = true }, types.ErrTryAgainLater},
		{"pools exhausted", func(h *harness, a *skel.CmdArgs) { h.be.free4 = 0 }, CodePoolsExhausted},
		{"no pools", func(h *harness, a *skel.CmdArgs) { h.be.assignE = ErrNoPools }, types.ErrInvalidNetworkConfig},
		{"interface taken", func(h *harness, a *skel.CmdArgs) { h.dp.podIfs[testNS+"/eth0"] = true }, CodeInterfaceExists},
		{"bad CNI_ARGS", func(h *harness, a *skel.CmdArgs) { a.Args = "K8S_POD_NAME" }, types.ErrInvalidEnvironmentVariables},
		{"bad config", func(h *harness, a *skel.CmdArgs) { a.StdinData = []byte(`{"cniVersion":"1.1.0","name":"n","mtu":1}`) }, types.ErrInvalidNetworkConfig},
		{"policy timeout", func(h *harness, a *skel.CmdArgs) { a.StdinData = conf(`,"policy_setup_timeout_seconds":1`) }, CodePolicyTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness()
			a := cmdArgs("c1", conf(""))
			tc.setup(h, a)
			err := h.p.Add(a)
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			if got := code(t, err); got != tc.code {
				t.Fatalf("code %d (%v), want %d", got, err, tc.code)
			}
			delete(h.dp.podIfs, testNS+"/eth0")
			h.assertEmpty(t)
		})
	}
}

func TestPolicyWaitHonoursRevision(t *testing.T) {
	h := newHarness()
	name := WorkloadEndpointName("node-a", "k8s", "web-0", "eth0")
	key := EndpointStatusKey("node-a", "prod", name)
	// A status from an earlier endpoint of the same name must not count...
	h.be.raw[key] = []byte(`{"programmed":true,"revision":0}`)
	h.be.rev = 10
	if err := h.p.Add(cmdArgs("c1", conf(`,"policy_setup_timeout_seconds":1`))); err == nil || code(t, err) != CodePolicyTimeout {
		t.Fatalf("stale status accepted: %v", err)
	}
	h.assertEmpty(t)
	// ...one at the endpoint's revision does.
	h.be.raw[key] = []byte(`{"programmed":true,"revision":100}`)
	if err := h.p.Add(cmdArgs("c1", conf(`,"policy_setup_timeout_seconds":1`))); err != nil {
		t.Fatal(err)
	}
}

func TestAddTwiceAndDelTwice(t *testing.T) {
	h := newHarness()
	a := cmdArgs("c1", conf(""))
	if err := h.p.Add(a); err != nil {
		t.Fatal(err)
	}
	first := h.out.String()
	h.out.Reset()
	if err := h.p.Add(a); err != nil {
		t.Fatalf("second ADD: %v", err)
	}
	if h.out.String() != first {
		t.Fatalf("second ADD result differs:\n%s\nvs\n%s", h.out.String(), first)
	}
	if len(h.be.allocs) != 1 {
		t.Fatalf("second ADD allocated again: %v", h.be.allocs)
	}
	for i := range 2 {
		if err := h.p.Del(a); err != nil {
			t.Fatalf("DEL %d: %v", i, err)
		}
		h.assertEmpty(t)
	}
	// DEL after the namespace is gone, and with no netns given at all.
	if err := h.p.Add(a); err != nil {
		t.Fatal(err)
	}
	delete(h.dp.netns, testNS)
	a.Netns = ""
	if err := h.p.Del(a); err != nil {
		t.Fatal(err)
	}
	h.assertEmpty(t)
}

func TestDelKeepsNewerSandboxEndpoint(t *testing.T) {
	h := newHarness()
	if err := h.p.Add(cmdArgs("old", conf(""))); err != nil {
		t.Fatal(err)
	}
	// The pod restarts: its new sandbox takes the same endpoint name; the old DEL comes late.
	h.dp.Remove(HostInterfaceName("net1", "old", "eth0"))
	if err := h.p.Add(cmdArgs("new", conf(""))); err != nil {
		t.Fatal(err)
	}
	if err := h.p.Del(cmdArgs("old", conf(""))); err != nil {
		t.Fatal(err)
	}
	name := WorkloadEndpointName("node-a", "k8s", "web-0", "eth0")
	w := h.be.weps["prod/"+name]
	if w == nil || w.Spec.ContainerID != "new" {
		t.Fatalf("endpoint after old DEL = %+v, want the new container's", w)
	}
	if got, _ := h.be.HandleAddrs(t.Context(), "net1.new"); len(got) != 1 {
		t.Fatalf("new container's addresses released: %v", got)
	}
	if got, _ := h.be.HandleAddrs(t.Context(), "net1.old"); len(got) != 0 {
		t.Fatalf("old container's addresses kept: %v", got)
	}
}

func TestGC(t *testing.T) {
	h := newHarness()
	for _, c := range []string{"keep", "drop"} {
		a := cmdArgs(c, conf(""))
		a.Netns, a.Args = "/var/run/netns/trctest-"+c, "K8S_POD_NAMESPACE=prod;K8S_POD_NAME="+c
		h.dp.netns[a.Netns] = true
		if err := h.p.Add(a); err != nil {
			t.Fatal(err)
		}
	}
	alloc := func(handle, cid, ifName string) {
		attrs := map[string]string{"containerID": cid}
		if ifName != "" {
			attrs["ifname"] = ifName
		}
		if _, _, err := h.be.AutoAssign(t.Context(), AssignRequest{Node: "node-a", Handle: handle, Num4: 1, Attrs: attrs}); err != nil {
			t.Fatal(err)
		}
	}
	// A leaked allocation with no endpoint; a second attachment of "keep" (net1) that is not
	// valid; one of another network, and one of a network whose name starts "net1." (handles
	// "net1.v6.c9"), both of which GC for net1 must not touch; a handle from before handles were
	// per attachment, shared by a valid container's interfaces.
	alloc("net1.leaked", "leaked", "eth0")
	alloc("net1.keep.net1", "keep", "net1")
	alloc("net2.other", "other", "eth0")
	alloc("net1.v6.c9", "c9", "eth0")
	alloc("net1.keep2", "keep2", "net3")
	gcConf := func(list string) []byte {
		return conf(`,"cni.dev/valid-attachments":` + list)
	}
	if err := h.p.GC(&skel.CmdArgs{StdinData: gcConf(`[{"containerID":"keep","ifname":"eth0"},{"containerID":"keep2","ifname":"eth0"}]`)}); err != nil {
		t.Fatal(err)
	}
	handles := func() []string {
		var out []string
		for _, a := range h.be.allocs {
			out = append(out, a.Handle)
		}
		return sortStrings(out)
	}
	if diff := cmp.Diff([]string{"net1.keep", "net1.keep2", "net1.v6.c9", "net2.other"}, handles()); diff != "" {
		t.Errorf("handles after GC (-want +got):\n%s", diff)
	}
	if _, ok := h.be.weps["prod/"+WorkloadEndpointName("node-a", "k8s", "keep", "eth0")]; !ok || len(h.be.weps) != 1 {
		t.Errorf("endpoints after GC: %v", h.be.weps)
	}
	if _, ok := h.dp.links[HostInterfaceName("net1", "drop", "eth0")]; ok {
		t.Error("stale veth kept")
	}

	// Without either list GC refuses and changes nothing: read as "nothing is valid" it would
	// take every pod of the network on the node.
	err := h.p.GC(&skel.CmdArgs{StdinData: conf("")})
	var cerr *types.Error
	if !errors.As(err, &cerr) || cerr.Code != types.ErrInvalidNetworkConfig {
		t.Fatalf("GC without valid attachments: %v, want code %d", err, types.ErrInvalidNetworkConfig)
	}
	if _, ok := h.be.weps["prod/"+WorkloadEndpointName("node-a", "k8s", "keep", "eth0")]; !ok {
		t.Fatal("GC without a list removed a live endpoint")
	}
	// The key as the CNI 1.1.0 text first named it counts too.
	if err := h.p.GC(&skel.CmdArgs{StdinData: conf(`,"cni.dev/attachments":[{"containerID":"keep","ifname":"eth0"}]`)}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"net1.keep", "net1.v6.c9", "net2.other"}, handles()); diff != "" {
		t.Errorf("handles after GC with cni.dev/attachments (-want +got):\n%s", diff)
	}
	if _, ok := h.be.weps["prod/"+WorkloadEndpointName("node-a", "k8s", "keep", "eth0")]; !ok {
		t.Error("GC with cni.dev/attachments removed the valid endpoint")
	}
}

// TestTwoAttachmentsOneContainer: one container attached to the network twice (eth0 and net1,
// as Multus does) holds two handles; the DEL of one keeps the other's addresses.
func TestTwoAttachmentsOneContainer(t *testing.T) {
	h := newHarness()
	eth0, net1 := cmdArgs("c1", conf("")), cmdArgs("c1", conf(""))
	net1.IfName = "net1"
	for _, a := range []*skel.CmdArgs{eth0, net1} {
		if err := h.p.Add(a); err != nil {
			t.Fatal(err)
		}
	}
	a0, _ := h.be.HandleAddrs(t.Context(), HandleID("net1", "c1", "eth0"))
	a1, _ := h.be.HandleAddrs(t.Context(), HandleID("net1", "c1", "net1"))
	if len(a0) != 1 || len(a1) != 1 || a0[0] == a1[0] {
		t.Fatalf("attachments' addresses: eth0 %v, net1 %v; want one each, distinct", a0, a1)
	}
	if err := h.p.Del(net1); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.be.HandleAddrs(t.Context(), HandleID("net1", "c1", "eth0")); !slices.Equal(got, a0) {
		t.Fatalf("eth0's addresses after net1's DEL: %v, want %v", got, a0)
	}
	if got, _ := h.be.HandleAddrs(t.Context(), HandleID("net1", "c1", "net1")); len(got) != 0 {
		t.Fatalf("net1's addresses kept after its DEL: %v", got)
	}
}

// TestDelKeepsAddressWhileVethRemains: a DEL that cannot remove the host side keeps the address
// (its route still leads to the old pod) and fails, so the runtime retries.
func TestDelKeepsAddressWhileVethRemains(t *testing.T) {
	h := newHarness()
	a := cmdArgs("c1", conf(""))
	if err := h.p.Add(a); err != nil {
		t.Fatal(err)
	}
	held, _ := h.be.HandleAddrs(t.Context(), HandleID("net1", "c1", "eth0"))
	h.dp.removeErr = errors.New("device busy")
	if err := h.p.Del(a); err == nil {
		t.Fatal("DEL succeeded though the veth could not be removed")
	}
	if got, _ := h.be.HandleAddrs(t.Context(), HandleID("net1", "c1", "eth0")); !slices.Equal(got, held) || len(held) == 0 {
		t.Fatalf("addresses after a DEL that left the veth: %v, want %v", got, held)
	}
	h.dp.removeErr = nil
	if err := h.p.Del(a); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.be.HandleAddrs(t.Context(), HandleID("net1", "c1", "eth0")); len(got) != 0 {
		t.Fatalf("addresses after the retried DEL: %v", got)
	}
}

func sortStrings(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestStatus(t *testing.T) {
	h := newHarness()
	st := []byte(`{"cniVersion":"1.1.0","name":"net1","nodename":"node-a","node_socket":"` + t.TempDir() + `/none.sock"}`)
	err := h.p.Status(&skel.CmdArgs{StdinData: st})
	if err == nil || code(t, err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "node agent") {
		t.Fatalf("STATUS without node agent = %v, want code 50 naming the node agent", err)
	}
	h.be.down = true
	err = h.p.Status(&skel.CmdArgs{StdinData: st})
	if err == nil || code(t, err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "datastore") {
		t.Fatalf("STATUS with datastore down = %v, want code 50 naming the datastore", err)
	}
}

// TestDelDespiteBadInput: input ADD refuses but DEL does not need (a setting only ADD uses, a
// malformed CNI_ARGS pair) does not stop DEL, which still removes everything the readable parts
// name; input DEL cannot do without (no network name) still fails, and ADD still refuses both.
func TestDelDespiteBadInput(t *testing.T) {
	cases := []struct {
		name  string
		stdin []byte
		args  string
	}{
		{"bad mtu and log level", conf(`,"mtu":5,"log_level":"loud"`), "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0"},
		{"bad ipam section and labels", conf(`,"ipam":{"type":"host-local","assign_ipv4":"false"},"args":{"cni":{"labels":[{"key":"bad key"}]}}`), "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0"},
		{"malformed CNI_ARGS pair", conf(""), "K8S_POD_NAMESPACE=prod;garbage;K8S_POD_NAME=web-0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness()
			if err := h.p.Add(cmdArgs("c1", conf(""))); err != nil {
				t.Fatal(err)
			}
			bad := cmdArgs("c1", tc.stdin)
			bad.Args = tc.args
			if err := h.p.Add(bad); err == nil {
				t.Fatal("ADD accepted the bad input")
			}
			if err := h.p.Del(bad); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if len(h.be.weps) != 0 || len(h.be.allocs) != 0 || len(h.dp.links) != 0 {
				t.Fatalf("after DEL: endpoints %v, allocations %v, links %v", h.be.weps, h.be.allocs, h.dp.links)
			}
		})
	}
	h := newHarness()
	if err := h.p.Del(cmdArgs("c1", []byte(`{"cniVersion":"1.1.0","type":"terrace","nodename":"node-a"}`))); err == nil || code(t, err) != types.ErrInvalidNetworkConfig {
		t.Fatalf("DEL without a network name: %v, want code %d", err, types.ErrInvalidNetworkConfig)
	}
}

// TestGCKeepsAddressesOfAVethLeft: GC that cannot remove a stale attachment's veth keeps its
// endpoint and addresses (the host still routes the address to that veth), reports the failure,
// and a later GC finishes the job.
func TestGCKeepsAddressesOfAVethLeft(t *testing.T) {
	h := newHarness()
	a := cmdArgs("drop", conf(""))
	a.Netns, a.Args = "/var/run/netns/trctest-drop", "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=drop"
	h.dp.netns[a.Netns] = true
	if err := h.p.Add(a); err != nil {
		t.Fatal(err)
	}
	gc := &skel.CmdArgs{StdinData: conf(`,"mtu":10,"cni.dev/valid-attachments":[]`)} // a wrong mtu does not stop a clean-up
	h.dp.removeErr = errors.New("device or resource busy")
	if err := h.p.GC(gc); err == nil || !strings.Contains(err.Error(), "device or resource busy") {
		t.Fatalf("GC with a veth it cannot remove: %v, want the failure reported", err)
	}
	if got, _ := h.be.HandleAddrs(t.Context(), HandleID("net1", "drop", "eth0")); len(got) != 1 {
		t.Fatalf("addresses of the attachment whose veth is left: %v, want kept", got)
	}
	if len(h.be.weps) != 1 {
		t.Fatalf("endpoints: %v, want the stale one kept for the next GC", h.be.weps)
	}
	h.dp.removeErr = nil
	if err := h.p.GC(gc); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.be.HandleAddrs(t.Context(), HandleID("net1", "drop", "eth0")); len(got) != 0 || len(h.be.weps) != 0 || len(h.dp.links) != 0 {
		t.Fatalf("after the second GC: addresses %v, endpoints %v, links %v; want nothing", got, h.be.weps, h.dp.links)
	}
}

// TestBadDatastoreSettings: TLS files that cannot work are a configuration error (7) for every
// command that connects, not "try again later" (11), which a runtime would retry for ever; a
// datastore that does not answer stays 11 (50 for STATUS).
func TestBadDatastoreSettings(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		want    uint
		wantSts uint
	}{
		{"bad TLS files", fmt.Errorf("%w: open etcd: TLS configuration: read CA file: no such file", ErrBadDatastoreConfig), types.ErrInvalidNetworkConfig, types.ErrInvalidNetworkConfig},
		{"etcd down", fmt.Errorf("%w: dial: connection refused", ErrUnavailable), types.ErrTryAgainLater, types.ErrPluginNotAvailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness()
			h.p.Connect = func(context.Context, EtcdConfig, *slog.Logger) (Backend, error) { return nil, tc.err }
			code := func(err error) uint {
				var e *types.Error
				if !errors.As(err, &e) {
					t.Fatalf("%v is not a CNI error", err)
				}
				return e.Code
			}
			if got := code(h.p.Add(cmdArgs("c1", conf("")))); got != tc.want {
				t.Errorf("ADD: code %d, want %d", got, tc.want)
			}
			if got := code(h.p.GC(&skel.CmdArgs{StdinData: conf(`,"cni.dev/valid-attachments":[]`)})); got != tc.want {
				t.Errorf("GC: code %d, want %d", got, tc.want)
			}
			if got := code(h.p.Status(&skel.CmdArgs{StdinData: conf("")})); got != tc.wantSts {
				t.Errorf("STATUS: code %d, want %d", got, tc.wantSts)
			}
		})
	}
}

// TestAddPassesPrevResultOn: chained after another plugin, ADD returns that plugin's result with
// its own added (the spec's MUST), its addresses pointing at its own interfaces; a prevResult it
// cannot read is refused before anything is done.
func TestAddPassesPrevResultOn(t *testing.T) {
	h := newHarness()
	prev := `,"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"dummy0"}],"ips":[{"interface":0,"address":"192.0.2.7/24"}],"routes":[{"dst":"192.0.2.0/24"}],"dns":{"nameservers":["192.0.2.53"]}}`
	if err := h.p.Add(cmdArgs("c1", conf(prev))); err != nil {
		t.Fatal(err)
	}
	res, err := current.NewResultFromResult(mustResultBytes(t, h.out.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Interfaces) != 3 || res.Interfaces[0].Name != "dummy0" || res.Interfaces[2].Name != "eth0" {
		t.Fatalf("interfaces %+v: want dummy0, then the host side and eth0", res.Interfaces)
	}
	if len(res.IPs) != 2 || *res.IPs[0].Interface != 0 || res.IPs[0].Address.String() != "192.0.2.7/24" || *res.IPs[1].Interface != 2 {
		t.Fatalf("ips %+v: want the earlier plugin's on interface 0, the pod's on 2", res.IPs)
	}
	if len(res.Routes) < 2 || res.Routes[0].Dst.String() != "192.0.2.0/24" || len(res.DNS.Nameservers) != 1 {
		t.Fatalf("routes %v, dns %+v: want the earlier plugin's kept, first", res.Routes, res.DNS)
	}

	h2 := newHarness()
	err = h2.p.Add(cmdArgs("c2", conf(`,"prevResult":{"cniVersion":"1.1.0","ips":[{"address":"nope"}]}`)))
	var cerr *types.Error
	if !errors.As(err, &cerr) || cerr.Code != types.ErrDecodingFailure {
		t.Fatalf("ADD with an unreadable prevResult: %v, want code %d", err, types.ErrDecodingFailure)
	}
	if len(h2.be.weps) != 0 || len(h2.be.allocs) != 0 || len(h2.dp.links) != 0 {
		t.Fatalf("after the refused ADD: endpoints %v, allocations %v, links %v; want nothing", h2.be.weps, h2.be.allocs, h2.dp.links)
	}
}

func mustResultBytes(t *testing.T, b []byte) types.Result {
	t.Helper()
	r, err := current.NewResult(b)
	if err != nil {
		t.Fatalf("parse result %s: %v", b, err)
	}
	return r
}

// TestCheckAllowsALaterPluginsAddress: a plugin later in the chain may add an address to the
// pod's interface (the spec says CHECK must allow changes by later plugins); an address of this
// plugin's that the previous result no longer gives the interface still fails CHECK.
func TestCheckAllowsALaterPluginsAddress(t *testing.T) {
	h := newHarness()
	if err := h.p.Add(cmdArgs("c1", conf(""))); err != nil {
		t.Fatal(err)
	}
	res, err := current.NewResultFromResult(mustResultBytes(t, h.out.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	checkWith := func(r *current.Result) error {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return h.p.Check(cmdArgs("c1", conf(`,"prevResult":`+string(b))))
	}
	withExtra := *res
	pod := 1
	_, extra, _ := net.ParseCIDR("192.0.2.9/24")
	withExtra.IPs = append(slices.Clone(res.IPs), &current.IPConfig{Interface: &pod, Address: *extra})
	if err := checkWith(&withExtra); err != nil {
		t.Fatalf("CHECK with a later plugin's address on eth0: %v", err)
	}
	without := *res
	without.IPs = []*current.IPConfig{{Interface: &pod, Address: *extra}}
	if err := checkWith(&without); err == nil || code(t, err) != CodeCheckFailed || !strings.Contains(err.Error(), "previous result does not give") {
		t.Fatalf("CHECK whose previous result lacks the pod's own address = %v, want code %d", err, CodeCheckFailed)
	}
}

// flakyStatus is a Backend whose status reads fail transiently a number of times first.
type flakyStatus struct {
	Backend
	fails int
	err   error
	value []byte
}

func (f *flakyStatus) GetRaw(context.Context, string) ([]byte, bool, error) {
	if f.fails > 0 {
		f.fails--
		return nil, false, f.err
	}
	return f.value, f.value != nil, nil
}

// TestWaitProgrammedRidesOutTransientErrors: an unavailable datastore while waiting for the
// policy status is waited out within the timeout; other errors end the wait at once; a wait
// that runs out while reads fail says why.
func TestWaitProgrammedRidesOutTransientErrors(t *testing.T) {
	ctx := context.Background()
	programmed := []byte(`{"programmed":true,"revision":5}`)
	f := &flakyStatus{fails: 2, err: fmt.Errorf("%w: leader election", ErrUnavailable), value: programmed}
	if err := waitProgrammed(ctx, f, "k", 5, 2*time.Second); err != nil {
		t.Errorf("after two unavailable reads: %v, want the status", err)
	}
	f = &flakyStatus{fails: 1, err: errors.New("decode: garbage"), value: programmed}
	if err := waitProgrammed(ctx, f, "k", 5, 2*time.Second); err == nil || !strings.Contains(err.Error(), "garbage") {
		t.Errorf("after a non-transient error: %v, want it returned", err)
	}
	f = &flakyStatus{fails: 1 << 30, err: fmt.Errorf("%w: no leader", ErrUnavailable)}
	err := waitProgrammed(ctx, f, "k", 5, 100*time.Millisecond)
	var ce *types.Error
	if !errors.As(err, &ce) || ce.Code != CodePolicyTimeout || !strings.Contains(ce.Msg, "no leader") {
		t.Errorf("timeout while unavailable: %v, want code %d naming the read error", err, CodePolicyTimeout)
	}
}

func TestDefaultNodeName(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no host name")
	}
	file := filepath.Join(t.TempDir(), "nodename")
	if got, _ := defaultNodeName(file); got != host {
		t.Errorf("no file: %q, want the host name %q", got, host)
	}
	if err := os.WriteFile(file, []byte("node-7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _ := defaultNodeName(file); got != "node-7" {
		t.Errorf("with the file: %q, want node-7", got)
	}
}
