package benchfmt

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestString(t *testing.T) {
	tests := []struct {
		name string
		line Line
		want string
	}{
		{"plain", New("kv-put", "p50", 0.3412, "ms"), "BENCH kv-put p50=0.3412ms"},
		{"rounded", New("cni-add", "p50", 20.94999, "ms"), "BENCH cni-add p50=20.95ms"},
		{"large", New("ipam", "allocs", 1234567.8, "/s"), "BENCH ipam allocs=1234568/s"},
		{"zero", New("x", "dups", 0, ""), "BENCH x dups=0"},
		{"anchored", New("dp-tcp", "throughput", 15.3, "Gbit/s").WithAnchor(16), "BENCH dp-tcp throughput=15.3Gbit/s anchor=16Gbit/s ratio=0.96"},
		{"zero anchor", New("x", "t", 1, "ms").WithAnchor(0), "BENCH x t=1ms anchor=0ms ratio=n/a"},
		{"note", New("x", "t", 1, "ms").WithNote("(routes from BGP)"), "BENCH x t=1ms (routes from BGP)"},
		{"negative", New("x", "delta", -0.25, "ms"), "BENCH x delta=-0.25ms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.line.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPrinter(t *testing.T) {
	var b bytes.Buffer
	p := Printer{W: &b, Scenario: "datapath-tcp"}
	p.Value("throughput", 9.5, "Gbit/s")
	p.Anchored("throughput", 9.5, "Gbit/s", 10)
	p.Note("routes installed  by\nthe benchmark")
	want := "BENCH datapath-tcp throughput=9.5Gbit/s\n" +
		"BENCH datapath-tcp throughput=9.5Gbit/s anchor=10Gbit/s ratio=0.95\n" +
		"BENCH-NOTE datapath-tcp routes installed by the benchmark\n"
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("printer output (-want +got):\n%s", diff)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Line
		wantErr bool
		notB    bool
	}{
		{in: "BENCH kv-put p50=0.341ms anchor=0.47ms ratio=0.73",
			want: Line{Scenario: "kv-put", Metric: "p50", Value: 0.341, Unit: "ms", HasAnchor: true, Anchor: 0.47, Ratio: 0.73}},
		{in: "BENCH ipam-x allocs=812/s anchor=1000/s ratio=0.81",
			want: Line{Scenario: "ipam-x", Metric: "allocs", Value: 812, Unit: "/s", HasAnchor: true, Anchor: 1000, Ratio: 0.81}},
		{in: "BENCH ipam-x duplicates=0", want: Line{Scenario: "ipam-x", Metric: "duplicates"}},
		{in: "  BENCH a b=2ms anchor=4ms", want: Line{Scenario: "a", Metric: "b", Value: 2, Unit: "ms", HasAnchor: true, Anchor: 4, Ratio: 0.5}},
		{in: "BENCH a b=2ms anchor=4s ratio=0.0005", want: Line{Scenario: "a", Metric: "b", Value: 2, Unit: "ms", HasAnchor: true, Anchor: 4, AnchorUnit: "s", Ratio: 0.0005}},
		{in: "BENCH felixdp-x time=71.5ms anchor=74.9ms ratio=0.95 (anchor: raw restore)",
			want: Line{Scenario: "felixdp-x", Metric: "time", Value: 71.5, Unit: "ms", HasAnchor: true, Anchor: 74.9, Ratio: 0.95, Note: "(anchor: raw restore)"}},
		{in: "BENCH a n=1e3pps", want: Line{Scenario: "a", Metric: "n", Value: 1000, Unit: "pps"}},
		{in: "BENCH a n=3events", want: Line{Scenario: "a", Metric: "n", Value: 3, Unit: "events"}},
		{in: "BENCH a n=1.ms", want: Line{Scenario: "a", Metric: "n", Value: 1, Unit: ".ms"}},
		{in: "BENCH a r=1 anchor=0 ratio=n/a", want: Line{Scenario: "a", Metric: "r", Value: 1, HasAnchor: true, Ratio: math.NaN()}},
		// What FormatValue prints for a rate over no work reads back.
		{in: "BENCH ipam batch=NaN", want: Line{Scenario: "ipam", Metric: "batch", Value: math.NaN()}},
		{in: "BENCH ipam retries=+Infms", want: Line{Scenario: "ipam", Metric: "retries", Value: math.Inf(1), Unit: "ms"}},
		{in: "BENCHMARK a b=1", notB: true},
		{in: "", notB: true},
		{in: "BENCH-NOTE a text", notB: true},
		{in: "BENCH a", wantErr: true},
		{in: "BENCH a b", wantErr: true},
		{in: "BENCH a =1", wantErr: true},
		{in: "BENCH a b=ms", wantErr: true},
		{in: "BENCH a b=.0.0", wantErr: true},
		{in: "BENCH a b=1 ratio=2", wantErr: true},
		{in: "BENCH a b=1 anchor=x", wantErr: true},
		{in: "BENCH a b=1 anchor=2 ratio=x", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.notB {
				if !errors.Is(err, ErrNotBench) {
					t.Fatalf("Parse(%q) error = %v, want ErrNotBench", tc.in, err)
				}
				return
			}
			if tc.wantErr {
				if err == nil || errors.Is(err, ErrNotBench) {
					t.Fatalf("Parse(%q) = %+v, %v; want a parse error", tc.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateNaNs(), cmpopts.EquateApprox(0, 1e-12)); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestFormatValue(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{0, "0"}, {1, "1"}, {0.5, "0.5"}, {0.00012346, "0.0001235"}, {12.3456, "12.35"},
		{123.456, "123.5"}, {1234.6, "1235"}, {99999.9, "100000"}, {-3.14159, "-3.142"},
		{math.NaN(), "NaN"},
	}
	for _, tc := range tests {
		if got := FormatValue(tc.in); got != tc.want {
			t.Errorf("FormatValue(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseGoBench(t *testing.T) {
	const pkg = "github.com/terracenet/terrace/datastore/kv"
	tests := []struct {
		line string
		want []Line
		ok   bool
	}{
		{"BenchmarkList/keys=100-2   \t    5000\t    291000 ns/op\t   0.291 p50-ms\t  4.908 p99-ms", []Line{
			New("kv.List/keys=100", "time", 291, "µs/op"),
			New("kv.List/keys=100", "p50", 0.291, "ms"),
			New("kv.List/keys=100", "p99", 4.908, "ms"),
		}, true},
		{"BenchmarkEvaluate/policy-2  1000000  85.2 ns/op  0 B/op  0 allocs/op", []Line{
			New("kv.Evaluate/policy", "time", 85.2, "ns/op"),
			New("kv.Evaluate/policy", "mem", 0, "B/op"),
			New("kv.Evaluate/policy", "allocs", 0, "/op"),
		}, true},
		{"BenchmarkInitial10kRules/nft-2  5  293000000 ns/op", []Line{New("kv.Initial10kRules/nft", "time", 293, "ms/op")}, true},
		{"BenchmarkLearn  1  2500000000 ns/op", []Line{New("kv.Learn", "time", 2.5, "s/op")}, true},
		{"BenchmarkDecodeValidate-2  3  1000 ns/op  12.5 µs/doc", []Line{
			New("kv.DecodeValidate", "time", 1, "µs/op"), New("kv.DecodeValidate", "µs/doc", 12.5, "")}, true},
		{"BenchmarkX-2 --- FAIL: something", nil, false},
		{"BenchmarkX-2", nil, false},
		{"BenchmarkX-2  1  100", nil, false},
		{"BenchmarkX-2  1  abc ns/op", nil, false},
		{"--- SKIP: BenchmarkX", nil, false},
		{"ok  \tgithub.com/x\t1.2s", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			got, ok := ParseGoBench(pkg, tc.line)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v (lines %v)", ok, tc.ok, got)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateApprox(1e-9, 0)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if got := ScenarioOf("github.com/terracenet/terrace/felix/dataplane/routes", "BenchmarkInstall10k-2"); got != "routes.Install10k" {
		t.Errorf("ScenarioOf = %q", got)
	}
}

// FuzzParse: Parse never panics, and whatever it accepts prints back to a line that parses to the
// same figure.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"BENCH kv-put p50=0.341ms anchor=0.47ms ratio=0.73",
		"BENCH a b=1e3pps x y", "BENCH a b=1..5", "BENCH a b=-0.5e-3s anchor=1s", "BENCH a b=1 anchor=0 ratio=n/a",
		"BENCH a b=.5e anchor=2e+ ratio=1", "BENCH", "BENCH a b=NaN anchor=-Infs",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(l.String())
		if err != nil {
			t.Fatalf("Parse(%q) ok but its String %q does not parse: %v", s, l.String(), err)
		}
		if again.Scenario != l.Scenario || again.Metric != l.Metric || again.Unit != l.Unit ||
			FormatValue(again.Value) != FormatValue(l.Value) || again.HasAnchor != l.HasAnchor ||
			FormatRatio(again.Ratio) != FormatRatio(l.Ratio) || again.Note != l.Note {
			t.Fatalf("round trip of %q: %+v became %+v", s, l, again)
		}
	})
}

// FuzzParseGoBench: whatever ParseGoBench accepts becomes BENCH lines that Parse reads back.
func FuzzParseGoBench(f *testing.F) {
	f.Add("BenchmarkList/keys=100-2 5000 291000 ns/op 0.291 p50-ms")
	f.Add("BenchmarkA 1 1 x=y")
	f.Add("Benchmark-2 1 1 ns/op")
	f.Fuzz(func(t *testing.T, s string) {
		lines, ok := ParseGoBench("example.com/p", s)
		if !ok {
			return
		}
		if len(lines) == 0 {
			t.Fatalf("ParseGoBench(%q) ok with no lines", s)
		}
		for _, l := range lines {
			if _, err := Parse(l.String()); err != nil {
				t.Fatalf("ParseGoBench(%q) gave %q which does not parse: %v", s, l.String(), err)
			}
		}
	})
}
