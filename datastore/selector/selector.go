// Package selector parses and evaluates Terrace's label selector language, which is Calico's:
//
//	all()                      every label set
//	global()                   label sets without the NamespaceLabel key (non-namespaced resources)
//	has(k), !has(k)            k present / absent
//	k == 'v', k != 'v'         equality; != is also true when k is absent
//	k in {'a','b'}             k present with one of the values
//	k not in {'a','b'}         k absent or with none of the values
//	k contains 's'             substring; k starts with 's', k ends with 's'
//	!e, e && e, e || e, (e)    with ! binding tighter than &&, and && tighter than ||
//
// Values are quoted with single or double quotes (no escapes, as in Calico); label keys are made of
// letters, digits and . _ / - (so prefixed keys like projectcalico.org/namespace work). The empty
// string means all(). A selector is parsed once and then evaluated many times without allocating.
//
// The package owns the grammar, the canonical text of a selector and its evaluation. It must never do
// I/O, log, or know about resources: callers supply labels through a map or the Labels interface.
package selector

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"slices"
	"strings"
)

// NamespaceLabel is the label every namespaced endpoint carries (Calico's name); global() is true
// exactly when it is absent.
const NamespaceLabel = "projectcalico.org/namespace"

// Labels is a read-only source of labels. Felix implements it over merged label sources (endpoint,
// namespace, service account) so that evaluation needs no intermediate map.
type Labels interface {
	Get(key string) (value string, ok bool)
}

// mapLabels adapts a plain map; a map is pointer-shaped, so converting it to Labels does not allocate.
type mapLabels map[string]string

func (m mapLabels) Get(key string) (string, bool) {
	v, ok := m[key]
	return v, ok
}

// Selector is a parsed selector expression. It is immutable and safe for concurrent use. The zero
// value behaves as all(), like the empty string, so a Selector field left unset selects everything.
type Selector struct {
	root      *node
	canonical string
	id        string
	keys      []string
}

// ParseError reports where and why a selector failed to parse.
type ParseError struct {
	Selector string // the input, verbatim
	Col      int    // 1-based column in characters (runes); len+1 means "at the end"
	Msg      string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("selector %q col %d: %s", e.Selector, e.Col, e.Msg)
}

// Parse parses a selector expression. The empty (or all-blank) string means all(). Errors are
// always *ParseError.
func Parse(s string) (*Selector, error) {
	root, err := parse(s)
	if err != nil {
		return nil, err
	}
	return newSelector(root), nil
}

// MustParse is Parse for selectors known at compile time; it panics on error.
func MustParse(s string) *Selector {
	sel, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return sel
}

// idEncoding is lower-case so IDs can be embedded in ipset and chain names without case surprises.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func newSelector(root *node) *Selector {
	var b strings.Builder
	root.write(&b)
	canonical := b.String()
	sum := sha256.Sum224([]byte(canonical))
	keySet := map[string]struct{}{}
	root.collectKeys(keySet)
	keys := make([]string, 0, len(keySet))
	for k := range keySet {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return &Selector{
		root:      root,
		canonical: canonical,
		id:        "s:" + idEncoding.EncodeToString(sum[:])[:20],
		keys:      keys,
	}
}

// Evaluate reports whether labels match the selector. A nil map is an empty label set.
func (s *Selector) Evaluate(labels map[string]string) bool {
	return s.get().root.eval(mapLabels(labels))
}

// EvaluateLabels reports whether the labels supplied by l match the selector.
func (s *Selector) EvaluateLabels(l Labels) bool {
	return s.get().root.eval(l)
}

var allSelector = newSelector(&node{kind: kindAll})

// get maps the zero value to all().
func (s *Selector) get() *Selector {
	if s.root == nil {
		return allSelector
	}
	return s
}

// String returns the canonical text of the selector: stable across spacing, quoting, set order and
// redundant parentheses, and re-parseable to an equal selector.
func (s *Selector) String() string { return s.get().canonical }

// UniqueID is a short stable hash of the canonical text ("s:" + 20 lower-case base32 characters of
// its SHA-224), meant for naming kernel objects (ipsets) derived from a selector.
func (s *Selector) UniqueID() string { return s.get().id }

// LabelKeys returns the sorted label keys whose presence or value can affect the result (global()
// contributes NamespaceLabel). The caller must not modify the slice.
func (s *Selector) LabelKeys() []string { return s.get().keys }

// MarshalText returns the canonical text, so selectors can sit in JSON/YAML as plain strings.
func (s *Selector) MarshalText() ([]byte, error) { return []byte(s.get().canonical), nil }

// UnmarshalText parses text into s.
func (s *Selector) UnmarshalText(text []byte) error {
	parsed, err := Parse(string(text))
	if err != nil {
		return err
	}
	*s = *parsed
	return nil
}
