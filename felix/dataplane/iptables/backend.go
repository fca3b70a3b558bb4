package iptables

import (
	"context"
	"fmt"
	"strings"

	"github.com/terracenet/terrace/felix/dataplane/cmdrun"
)

// Backend is the iptables implementation in use: both exist on Debian and mixing them in one
// namespace makes rules invisible to the other, so one is detected and used for everything.
type Backend string

const (
	BackendLegacy Backend = "legacy"
	BackendNFT    Backend = "nft"
)

// ExecRunner runs the *-save / *-restore binaries of one back end and IP version.
type ExecRunner struct {
	Cmd        cmdrun.Runner
	SaveBin    string
	RestoreBin string
	// RestoreArgs come before the input; --noflush is what keeps other tools' rules intact.
	RestoreArgs []string
}

// NewExecRunner picks the binaries for backend and ipVersion (4 or 6).
func NewExecRunner(cmd cmdrun.Runner, backend Backend, ipVersion int) *ExecRunner {
	base := "iptables"
	if ipVersion == 6 {
		base = "ip6tables"
	}
	args := []string{"--noflush"}
	if backend == BackendLegacy {
		// Legacy takes the xtables lock; wait for it rather than failing against kube-proxy & co.
		args = append(args, "--wait=10")
	}
	return &ExecRunner{
		Cmd:         cmd,
		SaveBin:     base + "-" + string(backend) + "-save",
		RestoreBin:  base + "-" + string(backend) + "-restore",
		RestoreArgs: args,
	}
}

// Save implements Runner.
func (r *ExecRunner) Save(ctx context.Context, table string) ([]byte, error) {
	out, err := r.Cmd.Run(ctx, nil, r.SaveBin, "-t", table)
	if err != nil {
		return nil, fmt.Errorf("save table %s: %w", table, err)
	}
	return out, nil
}

// Restore implements Runner.
func (r *ExecRunner) Restore(ctx context.Context, input []byte) error {
	if _, err := r.Cmd.Run(ctx, input, r.RestoreBin, r.RestoreArgs...); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// DetectBackend chooses the back end that already holds rules in the namespace (so Terrace lands
// next to kube-proxy or docker rather than beside them), falling back to what "iptables -V" says
// the system default is, and to nft when nothing answers.
func DetectBackend(ctx context.Context, cmd cmdrun.Runner) Backend {
	count := func(b Backend) int {
		n := 0
		for _, bin := range []string{"iptables-" + string(b) + "-save", "ip6tables-" + string(b) + "-save"} {
			out, err := cmd.Run(ctx, nil, bin)
			if err != nil {
				continue
			}
			n += countRules(out)
		}
		return n
	}
	legacy, nft := count(BackendLegacy), count(BackendNFT)
	switch {
	case legacy > nft:
		return BackendLegacy
	case nft > legacy:
		return BackendNFT
	}
	out, err := cmd.Run(ctx, nil, "iptables", "-V")
	if err == nil {
		if b, ok := ParseVersionBackend(string(out)); ok {
			return b
		}
	}
	return BackendNFT
}

// ParseVersionBackend reads "iptables v1.8.9 (nf_tables)" / "(legacy)".
func ParseVersionBackend(v string) (Backend, bool) {
	switch {
	case strings.Contains(v, "(nf_tables)"):
		return BackendNFT, true
	case strings.Contains(v, "(legacy)"):
		return BackendLegacy, true
	}
	return "", false
}

func countRules(save []byte) int {
	n := 0
	for _, l := range strings.Split(string(save), "\n") {
		if strings.HasPrefix(l, "-A ") {
			n++
		}
	}
	return n
}
