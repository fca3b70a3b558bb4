package cni

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/embedded"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/internal/nstest"
	"github.com/terracenet/terrace/ipam"
)

// The privileged tests run as a runtime would: the built plugin binary, executed in a network
// namespace playing the host, wiring pods in namespaces playing pods. Since the plugin must reach
// etcd from inside the host namespace, the whole test process re-executes itself there (under
// `ip netns exec`), and the embedded etcd listens on that namespace's loopback. Nothing touches
// the root namespace.
const (
	envInHost = "TRC_CNI_TEST_HOSTNS" // set in the re-executed child: the host namespace's name
	envPlugin = "TRC_CNI_TEST_PLUGIN" // path of the built plugin, shared with the child

	hostAddr4 = "192.0.2.1"
	hostAddr6 = "2001:db8::1"
	pool4     = "198.18.0.0/16"
	pool6     = "2001:db8:1000::/48"
)

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func goBin() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// envTags adds build tags to the plugin under test.
const envTags = "TRC_CNI_TEST_TAGS"

// buildPlugin compiles cmd/terrace-cni and, beside it as installed, its etcd fallback
// cmd/terrace-cni-etcd, with the failure points compiled in. It returns terrace-cni's path.
func buildPlugin(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	tags := "terrace_failpoints"
	if extra := os.Getenv(envTags); extra != "" {
		tags += "," + extra
	}
	cmd := exec.Command(goBin(), "build", "-tags", tags, "-o", dir+"/",
		"github.com/terracenet/terrace/cmd/terrace-cni", "github.com/terracenet/terrace/cmd/terrace-cni-etcd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as make build does
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build plugin: %v\n%s", err, b)
	}
	return filepath.Join(dir, "terrace-cni")
}

// hostEnv is the re-executed child's view: a host namespace with etcd and an IP pool.
type hostEnv struct {
	t      testing.TB
	ns     string
	plugin string
	srv    *embedded.Server
	store  *kv.Store
	ds     *datastore.Client
	logDir string
}

