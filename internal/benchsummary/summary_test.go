package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/terracenet/terrace/datastore/kv
cpu: AMD EPYC
BenchmarkPut-2   	    1000	    341000 ns/op	   0.341 p50-ms
BENCH kv-put p50=0.341ms anchor=0.47ms ratio=0.73
BENCH-NOTE kv-put fsync on
--- BENCH: BenchmarkPut-2
    bench_test.go:22: in host namespace:
        BenchmarkPut
        BENCH kv-put p50=0.341ms anchor=0.47ms ratio=0.73
        BENCH-NOTE kv-put echoed
PASS
ok  	github.com/terracenet/terrace/datastore/kv	3.1s
goos: linux
goarch: amd64
pkg: github.com/terracenet/terrace/felix/dataplane/routes
cpu: AMD EPYC
BenchmarkInstall10k-2         	       5	  60000000 ns/op
BenchmarkInstall10k/batched-2 	       5	  40000000 ns/op
BenchmarkRawRouteAdd10k-2     	       5	  50000000 ns/op
PASS
ok  	github.com/terracenet/terrace/felix/dataplane/routes	9.0s
goos: linux
pkg: github.com/terracenet/terrace/testbed/datapath
--- SKIP: BenchmarkDataPath
    bench_test.go:30: testbed tests need root
PASS
ok  	github.com/terracenet/terrace/testbed/datapath	0.1s
BENCH broken line
`

func TestRead(t *testing.T) {
	s, err := Read(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range s.Lines {
		got = append(got, l.String())
	}
	want := []string{
		"BENCH kv-put p50=0.341ms anchor=0.47ms ratio=0.73",
		"BENCH routes.Install10k time=60ms/op anchor=50ms/op ratio=1.20 (anchor: routes.RawRouteAdd10k)",
		"BENCH routes.Install10k/batched time=40ms/op anchor=50ms/op ratio=0.80 (anchor: routes.RawRouteAdd10k)",
		"BENCH routes.RawRouteAdd10k time=50ms/op",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"kv-put fsync on"}, s.Notes); diff != "" {
		t.Errorf("notes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"BenchmarkDataPath: bench_test.go:30: testbed tests need root"}, s.Skips); diff != "" {
		t.Errorf("skips (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"BENCH broken line"}, s.Malformed); diff != "" {
		t.Errorf("malformed (-want +got):\n%s", diff)
	}
	if len(s.Failures) != 0 {
		t.Errorf("failures = %v, want none", s.Failures)
	}
}

func TestReadFailures(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"benchmark fatal", "pkg: x/y\n--- FAIL: BenchmarkA\n    a_test.go:3: wrong count\nFAIL\nFAIL\tx/y\t1.0s\n",
			[]string{"--- FAIL: BenchmarkA", "FAIL", "FAIL\tx/y\t1.0s"}},
		{"build", "FAIL\tx/z [build failed]\n", []string{"FAIL\tx/z [build failed]"}},
		{"panic", "pkg: x/y\npanic: boom\n", []string{"panic: boom"}},
		{"clean", "pkg: x/y\nBenchmarkA-2 1 5 ns/op\nok  \tx/y\t0.1s\n", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Read(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, s.Failures); diff != "" {
				t.Errorf("failures (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWrite(t *testing.T) {
	s, err := Read(strings.NewReader(sample + "--- FAIL: BenchmarkX\n"))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := s.Write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"== BENCH lines (4)",
		"SCENARIO",
		"kv-put                     p50     0.341ms  0.47ms   0.73",
		"routes.Install10k/batched  time    40ms/op  50ms/op  0.80",
		"routes.RawRouteAdd10k      time    50ms/op  -        -",
		"== Notes (1)",
		"== Skipped (1)",
		"== FAILURES (1)\n  --- FAIL: BenchmarkX",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "no correctness failures") {
		t.Errorf("output claims no failures:\n%s", out)
	}
}

// FuzzRead: arbitrary go test output never panics the reader, and every line it keeps prints as a
// BENCH line.
func FuzzRead(f *testing.F) {
	f.Add(sample)
	f.Add("pkg: a\nBenchmarkA-2 1 1 ns/op 2 x-ms\n--- SKIP: B\n")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Read(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, l := range s.Lines {
			if !strings.HasPrefix(l.String(), "BENCH ") {
				t.Fatalf("line %q", l.String())
			}
		}
		var b bytes.Buffer
		if err := s.Write(&b); err != nil {
			t.Fatal(err)
		}
	})
}

// TestReadGluedLines: a benchmark run more than once has its name printed before the timed run,
// so its body's BENCH lines start on the name's line and the result line comes after them.
func TestReadGluedLines(t *testing.T) {
	in := "pkg: example.com/p\n" +
		"BenchmarkA\n" +
		"BENCH a p50=9ms\n" +
		"BenchmarkA-2   \tBENCH a p50=1.5ms\n" +
		"BENCH a p99=3ms\n" +
		"      30\t  20803 ns/op\n" +
		"PASS\nok  \texample.com/p\t1.0s\n"
	s, err := Read(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range s.Lines {
		got = append(got, l.String())
	}
	want := []string{"BENCH a p50=9ms", "BENCH a p50=1.5ms", "BENCH a p99=3ms"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if len(s.Malformed) != 0 {
		t.Errorf("malformed: %v", s.Malformed)
	}
}
