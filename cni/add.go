package cni

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/terracenet/terrace/datastore/api"
)

// errNoAddresses is what the kernel side is told when the assignment failed: it undoes what it
// created and returns, and ADD reports the assignment's own error.
var errNoAddresses = errors.New("no addresses to wire: the assignment failed")

// add runs the steps of ADD; if one fails, everything done so far is undone before returning.
//
// Its two halves wait on different things: the datastore half (assign the addresses, then write
// the WorkloadEndpoint) on etcd's commits, the kernel half (create the veth, ready the host side,
// then give the pod its addresses and routes) on netlink. They run side by side and meet where
// the addresses are known, so a pod waits for the longer of the two rather than for both; the
// pod's MAC is chosen here so the endpoint need not wait for the veth to learn it.
func (p *Plugin) add(ctx context.Context, inv *invocation, be Backend) (_ *current.Result, err error) {
	log, cfg, args := inv.log, inv.cfg, inv.args
	var undo undoStack
	defer func() {
		if err != nil {
			if uerr := undo.run(log); uerr != nil {
				err = fmt.Errorf("%w (and cleaning up failed: %v)", err, uerr)
			}
		}
	}()
	req := AssignRequest{
		Node: cfg.Node, Handle: inv.handle,
		Attrs:     map[string]string{"namespace": inv.namespace, "pod": inv.podName, "containerID": args.ContainerID, "wep": inv.wepName, "ifname": args.IfName},
		IPv4Pools: cfg.IPv4Pools, IPv6Pools: cfg.IPv6Pools,
	}
	inv.assignCounts(&req)
	podMAC, err := randomMAC()
	if err != nil {
		return nil, fmt.Errorf("choose a MAC address for %s: %w", args.IfName, err)
	}

	ds := p.startDatastoreHalf(ctx, inv, be, req, podMAC)
	// Whatever happens here, a panic included, the datastore half has finished before ADD
	// returns: otherwise it could write an endpoint after the runtime's DEL for this pod.
	defer func() {
		ds.stopAndWait()
		if ds.panicked != nil && !ds.reported {
			log.Error("ADD's datastore half panicked too", "panic", fmt.Sprint(ds.panicked), "stack", string(ds.stack))
		}
	}()
	var waited time.Duration
	addresses := func() (v4, v6 []netip.Addr, err error) {
		t := time.Now()
		defer func() { waited += time.Since(t) }()
		a, ok := ds.assignment()
		if !ok || a.err != nil {
			return nil, nil, errNoAddresses
		}
		return a.v4, a.v6, nil
	}
	t := time.Now()
	w := Wiring{NetNS: p.netnsPath(args), PodIf: args.IfName, HostIf: inv.hostIf, MTU: cfg.MTU, PodMAC: podMAC, IPv6Host: req.wantsIPv6()}
	werr := p.Dataplane.Setup(w, addresses, p.fail)
	wireTook := time.Since(t) - waited
	if werr != nil {
		ds.stop() // an endpoint for a pod that will not be there is not worth writing
	}
	ds.wait()
	if ds.panicked != nil {
		ds.reported = true
		panic(fmt.Sprintf("%v (in ADD's datastore half)\n%s", ds.panicked, ds.stack))
	}
	a, _ := ds.assignment()
	if a.err == nil {
		inv.phaseTook("ipam", ds.ipamTook)
		log.Debug("addresses assigned", "ips", ds.assigned)
	}
	inv.phaseTook("wire", wireTook)

	// Whichever half failed, the other's work is undone too.
	if len(ds.assigned) > 0 {
		assigned := ds.assigned
		undo.push("address assignment", func(ctx context.Context) error { return be.ReleaseIPs(ctx, assigned...) })
	}
	if werr == nil {
		undo.push("veth "+inv.hostIf, func(context.Context) error { return p.Dataplane.Remove(inv.hostIf) })
	}
	stored := ds.stored
	if stored != nil {
		undo.push("workload endpoint", undoEndpoint(be, inv, stored))
	}

	// The errors in the order the steps used to run one after the other: the assignment's,
	// the wiring's, the endpoint's.
	switch {
	case a.err != nil:
		var left *VethLeftError
		if errors.As(werr, &left) {
			log.Error("wiring failed and its veth could not be removed", "err", werr)
			return nil, fmt.Errorf("%w (and cleaning up failed: %v)", a.err, left)
		}
		if werr != nil && !errors.Is(werr, errNoAddresses) {
			log.Debug("wiring failed too", "err", werr)
		}
		return nil, a.err
	case werr != nil:
		return nil, fmt.Errorf("wire %s: %w", inv.hostIf, werr)
	case ds.wepErr != nil:
		return nil, ds.wepErr
	}
	if ds.exists {
		// An endpoint of an earlier sandbox of the same pod: this attachment replaces it, but
		// only now that the wiring is done, so a failed ADD never takes a working pod's endpoint.
		t := time.Now()
		var err error
		if stored, err = replaceEndpoint(ctx, inv, be, ds.wep); err != nil {
			return nil, err
		}
		undo.push("workload endpoint", undoEndpoint(be, inv, stored))
		ds.wepTook += time.Since(t)
	}
	inv.phaseTook("endpoint", ds.wepTook)
	log.Debug("workload endpoint written", "name", inv.wepName, "rv", stored.Metadata.ResourceVersion)
	if err := p.fail("endpoint"); err != nil {
		return nil, err
	}

	if cfg.PolicySetupTimeout > 0 {
		t3 := time.Now()
		rev, _ := strconv.ParseInt(stored.Metadata.ResourceVersion, 10, 64)
		if err := waitProgrammed(ctx, be, EndpointStatusKey(cfg.Node, inv.namespace, inv.wepName), rev, cfg.PolicySetupTimeout); err != nil {
			return nil, err
		}
		inv.phase("policy", t3)
	}
	if err := p.fail("policy"); err != nil {
		return nil, err
	}
	return BuildResult(Attachment{HostIf: inv.hostIf, PodIf: args.IfName, PodMAC: podMAC, Sandbox: args.Netns, IPv4: a.v4, IPv6: a.v6}), nil
}

