package e2e

import (
	"strings"
	"testing"
)

const trieStatSample = `Basic info: size of leaf: 48 bytes, size of tnode: 40 bytes.
Main:
	Aver depth:     2.42
	Max depth:      3
	Leaves:         7
	Prefixes:       100007
	Internal nodes: 5
	  1: 1  2: 3  3: 1
	Pointers: 22
Null ptrs: 11
Total size: 2  kB
Local:
	Aver depth:     2.42
	Prefixes:       9
`

func TestParseTrieStat(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     int
		wantErr  bool
	}{
		{"main before local", trieStatSample, 100007, false},
		{"local only", "Local:\n\tPrefixes: 9\n", 0, true},
		{"no main prefixes", "Main:\n\tLeaves: 3\nLocal:\n\tPrefixes: 9\n", 0, true},
		{"garbage count", "Main:\n\tPrefixes: many\n", 0, true},
		{"empty", "", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTrieStat(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("parseTrieStat = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func FuzzParseTrieStat(f *testing.F) {
	f.Add(trieStatSample)
	f.Add("Main:\n\tPrefixes: -1\n")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseTrieStat(s)
		if err == nil && !strings.Contains(s, "Prefixes:") {
			t.Errorf("count %d from input without a Prefixes line", n)
		}
	})
}
