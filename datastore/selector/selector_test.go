package selector

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type labels = map[string]string

func TestParseAndEvaluate(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		canonical string
		match     []labels
		noMatch   []labels
	}{
		{
			name: "empty is all", in: "", canonical: "all()",
			match: []labels{nil, {}, {"a": "b"}},
		},
		{
			name: "blank is all", in: " \t\n", canonical: "all()",
			match: []labels{nil, {"a": "b"}},
		},
		{
			name: "all", in: "all()", canonical: "all()",
			match: []labels{nil, {"x": "y"}},
		},
		{
			name: "not all", in: "!all()", canonical: "!all()",
			noMatch: []labels{nil, {"x": "y"}},
		},
		{
			name: "global", in: "global()", canonical: "global()",
			match:   []labels{nil, {"a": "b"}},
			noMatch: []labels{{NamespaceLabel: "default"}, {NamespaceLabel: ""}},
		},
		{
			name: "has", in: "has(k)", canonical: "has(k)",
			match:   []labels{{"k": ""}, {"k": "v", "j": "w"}},
			noMatch: []labels{nil, {"j": "k"}, {"K": "v"}},
		},
		{
			name: "not has", in: "!has(k)", canonical: "!has(k)",
			match:   []labels{nil, {"j": "k"}},
			noMatch: []labels{{"k": ""}, {"k": "v"}},
		},
		{
			name: "spaced not has", in: "! has( k )", canonical: "!has(k)",
			match: []labels{nil}, noMatch: []labels{{"k": "v"}},
		},
		{
			name: "eq single quotes", in: "k == 'v'", canonical: `k == "v"`,
			match:   []labels{{"k": "v"}, {"k": "v", "x": "y"}},
			noMatch: []labels{nil, {"k": "V"}, {"k": "v "}, {"k": ""}, {"j": "v"}},
		},
		{
			name: "eq double quotes no spaces", in: `k=="v"`, canonical: `k == "v"`,
			match: []labels{{"k": "v"}}, noMatch: []labels{nil, {"k": "w"}},
		},
		{
			name: "eq empty value", in: "k == ''", canonical: `k == ""`,
			match: []labels{{"k": ""}}, noMatch: []labels{nil, {"k": "v"}},
		},
		{
			name: "ne true when absent", in: "k != 'v'", canonical: `k != "v"`,
			match:   []labels{nil, {"j": "v"}, {"k": "w"}, {"k": ""}},
			noMatch: []labels{{"k": "v"}},
		},
		{
			name: "in", in: "k in { 'v1', 'v2' }", canonical: `k in {"v1", "v2"}`,
			match:   []labels{{"k": "v1"}, {"k": "v2"}},
			noMatch: []labels{nil, {"k": "v3"}, {"k": ""}, {"j": "v1"}},
		},
		{
			name: "not in true when absent", in: "k not in { 'v1', 'v2' }", canonical: `k not in {"v1", "v2"}`,
			match:   []labels{nil, {"k": "v3"}, {"j": "v1"}},
			noMatch: []labels{{"k": "v1"}, {"k": "v2"}},
		},
		{
			name: "empty set", in: "k in {}", canonical: "k in {}",
			noMatch: []labels{nil, {"k": ""}},
		},
		{
			name: "not in empty set", in: "k not in {}", canonical: "k not in {}",
			match: []labels{nil, {"k": ""}},
		},
		{
			name: "set sorted and de-duplicated", in: `k in {'b', "a", 'b'}`, canonical: `k in {"a", "b"}`,
			match: []labels{{"k": "a"}, {"k": "b"}}, noMatch: []labels{{"k": "c"}},
		},
		{
			name: "contains", in: "k contains 's'", canonical: `k contains "s"`,
			match:   []labels{{"k": "s"}, {"k": "ass"}},
			noMatch: []labels{nil, {"k": ""}, {"k": "S"}},
		},
		{
			name: "contains empty", in: "k contains ''", canonical: `k contains ""`,
			match: []labels{{"k": ""}, {"k": "x"}}, noMatch: []labels{nil},
		},
		{
			name: "starts with", in: "k starts with 'pro'", canonical: `k starts with "pro"`,
			match:   []labels{{"k": "pro"}, {"k": "prod"}},
			noMatch: []labels{nil, {"k": "apro"}, {"k": "pr"}},
		},
		{
			name: "ends with", in: "k   ends\twith \"-1\"", canonical: `k ends with "-1"`,
			match:   []labels{{"k": "node-1"}, {"k": "-1"}},
			noMatch: []labels{nil, {"k": "node-10"}},
		},
		// Calico's tokenizer takes these spellings too; they print in the spaced form.
		{
			name: "startswith run together", in: "k startswith 'pro'", canonical: `k starts with "pro"`,
			match: []labels{{"k": "prod"}}, noMatch: []labels{nil, {"k": "apro"}},
		},
		{
			name: "endswith run together", in: "k endswith '-1'", canonical: `k ends with "-1"`,
			match: []labels{{"k": "node-1"}}, noMatch: []labels{{"k": "node-10"}},
		},
		{
			name: "notin run together, trailing comma", in: "k notin {'a','b',}", canonical: `k not in {"a", "b"}`,
			match: []labels{nil, {"k": "c"}}, noMatch: []labels{{"k": "a"}, {"k": "b"}},
		},
		{
			name: "in with a trailing comma", in: "k in {'a',}", canonical: `k in {"a"}`,
			match: []labels{{"k": "a"}}, noMatch: []labels{nil, {"k": "b"}},
		},
		{
			name: "value with double quote keeps single quotes", in: `k == 'say "hi"'`, canonical: `k == 'say "hi"'`,
			match: []labels{{"k": `say "hi"`}},
		},
		{
			name: "value with single quote", in: `k == "it's"`, canonical: `k == "it's"`,
			match: []labels{{"k": "it's"}},
		},
		{
			name: "value with operators and unicode", in: `k == '&& || ! () {} ✓'`, canonical: `k == "&& || ! () {} ✓"`,
			match: []labels{{"k": "&& || ! () {} ✓"}},
		},
		{
			name: "prefixed key", in: "projectcalico.org/namespace == 'prod'", canonical: `projectcalico.org/namespace == "prod"`,
			match: []labels{{"projectcalico.org/namespace": "prod"}}, noMatch: []labels{{"namespace": "prod"}},
		},
		{
			name: "key characters", in: "has(a.b-c_D/9)", canonical: "has(a.b-c_D/9)",
			match: []labels{{"a.b-c_D/9": ""}},
		},
		{
			name: "function names usable as keys", in: "has == 'x' && all != 'y' && global in {'z'}",
			canonical: `has == "x" && all != "y" && global in {"z"}`,
			match:     []labels{{"has": "x", "global": "z"}},
			noMatch:   []labels{{"has": "x", "all": "y", "global": "z"}},
		},
		{
			name: "operator words usable as keys", in: "in in {'a'} && not not in {'b'} && contains contains 'c'",
			canonical: `in in {"a"} && not not in {"b"} && contains contains "c"`,
			match:     []labels{{"in": "a", "contains": "xcx"}},
			noMatch:   []labels{{"in": "a", "not": "b", "contains": "c"}},
		},
		{
			name: "and binds tighter than or", in: "a == '1' || b == '1' && c == '1'",
			canonical: `a == "1" || b == "1" && c == "1"`,
			match:     []labels{{"a": "1"}, {"b": "1", "c": "1"}},
			noMatch:   []labels{{"b": "1"}, {"c": "1"}, nil},
		},
		{
			name: "parentheses override precedence", in: "(a == '1' || b == '1') && c == '1'",
			canonical: `(a == "1" || b == "1") && c == "1"`,
			match:     []labels{{"a": "1", "c": "1"}, {"b": "1", "c": "1"}},
			noMatch:   []labels{{"a": "1"}, {"b": "1"}},
		},
		{
			name: "not binds tighter than and", in: "!has(a) && has(b)", canonical: "!has(a) && has(b)",
			match: []labels{{"b": ""}}, noMatch: []labels{{"a": "", "b": ""}, nil},
		},
		{
			name: "not applies to a whole comparison", in: "!a == 'x'", canonical: `!(a == "x")`,
			match: []labels{nil, {"a": "y"}}, noMatch: []labels{{"a": "x"}},
		},
		{
			name: "not of a group", in: "!(has(a) || has(b))", canonical: "!(has(a) || has(b))",
			match: []labels{nil, {"c": ""}}, noMatch: []labels{{"a": ""}, {"b": ""}},
		},
		{
			name: "double negation", in: "!!has(a)", canonical: "!!has(a)",
			match: []labels{{"a": ""}}, noMatch: []labels{nil},
		},
		{
			name: "redundant parentheses and associativity flattened", in: "((has(a))) && (has(b) && (has(c)))",
			canonical: "has(a) && has(b) && has(c)",
			match:     []labels{{"a": "", "b": "", "c": ""}}, noMatch: []labels{{"a": "", "b": ""}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.canonical, sel.String()); diff != "" {
				t.Errorf("String() mismatch (-want +got):\n%s", diff)
			}
			for _, l := range tc.match {
				if !sel.Evaluate(l) {
					t.Errorf("%q should match %v", tc.in, l)
				}
			}
			for _, l := range tc.noMatch {
				if sel.Evaluate(l) {
					t.Errorf("%q should not match %v", tc.in, l)
				}
			}
		})
	}
}

