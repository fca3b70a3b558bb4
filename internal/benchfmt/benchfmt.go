// Package benchfmt owns the BENCH line of CONVENTIONS.md, the one output contract every Terrace
// benchmark shares: `BENCH <scenario> <metric>=<value><unit> [anchor=<value><unit> ratio=<x>]`.
// It formats such lines, parses them back (for make bench's summary), and turns the standard result
// lines of `go test -bench` into BENCH lines for benchmarks that do not print their own.
//
// It only formats and parses text: it must never run, time or judge a benchmark, and it never decides
// that a figure is good or bad (speed is never a failure; see make bench).
package benchfmt

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Line is one figure.
type Line struct {
	Scenario string
	Metric   string
	Value    float64
	Unit     string
	// HasAnchor says Anchor (in AnchorUnit, which is Unit when empty) and Ratio are meaningful.
	HasAnchor  bool
	Anchor     float64
	AnchorUnit string
	Ratio      float64
	// Note is free text after the figure (e.g. how the anchor was obtained); printed after the line.
	Note string
}

// New returns a line without anchor.
func New(scenario, metric string, value float64, unit string) Line {
	return Line{Scenario: scenario, Metric: metric, Value: value, Unit: unit}
}

// WithAnchor returns l compared with anchor (same unit): ratio = value / anchor, so a ratio below 1
// means less of whatever the metric counts (faster for a time, slower for a rate).
func (l Line) WithAnchor(anchor float64) Line {
	l.HasAnchor = true
	l.Anchor = anchor
	l.Ratio = math.NaN()
	if anchor != 0 {
		l.Ratio = l.Value / anchor
	}
	return l
}

// WithNote returns l with free text appended after the figure.
func (l Line) WithNote(note string) Line {
	l.Note = note
	return l
}

