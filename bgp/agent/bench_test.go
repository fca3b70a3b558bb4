package agent

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/terracenet/terrace/felix/dataplane/routes"
	"github.com/terracenet/terrace/internal/nstest"
)

// BenchmarkResolveAll100k: one pass that resolves every learned route again (as at each resync
// and after an underlay change) with 100k learned /32s, all behind the underlay's default route,
// installed in a fresh namespace through the real writer. Reports the pass's time and what it
// allocates; checks every route is still installed through the underlay's gateway.
func BenchmarkResolveAll100k(b *testing.B) {
	ns := nstest.New(b)
	for _, c := range [][]string{
		{"ip", "link", "add", "under0", "type", "veth", "peer", "name", "tor0"},
		{"ip", "link", "set", "under0", "up"},
		{"ip", "link", "set", "tor0", "up"},
		{"ip", "addr", "add", "192.0.2.1/24", "dev", "under0"},
		{"ip", "route", "add", "default", "via", "192.0.2.2"},
	} {
		nstest.Run(b, ns, c...)
	}
	_, h := nstest.Handle(b, ns)
	w, err := routes.New(h, routes.Config{Protocol: routes.ProtocolTerraceBGP})
	if err != nil {
		b.Fatal(err)
	}
	w.SetInSync()
	p, st := newTestProgrammer(w, h)
	const n = 100000
	learned := make(map[netip.Prefix][]netip.Addr, n)
	nh := addrs("198.51.100.9")
	for i := range n {
		learned[netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)}), 32)] = nh
	}
	st.deliver(p, learned, true)
	p.sync(b.Context(), false)
	if s := p.Stats(); s.Installed != n {
		b.Fatalf("initial pass: %+v, want %d installed", s, n)
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	passes := 0
	b.ResetTimer()
	for b.Loop() {
		p.sync(b.Context(), true)
		passes++
	}
	b.StopTimer()
	took := time.Since(start)
	runtime.ReadMemStats(&ms1)
	if s := p.Stats(); s.Installed != n || s.LastError != "" {
		b.Fatalf("after the passes: %+v, want %d installed, no error", s, n)
	}
	tg, _ := w.Desired(netip.MustParsePrefix("198.18.0.1/32"))
	if len(tg.Gateways) != 1 || tg.Gateways[0].Addr != netip.MustParseAddr("192.0.2.2") {
		b.Fatalf("a learned route goes via %v, want 192.0.2.2", tg.Gateways)
	}
	b.ReportMetric(float64(took.Milliseconds())/float64(passes), "ms/pass")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/float64(passes)/(1<<20), "MB-alloc/pass")
}