// TestCalicoDocExamples uses the selectors shown in Calico's documentation (the selector operator
// table of the NetworkPolicy reference, the automatic-labels page and the sample policies).
func TestCalicoDocExamples(t *testing.T) {
	frontendProd := labels{"role": "frontend", "env": "prod", "my-label": "production"}
	database := labels{"role": "database", "projectcalico.org/namespace": "some-namespace", "foo": "bar"}
	nsFoo := labels{"projectcalico.org/name": "foo"}
	nsBaz := labels{"projectcalico.org/name": "baz"}
	hostEP := labels{"role": "webserver", "color": "red"}
	all := []labels{frontendProd, database, nsFoo, nsBaz, hostEP, {}}
	tests := []struct {
		sel  string
		want []labels // exactly the members of all that match
	}{
		{"all()", all},
		{"role == 'database'", []labels{database}},
		{"role == 'frontend'", []labels{frontendProd}},
		{`role=="webserver"`, []labels{hostEP}},
		{`color == "red"`, []labels{hostEP}},
		{"role != 'database'", []labels{frontendProd, nsFoo, nsBaz, hostEP, {}}},
		{"has(role)", []labels{frontendProd, database, hostEP}},
		{"!has(role)", []labels{nsFoo, nsBaz, {}}},
		{"role in { 'frontend', 'webserver' }", []labels{frontendProd, hostEP}},
		{"role not in { 'frontend', 'webserver' }", []labels{database, nsFoo, nsBaz, {}}},
		{"role contains 'end'", []labels{frontendProd}},
		{"role starts with 'data'", []labels{database}},
		{"role ends with 'server'", []labels{hostEP}},
		{"global()", []labels{frontendProd, nsFoo, nsBaz, hostEP, {}}},
		{`projectcalico.org/name in {"foo", "bar"}`, []labels{nsFoo}},
		{`projectcalico.org/name == "baz"`, []labels{nsBaz}},
		{`(foo == "bar") && (projectcalico.org/namespace == "some-namespace")`, []labels{database}},
		{"! has(my-label) || my-label starts with 'prod'", []labels{frontendProd, database, nsFoo, nsBaz, hostEP, {}}},
		{"has(my-label) && my-label starts with 'dev'", nil},
		{"!(role == 'database' || role == 'webserver') && has(role)", []labels{frontendProd}},
	}
	for _, tc := range tests {
		t.Run(tc.sel, func(t *testing.T) {
			sel, err := Parse(tc.sel)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			var got []labels
			for _, l := range all {
				if sel.Evaluate(l) {
					got = append(got, l)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("matches (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in      string
		col     int
		msgPart string
	}{
		{"x == ", 6, "expected a quoted string"},
		{"x == v", 6, "expected a quoted string"},
		{"x = 'v'", 3, "expected an operator"},
		{"x", 2, "expected an operator"},
		{"x === 'v'", 5, "expected a quoted string"},
		{"x == 'v", 6, "unterminated string"},
		{`x == "v'`, 6, "unterminated string"},
		{"x in 'v'", 6, "expected '{'"},
		{"x in {'a' 'b'}", 11, "expected ',' or '}'"},
		{"x in {'a',,}", 11, "expected a quoted string"},
		{"x in {,}", 7, "expected a quoted string"},
		{"x in {'a'", 10, "expected ',' or '}'"},
		{"x not 'a'", 7, "expected 'in' after 'not'"},
		{"x notinx {'a'}", 3, "expected an operator"},
		{"x starts 'a'", 10, "expected 'with' after 'starts'"},
		{"x ends wit 'a'", 8, "expected 'with' after 'ends'"},
		{"has()", 5, "expected a label key in has()"},
		{"has(a", 6, "expected ')' after the label key"},
		{"has(a b)", 7, "expected ')' after the label key"},
		{"all(x)", 5, "all() takes no arguments"},
		{"global(", 8, "global() takes no arguments"},
		{"(has(a)", 8, "expected ')' to close the '(' at col 1"},
		{"has(a))", 7, `unexpected ')' after the end`},
		{"has(a) has(b)", 8, `unexpected "has" after the end`},
		{"has(a) &&", 10, "expected a label key"},
		{"has(a) & has(b)", 8, "unexpected '&'"},
		{"has(a) and has(b)", 8, `unexpected "and"`},
		{"&& has(a)", 1, "expected a label key"},
		{"!", 2, "expected a label key"},
		{"!= 'a'", 2, "expected a label key"},
		{"()", 2, "expected a label key"},
		{"k == 'é' && ", 13, "expected a label key"}, // columns count characters, not bytes
		{"ké == 'x'", 2, "expected an operator"},
		{"k == 'v' ✓", 10, "unexpected '✓'"},
		{strings.Repeat("(", maxDepth+1) + "has(a)" + strings.Repeat(")", maxDepth+1), maxDepth + 2, "nested more than"},
		{strings.Repeat("!", maxDepth+1) + "has(a)", maxDepth + 2, "nested more than"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			sel, err := Parse(tc.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %q, want an error", tc.in, sel)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is %T, want *ParseError", err, err)
			}
			if pe.Col != tc.col {
				t.Errorf("Col = %d, want %d (%v)", pe.Col, tc.col, err)
			}
			if !strings.Contains(pe.Msg, tc.msgPart) {
				t.Errorf("Msg = %q, want it to contain %q", pe.Msg, tc.msgPart)
			}
			if pe.Selector != tc.in {
				t.Errorf("Selector = %q, want the input %q", pe.Selector, tc.in)
			}
		})
	}
}

func TestParseErrorFormat(t *testing.T) {
	_, err := Parse("x == ")
	want := `selector "x == " col 6: expected a quoted string, found end of input`
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v, want %s", err, want)
	}
}

func TestDepthLimitAllowsMax(t *testing.T) {
	in := strings.Repeat("(", maxDepth) + "has(a)" + strings.Repeat(")", maxDepth)
	sel, err := Parse(in)
	if err != nil {
		t.Fatalf("Parse of %d levels: %v", maxDepth, err)
	}
	if sel.String() != "has(a)" {
		t.Errorf("String() = %q, want has(a)", sel.String())
	}
}

func TestCanonicalEquivalence(t *testing.T) {
	groups := [][]string{
		{"a == 'b'", `a=="b"`, "  a   ==\t'b'  ", "(a == 'b')", "((a == \"b\"))"},
		{"a in {'x','y'}", `a in { "y", 'x' }`, "a in {'y','x','y'}", "a in{'x','y'}"},
		{"has(a) && has(b) && has(c)", "(has(a) && has(b)) && has(c)", "has(a) && (has(b) && has(c))"},
		{"has(a) || has(b) && has(c)", "has(a) || (has(b) && has(c))"},
		{"!has(a)", "! has(a)", "!(has(a))", "!( has( a ) )"},
		{"!a == 'b'", "!(a == 'b')", "! ( a == \"b\" )"},
		{"", "all()", "  ", "(all())"},
		{"a starts with 'x'", "a starts\n\twith \"x\"", "a starts with'x'"},
	}
	for _, g := range groups {
		first := MustParse(g[0])
		for _, in := range g[1:] {
			sel, err := Parse(in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", in, err)
			}
			if sel.String() != first.String() || sel.UniqueID() != first.UniqueID() {
				t.Errorf("%q -> %q %s, but %q -> %q %s", in, sel, sel.UniqueID(), g[0], first, first.UniqueID())
			}
		}
	}
}

func TestUniqueID(t *testing.T) {
	format := regexp.MustCompile(`^s:[a-z2-7]{20}$`)
	distinct := []string{"", "has(a)", "has(b)", "!has(a)", "a == 'b'", "a != 'b'", "a in {'b'}",
		"a == 'b' && c == 'd'", "a == 'b' || c == 'd'", `a == "b'"`, "global()"}
	seen := map[string]string{}
	for _, in := range distinct {
		sel := MustParse(in)
		id := sel.UniqueID()
		if !format.MatchString(id) {
			t.Errorf("UniqueID(%q) = %q, want format %s", in, id, format)
		}
		if prev, ok := seen[id]; ok {
			t.Errorf("UniqueID collision between %q and %q: %s", prev, in, id)
		}
		seen[id] = in
		if again := MustParse(sel.String()).UniqueID(); again != id {
			t.Errorf("UniqueID not stable through String(): %s vs %s", id, again)
		}
	}
}

func TestLabelKeys(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", []string{}},
		{"all()", []string{}},
		{"has(b) && a == 'x' || b in {'y'} && !(c starts with 'z')", []string{"a", "b", "c"}},
		{"global() && has(x)", []string{NamespaceLabel, "x"}},
		{"k.io/x not in {} || k.io/x contains 'q'", []string{"k.io/x"}},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(tc.want, MustParse(tc.in).LabelKeys()); diff != "" {
			t.Errorf("LabelKeys(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

// fakeLabels stands in for felix's merged label sources and records lookups, proving
// EvaluateLabels reads through the interface rather than a copy.
type fakeLabels struct {
	m       map[string]string
	lookups int
}

func (f *fakeLabels) Get(k string) (string, bool) {
	f.lookups++
	v, ok := f.m[k]
	return v, ok
}

func TestEvaluateLabelsMatchesEvaluate(t *testing.T) {
	sels := []string{"all()", "global()", "has(a)", "a == '1' && b != '2'", "a in {'1','2'} || c not in {'3'}",
		"!(a contains '1') && b starts with '2' || c ends with '3'"}
	sets := []labels{nil, {"a": "1"}, {"a": "1", "b": "2"}, {"b": "2x", "c": "x3"}, {NamespaceLabel: "ns", "c": "3"}}
	for _, s := range sels {
		sel := MustParse(s)
		for _, l := range sets {
			f := &fakeLabels{m: l}
			if got, want := sel.EvaluateLabels(f), sel.Evaluate(l); got != want {
				t.Errorf("%q on %v: EvaluateLabels=%v Evaluate=%v", s, l, got, want)
			}
			if s != "all()" && f.lookups == 0 {
				t.Errorf("%q on %v: EvaluateLabels did not consult the labels", s, l)
			}
		}
	}
}

func TestShortCircuit(t *testing.T) {
	f := &fakeLabels{m: labels{"a": "x"}}
	if MustParse("has(b) && has(c) && has(d)").EvaluateLabels(f) {
		t.Fatal("unexpected match")
	}
	if f.lookups != 1 {
		t.Errorf("&& did %d lookups after the first false operand, want 1", f.lookups)
	}
	f.lookups = 0
	if !MustParse("has(a) || has(c) || has(d)").EvaluateLabels(f) {
		t.Fatal("unexpected non-match")
	}
	if f.lookups != 1 {
		t.Errorf("|| did %d lookups after the first true operand, want 1", f.lookups)
	}
}

func TestLargeSets(t *testing.T) {
	var vals []string
	for i := range 50 {
		vals = append(vals, "'v"+strings.Repeat("x", i)+"'")
	}
	set := "{" + strings.Join(vals, ",") + "}"
	in := MustParse("k in " + set)
	notIn := MustParse("k not in " + set)
	if in.root.index == nil {
		t.Fatal("a 50-element set should be indexed")
	}
	for _, tc := range []struct {
		l    labels
		want bool
	}{
		{labels{"k": "v"}, true},
		{labels{"k": "v" + strings.Repeat("x", 49)}, true},
		{labels{"k": "v" + strings.Repeat("x", 50)}, false},
		{labels{"k": ""}, false},
		{nil, false},
	} {
		if got := in.Evaluate(tc.l); got != tc.want {
			t.Errorf("in on %v = %v, want %v", tc.l, got, tc.want)
		}
		if got := notIn.Evaluate(tc.l); got != !tc.want {
			t.Errorf("not in on %v = %v, want %v", tc.l, got, !tc.want)
		}
	}
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	big := "k in {'a','b','c','d','e','f','g','h','i','j'}"
	sels := []string{
		"all()", "global()", "has(a)",
		"role == 'frontend' && env in {'prod','staging'} && !has(quarantine) || tier starts with 'web'",
		"a contains 'x' || b ends with 'y' || c != 'z' || d not in {'1'}",
		big,
	}
	l := labels{"role": "frontend", "env": "prod", "tier": "web-1", "a": "qxq", "k": "j", NamespaceLabel: "default"}
	f := &fakeLabels{m: l}
	for _, s := range sels {
		sel := MustParse(s)
		if n := testing.AllocsPerRun(200, func() { sel.Evaluate(l) }); n != 0 {
			t.Errorf("Evaluate(%q) allocates %.1f times per run", s, n)
		}
		if n := testing.AllocsPerRun(200, func() { sel.EvaluateLabels(f) }); n != 0 {
			t.Errorf("EvaluateLabels(%q) allocates %.1f times per run", s, n)
		}
	}
}

func TestTextMarshalling(t *testing.T) {
	type doc struct {
		Sel *Selector `json:"sel"`
	}
	var d doc
	if err := json.Unmarshal([]byte(`{"sel":"a=='b'&&has(c)"}`), &d); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	out, err := json.Marshal(d)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	if diff := cmp.Diff(`{"sel":"a == \"b\" \u0026\u0026 has(c)"}`, string(out)); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	err = json.Unmarshal([]byte(`{"sel":"a =="}`), &d)
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Errorf("Unmarshal of a bad selector: error %v, want a *ParseError", err)
	}
}

func TestMustParsePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("MustParse of an invalid selector did not panic")
		}
	}()
	MustParse("a ==")
}

func TestZeroValueIsAll(t *testing.T) {
	var zero Selector
	all := MustParse("")
	if zero.String() != all.String() || zero.UniqueID() != all.UniqueID() {
		t.Errorf("zero value = %q %s, want %q %s", zero.String(), zero.UniqueID(), all.String(), all.UniqueID())
	}
	if !zero.Evaluate(nil) || !zero.EvaluateLabels(&fakeLabels{m: labels{"a": "b"}}) {
		t.Error("zero value should match everything")
	}
	if len(zero.LabelKeys()) != 0 {
		t.Errorf("zero value LabelKeys = %v, want none", zero.LabelKeys())
	}
}
