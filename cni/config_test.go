package cni

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func fixedHost(name string) func() (string, error) {
	return func() (string, error) { return name, nil }
}

func TestParseConfig(t *testing.T) {
	base := Config{
		Network: "net1", CNIVersion: "1.1.0",
		Etcd:       EtcdConfig{Endpoints: []string{DefaultEtcdEndpoint}},
		Node:       "host-a",
		NodeSocket: DefaultNodeSocket, MTU: DefaultMTU, LogLevel: slog.LevelInfo, LogFile: DefaultLogFile,
		AssignIPv4: true,
	}
	tests := []struct {
		name  string
		conf  string
		env   map[string]string
		want  func(c *Config)
		code  uint
		inMsg string
	}{
		{name: "minimal", conf: `{"cniVersion":"1.1.0","name":"net1","type":"terrace"}`, want: func(*Config) {}},
		{name: "all keys", conf: `{"cniVersion":"1.0.0","name":"net1","type":"terrace",
			"etcd_endpoints":"http://192.0.2.1:2379, https://192.0.2.2:2379","etcd_ca_cert_file":"/ca","etcd_cert_file":"/c","etcd_key_file":"/k",
			"nodename":"n1","node_socket":"/run/x.sock","mtu":9000,"log_level":"debug","log_file_path":"/tmp/l.log",
			"policy_setup_timeout_seconds":5,
			"ipam":{"type":"terrace-ipam","assign_ipv4":"false","assign_ipv6":true,"ipv4_pools":["p4"],"ipv6_pools":["2001:db8:1000::/48"]},
			"args":{"cni":{"labels":[{"key":"app","value":"web"}]}}}`,
			want: func(c *Config) {
				c.CNIVersion = "1.0.0"
				c.Etcd = EtcdConfig{Endpoints: []string{"http://192.0.2.1:2379", "https://192.0.2.2:2379"}, CAFile: "/ca", CertFile: "/c", Key: "/k"}
				c.Node, c.NodeSocket, c.MTU, c.LogLevel, c.LogFile = "n1", "/run/x.sock", 9000, slog.LevelDebug, "/tmp/l.log"
				c.PolicySetupTimeout = 5 * time.Second
				c.AssignIPv4, c.AssignIPv6 = false, true
				c.IPv4Pools, c.IPv6Pools = []string{"p4"}, []string{"2001:db8:1000::/48"}
				c.Labels = map[string]string{"app": "web"}
			}},
		{name: "env fallback", conf: `{"cniVersion":"1.1.0","name":"net1","type":"terrace"}`,
			env: map[string]string{EnvEtcdEndpoints: "http://203.0.113.5:2379", EnvNodeName: "from-env", EnvNodeSocket: "/e.sock",
				EnvEtcdCA: "/eca", EnvEtcdCert: "/ec", EnvEtcdKey: "/ek", EnvLogLevel: "warning", EnvLogFile: "/e.log"},
			want: func(c *Config) {
				c.Etcd = EtcdConfig{Endpoints: []string{"http://203.0.113.5:2379"}, CAFile: "/eca", CertFile: "/ec", Key: "/ek"}
				c.Node, c.NodeSocket, c.LogLevel, c.LogFile = "from-env", "/e.sock", slog.LevelWarn, "/e.log"
			}},
		{name: "config wins over env", conf: `{"cniVersion":"1.1.0","name":"net1","nodename":"cfg","etcd_endpoints":"http://192.0.2.9:2379"}`,
			env: map[string]string{EnvEtcdEndpoints: "http://203.0.113.5:2379", EnvNodeName: "from-env"},
			want: func(c *Config) {
				c.Etcd.Endpoints = []string{"http://192.0.2.9:2379"}
				c.Node = "cfg"
			}},
		{name: "camel-case node socket", conf: `{"cniVersion":"1.1.0","name":"net1","nodeSocket":"/camel.sock"}`,
			want: func(c *Config) { c.NodeSocket = "/camel.sock" }},
		{name: "not json", conf: `{"cniVersion":`, code: types.ErrDecodingFailure},
		{name: "missing version", conf: `{"name":"net1"}`, code: types.ErrInvalidNetworkConfig, inMsg: "cniVersion is required"},
		{name: "missing name", conf: `{"cniVersion":"1.1.0"}`, code: types.ErrInvalidNetworkConfig, inMsg: "name is required"},
		{name: "unknown ipam", conf: `{"cniVersion":"1.1.0","name":"n","ipam":{"type":"host-local"}}`, code: types.ErrInvalidNetworkConfig, inMsg: `ipam.type "host-local"`},
		{name: "nothing to assign", conf: `{"cniVersion":"1.1.0","name":"n","ipam":{"assign_ipv4":"false"}}`, code: types.ErrInvalidNetworkConfig, inMsg: "nothing to assign"},
		{name: "bad bool", conf: `{"cniVersion":"1.1.0","name":"n","ipam":{"assign_ipv4":"yes"}}`, code: types.ErrDecodingFailure},
		{name: "bad mtu", conf: `{"cniVersion":"1.1.0","name":"n","mtu":20}`, code: types.ErrInvalidNetworkConfig, inMsg: "mtu 20"},
		{name: "bad endpoint", conf: `{"cniVersion":"1.1.0","name":"n","etcd_endpoints":"192.0.2.1:2379"}`, code: types.ErrInvalidNetworkConfig, inMsg: "etcd_endpoints"},
		{name: "cert without key", conf: `{"cniVersion":"1.1.0","name":"n","etcd_cert_file":"/c"}`, code: types.ErrInvalidNetworkConfig, inMsg: "together"},
		{name: "bad level", conf: `{"cniVersion":"1.1.0","name":"n","log_level":"loud"}`, code: types.ErrInvalidNetworkConfig, inMsg: "log_level"},
		{name: "negative timeout", conf: `{"cniVersion":"1.1.0","name":"n","policy_setup_timeout_seconds":-1}`, code: types.ErrInvalidNetworkConfig, inMsg: "negative"},
		{name: "bad node name", conf: `{"cniVersion":"1.1.0","name":"n","nodename":"Host_A"}`, code: types.ErrInvalidNetworkConfig, inMsg: "RFC 1123"},
		{name: "label without key", conf: `{"cniVersion":"1.1.0","name":"n","args":{"cni":{"labels":[{"value":"x"}]}}}`, code: types.ErrInvalidNetworkConfig, inMsg: "labels[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tc.conf), envOf(tc.env), fixedHost("host-a"))
			if tc.code != 0 {
				var e *types.Error
				if !errors.As(err, &e) {
					t.Fatalf("err = %v, want a *types.Error with code %d", err, tc.code)
				}
				if e.Code != tc.code || !strings.Contains(e.Msg, tc.inMsg) {
					t.Fatalf("err = code %d %q, want code %d containing %q", e.Code, e.Msg, tc.code, tc.inMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := base
			want.Network = got.Network
			tc.want(&want)
			if diff := cmp.Diff(want, *got, cmpopts.IgnoreFields(Config{}, "Raw"), cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseCNIArgs(t *testing.T) {
	tests := []struct {
		in   string
		want PodArgs
		bad  bool
	}{
		{in: "", want: PodArgs{}},
		{in: "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u1",
			want: PodArgs{Namespace: "prod", Name: "web-0", UID: "u1"}},
		{in: "K8S_POD_NAME=a=b", want: PodArgs{Name: "a=b"}},
		{in: "K8S_POD_NAME", bad: true},
		{in: "=x", bad: true},
	}
	for _, tc := range tests {
		got, err := ParseCNIArgs(tc.in)
		if tc.bad {
			var e *types.Error
			if !errors.As(err, &e) || e.Code != types.ErrInvalidEnvironmentVariables {
				t.Errorf("ParseCNIArgs(%q) err = %v, want code %d", tc.in, err, types.ErrInvalidEnvironmentVariables)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseCNIArgs(%q): %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParseCNIArgs(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

// FuzzParseConfig: any input either parses into a usable configuration or fails with a CNI error
// code a runtime understands; it never panics.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"n","type":"terrace"}`,
		`{"cniVersion":"1.0.0","name":"n","ipam":{"assign_ipv4":"true","assign_ipv6":"true","ipv4_pools":["a"]},"mtu":1400}`,
		`{"cniVersion":"0.4.0","name":"n","etcd_endpoints":"http://a:1,https://b:2","args":{"cni":{"labels":[{"key":"k","value":"v"}]}}}`,
		`{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"c","ifname":"eth0"}]}`,
		`[]`, `null`, `{"ipam":{"assign_ipv4":1}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data, envOf(nil), fixedHost("fuzz-host"))
		if err != nil {
			e := asCNIError(err)
			if e == nil || (e.Code != types.ErrDecodingFailure && e.Code != types.ErrInvalidNetworkConfig) || e.Msg == "" {
				t.Fatalf("error %v is not a decoding/config CNI error", err)
			}
			return
		}
		if c.Network == "" || c.CNIVersion == "" || len(c.Etcd.Endpoints) == 0 || c.Node == "" {
			t.Fatalf("accepted config lacks essentials: %+v", c)
		}
		if c.MTU < 68 || c.MTU > 65535 || (!c.AssignIPv4 && !c.AssignIPv6) || c.PolicySetupTimeout < 0 {
			t.Fatalf("accepted config out of range: %+v", c)
		}
	})
}
