package shim

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestShimLinksLittle: every pod pays terrace-cni's start-up, so what it links is part of its
// contract (see the package comment): no network or HTTP stack, CNI library, netlink, datastore types
// or etcd client.
func TestShimLinksLittle(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goBin, "list", "-deps", "github.com/terracenet/terrace/cmd/terrace-cni").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 || !slices.Contains(deps, "github.com/terracenet/terrace/cni/shim") {
		t.Fatalf("go list gave %d packages without the shim: %v", len(deps), deps)
	}
	for _, d := range deps {
		if d == "net" || d == "log/slog" || d == "regexp" {
			t.Errorf("terrace-cni links %s", d)
		}
		for _, banned := range []string{"net/http", "github.com/vishvananda/netlink", "go.etcd.io/", "google.golang.org/grpc",
			"github.com/terracenet/terrace/datastore", "github.com/terracenet/terrace/cni", "sigs.k8s.io/yaml", "github.com/containernetworking/"} {
			if (d == banned || strings.HasPrefix(d, banned+"/") || strings.HasPrefix(d, banned) && strings.HasSuffix(banned, "/")) &&
				!strings.HasPrefix(d, "github.com/terracenet/terrace/cni/shim") {
				t.Errorf("terrace-cni links %s", d)
			}
		}
	}
}
