package cni

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terracenet/terrace/cni/shim"
)

// The same binary tests with the datastore work going through the node agent: its API is served
// in the test's host process (as terrace-node serves it) on a socket the configuration names.

// agentConf is a configuration naming a node socket served for node nodeName.
func (e *hostEnv) agentConf(nodeName, extra string) []byte {
	e.t.Helper()
	sock := serveAgent(e.t, nodeName, e.store, e.ds)
	return e.conf("1.1.0", `,"node_socket":"`+sock+`"`+extra)
}

// backendsLogged counts the "backend=" values in the plugin's log.
func (e *hostEnv) backendsLogged() map[string]int {
	e.t.Helper()
	data, err := os.ReadFile(filepath.Join(e.logDir, "cni.log"))
	if err != nil {
		e.t.Fatalf("read plugin log: %v", err)
	}
	out := map[string]int{}
	for _, f := range strings.Fields(string(data)) {
		if v, ok := strings.CutPrefix(f, "backend="); ok {
			out[v]++
		}
	}
	return out
}

func TestBinaryAgentAddCheckDel(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	stdin := e.agentConf("host-a", `,"ipam":{"assign_ipv6":true}`)
	pod := e.newPod()
	c := call{cmd: "ADD", cid: "agent-1", netns: pod, stdin: stdin}
	res := parseResult(t, e.mustOK(c))
	v4, v6 := resultIPs(t, res)
	if len(v4) != 1 || len(v6) != 1 {
		t.Fatalf("ADD gave %v %v, want one address per family", v4, v6)
	}
	ping(t, v4[0])
	// A repeated ADD answers from the endpoint the agent stored.
	again := parseResult(t, e.mustOK(c))
	if a4, a6 := resultIPs(t, again); a4[0] != v4[0] || a6[0] != v6[0] {
		t.Errorf("repeated ADD gave %v %v, first %v %v", a4, a6, v4, v6)
	}
	conf := strings.TrimSuffix(string(stdin), "}") + `,"prevResult":` + string(e.mustOK(c)) + "}"
	e.mustOK(call{cmd: "CHECK", cid: "agent-1", netns: pod, stdin: []byte(conf)})
	e.mustOK(call{cmd: "DEL", cid: "agent-1", netns: pod, stdin: stdin})
	e.mustOK(call{cmd: "DEL", cid: "agent-1", netns: pod, stdin: stdin})
	e.assertClean()
	if got := e.backendsLogged(); got["etcd"] != 0 || got["agent"] < 5 {
		t.Errorf("backends used: %v, want the agent for every command", got)
	}
}

// TestBinaryAgentFailureAtEachStep: an ADD failing after the agent assigned the address (or
// stored the endpoint) gives both back through the agent.
func TestBinaryAgentFailureAtEachStep(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	stdin := e.agentConf("host-a", `,"ipam":{"assign_ipv6":true}`)
	top := e.t
	for _, step := range []string{"ipam", "veth", "route", "endpoint", "policy"} {
		t.Run(step, func(t *testing.T) {
			e.t = t
			defer func() { e.t = top }()
			pod := e.newPod()
			o := e.exec(call{cmd: "ADD", cid: "afail-" + step, netns: pod, stdin: stdin, env: []string{"TERRACE_CNI_FAIL_AT=" + step}})
			if o.err == nil || !strings.Contains(o.err.Msg, "injected failure") {
				t.Fatalf("ADD = %+v, want the injected failure", o.err)
			}
			e.assertClean()
			if podHasLink(pod, "eth0") {
				t.Error("pod still has eth0")
			}
		})
	}
	if got := e.backendsLogged(); got["etcd"] != 0 || got["agent"] != 5 {
		t.Errorf("backends used: %v, want the agent 5 times", got)
	}
	if log, err := os.ReadFile(filepath.Join(e.logDir, "cni.log")); err != nil || strings.Contains(string(log), "handing the command") {
		t.Errorf("with the agent serving, the plugin handed a command to %s (log read: %v)", shim.FallbackBinary, err)
	}
}

// TestBinaryAgentFallback: an agent serving another node is not used; the plugin hands the command
// to terrace-cni-etcd, which goes to etcd.
func TestBinaryAgentFallback(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	stdin := e.agentConf("host-b", "")
	pod := e.newPod()
	e.mustOK(call{cmd: "ADD", cid: "fallback", netns: pod, stdin: stdin})
	e.mustOK(call{cmd: "DEL", cid: "fallback", netns: pod, stdin: stdin})
	e.assertClean()
	if got := e.backendsLogged(); got["agent"] != 0 || got["etcd"] != 2 {
		t.Errorf("backends used: %v, want etcd twice", got)
	}
}

