package cni

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// askingDataplane tells when Setup asks for the addresses, that is once the veth exists and the
// host side is ready.
type askingDataplane struct {
	*fakeDataplane
	asked chan struct{}
}

func (d *askingDataplane) Setup(w Wiring, addresses func() (v4, v6 []netip.Addr, err error), fail func(string) error) error {
	return d.fakeDataplane.Setup(w, func() ([]netip.Addr, []netip.Addr, error) {
		close(d.asked)
		return addresses()
	}, fail)
}

// TestAddHalvesOverlap: IPAM runs while the veth is made. The assignment here cannot finish
// until the wiring has asked for its addresses, which an ADD doing one after the other never does.
func TestAddHalvesOverlap(t *testing.T) {
	h := newHarness()
	dp := &askingDataplane{fakeDataplane: h.dp, asked: make(chan struct{})}
	h.p.Dataplane = dp
	h.be.onAssign = func() {
		select {
		case <-dp.asked:
		case <-time.After(5 * time.Second):
			h.be.mu.Lock()
			h.be.assignE = errors.New("the wiring never started while IPAM ran")
			h.be.mu.Unlock()
		}
	}
	if err := h.p.Add(cmdArgs("c1", conf(""))); err != nil {
		t.Fatal(err)
	}
	hostIf := HostInterfaceName("net1", "c1", "eth0")
	if h.dp.links[hostIf].IPv6Host {
		t.Errorf("host side readied for IPv6 for an IPv4-only pod")
	}
	if got := h.dp.links[hostIf].IPv4; len(got) != 1 {
		t.Fatalf("veth %s wired with %v, want the one assigned address", hostIf, got)
	}
	if len(h.be.weps) != 1 {
		t.Fatalf("endpoints %v, want one", h.be.weps)
	}
}

