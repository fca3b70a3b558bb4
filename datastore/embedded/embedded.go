// Package embedded runs a real single-member etcd (go.etcd.io/etcd/server/v3/embed) inside the
// process, with its data on disk, so that one machine needs nothing else. It owns the member's
// lifecycle and its logging (through the caller's slog logger, never zap JSON on stderr).
// It must never clear or rewrite a data directory it did not create, and never join or form a
// multi-member cluster: a multi-host deployment points every node at a real etcd cluster instead.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/terracenet/terrace/datastore/internal/zapslog"
	"go.etcd.io/etcd/server/v3/embed"
)

// Config says where the member keeps its data and where it listens.
type Config struct {
	DataDir      string
	ListenClient string // URL, e.g. http://127.0.0.1:2379; empty: a free loopback port
	ListenPeer   string // URL; empty: a free loopback port (the peer port is never used by a single member)
	Logger       *slog.Logger

	// Client-facing TLS. When CertFile is set the client URL must be https.
	CertFile       string
	KeyFile        string
	TrustedCAFile  string
	ClientCertAuth bool // require a client certificate signed by TrustedCAFile

	// AutoCompaction is how much history the member keeps (etcd's periodic retention, e.g. "1h");
	// default "1h", "0" keeps everything. Without it a long-running member's database only grows
	// until etcd's space quota stops all writes. Watchers that fall behind relist (kv.Syncer does).
	AutoCompaction string

	// StartTimeout bounds the wait for the member to become ready; default 60s.
	StartTimeout time.Duration
}

// Server is one running embedded etcd member.
type Server struct {
	mu       sync.Mutex
	cfg      Config // with the ports actually chosen, so Restart reuses them
	etcd     *embed.Etcd
	log      *slog.Logger
	closed   bool
	stopping *atomic.Bool // of the running member; set once Stop begins
}

// quietOnStop passes etcd's records through until the member is being stopped, then lowers them
// to Debug: etcd's serve loops report their own listeners closing ("http: Server closed", "use
// of closed network connection") as errors and warnings, which after a clean stop only alarm
// the operator.
type quietOnStop struct {
	slog.Handler
	stopping *atomic.Bool
}

func (h quietOnStop) Enabled(ctx context.Context, l slog.Level) bool {
	if h.stopping.Load() {
		l = min(l, slog.LevelDebug)
	}
	return h.Handler.Enabled(ctx, l)
}

func (h quietOnStop) Handle(ctx context.Context, r slog.Record) error {
	if h.stopping.Load() && r.Level > slog.LevelDebug {
		r.Level = slog.LevelDebug
		if !h.Handler.Enabled(ctx, r.Level) {
			return nil
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h quietOnStop) WithAttrs(as []slog.Attr) slog.Handler {
	return quietOnStop{h.Handler.WithAttrs(as), h.stopping}
}

func (h quietOnStop) WithGroup(name string) slog.Handler {
	return quietOnStop{h.Handler.WithGroup(name), h.stopping}
}

// Validate checks what Start would otherwise find late or, worse, let etcd ignore with a
// warning: given TLS settings on an http client URL would serve the datastore in clear text and
// without client authentication while the operator believes it is protected.
func (cfg Config) Validate() error {
	var errs []error
	if cfg.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	https := cfg.CertFile != ""
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		errs = append(errs, errors.New("cert file and key file must be given together"))
	}
	if !https && (cfg.TrustedCAFile != "" || cfg.ClientCertAuth) {
		errs = append(errs, errors.New("a trusted CA file or client certificate authentication needs a server certificate (cert file and key file)"))
	}
	if cfg.ClientCertAuth && cfg.TrustedCAFile == "" {
		errs = append(errs, errors.New("client certificate authentication needs a trusted CA file to check the certificates against"))
	}
	for _, u := range []struct{ what, url string }{{"client URL", cfg.ListenClient}, {"peer URL", cfg.ListenPeer}} {
		if u.url == "" {
			continue
		}
		parsed, err := url.Parse(u.url)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s %q: %w", u.what, u.url, err))
		case parsed.Scheme != "http" && parsed.Scheme != "https":
			errs = append(errs, fmt.Errorf("%s %q: want http://HOST:PORT or https://HOST:PORT", u.what, u.url))
		case parsed.Port() == "":
			errs = append(errs, fmt.Errorf("%s %q: no port", u.what, u.url))
		case u.what == "client URL" && https && parsed.Scheme != "https":
			errs = append(errs, fmt.Errorf("client URL %q: a server certificate is given, so the URL must be https (etcd would serve clear text)", u.url))
		case u.what == "client URL" && !https && parsed.Scheme == "https":
			errs = append(errs, fmt.Errorf("client URL %q: https needs a server certificate (cert file and key file)", u.url))
		}
	}
	return errors.Join(errs...)
}

