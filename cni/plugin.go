package cni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/terracenet/terrace/datastore/api"
)

// Labels and annotations the plugin writes on WorkloadEndpoints.
const (
	LabelNamespace    = "projectcalico.org/namespace"
	LabelOrchestrator = "projectcalico.org/orchestrator"
	// AnnotationNetwork names the CNI network that made the endpoint, so GC of one network never
	// removes another's endpoints.
	AnnotationNetwork = "terrace.dev/network"
)

// Time budgets. A runtime kills a plugin that hangs; failing early with a code is kinder.
const (
	opTimeout   = 30 * time.Second
	undoTimeout = 15 * time.Second
)

// Plugin is the terrace CNI plugin; one value serves one invocation.
type Plugin struct {
	Connect   Connector
	Dataplane Dataplane
	Stdout    io.Writer
	Getenv    func(string) string
	Hostname  func() (string, error)
	// Log, when set, is used instead of the log file named by the configuration.
	Log *slog.Logger
	// UseAgent lets ADD, DEL and CHECK go to the node agent on the node socket whole, and
	// otherwise the datastore calls (one warm allocator and etcd connection per node), when it
	// answers; Connect is the fallback.
	UseAgent bool
	// FailAt names an ADD step at which to fail on purpose (tests only; see failpoint*.go).
	FailAt string
	// InAgent is set when the node agent runs the command (agentrun.go): Connect is its own API
	// in memory, and there is no process start-up to report. CallerPid is then the plugin
	// process's pid, which the log lines carry (with the agent's as agentPid).
	InAgent   bool
	CallerPid int
	// NetnsHandle, when set, is the path the command enters the pod's namespace by instead of
	// CNI_NETNS: the agent's open descriptor of the namespace it checked (/proc/self/fd/N), so a
	// path replaced after the check cannot lead the command into another namespace. CNI_NETNS
	// is still what results and messages report.
	NetnsHandle string
	// agentAbsent records that the node agent did not take the command, so connecting does not
	// ask it again.
	agentAbsent bool
}

// invocation is the state shared by one command's steps.
type invocation struct {
	cfg  *Config
	args *skel.CmdArgs
	pod  PodArgs
	log  *slog.Logger
	done func()
	cmd  string
	// inAgent: the node agent runs this command for a plugin process.
	inAgent bool
	// identity of the attachment
	orch, namespace, podName, wepName, hostIf, handle string
	// requested are the addresses the pod asks for (none: IPAM picks), from requestedFrom
	requested     []netip.Addr
	requestedFrom string
	// phases collects how long each step took, logged with the outcome so an operator (and the
	// benchmark) can see where the time goes.
	phases []any
}

// processStart is when the plugin process began running Go code: the time before a command starts
// is the cost of being a fresh process each call.
var processStart = time.Now()

// startup records the time from the process's start to the command's, unless the node agent runs
// the command (it has no start-up of its own).
func (inv *invocation) startup() {
	if !inv.inAgent {
		inv.phase("startup", processStart)
	}
}

func (inv *invocation) phase(name string, since time.Time) {
	inv.phaseTook(name, time.Since(since))
}

// phaseTook logs a phase's duration. ADD's phases overlap (its datastore and kernel halves run
// side by side), so they need not add up to the whole command's.
func (inv *invocation) phaseTook(name string, d time.Duration) {
	inv.phases = append(inv.phases, name, d)
}

