package bgp

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/terracenet/terrace/datastore/api"
)

func TestPasswordReader(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, content string) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("secrets/bgp/tor", "s3cret\n")
	file := write("elsewhere/pw", "from-file")
	write("secrets/bgp/empty", "\n")
	write("secrets/bgp/long", strings.Repeat("x", 81))
	secret := func(name, key string) *api.BGPPassword {
		return &api.BGPPassword{SecretKeyRef: &api.SecretKeySelector{Name: name, Key: key}}
	}
	tests := []struct {
		name    string
		ref     *api.BGPPassword
		want    string
		wantErr string
	}{
		{name: "secret key ref", ref: secret("bgp", "tor"), want: "s3cret"},
		{name: "file", ref: &api.BGPPassword{File: file}, want: "from-file"},
		{name: "missing", ref: secret("bgp", "nope"), wantErr: "no such file"},
		{name: "empty", ref: secret("bgp", "empty"), wantErr: "is empty"},
		{name: "too long for MD5", ref: secret("bgp", "long"), wantErr: "more than 80 bytes"},
		{name: "traversal", ref: secret("..", "tor"), wantErr: "bad secret reference"},
		{name: "slash in key", ref: secret("bgp", "a/b"), wantErr: "bad secret reference"},
		{name: "relative file", ref: &api.BGPPassword{File: "pw"}, wantErr: "not an absolute path"},
		{name: "empty reference", ref: &api.BGPPassword{}, wantErr: "neither a secret nor a file"},
		{name: "nil", ref: nil, wantErr: "no reference"},
	}
	read := PasswordReader(dir)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := read(tc.ref)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "xxxx") {
					t.Errorf("error leaks the password: %v", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
