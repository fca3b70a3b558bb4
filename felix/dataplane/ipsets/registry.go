package ipsets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/terracenet/terrace/felix/dataplane/cmdrun"
	"github.com/terracenet/terrace/internal/ctxtime"
)

// Options tune a Registry; zero values pick the defaults.
type Options struct {
	Logger *slog.Logger
	// SwapThreshold: a change of more members than this, and more than half the set, is built in
	// a temporary set and swapped in atomically instead of being applied member by member
	// (default 1000).
	SwapThreshold int
	MaxAttempts   int           // default 3
	Backoff       time.Duration // first retry delay, doubled per attempt; default 100ms
	Sleep         func(ctx context.Context, d time.Duration) error
	// DeferDeletions makes Apply, Resync and ReadAhead's finish leave unwanted sets alone: the
	// caller destroys them with ApplyDeletions once no iptables rule uses them any more (a
	// resync must not try to destroy a set the tables have not let go of yet).
	DeferDeletions bool
}

type set struct {
	meta    Meta
	members map[string]struct{}
	// changed holds members added or removed since the set last matched the kernel, so a label
	// change costs O(change) instead of O(set); nil means "compare every member".
	changed map[string]struct{}
}

// Registry is the ipset writer for one network namespace. It is not safe for concurrent use.
type Registry struct {
	cmd  cmdrun.Runner
	log  *slog.Logger
	opts Options

	desired map[string]*set
	actual  map[string]*set // our sets in the kernel; nil = unknown, read before the next apply
	// primed is a read Prime made ahead of the first apply, adopted when actual is unknown.
	primed   map[string]*set
	primedAt time.Time
	// gen counts changes of actual, so a read made elsewhere (ReadAhead) can tell whether the
	// registry wrote or read the kernel since.
	gen    uint64
	inSync bool
	// dirty names desired sets changed since the last successful apply, so a label change costs
	// O(that set) rather than O(every member of every set).
	dirty    map[string]bool
	allDirty bool
}

// New returns a Registry that runs the ipset tool through cmd.
func New(cmd cmdrun.Runner, opts Options) *Registry {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SwapThreshold <= 0 {
		opts.SwapThreshold = 1000
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 3
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 100 * time.Millisecond
	}
	if opts.Sleep == nil {
		opts.Sleep = ctxtime.Sleep
	}
	return &Registry{cmd: cmd, log: opts.Logger, opts: opts, desired: map[string]*set{}, dirty: map[string]bool{}}
}