func (p *Plugin) begin(cmd string, args *skel.CmdArgs) (*invocation, error) {
	del := cmd == "DEL" || cmd == "IPAM-DEL"
	parse := ParseConfig
	if del {
		parse = ParseConfigForDel
	}
	cfg, err := parse(args.StdinData, p.getenv, p.hostname)
	if err != nil {
		return nil, err
	}
	pod, err := ParseCNIArgs(args.Args)
	var argsErr error
	if err != nil && del {
		// Tear down what the readable pairs name rather than leave the pod stuck.
		pod, argsErr = parseCNIArgsLenient(args.Args), err
	} else if err != nil {
		return nil, err
	}
	log, done := p.logger(cfg)
	if len(cfg.Ignored) > 0 || argsErr != nil {
		log.Warn("DEL goes on despite input ADD would refuse", "ignored", cfg.Ignored, "cniArgs", argsErr)
	}
	inv := &invocation{cfg: cfg, args: args, pod: pod, done: done, cmd: cmd, inAgent: p.InAgent}
	inv.orch, inv.namespace, inv.podName = OrchestratorCNI, "default", args.ContainerID
	if pod.Name != "" {
		inv.orch, inv.podName = OrchestratorK8s, pod.Name
	}
	if pod.Namespace != "" {
		inv.namespace = pod.Namespace
	}
	inv.wepName = WorkloadEndpointName(cfg.Node, inv.orch, inv.podName, args.IfName)
	inv.hostIf = HostInterfaceName(cfg.Network, args.ContainerID, args.IfName)
	inv.handle = HandleID(cfg.Network, args.ContainerID, args.IfName)
	inv.requested, inv.requestedFrom = cfg.IPs, cfg.IPsFrom
	ipsErr := cfg.IPsErr
	if len(inv.requested) == 0 && cfg.IPsErr == nil {
		inv.requested, inv.requestedFrom, ipsErr = pod.IPs, "CNI_ARGS IP", pod.IPsErr
	}
	if ipsErr != nil && (cmd == "ADD" || cmd == "IPAM-ADD") {
		done()
		return nil, ipsErr
	}
	inv.log = log.With("cmd", cmd, "network", cfg.Network, "containerID", args.ContainerID, "ifname", args.IfName)
	return inv, nil
}

func (p *Plugin) getenv(k string) string {
	if p.Getenv != nil {
		return p.Getenv(k)
	}
	return os.Getenv(k)
}

func (p *Plugin) hostname() (string, error) {
	if p.Hostname != nil {
		return p.Hostname()
	}
	return defaultNodeName(NodeNameFile)
}

// NodeNameFile is where terrace-node records the node name it registered (its --state-dir):
// without an agent and without a nodename in the configuration, the plugin takes its node name
// from there, as Calico's does, so that a node named other than its host still gets its pods.
const NodeNameFile = "/var/lib/terrace/nodename"

// defaultNodeName is the name in file, when there is one, else the host name.
func defaultNodeName(file string) (string, error) {
	if b, err := os.ReadFile(file); err == nil {
		if n := strings.TrimSpace(string(b)); n != "" {
			return n, nil
		}
	}
	return os.Hostname()
}

func (p *Plugin) stdout() io.Writer {
	if p.Stdout != nil {
		return p.Stdout
	}
	return os.Stdout
}

// logger opens the configured log file. Stdout belongs to the CNI protocol, so when the file
// cannot be opened the log goes to stderr, which runtimes record.
func (p *Plugin) logger(cfg *Config) (*slog.Logger, func()) {
	if p.Log != nil {
		return p.Log, func() {}
	}
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if err := os.MkdirAll(filepath.Dir(cfg.LogFile), 0o755); err == nil {
		if f, err := os.OpenFile(cfg.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
			log := slog.New(slog.NewTextHandler(f, opts))
			if p.InAgent {
				log = log.With("pid", p.CallerPid, "agentPid", os.Getpid())
			} else {
				log = log.With("pid", os.Getpid())
			}
			return log, func() { f.Close() }
		}
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts)), func() {}
}

func (p *Plugin) fail(step string) error {
	if p.FailAt != "" && p.FailAt == step {
		return fmt.Errorf("injected failure at step %q", step)
	}
	return nil
}

func (p *Plugin) connect(ctx context.Context, inv *invocation) (Backend, error) {
	be, via, err := p.connectBackend(ctx, inv.cfg, inv.log)
	if p.InAgent {
		via = "agent"
	}
	if err != nil {
		return nil, connectError(inv.cfg, err)
	}
	inv.phases = append(inv.phases, "backend", via)
	return be, nil
}

// connectError is the CNI error for a failed connection: try again later, unless the settings
// themselves are wrong (then the runtime would retry for ever a call that cannot work).
func connectError(cfg *Config, err error) *types.Error {
	if errors.Is(err, ErrBadDatastoreConfig) {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("datastore settings: %v", err), "")
	}
	return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("connect to the datastore at %v: %v", cfg.Etcd.Endpoints, err), "")
}

