package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/run/netns"

// run runs a command in the current (caller's) namespace and returns its combined output; the error
// carries the output so a failed `ip` call explains itself.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("run %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// ipIn runs `ip -n NS ARGS...` (ip switches only the network namespace, nothing else).
func ipIn(ctx context.Context, ns string, args ...string) error {
	_, err := run(ctx, "ip", append([]string{"-n", ns}, args...)...)
	return err
}

// ipBatch feeds several ip commands to one `ip -n NS -batch -` process: one fork instead of dozens.
func ipBatch(ctx context.Context, ns string, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	cmd := exec.CommandContext(ctx, "ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("run ip batch in %s: %w: %s", ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// sysctlIn sets sysctls inside a namespace only (ip netns exec gives sysctl that namespace's /proc/sys/net).
func sysctlIn(ctx context.Context, ns string, kv ...string) error {
	_, err := run(ctx, "ip", append([]string{"netns", "exec", ns, "sysctl", "-qw"}, kv...)...)
	return err
}

func nsExists(ns string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, ns))
	return err == nil
}

func listNamespaces() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out, nil
}

func addNamespace(ctx context.Context, ns string) error {
	if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
		return fmt.Errorf("add namespace: %w", err)
	}
	return ipIn(ctx, ns, "link", "set", "lo", "up")
}

func delNamespace(ctx context.Context, ns string) error {
	if !nsExists(ns) {
		return nil
	}
	if _, err := run(ctx, "ip", "netns", "del", ns); err != nil {
		return fmt.Errorf("delete namespace: %w", err)
	}
	return nil
}

// nsPids lists the processes whose network namespace is ns.
func nsPids(ctx context.Context, ns string) []int {
	out, err := run(ctx, "ip", "netns", "pids", ns)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if p, err := strconv.Atoi(f); err == nil && p != os.Getpid() {
			pids = append(pids, p)
		}
	}
	return pids
}

// inNetNS runs fn on a thread switched into the namespace at path. Sockets created in fn stay in that
// namespace after the thread switches back, which is how listeners and probes live inside pods.
func inNetNS(path string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open own namespace: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(path)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open namespace: %w", err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter namespace %s: %w", path, err)
	}
	fnErr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked so the runtime throws it away with the goroutine instead of
		// reusing a thread that sits in the wrong namespace.
		return errors.Join(fnErr, fmt.Errorf("leave namespace %s: %w", path, err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

// Proc is a daemon the testbed started, recorded so that later invocations can stop exactly it.
type Proc struct {
	Pid     int       `json:"pid"`
	Argv    []string  `json:"argv"`
	NS      string    `json:"netns"`
	Output  string    `json:"output"`
	Started time.Time `json:"started"`
}

// startProc starts argv inside ns as its own session (so it outlives the command that started it),
// with stdout and stderr appended to output. `ip netns exec` execs argv, so the pid is the daemon's.
func startProc(ns string, argv []string, output string, env []string) (*Proc, error) {
	f, err := os.OpenFile(output, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open output: %w", err)
	}
	defer f.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(daemonEnv(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	// Reap it when it exits so a dead daemon does not linger as a zombie that looks alive.
	go func() { _ = cmd.Wait() }()
	return &Proc{Pid: cmd.Process.Pid, Argv: argv, NS: ns, Output: output, Started: time.Now()}, nil
}

// daemonEnv is the environment of the daemons the testbed starts: the caller's, without its
// TERRACE_* settings, which would otherwise configure every terrace-node of the fabric (a
// TERRACE_FELIX=false in the operator's shell, an etcd endpoint of a real cluster).
func daemonEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "TERRACE_") })
}

// procState reads the one-letter state of pid ("" when it does not exist).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name in parentheses may contain spaces; the state follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return ""
	}
	return string(b[i+2])
}

// Alive reports whether the recorded process still runs and is still the one we started: its
// /proc/<pid>/cmdline must be our argv (or `ip netns exec NS argv` before the exec happened).
func (p *Proc) Alive() bool {
	if p == nil || p.Pid <= 0 {
		return false
	}
	if s := procState(p.Pid); s == "" || s == "Z" || s == "X" {
		return false
	}
	wrapped := append([]string{"ip", "netns", "exec", p.NS}, p.Argv...)
	// cmdline reads empty for a moment while the process execs; look again before judging.
	for try := 0; try < 10; try++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.Pid))
		if err != nil {
			return false
		}
		if len(b) == 0 {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		got := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		return slices.Equal(got, p.Argv) || slices.Equal(got, wrapped)
	}
	return false
}

// Exited reports whether the process has ended. Unlike Alive it ignores cmdline, which is briefly
// unreadable while `ip netns exec` execs the daemon right after the start.
func (p *Proc) Exited() bool {
	if p == nil || p.Pid <= 0 {
		return true
	}
	s := procState(p.Pid)
	return s == "" || s == "Z" || s == "X"
}

// Stop sends sig and waits up to grace for the process to go; then SIGKILL and another wait.
func (p *Proc) Stop(sig syscall.Signal, grace time.Duration) error {
	if !p.Alive() {
		return nil
	}
	if err := syscall.Kill(p.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal pid %d: %w", p.Pid, err)
	}
	if waitGone(p.Pid, grace) {
		waitReaped(p.Pid, 3*time.Second)
		return nil
	}
	if err := syscall.Kill(p.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill pid %d: %w", p.Pid, err)
	}
	if !waitGone(p.Pid, 5*time.Second) {
		return fmt.Errorf("stop pid %d: still running after SIGKILL", p.Pid)
	}
	waitReaped(p.Pid, 3*time.Second)
	return nil
}

// waitReaped waits (bounded) until a dead daemon has also left the process table. Daemons started
// by an earlier invocation belong to init by now, which reaps them a second or so later; waiting
// here means "down" returns with no zombie left that pgrep would still count.
func waitReaped(pid int, d time.Duration) {
	deadline := time.Now().Add(d)
	for procState(pid) != "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

func waitGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if s := procState(pid); s == "" || s == "Z" || s == "X" {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killNamespacePids ends whatever still runs inside one of our namespaces (daemons already stopped
// by pid; this catches what users started there with `exec ... &`), so the namespace really goes.
func killNamespacePids(ctx context.Context, ns string) {
	pids := nsPids(ctx, ns)
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGTERM)
	}
	for _, p := range pids {
		if !waitGone(p, 2*time.Second) {
			_ = syscall.Kill(p, syscall.SIGKILL)
			waitGone(p, 2*time.Second)
		}
	}
}

// tailFile returns the last n lines of a file, for error messages about daemons that died.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
