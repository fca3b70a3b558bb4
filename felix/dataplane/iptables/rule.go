package iptables

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
)

const (
	// ChainPrefix marks every chain Terrace owns.
	ChainPrefix = "trc-"
	// MaxChainNameLen is the kernel's limit (XT_EXTENSION_MAXNAMELEN - 1 minus room for nft).
	MaxChainNameLen = 28
	// HashCommentPrefix starts the comment that identifies a rule as Terrace's.
	HashCommentPrefix = "trc:"
	// DefaultInsertComment is added to jumps in kernel chains so a human reading iptables-save
	// sees which product put them there.
	DefaultInsertComment = "terrace"
	hashLen              = 16
	maxCommentLen        = 256
)

// Rule is one iptables rule without its chain: Match holds the match options ("-p tcp --dport 80
// -m set --match-set trcX src"), Action the target ("-j ACCEPT", "-g trc-x", "-j MARK --set-mark
// 0x1"). Comment is an optional human comment rendered after the hash comment.
type Rule struct {
	Match   string
	Action  string
	Comment string
}

// Chain is a desired trc- chain.
type Chain struct {
	Name  string
	Rules []Rule
}

// content is the position-independent part of a rule that goes into its hash.
func (r Rule) content() string {
	return r.Match + "\x00" + r.Action + "\x00" + r.Comment
}

func (r Rule) validate() error {
	for _, s := range []string{r.Match, r.Action, r.Comment} {
		if strings.ContainsAny(s, "\n\r\x00") {
			return fmt.Errorf("validate rule %q: contains a line break or NUL", s)
		}
	}
	if strings.Contains(r.Comment, `"`) || len(r.Comment) > maxCommentLen {
		return fmt.Errorf("validate rule comment %q: must be at most %d characters without quotes", r.Comment, maxCommentLen)
	}
	if strings.TrimSpace(r.Action) == "" && strings.TrimSpace(r.Match) == "" {
		return fmt.Errorf("validate rule: empty match and action")
	}
	// An unbalanced quote would swallow the rest of the restore input: refuse this rule alone
	// rather than break the whole table's transaction.
	for _, s := range []string{r.Match, r.Action} {
		if _, err := splitArgs(s); err != nil {
			return fmt.Errorf("validate rule: %w", err)
		}
	}
	return nil
}

// ValidateChainName checks a chain name is one Terrace may own.
func ValidateChainName(name string) error {
	if !strings.HasPrefix(name, ChainPrefix) {
		return fmt.Errorf("validate chain name %q: missing prefix %q", name, ChainPrefix)
	}
	if len(name) > MaxChainNameLen {
		return fmt.Errorf("validate chain name %q: longer than %d characters", name, MaxChainNameLen)
	}
	if strings.ContainsAny(name, " \t\n\"'") {
		return fmt.Errorf("validate chain name %q: contains white space or quotes", name)
	}
	return nil
}

// RuleHashes returns the hash comment value of each rule. Like Felix, each hash covers the chain
// name, the rule's content and the previous rule's hash, so equal hashes at position i mean the
// chain is identical up to i and the writer can skip those rules.
func RuleHashes(chain string, rules []Rule) []string {
	out := make([]string, len(rules))
	prev := ""
	for i, r := range rules {
		sum := sha256.Sum256([]byte(chain + "\x00" + prev + "\x00" + r.content()))
		prev = base64.RawURLEncoding.EncodeToString(sum[:])[:hashLen]
		out[i] = prev
	}
	return out
}

// insertHashes salts kernel-chain insertions so they never collide with a trc- chain's hashes.
func insertHashes(kernelChain string, rules []Rule) []string {
	return RuleHashes("insert:"+kernelChain, rules)
}

// renderSpec renders the rule spec (everything after "-A chain") carrying hash as its comment.
func renderSpec(r Rule, hash string) string {
	var b strings.Builder
	b.WriteString(`-m comment --comment "`)
	b.WriteString(HashCommentPrefix)
	b.WriteString(hash)
	b.WriteString(`"`)
	if r.Comment != "" {
		b.WriteString(` -m comment --comment "`)
		b.WriteString(r.Comment)
		b.WriteString(`"`)
	}
	if m := strings.TrimSpace(r.Match); m != "" {
		b.WriteString(" ")
		b.WriteString(m)
	}
	if a := strings.TrimSpace(r.Action); a != "" {
		b.WriteString(" ")
		b.WriteString(a)
	}
	return b.String()
}

// ChainName derives a chain name from a short kind ("pi", "po", "fw" ...) and an identity (an
// endpoint or policy key): "trc-<kind>-" plus as much of a hash as fits in MaxChainNameLen, so the
// same identity maps to the same chain across restarts.
func ChainName(kind, identity string) string {
	sum := sha256.Sum256([]byte(identity))
	name := ChainPrefix + kind + "-" + base64.RawURLEncoding.EncodeToString(sum[:])
	if len(name) > MaxChainNameLen {
		name = name[:MaxChainNameLen]
	}
	return name
}
