// Package shim is the terrace-cni binary: it hands ADD, DEL and CHECK to the node agent, which
// runs them warm (cni/agentrun.go), and replaces itself with terrace-cni-etcd, the complete
// plugin, for everything else and whenever the agent does not take a command. Every pod pays this
// process's start-up, so it must never link netlink, the datastore types, an etcd client, the CNI
// library (skel and its types pull in regexp and net), net or log/slog (fmt comes with
// encoding/json and is used by nothing else); and it never changes anything itself: each command
// is done by the agent or by the fallback, never half by each. It checks nothing it can leave to
// them: the agent applies skel's checks to what it is sent (cni.CheckCall), the fallback is skel
// itself, so the runtime gets the same errors either way.
package shim

import (
	"cmp"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/terracenet/terrace/node/nodeapi"
)

// SupportedVersions are the CNI spec versions Terrace's plugins answer for; CurrentVersion is the
// one VERSION reports as its own (the newest).
var SupportedVersions = []string{"0.4.0", "1.0.0", "1.1.0"}

const CurrentVersion = "1.1.0"

// Names of the installed binaries and the plugin types.
const (
	// FallbackBinary is the etcd-linked plugin the shim hands commands to; it sits beside terrace-cni.
	FallbackBinary = "terrace-cni-etcd"
	// IPAMName is the name under which the binary is the IPAM plugin alone (a link to terrace-cni).
	IPAMName = "terrace-ipam"
)

// About is what a plugin prints on stderr when run without CNI_COMMAND, by name.
var About = map[string]string{
	"":       "terrace-cni: Terrace pure-L3 CNI plugin",
	IPAMName: "terrace-ipam: Terrace IPAM plugin",
}

// FallbackEnv is set in the environment of the plugin started in place of the shim, which never
// hands over again. Its value says whether the agent is worth asking: FallbackNoAgent when the
// agent did not answer, was not ready or serves another node (go to etcd directly);
// FallbackUseAgent for commands the shim does not send (IPAM, GC, STATUS) and for an agent that
// runs no commands but may still serve the datastore calls.
const (
	FallbackEnv      = "TERRACE_CNI_FALLBACK"
	FallbackNoAgent  = "1"
	FallbackUseAgent = "use-agent"
)

// Configuration keys and defaults the shim reads (package cni resolves the same ones, with the
// same precedence: the network configuration, then the environment, then the default).
const (
	EnvNodeSocket     = "TERRACE_NODE_SOCKET"
	EnvLogFile        = "TERRACE_LOG_FILE"
	DefaultNodeSocket = "/var/run/terrace/node.sock"
	DefaultLogFile    = "/var/log/terrace/cni.log"
)

// TerraceEnv are the variables a network configuration falls back on; the shim sends the ones it
// has with each command, since the agent's environment is not the runtime's.
var TerraceEnv = []string{"TERRACE_ETCD_ENDPOINTS", "TERRACE_ETCD_CA", "TERRACE_ETCD_CERT", "TERRACE_ETCD_KEY",
	"TERRACE_NODE_NAME", EnvNodeSocket, "TERRACE_LOG_LEVEL", EnvLogFile}

// CommandBudget bounds the wait for a command the agent runs, beyond the policy wait it may be
// asked for: the agent's own limits are 30 s for the work and 15 s for undoing it.
const CommandBudget = 50 * time.Second

// maxPolicyWaitSeconds is cni.MaxPolicySetupTimeoutSeconds (the shim does not link package cni).
const maxPolicyWaitSeconds = 3600

// CNI error codes the shim itself returns (the spec's numbers).
const (
	ErrIOFailure     = 5
	ErrTryAgainLater = 11
	ErrInternal      = 999
)

// Args is one invocation as the runtime gave it: the CNI_* variables and the configuration.
type Args struct {
	ContainerID, Netns, IfName, Args, Path, NetnsOverride string
	StdinData                                             []byte
}

// Main runs the shim, as terrace-cni or (through a link) terrace-ipam, and exits.
func Main() {
	// One thread does all there is to do (read, one request, wait, write); with more, idle
	// threads spin looking for work while the agent answers, CPU that eight pods starting at
	// once on a small host pay for (about 1.5 ms per call here).
	runtime.GOMAXPROCS(1)
	env := environment{getenv: os.Getenv, stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, handOver: execFallback}
	os.Exit(env.run(filepath.Base(os.Args[0])))
}

// environment is what run touches, so tests can drive it without a process of its own.
type environment struct {
	getenv         func(string) string
	stdin          io.Reader
	stdout, stderr io.Writer
	handOver       func(stdin []byte, mode string) error // returns only on failure
}

