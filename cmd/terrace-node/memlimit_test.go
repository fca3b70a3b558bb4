package main

import (
	"math"
	"strings"
	"testing"
)

func TestParseMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"200MiB", 200 << 20, false},
		{"1GiB", 1 << 30, false},
		{"524288000", 524288000, false},
		{"64KiB", 64 << 10, false},
		{"100B", 100, false},
		{"off", math.MaxInt64, false},
		{"", 0, true},
		{"0", 0, true},
		{"-5MiB", 0, true},
		{"200MB", 0, true}, // GOMEMLIMIT has no decimal units: refuse rather than guess
		{"2.5GiB", 0, true},
		{" 200MiB", 0, true},
		{"9999999TiB", 0, true},
	} {
		got, err := parseMemoryLimit(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseMemoryLimit(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func FuzzParseMemoryLimit(f *testing.F) {
	for _, s := range []string{"200MiB", "off", "1", "9223372036854775807B", "1TiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseMemoryLimit(s)
		if err == nil && n <= 0 {
			t.Errorf("%q parsed to non-positive %d", s, n)
		}
		if err != nil && !strings.Contains(err.Error(), "--go-memory-limit") {
			t.Errorf("error does not name the flag: %v", err)
		}
	})
}

// TestMemoryLimitRefused: a bad size is bad usage (exit 2) before anything starts.
func TestMemoryLimitRefused(t *testing.T) {
	var out, errOut strings.Builder
	code := execute([]string{"run", "--node-name", "n1", "--ip", "192.0.2.10", "--felix=false", "--bgp=false",
		"--etcd-endpoints", "http://127.0.0.1:1", "--node-socket", t.TempDir() + "/s.sock",
		"--go-memory-limit", "lots"}, &out, &errOut)
	if code != 2 || !strings.Contains(errOut.String(), "parse --go-memory-limit") {
		t.Errorf("exit %d, stderr %q; want 2 and the flag named", code, errOut.String())
	}
}
