package cni

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/embedded"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/ipam"
	"github.com/terracenet/terrace/node"

	"github.com/terracenet/terrace/cni/shim"
	"github.com/terracenet/terrace/node/nodeapi"
)

// TestShimSendsEveryConfigVariable: the agent resolves the configuration with the plugin's
// TERRACE_* variables, so the shim must send every one the configuration reads.
func TestShimSendsEveryConfigVariable(t *testing.T) {
	read := []string{EnvEtcdEndpoints, EnvEtcdCA, EnvEtcdCert, EnvEtcdKey, EnvNodeName, EnvNodeSocket, EnvLogLevel, EnvLogFile}
	for _, k := range read {
		if !slices.Contains(shim.TerraceEnv, k) {
			t.Errorf("the configuration reads %s but the shim does not send it", k)
		}
	}
}

// TestCommandServerRefuses: what the agent does not start comes back as a refusal with the code
// the plugin acts on, and a configuration that does not parse as the CNI error the plugin prints.
func TestCommandServerRefuses(t *testing.T) {
	dp := newFakeDataplane()
	s := &CommandServer{Node: "host-a", Dataplane: dp}
	conf := []byte(`{"cniVersion":"1.1.0","name":"net1","type":"terrace","nodename":"host-a"}`)
	var own unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &own); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		req      nodeapi.CNIRequest
		wantCode string // a refusal's API code
		wantCNI  uint   // or the CNI error code in the answer
	}{
		{"GC is not run here", nodeapi.CNIRequest{Command: "GC", StdinData: conf}, nodeapi.CodeInvalid, 0},
		{"another plugin", nodeapi.CNIRequest{Plugin: "bridge", Command: "ADD", StdinData: conf}, nodeapi.CodeInvalid, 0},
		{"no command", nodeapi.CNIRequest{StdinData: conf}, nodeapi.CodeInvalid, 0},
		{"failure point without failure points", nodeapi.CNIRequest{Command: "ADD", ContainerID: "c1", IfName: "eth0", Path: "/opt/cni/bin", Netns: "/var/run/netns/p", StdinData: conf, FailAt: "veth"}, nodeapi.CodeInvalid, 0},
		{"another node's network", nodeapi.CNIRequest{Command: "ADD", ContainerID: "c1", IfName: "eth0", Path: "/opt/cni/bin", Netns: "/var/run/netns/p", StdinData: []byte(`{"cniVersion":"1.1.0","name":"net1","type":"terrace","nodename":"host-b"}`)}, nodeapi.CodeWrongNode, 0},
		{"node from the plugin's environment", nodeapi.CNIRequest{Command: "DEL", ContainerID: "c1", IfName: "eth0", Path: "/opt/cni/bin", Env: map[string]string{EnvNodeName: "host-b"}, StdinData: []byte(`{"cniVersion":"1.1.0","name":"net1","type":"terrace"}`)}, nodeapi.CodeWrongNode, 0},
		{"namespace the plugin did not see", nodeapi.CNIRequest{Command: "ADD", ContainerID: "c1", IfName: "eth0", Path: "/opt/cni/bin", Netns: "/nonexistent/netns", StdinData: conf}, nodeapi.CodeNetnsUnseen, 0},
		{"namespace the agent cannot see", nodeapi.CNIRequest{Command: "CHECK", ContainerID: "c1", IfName: "eth0", Path: "/opt/cni/bin", Netns: "/nonexistent/netns", NetnsDev: 1, NetnsIno: 2, StdinData: conf}, nodeapi.CodeNetnsUnseen, 0},
		{"path leading the agent to another namespace", nodeapi.CNIRequest{Command: "ADD", ContainerID: "c1", IfName: "eth0", Path: "/opt/cni/bin", Netns: "/proc/self/ns/net", NetnsDev: 1, NetnsIno: 1, StdinData: conf}, nodeapi.CodeNetnsUnseen, 0},
		{"configuration not JSON", nodeapi.CNIRequest{Command: "ADD", ContainerID: "c1", IfName: "eth0", Path: "/opt/cni/bin", Netns: "/var/run/netns/p", StdinData: []byte(`{`)}, "", types.ErrDecodingFailure},
		{"no CNI_PATH, as skel says", nodeapi.CNIRequest{Command: "DEL", ContainerID: "c1", IfName: "eth0", StdinData: conf}, "", types.ErrInvalidEnvironmentVariables},
		{"bad container ID, as skel says", nodeapi.CNIRequest{Command: "DEL", ContainerID: "-c1", IfName: "eth0", Path: "/opt/cni/bin", StdinData: conf}, "", types.ErrInvalidEnvironmentVariables},
		{"unsupported version, as skel says", nodeapi.CNIRequest{Command: "DEL", ContainerID: "c1", IfName: "eth0", Path: "/opt/cni/bin", StdinData: []byte(`{"cniVersion":"0.3.1","name":"net1","type":"terrace","nodename":"host-a"}`)}, "", types.ErrIncompatibleCNIVersion},
		{"the agent's own namespace", nodeapi.CNIRequest{Command: "ADD", ContainerID: "c1", IfName: "eth0", Path: "/opt/cni/bin", Netns: "/proc/self/ns/net", NetnsDev: own.Dev, NetnsIno: own.Ino, StdinData: conf}, "", types.ErrInvalidNetNS},
		{"configuration without a name", nodeapi.CNIRequest{Command: "ADD", ContainerID: "c1", IfName: "eth0", Path: "/opt/cni/bin", Netns: "/var/run/netns/p", StdinData: []byte(`{"cniVersion":"1.1.0","nodename":"host-a"}`)}, "", types.ErrInvalidNetworkConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := s.Run(context.Background(), tc.req)
			if tc.wantCode != "" {
				var ref *nodeapi.Refusal
				if !errors.As(err, &ref) || ref.Code != tc.wantCode || ref.Message == "" {
					t.Fatalf("Run = %+v, %v; want a refusal with code %s", resp, err, tc.wantCode)
				}
				return
			}
			if err != nil || resp.Error == nil || resp.Error.Code != tc.wantCNI || resp.Error.Msg == "" {
				t.Fatalf("Run = %+v, %v; want CNI error %d", resp, err, tc.wantCNI)
			}
		})
	}
	if len(dp.links) != 0 || len(dp.removed) != 0 {
		t.Errorf("refused commands touched the dataplane: links %v, removed %v", dp.links, dp.removed)
	}
}

