package testbed

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestPodModeAutoIsKept: with --cni auto the fabric's first pod decides, and a plugin that then
// fails to answer makes pod add fail instead of wiring that pod by hand beside IPAM's pods.
func TestPodModeAutoIsKept(t *testing.T) {
	bin := t.TempDir()
	plugin := filepath.Join(bin, "terrace-cni")
	answering := "#!/bin/sh\necho '{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.4.0\",\"1.0.0\"]}'\n"
	broken := "#!/bin/sh\nexit 1\n"
	write := func(script string) {
		t.Helper()
		if err := os.WriteFile(plugin, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		pods     []PodState
		script   string
		want     CNIMode
		wantFail bool
	}{
		{"first pod, plugin answers", nil, answering, CNIPlugin, false},
		{"first pod, plugin broken", nil, broken, CNIManual, false},
		{"plugin pods, plugin answers", []PodState{{Name: "a", Mode: CNIPlugin}}, answering, CNIPlugin, false},
		{"plugin pods, plugin broken", []PodState{{Name: "a", Mode: CNIPlugin}}, broken, "", true},
		{"manual pods, plugin answers now", []PodState{{Name: "a", Mode: CNIManual}}, answering, CNIManual, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			write(tc.script)
			tb := &Testbed{st: &State{Options: Options{BinDir: bin, CNI: CNIAuto}, Pods: tc.pods}}
			got, err := tb.podMode(ctx)
			if tc.wantFail {
				if err == nil {
					t.Fatalf("podMode = %q, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("podMode = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
