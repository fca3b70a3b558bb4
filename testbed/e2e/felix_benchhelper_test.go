package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/kv"
)

const benchMetricsURL = "http://127.0.0.1:9091/metrics"

// TestFelixBenchHelper is not a test of its own: BenchmarkFelixScale runs it inside host-1's
// namespace (benchPhaseEnv set) for one phase; otherwise it skips.
func TestFelixBenchHelper(t *testing.T) {
	phase := os.Getenv(benchPhaseEnv)
	if phase == "" {
		t.Skip("runs only inside BenchmarkFelixScale")
	}
	ctx := context.Background()
	eps := strings.Split(os.Getenv("TERRACE_ETCD_ENDPOINTS"), ",")
	store, err := kv.Open(ctx, kv.Config{Endpoints: eps}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("open etcd %v: %v", eps, err)
	}
	defer store.Close()
	c := datastore.New(store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	switch phase {
	case "populate":
		benchPopulate(t, c)
	case "initial":
		benchInitial(t)
	case "changes":
		benchPolicyChange(t, c)
		benchLabelChange(t, c)
	case "counters":
		m, err := felixMetrics()
		if err != nil {
			t.Fatalf("read felix metrics: %v", err)
		}
		fmt.Printf("COUNTERS applies=%.0f resyncs=%.0f\n", m[applyCount], m[resyncCount])
	default:
		t.Fatalf("unknown phase %q", phase)
	}
}

func benchResources(t *testing.T) []api.Resource {
	var docs []string
	for i := 0; i < benchEndpoints; i++ {
		big := "no"
		if i < benchEndpoints/2 {
			big = "yes"
		}
		docs = append(docs, fmt.Sprintf(`{"apiVersion":"terrace.dev/v1","kind":"WorkloadEndpoint",
"metadata":{"name":"wep-%d","namespace":%q,"labels":{"app":"a%d","tier":%q,"big":%q}},
"spec":{"orchestrator":"k8s","node":"host-1","pod":"wep-%d","endpoint":"eth0","interfaceName":%q,
"ipNetworks":["%s/32"],"mac":"ee:ee:ee:ee:ee:ee"}}`, i, benchNamespace, i%50, benchTiers[i%3], big, i, benchIfName(i), benchAddr(i)))
	}
	nets := make([]string, benchBigNets)
	for n := range nets {
		nets[n] = fmt.Sprintf("%q", addN(benchAddr(0), 32*256+n).String()+"/32")
	}
	docs = append(docs, fmt.Sprintf(`{"apiVersion":"terrace.dev/v1","kind":"GlobalNetworkSet",
"metadata":{"name":"big","labels":{"big":"yes"}},"spec":{"nets":[%s]}}`, strings.Join(nets, ",")))
	for k := 0; k < benchPolicies; k++ {
		var rules []string
		for j := 0; j < benchRules; j++ {
			switch j % 4 {
			case 0:
				rules = append(rules, fmt.Sprintf(`{"action":"Allow","protocol":"TCP","source":{"selector":"app == 'a%d' && tier == '%s'"},"destination":{"ports":[%d]}}`,
					(k+j)%50, benchTiers[j%3], 1000+(k*benchRules+j)%30000))
			case 1:
				rules = append(rules, fmt.Sprintf(`{"action":"Allow","protocol":"UDP","source":{"nets":["198.19.%d.%d/32"]},"destination":{"ports":["2000:2100"]}}`, 64+k%64, j))
			case 2:
				rules = append(rules, `{"action":"Deny","protocol":"ICMP","icmp":{"type":8},"source":{"selector":"tier == 'db'"}}`)
			case 3:
				rules = append(rules, fmt.Sprintf(`{"action":"Allow","protocol":"TCP","source":{"selector":"big == 'yes'"},"destination":{"ports":[%d]}}`, 3000+j))
			}
		}
		docs = append(docs, fmt.Sprintf(`{"apiVersion":"terrace.dev/v1","kind":"GlobalNetworkPolicy",
"metadata":{"name":"bench-%d"},"spec":{"order":%d,"selector":"app == 'a%d'","types":["Ingress"],"ingress":[%s]}}`,
			k, k, k%50, strings.Join(rules, ",")))
	}
	// The iperf pods (app a0) pass a0's ten policies without a match, then this allows them.
	docs = append(docs, `{"apiVersion":"terrace.dev/v1","kind":"GlobalNetworkPolicy",
"metadata":{"name":"bench-iperf"},"spec":{"order":10000,"selector":"role == 'iperf'","types":["Ingress"],
"ingress":[{"action":"Allow","protocol":"TCP","source":{"selector":"role == 'iperf'"},"destination":{"ports":[5201]}}]}}`)
	var out []api.Resource
	parsed, err := api.Decode([]byte("[" + strings.Join(docs, ",") + "]"))
	if err != nil {
		t.Fatalf("decode bench resources: %v", err)
	}
	for _, d := range parsed {
		if d.Err != nil {
			t.Fatalf("bench resource %d: %v", d.Index, d.Err)
		}
		out = append(out, d.Resource)
	}
	return out
}

func benchPopulate(t *testing.T, c *datastore.Client) {
	rs := benchResources(t)
	start := time.Now()
	work := make(chan api.Resource)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				if _, _, err := c.Apply(context.Background(), r); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for _, r := range rs {
		work <- r
	}
	close(work)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("write bench resources: %v", err)
	}
	t.Logf("wrote %d resources in %s", len(rs), time.Since(start).Round(time.Millisecond))
}

