package felix

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
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
	mu         sync.Mutex
	inSync     bool
	programmed bool
	writerErrs map[string]error
	modelErrs  map[string]error
	lastBeat   time.Time
	liveWindow time.Duration
	onState    func(State)
	last       State
	reported   bool
}

func newHealth(onState func(State), liveWindow time.Duration) *health {
	return &health{writerErrs: map[string]error{}, modelErrs: map[string]error{}, liveWindow: liveWindow,
		onState: onState, lastBeat: time.Now()}
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

func (h *health) setModelErrs(errs map[string]error) {
	h.update(func() { h.modelErrs = maps.Clone(errs) })
}

// update changes the state and tells onState when readiness or its reason changed. onState is
// called outside the lock, so it may take its own locks.
func (h *health) update(f func()) {
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

// listen binds addr now (so a busy port is reported at start) and returns the serving function.
func (a *Agent) listen(kind, addr string) (func(context.Context) error, error) {
	h := a.healthHandler()
	if kind == "metrics" {
		h = a.metricsHandler()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for %s: %w", kind, err)
	}
	a.log.Info("serving felix "+kind, "addr", ln.Addr().String())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	return func(ctx context.Context) error {
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve %s: %w", kind, err)
		}
		return nil
	}, nil
}