// run does one invocation and returns the exit status: 0, or 1 with a CNI error on stdout.
func (e environment) run(name string) int {
	plugin := ""
	if name == IPAMName {
		plugin = IPAMName
	}
	switch cmd := e.getenv("CNI_COMMAND"); cmd {
	case "":
		// skel's behaviour, for a person trying the binary by hand.
		io.WriteString(e.stderr, About[plugin]+"\nCNI protocol versions supported: "+strings.Join(SupportedVersions, ", ")+"\n")
		return 0
	case "VERSION":
		out, _ := json.Marshal(struct {
			CNIVersion        string   `json:"cniVersion"`
			SupportedVersions []string `json:"supportedVersions"`
		}{CurrentVersion, SupportedVersions})
		if _, err := e.stdout.Write(append(out, '\n')); err != nil {
			return e.fail(&nodeapi.CNIError{Code: ErrIOFailure, Msg: "write version: " + err.Error()})
		}
		return 0
	case "ADD", "DEL", "CHECK":
		return e.command(plugin, cmd)
	default:
		// GC, STATUS, and anything unknown: the complete plugin answers (or says what is wrong).
		stdin, err := io.ReadAll(e.stdin)
		if err != nil {
			return e.fail(&nodeapi.CNIError{Code: ErrIOFailure, Msg: "error reading from stdin: " + err.Error()})
		}
		return e.handOverWith(stdin, readConf(stdin).LogFilePath, FallbackUseAgent, "cmd", cmd, "containerID", e.getenv("CNI_CONTAINERID"))
	}
}

// command sends cmd of plugin ("" or IPAMName) to the agent, or hands it to the fallback if the
// agent does not take it.
func (e environment) command(plugin, cmd string) int {
	stdin, err := io.ReadAll(e.stdin)
	if err != nil {
		return e.fail(&nodeapi.CNIError{Code: ErrIOFailure, Msg: "error reading from stdin: " + err.Error()})
	}
	nc := readConf(stdin)
	if !nc.valid {
		// The complete plugin reports what is wrong with it, in skel's words.
		return e.handOverWith(stdin, nc.LogFilePath, FallbackUseAgent, "cmd", cmd, "containerID", e.getenv("CNI_CONTAINERID"))
	}
	args := Args{ContainerID: e.getenv("CNI_CONTAINERID"), Netns: e.getenv("CNI_NETNS"), IfName: e.getenv("CNI_IFNAME"),
		Args: e.getenv("CNI_ARGS"), Path: e.getenv("CNI_PATH"), NetnsOverride: e.getenv("CNI_NETNS_OVERRIDE"), StdinData: stdin}
	if v, ok := notUTF8(args); ok {
		// The request travels as JSON, which would replace such bytes: the plugin that reads
		// the environment itself sees them as the runtime gave them.
		logTo(nc.LogFilePath, "a CNI variable is not valid UTF-8; handing the command to "+FallbackBinary,
			"cmd", cmd, "variable", v)
		return e.handOverWith(stdin, nc.LogFilePath, FallbackNoAgent, "cmd", cmd, "containerID", args.ContainerID)
	}
	req := Request(cmd, args, e.getenv, FailPoint())
	req.Plugin = plugin
	req.Unchecked = true // see nodeapi.CNIRequest: an agent that does not check refuses it
	// Likewise an agent that knows no requested addresses.
	req.RequestsAddresses = len(nc.RuntimeConfig.IPs) > 0 || len(nc.Args.CNI.IPs) > 0 || argsRequestIP(args.Args)
	// Bounded as the plugin bounds it (cni.MaxPolicySetupTimeoutSeconds, which refuses more): a
	// huge value would overflow the deadline into the past and fail every command unsent.
	budget := CommandBudget + time.Duration(min(max(nc.PolicySetupTimeout, 0), maxPolicyWaitSeconds))*time.Second
	result, taken, why, cerr := Forward(time.Now().Add(budget), nc.NodeSocket, req)
	if !taken {
		logTo(nc.LogFilePath, "node agent did not take the command; handing it to "+FallbackBinary,
			"cmd", cmd, "containerID", args.ContainerID, "socket", nc.NodeSocket, "reason", why.Reason)
		mode := FallbackNoAgent
		if why.AgentUsable {
			mode = FallbackUseAgent
		}
		return e.handOverWith(stdin, nc.LogFilePath, mode, "cmd", cmd, "containerID", args.ContainerID)
	}
	if cerr != nil {
		return e.fail(cerr)
	}
	if _, err := e.stdout.Write(result); err != nil {
		return e.fail(&nodeapi.CNIError{Code: ErrIOFailure, Msg: "write result: " + err.Error()})
	}
	return 0
}

// notUTF8 names the first CNI variable that is not valid UTF-8.
func notUTF8(a Args) (string, bool) {
	for _, v := range []struct{ name, value string }{{"CNI_CONTAINERID", a.ContainerID}, {"CNI_NETNS", a.Netns},
		{"CNI_IFNAME", a.IfName}, {"CNI_ARGS", a.Args}, {"CNI_PATH", a.Path}, {"CNI_NETNS_OVERRIDE", a.NetnsOverride}} {
		if !utf8.ValidString(v.value) {
			return v.name, true
		}
	}
	return "", false
}

