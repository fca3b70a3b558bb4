package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/datastore/selector"
)

// pool is an IPPool with its CIDR parsed and block size settled.
type pool struct {
	name      string
	spec      api.IPPoolSpec
	cidr      netip.Prefix
	blockBits int
}

func newPool(p *api.IPPool) (*pool, error) {
	cidr, err := netip.ParsePrefix(p.Spec.CIDR)
	if err != nil {
		return nil, fmt.Errorf("parse pool %s cidr: %w", p.Metadata.Name, err)
	}
	cidr = cidr.Masked()
	bits := p.Spec.BlockSize
	if bits == 0 {
		bits = api.DefaultBlockSize4
		if cidr.Addr().Is6() {
			bits = api.DefaultBlockSize6
		}
	}
	// A pool smaller than its block size is one block.
	bits = max(bits, cidr.Bits())
	if cidr.Addr().BitLen()-bits > 12 {
		return nil, fmt.Errorf("check pool %s: block size /%d too large", p.Metadata.Name, bits)
	}
	return &pool{name: p.Metadata.Name, spec: p.Spec, cidr: cidr, blockBits: bits}, nil
}

func (p *pool) family() int {
	if p.cidr.Addr().Is4() {
		return 4
	}
	return 6
}

// blockFor is the block of this pool holding ip.
func (p *pool) blockFor(ip netip.Addr) netip.Prefix {
	b, _ := ip.Prefix(p.blockBits)
	return b
}

// usable says whether automatic assignment may use the pool at all (node selection aside).
func (p *pool) usable() bool {
	if p.spec.AssignmentMode == api.AssignmentManual {
		return false
	}
	return len(p.spec.AllowedUses) == 0 || slices.Contains(p.spec.AllowedUses, api.AllowedUseWorkload)
}

// allocEnv is what one operation reads once: IPAM configuration, pools, and the node's labels.
type allocEnv struct {
	a      *Allocator
	node   string
	cfg    api.IPAMConfigurationSpec
	pools  []*pool
	labels map[string]string
	gotLbl bool
}

// envLoad is one read of IPAM configuration and pools, shared by the calls that began before it
// started: concurrent allocations then read once instead of each on its own, and none of them
// sees anything older than if it had read for itself.
type envLoad struct {
	started time.Time
	done    chan struct{}
	cfg     api.IPAMConfigurationSpec
	pools   []*pool
	err     error
}

func (a *Allocator) loadEnv(ctx context.Context, node string) (*allocEnv, error) {
	if a.ds == nil {
		return nil, fmt.Errorf("load pools: no datastore client")
	}
	callStart := time.Now()
	a.mu.Lock()
	l := a.lastEnv
	own := l == nil || l.started.Before(callStart)
	if own {
		l = &envLoad{started: callStart, done: make(chan struct{})}
		a.lastEnv = l
		a.mu.Unlock()
		l.cfg, l.pools, l.err = a.readEnv(ctx)
		close(l.done)
	} else {
		a.mu.Unlock()
		select {
		case <-l.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("load pools: %w", ctx.Err())
		}
	}
	if l.err != nil && !own {
		// Someone else's read failed (perhaps its caller gave up): read for ourselves.
		cfg, pools, err := a.readEnv(ctx)
		if err != nil {
			return nil, err
		}
		return &allocEnv{a: a, node: node, cfg: cfg, pools: pools}, nil
	}
	if l.err != nil {
		return nil, l.err
	}
	return &allocEnv{a: a, node: node, cfg: l.cfg, pools: l.pools}, nil
}

func (a *Allocator) readEnv(ctx context.Context) (api.IPAMConfigurationSpec, []*pool, error) {
	var spec api.IPAMConfigurationSpec
	cfg, err := a.ds.Get(ctx, "IPAMConfiguration", "", api.IPAMConfigurationName)
	switch {
	case errors.Is(err, kv.ErrNotFound):
	case err != nil:
		return spec, nil, fmt.Errorf("read IPAM configuration: %w", err)
	default:
		if c, ok := cfg.(*api.IPAMConfiguration); ok {
			spec = c.Spec
		}
	}
	pools, err := a.loadPools(ctx)
	return spec, pools, err
}

func (a *Allocator) loadPools(ctx context.Context) ([]*pool, error) {
	rs, err := a.ds.List(ctx, "IPPool", "")
	if err != nil {
		return nil, fmt.Errorf("list IP pools: %w", err)
	}
	return a.usablePools(rs), nil
}

