// Command benchsummary reads the output of `go test -bench` (one or several packages) on stdin and
// prints every BENCH line, then a summary table (scenario, metric, value, anchor, ratio), the notes,
// skipped benchmarks and failures. `make bench` pipes its benchmark run through it:
//
//	go test -run '^$' -bench . ./... 2>&1 | go run ./internal/benchsummary
//
// Packages that print their own BENCH lines are taken as they are; for a package that prints none,
// the standard result lines of go test become BENCH lines (see benchfmt.ParseGoBench), and raw-tool
// anchors that such packages measure as separate benchmarks are paired with their figure.
//
// It exits 1 when the input shows a failed benchmark (a correctness check, a build failure or a
// panic) and 0 otherwise: a slow figure is never a failure. It must never run benchmarks itself.
package main

import (
	"fmt"
	"os"
)

func main() {
	s, err := Read(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchsummary: %v\n", err)
		os.Exit(1)
	}
	if err := s.Write(os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "benchsummary: %v\n", err)
		os.Exit(1)
	}
	if len(s.Failures) > 0 {
		os.Exit(1)
	}
}
