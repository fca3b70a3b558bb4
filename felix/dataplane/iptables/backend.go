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

// DetectBackend chooses the back end that already holds other tools' rules in the namespace (so
// Terrace lands next to kube-proxy or docker rather than beside them). Terrace's own rules are
// not counted, so that a host whose tools moved to the other back end takes Terrace with them;
// when other tools' rules do not decide, the back end that holds Terrace's rules from an earlier
// run is kept, then what "iptables -V" says the system default is, then nft.
func DetectBackend(ctx context.Context, cmd cmdrun.Runner) Backend {
	count := func(b Backend) (foreign, own int) {
		for _, bin := range []string{"iptables-" + string(b) + "-save", "ip6tables-" + string(b) + "-save"} {
			out, err := cmd.Run(ctx, nil, bin)
			if err != nil {
				continue
			}
			f, o := countRules(out)
			foreign, own = foreign+f, own+o
		}
		return foreign, own
	}
	legacy, legacyOwn := count(BackendLegacy)
	nft, nftOwn := count(BackendNFT)
	switch {
	case legacy > nft:
		return BackendLegacy
	case nft > legacy:
		return BackendNFT
	case legacyOwn > 0 && nftOwn == 0:
		return BackendLegacy
	case nftOwn > 0 && legacyOwn == 0:
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

// Other returns the back end that is not b.
func (b Backend) Other() Backend {
	if b == BackendLegacy {
		return BackendNFT
	}
	return BackendLegacy
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

// countRules counts the rules of an iptables-save output: other tools' and Terrace's (in a trc-
// chain, or carrying Terrace's comment).
func countRules(save []byte) (foreign, own int) {
	for _, l := range strings.Split(string(save), "\n") {
		if !strings.HasPrefix(l, "-A ") {
			continue
		}
		if IsOwnRuleLine(l) {
			own++
		} else {
			foreign++
		}
	}
	return foreign, own
}

// IsOwnRuleLine says whether an iptables-save "-A" line is Terrace's: in one of its chains, or
// a jump from a kernel chain that carries its comment.
func IsOwnRuleLine(l string) bool {
	chain, _, _ := strings.Cut(strings.TrimPrefix(l, "-A "), " ")
	return strings.HasPrefix(chain, ChainPrefix) ||
		strings.Contains(l, "--comment "+HashCommentPrefix) || strings.Contains(l, `--comment "`+HashCommentPrefix)
}
