package selector

import (
	"slices"
	"strings"
)

type kind uint8

const (
	kindAll kind = iota
	kindGlobal
	kindHas
	kindEq
	kindNe
	kindIn
	kindNotIn
	kindContains
	kindStartsWith
	kindEndsWith
	kindNot
	kindAnd
	kindOr
)

// setIndexThreshold is the set size from which a map beats a linear scan; small sets (the usual
// case) stay as slices because a scan of a few strings is faster than hashing.
const setIndexThreshold = 8

// node is one operator of the expression tree. A single struct with a kind switch (rather than an
// interface per operator) keeps evaluation free of dynamic dispatch except for Labels.Get.
type node struct {
	kind  kind
	key   string
	value string              // eq, ne, contains, starts/ends with
	set   []string            // in, not in: sorted and de-duplicated
	index map[string]struct{} // in, not in: set as a map once it is large
	kids  []*node             // not (one), and/or (two or more, never the same kind as the parent)
}

func (n *node) eval(l Labels) bool {
	switch n.kind {
	case kindAll:
		return true
	case kindGlobal:
		_, ok := l.Get(NamespaceLabel)
		return !ok
	case kindHas:
		_, ok := l.Get(n.key)
		return ok
	case kindEq:
		v, ok := l.Get(n.key)
		return ok && v == n.value
	case kindNe:
		v, ok := l.Get(n.key)
		return !ok || v != n.value
	case kindIn:
		v, ok := l.Get(n.key)
		return ok && n.setHas(v)
	case kindNotIn:
		v, ok := l.Get(n.key)
		return !ok || !n.setHas(v)
	case kindContains:
		v, ok := l.Get(n.key)
		return ok && strings.Contains(v, n.value)
	case kindStartsWith:
		v, ok := l.Get(n.key)
		return ok && strings.HasPrefix(v, n.value)
	case kindEndsWith:
		v, ok := l.Get(n.key)
		return ok && strings.HasSuffix(v, n.value)
	case kindNot:
		return !n.kids[0].eval(l)
	case kindAnd:
		for _, k := range n.kids {
			if !k.eval(l) {
				return false
			}
		}
		return true
	case kindOr:
		for _, k := range n.kids {
			if k.eval(l) {
				return true
			}
		}
		return false
	}
	panic("selector: unknown node kind")
}

func (n *node) setHas(v string) bool {
	if n.index != nil {
		_, ok := n.index[v]
		return ok
	}
	for _, s := range n.set {
		if s == v {
			return true
		}
	}
	return false
}

// newSetNode canonicalises the set so that {'b','a','a'} and {'a','b'} print (and hash) the same.
func newSetNode(k kind, key string, values []string) *node {
	slices.Sort(values)
	values = slices.Compact(values)
	n := &node{kind: k, key: key, set: values}
	if len(values) >= setIndexThreshold {
		n.index = make(map[string]struct{}, len(values))
		for _, v := range values {
			n.index[v] = struct{}{}
		}
	}
	return n
}

// newBoolNode flattens nested operators of the same kind so that (a && b) && c and a && (b && c)
// share one canonical form.
func newBoolNode(k kind, kids []*node) *node {
	flat := make([]*node, 0, len(kids))
	for _, c := range kids {
		if c.kind == k {
			flat = append(flat, c.kids...)
		} else {
			flat = append(flat, c)
		}
	}
	return &node{kind: k, kids: flat}
}

func (n *node) collectKeys(into map[string]struct{}) {
	switch n.kind {
	case kindAll:
	case kindGlobal:
		into[NamespaceLabel] = struct{}{}
	case kindNot, kindAnd, kindOr:
		for _, k := range n.kids {
			k.collectKeys(into)
		}
	default:
		into[n.key] = struct{}{}
	}
}

// write prints the canonical form: single spaces, double quotes unless the value holds one, and
// parentheses only where precedence needs them (plus around a negated comparison, for readers).
func (n *node) write(b *strings.Builder) {
	switch n.kind {
	case kindAll:
		b.WriteString("all()")
	case kindGlobal:
		b.WriteString("global()")
	case kindHas:
		b.WriteString("has(")
		b.WriteString(n.key)
		b.WriteByte(')')
	case kindEq:
		writeCmp(b, n.key, " == ", n.value)
	case kindNe:
		writeCmp(b, n.key, " != ", n.value)
	case kindContains:
		writeCmp(b, n.key, " contains ", n.value)
	case kindStartsWith:
		writeCmp(b, n.key, " starts with ", n.value)
	case kindEndsWith:
		writeCmp(b, n.key, " ends with ", n.value)
	case kindIn, kindNotIn:
		b.WriteString(n.key)
		if n.kind == kindIn {
			b.WriteString(" in {")
		} else {
			b.WriteString(" not in {")
		}
		for i, v := range n.set {
			if i > 0 {
				b.WriteString(", ")
			}
			writeQuoted(b, v)
		}
		b.WriteByte('}')
	case kindNot:
		b.WriteByte('!')
		c := n.kids[0]
		switch c.kind {
		case kindAll, kindGlobal, kindHas, kindNot:
			c.write(b)
		default:
			b.WriteByte('(')
			c.write(b)
			b.WriteByte(')')
		}
	case kindAnd, kindOr:
		sep := " && "
		if n.kind == kindOr {
			sep = " || "
		}
		for i, c := range n.kids {
			if i > 0 {
				b.WriteString(sep)
			}
			// Only an || inside && needs parentheses: && binds tighter, and same-kind children
			// were flattened away.
			if n.kind == kindAnd && c.kind == kindOr {
				b.WriteByte('(')
				c.write(b)
				b.WriteByte(')')
			} else {
				c.write(b)
			}
		}
	}
}

func writeCmp(b *strings.Builder, key, op, value string) {
	b.WriteString(key)
	b.WriteString(op)
	writeQuoted(b, value)
}

// writeQuoted can always pick a working quote: the language has no escapes, so a parsed value never
// holds both quote characters.
func writeQuoted(b *strings.Builder, v string) {
	q := byte('"')
	if strings.IndexByte(v, '"') >= 0 {
		q = '\''
	}
	b.WriteByte(q)
	b.WriteString(v)
	b.WriteByte(q)
}
