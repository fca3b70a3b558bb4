package felix

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/terracenet/terrace/felix/calc"
	"github.com/terracenet/terrace/felix/dataplane/fastpath"
)

// applyBuckets are the upper bounds (seconds) of the apply-duration histogram: the targets are
// tens of milliseconds for a change and about a second for initial programming.
var applyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

type histogram struct {
	counts []uint64 // per bucket, not cumulative
	sum    float64
	count  uint64
}

func (h *histogram) observe(v float64) {
	if h.counts == nil {
		h.counts = make([]uint64, len(applyBuckets))
	}
	for i, b := range applyBuckets {
		if v <= b {
			h.counts[i]++
			break
		}
	}
	h.sum += v
	h.count++
}

// metrics is written by hand in the Prometheus text format: the project takes no dependency
// for a dozen numbers.
type metrics struct {
	updates       atomic.Uint64
	statusWrites  atomic.Uint64
	statusDeletes atomic.Uint64

	mu        sync.Mutex
	apply     map[bool]*histogram // by resync
	resyncs   uint64
	writerRe  map[string]uint64 // resyncs by writer: each class has its own interval
	errors    map[string]uint64 // by writer
	rules     map[calc.TableID]int
	chains    map[calc.TableID]int
	ipsets    int
	members   int
	endpoints int
	inSync    bool

	// fastPath reads the fast path's counters (nil: no fast path). Read at scrape time from
	// the kernel, off the lock: the program counts every packet itself.
	fastPath func() (fastpath.Stats, error)
}

func newMetrics() *metrics {
	return &metrics{apply: map[bool]*histogram{false: {}, true: {}}, writerRe: map[string]uint64{}, errors: map[string]uint64{},
		rules: map[calc.TableID]int{}, chains: map[calc.TableID]int{}}
}

func (m *metrics) add(c *atomic.Uint64, n uint64) { c.Add(n) }

func (m *metrics) observeApply(d time.Duration, resync bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.apply[resync].observe(d.Seconds())
	if resync {
		m.resyncs++
	}
}

func (m *metrics) writerResync(name string) {
	m.mu.Lock()
	m.writerRe[name]++
	m.mu.Unlock()
}

func (m *metrics) writerError(name string) {
	m.mu.Lock()
	m.errors[name]++
	m.mu.Unlock()
}

func (m *metrics) setInSync(v bool) {
	m.mu.Lock()
	m.inSync = v
	m.mu.Unlock()
}

