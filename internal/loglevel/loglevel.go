// Package loglevel lets one part of a process log at its own level, changed while it runs
// (terrace-node's felix and bgp follow logSeverityScreen from the datastore), over one shared
// output. It owns only the filtering: where and how records are written stays with the handler
// it wraps. It must never drop a record its level lets through.
package loglevel

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// Parse maps a level name, as terrace-node's --log-level and Calico's logSeverityScreen write
// them (debug, info, warn/warning, error, fatal, panic; any case), to slog's. Fatal and panic
// are error: nothing here stops the process for a log line.
func Parse(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error", "fatal", "panic":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("parse log level %q: want debug, info, warn or error", s)
}

// Handler passes on the records at or above its level to a handler that takes every level.
type Handler struct {
	inner slog.Handler
	level slog.Leveler
}

// New filters inner, which should itself let every level through, at level.
func New(inner slog.Handler, level slog.Leveler) *Handler {
	return &Handler{inner: inner, level: level}
}

func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level.Level() && h.inner.Enabled(ctx, l)
}

func (h *Handler) Handle(ctx context.Context, r slog.Record) error { return h.inner.Handle(ctx, r) }

func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &Handler{inner: h.inner.WithAttrs(as), level: h.level}
}

func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{inner: h.inner.WithGroup(name), level: h.level}
}

// Derive returns log writing where log writes, with the same attributes, at level instead of
// log's own. It returns log unchanged when log was not made by this package (its level cannot
// be lowered then).
func Derive(log *slog.Logger, level slog.Leveler) (*slog.Logger, bool) {
	h, ok := log.Handler().(*Handler)
	if !ok {
		return log, false
	}
	return slog.New(&Handler{inner: h.inner, level: level}), true
}
