package cni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"sync"

	"github.com/terracenet/terrace/datastore/api"
)

// fakeBackend is an in-memory datastore and IPAM with the contract of the real one.
type fakeBackend struct {
	mu       sync.Mutex
	rev      int64
	weps     map[string]*api.WorkloadEndpoint // namespace/name
	allocs   map[netip.Addr]Allocation
	raw      map[string][]byte
	next4    netip.Addr
	next6    netip.Addr
	free4    int // addresses left before the pool is exhausted
	down     bool
	assignE  error
	createE  error  // CreateEndpoint fails with it
	onAssign func() // called as AutoAssign starts, outside the lock
	onCreate func() // called as CreateEndpoint starts, outside the lock
	creates  int    // CreateEndpoint calls
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{
		weps: map[string]*api.WorkloadEndpoint{}, allocs: map[netip.Addr]Allocation{}, raw: map[string][]byte{},
		next4: netip.MustParseAddr("198.18.0.1"), next6: netip.MustParseAddr("2001:db8:1000::1"), free4: 1000,
	}
}

func (f *fakeBackend) connector() Connector {
	return func(context.Context, EtcdConfig, *slog.Logger) (Backend, error) {
		if f.down {
			return nil, fmt.Errorf("dial: %w", ErrUnavailable)
		}
		return f, nil
	}
}

func (f *fakeBackend) Close() error { return nil }

func (f *fakeBackend) GetEndpoint(_ context.Context, ns, name string) (*api.WorkloadEndpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w, ok := f.weps[ns+"/"+name]
	if !ok {
		return nil, fmt.Errorf("get %s/%s: %w", ns, name, ErrNotFound)
	}
	c := *w
	return &c, nil
}

