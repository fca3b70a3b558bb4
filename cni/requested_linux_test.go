package cni

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// TestBinaryRequestedAddresses: a pod that asks for its addresses (runtimeConfig.ips,
// args.cni.ips, CNI_ARGS IP=) gets exactly those, wired and reachable; one that asks for an
// address another pod holds, or one outside every pool, gets a clear error and leaves nothing.
// Both ways the plugin reaches the datastore are covered: etcd directly and the node agent.
func TestBinaryRequestedAddresses(t *testing.T) {
	e := inHost(t, "-test.run")
	if e == nil {
		return
	}
	ip := netip.MustParseAddr
	backends := []struct {
		name string
		conf func(extra string) []byte
	}{
		{"etcd", func(extra string) []byte { return e.conf("1.1.0", extra) }},
		{"agent", func() func(string) []byte {
			sock := serveAgent(t, "host-a", e.store, e.ds)
			return func(extra string) []byte { return e.conf("1.1.0", `,"node_socket":"`+sock+`"`+extra) }
		}()},
	}
	for bi, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			e.t = t
			other := map[string]string{"etcd": "agent", "agent": "etcd"}[be.name]
			logged := func() map[string]int {
				if _, err := os.Stat(filepath.Join(e.logDir, "cni.log")); err != nil {
					return map[string]int{} // no command has run yet
				}
				return e.backendsLogged()
			}
			usedBefore := logged()
			defer func() {
				e.t = t
				if used := logged(); used[other] != usedBefore[other] || used[be.name] == usedBefore[be.name] {
					t.Errorf("backends used before %v, after %v: want only %s", usedBefore, used, be.name)
				}
			}()
			// Each backend asks for its own addresses, so a leak of one cannot pass for the other.
			base4 := ip("198.18.200.10").As4()
			base4[3] += byte(bi * 16)
			a4 := netip.AddrFrom4(base4)
			a6 := ip("2001:db8:1000::c8:10")
			for range bi * 16 {
				a6 = a6.Next()
			}
			ways := []struct {
				name, extra, args string
				want              []netip.Addr
			}{
				{"runtimeConfig", `,"ipam":{"assign_ipv6":true},"runtimeConfig":{"ips":["` + a4.String() + `/24","` + a6.String() + `/64"]}`, "", []netip.Addr{a4, a6}},
				{"args", `,"args":{"cni":{"ips":["` + a4.Next().String() + `"]}}`, "", []netip.Addr{a4.Next()}},
				{"CNI_ARGS", "", "IgnoreUnknown=1;IP=" + a4.Next().Next().String(), []netip.Addr{a4.Next().Next()}},
			}
			for _, w := range ways {
				t.Run(w.name, func(t *testing.T) {
					e.t = t
					pod := e.newPod()
					c := call{cmd: "ADD", cid: "req-" + be.name + "-" + w.name, netns: pod, stdin: be.conf(w.extra), args: w.args}
					out := e.mustOK(c)
					v4, v6 := resultIPs(t, parseResult(t, out))
					if got := slices.Concat(v4, v6); !slices.Equal(got, w.want) {
						t.Fatalf("ADD gave %v, want %v", got, w.want)
					}
					for _, a := range w.want {
						ping(t, a)
					}
					if !slices.Contains(e.leftovers(), "address "+w.want[0].String()+" "+HandleID("testnet", c.cid, "eth0")) {
						t.Fatalf("IPAM does not hold %v under the attachment's handle: %v", w.want[0], e.leftovers())
					}
					// Nothing is auto-assigned beside the requested addresses.
					if n := countPrefix(e.leftovers(), "address "); n != len(w.want) {
						t.Errorf("%d addresses held, want %d: %v", n, len(w.want), e.leftovers())
					}
					c.cmd, c.stdin = "CHECK", []byte(strings.TrimSuffix(string(be.conf(w.extra)), "}")+`,"prevResult":`+string(out)+"}")
					e.mustOK(c)
					c.cmd, c.stdin = "DEL", be.conf(w.extra)
					e.mustOK(c)
					e.assertClean()
				})
			}

			t.Run("refused", func(t *testing.T) {
				e.t = t
				holder := call{cmd: "ADD", cid: "req-holder-" + be.name, netns: e.newPod(), stdin: be.conf(`,"runtimeConfig":{"ips":["` + a4.String() + `"]}`)}
				e.mustOK(holder)
				free := a4.Next().Next().Next()
				refused := []struct {
					name, ips string
					code      uint
					inMsg     []string
				}{
					{"held by another pod", `["` + a4.String() + `"]`, CodeAddressInUse,
						[]string{a4.String(), "already in use", "held by handle " + HandleID("testnet", holder.cid, "eth0")}},
					{"in no pool", `["203.0.113.9"]`, types.ErrInvalidNetworkConfig, []string{"203.0.113.9", "not in any ip pool"}},
					{"one free, one held", `["` + free.String() + `","` + a4.String() + `"]`, CodeAddressInUse, []string{a4.String()}},
					{"one free, one in no pool", `["` + free.String() + `","203.0.113.9"]`, types.ErrInvalidNetworkConfig, []string{"203.0.113.9"}},
				}
				for _, r := range refused {
					t.Run(r.name, func(t *testing.T) {
						e.t = t
						before := e.leftovers()
						o := e.exec(call{cmd: "ADD", cid: "req-refused-" + be.name, netns: e.newPod(), stdin: be.conf(`,"runtimeConfig":{"ips":` + r.ips + `}`)})
						if o.err == nil {
							t.Fatalf("ADD succeeded: %s", o.stdout)
						}
						msg := strings.ToLower(o.err.Msg + " " + o.err.Details)
						if o.err.Code != r.code {
							t.Errorf("ADD = code %d (%s), want %d", o.err.Code, o.err.Msg, r.code)
						}
						for _, s := range r.inMsg {
							if !strings.Contains(msg, strings.ToLower(s)) {
								t.Errorf("message %q does not say %q", o.err.Msg, s)
							}
						}
						if after := e.leftovers(); !slices.Equal(before, after) {
							t.Fatalf("state changed:\nbefore %v\nafter  %v", before, after)
						}
					})
				}
				// A malformed request fails ADD only: DEL with the same input must still clean up.
				for _, bad := range []struct {
					extra, args string
					code        uint
				}{
					{`,"runtimeConfig":{"ips":["web"]}`, "", types.ErrInvalidNetworkConfig},
					{"", "IgnoreUnknown=1;IP=198.18.0", types.ErrInvalidEnvironmentVariables},
				} {
					e.t = t
					c := call{cmd: "ADD", cid: "req-bad-" + be.name, netns: e.newPod(), stdin: be.conf(bad.extra), args: bad.args}
					if o := e.exec(c); o.err == nil || o.err.Code != bad.code {
						t.Errorf("ADD with %q %q = %+v, want code %d", bad.extra, bad.args, o.err, bad.code)
					}
					c.cmd = "DEL"
					e.mustOK(c)
				}
				e.t = t
				holder.cmd = "DEL"
				e.mustOK(holder)
				e.assertClean()
			})

			t.Run("IPAM plugin alone", func(t *testing.T) {
				e.t = t
				link := filepath.Join(t.TempDir(), IPAMType)
				if err := os.Symlink(e.plugin, link); err != nil {
					t.Fatal(err)
				}
				c := call{cmd: "ADD", cid: "req-ipam-" + be.name, netns: e.newPod(), argv0: link, args: "IP=" + a6.String(),
					stdin: be.conf(`,"ipam":{"type":"terrace-ipam"}`)}
				out := e.mustOK(c)
				var res struct {
					IPs []struct {
						Address string `json:"address"`
					} `json:"ips"`
				}
				if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) != 1 || res.IPs[0].Address != a6.String()+"/128" {
					t.Fatalf("IPAM result %s (%v): want %v/128 alone", out, err, a6)
				}
				c.cmd = "DEL"
				e.mustOK(c)
				e.assertClean()
			})
		})
	}
	e.t = t
}

func countPrefix(ss []string, prefix string) int {
	n := 0
	for _, s := range ss {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}
