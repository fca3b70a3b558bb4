package cni

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
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
