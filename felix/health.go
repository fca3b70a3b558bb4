package felix

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// State is the agent's readiness as reported to the node's status board.
type State struct {
	Ready  bool
	Detail string // why not ready; "" when ready
}

// health is the readiness and liveness the HTTP endpoints serve; every goroutine of the agent
// writes to it.
type health struct {
	// notify is held from computing a state to delivering it, so states reach onState in the
	// order they were computed (else an older one could land last and stay on the board).
	notify     sync.Mutex
	mu         sync.Mutex
	inSync     bool
	programmed bool
	writerErrs map[string]error
	modelErrs  map[string]error
	serveErrs  map[string]error // by endpoint ("health", "metrics")
	lastBeat   time.Time
	liveWindow time.Duration
	onState    func(State)
	last       State
	reported   bool
}

func newHealth(onState func(State), liveWindow time.Duration) *health {
	return &health{writerErrs: map[string]error{}, modelErrs: map[string]error{}, serveErrs: map[string]error{},
		liveWindow: liveWindow, onState: onState, lastBeat: time.Now()}
}

func (h *health) beat() {
	h.mu.Lock()
	h.lastBeat = time.Now()
	h.mu.Unlock()
}

func (h *health) setInSync(v bool) { h.update(func() { h.inSync = v }) }
func (h *health) setProgrammed()   { h.update(func() { h.programmed = true }) }

func (h *health) setWriterErr(name string, err error) {
	h.update(func() {
		if err == nil {
			delete(h.writerErrs, name)
		} else {
			h.writerErrs[name] = err
		}
	})
}

// setServeErr records that an HTTP endpoint cannot listen where it should. It counts against
// readiness only: the dataplane is fine, and a liveness failure would get felix restarted for
// nothing.
func (h *health) setServeErr(endpoint string, err error) {
	h.update(func() {
		if err == nil {
			delete(h.serveErrs, endpoint)
		} else {
			h.serveErrs[endpoint] = err
		}
	})
}

func (h *health) setLiveWindow(d time.Duration) {
	h.mu.Lock()
	h.liveWindow = d
	h.mu.Unlock()
}

// liveWindow is how long the loop may go without a heartbeat before liveness fails: a resync
// may legitimately keep it busy for a while. It is given the longest enabled refresh interval
// (RefreshIntervals.longest), the most patient of the windows the three would give alone: a
// failed liveness probe restarts felix, which costs far more than noticing a stuck loop later.
func liveWindow(resync time.Duration) time.Duration { return 2 * max(resync, time.Minute) }

func (h *health) setModelErrs(errs map[string]error) {
	h.update(func() { h.modelErrs = maps.Clone(errs) })
}

// update changes the state and tells onState when readiness or its reason changed. onState is
// called outside mu, so it may take its own locks, but must not call back into health.
func (h *health) update(f func()) {
	h.notify.Lock()
	defer h.notify.Unlock()
	h.mu.Lock()
	f()
	ready, detail := h.readyLocked()
	st := State{Ready: ready, Detail: detail}
	changed := !h.reported || st != h.last
	h.last, h.reported = st, true
	cb := h.onState
	h.mu.Unlock()
	if changed && cb != nil {
		cb(st)
	}
}

func (h *health) ready() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.readyLocked()
}

func (h *health) readyLocked() (bool, string) {
	var why []string
	if !h.inSync {
		why = append(why, "not in sync with the datastore")
	}
	if !h.programmed {
		why = append(why, "dataplane not yet programmed")
	}
	for _, name := range slices.Sorted(maps.Keys(h.writerErrs)) {
		why = append(why, fmt.Sprintf("%s failing: %v", name, h.writerErrs[name]))
	}
	for _, obj := range slices.Sorted(maps.Keys(h.modelErrs)) {
		why = append(why, fmt.Sprintf("%s refused: %v", obj, h.modelErrs[obj]))
	}
	for _, ep := range slices.Sorted(maps.Keys(h.serveErrs)) {
		why = append(why, fmt.Sprintf("%s endpoint not served: %v", ep, h.serveErrs[ep]))
	}
	return len(why) == 0, strings.Join(why, "; ")
}

