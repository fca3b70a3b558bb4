package testbed

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestClearStateDirKeepsForeignFiles: a state directory given by mistake (a home directory, the
// repository) loses only what the testbed writes there.
func TestClearStateDirKeepsForeignFiles(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"ctl", "tor-1", "host-12", "cni-bin", "src/repo", "host-notes"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"state.json", "state.json.tmp", "demo-policy.yaml", "demo-expect.txt", ".lock", "precious.txt", ".bashrc"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := clearStateDir(dir); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	slices.Sort(left)
	if want := []string{".bashrc", ".lock", "host-notes", "precious.txt", "src"}; !slices.Equal(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
}

// TestPrefixOwner: a prefix is claimed by one live state directory; another is refused until the
// first is torn down (its state gone), and releasing is only the owner's.
func TestPrefixOwner(t *testing.T) {
	old := ownersDir
	ownersDir = t.TempDir()
	t.Cleanup(func() { ownersDir = old })
	a, b := t.TempDir(), t.TempDir()
	const prefix = "trcown-"
	if err := claimPrefix(prefix, a); err != nil {
		t.Fatal(err)
	}
	// No state in a yet: nobody live owns the prefix, so b may take it over.
	if got := prefixOwner(prefix); got != "" {
		t.Errorf("owner without state = %q, want none", got)
	}
	if err := claimPrefix(prefix, a); err != nil {
		t.Fatal(err)
	}
	if err := (&State{Options: Options{StateDir: a, Prefix: prefix}}).save(); err != nil {
		t.Fatal(err)
	}
	if got := prefixOwner(prefix); got != a {
		t.Errorf("owner = %q, want %q", got, a)
	}
	if err := claimPrefix(prefix, b); !errors.Is(err, ErrInvalid) {
		t.Errorf("claim by another dir while a is live: %v, want ErrInvalid", err)
	}
	if err := releasePrefix(prefix, b); err != nil || prefixOwner(prefix) != a {
		t.Errorf("release by a non-owner: %v, owner now %q", err, prefixOwner(prefix))
	}
	if err := releasePrefix(prefix, a); err != nil || prefixOwner(prefix) != "" {
		t.Errorf("release by the owner: %v, owner now %q", err, prefixOwner(prefix))
	}
	if err := claimPrefix(prefix, b); err != nil {
		t.Errorf("claim after release: %v", err)
	}
}
