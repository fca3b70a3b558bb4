package speaker

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// gobgpLogger adapts GoBGP's logger interface to slog and, because GoBGP's peer state carries no
// reason for a failed session, remembers the last error it logged for each neighbour.
type gobgpLogger struct {
	log *slog.Logger

	mu        sync.Mutex
	level     log.LogLevel
	lastError map[string]string    // neighbour address -> last error
	lastAt    map[string]time.Time // when it was recorded
	now       func() time.Time
}

func newGobgpLogger(l *slog.Logger) *gobgpLogger {
	return &gobgpLogger{log: l, level: log.InfoLevel, lastError: map[string]string{}, lastAt: map[string]time.Time{}, now: time.Now}
}

// causeWindow is how recent an error must be to count as the cause of a session going down.
const causeWindow = 30 * time.Second

func (g *gobgpLogger) emit(level slog.Level, msg string, fields log.Fields) {
	if !g.log.Enabled(context.Background(), level) {
		return
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]any, 0, len(keys)+1)
	attrs = append(attrs, slog.String("component", "gobgp"))
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, fields[k]))
	}
	g.log.Log(context.Background(), level, msg, attrs...)
}

// Panic keeps GoBGP's contract that Panic does not return: it is used for broken invariants.
func (g *gobgpLogger) Panic(msg string, fields log.Fields) {
	g.emit(slog.LevelError, msg, fields)
	panic(fmt.Sprintf("gobgp: %s: %v", msg, fields))
}

// Fatal is logged but does not exit: a library must not end the daemon; the only Fatal on our
// path (gRPC listen failure) leaves BGP itself working.
func (g *gobgpLogger) Fatal(msg string, fields log.Fields) {
	g.emit(slog.LevelError, msg, fields)
}

func (g *gobgpLogger) Error(msg string, fields log.Fields) {
	g.record(msg, fields)
	g.emit(slog.LevelError, msg, fields)
}

func (g *gobgpLogger) Warn(msg string, fields log.Fields) {
	g.record(msg, fields)
	g.emit(slog.LevelWarn, msg, fields)
}

func (g *gobgpLogger) Info(msg string, fields log.Fields) {
	if msg == "Peer Down" {
		g.record(msg, fields)
	}
	g.emit(slog.LevelInfo, msg, fields)
}

func (g *gobgpLogger) Debug(msg string, fields log.Fields) {
	g.emit(slog.LevelDebug, msg, fields)
}

func (g *gobgpLogger) SetLevel(level log.LogLevel) {
	g.mu.Lock()
	g.level = level
	g.mu.Unlock()
}

func (g *gobgpLogger) GetLevel() log.LogLevel {
	// GoBGP skips building some debug fields when the level is low; follow slog's view.
	if g.log.Enabled(context.Background(), slog.LevelDebug) {
		return log.DebugLevel
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.level
}

// record keeps a human-readable reason for the neighbour named by the "Key" field.
func (g *gobgpLogger) record(msg string, fields log.Fields) {
	if fields["Topic"] != "Peer" {
		return
	}
	key, _ := fields["Key"].(string)
	if key == "" {
		return
	}
	switch msg {
	case "Closed an accepted connection", "Can't find configuration for a new passive connection":
		// Routine while a session waits in idle hold; it would hide the error that caused it.
		return
	case "Peer Down":
		if fmt.Sprint(fields["Reason"]) == "dying" {
			// The session of a peer we deconfigured (or reconfigured: GoBGP logs it after the
			// new peer exists) ending; not an error of the peer now at that address.
			return
		}
	}
	reason := describe(msg, fields)
	g.mu.Lock()
	defer g.mu.Unlock()
	if msg == "Peer Down" && fmt.Sprint(fields["Reason"]) == "graceful-restart" {
		// GoBGP reports a session lost under graceful restart by that name alone; the cause
		// (hold timer expired, connection reset ...) was logged just before.
		reason = "session down, routes kept for graceful restart"
		if prev, ok := g.lastError[key]; ok && g.now().Sub(g.lastAt[key]) < causeWindow {
			reason += ": " + prev
		}
	}
	g.lastError[key] = reason
	g.lastAt[key] = g.now()
}

func describe(msg string, fields log.Fields) string {
	switch msg {
	case "sent notification":
		if e, ok := fields["Data"].(*bgp.MessageError); ok {
			return fmt.Sprintf("sent notification: %s (%s)", bgp.NewNotificationErrorCode(e.TypeCode, e.SubTypeCode), e.Message)
		}
		if _, ok := fields["Code"].(uint8); ok {
			return notification(msg, fields)
		}
	case "received notification":
		return notification(msg, fields)
	case "Peer Down":
		return fmt.Sprintf("session down: %v", fields["Reason"])
	}
	for _, k := range []string{"Error", "Err", "Reason", "Data"} {
		if v, ok := fields[k]; ok {
			return fmt.Sprintf("%s: %v", msg, v)
		}
	}
	return msg
}

func (g *gobgpLogger) lastErrorOf(addr string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lastError[addr]
}

func (g *gobgpLogger) forget(addr string) {
	g.mu.Lock()
	delete(g.lastError, addr)
	delete(g.lastAt, addr)
	g.mu.Unlock()
}

// notification describes a NOTIFICATION GoBGP logged with its code and subcode fields.
func notification(msg string, fields log.Fields) string {
	code, _ := fields["Code"].(uint8)
	sub, _ := fields["Subcode"].(uint8)
	s := msg + ": " + bgp.NewNotificationErrorCode(code, sub).String()
	if r, ok := fields["Communicated-Reason"].(string); ok && r != "" {
		s += " (" + r + ")"
	}
	return s
}