func (m *metrics) setDataplane(chainRules map[calc.ChainRef]int, setMembers map[string]int, endpoints int) {
	rules, chains := map[calc.TableID]int{}, map[calc.TableID]int{}
	for ref, n := range chainRules {
		rules[ref.Table] += n
		if !isKernelChain(ref.Name) {
			chains[ref.Table]++
		}
	}
	members := 0
	for _, n := range setMembers {
		members += n
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rules, m.chains = rules, chains
	m.ipsets, m.members, m.endpoints = len(setMembers), members, endpoints
}

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// write renders every metric in the Prometheus text exposition format. It renders into memory
// under the lock and writes after: a scraper that stops reading must not hold up the dataplane
// loop, which takes the same lock on every apply.
func (m *metrics) write(w io.Writer) {
	var buf bytes.Buffer
	m.render(&buf)
	if m.fastPath != nil {
		renderFastPath(&buf, m.fastPath)
	}
	_, _ = w.Write(buf.Bytes())
}

func renderFastPath(w io.Writer, read func() (fastpath.Stats, error)) {
	s, err := read()
	if err != nil {
		return // a scrape without these is better than none; the writer logs kernel trouble
	}
	fmt.Fprint(w, "# HELP terrace_felix_fastpath_packets_total Packets the fast path saw, by what it did: forwarded, or left to the kernel and why.\n"+
		"# TYPE terrace_felix_fastpath_packets_total counter\n")
	for _, r := range []struct {
		name string
		v    uint64
	}{{"forwarded", s.Forwarded}, {"not_established", s.NotEstablished}, {"not_eligible", s.NotEligible}, {"spoofed", s.Spoofed}} {
		fmt.Fprintf(w, "terrace_felix_fastpath_packets_total{result=%q} %d\n", r.name, r.v)
	}
}

func (m *metrics) render(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("# HELP terrace_felix_apply_duration_seconds Time to compute and program one dataplane apply.\n")
	p("# TYPE terrace_felix_apply_duration_seconds histogram\n")
	for _, resync := range []bool{false, true} {
		h := m.apply[resync]
		var cum uint64
		for i, b := range applyBuckets {
			if h.counts != nil {
				cum += h.counts[i]
			}
			p("terrace_felix_apply_duration_seconds_bucket{resync=\"%t\",le=\"%s\"} %d\n", resync, fmtFloat(b), cum)
		}
		p("terrace_felix_apply_duration_seconds_bucket{resync=\"%t\",le=\"+Inf\"} %d\n", resync, h.count)
		p("terrace_felix_apply_duration_seconds_sum{resync=\"%t\"} %s\n", resync, fmtFloat(h.sum))
		p("terrace_felix_apply_duration_seconds_count{resync=\"%t\"} %d\n", resync, h.count)
	}
	p("# HELP terrace_felix_resyncs_total Applies that re-read the kernel (for one writer class or more) and repaired drift.\n")
	p("# TYPE terrace_felix_resyncs_total counter\nterrace_felix_resyncs_total %d\n", m.resyncs)
	p("# HELP terrace_felix_writer_resyncs_total Resyncs per writer.\n# TYPE terrace_felix_writer_resyncs_total counter\n")
	for _, name := range slices.Sorted(maps.Keys(m.writerRe)) {
		p("terrace_felix_writer_resyncs_total{writer=%q} %d\n", name, m.writerRe[name])
	}
	p("# HELP terrace_felix_errors_total Failed applies per writer.\n# TYPE terrace_felix_errors_total counter\n")
	for _, name := range slices.Sorted(maps.Keys(m.errors)) {
		p("terrace_felix_errors_total{writer=%q} %d\n", name, m.errors[name])
	}
	tables := slices.SortedFunc(maps.Keys(m.rules), func(a, b calc.TableID) int {
		if a.IPVersion != b.IPVersion {
			return a.IPVersion - b.IPVersion
		}
		return compareStrings(a.Table, b.Table)
	})
	p("# HELP terrace_felix_iptables_rules Rules Terrace keeps per table, including jumps in kernel chains.\n")
	p("# TYPE terrace_felix_iptables_rules gauge\n")
	for _, t := range tables {
		p("terrace_felix_iptables_rules{table=%q,ip_version=\"%d\"} %d\n", t.Table, t.IPVersion, m.rules[t])
	}
	p("# HELP terrace_felix_iptables_chains trc- chains per table.\n# TYPE terrace_felix_iptables_chains gauge\n")
	for _, t := range tables {
		p("terrace_felix_iptables_chains{table=%q,ip_version=\"%d\"} %d\n", t.Table, t.IPVersion, m.chains[t])
	}
	p("# HELP terrace_felix_ipsets Ipsets Terrace keeps.\n# TYPE terrace_felix_ipsets gauge\nterrace_felix_ipsets %d\n", m.ipsets)
	p("# HELP terrace_felix_ipset_members Members of all of Terrace's ipsets.\n# TYPE terrace_felix_ipset_members gauge\nterrace_felix_ipset_members %d\n", m.members)
	p("# HELP terrace_felix_local_endpoints Workload endpoints on this node.\n# TYPE terrace_felix_local_endpoints gauge\nterrace_felix_local_endpoints %d\n", m.endpoints)
	in := 0
	if m.inSync {
		in = 1
	}
	p("# HELP terrace_felix_datastore_in_sync 1 while the datastore syncer is in sync.\n# TYPE terrace_felix_datastore_in_sync gauge\nterrace_felix_datastore_in_sync %d\n", in)
	p("# HELP terrace_felix_updates_total Resource updates received from the datastore.\n# TYPE terrace_felix_updates_total counter\nterrace_felix_updates_total %d\n", m.updates.Load())
	p("# HELP terrace_felix_endpoint_status_writes_total Endpoint status keys written.\n# TYPE terrace_felix_endpoint_status_writes_total counter\nterrace_felix_endpoint_status_writes_total %d\n", m.statusWrites.Load())
	p("# HELP terrace_felix_endpoint_status_deletes_total Endpoint status keys deleted.\n# TYPE terrace_felix_endpoint_status_deletes_total counter\nterrace_felix_endpoint_status_deletes_total %d\n", m.statusDeletes.Load())
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
