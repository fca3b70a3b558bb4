package main

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/terracenet/terrace/cmd/internal/cliconf"
)

// defaultMemoryLimit is terrace-node's soft memory limit. With 100k learned routes the live heap
// is about 100 MiB (most of it GoBGP's RIB); without a limit the collector lets the heap grow to
// twice that before collecting, for a resident size of ≈ 300 MB. Near the limit it collects more
// often instead, which costs little at that scale (see docs/benchmarks.md). It is soft: the
// runtime never fails an allocation because of it, and a larger table only costs GC time.
const defaultMemoryLimit = "200MiB"

// parseMemoryLimit reads a size in GOMEMLIMIT's notation: bytes with an optional B, KiB, MiB,
// GiB or TiB suffix, or "off" (no limit, returned as math.MaxInt64).
func parseMemoryLimit(s string) (int64, error) {
	if s == "off" {
		return math.MaxInt64, nil
	}
	num, mult := s, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || num != strings.TrimSpace(num) {
		return 0, fmt.Errorf("parse --go-memory-limit %q: want a positive size like 200MiB, 1GiB or 524288000, or off", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("parse --go-memory-limit %q: too large", s)
	}
	return n * mult, nil
}

// applyMemoryLimit sets the soft memory limit from --go-memory-limit. A GOMEMLIMIT in the
// environment wins over the default (the runtime has applied it already) but not over an explicit
// setting.
func applyMemoryLimit(cfg *cliconf.Config, log *slog.Logger) error {
	val := cfg.String("go-memory-limit")
	if env := os.Getenv("GOMEMLIMIT"); env != "" && cfg.Source("go-memory-limit") == cliconf.SourceDefault {
		log.Debug("soft memory limit from the environment", "GOMEMLIMIT", env)
		return nil
	}
	n, err := parseMemoryLimit(val)
	if err != nil {
		return err
	}
	debug.SetMemoryLimit(n)
	log.Debug("soft memory limit", "limit", val)
	return nil
}
