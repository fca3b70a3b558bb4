package felix

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeNet is an in-memory TCP: listeners by address with Linux's bind conflicts (same port, and
// the same host or either a wildcard), connections over net.Pipe.
type fakeNet struct {
	mu     sync.Mutex
	bound  map[string]*fakeListener
	refuse map[string]error // binds that fail whatever else is bound
}

func newFakeNet() *fakeNet {
	return &fakeNet{bound: map[string]*fakeListener{}, refuse: map[string]error{}}
}

func (n *fakeNet) setRefuse(addr string, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err == nil {
		delete(n.refuse, addr)
	} else {
		n.refuse[addr] = err
	}
}

func (n *fakeNet) listen(addr string) (net.Listener, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	fail := func(errno error) error {
		return &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", errno)}
	}
	if err := n.refuse[addr]; err != nil {
		return nil, fail(err)
	}
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	for a := range n.bound {
		bh, bp, _ := net.SplitHostPort(a)
		if bp == p && (bh == h || bh == "0.0.0.0" || h == "0.0.0.0") {
			return nil, fail(syscall.EADDRINUSE)
		}
	}
	l := &fakeListener{n: n, addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
	n.bound[addr] = l
	return l, nil
}

func (n *fakeNet) dial(addr string) (net.Conn, error) {
	n.mu.Lock()
	l := n.bound[addr]
	n.mu.Unlock()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	if l == nil {
		return nil, refused
	}
	c, s := net.Pipe()
	select {
	case l.conns <- s:
		return c, nil
	case <-l.closed:
		return nil, refused
	case <-time.After(time.Second):
		return nil, errors.New("fake accept timed out")
	}
}

// get returns the status of GET path on addr, or 0 when nothing listens there.
func (n *fakeNet) get(addr, path string) int {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(_ context.Context, _, a string) (net.Conn, error) { return n.dial(a) }}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

type fakeListener struct {
	n      *fakeNet
	addr   string
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *fakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *fakeListener) Close() error {
	l.once.Do(func() {
		l.n.mu.Lock()
		if l.n.bound[l.addr] == l {
			delete(l.n.bound, l.addr)
		}
		l.n.mu.Unlock()
		close(l.closed)
	})
	return nil
}

func (l *fakeListener) Addr() net.Addr { return fakeAddr(l.addr) }

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// TestEndpointServerMoves drives one endpoint through the moves FelixConfiguration can ask for.
func TestEndpointServerMoves(t *testing.T) {
	const (
		a       = "127.0.0.1:9099"
		b       = "127.0.0.1:9199"
		wild    = "0.0.0.0:9199"
		bad     = "192.0.2.1:9199"
		refused = "127.0.0.1:9299"
	)
	fn := newFakeNet()
	hl := newHealth(nil, time.Minute)
	hl.setInSync(true)
	hl.setProgrammed()
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	s := newEndpointServer("health", "healthListen", a, ok, fn.listen, testLogger(t), hl, 5*time.Millisecond, 20*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	}
	defer stop()

	serves := func(addr string) bool { return fn.get(addr, "/liveness") == http.StatusOK }
	ready := func() (bool, string) { return hl.ready() }
	waitFor(t, "first bind", func() bool { return serves(a) && s.addr() == a })

	s.set(b)
	waitFor(t, "moved to "+b, func() bool { return serves(b) && !serves(a) && s.addr() == b })

	// Same port, wider host: the old listener holds the port and has to hand it over.
	s.set(wild)
	waitFor(t, "handed over to "+wild, func() bool { return serves(wild) && !serves(b) && s.addr() == wild })

	// An address that cannot be bound: the old listener stays, readiness says why, liveness is fine.
	fn.setRefuse(bad, syscall.EADDRNOTAVAIL)
	s.set(bad)
	waitFor(t, "failure in readiness", func() bool {
		r, why := ready()
		return !r && strings.Contains(why, "health endpoint not served") && strings.Contains(why, bad)
	})
	if !serves(wild) || s.addr() != wild {
		t.Errorf("old endpoint %s gone after a failed move (serving on %q)", wild, s.addr())
	}
	if live, why := hl.live(); !live {
		t.Errorf("a failed bind made liveness fail: %s", why)
	}
	// It is retried: once the address is there, the move completes and readiness recovers.
	fn.setRefuse(bad, nil)
	waitFor(t, "retried bind", func() bool { r, _ := ready(); return serves(bad) && !serves(wild) && r })

	// A hand-over that fails gives the port back to the old address.
	s.set(a)
	waitFor(t, "back on "+a, func() bool { return serves(a) && s.addr() == a })
	fn.setRefuse("0.0.0.0:9099", syscall.EADDRINUSE)
	s.set("0.0.0.0:9099")
	waitFor(t, "failed hand-over in readiness", func() bool { r, _ := ready(); return !r })
	if !serves(a) {
		t.Errorf("failed hand-over left nothing on %s", a)
	}
	fn.setRefuse("0.0.0.0:9099", nil)
	s.set(a)
	waitFor(t, "readiness after giving up the move", func() bool { r, _ := ready(); return r && serves(a) })

	// A listener that dies under the server is bound again.
	fn.mu.Lock()
	l := fn.bound[a]
	fn.mu.Unlock()
	l.Close()
	waitFor(t, "rebound after the listener died", func() bool { return serves(a) && fn.bound[a] != l })

	s.set("")
	waitFor(t, "disabled", func() bool { return !serves(a) && s.addr() == "" })
	s.set(refused)
	waitFor(t, "enabled again", func() bool { return serves(refused) })

	stop()
	if serves(refused) || s.addr() != "" {
		t.Errorf("still serving after run returned")
	}
}

// TestHealthStatesDeliveredInOrder: with several goroutines changing the state at once, the last
// state delivered to onState is the current one (an older state delivered late would stay on
// the node's status board until readiness changed again).
func TestHealthStatesDeliveredInOrder(t *testing.T) {
	for round := range 300 {
		var mu sync.Mutex
		var last State
		h := newHealth(func(st State) {
			runtime.Gosched()
			mu.Lock()
			last = st
			mu.Unlock()
		}, time.Minute)
		h.setInSync(true)
		h.setProgrammed()
		var wg sync.WaitGroup
		wg.Go(func() { h.setServeErr("metrics", nil) })
		wg.Go(func() { h.setWriterErr("status", errors.New("etcd down")) })
		wg.Go(func() { h.setServeErr("health", errors.New("bind failed")) })
		wg.Wait()
		ready, detail := h.ready()
		mu.Lock()
		got := last
		mu.Unlock()
		if got.Ready != ready || got.Detail != detail {
			t.Fatalf("round %d: last delivered %+v, current ready=%v %q", round, got, ready, detail)
		}
	}
}
