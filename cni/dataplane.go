package cni

import (
	"errors"
	"net/netip"
)

// ErrNetNSMissing: the pod's network namespace path does not exist (or is not a namespace).
var ErrNetNSMissing = errors.New("network namespace does not exist")

// Wiring is one attachment as the kernel should see it.
type Wiring struct {
	NetNS  string // path of the pod's network namespace
	PodIf  string // CNI_IFNAME
	HostIf string // HostInterfaceName(...)
	MTU    int
	IPv4   []netip.Addr
	IPv6   []netip.Addr
	// PodMAC is the pod side's MAC address, chosen by the plugin so the WorkloadEndpoint can be
	// written while the veth is made. Verify does not compare it.
	PodMAC string
	// IPv6Host readies the host side for an IPv6 pod before the addresses are known.
	IPv6Host bool
}

// Dataplane is the kernel side of the plugin. The plugin runs in the host's network namespace, so
// "host" means the namespace of the calling thread.
type Dataplane interface {
	// PodInterfaceExists reports whether ifName exists in the namespace at netns; ErrNetNSMissing
	// (wrapped) when the namespace is gone.
	PodInterfaceExists(netns, ifName string) (bool, error)
	// Setup creates the veth (the pod side with w.PodMAC) and readies the host side, then calls
	// addresses for the pod's addresses, which the plugin assigns meanwhile (w.IPv4 and w.IPv6
	// are not read), and gives the pod its addresses and routes. It calls fail(step) after each
	// step so tests can inject a failure there ("veth", "host", "pod", "route"). It calls
	// addresses at most once, on its own goroutine. On any error, addresses' own included, it
	// removes what it created and returns the error, joined with a *VethLeftError if the veth
	// could not be removed.
	Setup(w Wiring, addresses func() (v4, v6 []netip.Addr, err error), fail func(step string) error) error
	// Remove deletes the host side (and with it the pod side and the routes via it); an absent
	// interface is success.
	Remove(hostIf string) error
	// Verify checks that the attachment is wired exactly as Setup wires it.
	Verify(w Wiring) error
}

// VethLeftError says that Setup failed and could not remove the veth it had created.
type VethLeftError struct {
	HostIf string
	Err    error
}

func (e *VethLeftError) Error() string { return "undo veth " + e.HostIf + ": " + e.Err.Error() }

func (e *VethLeftError) Unwrap() error { return e.Err }