func (h *health) live() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if since := time.Since(h.lastBeat); since > h.liveWindow {
		return false, fmt.Sprintf("dataplane loop stuck for %s", since.Round(time.Second))
	}
	return true, ""
}

func (a *Agent) healthHandler() http.Handler {
	mux := http.NewServeMux()
	answer := func(w http.ResponseWriter, ok bool, why string) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ok {
			fmt.Fprintln(w, "ok")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, why)
	}
	mux.HandleFunc("GET /liveness", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := a.health.live()
		answer(w, ok, why)
	})
	mux.HandleFunc("GET /readiness", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := a.health.ready()
		answer(w, ok, why)
	})
	return mux
}

func (a *Agent) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		a.metrics.write(w)
	})
	return mux
}

// endpointServer keeps one of felix's HTTP endpoints (health or metrics) listening where it is
// told to, so a FelixConfiguration change moves it while the agent runs. A move binds the new
// address before the old listener is closed, so a bad address never leaves felix without the
// endpoint; a failed bind is logged, reported in readiness and retried with backoff.
type endpointServer struct {
	kind     string // "health" or "metrics"
	setting  string // the name logged for a change
	handler  http.Handler
	listen   func(addr string) (net.Listener, error)
	log      *slog.Logger
	health   *health
	retryMin time.Duration
	retryMax time.Duration

	mu    sync.Mutex
	want  string // "" stops the endpoint
	bound string // where it is served now; "" nowhere
	kick  chan struct{}
}

func newEndpointServer(kind, setting, addr string, h http.Handler, listen func(string) (net.Listener, error),
	log *slog.Logger, hl *health, retryMin, retryMax time.Duration) *endpointServer {
	if listen == nil {
		listen = func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
	}
	return &endpointServer{kind: kind, setting: setting, handler: h, listen: listen, log: log, health: hl,
		retryMin: retryMin, retryMax: retryMax, want: addr, kick: make(chan struct{}, 1)}
}

// set asks for the endpoint on addr ("" stops it) and returns at once; run does the work.
func (s *endpointServer) set(addr string) {
	s.mu.Lock()
	changed := s.want != addr
	s.want = addr
	s.mu.Unlock()
	if changed {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

func (s *endpointServer) wanted() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.want
}

// addr is where the endpoint is served now ("" nowhere).
func (s *endpointServer) addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bound
}

func (s *endpointServer) setBound(addr string) {
	s.mu.Lock()
	s.bound = addr
	s.mu.Unlock()
}

// serving is one bound listener and its HTTP server.
type serving struct {
	addr string
	ln   net.Listener
	srv  *http.Server
	done chan struct{} // closed when Serve returned
	err  error         // Serve's error, valid after done
}

func (sv *serving) exited() bool {
	if sv == nil {
		return false
	}
	select {
	case <-sv.done:
		return true
	default:
		return false
	}
}

func (s *endpointServer) start(addr string, ln net.Listener) *serving {
	sv := &serving{addr: addr, ln: ln, done: make(chan struct{}),
		srv: &http.Server{Handler: s.handler, ReadHeaderTimeout: 5 * time.Second,
			// The metrics address may be reachable from the network: idle keep-alive connections
			// and clients that stop reading must not pile up.
			IdleTimeout: 2 * time.Minute, WriteTimeout: 30 * time.Second}}
	go func() {
		defer func() {
			close(sv.done)
			// Wake run so an endpoint that stopped on its own is bound again.
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}()
		sv.err = sv.srv.Serve(ln)
	}()
	s.setBound(addr)
	return sv
}

// shutdown stops sv, giving requests in flight a second to finish.
func shutdown(sv *serving) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := sv.srv.Shutdown(ctx); err != nil {
		_ = sv.srv.Close()
	}
	<-sv.done
}