var metricLine = regexp.MustCompile(`^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$`)

// felixMetrics reads felix's Prometheus metrics: name{labels} => value.
func felixMetrics() (map[string]float64, error) {
	resp, err := http.Get(benchMetricsURL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if g := metricLine.FindStringSubmatch(sc.Text()); g != nil {
			v, _ := strconv.ParseFloat(g[3], 64)
			m[g[1]+g[2]] = v
		}
	}
	return m, sc.Err()
}

const (
	applyCount  = `terrace_felix_apply_duration_seconds_count{resync="false"}`
	resyncCount = `terrace_felix_apply_duration_seconds_count{resync="true"}`
)

// iptablesSave reads host-1's filter table through the back end felix chose (the first one
// holding trc-FORWARD).
func iptablesSave() string {
	for _, tool := range []string{"iptables-save", "iptables-nft-save", "iptables-legacy-save"} {
		out, err := exec.Command(tool, "-t", "filter").Output()
		if err == nil && strings.Contains(string(out), ":trc-FORWARD") {
			return string(out)
		}
	}
	return ""
}

func benchInitial(t *testing.T) {
	ns, err := strconv.ParseInt(os.Getenv(benchT0Env), 10, 64)
	if err != nil {
		t.Fatalf("bad %s: %v", benchT0Env, err)
	}
	t0 := time.Unix(0, ns)
	deadline := time.Now().Add(2 * time.Minute)
	var m map[string]float64
	for {
		m, err = felixMetrics()
		if err == nil && m[applyCount] >= 1 && m["terrace_felix_local_endpoints"] >= benchEndpoints &&
			m["terrace_felix_ipset_members"] >= benchEndpoints+benchBigNets {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("felix did not program %d endpoints within 2 minutes: %v %v", benchEndpoints, err, m)
		}
		// Gentle: the poll shares two cores with the apply it measures.
		time.Sleep(10 * time.Millisecond)
	}
	programmed := time.Now()
	took := programmed.Sub(t0)
	save := iptablesSave()
	chains, rules := strings.Count(save, "\n:trc-tw-"), strings.Count(save, "\n-A trc-pi-")
	if chains < benchEndpoints || rules < benchPolicies*benchRules*9/10 {
		t.Fatalf("metrics say programmed but the kernel holds %d trc-tw chains and %d policy rules", chains, rules)
	}
	first := m[`terrace_felix_apply_duration_seconds_sum{resync="false"}`] / m[applyCount]
	fmt.Printf("PROGRAMMED %d\n", programmed.UnixNano())
	fmt.Printf("BENCH felix-initial-from-node-start-1000ep-500pol time=%dms anchor=2000ms ratio=%.2f\n", took.Milliseconds(), took.Seconds()/2)
	fmt.Printf("BENCH felix-initial-apply-1000ep-500pol time=%dms\n", int(first*1000))
	t.Logf("kernel: %d trc-tw chains, %d policy rules, %.0f ipset members, %.0f applies", chains, rules, m["terrace_felix_ipset_members"], m[applyCount])
}

