package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

func TestBinaryAddCheckDel(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	tests := []struct {
		name, version, ipam string
		n4, n6              int
		// addrGenMode, when set, is the host's net.ipv6.conf.default.addr_gen_mode during the
		// case: with anything but EUI-64 (0) the kernel would not give the host side the
		// gateway's link-local address by itself.
		addrGenMode string
	}{
		{"v4", "1.1.0", `{"type":"terrace-ipam"}`, 1, 0, ""},
		{"v6", "1.0.0", `{"type":"terrace-ipam","assign_ipv4":"false","assign_ipv6":"true"}`, 0, 1, ""},
		{"dual", "0.4.0", `{"type":"terrace-ipam","assign_ipv4":true,"assign_ipv6":true}`, 1, 1, ""},
		{"v6, stable-privacy host", "1.1.0", `{"type":"terrace-ipam","assign_ipv4":"false","assign_ipv6":"true"}`, 0, 1, "2"},
		{"v6, random link-local host", "1.1.0", `{"type":"terrace-ipam","assign_ipv4":"false","assign_ipv6":"true"}`, 0, 1, "3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			if tc.addrGenMode != "" {
				run(t, "sysctl", "-qw", "net.ipv6.conf.default.addr_gen_mode="+tc.addrGenMode)
				t.Cleanup(func() { run(t, "sysctl", "-qw", "net.ipv6.conf.default.addr_gen_mode=0") })
			}
			pod := e.newPod()
			cid := "c-" + strings.NewReplacer(" ", "", ",", "").Replace(tc.name)
			stdin := e.conf(tc.version, `,"ipam":`+tc.ipam)
			c := call{cmd: "ADD", cid: cid, netns: pod, stdin: stdin, args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-" + cid}
			out := e.mustOK(c)
			res := parseResult(t, out)
			if res.CNIVersion != tc.version {
				t.Errorf("result cniVersion %q, want %q", res.CNIVersion, tc.version)
			}
			v4, v6 := resultIPs(t, res)
			if len(v4) != tc.n4 || len(v6) != tc.n6 {
				t.Fatalf("result has %v %v, want %d IPv4 and %d IPv6", v4, v6, tc.n4, tc.n6)
			}
			for _, ip := range v4 {
				if !netip.MustParsePrefix(pool4).Contains(ip) {
					t.Errorf("%s not from %s", ip, pool4)
				}
				ping(t, ip)
			}
			for _, ip := range v6 {
				if !netip.MustParsePrefix(pool6).Contains(ip) {
					t.Errorf("%s not from %s", ip, pool6)
				}
				ping(t, ip)
			}
			// The endpoint is in the datastore with what felix needs.
			name := WorkloadEndpointName("host-a", "k8s", "web-"+cid, "eth0")
			r, err := e.ds.Get(context.Background(), "WorkloadEndpoint", "shop", name)
			if err != nil {
				t.Fatalf("endpoint: %v", err)
			}
			w := r.GetObjectMeta()
			if w.Labels[LabelNamespace] != "shop" || w.Labels[LabelOrchestrator] != "k8s" {
				t.Errorf("endpoint labels %v", w.Labels)
			}

			check := e.conf(tc.version, `,"ipam":`+tc.ipam+`,"prevResult":`+string(out))
			c.cmd, c.stdin = "CHECK", check
			e.mustOK(c)
			if tc.n6 > 0 {
				// CHECK notices the host side losing the pod's IPv6 gateway address.
				hostIf := HostInterfaceName("testnet", cid, "eth0")
				run(t, "ip", "-6", "addr", "del", GatewayIPv6+"/64", "dev", hostIf)
				if o := e.exec(c); o.err == nil || o.err.Code != CodeCheckFailed || !strings.Contains(o.err.Msg, "gateway") {
					t.Errorf("CHECK after the gateway address went = %+v, want code %d naming the gateway", o.err, CodeCheckFailed)
				}
				run(t, "ip", "-6", "addr", "add", GatewayIPv6+"/64", "dev", hostIf, "nodad")
			}
			// CHECK notices the host side's settings changing: without proxy_arp the pod loses
			// its gateway, without strict rp_filter its anti-spoofing.
			hostIf := HostInterfaceName("testnet", cid, "eth0")
			for _, key := range []string{"proxy_arp", "rp_filter"} {
				run(t, "sysctl", "-qw", "net.ipv4.conf."+hostIf+"."+key+"=0")
				if o := e.exec(c); o.err == nil || o.err.Code != CodeCheckFailed || !strings.Contains(o.err.Msg, key+" is 0, want 1") {
					t.Errorf("CHECK after %s=0 = %+v, want code %d naming it", key, o.err, CodeCheckFailed)
				}
				run(t, "sysctl", "-qw", "net.ipv4.conf."+hostIf+"."+key+"=1")
			}
			e.mustOK(c)
			// A chained plugin moving the pod's routes to a table of its own (as sbr does) is
			// allowed; the routes are put back after.
			if tc.n4 > 0 {
				podNS := filepath.Base(pod)
				run(t, "ip", "-n", podNS, "route", "del", "default")
				run(t, "ip", "-n", podNS, "route", "add", "default", "via", GatewayIPv4, "dev", "eth0", "table", "100")
				e.mustOK(c)
				run(t, "ip", "-n", podNS, "route", "del", "default", "table", "100")
				if o := e.exec(c); o.err == nil || o.err.Code != CodeCheckFailed || !strings.Contains(o.err.Msg, "default route") {
					t.Errorf("CHECK without any default route = %+v, want code %d naming it", o.err, CodeCheckFailed)
				}
				run(t, "ip", "-n", podNS, "route", "add", "default", "via", GatewayIPv4, "dev", "eth0")
			}
			// CHECK notices a missing host route.
			run(t, "ip", "route", "del", prefixFor(append(v4, v6...)[0]), "dev", HostInterfaceName("testnet", cid, "eth0"))
			if o := e.exec(c); o.err == nil || o.err.Code != CodeCheckFailed || !strings.Contains(o.err.Msg, "no route") {
				t.Errorf("CHECK after route removal = %+v, want code %d naming the route", o.err, CodeCheckFailed)
			}

			c.cmd, c.stdin = "DEL", stdin
			e.mustOK(c)
			e.assertClean()
			for _, ip := range append(v4, v6...) {
				if echo(ip, 300*time.Millisecond) == nil {
					t.Errorf("%s still answers after DEL", ip)
				}
			}
			if podHasLink(pod, "eth0") {
				t.Error("pod still has eth0 after DEL")
			}
			e.mustOK(c) // DEL twice
			e.assertClean()
		})
	}
}

