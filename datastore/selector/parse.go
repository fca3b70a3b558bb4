package selector

import (
	"fmt"
	"unicode/utf8"
)

// maxDepth bounds nesting of parentheses and negations so that hostile input cannot drive the
// recursive-descent parser (or later evaluation) into a huge stack.
const maxDepth = 100

// Grammar (precedence low to high: ||, &&, !):
//
//	expr    = and { "||" and }
//	and     = unary { "&&" unary }
//	unary   = "!" unary | primary
//	primary = "(" expr ")" | "all" "(" ")" | "global" "(" ")" | "has" "(" key ")" | key op
//	op      = ("==" | "!=" | "contains" | "starts" "with" | "ends" "with") string
//	        | ["not"] "in" "{" [ string { "," string } ] "}"
//
// all, global and has are functions only when "(" follows, so they remain usable as label keys.
type parser struct {
	src   string
	pos   int
	depth int
}

func parse(s string) (*node, error) {
	p := &parser{src: s}
	p.skipSpace()
	if p.pos == len(s) {
		return &node{kind: kindAll}, nil
	}
	n, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos != len(s) {
		return nil, p.errorf(p.pos, "unexpected %s after the end of the expression", p.describe())
	}
	return n, nil
}

func (p *parser) errorf(at int, format string, args ...any) *ParseError {
	return &ParseError{
		Selector: p.src,
		Col:      utf8.RuneCountInString(p.src[:at]) + 1,
		Msg:      fmt.Sprintf(format, args...),
	}
}

// describe names what is at the current position, for error messages.
func (p *parser) describe() string {
	if p.pos >= len(p.src) {
		return "end of input"
	}
	if w := p.peekWord(); w != "" {
		return fmt.Sprintf("%q", w)
	}
	r, _ := utf8.DecodeRuneInString(p.src[p.pos:])
	return fmt.Sprintf("%q", r)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// isKeyChar matches Calico's label key characters (letters, digits, "_", ".", "/", "-").
func isKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '.' || c == '/' || c == '-'
}

func (p *parser) skipSpace() {
	for p.pos < len(p.src) && isSpace(p.src[p.pos]) {
		p.pos++
	}
}

func (p *parser) peekWord() string {
	end := p.pos
	for end < len(p.src) && isKeyChar(p.src[end]) {
		end++
	}
	return p.src[p.pos:end]
}

func (p *parser) readWord() string {
	w := p.peekWord()
	p.pos += len(w)
	return w
}

// consume skips space and then lit if it is next.
func (p *parser) consume(lit string) bool {
	p.skipSpace()
	if len(p.src)-p.pos >= len(lit) && p.src[p.pos:p.pos+len(lit)] == lit {
		p.pos += len(lit)
		return true
	}
	return false
}

// consumeKeyword is consume for words: "in" must not match the start of "inner".
func (p *parser) consumeKeyword(w string) bool {
	p.skipSpace()
	if p.peekWord() == w {
		p.pos += len(w)
		return true
	}
	return false
}

func (p *parser) enter() error {
	p.depth++
	if p.depth > maxDepth {
		return p.errorf(p.pos, "expression nested more than %d levels deep", maxDepth)
	}
	return nil
}

func (p *parser) parseOr() (*node, error) {
	first, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	kids := []*node{first}
	for p.consume("||") {
		n, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		kids = append(kids, n)
	}
	if len(kids) == 1 {
		return first, nil
	}
	return newBoolNode(kindOr, kids), nil
}

func (p *parser) parseAnd() (*node, error) {
	first, err := p.parseUnary()
	if err != nil {
		return nil, err
	}
	kids := []*node{first}
	for p.consume("&&") {
		n, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		kids = append(kids, n)
	}
	if len(kids) == 1 {
		return first, nil
	}
	return newBoolNode(kindAnd, kids), nil
}

func (p *parser) parseUnary() (*node, error) {
	p.skipSpace()
	// "!=" never starts an operand, so a "!" here is always negation.
	if p.pos < len(p.src) && p.src[p.pos] == '!' {
		p.pos++
		if err := p.enter(); err != nil {
			return nil, err
		}
		inner, err := p.parseUnary()
		p.depth--
		if err != nil {
			return nil, err
		}
		return &node{kind: kindNot, kids: []*node{inner}}, nil
	}
	return p.parsePrimary()
}

