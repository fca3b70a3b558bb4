package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/terracenet/terrace/node"
)

// debugComponent serves Go's profiler on a loopback address, so an operator (or a benchmark) can
// see where terrace-node spends CPU and memory under load. Profiles name code paths and may expose
// memory contents, hence loopback only and off by default.
type debugComponent struct {
	listen string
	log    *slog.Logger
}

// parseDebugListen checks --debug-pprof-listen: empty (off) or a loopback host:port.
func parseDebugListen(s string) error {
	if s == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("parse --debug-pprof-listen: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("parse --debug-pprof-listen: %q is not a loopback address", host)
	}
	return nil
}

func (d debugComponent) Name() string { return "debug" }

// Run serves until ctx ends. A listener that cannot bind is logged and not fatal: a debugging aid
// must never take the dataplane down.
func (d debugComponent) Run(ctx context.Context, _ node.ComponentEnv) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", d.listen)
	if err != nil {
		d.log.Error("serving the profiler failed", "listen", d.listen, "err", err)
		<-ctx.Done()
		return nil
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	d.log.Warn("Go profiler enabled for debugging", "listen", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve profiler: %w", err)
	}
	return nil
}
