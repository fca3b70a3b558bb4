package linkwatch

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terracenet/terrace/internal/nstest"
)

// TestSubscribe: in a fresh namespace, only the interfaces the filter keeps are reported, new
// and deleted alike as the filter says, and the channel closes with the context.
func TestSubscribe(t *testing.T) {
	ns := nstest.New(t)
	h, _ := nstest.Handle(t, ns)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := Subscribe(ctx, &h, 16, func(name string, msgType uint16) bool {
		return strings.HasPrefix(name, "keep") && (msgType == unix.RTM_NEWLINK || msgType == unix.RTM_DELLINK)
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	nstest.Run(t, ns, "ip", "link", "add", "skip0", "type", "veth", "peer", "name", "skip1")
	nstest.Run(t, ns, "ip", "link", "add", "keep0", "type", "veth", "peer", "name", "other0")
	nstest.Run(t, ns, "ip", "link", "del", "keep0")
	seen := map[string]bool{}
	deadline := time.After(5 * time.Second)
	for !seen["keep0"] {
		select {
		case n := <-c:
			seen[n] = true
		case <-deadline:
			t.Fatalf("keep0 never reported; saw %v", seen)
		}
	}
	time.Sleep(100 * time.Millisecond)
	for drained := false; !drained; {
		select {
		case n := <-c:
			seen[n] = true
		default:
			drained = true
		}
	}
	for n := range seen {
		if !strings.HasPrefix(n, "keep") {
			t.Errorf("%s reported though the filter refuses it", n)
		}
	}
	cancel()
	select {
	case _, ok := <-c:
		for ok {
			_, ok = <-c
		}
	case <-time.After(5 * time.Second):
		t.Fatal("channel not closed after the context ended")
	}
}