func (f *fakeBackend) CreateEndpoint(_ context.Context, w *api.WorkloadEndpoint) (*api.WorkloadEndpoint, error) {
	if f.onCreate != nil {
		f.onCreate()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates++
	k := w.Metadata.Namespace + "/" + w.Metadata.Name
	if f.createE != nil {
		return nil, fmt.Errorf("create %s: %w", k, f.createE)
	}
	if _, ok := f.weps[k]; ok {
		return nil, fmt.Errorf("create %s: %w", k, ErrExists)
	}
	if err := api.Validate(w); err != nil {
		return nil, err
	}
	f.rev++
	c := *w
	c.Metadata.ResourceVersion = strconv.FormatInt(f.rev, 10)
	f.weps[k] = &c
	out := c
	return &out, nil
}

func (f *fakeBackend) UpdateEndpoint(_ context.Context, w *api.WorkloadEndpoint) (*api.WorkloadEndpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := w.Metadata.Namespace + "/" + w.Metadata.Name
	old, ok := f.weps[k]
	if !ok {
		return nil, fmt.Errorf("update %s: %w", k, ErrNotFound)
	}
	if old.Metadata.ResourceVersion != w.Metadata.ResourceVersion {
		return nil, fmt.Errorf("update %s: conflict", k)
	}
	f.rev++
	c := *w
	c.Metadata.ResourceVersion = strconv.FormatInt(f.rev, 10)
	f.weps[k] = &c
	out := c
	return &out, nil
}

func (f *fakeBackend) DeleteEndpoint(_ context.Context, ns, name, rv string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := ns + "/" + name
	w, ok := f.weps[k]
	if !ok {
		return fmt.Errorf("delete %s: %w", k, ErrNotFound)
	}
	if rv != "" && w.Metadata.ResourceVersion != rv {
		return fmt.Errorf("delete %s: conflict", k)
	}
	delete(f.weps, k)
	return nil
}

func (f *fakeBackend) ListEndpoints(context.Context) ([]*api.WorkloadEndpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*api.WorkloadEndpoint
	for _, k := range slices.Sorted(maps.Keys(f.weps)) {
		c := *f.weps[k]
		out = append(out, &c)
	}
	return out, nil
}

func (f *fakeBackend) AutoAssign(_ context.Context, req AssignRequest) (v4, v6 []netip.Addr, err error) {
	if f.onAssign != nil {
		f.onAssign()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.assignE != nil {
		return nil, nil, f.assignE
	}
	attrs := map[string]string{"node": req.Node}
	maps.Copy(attrs, req.Attrs)
	if len(req.IPs) > 0 {
		for _, ip := range req.IPs {
			if a, held := f.allocs[ip]; held && a.Handle != req.Handle {
				return nil, nil, fmt.Errorf("assign %v: %w", ip, ErrAddressInUse)
			}
		}
		for _, ip := range req.IPs {
			f.allocs[ip] = Allocation{IP: ip, Handle: req.Handle, Attrs: attrs}
			if ip.Is4() {
				v4 = append(v4, ip)
			} else {
				v6 = append(v6, ip)
			}
		}
		return v4, v6, nil
	}
	if req.Num4 > f.free4 {
		return nil, nil, fmt.Errorf("assign: %w", ErrPoolsExhausted)
	}
	for range req.Num4 {
		f.allocs[f.next4] = Allocation{IP: f.next4, Handle: req.Handle, Attrs: attrs}
		v4 = append(v4, f.next4)
		f.next4 = f.next4.Next()
		f.free4--
	}
	for range req.Num6 {
		f.allocs[f.next6] = Allocation{IP: f.next6, Handle: req.Handle, Attrs: attrs}
		v6 = append(v6, f.next6)
		f.next6 = f.next6.Next()
	}
	return v4, v6, nil
}

func (f *fakeBackend) ReleaseIPs(_ context.Context, ips ...netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ip := range ips {
		delete(f.allocs, ip)
	}
	return nil
}

func (f *fakeBackend) ReleaseHandle(_ context.Context, h string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ip, a := range f.allocs {
		if a.Handle == h {
			delete(f.allocs, ip)
		}
	}
	return nil
}

func (f *fakeBackend) HandleAddrs(_ context.Context, h string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netip.Addr
	for ip, a := range f.allocs {
		if a.Handle == h {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

func (f *fakeBackend) NodeAllocations(_ context.Context, node string) ([]Allocation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Allocation
	for _, a := range f.allocs {
		if a.Attrs["node"] == node {
			out = append(out, a)
		}
	}
	return out, nil
}

func (f *fakeBackend) GetRaw(_ context.Context, key string) ([]byte, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.raw[key]
	return v, ok, nil
}

// fakeDataplane keeps the attachments it wired in memory.
type fakeDataplane struct {
	mu      sync.Mutex
	links   map[string]Wiring // host side -> wiring
	podIfs  map[string]bool   // netns + "/" + ifname
	netns   map[string]bool   // namespaces that exist
	removed []string
	// removeErr, when set, makes Remove fail and leave the interface.
	removeErr error
}

func newFakeDataplane(netns ...string) *fakeDataplane {
	d := &fakeDataplane{links: map[string]Wiring{}, podIfs: map[string]bool{}, netns: map[string]bool{}}
	for _, n := range netns {
		d.netns[n] = true
	}
	return d
}

func (d *fakeDataplane) PodInterfaceExists(netns, ifName string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.netns[netns] {
		return false, fmt.Errorf("open %s: %w", netns, ErrNetNSMissing)
	}
	return d.podIfs[netns+"/"+ifName], nil
}

func (d *fakeDataplane) Setup(w Wiring, addresses func() (v4, v6 []netip.Addr, err error), fail func(string) error) (err error) {
	d.mu.Lock()
	d.links[w.HostIf] = w
	d.podIfs[w.NetNS+"/"+w.PodIf] = true
	d.mu.Unlock()
	defer func() {
		if err != nil {
			if rerr := d.Remove(w.HostIf); rerr != nil {
				err = errors.Join(err, &VethLeftError{HostIf: w.HostIf, Err: rerr})
			}
		}
	}()
	for _, step := range []string{"veth", "host", "addresses", "pod", "route"} {
		if step == "addresses" {
			v4, v6, err := addresses()
			if err != nil {
				return err
			}
			if len(v6) > 0 && !w.IPv6Host {
				return fmt.Errorf("IPv6 addresses %v for a host side not readied for IPv6", v6)
			}
			w.IPv4, w.IPv6 = v4, v6
			d.mu.Lock()
			d.links[w.HostIf] = w
			d.mu.Unlock()
			continue
		}
		if err := fail(step); err != nil {
			// As the kernel steps do, name the namespace by the path they were given.
			return fmt.Errorf("%s step in %s: %w", step, w.NetNS, err)
		}
	}
	return nil
}

func (d *fakeDataplane) Remove(hostIf string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.removeErr != nil {
		return d.removeErr
	}
	if w, ok := d.links[hostIf]; ok {
		delete(d.podIfs, w.NetNS+"/"+w.PodIf)
		delete(d.links, hostIf)
		d.removed = append(d.removed, hostIf)
	}
	return nil
}

func (d *fakeDataplane) Verify(w Wiring) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	got, ok := d.links[w.HostIf]
	if !ok {
		return fmt.Errorf("no link %s", w.HostIf)
	}
	if !sameAddrs(slices.Concat(got.IPv4, got.IPv6), slices.Concat(w.IPv4, w.IPv6)) || got.PodIf != w.PodIf || got.NetNS != w.NetNS {
		return fmt.Errorf("link %s differs: %+v vs %+v", w.HostIf, got, w)
	}
	return nil
}

func sameAddrs(a, b []netip.Addr) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, netip.Addr.Compare)
	slices.SortFunc(b, netip.Addr.Compare)
	return slices.Equal(a, b)
}