// TestCommandServerNodeIsItsOwn: a configuration naming no node means the agent's node, whatever
// host name the plugin sends (a node given --node-name is not named after its host; refusing
// sent the plugin to etcd, which then wrote the pod under a node that does not exist).
func TestCommandServerNodeIsItsOwn(t *testing.T) {
	e := newCommandEnv(t, newFakeDataplane(testNS))
	stdin := []byte(`{"cniVersion":"1.1.0","name":"net1","type":"terrace","log_file_path":"` + e.logFile + `"}`)
	resp, err := e.s.Run(e.ctx, nodeapi.CNIRequest{Command: "ADD", ContainerID: "c1", Netns: testNS, IfName: "eth0", Path: "/opt/cni/bin",
		Args: "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web", StdinData: stdin, Hostname: "HOST-B", PluginPid: 4242, NetnsDev: 1, NetnsIno: 2})
	if err != nil || resp.Error != nil {
		t.Fatalf("ADD with the plugin's host name host-b: %+v, %v", resp.Error, err)
	}
	rs, err := e.ds.List(e.ctx, "WorkloadEndpoint", "")
	if err != nil || len(rs) != 1 || rs[0].(*api.WorkloadEndpoint).Spec.Node != "host-a" {
		t.Fatalf("endpoints %v (%v), want one of node host-a", rs, err)
	}
}

// commandEnv is an agent's command runner for node host-a over a real etcd with one pool, its
// datastore calls going to the agent's API in memory, and a fake kernel.
type commandEnv struct {
	t       *testing.T
	ctx     context.Context
	st      *kv.Store
	ds      *datastore.Client
	dp      Dataplane
	s       *CommandServer
	stdin   []byte
	logFile string
}

func newCommandEnv(t *testing.T, dp Dataplane) *commandEnv {
	st, ds := testStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	pool := &api.IPPool{TypeMeta: api.TypeMeta{Kind: "IPPool", APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: "p4"}, Spec: api.IPPoolSpec{CIDR: "198.18.0.0/26", BlockSize: 28}}
	if _, err := ds.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	a := node.NewDatastoreAPI("host-a", embedded.TestLogger())
	a.SetDatastore(st, ds)
	logFile := filepath.Join(t.TempDir(), "cni.log")
	return &commandEnv{t: t, ctx: ctx, st: st, ds: ds, dp: dp, logFile: logFile,
		s: &CommandServer{Node: "host-a", Dataplane: dp, Datastore: a.Handler(http.NotFoundHandler()), FailPoints: true,
			openNetns: func(path string) (netnsHandle, error) {
				return netnsHandle{path: path, dev: 1, ino: 2, close: func() {}}, nil
			}},
		stdin: []byte(`{"cniVersion":"1.1.0","name":"net1","type":"terrace","nodename":"host-a","log_file_path":"` + logFile + `"}`)}
}

