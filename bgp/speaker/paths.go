package speaker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// SetAdvertised makes the set of prefixes this host originates equal to desired. It diffs
// against what it advertised before: new or changed prefixes are added (one AddPath each, which
// replaces an older version of the same prefix) and missing ones withdrawn with their own path,
// never with an empty DeletePath (that would drop every local path). A prefix that fails stays
// in its previous state and is retried by the next call.
func (s *Speaker) SetAdvertised(ctx context.Context, desired map[netip.Prefix]Advert) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return errors.New("set advertised: speaker not started")
	}
	want := make(map[netip.Prefix]Advert, len(desired))
	for p, a := range desired {
		want[p.Masked()] = a
	}
	var errs []error
	for p, old := range s.advertised {
		if _, ok := want[p]; ok {
			continue
		}
		if err := s.withdrawPath(ctx, p, old); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %v: %w", p, err))
			continue
		}
		delete(s.advertised, p)
		s.forgetAdvertised()
	}
	// Sorted so that a large initial advertisement goes out in a stable order.
	for _, p := range slices.SortedFunc(maps.Keys(want), func(a, b netip.Prefix) int { return comparePrefix(a, b) }) {
		a := want[p]
		if old, ok := s.advertised[p]; ok && old.NextHop == a.NextHop && slices.Equal(old.Communities, a.Communities) {
			continue
		}
		if err := s.addPath(ctx, p, a); err != nil {
			errs = append(errs, fmt.Errorf("advertise %v: %w", p, err))
			continue
		}
		s.advertised[p] = Advert{NextHop: a.NextHop, Communities: slices.Clone(a.Communities)}
		s.forgetAdvertised()
	}
	return errors.Join(errs...)
}

// withdrawPath withdraws this host's own path for p, advertised as a: with its own path, never an
// empty DeletePath (that would drop every local path).
func (s *Speaker) withdrawPath(ctx context.Context, p netip.Prefix, a Advert) error {
	path, err := buildPath(p, a)
	if err == nil {
		err = s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: path.Family, Path: path})
	}
	return err
}

// addPath originates p as a, replacing an older version of p.
func (s *Speaker) addPath(ctx context.Context, p netip.Prefix, a Advert) error {
	path, err := buildPath(p, a)
	if err == nil {
		_, err = s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path})
	}
	return err
}

// Advertised returns a copy of what this speaker currently originates.
func (s *Speaker) Advertised() map[netip.Prefix]Advert {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.advertised)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		// Marshalling a well-formed generated message cannot fail.
		panic(fmt.Sprintf("marshal %T: %v", m, err))
	}
	return a
}

// buildPath is the GoBGP path for one originated prefix.
func buildPath(p netip.Prefix, a Advert) (*api.Path, error) {
	if !p.IsValid() {
		return nil, errors.New("invalid prefix")
	}
	nh := a.NextHop.Unmap()
	if nh.IsValid() && nh.Is4() != p.Addr().Is4() {
		return nil, fmt.Errorf("next hop %v is not in the family of %v", nh, p)
	}
	nlri := mustAny(&api.IPAddressPrefix{Prefix: p.Addr().String(), PrefixLen: uint32(p.Bits())})
	attrs := []*anypb.Any{mustAny(&api.OriginAttribute{Origin: 0})} // IGP
	var fam *api.Family
	if p.Addr().Is4() {
		fam = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
		s := "0.0.0.0"
		if nh.IsValid() {
			s = nh.String()
		}
		attrs = append(attrs, mustAny(&api.NextHopAttribute{NextHop: s}))
	} else {
		fam = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
		s := "::"
		if nh.IsValid() {
			s = nh.String()
		}
		attrs = append(attrs, mustAny(&api.MpReachNLRIAttribute{Family: fam, NextHops: []string{s}, Nlris: []*anypb.Any{nlri}}))
	}
	if len(a.Communities) > 0 {
		cs := make([]uint32, len(a.Communities))
		for i, c := range a.Communities {
			cs[i] = uint32(c)
		}
		attrs = append(attrs, mustAny(&api.CommunitiesAttribute{Communities: cs}))
	}
	return &api.Path{Family: fam, Nlri: nlri, Pattrs: attrs}, nil
}