func prefixFor(ip netip.Addr) string { return netip.PrefixFrom(ip, ip.BitLen()).String() }

func TestBinaryRepeatsAndGoneNamespace(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	pod := e.newPod()
	c := call{cmd: "ADD", cid: "twice", netns: pod, stdin: e.conf("1.1.0", "")}
	first := e.mustOK(c)
	second := e.mustOK(c)
	if string(first) != string(second) {
		t.Errorf("second ADD answered differently:\n%s\n%s", first, second)
	}
	if n := len(e.leftovers()); n != 5 { // wep, handle, address, link, route
		t.Errorf("after two ADDs: %v", e.leftovers())
	}
	// CHECK and DEL after the pod's namespace is gone (its veth goes with it), then DEL with no
	// netns at all: CHECK answers the spec's "unknown container".
	run(t, "ip", "netns", "del", filepath.Base(pod))
	check := call{cmd: "CHECK", cid: "twice", netns: pod, stdin: e.conf("1.1.0", `,"prevResult":`+string(first))}
	if o := e.exec(check); o.err == nil || o.err.Code != 3 {
		t.Errorf("CHECK after the namespace is gone = %+v, want code 3", o.err)
	}
	c.cmd = "DEL"
	e.mustOK(c)
	e.assertClean()
	c.netns = ""
	e.mustOK(c)
}

func TestBinaryFailureAtEachStep(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	for _, step := range []string{"ipam", "veth", "host", "pod", "route", "endpoint", "policy"} {
		t.Run(step, func(t *testing.T) {
			e.t = t
			pod := e.newPod()
			o := e.exec(call{cmd: "ADD", cid: "fail-" + step, netns: pod, stdin: e.conf("1.1.0", `,"ipam":{"assign_ipv6":true}`),
				env: []string{"TERRACE_CNI_FAIL_AT=" + step}})
			if o.err == nil || !strings.Contains(o.err.Msg, "injected failure") {
				t.Fatalf("ADD = %+v, want the injected failure", o.err)
			}
			e.assertClean()
			if podHasLink(pod, "eth0") {
				t.Error("pod still has eth0")
			}
		})
	}
}

