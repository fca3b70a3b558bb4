package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
)

// NodeStore is the part of the datastore client registration uses (satisfied by *datastore.Client).
type NodeStore interface {
	Get(ctx context.Context, kind, namespace, name string) (api.Resource, error)
	List(ctx context.Context, kind, namespace string) ([]api.Resource, error)
	Create(ctx context.Context, r api.Resource) (api.Resource, error)
	Update(ctx context.Context, r api.Resource) (api.Resource, error)
}

// Registration is what the node writes about itself.
type Registration struct {
	Name     string
	IPv4     Choice
	IPv6     Choice
	ASNumber *api.ASNumber // nil: keep what the Node has (or inherit BGPConfiguration's)
	Time     time.Time
}

// Autodetection folds the two per-family choices into the single record Node.status carries.
func (r Registration) Autodetection() api.Autodetection {
	a := api.Autodetection{Time: r.Time.UTC().Format(time.RFC3339)}
	a.IPv4, a.IPv6 = addrOf(r.IPv4), addrOf(r.IPv6)
	join := func(v4, v6 string) string {
		switch {
		case v4 == v6:
			return v4
		case v6 == "":
			return v4
		case v4 == "":
			return "ipv6: " + v6
		}
		return "ipv4: " + v4 + "; ipv6: " + v6
	}
	// A family without an address ("none") would only blur which method chose the other one.
	m4, m6, i4, i6 := r.IPv4.Method, r.IPv6.Method, r.IPv4.Interface, r.IPv6.Interface
	if !r.IPv4.Addr.IsValid() {
		m4, i4 = "", ""
	}
	if !r.IPv6.Addr.IsValid() {
		m6, i6 = "", ""
	}
	a.Method = join(m4, m6)
	a.Interface = join(i4, i6)
	var reasons []string
	if r.IPv4.Reason != "" {
		reasons = append(reasons, "IPv4: "+r.IPv4.Reason)
	}
	if r.IPv6.Reason != "" {
		reasons = append(reasons, "IPv6: "+r.IPv6.Reason)
	}
	a.Reason = strings.Join(reasons, "; ")
	return a
}

// apply writes the registration into n, keeping everything the node does not own (labels, route
// reflector cluster ID, orchestrator refs, other address types).
func (r Registration) apply(n *api.Node) {
	if n.Spec.BGP == nil {
		n.Spec.BGP = &api.NodeBGPSpec{}
	}
	n.Spec.BGP.IPv4Address, n.Spec.BGP.IPv6Address = "", ""
	if r.IPv4.Addr.IsValid() {
		n.Spec.BGP.IPv4Address = r.IPv4.Addr.String()
	}
	if r.IPv6.Addr.IsValid() {
		n.Spec.BGP.IPv6Address = r.IPv6.Addr.String()
	}
	if r.ASNumber != nil {
		as := *r.ASNumber
		n.Spec.BGP.ASNumber = &as
	}
	addrs := n.Spec.Addresses[:0:0]
	for _, a := range n.Spec.Addresses {
		if a.Type != api.NodeAddressCalicoNodeIP {
			addrs = append(addrs, a)
		}
	}
	for _, c := range []Choice{r.IPv4, r.IPv6} {
		if c.Addr.IsValid() {
			addrs = append(addrs, api.NodeAddress{Address: c.Addr.String(), Type: api.NodeAddressCalicoNodeIP})
		}
	}
	n.Spec.Addresses = addrs
	ad := r.Autodetection()
	n.Status.Autodetection = &ad
}

// Register creates the node's own Node resource or updates the parts of it the node owns,
// retrying a lost compare-and-swap (an operator may be labelling the node at the same moment).
func Register(ctx context.Context, s NodeStore, reg Registration, log *slog.Logger) (*api.Node, error) {
	if !reg.IPv4.Addr.IsValid() && !reg.IPv6.Addr.IsValid() {
		return nil, fmt.Errorf("register node %s: neither an IPv4 nor an IPv6 address was chosen", reg.Name)
	}
	if reg.Time.IsZero() {
		reg.Time = time.Now()
	}
	warnDuplicates(ctx, s, reg, log)
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := s.Get(ctx, api.KindNode, "", reg.Name)
		switch {
		case errors.Is(err, kv.ErrNotFound):
			n := &api.Node{TypeMeta: api.TypeMeta{Kind: api.KindNode, APIVersion: api.GroupVersion}}
			n.Metadata.Name = reg.Name
			reg.apply(n)
			out, err := s.Create(ctx, n)
			if errors.Is(err, kv.ErrExists) {
				lastErr = err
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("create node %s: %w", reg.Name, err)
			}
			log.Info("node registered", "node", reg.Name, "created", true)
			return asNode(out)
		case err != nil:
			return nil, fmt.Errorf("get node %s: %w", reg.Name, err)
		}
		n, err := asNode(cur)
		if err != nil {
			return nil, err
		}
		reg.apply(n)
		out, err := s.Update(ctx, n)
		if errors.Is(err, kv.ErrConflict) || errors.Is(err, kv.ErrNotFound) {
			lastErr = err
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("update node %s: %w", reg.Name, err)
		}
		log.Info("node registered", "node", reg.Name, "created", false)
		return asNode(out)
	}
	return nil, fmt.Errorf("register node %s: gave up after repeated conflicts: %w", reg.Name, lastErr)
}

// warnDuplicates logs other nodes that claim the same address: two nodes with one BGP address
// break peering in ways that are hard to trace back, so it must be loud.
func warnDuplicates(ctx context.Context, s NodeStore, reg Registration, log *slog.Logger) {
	all, err := s.List(ctx, api.KindNode, "")
	if err != nil {
		log.Warn("cannot check other nodes for duplicate addresses", "err", err)
		return
	}
	for _, r := range all {
		n, ok := r.(*api.Node)
		if !ok || n.Metadata.Name == reg.Name || n.Spec.BGP == nil {
			continue
		}
		for _, pair := range [][2]string{{n.Spec.BGP.IPv4Address, addrOf(reg.IPv4)}, {n.Spec.BGP.IPv6Address, addrOf(reg.IPv6)}} {
			if pair[1] != "" && strings.Split(pair[0], "/")[0] == pair[1] {
				log.Warn("another node already uses this address; BGP will not work for one of them",
					"address", pair[1], "other_node", n.Metadata.Name)
			}
		}
	}
}

func addrOf(c Choice) string {
	if !c.Addr.IsValid() {
		return ""
	}
	return c.Addr.Addr().String()
}

func asNode(r api.Resource) (*api.Node, error) {
	n, ok := r.(*api.Node)
	if !ok {
		return nil, fmt.Errorf("read node: datastore returned %T, not *api.Node", r)
	}
	return n, nil
}
