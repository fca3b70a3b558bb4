package iptables

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

	"github.com/terracenet/terrace/internal/ctxtime"
)

// Runner reads and writes one iptables back end (ExecRunner in production, a fake in tests).
type Runner interface {
	// Save returns iptables-save output for one table.
	Save(ctx context.Context, table string) ([]byte, error)
	// Restore feeds input to iptables-restore --noflush; it must be all-or-nothing per table,
	// which both back ends guarantee for a single COMMIT.
	Restore(ctx context.Context, input []byte) error
}

// Options tune a Table; zero values pick the defaults.
type Options struct {
	Logger *slog.Logger
	// MaxAttempts is how many times Apply tries before giving up (default 3).
	MaxAttempts int
	// Backoff is the first retry delay, doubled per attempt (default 100ms).
	Backoff time.Duration
	// Sleep replaces time-based waiting in tests.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Table is the writer for one iptables table of one IP version. It is not safe for concurrent use:
// the dataplane loop owns it.
type Table struct {
	name string
	run  Runner
	log  *slog.Logger
	opts Options

	chains  map[string][]Rule // desired trc- chains
	hashes  map[string][]string
	inserts map[string][]Rule // desired insertions per kernel chain
	// atEnd keeps the insertions at the end of their kernel chains instead of the top
	// (FelixConfiguration chainInsertMode: Append), under rules other tools put there.
	atEnd bool

	// actual is the kernel's state as last read or written; nil means unknown.
	actual *SavedTable
	// primed is a read Prime made ahead of the first Apply, adopted when actual is unknown.
	primed   *SavedTable
	primedAt time.Time
	// gen counts changes of actual, so a read made elsewhere (ReadAhead) can tell whether the
	// writer wrote or read the table since.
	gen    uint64
	inSync bool
}

// PrimeMaxAge is how old a Prime's read may be when Apply adopts it; an older one is read again.
const PrimeMaxAge = 30 * time.Second

// NewTable returns a writer for table ("filter", "nat", "raw", "mangle").
func NewTable(name string, run Runner, opts Options) *Table {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
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
	return &Table{
		name: name, run: run, opts: opts,
		log:     opts.Logger.With("table", name),
		chains:  map[string][]Rule{},
		hashes:  map[string][]string{},
		inserts: map[string][]Rule{},
	}
}

// Name returns the table name.
func (t *Table) Name() string { return t.name }

// UpdateChain sets the desired content of a trc- chain.
func (t *Table) UpdateChain(c Chain) error {
	if err := ValidateChainName(c.Name); err != nil {
		return fmt.Errorf("update chain: %w", err)
	}
	for i, r := range c.Rules {
		if err := r.validate(); err != nil {
			return fmt.Errorf("update chain %s rule %d: %w", c.Name, i, err)
		}
	}
	t.chains[c.Name] = slices.Clone(c.Rules)
	t.hashes[c.Name] = RuleHashes(c.Name, c.Rules)
	return nil
}

// RemoveChain drops a chain from the desired state; the kernel chain goes once in sync.
func (t *Table) RemoveChain(name string) {
	delete(t.chains, name)
	delete(t.hashes, name)
}

// ChainNames returns the desired chain names, sorted.
func (t *Table) ChainNames() []string {
	names := make([]string, 0, len(t.chains))
	for n := range t.chains {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// SetAppend chooses where the insertions of every kernel chain stand: false (the default) at the
// top, true at the end, so rules other tools add to the kernel chain run first. A change moves
// them at the next Apply, which reads the kernel first: the end is only known from the kernel's
// own view, which may hold rules added since the last read.
func (t *Table) SetAppend(atEnd bool) {
	if atEnd != t.atEnd {
		t.atEnd = atEnd
		t.setActual(nil)
	}
}

// SetInsertions sets the rules Terrace keeps at the top (or, SetAppend, the end) of a kernel chain (normally jumps to
// trc- chains). An empty Comment is replaced by DefaultInsertComment.
func (t *Table) SetInsertions(kernelChain string, rules []Rule) error {
	if strings.HasPrefix(kernelChain, ChainPrefix) || kernelChain == "" {
		return fmt.Errorf("set insertions in %q: not a kernel chain", kernelChain)
	}
	rs := make([]Rule, len(rules))
	for i, r := range rules {
		if r.Comment == "" {
			r.Comment = DefaultInsertComment
		}
		if err := r.validate(); err != nil {
			return fmt.Errorf("set insertions in %s rule %d: %w", kernelChain, i, err)
		}
		rs[i] = r
	}
	t.inserts[kernelChain] = rs
	return nil
}

// SetInSync tells the table the caller's desired state is complete, so chains and insertions it
// does not mention may now be removed from the kernel.
func (t *Table) SetInSync() { t.inSync = true }

// Resync forgets the cached kernel state, reads it back and repairs any drift.
func (t *Table) Resync(ctx context.Context) error {
	t.setActual(nil)
	t.primed = nil
	return t.Apply(ctx)
}

// Prime reads the kernel's table ahead of the first Apply, so a caller that still waits for its
// datastore does not pay for iptables-save (hundreds of milliseconds with tens of thousands of
// rules present) on the way to programming. It touches only what Apply adopts later, so it may run
// while the caller sets desired chains, but never at the same time as Apply or Resync.
func (t *Table) Prime(ctx context.Context) error {
	st, err := t.load(ctx)
	if err != nil {
		return err
	}
	t.primed, t.primedAt = st, time.Now()
	return nil
}

// Apply writes the difference between desired and actual state in one iptables-restore
// transaction, retrying with backoff (re-reading the kernel first) when it fails.
func (t *Table) Apply(ctx context.Context) error {
	var errs []error
	delay := t.opts.Backoff
	skipDeletes := false
	for attempt := 0; attempt < t.opts.MaxAttempts; attempt++ {
		if attempt > 0 {
			if err := t.opts.Sleep(ctx, delay); err != nil {
				errs = append(errs, err)
				break
			}
			delay *= 2
		}
		hadDeletes, err := t.applyOnce(ctx, skipDeletes)
		if err == nil {
			if skipDeletes {
				// Updates are in; a stale chain something else still references is not, and
				// must not hold every policy change hostage. Report it and retry next Apply.
				return fmt.Errorf("apply iptables table %s: stale chains not deleted: %w", t.name, errors.Join(errs...))
			}
			return nil
		}
		skipDeletes = skipDeletes || hadDeletes
		t.log.Warn("iptables apply failed", "attempt", attempt+1, "err", err)
		errs = append(errs, err)
		// Whatever made it fail (tampering, another tool) also made our cache suspect.
		t.setActual(nil)
	}
	return fmt.Errorf("apply iptables table %s: %w", t.name, errors.Join(errs...))
}

func (t *Table) read(ctx context.Context) error {
	primed := t.primed
	t.primed = nil
	if primed != nil && time.Since(t.primedAt) < PrimeMaxAge {
		t.setActual(primed)
		return nil
	}
	st, err := t.load(ctx)
	if err != nil {
		return err
	}
	t.setActual(st)
	return nil
}

func (t *Table) setActual(st *SavedTable) {
	t.actual = st
	t.gen++
}

func (t *Table) load(ctx context.Context) (*SavedTable, error) {
	return readSavedTable(ctx, t.run, t.name)
}

// readSavedTable reads one table; it touches no writer state, so it may run on any goroutine.
func readSavedTable(ctx context.Context, run Runner, name string) (*SavedTable, error) {
	out, err := run.Save(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("read table %s: %w", name, err)
	}
	tables, err := ParseSave(out)
	if err != nil {
		return nil, fmt.Errorf("read table %s: %w", name, err)
	}
	st := &SavedTable{Name: name, Chains: map[string]*SavedChain{}}
	for _, tb := range tables {
		if tb.Name == name {
			st = tb
		}
	}
	return st, nil
}

// ReadAhead splits a Resync in two so the slow part need not hold up the caller's loop: read
// reads the kernel and may run on any goroutine (it touches nothing of the writer, so the loop
// may go on applying meanwhile); finish must run on the writer's goroutine after read returned,
// and repairs drift from that read. If the writer wrote or read the table in between, the read
// may no longer match what the writer knows, and finish does a plain Resync instead.
func (t *Table) ReadAhead() (read func(context.Context), finish func(context.Context) error) {
	gen, run, name := t.gen, t.run, t.name
	var st *SavedTable
	var err error
	read = func(ctx context.Context) { st, err = readSavedTable(ctx, run, name) }
	finish = func(ctx context.Context) error {
		if err != nil || st == nil || gen != t.gen {
			return t.Resync(ctx)
		}
		t.primed = nil
		t.setActual(st)
		return t.Apply(ctx)
	}
	return read, finish
}

// applyOnce writes one transaction and reports whether it tried to delete chains.
func (t *Table) applyOnce(ctx context.Context, skipDeletes bool) (bool, error) {
	if t.actual == nil {
		if err := t.read(ctx); err != nil {
			return false, err
		}
	}
	p := t.plan(skipDeletes)
	if p.empty() {
		return false, nil
	}
	start := time.Now()
	if err := t.run.Restore(ctx, p.render(t.name)); err != nil {
		return len(p.deleteChains) > 0, fmt.Errorf("restore table %s: %w", t.name, err)
	}
	t.log.Debug("iptables applied", "chains", len(p.touched), "deleted", len(p.deleteChains), "took", time.Since(start))
	t.setActual(p.after)
	return len(p.deleteChains) > 0, nil
}

// plan is one restore transaction and the kernel state it leads to.
type plan struct {
	declare      []string // chains to create or flush
	ops          []string // rule operations, in order
	deleteChains []string
	touched      map[string]bool
	after        *SavedTable
}

func (p *plan) empty() bool {
	return len(p.declare) == 0 && len(p.ops) == 0 && len(p.deleteChains) == 0
}

func (p *plan) render(table string) []byte {
	var b strings.Builder
	b.WriteString("*" + table + "\n")
	for _, c := range p.declare {
		b.WriteString(":" + c + " - [0:0]\n")
	}
	for _, op := range p.ops {
		b.WriteString(op + "\n")
	}
	for _, c := range p.deleteChains {
		b.WriteString("-X " + c + "\n")
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String())
}

// cloneSaved copies the table shallowly: plan() never mutates a chain in place, it swaps in a new
// *SavedChain, so unchanged chains can be shared and a small change costs O(chains), not O(rules).
func cloneSaved(s *SavedTable) *SavedTable {
	return &SavedTable{Name: s.Name, Chains: maps.Clone(s.Chains), Order: slices.Clone(s.Order)}
}

func (t *Table) plan(skipDeletes bool) *plan {
	p := &plan{touched: map[string]bool{}, after: cloneSaved(t.actual)}
	act := t.actual

	// trc- chains: create, then patch rule by rule from the first differing hash.
	for _, name := range t.ChainNames() {
		rules := t.chains[name]
		hashes := t.hashes[name]
		cur, exists := act.Chains[name]
		if !exists {
			p.declare = append(p.declare, name)
			p.after.Chains[name] = &SavedChain{Name: name, Policy: "-"}
			p.after.Order = append(p.after.Order, name)
		}
		var old []SavedRule
		if exists {
			old = cur.Rules
		}
		if exists && sameHashes(old, hashes) {
			continue // the common case: nothing to render
		}
		newRules := make([]SavedRule, len(rules))
		for i, r := range rules {
			if i < len(old) && old[i].Hash == hashes[i] {
				newRules[i] = old[i]
				continue
			}
			newRules[i] = SavedRule{Spec: renderSpec(r, hashes[i]), Hash: hashes[i]}
			p.touched[name] = true
			if i < len(old) {
				p.ops = append(p.ops, "-R "+name+" "+strconv.Itoa(i+1)+" "+newRules[i].Spec)
			} else {
				p.ops = append(p.ops, "-A "+name+" "+newRules[i].Spec)
			}
		}
		for i := len(old); i > len(rules); i-- {
			p.touched[name] = true
			p.ops = append(p.ops, "-D "+name+" "+strconv.Itoa(i))
		}
		p.after.Chains[name] = &SavedChain{Name: name, Policy: "-", Rules: newRules}
	}

	// Kernel chains: our rules must be exactly the desired list at the top (SetAppend: the end);
	// otherwise remove ours (by spec, so a foreign rule shifting positions cannot make us delete
	// the wrong one) and insert the desired list at position 1..n (or append it).
	kernelChains := map[string]bool{}
	for c := range t.inserts {
		kernelChains[c] = true
	}
	for _, n := range act.Order {
		if !strings.HasPrefix(n, ChainPrefix) {
			for _, r := range act.Chains[n].Rules {
				if r.Hash != "" {
					kernelChains[n] = true
				}
			}
		}
	}
	for _, kc := range sortedKeys(kernelChains) {
		want := t.inserts[kc]
		if len(want) == 0 && !t.inSync {
			continue // removing our jumps before in-sync could open a gap after a restart
		}
		hashes := insertHashes(kc, want)
		var foreign, ours []SavedRule
		if c, ok := act.Chains[kc]; ok {
			for _, r := range c.Rules {
				if r.Hash != "" {
					ours = append(ours, r)
				} else {
					foreign = append(foreign, r)
				}
			}
		}
		if t.insertsInPlace(kc, hashes) {
			continue
		}
		p.touched[kc] = true
		for _, r := range ours {
			p.ops = append(p.ops, "-D "+kc+" "+r.Spec)
		}
		newRules := make([]SavedRule, 0, len(want)+len(foreign))
		for i, r := range want {
			sr := SavedRule{Spec: renderSpec(r, hashes[i]), Hash: hashes[i]}
			if t.atEnd {
				p.ops = append(p.ops, "-A "+kc+" "+sr.Spec)
			} else {
				p.ops = append(p.ops, "-I "+kc+" "+strconv.Itoa(i+1)+" "+sr.Spec)
			}
			newRules = append(newRules, sr)
		}
		policy := "ACCEPT"
		if c, ok := p.after.Chains[kc]; ok {
			policy = c.Policy
		} else {
			p.after.Order = append(p.after.Order, kc)
		}
		if t.atEnd {
			newRules = append(foreign, newRules...)
		} else {
			newRules = append(newRules, foreign...)
		}
		p.after.Chains[kc] = &SavedChain{Name: kc, Policy: policy, Rules: newRules}
	}

	// Stale trc- chains: flush (declare) them all first so references between them vanish, then -X.
	if t.inSync && !skipDeletes {
		for _, n := range act.Order {
			if _, want := t.chains[n]; want || !strings.HasPrefix(n, ChainPrefix) {
				continue
			}
			p.declare = append(p.declare, n)
			p.deleteChains = append(p.deleteChains, n)
			delete(p.after.Chains, n)
			p.after.Order = slices.DeleteFunc(p.after.Order, func(s string) bool { return s == n })
		}
	}
	return p
}

// insertsInPlace reports whether the kernel chain starts (appending: ends) with exactly our
// desired rules and holds no other rule of ours elsewhere.
func (t *Table) insertsInPlace(kc string, hashes []string) bool {
	c, ok := t.actual.Chains[kc]
	if !ok {
		return len(hashes) == 0
	}
	if len(c.Rules) < len(hashes) {
		return false
	}
	ours, others := c.Rules[:len(hashes)], c.Rules[len(hashes):]
	if t.atEnd {
		ours, others = c.Rules[len(c.Rules)-len(hashes):], c.Rules[:len(c.Rules)-len(hashes)]
	}
	for i, h := range hashes {
		if ours[i].Hash != h {
			return false
		}
	}
	for _, r := range others {
		if r.Hash != "" {
			return false
		}
	}
	return true
}

// sameHashes compares every position: a tampered kernel can keep the last hash while a rule in
// the middle was replaced, so the chaining of our hashes proves nothing about the kernel's.
func sameHashes(rules []SavedRule, hashes []string) bool {
	if len(rules) != len(hashes) {
		return false
	}
	for i, r := range rules {
		if r.Hash != hashes[i] {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
