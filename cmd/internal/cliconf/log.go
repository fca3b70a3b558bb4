package cliconf

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/terracenet/terrace/internal/loglevel"
)

// Version is the release version, set at link time with
// -ldflags "-X github.com/terracenet/terrace/cmd/internal/cliconf.Version=v0.1.0".
var Version = "dev"

// VersionString is Version plus the VCS revision when the build recorded one.
func VersionString() string {
	v := Version
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += "+" + s.Value[:12]
			}
		}
	}
	return v
}

// ParseLevel maps a level name (debug, info, warn/warning, error; case-insensitive) to slog's.
func ParseLevel(s string) (slog.Level, error) { return loglevel.Parse(s) }

// NewLogger returns a text logger at level writing to file (appended, created 0640) or, when file
// is empty, to w. The returned close function releases the file. Its level is a loglevel filter,
// so a part of the program can log at another level into the same output (loglevel.Derive).
func NewLogger(level, file string, w io.Writer) (*slog.Logger, func() error, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, nil, err
	}
	closeFn := func() error { return nil }
	if file != "" {
		f, err := os.OpenFile(file, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("open log file: %w", err)
		}
		w, closeFn = f, f.Close
	}
	inner := slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(loglevel.New(inner, lvl)), closeFn, nil
}