// Start runs a member and returns once it serves clients.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AutoCompaction == "" {
		cfg.AutoCompaction = "1h"
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	scheme := "http"
	if cfg.CertFile != "" {
		scheme = "https"
	}
	var err error
	if cfg.ListenClient == "" {
		if cfg.ListenClient, err = FreeURL(scheme); err != nil {
			return nil, fmt.Errorf("start embedded etcd: %w", err)
		}
	}
	if cfg.ListenPeer == "" {
		if cfg.ListenPeer, err = FreeURL("http"); err != nil {
			return nil, fmt.Errorf("start embedded etcd: %w", err)
		}
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) start(ctx context.Context) error {
	ec, err := s.etcdConfig()
	if err != nil {
		return fmt.Errorf("start embedded etcd: %w", err)
	}
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("start embedded etcd: %w", err)
	}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return fmt.Errorf("start embedded etcd: %w", err)
	}
	timer := time.NewTimer(s.cfg.StartTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("start embedded etcd: %w", err)
	case <-timer.C:
		e.Close()
		return fmt.Errorf("start embedded etcd: not ready after %s", s.cfg.StartTimeout)
	case <-ctx.Done():
		e.Close()
		return fmt.Errorf("start embedded etcd: %w", ctx.Err())
	}
	s.mu.Lock()
	s.etcd, s.closed = e, false
	s.mu.Unlock()
	s.log.Info("embedded etcd ready", "data-dir", s.cfg.DataDir, "client-url", s.cfg.ListenClient)
	return nil
}

func (s *Server) etcdConfig() (*embed.Config, error) {
	lc, err := url.Parse(s.cfg.ListenClient)
	if err != nil {
		return nil, fmt.Errorf("parse client URL %q: %w", s.cfg.ListenClient, err)
	}
	lp, err := url.Parse(s.cfg.ListenPeer)
	if err != nil {
		return nil, fmt.Errorf("parse peer URL %q: %w", s.cfg.ListenPeer, err)
	}
	ec := embed.NewConfig()
	ec.Name = "terrace"
	ec.Dir = s.cfg.DataDir
	ec.ListenClientUrls = []url.URL{*lc}
	ec.AdvertiseClientUrls = []url.URL{advertised(*lc)}
	ec.ListenPeerUrls = []url.URL{*lp}
	ec.AdvertisePeerUrls = []url.URL{advertised(*lp)}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = s.cfg.AutoCompaction
	ec.Logger = "zap"
	stopping := new(atomic.Bool)
	s.mu.Lock()
	s.stopping = stopping
	s.mu.Unlock()
	quiet := slog.New(quietOnStop{s.log.Handler(), stopping})
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapslog.New(quiet, "etcd"))
	if s.cfg.CertFile != "" {
		ec.ClientTLSInfo.CertFile = s.cfg.CertFile
		ec.ClientTLSInfo.KeyFile = s.cfg.KeyFile
		ec.ClientTLSInfo.TrustedCAFile = s.cfg.TrustedCAFile
		ec.ClientTLSInfo.ClientCertAuth = s.cfg.ClientCertAuth
	}
	return ec, nil
}

// advertised replaces a wildcard listen host by loopback: peers and clients cannot dial 0.0.0.0.
func advertised(u url.URL) url.URL {
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return u
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		u.Host = net.JoinHostPort("127.0.0.1", port)
	}
	return u
}

// Endpoints returns the client URLs to give kv.Config.Endpoints.
func (s *Server) Endpoints() []string {
	u, err := url.Parse(s.cfg.ListenClient)
	if err != nil {
		return []string{s.cfg.ListenClient}
	}
	a := advertised(*u)
	return []string{a.String()}
}

// DataDir returns where the member keeps its data.
func (s *Server) DataDir() string { return s.cfg.DataDir }

// Err reports a fatal error of the running member (nil channel when stopped).
func (s *Server) Err() <-chan error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.etcd == nil || s.closed {
		return nil
	}
	return s.etcd.Err()
}

// Stop shuts the member down and waits until its listeners are closed. Safe to call twice.
func (s *Server) Stop() {
	s.mu.Lock()
	e, closed, stopping := s.etcd, s.closed, s.stopping
	s.closed = true
	s.mu.Unlock()
	if e == nil || closed {
		return
	}
	stopping.Store(true)
	e.Close()
	s.log.Info("embedded etcd stopped", "data-dir", s.cfg.DataDir)
}

// Restart stops the member (if running) and starts it again on the same data dir and ports,
// as a crash-and-recover of the datastore looks to its clients.
func (s *Server) Restart(ctx context.Context) error {
	s.Stop()
	return s.StartAgain(ctx)
}

// StartAgain starts a stopped member on the same data dir and ports.
func (s *Server) StartAgain(ctx context.Context) error {
	s.mu.Lock()
	running := s.etcd != nil && !s.closed
	s.mu.Unlock()
	if running {
		return errors.New("start embedded etcd: already running")
	}
	var err error
	// The kernel may hold the old ports for a moment after close; retry briefly.
	for range 50 {
		if err = s.start(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
	return err
}

// FreeURL returns scheme://127.0.0.1:PORT for a port that was free a moment ago.
func FreeURL(scheme string) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return fmt.Sprintf("%s://%s", scheme, l.Addr().String()), nil
}
