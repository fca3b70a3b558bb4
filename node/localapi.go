package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// AddressInfo is how the node's addresses were chosen, as served by the local API and written to
// Node.status.autodetection.
type AddressInfo struct {
	Method    string `json:"method,omitempty"`
	IPv4      string `json:"ipv4,omitempty"`
	IPv6      string `json:"ipv6,omitempty"`
	Interface string `json:"interface,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// ComponentStatus is what a component (felix, bgp) reports about itself.
type ComponentStatus struct {
	State   string         `json:"state"` // e.g. "starting", "running", "in-sync", "failed"
	Detail  string         `json:"detail,omitempty"`
	Since   time.Time      `json:"since"`
	Details map[string]any `json:"details,omitempty"`
}

// Status is the body of GET /v1/status.
type Status struct {
	NodeName      string      `json:"nodeName"`
	IPv4          string      `json:"ipv4,omitempty"`
	IPv6          string      `json:"ipv6,omitempty"`
	Autodetection AddressInfo `json:"autodetection"`
	StartTime     time.Time   `json:"startTime"`
	Version       string      `json:"version"`
	// Datastore is the node's connection to etcd: "connecting" (with the last error) until it
	// answers, then "connected".
	Datastore  ComponentStatus            `json:"datastore"`
	Components map[string]ComponentStatus `json:"components"`
}

// StatusBoard holds the node's status; components update their entry concurrently.
type StatusBoard struct {
	mu sync.Mutex
	st Status
}

// NewStatusBoard starts a board from the node's static facts.
func NewStatusBoard(st Status) *StatusBoard {
	if st.Components == nil {
		st.Components = map[string]ComponentStatus{}
	}
	return &StatusBoard{st: st}
}

// SetComponent records a component's status; Since is kept while the state is unchanged.
func (b *StatusBoard) SetComponent(name string, cs ComponentStatus) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := b.st.Components[name]; ok && old.State == cs.State && cs.Since.IsZero() {
		cs.Since = old.Since
	}
	if cs.Since.IsZero() {
		cs.Since = time.Now().UTC()
	}
	b.st.Components[name] = cs
}

// SetDatastore records the state of the datastore connection; Since is kept while the state is
// unchanged.
func (b *StatusBoard) SetDatastore(state, detail string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	since := b.st.Datastore.Since
	if b.st.Datastore.State != state || since.IsZero() {
		since = time.Now().UTC()
	}
	b.st.Datastore = ComponentStatus{State: state, Detail: detail, Since: since}
}

// Snapshot returns a copy safe to serialise.
func (b *StatusBoard) Snapshot() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.st
	st.Components = make(map[string]ComponentStatus, len(b.st.Components))
	for k, v := range b.st.Components {
		st.Components[k] = v
	}
	return st
}

// Handler serves the local API.
func (b *StatusBoard) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(b.Snapshot())
	})
	return mux
}

// ListenSocket listens on the unix socket at path with mode 0660, creating its directory. The
// socket is this process's while it holds an exclusive lock on path+".lock" (the kernel drops
// the lock when the process dies, however it dies), so a socket file left behind by a dead daemon
// is removed, and a second daemon is refused whether or not the first answers at that moment.
func ListenSocket(path string, log *slog.Logger) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	lock, err := lockSocket(path)
	if err != nil {
		return nil, err
	}
	ln, err := listenLocked(path, log)
	if err != nil {
		lock.Close()
		return nil, err
	}
	return &socketListener{UnixListener: ln, lock: lock}, nil
}

// lockSocket takes the lock that makes the socket at path this process's, and writes this
// process's id into the lock file for the next one to name.
func lockSocket(path string) (*os.File, error) {
	lockPath := path + ".lock"
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open socket lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(lockPath)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			who := "a process"
			if pid := strings.TrimSpace(string(holder)); pid != "" {
				who = "pid " + pid
			}
			return nil, fmt.Errorf("listen on %s: another process is serving it (%s holds %s)", path, who, lockPath)
		}
		return nil, fmt.Errorf("lock %s: %w", lockPath, err)
	}
	// The pid is only for the message above; a failure to write it changes nothing else.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// listenLocked creates the socket once the lock is held: a socket file there now is stale.
func listenLocked(path string, log *slog.Logger) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen on %s: exists and is not a socket", path)
		}
		// A daemon from before the lock existed would still answer here.
		if c, err := net.DialTimeout("unix", path, 500*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen on %s: another process is serving it", path)
		}
		log.Info("removing stale node socket", "path", path)
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// The umask keeps the socket from ever being reachable more widely than 0660, even briefly.
	old := syscall.Umask(0o117)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on node socket: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod node socket: %w", err)
	}
	return ln, nil
}

// socketListener is the node socket with the lock that makes it this process's. Closing it
// removes the socket file while the lock is still held, then drops the lock, so a daemon starting
// at that moment can never have its new socket removed by the old one.
type socketListener struct {
	*net.UnixListener
	lock *os.File
}

func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	if lerr := l.lock.Close(); lerr != nil {
		err = errors.Join(err, fmt.Errorf("release socket lock: %w", lerr))
	}
	return err
}

// ServeAPI serves b on ln until ctx is done, then shuts down and removes the socket file.
func ServeAPI(ctx context.Context, ln net.Listener, b *StatusBoard, log *slog.Logger) error {
	return ServeHandler(ctx, ln, b.Handler(), log)
}

// ServeHandler serves h on ln until ctx is done, then shuts down and removes the socket file.
func ServeHandler(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ConnContext: withPeerUID}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var err error
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = srv.Shutdown(sctx)
		cancel()
		<-errc
	case err = <-errc:
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	// A socketListener removed its file when it was closed, under its lock; after that the path
	// may already be the next daemon's.
	if addr, ok := ln.Addr().(*net.UnixAddr); ok && !isSocketListener(ln) {
		if rerr := os.Remove(addr.Name); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, fmt.Errorf("remove node socket: %w", rerr))
		}
	}
	if err != nil {
		return fmt.Errorf("serve local API: %w", err)
	}
	log.Info("local API stopped")
	return nil
}

func isSocketListener(ln net.Listener) bool {
	_, ok := ln.(*socketListener)
	return ok
}

// QueryStatus asks the daemon behind the socket at path for its status.
func QueryStatus(ctx context.Context, path string) (Status, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://terrace-node/v1/status", nil)
	if err != nil {
		return Status{}, fmt.Errorf("build status request: %w", err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return Status{}, fmt.Errorf("query node socket %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Status{}, fmt.Errorf("query node socket %s: %s", path, resp.Status)
	}
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return Status{}, fmt.Errorf("decode node status: %w", err)
	}
	return st, nil
}

// ComponentNames returns the components in a stable order for printing.
func (s Status) ComponentNames() []string {
	n := make([]string, 0, len(s.Components))
	for k := range s.Components {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

type peerUIDKey struct{}

// peerUnknown marks a unix socket connection whose peer's credentials could not be read: such a
// caller is treated as unprivileged (fail closed), unlike a request made in memory, which has no
// connection at all.
const peerUnknown = ^uint32(0)

// withPeerUID records the uid of the process at the other end of a unix socket connection.
func withPeerUID(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return context.WithValue(ctx, peerUIDKey{}, peerUnknown)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil || cerr != nil {
		return context.WithValue(ctx, peerUIDKey{}, peerUnknown)
	}
	return context.WithValue(ctx, peerUIDKey{}, cred.Uid)
}

// peerUID is the uid of the caller on the node socket, when it came over one.
func peerUID(ctx context.Context) (uint32, bool) {
	uid, ok := ctx.Value(peerUIDKey{}).(uint32)
	return uid, ok
}

// privilegedPeer says whether the caller may change state through the agent: root, or the
// agent's own user (who could do anything the agent does anyway), or a request made in memory.
// Members of the socket's group may only read.
func privilegedPeer(ctx context.Context) (uint32, bool) {
	uid, ok := peerUID(ctx)
	if !ok {
		return 0, true
	}
	return uid, uid != peerUnknown && (uid == 0 || uid == uint32(os.Geteuid()))
}