// undoStack records how to take back each step of ADD, run in reverse on failure.
type undoStack struct {
	steps []undoStep
}

type undoStep struct {
	what string
	fn   func(context.Context) error
}

func (u *undoStack) push(what string, fn func(context.Context) error) {
	u.steps = append(u.steps, undoStep{what, fn})
}

func (u *undoStack) run(log *slog.Logger) error {
	// The command's ctx may be what ran out; the undo gets its own time.
	ctx, cancel := context.WithTimeout(context.Background(), undoTimeout)
	defer cancel()
	var errs []error
	for i := len(u.steps) - 1; i >= 0; i-- {
		s := u.steps[i]
		if err := s.fn(ctx); err != nil {
			log.Error("undo failed", "step", s.what, "err", err)
			errs = append(errs, fmt.Errorf("undo %s: %w", s.what, err))
		} else {
			log.Debug("undone", "step", s.what)
		}
	}
	return errors.Join(errs...)
}

// Add implements CNI ADD.
func (p *Plugin) Add(args *skel.CmdArgs) (retErr error) {
	start := time.Now()
	inv, err := p.begin("ADD", args)
	if err != nil {
		return err
	}
	defer inv.done()
	if handled, err := p.viaAgent(inv); handled {
		return err
	}
	inv.startup()
	log := inv.log
	defer func() {
		if retErr != nil {
			log.Error("ADD failed", append([]any{"err", retErr, "took", time.Since(start)}, inv.phases...)...)
		} else {
			log.Info("ADD done", append([]any{"took", time.Since(start)}, inv.phases...)...)
		}
	}()
	// A plugin earlier in the chain: its result is passed on with this one's added (the spec's
	// MUST), read before anything is changed so a bad one leaves nothing to undo.
	prev, err := addPrevResult(args.StdinData)
	if err != nil {
		return err
	}
	exists, err := p.Dataplane.PodInterfaceExists(p.netnsPath(args), args.IfName)
	if err != nil {
		if errors.Is(err, ErrNetNSMissing) {
			if p.InAgent {
				return errNetNSUnseen
			}
			return cniErrorf(types.ErrUnknownContainer, "the pod's network namespace %q does not exist", args.Netns)
		}
		return toCNIError(err)
	}
	// skel refuses the plugin's own namespace only after ADD has run, and undoes nothing: by
	// then the host would have a pod's address and default route. The agent checks before it
	// runs the command; the plugin run directly checks here, before anything is changed.
	if !p.InAgent {
		if !netnsOverride(p.getenv("CNI_NETNS_OVERRIDE")) && isOwnNetns(p.netnsPath(args)) {
			return errOwnNetns()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout+inv.cfg.PolicySetupTimeout)
	defer cancel()
	t := time.Now()
	be, err := p.connect(ctx, inv)
	if err != nil {
		return err
	}
	defer be.Close()
	inv.phase("connect", t)

	if exists {
		// A runtime repeating ADD for an attachment that is fully there gets the same answer.
		old, err := be.GetEndpoint(ctx, inv.namespace, inv.wepName)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return toCNIError(fmt.Errorf("read workload endpoint %s/%s: %w", inv.namespace, inv.wepName, err))
		}
		if old != nil && old.Spec.ContainerID == args.ContainerID && old.Spec.Endpoint == args.IfName {
			res, err := p.resultFromEndpoint(inv, old)
			if err == nil {
				log.Info("ADD repeated for an existing attachment; returning its result")
				return p.print(mergePrevResult(prev, res), inv.cfg.CNIVersion)
			}
			log.Warn("existing attachment does not verify", "err", err)
		}
		return cniErrorf(CodeInterfaceExists, "interface %q already exists in the pod's network namespace %s", args.IfName, args.Netns)
	}

	res, err := p.add(ctx, inv, be)
	if err != nil {
		return toCNIError(err)
	}
	return p.print(mergePrevResult(prev, res), inv.cfg.CNIVersion)
}

