package routes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteProtocolNames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rt_protos.d", "terrace.conf")
	for range 2 { // idempotent
		mustT(t, WriteProtocolNames(path))
	}
	b, err := os.ReadFile(path)
	mustT(t, err)
	for _, want := range []string{"\n80 terrace\n", "\n81 terrace-bgp\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("file lacks %q:\n%s", want, b)
		}
	}
}
