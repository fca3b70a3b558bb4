package felix

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/felix/calc"
	"github.com/terracenet/terrace/felix/dataplane/cmdrun"
	"github.com/terracenet/terrace/internal/nstest"
	"github.com/terracenet/terrace/internal/syncbuf"
	"github.com/terracenet/terrace/node"
)

// writerResyncsRE finds one writer's resync counter in /metrics.
func writerResyncsRE(writer string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^terrace_felix_writer_resyncs_total\{writer="` + regexp.QuoteMeta(writer) + `"\} (\d+)$`)
}

// TestComponentFollowsFelixConfiguration runs the felix component (real calc, writers, iptables,
// embedded etcd) against a fresh namespace and changes FelixConfiguration under it: the health
// and metrics endpoints move or stop, the resync cadence changes, and the runtime settings the
// calculation reads reach the kernel, all without restarting the component.
func TestComponentFollowsFelixConfiguration(t *testing.T) {
	ns := nstest.New(t, "ipset", "iptables-save", "iptables-restore", "ss", "iptables-legacy-save", "iptables-nft-save", "ip6tables-nft-save", "ip6tables-restore")
	const nodeName = "host-1"
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	_, client := startTestDatastore(t, ctx)
	apply := func(doc string) {
		t.Helper()
		if _, _, err := client.Apply(ctx, decodeOne(t, doc)); err != nil {
			t.Fatalf("apply %s: %v", doc, err)
		}
	}
	felixConfig := func(name, spec string) {
		t.Helper()
		apply("apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: " + name + "}\nspec: " + spec + "\n")
	}
	// Present before the start: read at start, so the endpoints bind there from the beginning.
	const quiet = "prometheusMetricsPort: 9191, ipsetsRefreshInterval: 1h, routeRefreshInterval: 1h"
	felixConfig("default", "{"+quiet+", iptablesRefreshInterval: 1h}")

	nsh, nl := nstest.Handle(t, ns)
	inNS := func(f func() error) error { return nstest.Enter(ns, f) }
	comp := NewComponent(ComponentConfig{HealthListen: DefaultHealthListen, MetricsListen: DefaultMetricsListen,
		ApplyInterval: 10 * time.Millisecond, IPv6: IPv6Off})
	comp.kernel = &componentKernel{cmd: cmdrun.InNetns(ns), netlink: nl, ns: &nsh, sysctl: nsFS{ns},
		listen: func(addr string) (ln net.Listener, err error) {
			err = inNS(func() error { ln, err = net.Listen("tcp", addr); return err })
			return ln, err
		}}
	board := node.NewStatusBoard(node.Status{})
	env := node.ComponentEnv{Client: client, Node: &api.Node{Metadata: api.ObjectMeta{Name: nodeName}}, Board: board, Log: testLogger(t)}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- comp.Run(runCtx, env) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	httpc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = inNS(func() error {
				c, err = (&net.Dialer{Timeout: time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}}
	// get returns the status and body of GET http://addr/path inside the namespace; 0 when
	// nothing listens there.
	get := func(addr, path string) (int, string) {
		resp, err := httpc.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	serves := func(addr, path string) bool { code, _ := get(addr, path); return code == http.StatusOK }
	closed := func(addr string) bool { code, _ := get(addr, "/"); return code == 0 }
	listening := func() string { return nstest.Run(t, ns, "ss", "-Hltn") }
	felixState := func() node.ComponentStatus { return board.Snapshot().Components["felix"] }
	save := func() string { return nstest.Run(t, ns, "iptables-save", "-t", "filter") }
	wait := func(t *testing.T, what string, d time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s\nfelix: %+v\nlistening:\n%s", what, felixState(), listening())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// writerResyncs is how often one writer has resynced (0 before its first).
	writerResyncs := func(t *testing.T, metricsAddr, writer string) int {
		t.Helper()
		code, body := get(metricsAddr, "/metrics")
		if code != http.StatusOK {
			t.Fatalf("GET %s/metrics = %d:\n%s", metricsAddr, code, body)
		}
		m := writerResyncsRE(writer).FindStringSubmatch(body)
		if m == nil {
			return 0
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	resyncs := func(t *testing.T, metricsAddr string) int {
		t.Helper()
		return writerResyncs(t, metricsAddr, "iptables-filter-v4")
	}

	wait(t, "felix ready", 30*time.Second, func() bool { return felixState().State == "ready" })
	if !serves("127.0.0.1:9099", "/liveness") || !serves("127.0.0.1:9191", "/metrics") {
		t.Fatalf("endpoints not where the configuration at start put them:\n%s", listening())
	}
	if !closed(DefaultMetricsListen) {
		t.Errorf("metrics also served on the flag default %s", DefaultMetricsListen)
	}

	t.Run("health port moves", func(t *testing.T) {
		felixConfig("node."+nodeName, "{healthPort: 9199}")
		wait(t, "liveness on the new port only", 10*time.Second, func() bool {
			return serves("127.0.0.1:9199", "/liveness") && closed("127.0.0.1:9099")
		})
	})

	t.Run("resync cadence follows iptablesRefreshInterval", func(t *testing.T) {
		before := resyncs(t, "127.0.0.1:9191")
		time.Sleep(2 * time.Second)
		if n := resyncs(t, "127.0.0.1:9191"); n != before {
			t.Fatalf("%d resyncs in 2 s with a 1 h interval", n-before)
		}
		others := map[string]int{}
		for _, w := range []string{"ipsets", "routes", "sysctl"} {
			others[w] = writerResyncs(t, "127.0.0.1:9191", w)
		}
		felixConfig("default", "{"+quiet+", iptablesRefreshInterval: 1s}")
		start := resyncs(t, "127.0.0.1:9191")
		wait(t, "resyncs every second", 10*time.Second, func() bool { return resyncs(t, "127.0.0.1:9191") >= start+3 })
		if n := writerResyncs(t, "127.0.0.1:9191", "iptables-nat-v4"); n < 3 {
			t.Errorf("nat table resynced %d times, want it paced with the filter table", n)
		}
		for w, n := range others {
			if m := writerResyncs(t, "127.0.0.1:9191", w); m != n {
				t.Errorf("%s resynced %d times while only iptablesRefreshInterval was short", w, m-n)
			}
		}
		felixConfig("default", "{"+quiet+", iptablesRefreshInterval: 0s}")
		// The change takes a moment to arrive and a tick already due may still run: wait until
		// the counter holds still for longer than the old interval, then watch it stay still.
		var off int
		wait(t, "resyncs stop", 15*time.Second, func() bool {
			a := resyncs(t, "127.0.0.1:9191")
			time.Sleep(1500 * time.Millisecond)
			off = resyncs(t, "127.0.0.1:9191")
			return off == a
		})
		time.Sleep(2500 * time.Millisecond)
		if n := resyncs(t, "127.0.0.1:9191"); n != off {
			t.Errorf("%d resyncs in 2.5 s after iptablesRefreshInterval: 0 disabled them", n-off)
		}
	})

	t.Run("runtime settings reach the kernel", func(t *testing.T) {
		if s := save(); !regexp.MustCompile(`(?m)^-A ` + calc.ChainWlToHost + ` .*defaultEndpointToHostAction.* -j DROP$`).MatchString(s) {
			t.Fatalf("no default Drop in %s:\n%s", calc.ChainWlToHost, s)
		}
		felixConfig("default", "{prometheusMetricsPort: 9191, iptablesRefreshInterval: 0s, defaultEndpointToHostAction: Accept, "+
			"failsafeInboundHostPorts: [{protocol: TCP, port: 2222}]}")
		wait(t, "Accept and the new failsafe port in the kernel", 10*time.Second, func() bool {
			s := save()
			return regexp.MustCompile(`(?m)^-A `+calc.ChainWlToHost+` .*defaultEndpointToHostAction.* -j ACCEPT$`).MatchString(s) &&
				regexp.MustCompile(`(?m)^-A `+calc.ChainFailsafeIn+` .*--dport 2222 `).MatchString(s) &&
				!regexp.MustCompile(`(?m)^-A `+calc.ChainFailsafeIn+` .*--dport 22 `).MatchString(s)
		})
	})

	t.Run("an address that cannot be bound is reported and retried", func(t *testing.T) {
		felixConfig("node."+nodeName, "{healthPort: 9199, healthHost: 192.0.2.1}")
		wait(t, "not ready because of the health endpoint", 10*time.Second, func() bool {
			st := felixState()
			return st.State == "not-ready" && strings.Contains(st.Detail, "health endpoint not served") && strings.Contains(st.Detail, "192.0.2.1:9199")
		})
		// The old listener is kept, and liveness is not what fails.
		if !serves("127.0.0.1:9199", "/liveness") {
			t.Errorf("old health endpoint gone after a failed move:\n%s", listening())
		}
		if code, body := get("127.0.0.1:9199", "/readiness"); code != http.StatusServiceUnavailable || !strings.Contains(body, "192.0.2.1") {
			t.Errorf("/readiness = %d %q, want 503 naming the address", code, body)
		}
		nstest.Run(t, ns, "ip", "addr", "add", "192.0.2.1/32", "dev", "lo")
		wait(t, "moved once the address exists", 40*time.Second, func() bool {
			return serves("192.0.2.1:9199", "/liveness") && closed("127.0.0.1:9199") && felixState().State == "ready"
		})
	})

	t.Run("same port, wider host", func(t *testing.T) {
		felixConfig("node."+nodeName, "{healthPort: 9199, healthHost: 0.0.0.0}")
		wait(t, "health on 0.0.0.0:9199", 10*time.Second, func() bool {
			// Go binds 0.0.0.0 dual-stack, which ss shows as *.
			l := listening()
			return strings.Contains(l, "*:9199") && !strings.Contains(l, "192.0.2.1:9199") &&
				serves("127.0.0.1:9199", "/liveness")
		})
		if st := felixState(); st.State != "ready" {
			t.Errorf("felix %s after the hand-over: %s", st.State, st.Detail)
		}
	})

	t.Run("metrics disabled", func(t *testing.T) {
		felixConfig("default", "{prometheusMetricsEnabled: false, iptablesRefreshInterval: 0s, defaultEndpointToHostAction: Accept}")
		wait(t, "metrics port closed", 10*time.Second, func() bool { return closed("127.0.0.1:9191") })
		if l := listening(); strings.Contains(l, ":9191") || strings.Contains(l, ":9091") {
			t.Errorf("a metrics port is still open:\n%s", l)
		}
		if !serves("127.0.0.1:9199", "/liveness") {
			t.Errorf("health went with metrics")
		}
	})

	t.Run("node configuration deleted", func(t *testing.T) {
		if _, err := client.Delete(ctx, api.KindFelixConfiguration, "", "node."+nodeName, ""); err != nil {
			t.Fatal(err)
		}
		wait(t, "health back on the flag default", 10*time.Second, func() bool {
			return serves(DefaultHealthListen, "/liveness") && !strings.Contains(listening(), ":9199")
		})
	})

	// The back end is a setting the dataplane is built with: the component builds it again, the
	// rules move, and the back end left behind is cleaned once the new one is programmed.
	ownChains := func(bin string) int {
		return strings.Count(nstest.Run(t, ns, bin, "-t", "filter"), "\n:"+calc.ChainWlToHost+" ")
	}
	backendIs := func(b string) func() bool {
		return func() bool {
			st := felixState()
			return st.State == "ready" && st.Details["iptablesBackend"] == b
		}
	}
	for _, step := range []struct{ spec, backend, in, out string }{
		{"Legacy", BackendLegacy, "iptables-legacy-save", "iptables-nft-save"},
		{"NFT", BackendNFT, "iptables-nft-save", "iptables-legacy-save"},
	} {
		t.Run("iptablesBackend "+step.spec, func(t *testing.T) {
			felixConfig("default", "{iptablesRefreshInterval: 0s, defaultEndpointToHostAction: Accept, iptablesBackend: "+step.spec+"}")
			wait(t, "felix ready on "+step.backend, 30*time.Second, backendIs(step.backend))
			wait(t, "rules only in "+step.in, 30*time.Second, func() bool { return ownChains(step.in) == 1 && ownChains(step.out) == 0 })
			if !serves(DefaultHealthListen, "/liveness") {
				t.Errorf("health not served after the restart:\n%s", listening())
			}
		})
	}
	t.Run("ipv6Support", func(t *testing.T) {
		for _, on := range []bool{true, false} {
			felixConfig("default", "{iptablesRefreshInterval: 0s, defaultEndpointToHostAction: Accept, iptablesBackend: NFT, ipv6Support: "+strconv.FormatBool(on)+"}")
			wait(t, "felix ready with ipv6 "+strconv.FormatBool(on), 30*time.Second, func() bool {
				st := felixState()
				return st.State == "ready" && st.Details["ipv6"] == on
			})
			want := 0
			if on {
				want = 1
			}
			wait(t, "ip6tables chains", 30*time.Second, func() bool { return ownChains("ip6tables-nft-save") == want })
		}
	})
}

// TestComponentRestartSettles: an undecodable FelixConfiguration "default" makes the start-up
// read fail while the agent's syncer takes it as absent; with this node's own configuration
// asking for the legacy back end, felix rebuilds once and then stays, instead of restarting for
// ever between the read's view and the syncer's.
func TestComponentRestartSettles(t *testing.T) {
	ns := nstest.New(t, "ipset", "iptables-save", "iptables-restore", "iptables-legacy-save")
	const nodeName = "host-1"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, client := startTestDatastore(t, ctx)
	info, err := api.LookupKind(api.KindFelixConfiguration)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Store().Put(ctx, datastore.Key(info, "", api.DefaultConfigName), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := client.Apply(ctx, decodeOne(t, "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: node."+nodeName+"}\nspec: {iptablesBackend: Legacy}\n")); err != nil {
		t.Fatal(err)
	}
	nsh, nl := nstest.Handle(t, ns)
	comp := NewComponent(ComponentConfig{ApplyInterval: 10 * time.Millisecond, IPv6: IPv6Off})
	comp.kernel = &componentKernel{cmd: cmdrun.InNetns(ns), netlink: nl, ns: &nsh, sysctl: nsFS{ns}}
	var logs syncbuf.Buffer
	board := node.NewStatusBoard(node.Status{})
	env := node.ComponentEnv{Client: client, Node: &api.Node{Metadata: api.ObjectMeta{Name: nodeName}}, Board: board,
		Log: slog.New(slog.NewTextHandler(&logs, nil))}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- comp.Run(runCtx, env) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := board.Snapshot().Components["felix"]
		if st.State == "ready" && st.Details["iptablesBackend"] == BackendLegacy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("felix not ready on legacy: %+v\n%s", st, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // long enough for several rebuilds, were it looping
	stop()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if n := strings.Count(logs.String(), "felix restarting"); n != 1 {
		t.Errorf("%d restarts, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(nstest.Run(t, ns, "iptables-legacy-save", "-t", "filter"), ":"+calc.ChainWlToHost+" ") {
		t.Error("no Terrace chains in the legacy back end")
	}
}