// run serves the endpoint until ctx is done, following set.
func (s *endpointServer) run(ctx context.Context) error {
	var (
		cur     *serving
		retired sync.WaitGroup // old servers finishing their requests
		retryC  <-chan time.Time
		delay   time.Duration
		failed  string // the address whose bind failed, while its retry is pending
		initial = s.wanted()
	)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer func() {
		retry.Stop()
		if cur != nil {
			shutdown(cur)
		}
		retired.Wait()
		s.setBound("")
	}()
	retire := func(sv *serving) { retired.Go(func() { shutdown(sv) }) }
	for {
		if cur.exited() && !errors.Is(cur.err, http.ErrServerClosed) {
			s.log.Error("felix "+s.kind+" endpoint stopped serving; listening again", "addr", cur.addr, "err", cur.err)
			cur = nil
			s.setBound("")
		}
		want, have := s.wanted(), ""
		if cur != nil {
			have = cur.addr
		}
		switch {
		case want == have && retryC != nil:
			// Asked back to where it serves: the failed move is no longer wanted.
			retry.Stop()
			retryC, delay, failed = nil, 0, ""
			s.health.setServeErr(s.kind, nil)
		case want != have && (retryC == nil || want != failed):
			// A failed address waits for its retry; wake-ups from retired servers do not count.
			next, err := s.move(cur, want, retire)
			if err == nil {
				retry.Stop()
				retryC, delay, failed = nil, 0, ""
				s.health.setServeErr(s.kind, nil)
				if have == "" && want == initial {
					s.log.Info("serving felix "+s.kind, "addr", want)
				} else {
					s.log.Info("applied felix setting change", "setting", s.setting, "old", have, "new", want)
				}
			} else {
				delay = min(max(2*delay, s.retryMin), s.retryMax)
				// The dataplane does not depend on this endpoint: keep going, but say so loudly.
				s.log.Error("felix "+s.kind+" endpoint cannot listen; retrying", "addr", want, "still_serving_on", next.address(),
					"retry_in", delay.String(), "err", err)
				s.health.setServeErr(s.kind, err)
				retry.Reset(delay)
				retryC, failed = retry.C, want
			}
			cur = next
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		case <-retryC:
			retryC = nil
		}
	}
}

func (sv *serving) address() string {
	if sv == nil {
		return ""
	}
	return sv.addr
}

// move serves the endpoint on want instead of cur and returns what serves it afterwards; on
// failure that is still cur (or, after a failed hand-over, a fresh listener on cur's address).
func (s *endpointServer) move(cur *serving, want string, retire func(*serving)) (*serving, error) {
	if want == "" {
		if cur != nil {
			retire(cur)
		}
		s.setBound("")
		return nil, nil
	}
	ln, err := s.listen(want)
	if err != nil && cur != nil && errors.Is(err, syscall.EADDRINUSE) && samePort(cur.addr, want) {
		// The old listener itself holds the port (say 127.0.0.1:9099 becoming 0.0.0.0:9099): hand
		// the port over, and take it back if the new address still cannot be bound.
		s.log.Debug("felix "+s.kind+" endpoint hands its port over", "old", cur.addr, "new", want)
		_ = cur.ln.Close()
		ln, err = s.listen(want)
		if err != nil {
			retire(cur)
			back, berr := s.listen(cur.addr)
			if berr != nil {
				s.setBound("")
				return nil, errors.Join(fmt.Errorf("listen on %s: %w", want, err), fmt.Errorf("listen again on %s: %w", cur.addr, berr))
			}
			return s.start(cur.addr, back), fmt.Errorf("listen on %s: %w", want, err)
		}
	}
	if err != nil {
		return cur, fmt.Errorf("listen on %s: %w", want, err)
	}
	next := s.start(want, ln)
	if cur != nil {
		retire(cur)
	}
	return next, nil
}

func samePort(a, b string) bool {
	_, pa, errA := net.SplitHostPort(a)
	_, pb, errB := net.SplitHostPort(b)
	return errA == nil && errB == nil && pa == pb
}
