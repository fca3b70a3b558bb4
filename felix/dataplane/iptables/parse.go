package iptables

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// SavedTable is one table as printed by iptables-save.
type SavedTable struct {
	Name   string
	Chains map[string]*SavedChain
	// Order lists chain names in the order they were declared.
	Order []string
}

// SavedChain is one chain with its policy ("-" for user chains) and rules in kernel order.
type SavedChain struct {
	Name   string
	Policy string
	Rules  []SavedRule
}

// SavedRule is one rule: Spec is the text after "-A <chain> "; Hash is the value of its
// "trc:" comment, empty when the rule is not Terrace's.
type SavedRule struct {
	Spec string
	Hash string
}

// ParseSave parses iptables-save output (any number of tables). It is strict about structure so a
// truncated or garbled dump is an error rather than a picture with rules missing, which the writer
// would otherwise "repair" by rewriting.
func ParseSave(data []byte) ([]*SavedTable, error) {
	var tables []*SavedTable
	var cur *SavedTable
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimRight(sc.Text(), " \t\r")
		switch {
		case strings.HasPrefix(line, "#") && strings.Contains(line, "is incompatible, use 'nft' tool"):
			// iptables-nft-save's only output for a table another tool filled with nft-only
			// expressions: read as empty, it would have the writer add its jumps again at
			// every resync.
			return nil, fmt.Errorf("parse iptables-save line %d: %s", lineNo, strings.TrimSpace(strings.TrimPrefix(line, "#")))
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "*"):
			if cur != nil {
				return nil, fmt.Errorf("parse iptables-save line %d: table %q starts before COMMIT of %q", lineNo, line[1:], cur.Name)
			}
			name := line[1:]
			if name == "" || strings.ContainsAny(name, " \t") {
				return nil, fmt.Errorf("parse iptables-save line %d: bad table name %q", lineNo, name)
			}
			cur = &SavedTable{Name: name, Chains: map[string]*SavedChain{}}
		case line == "COMMIT":
			if cur == nil {
				return nil, fmt.Errorf("parse iptables-save line %d: COMMIT outside a table", lineNo)
			}
			tables = append(tables, cur)
			cur = nil
		case strings.HasPrefix(line, ":"):
			if cur == nil {
				return nil, fmt.Errorf("parse iptables-save line %d: chain outside a table", lineNo)
			}
			f := strings.Fields(line[1:])
			if len(f) < 2 {
				return nil, fmt.Errorf("parse iptables-save line %d: bad chain declaration %q", lineNo, line)
			}
			if _, dup := cur.Chains[f[0]]; dup {
				return nil, fmt.Errorf("parse iptables-save line %d: chain %q declared twice", lineNo, f[0])
			}
			cur.Chains[f[0]] = &SavedChain{Name: f[0], Policy: f[1]}
			cur.Order = append(cur.Order, f[0])
		case strings.HasPrefix(line, "-A "):
			if cur == nil {
				return nil, fmt.Errorf("parse iptables-save line %d: rule outside a table", lineNo)
			}
			rest := strings.TrimLeft(line[3:], " ")
			chain, spec, _ := strings.Cut(rest, " ")
			c, ok := cur.Chains[chain]
			if !ok || chain == "" {
				return nil, fmt.Errorf("parse iptables-save line %d: rule for undeclared chain %q", lineNo, chain)
			}
			spec = strings.TrimSpace(spec)
			hash, err := hashOf(spec)
			if err != nil {
				return nil, fmt.Errorf("parse iptables-save line %d: %w", lineNo, err)
			}
			c.Rules = append(c.Rules, SavedRule{Spec: spec, Hash: hash})
		default:
			return nil, fmt.Errorf("parse iptables-save line %d: unexpected %q", lineNo, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read iptables-save output: %w", err)
	}
	if cur != nil {
		return nil, fmt.Errorf("parse iptables-save: table %q has no COMMIT", cur.Name)
	}
	return tables, nil
}

// hashOf finds the first "--comment trc:..." value of a rule spec.
func hashOf(spec string) (string, error) {
	toks, err := splitArgs(spec)
	if err != nil {
		return "", err
	}
	for i := 0; i+1 < len(toks); i++ {
		if toks[i] == "--comment" && strings.HasPrefix(toks[i+1], HashCommentPrefix) {
			return toks[i+1][len(HashCommentPrefix):], nil
		}
	}
	return "", nil
}

// splitArgs splits a rule spec the way iptables-restore does: white space separates words, double
// quotes group, and a backslash escapes the next character inside quotes.
func splitArgs(s string) ([]string, error) {
	var out []string
	var b strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		case c == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (c == ' ' || c == '\t'):
			if have {
				out = append(out, b.String())
				b.Reset()
				have = false
			}
		default:
			b.WriteByte(c)
			have = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("split rule %q: unterminated quote", s)
	}
	if have {
		out = append(out, b.String())
	}
	return out, nil
}

// Render prints the table in iptables-save syntax (without counters).
func (t *SavedTable) Render() string {
	var b strings.Builder
	b.WriteString("*" + t.Name + "\n")
	for _, n := range t.Order {
		b.WriteString(":" + n + " " + t.Chains[n].Policy + " [0:0]\n")
	}
	for _, n := range t.Order {
		for _, r := range t.Chains[n].Rules {
			b.WriteString("-A " + n + " " + r.Spec + "\n")
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}