func (e *commandEnv) run(cmd, cid, failAt string, stdin []byte) nodeapi.CNIResponse {
	e.t.Helper()
	resp, err := e.s.Run(e.ctx, nodeapi.CNIRequest{Command: cmd, ContainerID: cid, Netns: testNS, IfName: "eth0", Path: "/opt/cni/bin",
		Args: "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-" + cid, StdinData: stdin, FailAt: failAt, PluginPid: 4242, NetnsDev: 1, NetnsIno: 2})
	if err != nil {
		e.t.Errorf("%s %s refused: %v", cmd, cid, err)
	}
	return resp
}

func (e *commandEnv) endpoints() int {
	e.t.Helper()
	rs, err := e.ds.List(e.ctx, "WorkloadEndpoint", "")
	if err != nil {
		e.t.Fatal(err)
	}
	return len(rs)
}

// allocated lists every address IPAM holds.
func (e *commandEnv) allocated() []netip.Addr {
	e.t.Helper()
	blocks, _, err := e.st.List(e.ctx, ipam.BlockPrefix)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []netip.Addr
	for _, b := range blocks {
		blk, err := ipam.DecodeBlock(b.Value)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, a := range blk.Allocated() {
			out = append(out, a.IP)
		}
	}
	return out
}

// TestCommandServerRunsCommands: ADD, CHECK and DEL run by the agent against a real etcd, with the
// datastore calls going to the agent's own API in memory; a failure at a step undoes the ADD.
func TestCommandServerRunsCommands(t *testing.T) {
	dp := newFakeDataplane(testNS)
	e := newCommandEnv(t, dp)
	resp := e.run("ADD", "c1", "", e.stdin)
	if resp.Error != nil {
		t.Fatalf("ADD: %+v", resp.Error)
	}
	res, err := current.NewResultFromResult(mustResult(t, resp.Result))
	if err != nil || len(res.IPs) != 1 || !netip.MustParsePrefix("198.18.0.0/26").Contains(netip.MustParseAddr(res.IPs[0].Address.IP.String())) {
		t.Fatalf("ADD result %s (%v): want one address of the pool", resp.Result, err)
	}
	if n := e.endpoints(); n != 1 {
		t.Fatalf("%d workload endpoints after ADD, want 1", n)
	}
	check := []byte(strings.TrimSuffix(string(e.stdin), "}") + `,"prevResult":` + string(resp.Result) + "}")
	if resp := e.run("CHECK", "c1", "", check); resp.Error != nil {
		t.Fatalf("CHECK: %+v", resp.Error)
	}
	for _, cid := range []string{"c1", "c1"} {
		if resp := e.run("DEL", cid, "", e.stdin); resp.Error != nil {
			t.Fatalf("DEL: %+v", resp.Error)
		}
	}
	if resp := e.run("ADD", "c2", "endpoint", e.stdin); resp.Error == nil || !strings.Contains(resp.Error.Msg, "injected failure") {
		t.Fatalf("ADD failing at the endpoint step: %+v, want the injected failure", resp.Error)
	}
	if n, held := e.endpoints(), e.allocated(); n != 0 || len(dp.links) != 0 || len(held) != 0 {
		t.Fatalf("after DEL and a failed ADD: %d endpoints, links %v, addresses %v; want nothing", n, dp.links, held)
	}
	data, err := os.ReadFile(e.logFile)
	if err != nil || strings.Count(string(data), "backend=agent") < 4 || strings.Contains(string(data), "startup=") ||
		!strings.Contains(string(data), "pid=4242 agentPid=") {
		t.Errorf("the agent's log of the commands (%v):\n%s\nwant backend=agent on each, the plugin's pid and no process start-up", err, data)
	}
}