func (p *parser) parsePrimary() (*node, error) {
	p.skipSpace()
	start := p.pos
	if p.pos < len(p.src) && p.src[p.pos] == '(' {
		p.pos++
		if err := p.enter(); err != nil {
			return nil, err
		}
		n, err := p.parseOr()
		p.depth--
		if err != nil {
			return nil, err
		}
		if !p.consume(")") {
			return nil, p.errorf(p.pos, "expected ')' to close the '(' at col %d, found %s",
				p.errorf(start, "").Col, p.describe())
		}
		return n, nil
	}
	key := p.readWord()
	if key == "" {
		return nil, p.errorf(p.pos, "expected a label key, '(', '!', all(), global() or has(), found %s", p.describe())
	}
	switch key {
	case "all", "global":
		if p.consume("(") {
			if !p.consume(")") {
				return nil, p.errorf(p.pos, "expected ')': %s() takes no arguments", key)
			}
			if key == "all" {
				return &node{kind: kindAll}, nil
			}
			return &node{kind: kindGlobal}, nil
		}
	case "has":
		if p.consume("(") {
			p.skipSpace()
			k := p.readWord()
			if k == "" {
				return nil, p.errorf(p.pos, "expected a label key in has(), found %s", p.describe())
			}
			if !p.consume(")") {
				return nil, p.errorf(p.pos, "expected ')' after the label key in has(), found %s", p.describe())
			}
			return &node{kind: kindHas, key: k}, nil
		}
	}
	return p.parseComparison(key)
}

func (p *parser) parseComparison(key string) (*node, error) {
	p.skipSpace()
	opAt := p.pos
	switch {
	case p.consume("=="):
		return p.valueNode(kindEq, key)
	case p.consume("!="):
		return p.valueNode(kindNe, key)
	case p.consumeKeyword("contains"):
		return p.valueNode(kindContains, key)
	// Calico's tokenizer also takes the operator words run together.
	case p.consumeKeyword("startswith"):
		return p.valueNode(kindStartsWith, key)
	case p.consumeKeyword("endswith"):
		return p.valueNode(kindEndsWith, key)
	case p.consumeKeyword("notin"):
		return p.setNode(kindNotIn, key)
	case p.consumeKeyword("starts"):
		if !p.consumeKeyword("with") {
			return nil, p.errorf(p.pos, "expected 'with' after 'starts', found %s", p.describe())
		}
		return p.valueNode(kindStartsWith, key)
	case p.consumeKeyword("ends"):
		if !p.consumeKeyword("with") {
			return nil, p.errorf(p.pos, "expected 'with' after 'ends', found %s", p.describe())
		}
		return p.valueNode(kindEndsWith, key)
	case p.consumeKeyword("in"):
		return p.setNode(kindIn, key)
	case p.consumeKeyword("not"):
		if !p.consumeKeyword("in") {
			return nil, p.errorf(p.pos, "expected 'in' after 'not', found %s", p.describe())
		}
		return p.setNode(kindNotIn, key)
	}
	p.pos = opAt
	return nil, p.errorf(opAt, "expected an operator (==, !=, in, not in, contains, starts with, ends with) after label key %q, found %s", key, p.describe())
}

func (p *parser) valueNode(k kind, key string) (*node, error) {
	v, err := p.parseString()
	if err != nil {
		return nil, err
	}
	return &node{kind: k, key: key, value: v}, nil
}

func (p *parser) parseString() (string, error) {
	p.skipSpace()
	if p.pos >= len(p.src) || (p.src[p.pos] != '\'' && p.src[p.pos] != '"') {
		return "", p.errorf(p.pos, "expected a quoted string, found %s", p.describe())
	}
	q := p.src[p.pos]
	start := p.pos
	for i := start + 1; i < len(p.src); i++ {
		if p.src[i] == q {
			p.pos = i + 1
			return p.src[start+1 : i], nil
		}
	}
	return "", p.errorf(start, "unterminated string: no closing %c", q)
}

func (p *parser) setNode(k kind, key string) (*node, error) {
	if !p.consume("{") {
		return nil, p.errorf(p.pos, "expected '{' to start a set of quoted strings, found %s", p.describe())
	}
	var values []string
	if p.consume("}") {
		return newSetNode(k, key, values), nil
	}
	for {
		v, err := p.parseString()
		if err != nil {
			return nil, err
		}
		values = append(values, v)
		if p.consume("}") {
			return newSetNode(k, key, values), nil
		}
		if !p.consume(",") {
			return nil, p.errorf(p.pos, "expected ',' or '}' in the set, found %s", p.describe())
		}
		if p.consume("}") { // a trailing comma, as Calico allows
			return newSetNode(k, key, values), nil
		}
	}
}