// fail prints a CNI error the way skel does and returns the exit status for it.
func (e environment) fail(ce *nodeapi.CNIError) int {
	out, _ := json.MarshalIndent(ce, "", "    ")
	e.stdout.Write(out)
	return 1
}

// handOverWith replaces the process with the fallback, telling it mode (FallbackEnv); it returns
// only if that fails, with the CNI error a runtime retries on.
func (e environment) handOverWith(stdin []byte, logFile, mode string, kv ...string) int {
	err := e.handOver(stdin, mode)
	if err == nil {
		return 0 // only a test's stand-in returns without an error: a real exec does not return
	}
	logTo(logFile, "could not hand the command to "+FallbackBinary, append(kv, "err", err.Error())...)
	return e.fail(&nodeapi.CNIError{Code: ErrTryAgainLater, Msg: "the node agent did not take the command and the etcd fallback could not run: " + err.Error()})
}

// netConf is the part of the network configuration the shim needs; the rest is the agent's or the
// fallback's to read and check.
type netConf struct {
	NodeSocket         string `json:"node_socket"`
	NodeSocketAlt      string `json:"nodeSocket"`
	LogFilePath        string `json:"log_file_path"`
	PolicySetupTimeout int    `json:"policy_setup_timeout_seconds"`
	// Requested addresses are only looked for, not read: the agent (or the fallback) parses them.
	RuntimeConfig struct {
		IPs []json.RawMessage `json:"ips"`
	} `json:"runtimeConfig"`
	Args struct {
		CNI struct {
			IPs []json.RawMessage `json:"ips"`
		} `json:"cni"`
	} `json:"args"`
	valid bool // the configuration is a JSON object
}

// readConf reads what the shim needs, with the defaults filled in also when the configuration is
// not valid JSON (the log file is still wanted then).
func readConf(stdin []byte) netConf {
	var nc netConf
	nc.valid = json.Unmarshal(stdin, &nc) == nil
	nc.NodeSocket = cmp.Or(nc.NodeSocket, nc.NodeSocketAlt, strings.TrimSpace(os.Getenv(EnvNodeSocket)), DefaultNodeSocket)
	nc.LogFilePath = cmp.Or(nc.LogFilePath, strings.TrimSpace(os.Getenv(EnvLogFile)), DefaultLogFile)
	return nc
}

// argsRequestIP tells whether CNI_ARGS ("K=V;K=V") has an IP key.
func argsRequestIP(cniArgs string) bool {
	for _, kv := range strings.Split(cniArgs, ";") {
		if k, _, _ := strings.Cut(kv, "="); k == "IP" {
			return true
		}
	}
	return false
}

// Request builds the agent's request for one command; getenv supplies the TERRACE_* variables.
func Request(cmd string, args Args, getenv func(string) string, failAt string) nodeapi.CNIRequest {
	req := nodeapi.CNIRequest{
		Command: cmd, ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName,
		Args: args.Args, Path: args.Path, StdinData: args.StdinData, FailAt: failAt, NetnsOverride: args.NetnsOverride,
	}
	for _, k := range TerraceEnv {
		if v := getenv(k); v != "" {
			if req.Env == nil {
				req.Env = map[string]string{}
			}
			req.Env[k] = v
		}
	}
	if h, err := os.Hostname(); err == nil {
		req.Hostname = h
	}
	req.PluginPid = os.Getpid()
	if args.Netns != "" {
		// Not seeing it is for the agent to handle: ADD and CHECK then fail with the reason.
		req.NetnsDev, req.NetnsIno, _ = StatNetns(args.Netns)
	}
	return req
}

// logTo appends one line to the plugin's log file, in the plugin's own format (log/slog's text
// handler), opened only when there is something to say; stdout belongs to the CNI protocol, so
// without the file the line goes to stderr.
func logTo(path, msg string, kv ...string) {
	var w io.Writer = os.Stderr
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
		if f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
			defer f.Close()
			w = f
		}
	}
	io.WriteString(w, logLine(time.Now(), msg, append([]string{"pid", strconv.Itoa(os.Getpid()), "via", "terrace-cni"}, kv...)...))
}

// logLine formats one INFO record as log/slog's text handler does: key=value pairs, a value
// quoted when it is empty or holds a space, a quote, an equals sign, an ASCII control character
// (DEL is not one to slog) or a rune that is not printable or not valid.
func logLine(t time.Time, msg string, kv ...string) string {
	var b strings.Builder
	b.WriteString("time=" + t.Format("2006-01-02T15:04:05.000Z07:00") + " level=INFO msg=" + logValue(msg))
	for i := 0; i+1 < len(kv); i += 2 {
		b.WriteString(" " + kv[i] + "=" + logValue(kv[i+1]))
	}
	b.WriteByte('\n')
	return b.String()
}

func logValue(s string) string {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool {
		if r < utf8.RuneSelf {
			return r <= ' ' || r == '=' || r == '"'
		}
		return r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r)
	}) {
		return strconv.Quote(s)
	}
	return s
}