// readablePools is loadPools for reports (show, check): a stored IPPool that cannot be decoded
// is left out and returned as unreadable, rather than hiding every other pool. Allocation keeps
// the strict loadPools: the unreadable pool's range may overlap what it would hand out.
func (a *Allocator) readablePools(ctx context.Context) (pools []*pool, unreadable, err error) {
	rs, err := a.ds.List(ctx, "IPPool", "")
	if err != nil && !errors.Is(err, datastore.ErrUndecodable) {
		return nil, nil, fmt.Errorf("list IP pools: %w", err)
	}
	return a.usablePools(rs), err, nil
}

func (a *Allocator) usablePools(rs []api.Resource) []*pool {
	var pools []*pool
	for _, r := range rs {
		ip, ok := r.(*api.IPPool)
		if !ok {
			continue
		}
		p, err := newPool(ip)
		if err != nil {
			a.log.Warn("ignoring unusable IP pool", "pool", ip.Metadata.Name, "err", err)
			continue
		}
		pools = append(pools, p)
	}
	slices.SortFunc(pools, func(x, y *pool) int {
		if c := x.cidr.Addr().Compare(y.cidr.Addr()); c != 0 {
			return c
		}
		return strings.Compare(x.name, y.name)
	})
	return pools
}

func (e *allocEnv) nodeLabels(ctx context.Context) (map[string]string, error) {
	if e.gotLbl {
		return e.labels, nil
	}
	r, err := e.a.ds.Get(ctx, "Node", "", e.node)
	switch {
	case errors.Is(err, kv.ErrNotFound):
		// A node not registered yet has no labels; selectors like all() still pick it.
	case err != nil:
		return nil, fmt.Errorf("read node %s: %w", e.node, err)
	default:
		if n, ok := r.(*api.Node); ok {
			e.labels = n.Metadata.Labels
		}
	}
	e.gotLbl = true
	return e.labels, nil
}

func (e *allocEnv) selects(ctx context.Context, p *pool) (bool, error) {
	s := strings.TrimSpace(p.spec.NodeSelector)
	if s == "" || s == "all()" {
		return true, nil
	}
	sel, err := selector.Parse(s)
	if err != nil {
		e.a.log.Warn("ignoring IP pool with a bad nodeSelector", "pool", p.name, "err", err)
		return false, nil
	}
	labels, err := e.nodeLabels(ctx)
	if err != nil {
		return false, err
	}
	return sel.Evaluate(labels), nil
}

// selectPools returns the pools of family fam to assign from. Named pools (by name or CIDR) must
// exist, be of the family and be enabled; otherwise every usable enabled pool selecting the node.
func (e *allocEnv) selectPools(ctx context.Context, fam int, names []string) ([]*pool, error) {
	var out []*pool
	if len(names) > 0 {
		for _, n := range names {
			i := slices.IndexFunc(e.pools, func(p *pool) bool { return p.name == n || p.spec.CIDR == n || p.cidr.String() == n })
			if i < 0 {
				return nil, fmt.Errorf("pool %q does not exist: %w", n, ErrNoPools)
			}
			p := e.pools[i]
			if p.family() != fam {
				return nil, fmt.Errorf("pool %q is not an IPv%d pool: %w", n, fam, ErrNoPools)
			}
			if p.spec.Disabled {
				return nil, fmt.Errorf("pool %q: %w", n, ErrPoolDisabled)
			}
			out = append(out, p)
		}
		return out, nil
	}
	disabled := 0
	for _, p := range e.pools {
		if p.family() != fam || !p.usable() {
			continue
		}
		if p.spec.Disabled {
			disabled++
			continue
		}
		ok, err := e.selects(ctx, p)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		if disabled > 0 {
			return nil, fmt.Errorf("every IPv%d pool for node %s is disabled: %w (%w)", fam, e.node, ErrNoPools, ErrPoolDisabled)
		}
		return nil, fmt.Errorf("no IPv%d pool selects node %s: %w", fam, e.node, ErrNoPools)
	}
	return out, nil
}

// poolFor returns the pool holding ip (the most specific one), or nil.
func (e *allocEnv) poolFor(ip netip.Addr) *pool {
	var best *pool
	for _, p := range e.pools {
		if p.cidr.Contains(ip) && (best == nil || p.cidr.Bits() > best.cidr.Bits()) {
			best = p
		}
	}
	return best
}
