package datapath

import (
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSpreadOf(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want Spread
	}{
		{name: "empty", want: Spread{}},
		{name: "one", in: []float64{3}, want: Spread{N: 1, Min: 3, Median: 3, Max: 3}},
		{name: "odd, unsorted", in: []float64{9, 1, 5}, want: Spread{N: 3, Min: 1, Median: 5, Max: 9}},
		{name: "even takes the middle mean", in: []float64{4, 1, 10, 2}, want: Spread{N: 4, Min: 1, Median: 3, Max: 10}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]float64(nil), tc.in...)
			if diff := cmp.Diff(tc.want, SpreadOf(tc.in)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(in, tc.in); diff != "" {
				t.Errorf("SpreadOf modified its input (-before +after):\n%s", diff)
			}
		})
	}
	if got := SpreadOf([]float64{8, 10, 12}).Relative(); math.Abs(got-0.4) > 1e-9 {
		t.Errorf("Relative = %v, want 0.4", got)
	}
	if got := (Spread{}).Relative(); got != 0 {
		t.Errorf("Relative of empty spread = %v, want 0", got)
	}
	if got, want := SpreadOf([]float64{14.2, 13.1, 15}).String(), "median 14.2 (min 13.1, max 15, n 3)"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	if got, want := FormatRatios([]float64{0.956, 1, math.Inf(1)}), "0.96 1.00 n/a"; got != want {
		t.Errorf("FormatRatios = %q, want %q", got, want)
	}
}
