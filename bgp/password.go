// Package bgp is the home of Terrace's BGP integration in terrace-node: bgp/config computes the
// desired speaker configuration, bgp/speaker runs GoBGP. This package holds the node-local glue;
// it must never store or log a BGP password, and never read one from anywhere but this host's
// files.
package bgp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/terracenet/terrace/bgp/config"
	"github.com/terracenet/terrace/datastore/api"
)

// PasswordReader resolves BGPPeer password references from node-local files: a secretKeyRef
// {name, key} is read from <stateDir>/secrets/<name>/<key>, a file reference from that path.
// One trailing newline is removed, so `echo secret > file` works.
func PasswordReader(stateDir string) config.PasswordFunc {
	return func(ref *api.BGPPassword) (string, error) {
		path, err := passwordPath(stateDir, ref)
		if err != nil {
			return "", err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			// The error names the file, never its content.
			return "", fmt.Errorf("read bgp password: %w", err)
		}
		pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if pw == "" {
			return "", fmt.Errorf("read bgp password: %s is empty", path)
		}
		if len(pw) > 80 {
			// TCP_MD5SIG keys are at most 80 bytes.
			return "", fmt.Errorf("read bgp password: %s holds more than 80 bytes", path)
		}
		return pw, nil
	}
}

func passwordPath(stateDir string, ref *api.BGPPassword) (string, error) {
	switch {
	case ref == nil:
		return "", errors.New("read bgp password: no reference")
	case ref.File != "":
		if !filepath.IsAbs(ref.File) {
			return "", fmt.Errorf("read bgp password: file %q is not an absolute path", ref.File)
		}
		return filepath.Clean(ref.File), nil
	case ref.SecretKeyRef != nil:
		name, key := ref.SecretKeyRef.Name, ref.SecretKeyRef.Key
		for _, part := range []string{name, key} {
			if part == "" || part == "." || part == ".." || strings.ContainsAny(part, `/\`) {
				return "", fmt.Errorf("read bgp password: bad secret reference %q/%q", name, key)
			}
		}
		return filepath.Join(stateDir, "secrets", name, key), nil
	}
	return "", errors.New("read bgp password: reference names neither a secret nor a file")
}