func TestBinaryConcurrentAdds(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	const n = 50
	pods := make([]string, n)
	for i := range pods {
		pods[i] = e.newPod()
	}
	results := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i] = e.exec(call{cmd: "ADD", cid: fmt.Sprintf("conc-%d", i), netns: pods[i], stdin: e.conf("1.1.0", "")})
		})
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i, o := range results {
		if o.err != nil {
			t.Fatalf("ADD %d: code %d: %s", i, o.err.Code, o.err.Msg)
		}
		v4, _ := resultIPs(t, parseResult(t, o.stdout))
		if len(v4) != 1 {
			t.Fatalf("ADD %d gave %v", i, v4)
		}
		if j, dup := seen[v4[0]]; dup {
			t.Fatalf("pods %d and %d both got %s", j, i, v4[0])
		}
		seen[v4[0]] = i
	}
	for ip := range seen {
		ping(t, ip)
	}
	for i := range n {
		wg.Go(func() {
			o := e.exec(call{cmd: "DEL", cid: fmt.Sprintf("conc-%d", i), netns: pods[i], stdin: e.conf("1.1.0", "")})
			if o.err != nil {
				t.Errorf("DEL %d: %s", i, o.err.Msg)
			}
		})
	}
	wg.Wait()
	e.assertClean()
}

