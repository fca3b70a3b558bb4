// Package shim is the terrace-cni binary: it hands ADD, DEL and CHECK to the node agent, which
// runs them warm (cni/agentrun.go), and replaces itself with terrace-cni-etcd, the complete
// plugin, for everything else and whenever the agent does not take a command. Every pod pays this
// process's start-up, so it must never link netlink, the datastore types, an etcd client or
// net/http, and it never changes anything itself: each command is done by the agent or by the
// fallback, never half by each.
package shim

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/terracenet/terrace/node/nodeapi"
)

// SupportedVersions are the CNI spec versions Terrace's plugins answer for.
var SupportedVersions = version.PluginSupports("0.4.0", "1.0.0", "1.1.0")

// Names of the installed binaries and the plugin types.
const (
	// FallbackBinary is the etcd-linked plugin the shim hands commands to; it sits beside terrace-cni.
	FallbackBinary = "terrace-cni-etcd"
	// IPAMName is the name under which the binary is the IPAM plugin alone (a link to terrace-cni).
	IPAMName = "terrace-ipam"
)

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

// Main runs the shim, as terrace-cni or (through a link) terrace-ipam.
func Main() {
	// One thread does all there is to do (read, one request, wait, write); with more, idle
	// threads spin looking for work while the agent answers, CPU that eight pods starting at
	// once on a small host pay for (about 1.5 ms per call here).
	runtime.GOMAXPROCS(1)
	if filepath.Base(os.Args[0]) == IPAMName {
		ipam := func(cmd string) func(*skel.CmdArgs) error { return command(IPAMName, cmd) }
		skel.PluginMainFuncs(skel.CNIFuncs{Add: ipam("ADD"), Del: ipam("DEL"), Check: ipam("CHECK"), Status: handOver, GC: handOver},
			SupportedVersions, "terrace-ipam: Terrace IPAM plugin")
		return
	}
	skel.PluginMainFuncs(skel.CNIFuncs{Add: command("", "ADD"), Del: command("", "DEL"), Check: command("", "CHECK"), Status: handOver, GC: handOver},
		SupportedVersions, "terrace-cni: Terrace pure-L3 CNI plugin")
}

// netConf is the part of the network configuration the shim needs; the rest is the agent's or the
// fallback's to read and check.
type netConf struct {
	NodeSocket         string `json:"node_socket"`
	NodeSocketAlt      string `json:"nodeSocket"`
	LogFilePath        string `json:"log_file_path"`
	PolicySetupTimeout int    `json:"policy_setup_timeout_seconds"`
}

func readConf(stdin []byte) (netConf, error) {
	var nc netConf
	if err := json.Unmarshal(stdin, &nc); err != nil {
		return nc, types.NewError(types.ErrDecodingFailure, "decode network configuration: "+err.Error(), "")
	}
	nc.NodeSocket = cmp.Or(nc.NodeSocket, nc.NodeSocketAlt, strings.TrimSpace(os.Getenv(EnvNodeSocket)), DefaultNodeSocket)
	nc.LogFilePath = cmp.Or(nc.LogFilePath, strings.TrimSpace(os.Getenv(EnvLogFile)), DefaultLogFile)
	return nc, nil
}

// command returns the skel function for cmd of plugin ("" or IPAMName): to the agent, or to the
// fallback if the agent does not take it.
func command(plugin, cmd string) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		nc, err := readConf(args.StdinData)
		if err != nil {
			return err
		}
		req := Request(cmd, args, os.Getenv, FailPoint())
		req.Plugin = plugin
		budget := CommandBudget + time.Duration(max(nc.PolicySetupTimeout, 0))*time.Second
		ctx, cancel := context.WithTimeout(context.Background(), budget)
		defer cancel()
		result, taken, why, err := Forward(ctx, nc.NodeSocket, req)
		if !taken {
			logTo(nc.LogFilePath, "node agent did not take the command; handing it to "+FallbackBinary, "cmd", cmd, "containerID", args.ContainerID, "socket", nc.NodeSocket, "reason", why.Reason)
			mode := FallbackNoAgent
			if why.AgentUsable {
				mode = FallbackUseAgent
			}
			return handOverWith(args, nc.LogFilePath, mode)
		}
		if err != nil {
			return err
		}
		if _, err := os.Stdout.Write(result); err != nil {
			return types.NewError(types.ErrIOFailure, fmt.Sprintf("write result: %v", err), "")
		}
		return nil
	}
}

// Request builds the agent's request for one command; getenv supplies the TERRACE_* variables.
func Request(cmd string, args *skel.CmdArgs, getenv func(string) string, failAt string) nodeapi.CNIRequest {
	req := nodeapi.CNIRequest{
		Command: cmd, ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName,
		Args: args.Args, Path: args.Path, StdinData: args.StdinData, FailAt: failAt,
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

func handOver(args *skel.CmdArgs) error {
	nc, err := readConf(args.StdinData)
	if err != nil {
		return err
	}
	return handOverWith(args, nc.LogFilePath, FallbackUseAgent)
}

// handOverWith replaces the process with the fallback, telling it mode (FallbackEnv); it returns
// only if that fails, with the CNI error a runtime retries on.
func handOverWith(args *skel.CmdArgs, logFile, mode string) error {
	err := execFallback(args.StdinData, mode)
	logTo(logFile, "could not hand the command to "+FallbackBinary, "containerID", args.ContainerID, "err", err)
	return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("the node agent did not take the command and the etcd fallback could not run: %v", err), "")
}

// logTo appends one line to the plugin's log file, opened only when there is something to say;
// stdout belongs to the CNI protocol, so without the file the line goes to stderr.
func logTo(path, msg string, kv ...any) {
	w := os.Stderr
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
		if f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
			defer f.Close()
			w = f
		}
	}
	slog.New(slog.NewTextHandler(w, nil)).Info(msg, append([]any{"pid", os.Getpid(), "via", "terrace-cni"}, kv...)...)
}
