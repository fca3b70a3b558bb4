package cni

import (
	"errors"
	"log/slog"
	"net/netip"
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
		ipErr string // the configuration parses, requested addresses carry this error (code 7)
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
		{name: "bad label key", conf: `{"cniVersion":"1.1.0","name":"n","args":{"cni":{"labels":[{"key":"bad key","value":"x"}]}}}`, code: types.ErrInvalidNetworkConfig, inMsg: "args.cni.labels[bad key]"},
		{name: "label value too long", conf: `{"cniVersion":"1.1.0","name":"n","args":{"cni":{"labels":[{"key":"app","value":"` + strings.Repeat("v", 64) + `"}]}}}`, code: types.ErrInvalidNetworkConfig, inMsg: "at most 63"},
		{name: "kubernetes datastore", conf: `{"cniVersion":"1.1.0","name":"n","datastore_type":"kubernetes"}`, code: types.ErrInvalidNetworkConfig, inMsg: `datastore_type "kubernetes"`},
		{name: "etcdv3 datastore", conf: `{"cniVersion":"1.1.0","name":"net1","datastore_type":"etcdv3"}`, want: func(*Config) {}},
		{name: "mtu below IPv6 minimum", conf: `{"cniVersion":"1.1.0","name":"n","mtu":1200,"ipam":{"assign_ipv6":"true"}}`, code: types.ErrInvalidNetworkConfig, inMsg: "below 1280"},
		{name: "low mtu without IPv6", conf: `{"cniVersion":"1.1.0","name":"net1","mtu":1200}`, want: func(c *Config) { c.MTU = 1200 }},
		{name: "label without key", conf: `{"cniVersion":"1.1.0","name":"n","args":{"cni":{"labels":[{"value":"x"}]}}}`, code: types.ErrInvalidNetworkConfig, inMsg: "labels[0]"},
		{name: "requested in runtimeConfig", conf: `{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ips":["198.18.0.7/24"," 2001:db8:1000::7 "]}}`,
			want: func(c *Config) {
				c.IPs, c.IPsFrom = []netip.Addr{netip.MustParseAddr("198.18.0.7"), netip.MustParseAddr("2001:db8:1000::7")}, "runtimeConfig.ips"
			}},
		{name: "requested in args", conf: `{"cniVersion":"1.1.0","name":"n","args":{"cni":{"ips":["198.18.0.8"]}}}`,
			want: func(c *Config) { c.IPs, c.IPsFrom = []netip.Addr{netip.MustParseAddr("198.18.0.8")}, "args.cni.ips" }},
		{name: "runtimeConfig wins over args", conf: `{"cniVersion":"1.1.0","name":"n","args":{"cni":{"ips":["198.18.0.8"]}},"runtimeConfig":{"ips":["198.18.0.9"]}}`,
			want: func(c *Config) {
				c.IPs, c.IPsFrom = []netip.Addr{netip.MustParseAddr("198.18.0.9")}, "runtimeConfig.ips"
			}},
		{name: "IPv4-mapped address unmapped", conf: `{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ips":["::ffff:198.18.0.9"]}}`,
			want: func(c *Config) {
				c.IPs, c.IPsFrom = []netip.Addr{netip.MustParseAddr("198.18.0.9")}, "runtimeConfig.ips"
			}},
		{name: "empty runtimeConfig ips leaves args", conf: `{"cniVersion":"1.1.0","name":"n","args":{"cni":{"ips":["198.18.0.8"]}},"runtimeConfig":{"ips":[]}}`,
			want: func(c *Config) { c.IPs, c.IPsFrom = []netip.Addr{netip.MustParseAddr("198.18.0.8")}, "args.cni.ips" }},
		{name: "requested not an address", conf: `{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ips":["198.18.0.1","web"]}}`,
			want: func(*Config) {}, ipErr: `runtimeConfig.ips[1]: "web" is not an IP address`},
		{name: "requested twice", conf: `{"cniVersion":"1.1.0","name":"n","args":{"cni":{"ips":["198.18.0.1","198.18.0.1/32"]}}}`,
			want: func(*Config) {}, ipErr: "args.cni.ips[1]: 198.18.0.1 is requested twice"},
		{name: "requested link-local", conf: `{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ips":["169.254.1.1"]}}`,
			want: func(*Config) {}, ipErr: "169.254.1.1 cannot be a pod's address"},
		{name: "requested zone", conf: `{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ips":["2001:db8::1%eth0"]}}`,
			want: func(*Config) {}, ipErr: "is not an IP address"},
		{name: "requested too many", conf: `{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ips":["198.18.0.1","198.18.0.2","198.18.0.3","198.18.0.4","198.18.0.5","198.18.0.6","198.18.0.7","198.18.0.8","198.18.0.9","198.18.0.10","198.18.0.11","198.18.0.12","198.18.0.13","198.18.0.14","198.18.0.15","198.18.0.16","198.18.0.17"]}}`,
			want: func(*Config) {}, ipErr: "17 addresses requested, at most 16"},
		{name: "requested ips not a list", conf: `{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ips":"198.18.0.1"}}`, code: types.ErrDecodingFailure},
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
			if tc.ipErr != "" {
				var e *types.Error
				if !errors.As(got.IPsErr, &e) || e.Code != types.ErrInvalidNetworkConfig || !strings.Contains(e.Msg, tc.ipErr) {
					t.Fatalf("IPsErr = %v, want code %d containing %q", got.IPsErr, types.ErrInvalidNetworkConfig, tc.ipErr)
				}
				if got.IPs != nil {
					t.Fatalf("requested addresses kept beside an error: %v", got.IPs)
				}
				return
			}
			if got.IPsErr != nil {
				t.Fatalf("IPsErr = %v", got.IPsErr)
			}
			want := base
			want.Network = got.Network
			tc.want(&want)
			if diff := cmp.Diff(want, *got, cmpopts.IgnoreFields(Config{}, "Raw"), cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Fatalf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseCNIArgs(t *testing.T) {
	tests := []struct {
		in    string
		want  PodArgs
		bad   bool
		badIP bool // parses, with PodArgs.IPsErr (code 4)
	}{
		{in: "", want: PodArgs{}},
		{in: "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u1",
			want: PodArgs{Namespace: "prod", Name: "web-0", UID: "u1"}},
		{in: "K8S_POD_NAME=a=b", bad: true}, // the value is "a=b", which no pod is named
		{in: "K8S_POD_NAMESPACE=Bad_NS;K8S_POD_NAME=x", bad: true},
		{in: "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=Web", bad: true},
		{in: "K8S_POD_NAMESPACE=" + strings.Repeat("a", 64), bad: true},
		{in: "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-5d78c9869d-x2x9k.v1", want: PodArgs{Namespace: "kube-system", Name: "coredns-5d78c9869d-x2x9k.v1"}},
		{in: "K8S_POD_NAME", bad: true},
		{in: "=x", bad: true},
		{in: "IgnoreUnknown=1;IP=198.18.0.5/24,2001:db8:1000::5", want: PodArgs{IPs: []netip.Addr{netip.MustParseAddr("198.18.0.5"), netip.MustParseAddr("2001:db8:1000::5")}}},
		{in: "IP=198.18.0.5,198.18.0.5", badIP: true},
		{in: "IP=198.18.0", badIP: true},
		{in: "IP=", badIP: true},
		{in: "IP=0.0.0.0", badIP: true},
		{in: "IP=ff02::1", badIP: true},
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
		if tc.badIP {
			var e *types.Error
			if !errors.As(got.IPsErr, &e) || e.Code != types.ErrInvalidEnvironmentVariables || got.IPs != nil {
				t.Errorf("ParseCNIArgs(%q) IPsErr = %v, IPs %v; want code %d and no addresses", tc.in, got.IPsErr, got.IPs, types.ErrInvalidEnvironmentVariables)
			}
			continue
		}
		if diff := cmp.Diff(tc.want, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
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
		`{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ips":["198.18.0.1/24","2001:db8::1"]},"args":{"cni":{"ips":["x"]}}}`,
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
		checkRequested(t, c.IPs)
		if e := asCNIError(c.IPsErr); c.IPsErr != nil && (e == nil || e.Code != types.ErrInvalidNetworkConfig || e.Msg == "") {
			t.Fatalf("requested-address error %v is not a config CNI error", c.IPsErr)
		}
	})
}

// checkRequested fails unless ips could be a pod's addresses: valid, plain (no zone, not
// IPv4-mapped), unicast, distinct, and not too many.
func checkRequested(t *testing.T, ips []netip.Addr) {
	t.Helper()
	if len(ips) > maxRequested {
		t.Fatalf("accepted %d requested addresses", len(ips))
	}
	for i, ip := range ips {
		if !ip.IsValid() || ip.Zone() != "" || ip.Is4In6() || ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() || ip.IsLinkLocalUnicast() {
			t.Fatalf("accepted requested address %v", ip)
		}
		for _, o := range ips[:i] {
			if o == ip {
				t.Fatalf("accepted %v twice", ip)
			}
		}
	}
}

// FuzzParseCNIArgs: CNI_ARGS either parses (and any requested address is usable) or fails with
// ErrInvalidEnvironmentVariables and a message; it never panics.
func FuzzParseCNIArgs(f *testing.F) {
	for _, s := range []string{"", "IgnoreUnknown=1;K8S_POD_NAMESPACE=a;K8S_POD_NAME=b", "IP=198.18.0.1/24,2001:db8::1",
		"IP=198.18.0.1;IP=198.18.0.2", "K8S_POD_NAME=x=y;;", "IP=::ffff:198.18.0.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseCNIArgs(s)
		for _, err := range []error{err, a.IPsErr} {
			if e := asCNIError(err); err != nil && (e == nil || e.Code != types.ErrInvalidEnvironmentVariables || e.Msg == "") {
				t.Fatalf("error %v is not an invalid-environment CNI error", err)
			}
		}
		checkRequested(t, a.IPs)
	})
}
