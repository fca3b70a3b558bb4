package testbed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ownersDir records which state directory owns each namespace prefix. The state dir's lock covers
// one directory, and the namespaces are named by prefix only: without this record, `up` or `down`
// with another state dir would take a live testbed's namespaces for leftovers and kill what runs
// in them.
var ownersDir = "/run/terrace-testbed-owners"

// canonicalDir is the state directory as owner records name it: absolute, symbolic links resolved
// (the default /var/run/terrace-testbed is /run/terrace-testbed on most systems).
func canonicalDir(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return dir
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		return real
	}
	return abs
}

func ownerPath(prefix string) string {
	return filepath.Join(ownersDir, strings.TrimSuffix(prefix, "-"))
}

// prefixOwner returns the state directory recorded for prefix, if that directory still holds a
// testbed with this prefix; "" when nobody owns it (or its owner is gone).
func prefixOwner(prefix string) string {
	b, err := os.ReadFile(ownerPath(prefix))
	if err != nil {
		return ""
	}
	dir := canonicalDir(strings.TrimSpace(string(b)))
	st, err := loadState(dir)
	if err != nil || st.Options.Prefix != prefix {
		return ""
	}
	return dir
}

// claimPrefix records stateDir as the owner of prefix, refusing when another live testbed owns it.
func claimPrefix(prefix, stateDir string) error {
	stateDir = canonicalDir(stateDir)
	if owner := prefixOwner(prefix); owner != "" && owner != stateDir {
		return fmt.Errorf("%w: namespace prefix %q is in use by the testbed in %s (give --state-dir %s, or another prefix)",
			ErrInvalid, prefix, owner, owner)
	}
	if err := os.MkdirAll(ownersDir, 0o755); err != nil {
		return fmt.Errorf("record prefix owner: %w", err)
	}
	if err := os.WriteFile(ownerPath(prefix), []byte(stateDir+"\n"), 0o644); err != nil {
		return fmt.Errorf("record prefix owner: %w", err)
	}
	return nil
}

// releasePrefix removes the record if stateDir holds it.
func releasePrefix(prefix, stateDir string) error {
	stateDir = canonicalDir(stateDir)
	b, err := os.ReadFile(ownerPath(prefix))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read prefix owner: %w", err)
	}
	if strings.TrimSpace(string(b)) != stateDir {
		return nil
	}
	if err := os.Remove(ownerPath(prefix)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("release prefix: %w", err)
	}
	return nil
}
