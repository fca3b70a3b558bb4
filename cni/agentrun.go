package cni

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"

	"github.com/terracenet/terrace/cni/shim"
	"github.com/terracenet/terrace/node/nodeapi"
)

// The agent side of a whole command. A plugin process is a fresh Go program each call: on two cores
// its start-up, netlink work and HTTP round trips were most of what eight concurrent ADDs cost.
// The terrace-cni shim (package cni/shim) sends the command to terrace-node, which runs the very
// same Plugin code here, warm, with the datastore calls going to its own API in memory instead of
// over the socket. terrace-cni-etcd does everything itself when the agent does not take a command.

// CommandServer runs ADD, DEL and CHECK of terrace and of terrace-ipam inside the node agent for
// node Node (the IPAM plugin's namespace is not its concern, so it is not checked). Datastore is the
// agent's own datastore API (node.DatastoreAPI's handler), called in memory. FailPoints lets a
// request name a step to fail at; only tests set it.
type CommandServer struct {
	Node       string
	Dataplane  Dataplane
	Datastore  http.Handler
	FailPoints bool

	// attachments serialises the commands for one attachment: the agent finishes a command the
	// plugin gave up waiting for, so the runtime's DEL could otherwise run while its ADD still
	// wires, and the ADD would then recreate what the DEL removed.
	attachments keyedMutex
	// openNetns opens a namespace path and identifies what it opened (openNetnsFile when nil;
	// tests with a fake kernel set it).
	openNetns func(path string) (h netnsHandle, err error)
	// ownNetns identifies the agent's own network namespace (threadNetns when nil).
	ownNetns func() (dev, ino uint64, err error)
}

// netnsHandle is an open namespace: the path that leads to it for as long as it is open, and its
// identity (nsfs device and inode).
type netnsHandle struct {
	path     string
	dev, ino uint64
	close    func()
}