func canonicalAll(m Meta, members []string) (map[string]struct{}, error) {
	out := make(map[string]struct{}, len(members))
	var errs []error
	for _, s := range members {
		c, err := CanonicalMember(m.Type, m.Family, s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[c] = struct{}{}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("set members of %s: %w", m.Name, err)
	}
	return out, nil
}

// AddOrReplace sets the desired shape and full membership of a set.
func (r *Registry) AddOrReplace(m Meta, members []string) error {
	if err := m.Validate(); err != nil {
		return err
	}
	mem, err := canonicalAll(m, members)
	if err != nil {
		return err
	}
	if len(mem) > MaxElem {
		return fmt.Errorf("set members of %s: %d members exceed maxelem %d", m.Name, len(mem), MaxElem)
	}
	r.desired[m.Name] = &set{meta: m, members: mem}
	r.dirty[m.Name] = true
	return nil
}

// AddMembers adds members to a desired set (the incremental path for label changes).
func (r *Registry) AddMembers(name string, members []string) error {
	s, ok := r.desired[name]
	if !ok {
		return fmt.Errorf("add members to %s: set not desired", name)
	}
	mem, err := canonicalAll(s.meta, members)
	if err != nil {
		return err
	}
	maps.Copy(s.members, mem)
	s.track(mem)
	r.dirty[name] = true
	return nil
}

// RemoveMembers removes members from a desired set.
func (r *Registry) RemoveMembers(name string, members []string) error {
	s, ok := r.desired[name]
	if !ok {
		return fmt.Errorf("remove members from %s: set not desired", name)
	}
	mem, err := canonicalAll(s.meta, members)
	if err != nil {
		return err
	}
	for m := range mem {
		delete(s.members, m)
	}
	s.track(mem)
	r.dirty[name] = true
	return nil
}

func (s *set) track(mem map[string]struct{}) {
	if s.changed != nil {
		maps.Copy(s.changed, mem)
	}
}

// Remove drops a set from the desired state; it is destroyed by ApplyDeletions once in sync.
func (r *Registry) Remove(name string) { delete(r.desired, name) }

// Members returns a desired set's canonical members, sorted (nil if the set is not desired).
func (r *Registry) Members(name string) []string {
	s, ok := r.desired[name]
	if !ok {
		return nil
	}
	return sortedMembers(s.members)
}

// SetInSync allows sets the caller no longer mentions to be destroyed.
func (r *Registry) SetInSync() { r.inSync = true }

// Apply runs ApplyUpdates then ApplyDeletions. A caller that also programs iptables should call
// them separately around the iptables apply, so sets exist before rules use them and are destroyed
// only after no rule references them any more.
func (r *Registry) Apply(ctx context.Context) error {
	if err := r.ApplyUpdates(ctx); err != nil {
		return err
	}
	if r.opts.DeferDeletions {
		return nil
	}
	return r.ApplyDeletions(ctx)
}

// Resync forgets the cached kernel state, reads it back and repairs drift.
func (r *Registry) Resync(ctx context.Context) error {
	r.setActual(nil)
	r.primed = nil
	return r.Apply(ctx)
}

func (r *Registry) setActual(sets map[string]*set) {
	r.actual = sets
	r.gen++
}

// ReadAhead splits a Resync in two so the slow part need not hold up the caller's loop: read
// runs ipset save and may run on any goroutine (it touches nothing of the registry, so the loop
// may go on applying meanwhile); finish must run on the registry's goroutine after read returned
// and repairs drift from that read, deletions included. If the registry wrote or read the kernel
// in between, the read may no longer match what it knows, and finish does a plain Resync instead.
func (r *Registry) ReadAhead() (read func(context.Context), finish func(context.Context) error) {
	gen, cmd := r.gen, r.cmd
	var sets map[string]*set
	var err error
	read = func(ctx context.Context) { sets, err = loadSets(ctx, cmd) }
	finish = func(ctx context.Context) error {
		if err != nil || sets == nil || gen != r.gen {
			return r.Resync(ctx)
		}
		r.primed = nil
		r.adopt(sets)
		return r.Apply(ctx)
	}
	return read, finish
}

// PrimeMaxAge is how old a Prime's read may be when an apply adopts it; an older one is read again.
const PrimeMaxAge = 30 * time.Second

// Prime reads the kernel's sets ahead of the first apply, so a caller that still waits for its
// datastore does not pay for ipset save on the way to programming. It touches only what the
// apply adopts later, so it may run while the caller sets desired sets, but never at the same
// time as an apply or Resync.
func (r *Registry) Prime(ctx context.Context) error {
	sets, err := r.load(ctx)
	if err != nil {
		return err
	}
	r.primed, r.primedAt = sets, time.Now()
	return nil
}

// ApplyUpdates creates missing sets and brings members of desired sets up to date.
func (r *Registry) ApplyUpdates(ctx context.Context) error {
	return r.retry(ctx, "apply ipset updates", true, r.planUpdates)
}

// ApplyDeletions destroys our sets that are no longer desired, but only once in sync.
func (r *Registry) ApplyDeletions(ctx context.Context) error {
	if !r.inSync {
		return nil
	}
	return r.retry(ctx, "apply ipset deletions", false, r.planDeletions)
}

func (r *Registry) retry(ctx context.Context, what string, updates bool, plan func(*strings.Builder) map[string]*set) error {
	var errs []error
	delay := r.opts.Backoff
	for attempt := 0; attempt < r.opts.MaxAttempts; attempt++ {
		if attempt > 0 {
			if err := r.opts.Sleep(ctx, delay); err != nil {
				errs = append(errs, err)
				break
			}
			delay *= 2
		}
		err := r.applyOnce(ctx, updates, plan)
		if err == nil {
			return nil
		}
		r.log.Warn("ipset apply failed", "attempt", attempt+1, "err", err)
		errs = append(errs, err)
		// ipset restore is not transactional: lines before the failure took effect.
		r.setActual(nil)
	}
	return fmt.Errorf("%s: %w", what, errors.Join(errs...))
}

func (r *Registry) applyOnce(ctx context.Context, updates bool, plan func(*strings.Builder) map[string]*set) error {
	if r.actual == nil {
		if err := r.read(ctx); err != nil {
			return err
		}
	}
	var b strings.Builder
	after := plan(&b)
	if b.Len() == 0 {
		if updates {
			r.clean()
		}
		return nil
	}
	start := time.Now()
	if _, err := r.cmd.Run(ctx, []byte(b.String()), "ipset", "restore", "-exist"); err != nil {
		return fmt.Errorf("restore ipsets: %w", err)
	}
	r.log.Debug("ipsets applied", "bytes", b.Len(), "took", time.Since(start))
	r.setActual(after)
	if updates {
		r.clean()
	}
	return nil
}

// clean forgets dirty marks once an update plan has reached the kernel; a deletion plan must not,
// because it may run on a fresh read whose updates have not been applied yet.
func (r *Registry) clean() {
	clear(r.dirty)
	r.allDirty = false
}

func (r *Registry) read(ctx context.Context) error {
	sets := r.primed
	r.primed = nil
	if sets == nil || time.Since(r.primedAt) >= PrimeMaxAge {
		var err error
		if sets, err = r.load(ctx); err != nil {
			return err
		}
	}
	r.adopt(sets)
	return nil
}

// adopt takes sets read from the kernel as the actual state: every desired set is compared in
// full at the next apply.
func (r *Registry) adopt(sets map[string]*set) {
	r.setActual(sets)
	r.allDirty = true
	for _, s := range r.desired {
		s.changed = nil
	}
}

func (r *Registry) load(ctx context.Context) (map[string]*set, error) { return loadSets(ctx, r.cmd) }

// loadSets reads our sets from the kernel; it touches no registry state, so it may run on any
// goroutine.
func loadSets(ctx context.Context, cmd cmdrun.Runner) (map[string]*set, error) {
	out, err := cmd.Run(ctx, nil, "ipset", "save")
	if err != nil {
		return nil, fmt.Errorf("read ipsets: %w", err)
	}
	saved, err := ParseSave(out)
	if err != nil {
		return nil, fmt.Errorf("read ipsets: %w", err)
	}
	sets := map[string]*set{}
	for _, s := range saved {
		if !strings.HasPrefix(s.Name, NamePrefix) {
			continue
		}
		st := &set{meta: Meta{Name: s.Name, Type: Type(s.Type), Family: Family(s.Family)}, members: make(map[string]struct{}, len(s.Members))}
		for _, m := range s.Members {
			if c, err := CanonicalMember(st.meta.Type, st.meta.Family, m); err == nil {
				m = c
			}
			st.members[m] = struct{}{}
		}
		sets[s.Name] = st
	}
	return sets, nil
}

func createLine(name string, m Meta) string {
	return "create " + name + " " + string(m.Type) + " family " + string(m.Family) + " hashsize 1024 maxelem " + strconv.Itoa(MaxElem) + "\n"
}

func sortedMembers(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedNames[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// planUpdates writes the restore input for creations and member changes and returns the kernel
// state it leads to.
func (r *Registry) planUpdates(b *strings.Builder) map[string]*set {
	after := maps.Clone(r.actual)
	if _, ok := r.actual[TempName]; ok {
		// Scratch left by an interrupted swap; it never holds anything anyone relies on.
		b.WriteString("destroy " + TempName + "\n")
		delete(after, TempName)
	}
	var recreate strings.Builder
	defer func() { b.WriteString(recreate.String()) }()
	var names []string
	if r.allDirty {
		names = sortedNames(r.desired)
	} else {
		for _, n := range sortedNames(r.dirty) {
			if _, ok := r.desired[n]; ok {
				names = append(names, n)
			}
		}
	}
	for _, name := range names {
		want := r.desired[name]
		have, ok := r.actual[name]
		switch {
		case !ok:
			b.WriteString(createLine(name, want.meta))
			for _, m := range sortedMembers(want.members) {
				b.WriteString("add " + name + " " + m + "\n")
			}
			after[name] = &set{meta: want.meta, members: maps.Clone(want.members)}
		case have.meta != want.meta:
			// The kernel cannot swap sets of different types, so a shape change is a recreate.
			// It fails while an iptables rule still uses the set, and ipset restore stops at the
			// first failing line, so recreates go last where they cannot hold up other sets.
			recreate.WriteString("destroy " + name + "\n")
			recreate.WriteString(createLine(name, want.meta))
			for _, m := range sortedMembers(want.members) {
				recreate.WriteString("add " + name + " " + m + "\n")
			}
			after[name] = &set{meta: want.meta, members: maps.Clone(want.members)}
		default:
			adds, dels := diffMembers(want, have)
			changes := len(adds) + len(dels)
			if changes == 0 {
				break
			}
			if changes > r.opts.SwapThreshold && 2*changes > len(want.members) {
				b.WriteString(createLine(TempName, want.meta))
				for _, m := range sortedMembers(want.members) {
					b.WriteString("add " + TempName + " " + m + "\n")
				}
				b.WriteString("swap " + TempName + " " + name + "\n")
				b.WriteString("destroy " + TempName + "\n")
				after[name] = &set{meta: want.meta, members: maps.Clone(want.members)}
				break
			}
			sort.Strings(dels)
			sort.Strings(adds)
			for _, m := range dels {
				b.WriteString("del " + name + " " + m + "\n")
			}
			for _, m := range adds {
				b.WriteString("add " + name + " " + m + "\n")
			}
			// Patch the cached kernel set in place rather than copying 100k members: if the
			// restore fails, the whole cache is dropped and re-read anyway.
			for _, m := range dels {
				delete(have.members, m)
			}
			for _, m := range adds {
				have.members[m] = struct{}{}
			}
		}
		// From here on the set matches the kernel (once this plan lands): track deltas only.
		want.changed = map[string]struct{}{}
	}
	return after
}

// diffMembers returns what to add to and delete from have to reach want, looking only at
// want.changed when deltas are being tracked.
func diffMembers(want, have *set) (adds, dels []string) {
	check := func(m string) {
		_, inWant := want.members[m]
		_, inHave := have.members[m]
		switch {
		case inWant && !inHave:
			adds = append(adds, m)
		case !inWant && inHave:
			dels = append(dels, m)
		}
	}
	if want.changed != nil {
		for m := range want.changed {
			check(m)
		}
		return adds, dels
	}
	for m := range want.members {
		check(m)
	}
	for m := range have.members {
		if _, ok := want.members[m]; !ok {
			dels = append(dels, m)
		}
	}
	return adds, dels
}

func (r *Registry) planDeletions(b *strings.Builder) map[string]*set {
	after := maps.Clone(r.actual)
	for _, name := range sortedNames(r.actual) {
		if _, want := r.desired[name]; want || !strings.HasPrefix(name, NamePrefix) {
			continue
		}
		b.WriteString("destroy " + name + "\n")
		delete(after, name)
	}
	return after
}