// TestCommandServerRunsIPAM: terrace-ipam's commands, run by the agent, assign and release
// addresses only: no interface, no endpoint, and no namespace to check.
func TestCommandServerRunsIPAM(t *testing.T) {
	dp := newFakeDataplane()
	e := newCommandEnv(t, dp)
	run := func(cmd string) nodeapi.CNIResponse {
		t.Helper()
		resp, err := e.s.Run(e.ctx, nodeapi.CNIRequest{Plugin: IPAMType, Command: cmd, ContainerID: "c1", Netns: "/not/checked", IfName: "eth0", Path: "/opt/cni/bin", StdinData: e.stdin})
		if err != nil || resp.Error != nil {
			t.Fatalf("IPAM %s: %v %+v", cmd, err, resp.Error)
		}
		return resp
	}
	res, err := current.NewResultFromResult(mustResult(t, run("ADD").Result))
	if err != nil || len(res.IPs) != 1 || len(res.Interfaces) != 0 {
		t.Fatalf("IPAM ADD result %+v (%v): want one address and no interface", res, err)
	}
	if held := e.allocated(); len(held) != 1 || e.endpoints() != 0 || len(dp.links) != 0 {
		t.Fatalf("after IPAM ADD: addresses %v, %d endpoints, links %v; want the address alone", held, e.endpoints(), dp.links)
	}
	run("DEL")
	if held := e.allocated(); len(held) != 0 {
		t.Fatalf("after IPAM DEL: addresses %v", held)
	}
}

// gatedDataplane holds Setup until released, and can panic in it.
type gatedDataplane struct {
	*fakeDataplane
	entered chan string // host interface, when Setup starts
	release chan struct{}
	panics  bool
	removes atomic.Int32
}

func (d *gatedDataplane) Setup(w Wiring, addresses func() (v4, v6 []netip.Addr, err error), fail func(string) error) error {
	if d.panics {
		panic("wiring bug")
	}
	d.entered <- w.HostIf
	<-d.release
	return d.fakeDataplane.Setup(w, addresses, fail)
}

func (d *gatedDataplane) Remove(hostIf string) error {
	d.removes.Add(1)
	return d.fakeDataplane.Remove(hostIf)
}

// TestCommandServerSerialisesAnAttachment: the agent finishes an ADD whose plugin gave up waiting,
// so the runtime's DEL for the same container can arrive while the ADD still wires; the DEL must
// wait and then remove everything, while commands for other containers go on.
func TestCommandServerSerialisesAnAttachment(t *testing.T) {
	dp := &gatedDataplane{fakeDataplane: newFakeDataplane(testNS, "/var/run/netns/other"), entered: make(chan string, 1), release: make(chan struct{})}
	e := newCommandEnv(t, dp)
	added := make(chan nodeapi.CNIResponse, 1)
	go func() { added <- e.run("ADD", "slow", "", e.stdin) }()
	<-dp.entered
	deleted := make(chan nodeapi.CNIResponse, 1)
	go func() { deleted <- e.run("DEL", "slow", "", e.stdin) }()
	// Another container's DEL is not held up by this one's ADD.
	other, err := e.s.Run(e.ctx, nodeapi.CNIRequest{Command: "DEL", ContainerID: "other", Netns: "/var/run/netns/other", IfName: "eth0", Path: "/opt/cni/bin", StdinData: e.stdin})
	if err != nil || other.Error != nil {
		t.Fatalf("DEL of another container: %+v, %v", other.Error, err)
	}
	select {
	case r := <-deleted:
		t.Fatalf("DEL ran while its ADD was still wiring: %+v", r.Error)
	case <-time.After(200 * time.Millisecond):
	}
	close(dp.release)
	if r := <-added; r.Error != nil {
		t.Fatalf("ADD: %+v", r.Error)
	}
	if r := <-deleted; r.Error != nil {
		t.Fatalf("DEL: %+v", r.Error)
	}
	if n, held := e.endpoints(), e.allocated(); n != 0 || len(dp.links) != 0 || len(held) != 0 {
		t.Fatalf("after ADD then DEL: %d endpoints, links %v, addresses %v; want nothing", n, dp.links, held)
	}
}

// TestCommandServerSurvivesPanic: a bug in one command fails that command with a CNI error and
// leaves nothing behind; the agent goes on.
func TestCommandServerSurvivesPanic(t *testing.T) {
	dp := &gatedDataplane{fakeDataplane: newFakeDataplane(testNS), panics: true}
	e := newCommandEnv(t, dp)
	resp := e.run("ADD", "c1", "", e.stdin)
	if resp.Error == nil || resp.Error.Code != types.ErrInternal || !strings.Contains(resp.Error.Msg, "panic: wiring bug") {
		t.Fatalf("ADD with a panicking dataplane: %+v, want an internal CNI error naming the panic", resp.Error)
	}
	// The panic skipped the ADD's undo: the runtime's DEL (which follows a failed ADD) cleans up.
	if resp := e.run("DEL", "c1", "", e.stdin); resp.Error != nil {
		t.Fatalf("DEL after the panic: %+v", resp.Error)
	}
	if n, held := e.endpoints(), e.allocated(); n != 0 || len(held) != 0 {
		t.Fatalf("after the DEL: %d endpoints, addresses %v; want nothing", n, held)
	}
}