// assignCounts fills in what to ask IPAM for: the requested addresses, or one address of each
// family the configuration enables.
func (inv *invocation) assignCounts(req *AssignRequest) {
	if len(inv.requested) > 0 {
		req.IPs = inv.requested
		return
	}
	if inv.cfg.AssignIPv4 {
		req.Num4 = 1
	}
	if inv.cfg.AssignIPv6 {
		req.Num6 = 1
	}
}

// assignWhat names what ADD asked IPAM for, for its error message.
func (inv *invocation) assignWhat() string {
	if len(inv.requested) == 0 {
		return "addresses"
	}
	return fmt.Sprintf("the requested addresses %v (%s)", inv.requested, inv.requestedFrom)
}

// waitProgrammed polls the endpoint's status key until the node agent reports the policy of
// revision rev (or later) programmed. Polling, not a watch: the wait is short and usually ends on
// the first or second read, and a watch costs a stream setup every invocation.
func waitProgrammed(ctx context.Context, be Backend, key string, rev int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	var lastErr error
	for {
		data, ok, err := be.GetRaw(ctx, key)
		switch {
		case err == nil:
			lastErr = nil
		case ctx.Err() == nil && (errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)):
			// An etcd election or a dropped connection is not the policy failing: keep
			// waiting while the timeout lasts, and say so if it runs out.
			lastErr = err
		default:
			return fmt.Errorf("read policy status %s: %w", key, err)
		}
		if ok && err == nil {
			if st, err := ParseEndpointStatus(data); err == nil && st.Programmed && st.Revision >= rev {
				return nil
			}
		}
		if time.Now().Add(delay).After(deadline) {
			if lastErr != nil {
				return cniErrorf(CodePolicyTimeout, "the policy status of this pod could not be read within %s (status key %s): %v", timeout, key, lastErr)
			}
			return cniErrorf(CodePolicyTimeout, "the node agent did not report the policy of this pod programmed within %s (status key %s); is terrace-node running?", timeout, key)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for policy status %s: %w", key, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 100*time.Millisecond)
	}
}

// endpoint is the WorkloadEndpoint of the attachment being added.
func (p *Plugin) endpoint(inv *invocation, v4, v6 []netip.Addr, podMAC string) *api.WorkloadEndpoint {
	labels := map[string]string{}
	for k, v := range inv.cfg.Labels {
		labels[k] = v
	}
	labels[LabelNamespace] = inv.namespace
	labels[LabelOrchestrator] = inv.orch
	var nets []string
	for _, ip := range v4 {
		nets = append(nets, netip.PrefixFrom(ip, 32).String())
	}
	for _, ip := range v6 {
		nets = append(nets, netip.PrefixFrom(ip, 128).String())
	}
	w := &api.WorkloadEndpoint{
		TypeMeta: api.TypeMeta{Kind: "WorkloadEndpoint", APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{
			Name: inv.wepName, Namespace: inv.namespace, Labels: labels,
			Annotations: map[string]string{AnnotationNetwork: inv.cfg.Network},
		},
		Spec: api.WorkloadEndpointSpec{
			Orchestrator: inv.orch, Node: inv.cfg.Node, ContainerID: inv.args.ContainerID,
			Pod: inv.podName, Endpoint: inv.args.IfName, InterfaceName: inv.hostIf, MAC: podMAC,
			IPNetworks: nets,
		},
	}
	if len(v4) > 0 {
		w.Spec.IPv4Gateway = GatewayIPv4
	}
	if len(v6) > 0 {
		w.Spec.IPv6Gateway = GatewayIPv6
	}
	return w
}

// resultFromEndpoint rebuilds the result of an existing attachment after verifying it.
func (p *Plugin) resultFromEndpoint(inv *invocation, w *api.WorkloadEndpoint) (*current.Result, error) {
	v4, v6, err := endpointAddrs(w)
	if err != nil {
		return nil, err
	}
	wire := Wiring{NetNS: p.netnsPath(inv.args), PodIf: inv.args.IfName, HostIf: inv.hostIf, MTU: inv.cfg.MTU, IPv4: v4, IPv6: v6}
	if err := p.Dataplane.Verify(wire); err != nil {
		return nil, err
	}
	return BuildResult(Attachment{HostIf: inv.hostIf, PodIf: inv.args.IfName, PodMAC: w.Spec.MAC, Sandbox: inv.args.Netns, IPv4: v4, IPv6: v6}), nil
}

func endpointAddrs(w *api.WorkloadEndpoint) (v4, v6 []netip.Addr, err error) {
	for _, n := range w.Spec.IPNetworks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return nil, nil, fmt.Errorf("read endpoint %s: ipNetworks %q: %w", w.Metadata.Name, n, err)
		}
		if p.Addr().Is4() {
			v4 = append(v4, p.Addr())
		} else {
			v6 = append(v6, p.Addr())
		}
	}
	return v4, v6, nil
}

