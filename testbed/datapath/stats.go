package datapath

import (
	"fmt"
	"slices"
	"strings"

	"github.com/terracenet/terrace/internal/benchfmt"
)

// Spread summarises repeated measurements of one figure. The median, not the best round, is
// reported: on a shared 2-core machine one lucky round says more about the neighbours' load than
// about the path.
type Spread struct {
	N                int
	Min, Median, Max float64
}

// SpreadOf summarises vs (which it does not modify); the median of an even count is the mean of the
// two middle values. An empty input gives the zero Spread.
func SpreadOf(vs []float64) Spread {
	if len(vs) == 0 {
		return Spread{}
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Spread{N: len(s), Min: s[0], Median: m, Max: s[len(s)-1]}
}

// Relative is (max-min)/median, the width of the spread as a share of the figure (0 without one).
func (s Spread) Relative() float64 {
	if s.Median == 0 {
		return 0
	}
	return (s.Max - s.Min) / s.Median
}

func (s Spread) String() string {
	if s.N == 0 {
		return "none"
	}
	return fmt.Sprintf("median %s (min %s, max %s, n %d)", benchfmt.FormatValue(s.Median),
		benchfmt.FormatValue(s.Min), benchfmt.FormatValue(s.Max), s.N)
}

// FormatRatios prints paired ratios with two decimals each, in order.
func FormatRatios(rs []float64) string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = benchfmt.FormatRatio(r)
	}
	return strings.Join(out, " ")
}
