package felix

import (
	"strings"
	"time"
)

// Defaults of RefreshIntervals, current Calico's (felix/config/config_params.go: IptablesRefreshInterval
// 180 s, IpsetsRefreshInterval and RouteRefreshInterval 90 s).
const (
	DefaultIptablesRefreshInterval = 180 * time.Second
	DefaultIPSetsRefreshInterval   = 90 * time.Second
	DefaultRouteRefreshInterval    = 90 * time.Second
)

// RefreshIntervals say how often each class of writers re-reads the kernel and repairs drift,
// as FelixConfiguration's iptablesRefreshInterval, ipsetsRefreshInterval and routeRefreshInterval
// do in Calico. A zero field picks its default; a negative one disables that refresh.
type RefreshIntervals struct {
	Iptables time.Duration // every iptables and ip6tables table
	IPSets   time.Duration // the ipset writer
	// Routes paces the route writer and the interface settings (sysctl) too: both are the host
	// side of a workload's wiring, read cheaply over netlink and /proc, and they change together
	// (a re-created interface is re-checked by both). Calico paces its interface rescan apart
	// (interfaceRefreshInterval) with the same 90 s default, but Terrace has no such setting.
	Routes time.Duration
}

// RefreshEvery is what --felix-resync-interval gives: one interval for every class, 0 disabling
// the refresh as FelixConfiguration's 0 does.
func RefreshEvery(d time.Duration) RefreshIntervals {
	if d == 0 {
		d = -1
	}
	return RefreshIntervals{Iptables: d, IPSets: d, Routes: d}
}

// withDefaults fills in the defaults, so equal settings compare equal however they were given.
func (r RefreshIntervals) withDefaults() RefreshIntervals {
	fill := func(d *time.Duration, dflt time.Duration) {
		if *d == 0 {
			*d = dflt
		}
	}
	fill(&r.Iptables, DefaultIptablesRefreshInterval)
	fill(&r.IPSets, DefaultIPSetsRefreshInterval)
	fill(&r.Routes, DefaultRouteRefreshInterval)
	return r
}

func (r RefreshIntervals) of(c writerClass) time.Duration {
	switch c {
	case classIptables:
		return r.Iptables
	case classIPSets:
		return r.IPSets
	default:
		return r.Routes
	}
}

// longest is the longest enabled interval, or -1 when every refresh is off.
func (r RefreshIntervals) longest() time.Duration {
	l := time.Duration(-1)
	for c := range numClasses {
		l = max(l, r.of(c))
	}
	return l
}

func (r RefreshIntervals) String() string {
	parts := make([]string, 0, numClasses)
	for c := range numClasses {
		parts = append(parts, c.String()+"="+intervalString(r.of(c)))
	}
	return strings.Join(parts, " ")
}

func intervalString(d time.Duration) string {
	if d < 0 {
		return "disabled"
	}
	return d.String()
}

// writerClass is a group of writers one refresh interval paces.
type writerClass int

const (
	classIptables writerClass = iota
	classIPSets
	classRoutes // routes and interface settings
	numClasses
)

func (c writerClass) String() string {
	switch c {
	case classIptables:
		return "iptables"
	case classIPSets:
		return "ipsets"
	default:
		return "routes"
	}
}

// setting is the FelixConfiguration field that paces the class, as logged for a change.
func (c writerClass) setting() string {
	switch c {
	case classIptables:
		return "iptablesRefreshInterval"
	case classIPSets:
		return "ipsetsRefreshInterval"
	default:
		return "routeRefreshInterval"
	}
}

// classSet is a set of writer classes, e.g. those a cycle resyncs.
type classSet uint8

const allClasses = classSet(1<<numClasses - 1)

func (s classSet) has(c writerClass) bool      { return s&(1<<c) != 0 }
func (s classSet) with(c writerClass) classSet { return s | 1<<c }

func (s classSet) String() string {
	var names []string
	for c := range numClasses {
		if s.has(c) {
			names = append(names, c.String())
		}
	}
	return strings.Join(names, ",")
}

// resyncTicker is one class's refresh clock; its period may change while the loop runs.
type resyncTicker struct {
	t     *time.Ticker
	every time.Duration // <= 0: stopped
}

func (r *resyncTicker) set(d time.Duration) {
	if d == r.every && (d <= 0) == (r.t == nil) {
		return
	}
	r.every = d
	switch {
	case d <= 0:
		r.stop()
	case r.t == nil:
		r.t = time.NewTicker(d)
	default:
		// The next resync is one new period from now, not from the last tick.
		r.t.Reset(d)
	}
}

// C is the channel to select on; nil (never ready) while stopped.
func (r *resyncTicker) C() <-chan time.Time {
	if r.t == nil {
		return nil
	}
	return r.t.C
}

func (r *resyncTicker) stop() {
	if r.t != nil {
		r.t.Stop()
		r.t = nil
	}
}

// resyncTickers are the three classes' clocks.
type resyncTickers [numClasses]resyncTicker

func (ts *resyncTickers) set(r RefreshIntervals) {
	for c := range numClasses {
		ts[c].set(r.of(c))
	}
}

func (ts *resyncTickers) stop() {
	for c := range numClasses {
		ts[c].stop()
	}
}