// Del implements CNI DEL. Every part may already be gone; only a failure to remove what is still
// there is an error. The host side goes first so that the address is never free while a route to
// the old pod still exists.
func (p *Plugin) Del(args *skel.CmdArgs) (retErr error) {
	start := time.Now()
	inv, err := p.begin("DEL", args)
	if err != nil {
		return err
	}
	defer inv.done()
	if handled, err := p.viaAgent(inv); handled {
		return err
	}
	inv.startup()
	log := inv.log
	defer func() {
		if retErr != nil {
			log.Error("DEL failed", append([]any{"err", retErr, "took", time.Since(start)}, inv.phases...)...)
		} else {
			log.Info("DEL done", append([]any{"took", time.Since(start)}, inv.phases...)...)
		}
	}()
	var errs []error
	t := time.Now()
	vethLeft := false
	if err := p.Dataplane.Remove(inv.hostIf); err != nil {
		errs = append(errs, fmt.Errorf("remove veth: %w", err))
		vethLeft = true
	}
	inv.phase("wire", t)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	t = time.Now()
	be, err := p.connect(ctx, inv)
	if err != nil {
		return err
	}
	defer be.Close()
	inv.phase("connect", t)
	t = time.Now()
	if err := deleteEndpointOf(ctx, be, inv.namespace, inv.wepName, args.ContainerID); err != nil {
		errs = append(errs, err)
	}
	inv.phase("endpoint", t)
	t = time.Now()
	if vethLeft {
		// Its route still leads to the old pod: the address stays held until a retried DEL
		// removes the veth, so it cannot be handed to another pod meanwhile.
		log.Warn("veth not removed; keeping the addresses until DEL is retried", "handle", inv.handle)
	} else if err := be.ReleaseHandle(ctx, inv.handle); err != nil {
		errs = append(errs, fmt.Errorf("release addresses of %s: %w", inv.handle, err))
	}
	inv.phase("ipam", t)
	if len(errs) > 0 {
		return toCNIError(errors.Join(errs...))
	}
	return nil
}

// deleteEndpointOf deletes the endpoint if it still belongs to containerID: a newer sandbox of the
// same pod may have replaced it, and its DEL must not take the newer one's endpoint.
func deleteEndpointOf(ctx context.Context, be Backend, namespace, name, containerID string) error {
	w, err := be.GetEndpoint(ctx, namespace, name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read workload endpoint %s/%s: %w", namespace, name, err)
	}
	if w.Spec.ContainerID != containerID {
		return nil
	}
	if err := be.DeleteEndpoint(ctx, namespace, name, w.Metadata.ResourceVersion); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete workload endpoint %s/%s: %w", namespace, name, err)
	}
	return nil
}

// print writes res, converted to the configuration's version, to stdout.
func (p *Plugin) print(res types.Result, cniVersion string) error {
	r, err := res.GetAsVersion(cniVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("convert result to %s: %v", cniVersion, err), "")
	}
	if err := r.PrintTo(p.stdout()); err != nil {
		return types.NewError(types.ErrIOFailure, fmt.Sprintf("write result: %v", err), "")
	}
	return nil
}

// netnsPath is the path the command enters the pod's namespace by (see NetnsHandle).
func (p *Plugin) netnsPath(args *skel.CmdArgs) string {
	if p.NetnsHandle != "" {
		return p.NetnsHandle
	}
	return args.Netns
}
