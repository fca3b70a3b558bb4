package cni

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/terracenet/terrace/node/nodeapi"
)

// CheckCall must answer as skel does (the same error code, message and details, or go ahead), since
// a command reaches either the agent or skel in terrace-cni-etcd. Each case runs skel itself, in
// this process, with the invocation in the environment and on standard input.
func TestCheckCallAnswersAsSkel(t *testing.T) {
	good := `{"cniVersion":"1.1.0","name":"terrace-net","type":"terrace"}`
	full := nodeapi.CNIRequest{ContainerID: "c1", Netns: "/var/run/netns/p", IfName: "eth0", Path: "/opt/cni/bin", StdinData: []byte(good)}
	with := func(cmd string, f func(*nodeapi.CNIRequest)) nodeapi.CNIRequest {
		r := full
		r.Command = cmd
		if f != nil {
			f(&r)
		}
		return r
	}
	conf := func(s string) func(*nodeapi.CNIRequest) {
		return func(r *nodeapi.CNIRequest) { r.StdinData = []byte(s) }
	}
	tests := []struct {
		name string
		req  nodeapi.CNIRequest
	}{
		{"ADD complete", with("ADD", nil)},
		{"DEL complete", with("DEL", nil)},
		{"CHECK complete", with("CHECK", nil)},
		{"DEL without a namespace", with("DEL", func(r *nodeapi.CNIRequest) { r.Netns = "" })},
		{"ADD without a namespace", with("ADD", func(r *nodeapi.CNIRequest) { r.Netns = "" })},
		{"ADD without anything", nodeapi.CNIRequest{Command: "ADD", StdinData: []byte(good)}},
		{"DEL without container and path", with("DEL", func(r *nodeapi.CNIRequest) { r.ContainerID, r.Path = "", "" })},
		{"bad container ID", with("ADD", func(r *nodeapi.CNIRequest) { r.ContainerID = "-bad/id" })},
		{"bad container ID and missing path", with("ADD", func(r *nodeapi.CNIRequest) { r.ContainerID, r.Path = "-bad", "" })},
		{"interface name too long", with("ADD", func(r *nodeapi.CNIRequest) { r.IfName = "eth0123456789abcdef" })},
		{"interface name with slash", with("DEL", func(r *nodeapi.CNIRequest) { r.IfName = "a/b" })},
		{"interface name dot", with("CHECK", func(r *nodeapi.CNIRequest) { r.IfName = "." })},
		{"configuration not JSON", with("ADD", conf(`{"name":`))},
		{"no network name", with("ADD", conf(`{"cniVersion":"1.1.0"}`))},
		{"bad network name", with("ADD", conf(`{"cniVersion":"1.1.0","name":"bad name!"}`))},
		{"version not a string", with("ADD", conf(`{"cniVersion":1,"name":"n"}`))},
		{"no version", with("ADD", conf(`{"name":"n"}`))},
		{"older version", with("ADD", conf(`{"cniVersion":"0.3.1","name":"n"}`))},
		{"newer version", with("ADD", conf(`{"cniVersion":"1.2.0","name":"n"}`))},
		{"bad version", with("ADD", conf(`{"cniVersion":"x.y","name":"n"}`))},
		{"CHECK of an old version", with("CHECK", conf(`{"cniVersion":"0.3.1","name":"n"}`))},
		{"CHECK of a newer version", with("CHECK", conf(`{"cniVersion":"1.2.0","name":"n"}`))},
		{"CHECK of a bad version", with("CHECK", conf(`{"cniVersion":"x","name":"n"}`))},
		{"CHECK of 0.4.0", with("CHECK", conf(`{"cniVersion":"0.4.0","name":"n"}`))},
		{"DEL of 1.0.0", with("DEL", conf(`{"cniVersion":"1.0.0","name":"n"}`))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			skelErr, called := runSkel(t, tc.req)
			got := CheckCall(tc.req)
			if called {
				if got != nil {
					t.Fatalf("skel runs the command; CheckCall refuses it: %v", got)
				}
				return
			}
			if skelErr == nil {
				t.Fatal("skel neither ran the command nor failed")
			}
			if got == nil || got.Code != skelErr.Code || got.Msg != skelErr.Msg || got.Details != skelErr.Details {
				t.Fatalf("CheckCall = %#v, skel = %#v", got, skelErr)
			}
		})
	}
}

// runSkel runs skel's dispatcher on req and reports its error and whether it called the plugin.
// CNI_NETNS_OVERRIDE is set so skel skips its check after ADD and DEL that CNI_NETNS is not this
// process's own namespace: CheckCall is the checks before the call; the agent's own-namespace
// rule has its own test (TestCommandServerOwnNamespace).
func runSkel(t *testing.T, req nodeapi.CNIRequest) (*types.Error, bool) {
	t.Helper()
	for k, v := range map[string]string{"CNI_COMMAND": req.Command, "CNI_CONTAINERID": req.ContainerID, "CNI_NETNS": req.Netns,
		"CNI_IFNAME": req.IfName, "CNI_ARGS": req.Args, "CNI_PATH": req.Path, "CNI_NETNS_OVERRIDE": "1"} {
		t.Setenv(k, v)
	}
	in := filepath.Join(t.TempDir(), "stdin")
	if err := os.WriteFile(in, req.StdinData, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	saved := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = saved }()
	called := false
	call := func(*skel.CmdArgs) error { called = true; return nil }
	e := skel.PluginMainFuncsWithError(skel.CNIFuncs{Add: call, Del: call, Check: call}, SupportedVersions, "test")
	return e, called
}
