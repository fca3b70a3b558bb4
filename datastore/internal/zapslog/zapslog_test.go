package zapslog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestLevelsAndFields(t *testing.T) {
	tests := []struct {
		name    string
		min     slog.Level
		log     func(*zap.Logger)
		want    []string // substrings of the text output
		wantOut bool
	}{
		{"info is demoted to debug", slog.LevelDebug, func(l *zap.Logger) { l.Info("started", zap.String("member", "m1")) },
			[]string{"level=DEBUG", "msg=started", "member=m1", "component=etcd"}, true},
		{"info hidden at info level", slog.LevelInfo, func(l *zap.Logger) { l.Info("chatty") }, nil, false},
		{"warn stays warn", slog.LevelInfo, func(l *zap.Logger) { l.Warn("slow fsync", zap.Int("ms", 120)) },
			[]string{"level=WARN", "ms=120"}, true},
		{"error stays error", slog.LevelInfo, func(l *zap.Logger) { l.Error("boom") }, []string{"level=ERROR", "msg=boom"}, true},
		{"fields from With", slog.LevelInfo, func(l *zap.Logger) { l.With(zap.String("peer", "p2")).Warn("lost") },
			[]string{"peer=p2", "msg=lost"}, true},
		{"named logger", slog.LevelInfo, func(l *zap.Logger) { l.Named("raft").Warn("x") }, []string{"logger=raft"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.min})), "etcd")
			tc.log(l)
			out := buf.String()
			if (out != "") != tc.wantOut {
				t.Fatalf("output %q, want output: %v", out, tc.wantOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output %q lacks %q", out, w)
				}
			}
		})
	}
}
