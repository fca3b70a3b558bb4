package testbed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ProcStatus is one daemon in Status.
type ProcStatus struct {
	Where string `json:"where"` // ctl, tor-1, host-2
	What  string `json:"what"`  // etcd, bird, terrace-node
	Pid   int    `json:"pid"`
	Alive bool   `json:"alive"`
	Log   string `json:"log"`
}

// NSStatus is one namespace in Status.
type NSStatus struct {
	Name   string `json:"name"`
	Role   string `json:"role"`
	Exists bool   `json:"exists"`
}

// Status is what `terrace-testbed status` shows.
type Status struct {
	StateDir   string       `json:"stateDir"`
	Namespaces []NSStatus   `json:"namespaces"`
	Processes  []ProcStatus `json:"processes"`
	Sessions   []BGPSession `json:"sessions"`
	Pods       []PodState   `json:"pods"`
	Warnings   []string     `json:"warnings,omitempty"`
	Errors     []string     `json:"errors,omitempty"`
}

// Status reports namespaces, processes with pids, the ToRs' BGP sessions and the pods.
func (tb *Testbed) Status(ctx context.Context) Status {
	st := tb.st
	s := Status{StateDir: st.Options.StateDir, Pods: tb.Pods(), Warnings: st.Warnings}
	add := func(ns, role string) {
		s.Namespaces = append(s.Namespaces, NSStatus{Name: ns, Role: role, Exists: nsExists(ns)})
	}
	add(st.Ctl.NS, "ctl")
	for _, t := range st.Tors {
		add(t.NS, t.Name)
	}
	for _, h := range st.Hosts {
		add(h.NS, h.Name)
	}
	for _, p := range s.Pods {
		add(p.NS, p.Host+"/"+p.Name)
	}
	proc := func(where, what string, p *Proc, log string) {
		if p == nil {
			return
		}
		s.Processes = append(s.Processes, ProcStatus{Where: where, What: what, Pid: p.Pid, Alive: p.Alive(), Log: log})
	}
	proc("ctl", "etcd", st.Ctl.Etcd, filepath.Join(st.Ctl.Dir, "etcd.log"))
	for _, t := range st.Tors {
		proc(t.Name, "bird", t.Bird, filepath.Join(t.Dir, "bird.log"))
	}
	for _, h := range st.Hosts {
		proc(h.Name, "terrace-node", h.Node, h.LogFile)
		proc(h.Name, "bird", h.Bird, filepath.Join(h.Dir, "bird.log"))
	}
	for _, t := range st.Tors {
		if !t.Bird.Alive() {
			continue
		}
		ss, err := tb.TorSessions(ctx, t.Name)
		if err != nil {
			s.Errors = append(s.Errors, err.Error())
		}
		s.Sessions = append(s.Sessions, ss...)
	}
	return s
}

// Namespace resolves a target (ctl, tor-N, host-N, host-N/POD) to its namespace name.
func (tb *Testbed) Namespace(target string) (string, error) {
	t, err := ParseTarget(target)
	if err != nil {
		return "", err
	}
	if t.Pod != "" {
		if _, ok := tb.st.pod(t.Node, t.Pod); !ok {
			return "", fmt.Errorf("find pod %s: %w: no such pod", target, ErrInvalid)
		}
		return tb.podNS(t.Node, t.Pod), nil
	}
	switch {
	case t.Node == "ctl":
		return tb.st.Ctl.NS, nil
	case strings.HasPrefix(t.Node, "tor-"):
		tor, err := tb.st.tor(t.Node)
		if err != nil {
			return "", err
		}
		return tor.NS, nil
	}
	h, err := tb.st.host(t.Node)
	if err != nil {
		return "", err
	}
	return h.NS, nil
}

// Command prepares argv to run inside a target's namespace with bin/ on PATH and, for a host or a
// pod on it, TERRACE_ETCD_ENDPOINTS and TERRACE_NODE_SOCKET of that host. Stdio is the caller's.
func (tb *Testbed) Command(ctx context.Context, target string, argv ...string) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("exec in %s: %w: no command", target, ErrInvalid)
	}
	ns, err := tb.Namespace(target)
	if err != nil {
		return nil, err
	}
	t, _ := ParseTarget(target)
	var h *HostState
	if strings.HasPrefix(t.Node, "host-") {
		h, _ = tb.st.host(t.Node)
	}
	cmd := tb.command(ctx, ns, h, argv)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd, nil
}

// Output runs argv inside a target and returns its combined output.
func (tb *Testbed) Output(ctx context.Context, target string, argv ...string) (string, error) {
	cmd, err := tb.Command(ctx, target, argv...)
	if err != nil {
		return "", err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("exec %s in %s: %w: %s", argv[0], target, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
