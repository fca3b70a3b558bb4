package embedded

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// captureHandler records every slog record so the test can see where etcd's log went.
type captureHandler struct {
	mu      sync.Mutex
	records []slog.Record
	attrs   []slog.Attr
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	h.records = append(h.records, r)
	return nil
}
func (h *captureHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &captureFork{parent: h, attrs: as}
}
func (h *captureHandler) WithGroup(string) slog.Handler { return h }

type captureFork struct {
	parent *captureHandler
	attrs  []slog.Attr
}

func (f *captureFork) Enabled(context.Context, slog.Level) bool { return true }
func (f *captureFork) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(f.attrs...)
	return f.parent.Handle(ctx, r)
}
func (f *captureFork) WithAttrs(as []slog.Attr) slog.Handler {
	return &captureFork{parent: f.parent, attrs: append(append([]slog.Attr(nil), f.attrs...), as...)}
}
func (f *captureFork) WithGroup(string) slog.Handler { return f }

func (h *captureHandler) countComponent(c string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "component" && a.Value.String() == c {
				n++
				return false
			}
			return true
		})
	}
	return n
}

func TestStartWritesDataAndLogsThroughSlog(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	h := &captureHandler{}
	client, err := FreeURL("http")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := Start(ctx, Config{DataDir: dir, ListenClient: client, Logger: slog.New(h)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer srv.Stop()
	if got := srv.Endpoints(); len(got) != 1 || got[0] != client {
		t.Fatalf("Endpoints = %v, want [%s]", got, client)
	}
	if _, err := os.Stat(filepath.Join(dir, "member", "wal")); err != nil {
		t.Errorf("no WAL in the data dir: %v", err)
	}
	if n := h.countComponent("etcd"); n == 0 {
		t.Error("etcd logged nothing through the slog logger")
	}

	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/persist", "yes"); err != nil {
		t.Fatalf("put: %v", err)
	}

	if err := srv.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	resp, err := cli.Get(ctx, "/persist")
	if err != nil {
		t.Fatalf("get after restart: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "yes" {
		t.Fatalf("after restart /persist = %v, want yes", resp.Kvs)
	}
	srv.Stop()
	srv.Stop() // twice is harmless
	if err := srv.StartAgain(ctx); err != nil {
		t.Fatalf("start again: %v", err)
	}
	if err := srv.StartAgain(ctx); err == nil {
		t.Error("StartAgain of a running member succeeded")
	}
}

func TestStopIsQuiet(t *testing.T) {
	// A clean stop must not leave warnings or errors in the log: etcd reports its own listeners
	// closing as failures, and operators read those as something having gone wrong.
	h := &captureHandler{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := Start(ctx, Config{DataDir: t.TempDir(), Logger: slog.New(h)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/k", "v"); err != nil {
		t.Fatalf("put: %v", err)
	}
	h.mu.Lock()
	before := len(h.records)
	h.mu.Unlock()
	srv.Stop()
	time.Sleep(200 * time.Millisecond) // etcd's serve goroutines log after Close returns
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.records) == before {
		t.Fatal("nothing logged during stop; the test sees nothing")
	}
	for _, r := range h.records[before:] {
		if r.Level >= slog.LevelWarn {
			t.Errorf("logged at %v during a clean stop: %s", r.Level, r.Message)
		}
	}
}

func TestStartRejectsBadConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no data dir", Config{}},
		{"bad client URL", Config{DataDir: t.TempDir(), ListenClient: "http://[::1"}},
		{"client port in use", Config{DataDir: t.TempDir(), ListenClient: "http://" + busy.Addr().String()}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if srv, err := Start(ctx, tc.cfg); err == nil {
				srv.Stop()
				t.Fatal("Start succeeded")
			}
		})
	}
}

func TestAdvertisedReplacesWildcard(t *testing.T) {
	tests := map[string]string{
		"http://0.0.0.0:2379":   "http://127.0.0.1:2379",
		"http://[::]:2379":      "http://127.0.0.1:2379",
		"http://203.0.113.5:23": "http://203.0.113.5:23",
		"https://:2379":         "https://127.0.0.1:2379",
	}
	for in, want := range tests {
		s := &Server{cfg: Config{ListenClient: in}}
		if got := s.Endpoints(); len(got) != 1 || got[0] != want {
			t.Errorf("Endpoints for %s = %v, want %s", in, got, want)
		}
	}
}
