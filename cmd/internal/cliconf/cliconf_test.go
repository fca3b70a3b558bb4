package cliconf

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"

	"github.com/terracenet/terrace/datastore/kv"
)

func newFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	AddEtcdFlags(fs, 3*time.Second)
	fs.String("node-socket", "/var/run/terrace/node.sock", "")
	fs.String("log-level", "info", "")
	return fs
}

func TestPrecedence(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		file       string
		wantSocket string
		wantSource Source
		wantEtcd   []string
	}{
		{
			name:       "defaults",
			wantSocket: "/var/run/terrace/node.sock", wantSource: SourceDefault,
			wantEtcd: []string{DefaultEtcdEndpoint},
		},
		{
			name:       "file beats default",
			file:       "node-socket: /file.sock\netcd-endpoints: [http://192.0.2.1:2379, http://192.0.2.2:2379]\n",
			wantSocket: "/file.sock", wantSource: SourceFile,
			wantEtcd: []string{"http://192.0.2.1:2379", "http://192.0.2.2:2379"},
		},
		{
			name:       "env beats file",
			file:       "node-socket: /file.sock\netcd-endpoints: http://192.0.2.1:2379\n",
			env:        map[string]string{"TERRACE_NODE_SOCKET": "/env.sock", "TERRACE_ETCD_ENDPOINTS": "http://203.0.113.1:2379, http://203.0.113.2:2379"},
			wantSocket: "/env.sock", wantSource: SourceEnv,
			wantEtcd: []string{"http://203.0.113.1:2379", "http://203.0.113.2:2379"},
		},
		{
			name:       "flag beats env and file",
			args:       []string{"--node-socket=/flag.sock", "--etcd-endpoints=http://127.0.0.1:1"},
			file:       "node-socket: /file.sock\n",
			env:        map[string]string{"TERRACE_NODE_SOCKET": "/env.sock", "TERRACE_ETCD_ENDPOINTS": "http://203.0.113.1:2379"},
			wantSocket: "/flag.sock", wantSource: SourceFlag,
			wantEtcd: []string{"http://127.0.0.1:1"},
		},
		{
			name:       "empty env is ignored",
			env:        map[string]string{"TERRACE_NODE_SOCKET": ""},
			file:       "node-socket: /file.sock\n",
			wantSocket: "/file.sock", wantSource: SourceFile,
			wantEtcd: []string{DefaultEtcdEndpoint},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"TERRACE_NODE_SOCKET", "TERRACE_ETCD_ENDPOINTS"} {
				t.Setenv(k, "")
				os.Unsetenv(k)
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			path := filepath.Join(t.TempDir(), "terracectl.yaml")
			if tt.file != "" {
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			fs := newFlags()
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			c, err := LoadFile(fs, path, false)
			if err != nil {
				t.Fatalf("LoadFile: %v", err)
			}
			if got := c.String("node-socket"); got != tt.wantSocket {
				t.Errorf("node-socket = %q, want %q", got, tt.wantSocket)
			}
			if got := c.Source("node-socket"); got != tt.wantSource {
				t.Errorf("source = %q, want %q", got, tt.wantSource)
			}
			ec, err := c.Etcd()
			if err != nil {
				t.Fatalf("Etcd: %v", err)
			}
			if diff := cmp.Diff(tt.wantEtcd, ec.Endpoints); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
			if ec.DialTimeout != 3*time.Second {
				t.Errorf("dial timeout = %v", ec.DialTimeout)
			}
		})
	}
}

func TestEtcdConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		file    string
		wantErr string
		want    kv.Config
	}{
		{name: "cert without key", args: []string{"--etcd-cert=/c.pem"}, wantErr: "--etcd-cert and --etcd-key"},
		{name: "password without user", args: []string{"--etcd-password=x"}, wantErr: "needs --etcd-username"},
		{name: "no endpoints", args: []string{"--etcd-endpoints= , "}, wantErr: "no etcd endpoints"},
		{name: "bad timeout in file", file: "etcd-dial-timeout: soon\n", wantErr: "etcd-dial-timeout (from file /"},
		{
			name: "tls and auth",
			args: []string{"--etcd-ca=/ca", "--etcd-cert=/c", "--etcd-key=/k", "--etcd-username=u", "--etcd-password=p", "--etcd-dial-timeout=1s"},
			want: kv.Config{Endpoints: []string{DefaultEtcdEndpoint}, CAFile: "/ca", CertFile: "/c", KeyFile: "/k", Username: "u", Password: "p", DialTimeout: time.Second},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Unsetenv("TERRACE_ETCD_ENDPOINTS")
			path := ""
			if tt.file != "" {
				path = filepath.Join(t.TempDir(), "x.yaml")
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			fs := newFlags()
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			c, err := LoadFile(fs, path, false)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Etcd()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("node-socket: [unclosed\n"), 0o600)
	unknown := filepath.Join(dir, "unknown.yaml")
	os.WriteFile(unknown, []byte("node-sokcet: /x\n"), 0o600)
	tests := []struct {
		name     string
		path     string
		required bool
		wantErr  string
	}{
		{"missing optional", filepath.Join(dir, "none.yaml"), false, ""},
		{"missing required", filepath.Join(dir, "none.yaml"), true, "read config file"},
		{"malformed", bad, false, "parse config file"},
		{"unknown key", unknown, false, `unknown key "node-sokcet"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadFile(newFlags(), tt.path, tt.required)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"etcd-endpoints": "TERRACE_ETCD_ENDPOINTS",
		"node-socket":    "TERRACE_NODE_SOCKET",
		"node-name":      "TERRACE_NODE_NAME",
	} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in      string
		want    slog.Level
		wantErr bool
	}{
		{"debug", slog.LevelDebug, false}, {"INFO", slog.LevelInfo, false}, {"", slog.LevelInfo, false},
		{"warning", slog.LevelWarn, false}, {"error", slog.LevelError, false}, {"loud", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseLevel(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseLevel(%q) = %v, %v", tt.in, got, err)
		}
	}
}

// TestBool: booleans from every source are read strictly; what is not true or false is an error
// naming where it came from, never a silent false.
func TestBool(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     string
		file    string
		want    bool
		wantErr string
	}{
		{name: "default", want: true},
		{name: "flag", args: []string{"--bgp=false"}, want: false},
		{name: "env", env: "false", want: false},
		{name: "env, other spelling", env: "FALSE", want: false},
		{name: "file", file: "bgp: false\n", want: false},
		{name: "file, quoted", file: "bgp: \"0\"\n", want: false},
		{name: "env yes", env: "yes", wantErr: `parse bgp (from env TERRACE_BGP): "yes" is not true or false`},
		{name: "file on", file: "bgp: on\n", wantErr: `"on" is not true or false`},
		{name: "file typo", file: "bgp: ture\n", wantErr: `"ture" is not true or false`},
		{name: "file number", file: "bgp: 2\n", wantErr: `2 is not true or false`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("TERRACE_BGP", tt.env)
			if tt.env == "" {
				os.Unsetenv("TERRACE_BGP")
			}
			path := filepath.Join(t.TempDir(), "terrace-node.yaml")
			if tt.file != "" {
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			fs := newFlags()
			fs.Bool("bgp", true, "")
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			c, err := LoadFile(fs, path, false)
			if err != nil {
				t.Fatalf("LoadFile: %v", err)
			}
			got, err := c.Bool("bgp")
			switch {
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Bool = %v, %v; want an error containing %q", got, err, tt.wantErr)
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Bool: %v", err)
			case tt.wantErr == "" && got != tt.want:
				t.Errorf("Bool = %v, want %v", got, tt.want)
			}
		})
	}
}