func mustResult(t *testing.T, data []byte) types.Result {
	t.Helper()
	r, err := current.NewResult(data)
	if err != nil {
		t.Fatalf("parse result %s: %v", data, err)
	}
	return r
}

// TestCommandServerEntersTheCheckedNamespace: the agent enters the pod's namespace through the
// descriptor it checked, not the runtime's path again (which could have come to lead elsewhere),
// keeps it open for the whole command, and still reports the runtime's path.
func TestCommandServerEntersTheCheckedNamespace(t *testing.T) {
	const handle = "/proc/self/fd/99"
	dp := newFakeDataplane(handle) // the runtime's path (testNS) leads nowhere for the kernel
	e := newCommandEnv(t, dp)
	var open, closed atomic.Int32
	e.s.openNetns = func(path string) (netnsHandle, error) {
		if path != testNS {
			t.Errorf("opened %s, want the runtime's path %s", path, testNS)
		}
		open.Add(1)
		dp.mu.Lock()
		dp.netns[handle] = true
		dp.mu.Unlock()
		// Closed, the handle leads nowhere: a use after close fails the command.
		return netnsHandle{path: handle, dev: 1, ino: 2, close: func() {
			closed.Add(1)
			dp.mu.Lock()
			delete(dp.netns, handle)
			dp.mu.Unlock()
		}}, nil
	}
	resp := e.run("ADD", "c1", "", e.stdin)
	if resp.Error != nil {
		t.Fatalf("ADD: %+v", resp.Error)
	}
	res, err := current.NewResultFromResult(mustResult(t, resp.Result))
	if err != nil || len(res.Interfaces) == 0 || res.Interfaces[len(res.Interfaces)-1].Sandbox != testNS {
		t.Fatalf("ADD result %s (%v): want the pod interface's sandbox to be the runtime's path %s", resp.Result, err, testNS)
	}
	if w, ok := dp.links[res.Interfaces[0].Name]; !ok || w.NetNS != handle {
		t.Fatalf("wired %+v, want through %s", dp.links, handle)
	}
	check := []byte(strings.TrimSuffix(string(e.stdin), "}") + `,"prevResult":` + string(resp.Result) + "}")
	if resp := e.run("CHECK", "c1", "", check); resp.Error != nil {
		t.Fatalf("CHECK through the handle: %+v", resp.Error)
	}
	if resp := e.run("DEL", "c1", "", e.stdin); resp.Error != nil {
		t.Fatalf("DEL: %+v", resp.Error)
	}
	// A failure in the kernel steps names the runtime's path, not the agent's descriptor.
	if resp := e.run("ADD", "c2", "pod", e.stdin); resp.Error == nil || !strings.Contains(resp.Error.Msg, "pod step in "+testNS) || strings.Contains(resp.Error.Msg, handle) {
		t.Errorf("failed ADD: %+v, want a message naming %s and not %s", resp.Error, testNS, handle)
	}
	if open.Load() < 3 || closed.Load() != open.Load() {
		t.Errorf("namespace opened %d times and closed %d, want every opening closed", open.Load(), closed.Load())
	}
}