// assignment is IPAM's answer to ADD.
type assignment struct {
	v4, v6 []netip.Addr
	err    error
}

// datastoreHalf is ADD's datastore work running beside the wiring. The assignment is sent; the
// fields below it are written by its goroutine and read only after done is closed. got, halted
// and reported belong to the goroutine that started it (Setup calls addresses on that one).
type datastoreHalf struct {
	out      chan assignment // sent once
	halt     chan struct{}   // closed: do not write the endpoint
	done     chan struct{}   // closed when the goroutine has returned
	halted   bool
	got      *assignment // what out gave, once received
	reported bool        // its panic went on to ADD's caller

	ipamTook time.Duration
	assigned []netip.Addr // every address IPAM gave, also when ADD then fails on purpose at "ipam"
	stored   *api.WorkloadEndpoint
	wep      *api.WorkloadEndpoint // the endpoint it created, or found existing
	exists   bool                  // the endpoint exists already (an earlier sandbox's): ADD replaces it with wep after the wiring
	wepErr   error
	wepTook  time.Duration
	panicked any
	stack    []byte
}

// startDatastoreHalf assigns the addresses and, unless stopped meanwhile, creates the endpoint.
func (p *Plugin) startDatastoreHalf(ctx context.Context, inv *invocation, be Backend, req AssignRequest, podMAC string) *datastoreHalf {
	h := &datastoreHalf{out: make(chan assignment, 1), halt: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		defer func() {
			if r := recover(); r != nil {
				h.panicked, h.stack = r, debug.Stack()
			}
		}()
		t := time.Now()
		v4, v6, err := be.AutoAssign(ctx, req)
		h.ipamTook = time.Since(t)
		if err != nil {
			err = fmt.Errorf("assign %s (handle %s): %w", inv.assignWhat(), inv.handle, err)
		} else {
			h.assigned = slices.Concat(v4, v6)
			err = p.fail("ipam")
		}
		h.out <- assignment{v4: v4, v6: v6, err: err}
		if err != nil {
			return
		}
		select {
		case <-h.halt:
			return
		default:
		}
		t = time.Now()
		// Create only: the endpoint is almost always new, and reading it first would cost a
		// round trip. Replacing an earlier sandbox's waits for the wiring (see add).
		h.wep = p.endpoint(inv, v4, v6, podMAC)
		h.stored, h.wepErr = be.CreateEndpoint(ctx, h.wep)
		h.wepTook = time.Since(t)
		if errors.Is(h.wepErr, ErrExists) {
			h.exists, h.wepErr = true, nil
		} else if h.wepErr != nil {
			h.wepErr = fmt.Errorf("write workload endpoint %s/%s: %w", inv.namespace, inv.wepName, h.wepErr)
		}
	}()
	return h
}

// assignment waits for IPAM's answer; false when the goroutine ended without one (it panicked).
func (h *datastoreHalf) assignment() (assignment, bool) {
	if h.got != nil {
		return *h.got, true
	}
	select {
	case a := <-h.out:
		h.got = &a
	case <-h.done:
		select {
		case a := <-h.out:
			h.got = &a
		default:
			return assignment{}, false
		}
	}
	return *h.got, true
}

// stop keeps the half from writing the endpoint if it has not started to; a write under way
// finishes (and is undone by ADD).
func (h *datastoreHalf) stop() {
	if !h.halted {
		h.halted = true
		close(h.halt)
	}
}

// wait returns once the half's goroutine has returned.
func (h *datastoreHalf) wait() { <-h.done }

func (h *datastoreHalf) stopAndWait() {
	h.stop()
	h.wait()
}

// replaceEndpoint overwrites the endpoint an earlier sandbox of the same pod left.
func replaceEndpoint(ctx context.Context, inv *invocation, be Backend, wep *api.WorkloadEndpoint) (*api.WorkloadEndpoint, error) {
	old, err := be.GetEndpoint(ctx, inv.namespace, inv.wepName)
	if err == nil {
		inv.log.Info("replacing workload endpoint of an earlier container", "old", old.Spec.ContainerID)
		wep.Metadata.ResourceVersion = old.Metadata.ResourceVersion
		wep.Metadata.UID, wep.Metadata.CreationTimestamp = old.Metadata.UID, old.Metadata.CreationTimestamp
		var stored *api.WorkloadEndpoint
		if stored, err = be.UpdateEndpoint(ctx, wep); err == nil {
			return stored, nil
		}
	}
	return nil, fmt.Errorf("write workload endpoint %s/%s: %w", inv.namespace, inv.wepName, err)
}

// undoEndpoint deletes the endpoint ADD wrote, if it is still that one.
func undoEndpoint(be Backend, inv *invocation, stored *api.WorkloadEndpoint) func(context.Context) error {
	return func(ctx context.Context) error {
		err := be.DeleteEndpoint(ctx, inv.namespace, inv.wepName, stored.Metadata.ResourceVersion)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
}

// wantsIPv6 tells whether the pod gets an IPv6 address, which the host side must be ready for.
func (r AssignRequest) wantsIPv6() bool {
	return r.Num6 > 0 || slices.ContainsFunc(r.IPs, netip.Addr.Is6)
}

// randomMAC is a random unicast, locally administered MAC address, as the kernel would give the
// pod's end of the veth.
func randomMAC() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	b[0] = b[0]&^0x01 | 0x02
	return net.HardwareAddr(b).String(), nil
}
