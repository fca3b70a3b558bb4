package ipsets

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

type fakeSet struct {
	typ, family string
	members     map[string]bool
}

// fakeIpset is a recording fake of the ipset tool with -exist semantics. Like the real tool its
// restore is not transactional: lines before a failing one stay applied.
type fakeIpset struct {
	sets     map[string]*fakeSet
	order    []string
	inUse    map[string]bool
	restores []string
	saves    int
}

func newFakeIpset() *fakeIpset {
	return &fakeIpset{sets: map[string]*fakeSet{}, inUse: map[string]bool{}}
}

func (f *fakeIpset) Run(_ context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := strings.Join(append([]string{name}, args...), " ")
	switch cmd {
	case "ipset save":
		f.saves++
		return []byte(f.render()), nil
	case "ipset restore -exist":
		f.restores = append(f.restores, string(stdin))
		for i, l := range strings.Split(strings.TrimSpace(string(stdin)), "\n") {
			if err := f.line(l); err != nil {
				return nil, fmt.Errorf("ipset v7: Error in line %d: %w", i+1, err)
			}
		}
		return nil, nil
	}
	return nil, fmt.Errorf("fake: unexpected command %q", cmd)
}

func (f *fakeIpset) render() string {
	var sets []*SavedSet
	// Sorted: the kernel's listing order carries no meaning and recreated sets move to the end.
	for _, n := range slices.Sorted(slices.Values(f.order)) {
		s := f.sets[n]
		ss := &SavedSet{Name: n, Type: s.typ, Options: []string{"family", s.family, "hashsize", "1024", "maxelem", "1048576"}}
		for m := range s.members {
			ss.Members = append(ss.Members, m)
		}
		slices.Sort(ss.Members)
		sets = append(sets, ss)
	}
	return Render(sets)
}

func (f *fakeIpset) create(name, typ, family string, members ...string) {
	s := &fakeSet{typ: typ, family: family, members: map[string]bool{}}
	for _, m := range members {
		s.members[m] = true
	}
	f.sets[name] = s
	f.order = append(f.order, name)
}

func (f *fakeIpset) line(l string) error {
	w := strings.Fields(l)
	if len(w) < 2 {
		return errors.New("short line")
	}
	s, exists := f.sets[w[1]]
	switch w[0] {
	case "create":
		fam := "inet"
		if i := slices.Index(w, "family"); i > 0 && i+1 < len(w) {
			fam = w[i+1]
		}
		if exists {
			if s.typ != w[2] || s.family != fam {
				return errors.New("set with the same name already exists with different type")
			}
			return nil
		}
		f.create(w[1], w[2], fam)
	case "add", "del":
		if !exists {
			return errors.New("the set with the given name does not exist")
		}
		if w[0] == "add" {
			s.members[w[2]] = true
		} else {
			delete(s.members, w[2])
		}
	case "swap":
		to, ok := f.sets[w[2]]
		if !exists || !ok {
			return errors.New("the set with the given name does not exist")
		}
		if s.typ != to.typ || s.family != to.family {
			return errors.New("the sets cannot be swapped: their type does not match")
		}
		f.sets[w[1]], f.sets[w[2]] = to, s
	case "destroy":
		if !exists {
			return errors.New("the set with the given name does not exist")
		}
		if f.inUse[w[1]] {
			return errors.New("set cannot be destroyed: it is in use by a kernel component")
		}
		delete(f.sets, w[1])
		f.order = slices.DeleteFunc(f.order, func(s string) bool { return s == w[1] })
	default:
		return errors.New("unknown command")
	}
	return nil
}
