// Package cmdrun runs the dataplane's external tools (iptables-restore, ipset ...) for the felix
// writers, optionally inside a named network namespace via "ip netns exec". It owns nothing in the
// kernel itself and must never run a tool through a shell: arguments are passed as a vector.
package cmdrun

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Runner runs one command with stdin and returns its stdout. Writers depend on this instead of
// os/exec so unit tests can record and script the tools.
type Runner interface {
	Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)
}

// Exec runs commands on the host. Prefix is prepended to every command line, which is how tests
// and the testbed point a writer at a network namespace ("ip", "netns", "exec", NAME).
type Exec struct {
	Prefix []string
}

// InNetns returns an Exec that runs every command inside the named network namespace (one made by
// "ip netns add"). It uses nsenter, which switches only the network namespace: "ip netns exec"
// also builds a mount namespace and remounts /sys, which costs ~40 ms per command here.
func InNetns(name string) Exec {
	return Exec{Prefix: []string{"nsenter", "--net=/run/netns/" + name, "--"}}
}

// Run implements Runner. The error carries the tool's stderr because that is the only place
// iptables-restore and ipset say which line failed.
func (e Exec) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	argv := append(append(append([]string{}, e.Prefix...), name), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("run %s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}
