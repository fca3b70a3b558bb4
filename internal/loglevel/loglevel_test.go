package loglevel

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    slog.Level
		wantErr bool
	}{
		{in: "Debug", want: slog.LevelDebug},
		{in: "info", want: slog.LevelInfo},
		{in: "", want: slog.LevelInfo},
		{in: "Warning", want: slog.LevelWarn},
		{in: "WARN", want: slog.LevelWarn},
		{in: "Error", want: slog.LevelError},
		{in: "Fatal", want: slog.LevelError},
		{in: "panic", want: slog.LevelError},
		{in: " info ", want: slog.LevelInfo},
		{in: "verbose", wantErr: true},
		{in: "4", wantErr: true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("Parse(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestDerive: a derived logger writes to the same output with the same attributes at its own
// level, changed while it runs, and leaves the original's level alone.
func TestDerive(t *testing.T) {
	var buf bytes.Buffer
	root := new(slog.LevelVar)
	root.Set(slog.LevelInfo)
	log := slog.New(New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), root)).With("component", "bgp")

	part := new(slog.LevelVar)
	part.Set(slog.LevelWarn)
	derived, ok := Derive(log, part)
	if !ok {
		t.Fatal("Derive of a loglevel logger: not adjustable")
	}
	log.Debug("root debug")
	log.Info("root info")
	derived.Info("part info")
	derived.Warn("part warn")
	part.Set(slog.LevelDebug)
	derived.Debug("part debug")
	log.Debug("root debug again")

	out := buf.String()
	for _, want := range []string{"root info", "part warn", "part debug"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, not := range []string{"root debug", "part info"} {
		if strings.Contains(out, not) {
			t.Errorf("output has %q, filtered by its level:\n%s", not, out)
		}
	}
	if n := strings.Count(out, "component=bgp"); n != 3 {
		t.Errorf("%d lines carry the attribute, want all 3:\n%s", n, out)
	}

	foreign := slog.New(slog.NewTextHandler(&buf, nil))
	if got, ok := Derive(foreign, part); ok || got != foreign {
		t.Error("Derive of a logger this package did not make must return it unchanged, not adjustable")
	}
}

// TestInnerLevelStillApplies: the wrapped handler's own level is a floor the filter cannot lower.
func TestInnerLevelStillApplies(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}), slog.LevelDebug))
	log.Info("below the inner handler's level")
	if buf.Len() != 0 {
		t.Errorf("wrote %q", buf.String())
	}
	log.WithGroup("g").Warn("x", "k", 1)
	if !strings.Contains(buf.String(), "g.k=1") {
		t.Errorf("group lost: %q", buf.String())
	}
}
