package testbed

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseBirdProtocols(t *testing.T) {
	out := `BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     02:57:54.723  
kernel4    Kernel     master4    up     02:57:54.723  
host_1     BGP        ---        start  02:57:54.723  Active        Socket: Connection refused
host_2     BGP        ---        up     02:58:01.002  Established   
host_3_v6  BGP        ---        start  2026-11-25 02:58:01  Connect
`
	want := []BGPSession{
		{Name: "host_1", State: "start", Since: "02:57:54.723", Info: "Active Socket: Connection refused"},
		{Name: "host_2", State: "up", Since: "02:58:01.002", Info: "Established"},
		{Name: "host_3_v6", State: "start", Since: "2026-11-25 02:58:01", Info: "Connect"},
	}
	if diff := cmp.Diff(want, parseBirdProtocols(out)); diff != "" {
		t.Errorf("parseBirdProtocols (-want +got):\n%s", diff)
	}
	if got := parseBirdProtocols("BIRD 2.0.12 ready.\n"); len(got) != 0 {
		t.Errorf("no protocols: got %v", got)
	}
}

func FuzzParseBirdProtocols(f *testing.F) {
	f.Add("host_1 BGP --- up 02:57:54.723 Established\n")
	f.Add("x BGP y z\n")
	f.Add("a BGP")
	f.Fuzz(func(t *testing.T, s string) {
		for _, sess := range parseBirdProtocols(s) {
			if sess.Name == "" || sess.State == "" {
				t.Fatalf("session without name or state from %q: %+v", s, sess)
			}
		}
	})
}

func testBirdConf(peers []birdPeer) birdConf {
	return birdConf{RouterID: "192.0.2.254", AS: 65000, HostAS: 64512, Log: "/tmp/x.log",
		Inject: "/dev/null", PoolV4: PoolV4, PoolV6: PoolV6, Peers: peers}
}

func TestRenderBirdConf(t *testing.T) {
	conf, err := renderBirdConf(testBirdConf([]birdPeer{
		{Name: "host_1", Addr: "192.0.2.1", AS: 64512},
		{Name: "host_1_v6", Addr: "2001:db8:0:101::2", AS: 64512, V6: true},
	}))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"router id 192.0.2.254;",
		"local as 65000;",
		"protocol bgp host_1 from hosts {\n\tneighbor 192.0.2.1 as 64512;\n\tipv4 {",
		"protocol bgp host_1_v6 from hosts {\n\tneighbor 2001:db8:0:101::2 as 64512;\n\tipv6 {",
		"if from = 192.0.2.1 then reject;",
		"bgp_path.delete(64512);",
		"merge paths on;",
		"net ~ [ 198.18.0.0/15+ ]",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("bird config lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "graceful restart time") {
		t.Errorf("restart time set without being asked for:\n%s", conf)
	}
	c := testBirdConf(nil)
	c.RestartTime = 7
	if conf, _ := renderBirdConf(c); !strings.Contains(conf, "graceful restart time 7;") {
		t.Errorf("bird config lacks the restart time:\n%s", conf)
	}
}

// TestBirdAcceptsConfig has BIRD itself parse the generated configuration (bird -p parses and exits).
func TestBirdAcceptsConfig(t *testing.T) {
	if _, err := exec.LookPath("bird"); err != nil {
		t.Skip("bird not installed (Debian package bird2): cannot check the generated configuration")
	}
	dir := t.TempDir()
	inject := filepath.Join(dir, "inject.conf")
	ps, _ := InjectPrefixes(3)
	ps = append(ps, netip.MustParsePrefix("2001:db8:1000:ff::/64"))
	if err := os.WriteFile(inject, []byte(renderInject(ps)), 0o644); err != nil {
		t.Fatal(err)
	}
	c := testBirdConf([]birdPeer{{Name: "host_1", Addr: "192.0.2.1", AS: 64512}, {Name: "host_1_v6", Addr: "2001:db8:0:101::2", AS: 64512, V6: true}})
	c.RestartTime = 5 // the option fault tests use must be one BIRD accepts
	c.Inject = inject
	c.Log = filepath.Join(dir, "bird.log")
	conf, err := renderBirdConf(c)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bird", "-p", "-c", path).CombinedOutput(); err != nil {
		t.Fatalf("bird rejects the generated config: %v: %s\n%s", err, out, conf)
	}
	// And a broken one must be rejected, or the check above proves nothing.
	if err := os.WriteFile(path, []byte(conf+"\nprotocol nonsense {"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("bird", "-p", "-c", path).Run(); err == nil {
		t.Fatal("bird -p accepted a broken config")
	}
}

func TestRenderInject(t *testing.T) {
	got := renderInject([]netip.Prefix{netip.MustParsePrefix("198.18.64.1/32"), netip.MustParsePrefix("2001:db8:1000::1/128")})
	want := "protocol static inject4 {\n\tipv4;\n\troute 198.18.64.1/32 blackhole;\n}\n" +
		"protocol static inject6 {\n\tipv6;\n\troute 2001:db8:1000::1/128 blackhole;\n}\n"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("renderInject (-want +got):\n%s", diff)
	}
}