// TestBinaryAgentWithoutCommands: an agent that serves the datastore calls but runs no commands
// (an older terrace-node) still gets them: the shim hands the command to terrace-cni-etcd, which
// does the kernel work itself and the datastore work through the agent.
func TestBinaryAgentWithoutCommands(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	sock := serveAgentWith(e.t, "host-a", e.store, e.ds, false)
	stdin := e.conf("1.1.0", `,"node_socket":"`+sock+`"`)
	pod := e.newPod()
	res := parseResult(t, e.mustOK(call{cmd: "ADD", cid: "old-agent", netns: pod, stdin: stdin}))
	v4, _ := resultIPs(t, res)
	ping(t, v4[0])
	e.mustOK(call{cmd: "DEL", cid: "old-agent", netns: pod, stdin: stdin})
	e.assertClean()
	if got := e.backendsLogged(); got["agent"] != 2 || got["etcd"] != 0 {
		t.Errorf("backends used: %v, want the agent twice", got)
	}
	data, err := os.ReadFile(filepath.Join(e.logDir, "cni.log"))
	if n := strings.Count(string(data), "handing it to "+shim.FallbackBinary); err != nil || n != 2 {
		t.Errorf("the shim handed over %d commands (log read: %v), want 2", n, err)
	}
}

// TestBinaryAgentIPAMAlone: terrace-ipam, called by another plugin, also has the agent do its
// work, in one process: installed without terrace-cni-etcd, so a hand-over would fail.
func TestBinaryAgentIPAMAlone(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	shimOnly := installAs(t, e.plugin, "terrace-cni")
	link := filepath.Join(filepath.Dir(shimOnly), IPAMType)
	if err := os.Symlink(shimOnly, link); err != nil {
		t.Fatal(err)
	}
	stdin := e.agentConf("host-a", `,"ipam":{"type":"terrace-ipam","assign_ipv6":"true"}`)
	c := call{cmd: "ADD", cid: "ipam-agent", netns: e.newPod(), stdin: stdin, argv0: link}
	res := parseResult(t, e.mustOK(c))
	if v4, v6 := resultIPs(t, res); len(v4) != 1 || len(v6) != 1 || len(res.Interfaces) != 0 {
		t.Fatalf("IPAM ADD gave %v %v and interfaces %v; want one address per family, no interface", v4, v6, res.Interfaces)
	}
	c.cmd = "DEL"
	e.mustOK(c)
	e.assertClean()
}

func TestBinaryAgentConcurrentAdds(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	stdin := e.agentConf("host-a", "")
	const n = 50
	pods := make([]string, n)
	for i := range pods {
		pods[i] = e.newPod()
	}
	results := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i] = e.exec(call{cmd: "ADD", cid: fmt.Sprintf("aconc-%d", i), netns: pods[i], stdin: stdin})
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
			o := e.exec(call{cmd: "DEL", cid: fmt.Sprintf("aconc-%d", i), netns: pods[i], stdin: stdin})
			if o.err != nil {
				t.Errorf("DEL %d: %s", i, o.err.Msg)
			}
		})
	}
	wg.Wait()
	e.assertClean()
	if got := e.backendsLogged(); got["etcd"] != 0 || got["agent"] != 2*n {
		t.Errorf("backends used: %v, want the agent for all %d commands", got, 2*n)
	}
}

// TestBinaryAgentPolicyWait: ADD waits for the status felix writes, read through the agent.
func TestBinaryAgentPolicyWait(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	stdin := e.agentConf("host-a", `,"policy_setup_timeout_seconds":10`)
	pod := e.newPod()
	name := WorkloadEndpointName("host-a", "cni", "apolicy-1", "eth0")
	key := EndpointStatusKey("host-a", "default", name)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wrote time.Time
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if r, err := e.ds.Get(ctx, "WorkloadEndpoint", "default", name); err == nil {
				time.Sleep(300 * time.Millisecond)
				wrote = time.Now()
				st := fmt.Sprintf(`{"programmed":true,"revision":%s}`, r.GetObjectMeta().ResourceVersion)
				if _, err := e.store.Put(ctx, key, []byte(st)); err != nil {
					t.Errorf("write status: %v", err)
				}
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	e.mustOK(call{cmd: "ADD", cid: "apolicy-1", netns: pod, stdin: stdin})
	returned := time.Now()
	<-done
	// wrote is taken just before the status is written: an ADD that waited for it returns later.
	if wrote.IsZero() || returned.Before(wrote) {
		t.Fatal("ADD returned before the status was written")
	}
	e.mustOK(call{cmd: "DEL", cid: "apolicy-1", netns: pod, stdin: stdin})
	e.store.Delete(ctx, key, 0)
	e.assertClean()
	if got := e.backendsLogged(); got["etcd"] != 0 || got["agent"] != 2 {
		t.Errorf("backends used: %v, want the agent twice", got)
	}
}