// inHost returns the host environment in the child, or nil in the parent after running the test
// in a child (the parent then has nothing more to do).
func inHost(t testing.TB, runFlag string) *hostEnv {
	t.Helper()
	nstest.RequireRoot(t)
	if os.Getenv(envInHost) == "" {
		hostNS := "trctest-h-" + randHex(4)
		run(t, "ip", "netns", "add", hostNS)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", hostNS).Run() })
		// The child must time out before this process does, or the parent's timeout kills both
		// and the child's output, with its stacks, is lost.
		timeout := 20 * time.Minute
		if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
			if dl, ok := d.Deadline(); ok {
				timeout = max(time.Minute, time.Until(dl)-time.Minute)
			}
		}
		args := []string{"netns", "exec", hostNS, os.Args[0], runFlag, "^" + t.Name() + "$", "-test.v", "-test.count=1", "-test.timeout=" + timeout.String()}
		if runFlag == "-test.bench" {
			args = append(args, "-test.run", "^$", "-test.benchtime", "1x")
		}
		cmd := exec.Command("ip", args...)
		cmd.Env = append(os.Environ(), envInHost+"="+hostNS, envPlugin+"="+buildPlugin(t))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		t.Logf("in host namespace %s:\n%s", hostNS, out.String())
		// Benchmark figures go to stdout as well, where `make bench` collects them.
		for _, line := range strings.Split(out.String(), "\n") {
			if l := strings.TrimSpace(line); strings.HasPrefix(l, "BENCH ") {
				fmt.Println(l)
			}
		}
		if err != nil {
			t.Fatalf("test in host namespace failed: %v", err)
		}
		return nil
	}
	e := &hostEnv{t: t, ns: os.Getenv(envInHost), plugin: os.Getenv(envPlugin), logDir: t.TempDir()}
	// The host: loopback for etcd, one underlay address for the pods to answer, forwarding on,
	// and a default route so proxy_arp has somewhere else to route 169.254.1.1.
	run(t, "ip", "link", "set", "lo", "up")
	run(t, "ip", "link", "add", "underlay0", "type", "veth", "peer", "name", "underlay1")
	run(t, "ip", "link", "set", "underlay1", "up")
	run(t, "ip", "link", "set", "underlay0", "up")
	run(t, "ip", "addr", "add", hostAddr4+"/32", "dev", "underlay0")
	run(t, "ip", "-6", "addr", "add", hostAddr6+"/128", "dev", "underlay0", "nodad")
	run(t, "ip", "route", "add", "default", "dev", "underlay0")
	run(t, "ip", "-6", "route", "add", "default", "dev", "underlay0")
	run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	e.srv = embedded.StartForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := kv.Open(ctx, kv.Config{Endpoints: e.srv.Endpoints()}, embedded.TestLogger())
	if err != nil {
		t.Fatalf("open etcd: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	e.store, e.ds = st, datastore.New(st, embedded.TestLogger())
	e.addPool("pool4", pool4, 26)
	e.addPool("pool6", pool6, 122)
	return e
}

func (e *hostEnv) addPool(name, cidr string, blockSize int) {
	e.t.Helper()
	p := &api.IPPool{TypeMeta: api.TypeMeta{Kind: "IPPool", APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: name}, Spec: api.IPPoolSpec{CIDR: cidr, BlockSize: blockSize}}
	if _, err := e.ds.Create(context.Background(), p); err != nil {
		e.t.Fatalf("create pool %s: %v", cidr, err)
	}
}

// newPod makes a pod namespace, deleted when the test ends.
func (e *hostEnv) newPod() string {
	e.t.Helper()
	name := "trctest-p-" + randHex(4)
	run(e.t, "ip", "netns", "add", name)
	e.t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return "/var/run/netns/" + name
}

// conf is a network configuration for this host; extra is spliced in as more JSON keys.
func (e *hostEnv) conf(version, extra string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"testnet","type":"terrace","nodename":"host-a",
		"etcd_endpoints":%q,"log_level":"debug","log_file_path":%q%s}`,
		version, e.srv.Endpoints()[0], filepath.Join(e.logDir, "cni.log"), extra))
}

// call runs the plugin binary exactly as a runtime does: CNI_* environment, config on stdin.
type call struct {
	cmd, cid, netns, ifname, args string
	stdin                         []byte
	env                           []string
	argv0                         string // path to run instead of the plugin (e.g. a terrace-ipam link)
}

type outcome struct {
	stdout []byte
	err    *types.Error
	took   time.Duration
	// cpu is the plugin process's user+system time: with many callers on few cores, the
	// latency floor is set by this, not by the wall time of one call alone.
	cpu time.Duration
}

func (e *hostEnv) exec(c call) outcome {
	e.t.Helper()
	if c.ifname == "" {
		c.ifname = "eth0"
	}
	path := e.plugin
	if c.argv0 != "" {
		path = c.argv0
	}
	// A plugin call that hangs gets SIGQUIT (a Go program prints its stacks) instead of hanging
	// the test until the package's timeout loses every output.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Env = append([]string{"CNI_COMMAND=" + c.cmd, "CNI_CONTAINERID=" + c.cid, "CNI_NETNS=" + c.netns,
		"CNI_IFNAME=" + c.ifname, "CNI_ARGS=" + c.args, "CNI_PATH=" + filepath.Dir(path), "PATH=" + os.Getenv("PATH")}, c.env...)
	cmd.Stdin = bytes.NewReader(c.stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	o := outcome{stdout: stdout.Bytes(), took: time.Since(start)}
	if ps := cmd.ProcessState; ps != nil {
		o.cpu = ps.UserTime() + ps.SystemTime()
	}
	if err != nil {
		var ce types.Error
		if jerr := json.Unmarshal(stdout.Bytes(), &ce); jerr != nil || ce.Code == 0 {
			e.t.Fatalf("%s %s: %v, stdout %q is not a CNI error (stderr %s)", c.cmd, c.cid, err, stdout.String(), stderr.String())
		}
		o.err = &ce
	}
	return o
}

// mustOK runs c and fails the test on a CNI error.
func (e *hostEnv) mustOK(c call) []byte {
	e.t.Helper()
	o := e.exec(c)
	if o.err != nil {
		e.t.Fatalf("%s %s: code %d: %s (%s)", c.cmd, c.cid, o.err.Code, o.err.Msg, o.err.Details)
	}
	return o.stdout
}

func parseResult(t testing.TB, out []byte) *current.Result {
	t.Helper()
	var r current.Result
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("decode result %s: %v", out, err)
	}
	return &r
}

// leftovers lists everything of Terrace that exists: endpoints, IPAM handles and addresses,
// host-side interfaces, and Terrace's routes in the host namespace.
func (e *hostEnv) leftovers() []string {
	e.t.Helper()
	ctx := context.Background()
	var out []string
	weps, err := e.ds.List(ctx, "WorkloadEndpoint", "")
	if err != nil {
		e.t.Fatalf("list endpoints: %v", err)
	}
	for _, w := range weps {
		out = append(out, "wep "+w.GetObjectMeta().Namespace+"/"+w.GetObjectMeta().Name)
	}
	hs, _, err := e.store.List(ctx, ipam.HandlePrefix)
	if err != nil {
		e.t.Fatalf("list handles: %v", err)
	}
	for _, h := range hs {
		out = append(out, "handle "+h.Key)
	}
	blocks, _, err := e.store.List(ctx, ipam.BlockPrefix)
	if err != nil {
		e.t.Fatalf("list blocks: %v", err)
	}
	for _, kv := range blocks {
		b, err := ipam.DecodeBlock(kv.Value)
		if err != nil {
			e.t.Fatalf("decode block: %v", err)
		}
		for _, a := range b.Allocated() {
			out = append(out, "address "+a.IP.String()+" "+a.Handle)
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		e.t.Fatalf("list links: %v", err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, HostIfPrefix) {
			out = append(out, "link "+l.Attrs().Name)
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RouteListFiltered(fam, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			e.t.Fatalf("list routes: %v", err)
		}
		for _, r := range rs {
			out = append(out, "route "+r.Dst.String())
		}
	}
	slices.Sort(out)
	return out
}

func (e *hostEnv) assertClean() {
	e.t.Helper()
	if l := e.leftovers(); len(l) > 0 {
		e.t.Fatalf("left behind:\n  %s", strings.Join(l, "\n  "))
	}
}

// podHasLink reports whether ifname exists in the pod namespace.
func podHasLink(netnsPath, ifname string) bool {
	return exec.Command("ip", "-n", filepath.Base(netnsPath), "link", "show", ifname).Run() == nil
}

// ping checks that the pod answers an ICMP echo from the host namespace (hand-made: the machine
// may have no ping binary).
func ping(t testing.TB, ip netip.Addr) {
	t.Helper()
	var err error
	for range 3 {
		if err = echo(ip, time.Second); err == nil {
			return
		}
	}
	t.Errorf("ping %s: %v", ip, err)
}

func echo(ip netip.Addr, timeout time.Duration) error {
	network, typ, replyType := "ip4:icmp", byte(8), byte(0)
	if ip.Is6() {
		network, typ, replyType = "ip6:ipv6-icmp", 128, 129
	}
	c, err := net.ListenPacket(network, "")
	if err != nil {
		return err
	}
	defer c.Close()
	id := uint16(os.Getpid())
	seq := uint16(time.Now().UnixNano())
	msg := []byte{typ, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq), 't', 'r', 'c'}
	if ip.Is4() {
		// ICMPv4 needs its checksum; the kernel fills in ICMPv6's.
		var sum uint32
		for i := 0; i < len(msg); i += 2 {
			w := uint32(msg[i]) << 8
			if i+1 < len(msg) {
				w |= uint32(msg[i+1])
			}
			sum += w
		}
		sum = (sum >> 16) + (sum & 0xffff)
		sum += sum >> 16
		cs := ^uint16(sum)
		msg[2], msg[3] = byte(cs>>8), byte(cs)
	}
	if _, err := c.WriteTo(msg, &net.IPAddr{IP: ip.AsSlice()}); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		a, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		if n >= 8 && a.Unmap() == ip && buf[0] == replyType && uint16(buf[4])<<8|uint16(buf[5]) == id && uint16(buf[6])<<8|uint16(buf[7]) == seq {
			return nil
		}
	}
}

func resultIPs(t testing.TB, r *current.Result) (v4, v6 []netip.Addr) {
	t.Helper()
	v4, v6, err := resultAddrs(r, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	return v4, v6
}