// TestCommandServerOwnNamespace: as skel, the agent fails a command whose CNI_NETNS is the
// plugin's own namespace (here: the agent's) unless CNI_NETNS_OVERRIDE allows it; an ADD is
// refused before anything is allocated or wired, a DEL runs and then fails.
func TestCommandServerOwnNamespace(t *testing.T) {
	dp := newFakeDataplane(testNS)
	e := newCommandEnv(t, dp)
	e.s.ownNetns = func() (uint64, uint64, error) { return 1, 2, nil } // what openNetns reports for testNS
	call := func(plugin, cmd, cid, override string) nodeapi.CNIResponse {
		t.Helper()
		resp, err := e.s.Run(e.ctx, nodeapi.CNIRequest{Plugin: plugin, Command: cmd, ContainerID: cid, Netns: testNS, IfName: "eth0", Path: "/opt/cni/bin",
			StdinData: e.stdin, NetnsDev: 1, NetnsIno: 2, NetnsOverride: override})
		if err != nil {
			t.Fatalf("%s %s refused: %v", cmd, cid, err)
		}
		return resp
	}
	for _, plugin := range []string{"", IPAMType} {
		if resp := call(plugin, "ADD", "c1", ""); resp.Error == nil || resp.Error.Code != types.ErrInvalidNetNS {
			t.Fatalf("%q ADD into the agent's own namespace: %+v, want CNI error %d", plugin, resp.Error, types.ErrInvalidNetNS)
		}
		if n, held := e.endpoints(), e.allocated(); n != 0 || len(held) != 0 || len(dp.links) != 0 {
			t.Fatalf("refused ADD left %d endpoints, addresses %v, links %v", n, held, dp.links)
		}
	}
	if resp := call("", "ADD", "c2", "TRUE"); resp.Error != nil {
		t.Fatalf("ADD with CNI_NETNS_OVERRIDE: %+v", resp.Error)
	}
	if resp := call("", "DEL", "c2", ""); resp.Error == nil || resp.Error.Code != types.ErrInvalidNetNS {
		t.Fatalf("DEL in the agent's own namespace: %+v, want CNI error %d after it ran", resp.Error, types.ErrInvalidNetNS)
	}
	if n, held := e.endpoints(), e.allocated(); n != 0 || len(held) != 0 || len(dp.links) != 0 {
		t.Fatalf("the DEL did not run: %d endpoints, addresses %v, links %v", n, held, dp.links)
	}
	if resp := call("", "DEL", "c2", "1"); resp.Error != nil {
		t.Fatalf("DEL with CNI_NETNS_OVERRIDE: %+v", resp.Error)
	}
}

// The agent's own namespace is its thread's, which is the process's while no pod namespace has
// been entered on it.
func TestThreadNetns(t *testing.T) {
	dev, ino, err := threadNetns()
	wdev, wino, werr := shim.StatNetns("/proc/self/ns/net")
	if err != nil || werr != nil || dev != wdev || ino != wino || ino == 0 {
		t.Fatalf("threadNetns = %d:%d, %v; the process's namespace is %d:%d, %v", dev, ino, err, wdev, wino, werr)
	}
}

// TestCommandServerDelIsLenient: a setting only ADD uses, made wrong after the pod was created
// (an edited conflist), must not keep DEL failing: the agent reads DEL's configuration as the
// plugin does, and the teardown completes.
func TestCommandServerDelIsLenient(t *testing.T) {
	for _, edit := range []struct{ name, from, to string }{
		{"mtu", `{`, `{"mtu":10,`},
		{"log level", `{`, `{"log_level":"trace",`},
		{"ipam type", `{`, `{"ipam":{"type":"host-local"},`},
		// Wrongly typed, not only wrong: the strict decode must not fail the DEL either.
		{"mtu as a string", `{`, `{"mtu":"1500",`},
		{"assign_ipv6 not a boolean", `{`, `{"ipam":{"assign_ipv6":"yes"},`},
		{"policy wait as a string", `{`, `{"policy_setup_timeout_seconds":"10",`},
		{"labels as an object", `{`, `{"args":{"cni":{"labels":{"a":"b"}}},`},
		{"requested addresses not strings", `{`, `{"runtimeConfig":{"ips":[5]},`},
		{"policy wait negative", `{`, `{"policy_setup_timeout_seconds":-100,`},
		{"policy wait overflowing", `{`, `{"policy_setup_timeout_seconds":10000000000,`},
	} {
		t.Run(edit.name, func(t *testing.T) {
			dp := newFakeDataplane(testNS)
			e := newCommandEnv(t, dp)
			if resp := e.run("ADD", "c1", "", e.stdin); resp.Error != nil {
				t.Fatalf("ADD: %+v", resp.Error)
			}
			bad := []byte(strings.Replace(string(e.stdin), edit.from, edit.to, 1))
			if string(bad) == string(e.stdin) {
				t.Fatalf("edit %q not applied to %s", edit.to, e.stdin)
			}
			if resp := e.run("ADD", "c2", "", bad); resp.Error == nil {
				t.Fatalf("ADD with %s accepted; the case proves nothing", edit.to)
			}
			if resp := e.run("DEL", "c1", "", bad); resp.Error != nil {
				t.Fatalf("DEL with %s: %+v", edit.to, resp.Error)
			}
			if n, held := e.endpoints(), e.allocated(); n != 0 || len(dp.links) != 0 || len(held) != 0 {
				t.Fatalf("after DEL: %d endpoints, links %v, addresses %v; want nothing", n, dp.links, held)
			}
		})
	}
}
