package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"

	"github.com/terracenet/terrace/cmd/internal/cliconf"
	"github.com/terracenet/terrace/felix"
)

// TestFelixResyncFlag: --felix-resync-interval given sets all three refresh intervals (0: none),
// and marks them explicit so FelixConfiguration cannot change them; not given, it leaves each to
// FelixConfiguration and the defaults.
func TestFelixResyncFlag(t *testing.T) {
	t.Setenv(cliconf.EnvName("felix-resync-interval"), "")
	tests := []struct {
		name         string
		args         []string
		want         felix.RefreshIntervals
		wantExplicit bool
	}{
		{"not given", nil, felix.RefreshIntervals{}, false},
		{"given", []string{"--felix-resync-interval", "3s"},
			felix.RefreshIntervals{Iptables: 3 * time.Second, IPSets: 3 * time.Second, Routes: 3 * time.Second}, true},
		{"given as 0: never", []string{"--felix-resync-interval", "0"}, felix.RefreshIntervals{Iptables: -1, IPSets: -1, Routes: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
			fs.String("log-level", "info", "")
			addFelixFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := cliconf.LoadFile(fs, "", false)
			if err != nil {
				t.Fatal(err)
			}
			comp, err := felixComponent(cfg)
			if err != nil {
				t.Fatal(err)
			}
			cc := comp.(*felix.Component).Config()
			if d := cmp.Diff(tt.want, cc.Refresh); d != "" {
				t.Errorf("refresh intervals (-want +got):\n%s", d)
			}
			if cc.Explicit.Refresh != tt.wantExplicit {
				t.Errorf("explicit = %v, want %v", cc.Explicit.Refresh, tt.wantExplicit)
			}
		})
	}
}