// waitApplied polls felix's apply counter past before and returns when it first moved in an apply
// after which check finds the change in the kernel; the (slow) check is not part of the time.
func waitApplied(t *testing.T, before float64, check func() bool) time.Time {
	deadline := time.Now().Add(10 * time.Second)
	seen := before
	for time.Now().Before(deadline) {
		m, err := felixMetrics()
		if err == nil && m[applyCount] > seen {
			at := time.Now()
			seen = m[applyCount]
			if check() {
				return at
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("change not programmed within 10s")
	return time.Time{}
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func benchPolicyChange(t *testing.T, c *datastore.Client) {
	ctx := context.Background()
	const n = 50
	var lat []time.Duration
	for i := 0; i < n; i++ {
		r, err := c.Get(ctx, api.KindGlobalNetworkPolicy, "", "bench-0")
		if err != nil {
			t.Fatal(err)
		}
		p := r.(*api.GlobalNetworkPolicy)
		port := 41000 + i
		p.Spec.Ingress[0].Destination.Ports = []api.Port{mustPort(t, port)}
		m, err := felixMetrics()
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := c.Update(ctx, p); err != nil {
			t.Fatal(err)
		}
		// The apply count says a dataplane apply finished; the kernel read confirms it held the change.
		at := waitApplied(t, m[applyCount], func() bool { return strings.Contains(iptablesSave(), "--dport "+strconv.Itoa(port)) })
		lat = append(lat, at.Sub(start))
		time.Sleep(20 * time.Millisecond)
	}
	p50, p99 := percentile(lat, 0.5), percentile(lat, 0.99)
	fmt.Printf("BENCH felix-policy-change-1000ep-500pol p50=%.1fms\n", ms(p50))
	fmt.Printf("BENCH felix-policy-change-1000ep-500pol p99=%.1fms anchor=100ms ratio=%.2f\n", ms(p99), ms(p99)/100)
}

func mustPort(t *testing.T, port int) api.Port {
	var p api.Port
	if err := json.Unmarshal([]byte(strconv.Itoa(port)), &p); err != nil {
		t.Fatalf("port %d: %v", port, err)
	}
	return p
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// bigSet finds the ipset of 10,000 or more members (the "big == 'yes'" selector's).
func bigSet(t *testing.T) string {
	out, err := exec.Command("ipset", "list", "-t").Output()
	if err != nil {
		t.Fatalf("ipset list: %v", err)
	}
	name := ""
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "Name: "); ok {
			name = v
		}
		if v, ok := strings.CutPrefix(l, "Number of entries: "); ok {
			if n, _ := strconv.Atoi(v); n >= benchEndpoints/2+benchBigNets && strings.HasPrefix(name, "trc") {
				return name
			}
		}
	}
	t.Fatalf("no trc ipset with %d members:\n%s", benchEndpoints/2+benchBigNets, out)
	return ""
}

func benchLabelChange(t *testing.T, c *datastore.Client) {
	ctx := context.Background()
	set := bigSet(t)
	const idx = benchEndpoints - 1 // starts with big=no
	addr := benchAddr(idx).String()
	var lat []time.Duration
	for i := 0; i < 20; i++ {
		r, err := c.Get(ctx, api.KindWorkloadEndpoint, benchNamespace, fmt.Sprintf("wep-%d", idx))
		if err != nil {
			t.Fatal(err)
		}
		w := r.(*api.WorkloadEndpoint)
		in := w.Metadata.Labels["big"] != "yes"
		w.Metadata.Labels["big"] = map[bool]string{true: "yes", false: "no"}[in]
		start := time.Now()
		if _, err := c.Update(ctx, w); err != nil {
			t.Fatal(err)
		}
		deadline := start.Add(10 * time.Second)
		for {
			// ipset test exits 0 when the address is a member.
			if (exec.Command("ipset", "test", set, addr).Run() == nil) == in {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("label change %d: %s member=%t not reached in 10s", i, addr, in)
			}
		}
		lat = append(lat, time.Since(start))
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Printf("BENCH felix-label-change-10k-ipset p50=%.1fms\n", ms(percentile(lat, 0.5)))
	fmt.Printf("BENCH felix-label-change-10k-ipset max=%.1fms anchor=50ms ratio=%.2f\n", ms(slices.Max(lat)), ms(slices.Max(lat))/50)
}