// openNetnsFile opens path and keeps it open; its /proc/self/fd path then leads to the namespace
// that was checked even if path itself is replaced (a bind mount unmounted and another mounted).
func openNetnsFile(path string) (netnsHandle, error) {
	if err := checkNetnsPath(path); err != nil {
		return netnsHandle{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return netnsHandle{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return netnsHandle{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return netnsHandle{path: fmt.Sprintf("/proc/self/fd/%d", f.Fd()), dev: st.Dev, ino: st.Ino, close: func() { f.Close() }}, nil
}

// keyedMutex is a mutex per key, kept only while someone holds or waits for it.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}

// Run runs one command. Its failures come back as the CNI error the plugin prints; a command that
// was not started (malformed, or for another node) is a *nodeapi.Refusal.
func (s *CommandServer) Run(_ context.Context, req nodeapi.CNIRequest) (resp nodeapi.CNIResponse, err error) {
	defer func() {
		// A bug in one command must fail that command, not the agent that runs felix and bgp.
		if r := recover(); r != nil {
			resp, err = fail(fmt.Errorf("%s of %s failed inside the node agent: panic: %v\n%s", req.Command, req.ContainerID, r, debug.Stack())), nil
		}
	}()
	switch {
	case req.Plugin != "" && req.Plugin != IPAMType:
		return nodeapi.CNIResponse{}, &nodeapi.Refusal{Code: nodeapi.CodeInvalid, Message: fmt.Sprintf("plugin %q is not run by the node agent (terrace and terrace-ipam are)", req.Plugin)}
	case req.Command == "ADD", req.Command == "DEL", req.Command == "CHECK":
	default:
		return nodeapi.CNIResponse{}, &nodeapi.Refusal{Code: nodeapi.CodeInvalid, Message: fmt.Sprintf("command %q is not run by the node agent (ADD, DEL and CHECK are)", req.Command)}
	}
	if req.FailAt != "" && !s.FailPoints {
		return nodeapi.CNIResponse{}, &nodeapi.Refusal{Code: nodeapi.CodeInvalid, Message: "this node agent is built without failure points"}
	}
	if cerr := CheckCall(req); cerr != nil {
		return fail(cerr), nil
	}
	getenv := func(k string) string { return req.Env[k] }
	// With no nodename in the configuration the pod is this agent's node's: the plugin asking
	// runs on this host, whatever its host name (a node named with --node-name is not one).
	hostname := func() (string, error) {
		if s.Node != "" {
			return s.Node, nil
		}
		if req.Hostname == "" {
			return "", fmt.Errorf("the plugin sent no host name")
		}
		return req.Hostname, nil
	}
	// DEL reads the configuration as leniently here as the plugin itself does: a setting only ADD
	// uses, edited after the pod was made, must not keep its teardown failing for ever.
	parse := ParseConfig
	if req.Command == "DEL" {
		parse = ParseConfigForDel
	}
	cfg, err := parse(req.StdinData, getenv, hostname)
	if err != nil {
		return fail(err), nil
	}
	if cfg.Node != s.Node {
		return nodeapi.CNIResponse{}, &nodeapi.Refusal{Code: nodeapi.CodeWrongNode, Message: fmt.Sprintf("the network's node is %q; this agent serves %q", cfg.Node, s.Node)}
	}
	// Commands for one attachment run one at a time, and a queued one checks the namespace only
	// once its turn comes: opened earlier, the descriptor would keep a namespace the runtime has
	// meanwhile torn down alive for a command to wire.
	defer s.attachments.lock(req.AttachmentKey())()
	open := s.openNetns
	if open == nil {
		open = openNetnsFile
	}
	own := s.ownNetns
	if own == nil {
		own = threadNetns
	}
	// isOwn reports whether h is the agent's own namespace (which is the plugin's: both run in
	// the host's).
	isOwn := func(h netnsHandle) bool { return sameNetns(h, own) }
	override := netnsOverride(req.NetnsOverride)
	netnsHandlePath, failAfterDel := "", false
	switch {
	case req.Command != "DEL" && req.Plugin == "" && req.Netns != "":
		// A /proc/<pid>/ns/net path names another process's namespace in another PID namespace,
		// and a bind mount may be another file in another mount namespace: the agent uses the
		// path only if it leads to the namespace the plugin saw. A plugin that saw none at all
		// does the command itself, and says what is wrong with the path.
		if req.NetnsIno == 0 {
			return nodeapi.CNIResponse{}, &nodeapi.Refusal{Code: nodeapi.CodeNetnsUnseen, Message: fmt.Sprintf("the plugin found no network namespace at %s", req.Netns)}
		}
		// The namespace is opened once, checked through the open descriptor and entered through
		// it: checking the path and then opening it again would leave a moment in which the
		// path could come to lead elsewhere.
		h, err := open(req.Netns)
		if err != nil || h.dev != req.NetnsDev || h.ino != req.NetnsIno {
			if err == nil {
				h.close()
			}
			return nodeapi.CNIResponse{}, &nodeapi.Refusal{Code: nodeapi.CodeNetnsUnseen,
				Message: fmt.Sprintf("the node agent does not see the plugin's network namespace at %s (%d:%d; the agent sees %d:%d, %v)", req.Netns, req.NetnsDev, req.NetnsIno, h.dev, h.ino, err)}
		}
		defer h.close()
		netnsHandlePath = h.path
		// skel refuses a pod namespace that is the plugin's own only after ADD has run; wiring
		// the host's namespace as a pod's would give the host a pod's default route, so the
		// agent refuses first.
		if req.Command == "ADD" && !override && isOwn(h) {
			return fail(errOwnNetns()), nil
		}
	case (req.Command == "ADD" || req.Command == "DEL") && req.Netns != "" && !override:
		// skel's check of ADD (terrace-ipam's; it never enters the namespace) and of DEL, whose
		// namespace may be gone already, which is no error. An ADD is refused before it
		// allocates; a DEL runs and then fails, as skel's does.
		if h, err := open(req.Netns); err == nil {
			mine := isOwn(h)
			h.close()
			if mine && req.Command == "ADD" {
				return fail(errOwnNetns()), nil
			}
			failAfterDel = mine
		}
	}
	// The request's context ends when the plugin goes away; the command must not: it finishes, or
	// undoes what it did, on its own time budget, and the runtime's DEL cleans up after it.
	var out bytes.Buffer
	p := &Plugin{
		Connect: func(context.Context, EtcdConfig, *slog.Logger) (Backend, error) {
			return s.backend(), nil
		},
		Dataplane:   s.Dataplane,
		Stdout:      &out,
		Getenv:      getenv,
		Hostname:    hostname,
		FailAt:      req.FailAt,
		InAgent:     true,
		CallerPid:   req.PluginPid,
		NetnsHandle: netnsHandlePath,
	}
	args := &skel.CmdArgs{ContainerID: req.ContainerID, Netns: req.Netns, IfName: req.IfName, Args: req.Args, Path: req.Path, StdinData: req.StdinData}
	add, del, check := p.Add, p.Del, p.Check
	if req.Plugin == IPAMType {
		ip := IPAMPlugin{p}
		add, del, check = ip.Add, ip.Del, ip.Check
	}
	switch req.Command {
	case "ADD":
		err = add(args)
	case "DEL":
		err = del(args)
	case "CHECK":
		err = check(args)
	}
	if errors.Is(err, errNetNSUnseen) {
		// An agent in another mount namespace than the runtime may not see the path the runtime
		// gave; the plugin can, so it does the command itself (and says so if the path is bad).
		return nodeapi.CNIResponse{}, &nodeapi.Refusal{Code: nodeapi.CodeNetnsUnseen, Message: fmt.Sprintf("the node agent cannot see the network namespace %s", req.Netns)}
	}
	if err != nil {
		resp := fail(err)
		if netnsHandlePath != "" {
			// The kernel steps name the path they were given; the runtime knows its own.
			resp.Error.Msg = strings.ReplaceAll(resp.Error.Msg, netnsHandlePath, req.Netns)
			resp.Error.Details = strings.ReplaceAll(resp.Error.Details, netnsHandlePath, req.Netns)
		}
		return resp, nil
	}
	if failAfterDel {
		return fail(errOwnNetns()), nil
	}
	return nodeapi.CNIResponse{Result: out.Bytes()}, nil
}

// threadNetns identifies the network namespace of the calling goroutine's thread, which is the
// agent's own whenever no namespace has been entered on it: ns.Do enters pod namespaces on
// threads locked to its own goroutines. /proc/self/ns/net would be the main thread's, which
// may be one of those.
func threadNetns() (dev, ino uint64, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return shim.StatNetns("/proc/thread-self/ns/net")
}

// isOwnNetns reports whether path is the calling thread's own network namespace.
func isOwnNetns(path string) bool {
	h, err := openNetnsFile(path)
	if err != nil {
		return false
	}
	defer h.close()
	return sameNetns(h, threadNetns)
}

// sameNetns reports whether h is the namespace own gives.
func sameNetns(h netnsHandle, own func() (dev, ino uint64, err error)) bool {
	dev, ino, err := own()
	return err == nil && dev == h.dev && ino == h.ino
}

// netnsOverride reads CNI_NETNS_OVERRIDE as skel does: the plugin's own namespace is allowed.
func netnsOverride(v string) bool { return strings.EqualFold(v, "true") || v == "1" }

func errOwnNetns() error {
	return types.NewError(types.ErrInvalidNetNS, "plugin's netns and netns from CNI_NETNS should not be the same", "")
}

// errNetNSUnseen: run in the agent, ADD or CHECK found no network namespace at the runtime's
// path, before changing anything.
var errNetNSUnseen = errors.New("the node agent cannot see the network namespace")

func fail(err error) nodeapi.CNIResponse {
	e := toCNIError(err)
	return nodeapi.CNIResponse{Error: &nodeapi.CNIError{Code: e.Code, Msg: e.Msg, Details: e.Details}}
}

// backend is the agent's datastore API as a Backend, served in memory: the same checks (this
// node's resources only) and error codes as over the socket, without the socket.
func (s *CommandServer) backend() Backend {
	return &agentBackend{socket: "(in memory)", node: s.Node, hc: &http.Client{Transport: handlerTransport{s.Datastore}}, closeIdle: func() {}}
}

// handlerTransport answers requests by calling a handler directly.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	w := &memResponse{header: http.Header{}}
	t.h.ServeHTTP(w, req)
	if req.Body != nil {
		req.Body.Close()
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return &http.Response{
		Status: fmt.Sprintf("%d %s", w.status, http.StatusText(w.status)), StatusCode: w.status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: w.header, Body: io.NopCloser(&w.body), ContentLength: int64(w.body.Len()), Request: req,
	}, nil
}

// memResponse is the http.ResponseWriter of an in-memory request.
type memResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *memResponse) Header() http.Header { return w.header }

func (w *memResponse) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *memResponse) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}