// FormatValue prints a number with four significant digits and no exponent, so lines stay short and
// comparable between runs.
func FormatValue(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	if v == 0 {
		return "0"
	}
	mag := int(math.Floor(math.Log10(math.Abs(v))))
	decimals := max(3-mag, 0)
	s := strconv.FormatFloat(v, 'f', decimals, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// String renders the line without trailing newline.
func (l Line) String() string {
	var b strings.Builder
	b.WriteString("BENCH ")
	b.WriteString(l.Scenario)
	b.WriteByte(' ')
	b.WriteString(l.Metric)
	b.WriteByte('=')
	b.WriteString(FormatValue(l.Value))
	b.WriteString(l.Unit)
	if l.HasAnchor {
		au := l.AnchorUnit
		if au == "" {
			au = l.Unit
		}
		fmt.Fprintf(&b, " anchor=%s%s ratio=%s", FormatValue(l.Anchor), au, FormatRatio(l.Ratio))
	}
	if l.Note != "" {
		b.WriteByte(' ')
		b.WriteString(l.Note)
	}
	return b.String()
}

// FormatRatio prints a ratio with two decimals, or n/a when there is none (zero anchor).
func FormatRatio(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "n/a"
	}
	return strconv.FormatFloat(r, 'f', 2, 64)
}

// Fprint writes the line and a newline.
func Fprint(w io.Writer, l Line) error {
	_, err := io.WriteString(w, l.String()+"\n")
	if err != nil {
		return fmt.Errorf("write bench line: %w", err)
	}
	return nil
}

// Printer writes BENCH lines for one scenario; benchmarks use it from TestMain or the benchmark body.
type Printer struct {
	W        io.Writer
	Scenario string
}

// Value prints one figure without anchor.
func (p Printer) Value(metric string, v float64, unit string) {
	_ = Fprint(p.W, New(p.Scenario, metric, v, unit))
}

// Anchored prints one figure compared with an anchor in the same unit.
func (p Printer) Anchored(metric string, v float64, unit string, anchor float64) {
	_ = Fprint(p.W, New(p.Scenario, metric, v, unit).WithAnchor(anchor))
}

// Note prints a `BENCH-NOTE <scenario> <text>` line: context that is not a figure (e.g. where a
// figure's routes came from, or why an anchor was skipped). The summary lists notes under the table.
func (p Printer) Note(format string, args ...any) {
	text := strings.Join(strings.Fields(fmt.Sprintf(format, args...)), " ")
	fmt.Fprintf(p.W, "%s %s %s\n", NotePrefix, p.Scenario, text)
}

// NotePrefix starts a note line.
const NotePrefix = "BENCH-NOTE"

// ErrNotBench marks a line that is not a BENCH line at all (as opposed to a malformed one).
var ErrNotBench = errors.New("not a BENCH line")

// Parse reads one BENCH line. Tokens after the figure other than anchor= and ratio= are kept as Note.
// A ratio that is present is taken as printed (not recomputed), so the summary shows what the
// benchmark said; a missing ratio is computed from the anchor.
func Parse(s string) (Line, error) {
	f := strings.Fields(s)
	if len(f) == 0 || f[0] != "BENCH" {
		return Line{}, ErrNotBench
	}
	if len(f) < 3 {
		return Line{}, fmt.Errorf("parse bench line %q: want scenario and metric=value", s)
	}
	l := Line{Scenario: f[1]}
	m, v, ok := strings.Cut(f[2], "=")
	if !ok || m == "" {
		return Line{}, fmt.Errorf("parse bench line %q: %q is not metric=value", s, f[2])
	}
	var err error
	l.Metric = m
	if l.Value, l.Unit, err = SplitValue(v); err != nil {
		return Line{}, fmt.Errorf("parse bench line %q: %w", s, err)
	}
	haveRatio := false
	var notes []string
	for i := 3; i < len(f); i++ {
		k, v, ok := strings.Cut(f[i], "=")
		switch {
		case ok && k == "anchor" && !l.HasAnchor:
			if l.Anchor, l.AnchorUnit, err = SplitValue(v); err != nil {
				return Line{}, fmt.Errorf("parse bench line %q: anchor: %w", s, err)
			}
			l.HasAnchor = true
			if l.AnchorUnit == l.Unit {
				l.AnchorUnit = ""
			}
		case ok && k == "ratio" && !haveRatio:
			if v == "n/a" {
				l.Ratio = math.NaN()
			} else if l.Ratio, err = strconv.ParseFloat(v, 64); err != nil {
				return Line{}, fmt.Errorf("parse bench line %q: ratio: %w", s, err)
			}
			haveRatio = true
		default:
			notes = append(notes, f[i])
		}
	}
	if haveRatio && !l.HasAnchor {
		return Line{}, fmt.Errorf("parse bench line %q: ratio without anchor", s)
	}
	if l.HasAnchor && !haveRatio {
		l = l.WithAnchor(l.Anchor)
	}
	l.Note = strings.Join(notes, " ")
	return l, nil
}

// SplitValue splits "20.9ms" into 20.9 and "ms", "1000/s" into 1000 and "/s", "0.95" into 0.95 and "".
func SplitValue(s string) (float64, string, error) {
	// What FormatValue prints for a figure with nothing to divide by (a rate over no work).
	for _, special := range []string{"NaN", "+Inf", "-Inf"} {
		if rest, ok := strings.CutPrefix(s, special); ok {
			v, _ := strconv.ParseFloat(special, 64)
			return v, rest, nil
		}
	}
	n := numberPrefix(s)
	if n == 0 {
		return 0, "", fmt.Errorf("split value %q: no number", s)
	}
	v, err := strconv.ParseFloat(s[:n], 64)
	if err != nil {
		return 0, "", fmt.Errorf("split value %q: %w", s, err)
	}
	unit := s[n:]
	// "1.5.2" or "0e0e0" would print back as a different number, so a unit may not start with
	// anything that continues a number (a fraction or an exponent).
	if numberPrefix("0"+unit) != 1 {
		return 0, "", fmt.Errorf("split value %q: unit %q starts like a number", s, unit)
	}
	return v, unit, nil
}

// numberPrefix is the length of the decimal number at the start of s. An exponent counts only when
// digits follow the e, so a unit starting with e stays a unit.
func numberPrefix(s string) int {
	i := 0
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		i++
	}
	digits := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
		digits++
	}
	if i < len(s) && s[i] == '.' {
		j := i + 1
		frac := 0
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
			frac++
		}
		// A dot without digits after it belongs to the unit, so "1..5" keeps unit "..5".
		if frac > 0 {
			i = j
			digits += frac
		}
	}
	if digits == 0 {
		return 0
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		j := i + 1
		if j < len(s) && (s[j] == '-' || s[j] == '+') {
			j++
		}
		k := j
		for k < len(s) && s[k] >= '0' && s[k] <= '9' {
			k++
		}
		if k > j {
			i = k
		}
	}
	return i
}
