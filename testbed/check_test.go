package testbed

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseExpectation(t *testing.T) {
	text := `# demo intent
*      *       *    reachable
*      */be-*  *    blocked   # backends closed
*/fe-* */be-*  tcp  reachable
`
	e, err := ParseExpectation(text)
	if err != nil {
		t.Fatal(err)
	}
	want := []ExpectRule{
		{"*", "*", "*", Reachable},
		{"*", "*/be-*", "*", Blocked},
		{"*/fe-*", "*/be-*", ProbeTCP, Reachable},
	}
	if diff := cmp.Diff(want, e.Rules); diff != "" {
		t.Fatalf("rules (-want +got):\n%s", diff)
	}
	lookups := []struct {
		from, to, probe, want string
	}{
		{"host-1/fe-1", "host-2/be-2", ProbeTCP, Reachable},
		{"host-1/fe-1", "host-2/be-2", ProbeICMP, Blocked},
		{"host-1/be-1", "host-2/be-2", ProbeTCP, Blocked},
		{"host-1/be-1", "host-2/fe-2", ProbeICMP, Reachable},
	}
	for _, l := range lookups {
		if got := e.Lookup(l.from, l.to, l.probe); got != l.want {
			t.Errorf("Lookup(%s, %s, %s) = %s, want %s", l.from, l.to, l.probe, got, l.want)
		}
	}
	var none *Expectation
	if got := none.Lookup("a/b", "c/d", ProbeTCP); got != Reachable {
		t.Errorf("nil expectation: %s, want reachable", got)
	}
}

func TestParseExpectationErrors(t *testing.T) {
	tests := []struct {
		text, want string
	}{
		{"* * * maybe", "line 1: invalid input: result"},
		{"\n* * udp reachable", "line 2: invalid input: probe"},
		{"* * reachable", "want FROM TO PROBE RESULT"},
		{"[ * * reachable", "bad pattern"},
	}
	for _, tt := range tests {
		_, err := ParseExpectation(tt.text)
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseExpectation(%q) = %v, want ErrInvalid with %q", tt.text, err, tt.want)
		}
	}
}

func FuzzParseExpectation(f *testing.F) {
	f.Add("* * * reachable\n*/a */b tcp blocked # c\n")
	f.Add("[ ] icmp blocked")
	f.Add("#\n\n")
	f.Fuzz(func(t *testing.T, text string) {
		e, err := ParseExpectation(text)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		for _, r := range e.Rules {
			if (r.Result != Reachable && r.Result != Blocked) || (r.Probe != "*" && r.Probe != ProbeTCP && r.Probe != ProbeICMP) {
				t.Fatalf("accepted rule %+v", r)
			}
		}
		// Lookups never panic and always give one of the two results.
		if got := e.Lookup("host-1/a", "host-2/b", ProbeTCP); got != Reachable && got != Blocked {
			t.Fatalf("Lookup = %q", got)
		}
	})
}

func TestICMPChecksum(t *testing.T) {
	// An echo request whose checksum field holds the right value sums to zero.
	msg := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 't', 'e', 'r', 'r', 'a', 'c', 'e', '!'}
	c := icmpChecksum(msg)
	msg[2], msg[3] = byte(c>>8), byte(c)
	if got := icmpChecksum(msg); got != 0 {
		t.Errorf("checksum over a checksummed message = %#x, want 0", got)
	}
	if c == 0 {
		t.Error("checksum of a non-trivial message is 0")
	}
	if got := icmpChecksum([]byte{0xff}); got != 0x00ff {
		t.Errorf("odd length: %#x, want 0x00ff", got)
	}
}

func TestMatrixDifferences(t *testing.T) {
	m := &Matrix{Cells: []Cell{
		{Expected: Reachable, Actual: Reachable},
		{Expected: Reachable, Actual: Blocked},
		{Expected: Blocked, Actual: Reachable},
	}}
	if got := m.Differences(); got != 2 {
		t.Errorf("Differences = %d, want 2", got)
	}
}
