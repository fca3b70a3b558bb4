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
}

// Dataplane is the kernel side of the plugin. The plugin runs in the host's network namespace, so
// "host" means the namespace of the calling thread.
type Dataplane interface {
	// PodInterfaceExists reports whether ifName exists in the namespace at netns; ErrNetNSMissing
	// (wrapped) when the namespace is gone.
	PodInterfaceExists(netns, ifName string) (bool, error)
	// Setup creates and wires the veth, calling fail(step) after each step so tests can inject a
	// failure there ("veth", "host", "pod", "route"). On any error it removes what it created.
	// It returns the pod side's MAC address.
	Setup(w Wiring, fail func(step string) error) (podMAC string, err error)
	// Remove deletes the host side (and with it the pod side and the routes via it); an absent
	// interface is success.
	Remove(hostIf string) error
	// Verify checks that the attachment is wired exactly as Setup wires it.
	Verify(w Wiring) error
}