func TestBinaryBadInput(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	e.addPool("tiny", "198.19.255.255/32", 32)
	tiny := `,"ipam":{"ipv4_pools":["tiny"]}`
	// The one address of the tiny pool goes to a first pod, so the next finds the pool exhausted.
	first := e.newPod()
	e.mustOK(call{cmd: "ADD", cid: "tiny-1", netns: first, stdin: e.conf("1.1.0", tiny)})
	taken := e.newPod()
	run(t, "ip", "-n", filepath.Base(taken), "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer")
	tests := []struct {
		name  string
		c     call
		code  uint
		inMsg string
	}{
		{"invalid json", call{stdin: []byte(`{"cniVersion":"1.1.0",`)}, types.ErrDecodingFailure, "unmarshal"},
		{"missing cniVersion", call{stdin: []byte(`{"name":"testnet","type":"terrace"}`)}, types.ErrIncompatibleCNIVersion, "incompatible"},
		{"missing name", call{stdin: []byte(`{"cniVersion":"1.1.0","type":"terrace"}`)}, types.ErrInvalidNetworkConfig, "name"},
		{"unknown ipam", call{stdin: e.conf("1.1.0", `,"ipam":{"type":"host-local"}`)}, types.ErrInvalidNetworkConfig, "host-local"},
		{"netns missing", call{netns: "/var/run/netns/trctest-none", stdin: e.conf("1.1.0", "")}, types.ErrUnknownContainer, "does not exist"},
		{"ifname taken", call{netns: taken, stdin: e.conf("1.1.0", "")}, CodeInterfaceExists, "already exists"},
		{"pool exhausted", call{stdin: e.conf("1.1.0", tiny)}, CodePoolsExhausted, "exhausted"},
		{"unknown pool", call{stdin: e.conf("1.1.0", `,"ipam":{"ipv4_pools":["nope"]}`)}, types.ErrInvalidNetworkConfig, "nope"},
		{"datastore unreachable", call{stdin: []byte(strings.Replace(string(e.conf("1.1.0", "")), e.srv.Endpoints()[0], "http://127.0.0.1:9", 1))}, types.ErrTryAgainLater, "datastore"},
		{"policy timeout", call{stdin: e.conf("1.1.0", `,"policy_setup_timeout_seconds":1`)}, CodePolicyTimeout, "policy"},
		// The plugin's own namespace is refused before anything is allocated or wired.
		{"own namespace", call{netns: "/proc/self/ns/net", stdin: e.conf("1.1.0", "")}, types.ErrInvalidNetNS, "should not be the same"},
		{"invalid pod namespace", call{args: "K8S_POD_NAMESPACE=Bad_NS;K8S_POD_NAME=x", stdin: e.conf("1.1.0", "")}, types.ErrInvalidEnvironmentVariables, "k8s_pod_namespace"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			c := tc.c
			c.cmd, c.cid = "ADD", "bad-"+strings.ReplaceAll(tc.name, " ", "-")
			if c.netns == "" {
				c.netns = e.newPod()
			}
			before := e.leftovers()
			o := e.exec(c)
			if o.err == nil {
				t.Fatalf("ADD succeeded: %s", o.stdout)
			}
			if o.err.Code != tc.code || !strings.Contains(strings.ToLower(o.err.Msg+o.err.Details), tc.inMsg) {
				t.Fatalf("ADD = code %d %q (%s), want code %d mentioning %q", o.err.Code, o.err.Msg, o.err.Details, tc.code, tc.inMsg)
			}
			if after := e.leftovers(); strings.Join(after, ",") != strings.Join(before, ",") {
				t.Fatalf("state changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
	e.t = t
	e.mustOK(call{cmd: "DEL", cid: "tiny-1", netns: first, stdin: e.conf("1.1.0", tiny)})
	e.assertClean()
}

// TestBinaryPolicyWait plays the node agent: once the endpoint appears it writes the status key
// felix will write, and ADD returns only then.
func TestBinaryPolicyWait(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	pod := e.newPod()
	name := WorkloadEndpointName("host-a", "cni", "policy-1", "eth0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wrote time.Time
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			r, err := e.ds.Get(ctx, "WorkloadEndpoint", "default", name)
			if err == nil {
				time.Sleep(300 * time.Millisecond) // programming policy takes a while
				rv := r.GetObjectMeta().ResourceVersion
				st := fmt.Sprintf(`{"programmed":true,"revision":%s}`, rv)
				wrote = time.Now()
				if _, err := e.store.Put(ctx, EndpointStatusKey("host-a", "default", name), []byte(st)); err != nil {
					t.Errorf("write status: %v", err)
				}
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	e.mustOK(call{cmd: "ADD", cid: "policy-1", netns: pod, stdin: e.conf("1.1.0", `,"policy_setup_timeout_seconds":10`)})
	returned := time.Now()
	<-done
	// wrote is taken just before the status is written: an ADD that waited for it returns later.
	if wrote.IsZero() || returned.Before(wrote) {
		t.Fatal("ADD returned before the status was written")
	}
	e.mustOK(call{cmd: "DEL", cid: "policy-1", netns: pod, stdin: e.conf("1.1.0", "")})
	e.store.Delete(ctx, EndpointStatusKey("host-a", "default", name), 0)
	e.assertClean()
}

func TestBinaryStatusAndGC(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	sock := filepath.Join(t.TempDir(), "node.sock")
	stdin := e.conf("1.1.0", `,"node_socket":"`+sock+`"`)
	o := e.exec(call{cmd: "STATUS", stdin: stdin})
	if o.err == nil || o.err.Code != types.ErrPluginNotAvailable || !strings.Contains(o.err.Msg, "node agent") {
		t.Fatalf("STATUS without node agent = %+v, want code 50", o.err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"nodeName":"host-a"}`)) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()
	e.mustOK(call{cmd: "STATUS", stdin: stdin})
	down := []byte(strings.Replace(string(stdin), e.srv.Endpoints()[0], "http://127.0.0.1:9", 1))
	if o := e.exec(call{cmd: "STATUS", stdin: down}); o.err == nil || o.err.Code != types.ErrPluginNotAvailable || !strings.Contains(o.err.Msg, "datastore") {
		t.Fatalf("STATUS with datastore down = %+v, want code 50", o.err)
	}

	keep, drop := e.newPod(), e.newPod()
	e.mustOK(call{cmd: "ADD", cid: "keep", netns: keep, stdin: stdin})
	e.mustOK(call{cmd: "ADD", cid: "drop", netns: drop, stdin: stdin})
	gc := e.conf("1.1.0", `,"cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]`)
	e.mustOK(call{cmd: "GC", stdin: gc})
	left := strings.Join(e.leftovers(), "\n")
	if strings.Contains(left, "testnet.drop") || strings.Contains(left, HostInterfaceName("testnet", "drop", "eth0")) || podHasLink(drop, "eth0") {
		t.Errorf("GC kept the stale attachment:\n%s", left)
	}
	if !strings.Contains(left, "testnet.keep") || !podHasLink(keep, "eth0") {
		t.Errorf("GC removed the valid attachment:\n%s", left)
	}
	e.mustOK(call{cmd: "DEL", cid: "keep", netns: keep, stdin: stdin})
	e.assertClean()
}

// TestBinaryIPAMAlone runs the binary under the name terrace-ipam, as another plugin delegating
// to it would.
func TestBinaryIPAMAlone(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	link := filepath.Join(t.TempDir(), IPAMType)
	if err := os.Symlink(e.plugin, link); err != nil {
		t.Fatal(err)
	}
	stdin := e.conf("1.1.0", `,"ipam":{"type":"terrace-ipam","assign_ipv6":"true"}`)
	c := call{cmd: "ADD", cid: "ipam-only", netns: e.newPod(), stdin: stdin, argv0: link}
	out := e.mustOK(c)
	var res struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
		Interfaces []any `json:"interfaces"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) != 2 || len(res.Interfaces) != 0 {
		t.Fatalf("IPAM result %s (%v): want two addresses and no interfaces", out, err)
	}
	if again := e.mustOK(c); string(again) != string(out) {
		t.Errorf("repeated IPAM ADD gave %s, first %s", again, out)
	}
	c.cmd, c.stdin = "CHECK", e.conf("1.1.0", `,"ipam":{"type":"terrace-ipam","assign_ipv6":"true"},"prevResult":`+string(out))
	e.mustOK(c)
	c.cmd, c.stdin = "DEL", stdin
	e.mustOK(c)
	e.assertClean()
	if o := e.exec(c); o.err != nil {
		t.Fatalf("second IPAM DEL: %s", o.err.Msg)
	}
}

// TestCNITool drives the plugin with cnitool, a real CNI client, through a conflist.
func TestCNITool(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	dir := t.TempDir()
	tool := filepath.Join(dir, "cnitool")
	if b, err := exec.Command(goBin(), "build", "-o", tool, "github.com/containernetworking/cni/cnitool").CombinedOutput(); err != nil {
		t.Fatalf("build cnitool: %v\n%s", err, b)
	}
	binDir, netDir := filepath.Join(dir, "bin"), filepath.Join(dir, "net.d")
	os.MkdirAll(binDir, 0o755)
	os.MkdirAll(netDir, 0o755)
	for _, name := range []string{PluginType, IPAMType} {
		if err := os.Symlink(e.plugin, filepath.Join(binDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	// The "ips" capability makes the runtime (here libcni in cnitool) pass requested addresses in
	// runtimeConfig.ips.
	conflist := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"toolnet","plugins":[{"type":"terrace","nodename":"host-a",
		"capabilities":{"ips":true},
		"etcd_endpoints":%q,"log_file_path":%q,"ipam":{"type":"terrace-ipam","assign_ipv6":"true"}}]}`,
		e.srv.Endpoints()[0], filepath.Join(e.logDir, "cni.log"))
	if err := os.WriteFile(filepath.Join(netDir, "10-toolnet.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := e.newPod()
	capArgs := ""
	tool1 := func(args ...string) string {
		cmd := exec.Command(tool, args...)
		cmd.Env = append(os.Environ(), "CNI_PATH="+binDir, "NETCONFPATH="+netDir, "CNI_ARGS=K8S_POD_NAMESPACE=tools;K8S_POD_NAME=tool-pod")
		if capArgs != "" {
			cmd.Env = append(cmd.Env, "CAP_ARGS="+capArgs)
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cnitool %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := tool1("add", "toolnet", pod)
	v4, v6 := resultIPs(t, parseResult(t, []byte(out)))
	if len(v4) != 1 || len(v6) != 1 {
		t.Fatalf("cnitool add gave %s", out)
	}
	ping(t, v4[0])
	ping(t, v6[0])
	tool1("check", "toolnet", pod)
	tool1("del", "toolnet", pod)
	e.assertClean()

	// Requested addresses through the runtime's capability arguments.
	want := []netip.Addr{netip.MustParseAddr("198.18.201.5"), netip.MustParseAddr("2001:db8:1000::c9:5")}
	capArgs = `{"ips":["198.18.201.5/24","2001:db8:1000::c9:5/64"]}`
	out = tool1("add", "toolnet", pod)
	v4, v6 = resultIPs(t, parseResult(t, []byte(out)))
	if got := append(v4, v6...); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("cnitool add with requested %v gave %s", want, out)
	}
	ping(t, want[0])
	ping(t, want[1])
	tool1("check", "toolnet", pod)
	tool1("del", "toolnet", pod)
	e.assertClean()
}