// TestAddEitherHalfFailing: whichever half fails, and when both do, nothing is left and the error
// is the one the steps run one after the other would give (assignment, wiring, endpoint).
func TestAddEitherHalfFailing(t *testing.T) {
	tests := []struct {
		name  string
		setup func(h *harness)
		want  string
		code  uint
	}{
		{"endpoint write fails after wiring", func(h *harness) { h.be.createE = errors.New("disk full") }, "write workload endpoint", 0},
		{"wiring fails before asking for addresses", func(h *harness) { h.p.FailAt = "veth" }, `injected failure at step "veth"`, 0},
		{"wiring fails after the addresses", func(h *harness) { h.p.FailAt = "pod" }, `injected failure at step "pod"`, 0},
		{"assignment fails while wiring", func(h *harness) { h.be.free4 = 0 }, "assign addresses", CodePoolsExhausted},
		{"both fail: the assignment's error", func(h *harness) { h.be.free4 = 0; h.p.FailAt = "veth" }, "assign addresses", CodePoolsExhausted},
		{"wiring and endpoint fail: the wiring's", func(h *harness) { h.be.createE = errors.New("disk full"); h.p.FailAt = "route" }, `injected failure at step "route"`, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness()
			tc.setup(h)
			err := h.p.Add(cmdArgs("c1", conf(`,"ipam":{"assign_ipv6":true}`)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
			if tc.code != 0 {
				if got := code(t, err); got != tc.code {
					t.Fatalf("code %d, want %d (%v)", got, tc.code, err)
				}
			}
			if h.out.Len() != 0 {
				t.Fatalf("printed a result on failure: %s", h.out.String())
			}
			h.assertEmpty(t)
		})
	}
}

// TestAddDatastoreHalfPanics: a panic in the datastore half reaches ADD's caller (the agent turns
// it into a CNI error) after the wiring has been told there are no addresses and removed its veth.
func TestAddDatastoreHalfPanics(t *testing.T) {
	h := newHarness()
	h.be.onAssign = func() { panic("ipam bug") }
	var got any
	func() {
		defer func() { got = recover() }()
		h.p.Add(cmdArgs("c1", conf("")))
	}()
	if msg := fmt.Sprint(got); !strings.Contains(msg, "ipam bug") || !strings.Contains(msg, "datastore half") {
		t.Fatalf("recovered %v, want the panic naming the datastore half", got)
	}
	h.assertEmpty(t)
}

// hookedDataplane runs before before Setup and after after it.
type hookedDataplane struct {
	*fakeDataplane
	before, after func()
	setup         func(w Wiring, addresses func() (v4, v6 []netip.Addr, err error), fail func(string) error) error
}

func (d *hookedDataplane) Setup(w Wiring, addresses func() (v4, v6 []netip.Addr, err error), fail func(string) error) error {
	if d.before != nil {
		d.before()
	}
	if d.after != nil {
		defer d.after()
	}
	if d.setup != nil {
		return d.setup(w, addresses, fail)
	}
	return d.fakeDataplane.Setup(w, addresses, fail)
}

// TestAddWiringFailsEitherSideOfTheEndpointWrite: the wiring failing before the endpoint is
// written keeps it from being written; failing after, the endpoint is deleted again.
func TestAddWiringFailsEitherSideOfTheEndpointWrite(t *testing.T) {
	t.Run("before", func(t *testing.T) {
		h := newHarness()
		h.p.FailAt = "veth"
		wired := make(chan struct{})
		h.p.Dataplane = &hookedDataplane{fakeDataplane: h.dp, after: func() { close(wired) }}
		h.be.onAssign = func() { <-wired } // IPAM answers only once the wiring has failed
		if err := h.p.Add(cmdArgs("c1", conf(""))); err == nil || !strings.Contains(err.Error(), `injected failure at step "veth"`) {
			t.Fatalf("err = %v, want the wiring's failure", err)
		}
		if h.be.creates != 0 {
			t.Fatalf("%d endpoint writes, want none once the wiring had failed", h.be.creates)
		}
		h.assertEmpty(t)
	})
	t.Run("after", func(t *testing.T) {
		h := newHarness()
		h.p.FailAt = "veth"
		h.p.Dataplane = &hookedDataplane{fakeDataplane: h.dp, before: func() {
			// The wiring starts only once the endpoint is in the datastore.
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				h.be.mu.Lock()
				n := len(h.be.weps)
				h.be.mu.Unlock()
				if n == 1 {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}}
		if err := h.p.Add(cmdArgs("c1", conf(""))); err == nil || !strings.Contains(err.Error(), `injected failure at step "veth"`) {
			t.Fatalf("err = %v, want the wiring's failure", err)
		}
		if h.be.creates != 1 {
			t.Fatalf("%d endpoint writes, want the one made before the wiring failed", h.be.creates)
		}
		h.assertEmpty(t)
	})
}

// TestAddFailureKeepsEarlierSandboxEndpoint: a new sandbox of a pod replaces the endpoint of the
// earlier one only once its own wiring is done; a failed ADD leaves the earlier one as it was.
func TestAddFailureKeepsEarlierSandboxEndpoint(t *testing.T) {
	const otherNS = "/var/run/netns/trctest-pod2"
	h := newHarness()
	h.dp.netns[otherNS] = true
	if err := h.p.Add(cmdArgs("c0", conf(""))); err != nil {
		t.Fatal(err)
	}
	name := "prod/" + WorkloadEndpointName("node-a", "k8s", "web-0", "eth0")
	second := cmdArgs("c1", conf(""))
	second.Netns = otherNS
	h.p.FailAt = "pod"
	if err := h.p.Add(second); err == nil {
		t.Fatal("ADD with a failing wiring succeeded")
	}
	if w := h.be.weps[name]; w == nil || w.Spec.ContainerID != "c0" {
		t.Fatalf("endpoint after the failed ADD: %+v, want c0's untouched", w)
	}
	h.p.FailAt = ""
	h.out.Reset()
	if err := h.p.Add(second); err != nil {
		t.Fatal(err)
	}
	if w := h.be.weps[name]; w == nil || w.Spec.ContainerID != "c1" || w.Spec.MAC != h.dp.links[HostInterfaceName("net1", "c1", "eth0")].PodMAC {
		t.Fatalf("endpoint after the second ADD: %+v, want c1's with its MAC", w)
	}
}

// TestAddReportsAVethLeft: the assignment fails, the wiring fails too and cannot remove its veth;
// the error says so rather than only the assignment's.
func TestAddReportsAVethLeft(t *testing.T) {
	h := newHarness()
	h.be.free4 = 0
	h.p.FailAt = "host"
	h.dp.removeErr = errors.New("device busy")
	err := h.p.Add(cmdArgs("c1", conf("")))
	if err == nil || code(t, err) != CodePoolsExhausted || !strings.Contains(err.Error(), "cleaning up failed") || !strings.Contains(err.Error(), "device busy") {
		t.Fatalf("err = %v, want the pool exhausted and the veth left", err)
	}
}

// TestAddPanicWaitsForTheEndpointWrite: a panic in the wiring does not leave ADD before the
// endpoint write under way has finished, so the runtime's DEL that follows finds everything.
func TestAddPanicWaitsForTheEndpointWrite(t *testing.T) {
	h := newHarness()
	entered, release := make(chan struct{}), make(chan struct{})
	var written atomic.Bool
	h.be.onCreate = func() {
		close(entered)
		<-release
		written.Store(true)
	}
	h.p.Dataplane = &hookedDataplane{fakeDataplane: h.dp, setup: func(w Wiring, addresses func() (v4, v6 []netip.Addr, err error), fail func(string) error) error {
		return h.dp.Setup(w, func() ([]netip.Addr, []netip.Addr, error) {
			if _, _, err := addresses(); err != nil {
				return nil, nil, err
			}
			<-entered
			panic("wiring bug")
		}, fail)
	}}
	type outcome struct {
		panicked any
		written  bool
	}
	out := make(chan outcome, 1)
	go func() {
		defer func() { out <- outcome{recover(), written.Load()} }()
		h.p.Add(cmdArgs("c1", conf("")))
	}()
	select {
	case o := <-out:
		t.Fatalf("ADD returned (panic %v) while the endpoint write was under way", o.panicked)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	o := <-out
	if !strings.Contains(fmt.Sprint(o.panicked), "wiring bug") || !o.written {
		t.Fatalf("ADD ended with %v, endpoint written %v; want the panic after the write", o.panicked, o.written)
	}
	h.out.Reset()
	if err := h.p.Del(cmdArgs("c1", conf(""))); err != nil {
		t.Fatal(err)
	}
	h.assertEmpty(t)
}

func TestWantsIPv6(t *testing.T) {
	v4, v6 := netip.MustParseAddr("198.18.0.9"), netip.MustParseAddr("2001:db8:1000::9")
	tests := []struct {
		req  AssignRequest
		want bool
	}{
		{AssignRequest{Num4: 1}, false},
		{AssignRequest{Num4: 1, Num6: 1}, true},
		{AssignRequest{Num6: 1}, true},
		{AssignRequest{IPs: []netip.Addr{v4}}, false},
		{AssignRequest{IPs: []netip.Addr{v6}}, true},
		{AssignRequest{IPs: []netip.Addr{v4, v6}}, true},
	}
	for _, tc := range tests {
		if got := tc.req.wantsIPv6(); got != tc.want {
			t.Errorf("%+v: wantsIPv6 = %v, want %v", tc.req, got, tc.want)
		}
	}
}
