package selector

import (
	"errors"
	"hash/fnv"
	"math/rand/v2"
	"testing"
	"unicode/utf8"
)

// literals collects every quoted value in the tree so the fuzzer can build label sets that hit both
// sides of each comparison.
func (n *node) literals(into []string) []string {
	switch n.kind {
	case kindEq, kindNe, kindContains, kindStartsWith, kindEndsWith:
		into = append(into, n.value)
	case kindIn, kindNotIn:
		into = append(into, n.set...)
	}
	for _, k := range n.kids {
		into = k.literals(into)
	}
	return into
}

// labelSets derives a deterministic handful of label sets from the selector: each referenced key
// is absent, or holds a literal, a literal with extra text around it, or something unrelated.
func labelSets(sel *Selector, seed string) []labels {
	h := fnv.New64a()
	h.Write([]byte(seed))
	rng := rand.New(rand.NewPCG(h.Sum64(), 1))
	lits := sel.root.literals([]string{"", "x"})
	sets := []labels{nil}
	for range 24 {
		l := labels{}
		for _, k := range sel.LabelKeys() {
			lit := lits[rng.IntN(len(lits))]
			switch rng.IntN(5) {
			case 0: // absent
			case 1, 2:
				l[k] = lit
			case 3:
				l[k] = "p" + lit
			case 4:
				l[k] = lit + "s"
			}
		}
		sets = append(sets, l)
	}
	return sets
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"", "all()", "global()", "has(a)", "!has(a)", "a == 'b'", `a != "b"`, "a in {'x', 'y'}",
		"a not in {}", "a contains 'c'", "a starts with 's'", "a ends with 'e'",
		"!(a == 'b' || c in {'d'}) && has(projectcalico.org/namespace)",
		"has == 'x' && in in {'y'} || not not in {'z'}", `k == 'say "hi"'`, "k == 'é' && ", "(((has(a)",
		"a in {'a','b','c','d','e','f','g','h','i','j'} || !!global()", "x == ", "a = 'b'",
		// Found by mutation testing: || inside && printed without parentheses changes meaning.
		"(0!=''||0 in{})&&has(0)",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		sel, err := Parse(in)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) error %v is %T, want *ParseError", in, err, err)
			}
			if pe.Col < 1 || pe.Col > utf8.RuneCountInString(in)+1 {
				t.Fatalf("Parse(%q) Col %d outside 1..%d", in, pe.Col, utf8.RuneCountInString(in)+1)
			}
			return
		}
		canon := sel.String()
		again, err := Parse(canon)
		if err != nil {
			t.Fatalf("canonical %q of %q does not re-parse: %v", canon, in, err)
		}
		if again.String() != canon {
			t.Fatalf("canonical form not a fixed point: %q -> %q -> %q", in, canon, again.String())
		}
		if again.UniqueID() != sel.UniqueID() {
			t.Fatalf("UniqueID changed through String(): %s vs %s", sel.UniqueID(), again.UniqueID())
		}
		// Negating the canonical text must flip every result; this catches printing that drops
		// needed parentheses, which the fixed-point check alone would not.
		neg, err := Parse("!(" + canon + ")")
		if err != nil && sel.root.depthExceeds(maxDepth-1) {
			return
		}
		if err != nil {
			t.Fatalf("negation of %q does not parse: %v", canon, err)
		}
		for _, l := range labelSets(sel, in) {
			want := sel.Evaluate(l)
			if got := again.Evaluate(l); got != want {
				t.Fatalf("%q and re-parsed %q disagree on %v: %v vs %v", in, canon, l, want, got)
			}
			if got := sel.EvaluateLabels(&fakeLabels{m: l}); got != want {
				t.Fatalf("%q: EvaluateLabels=%v Evaluate=%v on %v", in, got, want, l)
			}
			if got := neg.Evaluate(l); got == want {
				t.Fatalf("%q and its negation both give %v on %v", canon, want, l)
			}
		}
	})
}

// depthExceeds reports whether the canonical form of n nests parentheses or negations more than
// limit levels, in which case wrapping it in one more level may legitimately fail to parse.
func (n *node) depthExceeds(limit int) bool {
	if limit < 0 {
		return true
	}
	for _, k := range n.kids {
		if k.depthExceeds(limit - 1) {
			return true
		}
	}
	return false
}
