package cni

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/embedded"
	"github.com/terracenet/terrace/ipam"
	"github.com/terracenet/terrace/node"

	"github.com/terracenet/terrace/cni/shim"
	"github.com/terracenet/terrace/node/nodeapi"
)

// TestShimSendsEveryConfigVariable: the agent resolves the configuration with the plugin's
// TERRACE_* variables, so the shim must send every one the configuration reads.
func TestShimSendsEveryConfigVariable(t *testing.T) {
	read := []string{EnvEtcdEndpoints, EnvEtcdCA, EnvEtcdCert, EnvEtcdKey, EnvNodeName, EnvNodeSocket, EnvLogLevel, EnvLogFile}
	for _, k := range read {
		if !slices.Contains(shim.TerraceEnv, k) {
			t.Errorf("the configuration reads %s but the shim does not send it", k)
		}
	}
}

// TestCommandServerRefuses: what the agent does not start comes back as a refusal with the code
// the plugin acts on, and a configuration that does not parse as the CNI error the plugin prints.
func TestCommandServerRefuses(t *testing.T) {
	dp := newFakeDataplane()
	s := &CommandServer{Node: "host-a", Dataplane: dp}
	conf := []byte(`{"cniVersion":"1.1.0","name":"net1","type":"terrace","nodename":"host-a"}`)
	tests := []struct {
		name     string
		req      nodeapi.CNIRequest
		wantCode string // a refusal's API code
		wantCNI  uint   // or the CNI error code in the answer
	}{
		{"GC is not run here", nodeapi.CNIRequest{Command: "GC", StdinData: conf}, nodeapi.CodeInvalid, 0},
		{"no command", nodeapi.CNIRequest{StdinData: conf}, nodeapi.CodeInvalid, 0},
		{"failure point without failure points", nodeapi.CNIRequest{Command: "ADD", StdinData: conf, FailAt: "veth"}, nodeapi.CodeInvalid, 0},
		{"another node's network", nodeapi.CNIRequest{Command: "ADD", StdinData: []byte(`{"cniVersion":"1.1.0","name":"net1","type":"terrace","nodename":"host-b"}`)}, nodeapi.CodeWrongNode, 0},
		{"node from the plugin's environment", nodeapi.CNIRequest{Command: "DEL", Env: map[string]string{EnvNodeName: "host-b"}, StdinData: []byte(`{"cniVersion":"1.1.0","name":"net1","type":"terrace"}`)}, nodeapi.CodeWrongNode, 0},
		{"node from the plugin's host name", nodeapi.CNIRequest{Command: "DEL", Hostname: "HOST-B", StdinData: []byte(`{"cniVersion":"1.1.0","name":"net1","type":"terrace"}`)}, nodeapi.CodeWrongNode, 0},
		{"namespace the agent cannot see", nodeapi.CNIRequest{Command: "ADD", Netns: "/nonexistent/netns", StdinData: conf}, nodeapi.CodeUnavailable, 0},
		{"configuration not JSON", nodeapi.CNIRequest{Command: "ADD", StdinData: []byte(`{`)}, "", types.ErrDecodingFailure},
		{"configuration without a name", nodeapi.CNIRequest{Command: "ADD", StdinData: []byte(`{"cniVersion":"1.1.0","nodename":"host-a"}`)}, "", types.ErrInvalidNetworkConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := s.Run(context.Background(), tc.req)
			if tc.wantCode != "" {
				var ref *nodeapi.Refusal
				if !errors.As(err, &ref) || ref.Code != tc.wantCode || ref.Message == "" {
					t.Fatalf("Run = %+v, %v; want a refusal with code %s", resp, err, tc.wantCode)
				}
				return
			}
			if err != nil || resp.Error == nil || resp.Error.Code != tc.wantCNI || resp.Error.Msg == "" {
				t.Fatalf("Run = %+v, %v; want CNI error %d", resp, err, tc.wantCNI)
			}
		})
	}
	if len(dp.links) != 0 || len(dp.removed) != 0 {
		t.Errorf("refused commands touched the dataplane: links %v, removed %v", dp.links, dp.removed)
	}
}

// TestCommandServerRunsCommands: ADD, CHECK and DEL run by the agent against a real etcd, with the
// datastore calls going to the agent's own API in memory; a failure at a step undoes the ADD.
func TestCommandServerRunsCommands(t *testing.T) {
	st, ds := testStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool := &api.IPPool{TypeMeta: api.TypeMeta{Kind: "IPPool", APIVersion: api.GroupVersion},
		Metadata: api.ObjectMeta{Name: "p4"}, Spec: api.IPPoolSpec{CIDR: "198.18.0.0/26", BlockSize: 28}}
	if _, err := ds.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	a := node.NewDatastoreAPI("host-a", embedded.TestLogger())
	a.SetDatastore(st, ds)
	dp := newFakeDataplane(testNS)
	s := &CommandServer{Node: "host-a", Dataplane: dp, Datastore: a.Handler(http.NotFoundHandler()), FailPoints: true}
	logFile := filepath.Join(t.TempDir(), "cni.log")
	stdin := []byte(`{"cniVersion":"1.1.0","name":"net1","type":"terrace","nodename":"host-a","log_file_path":"` + logFile + `"}`)
	run := func(cmd, cid, failAt string, stdin []byte) nodeapi.CNIResponse {
		t.Helper()
		resp, err := s.Run(ctx, nodeapi.CNIRequest{Command: cmd, ContainerID: cid, Netns: testNS, IfName: "eth0",
			Args: "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-" + cid, StdinData: stdin, FailAt: failAt})
		if err != nil {
			t.Fatalf("%s %s refused: %v", cmd, cid, err)
		}
		return resp
	}
	endpoints := func() int {
		t.Helper()
		rs, err := ds.List(ctx, "WorkloadEndpoint", "")
		if err != nil {
			t.Fatal(err)
		}
		return len(rs)
	}

	resp := run("ADD", "c1", "", stdin)
	if resp.Error != nil {
		t.Fatalf("ADD: %+v", resp.Error)
	}
	res, err := current.NewResultFromResult(mustResult(t, resp.Result))
	if err != nil || len(res.IPs) != 1 || !netip.MustParsePrefix("198.18.0.0/26").Contains(netip.MustParseAddr(res.IPs[0].Address.IP.String())) {
		t.Fatalf("ADD result %s (%v): want one address of the pool", resp.Result, err)
	}
	if n := endpoints(); n != 1 {
		t.Fatalf("%d workload endpoints after ADD, want 1", n)
	}
	check := []byte(strings.TrimSuffix(string(stdin), "}") + `,"prevResult":` + string(resp.Result) + "}")
	if resp := run("CHECK", "c1", "", check); resp.Error != nil {
		t.Fatalf("CHECK: %+v", resp.Error)
	}
	for _, cid := range []string{"c1", "c1"} {
		if resp := run("DEL", cid, "", stdin); resp.Error != nil {
			t.Fatalf("DEL: %+v", resp.Error)
		}
	}
	if resp := run("ADD", "c2", "endpoint", stdin); resp.Error == nil || !strings.Contains(resp.Error.Msg, "injected failure") {
		t.Fatalf("ADD failing at the endpoint step: %+v, want the injected failure", resp.Error)
	}
	if n := endpoints(); n != 0 || len(dp.links) != 0 {
		t.Fatalf("after DEL: %d endpoints, links %v; want nothing", n, dp.links)
	}
	blocks, _, err := st.List(ctx, ipam.BlockPrefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		blk, err := ipam.DecodeBlock(b.Value)
		if err != nil {
			t.Fatal(err)
		}
		if got := blk.Allocated(); len(got) != 0 {
			t.Errorf("block %s still holds %v after the failed ADD and the DEL", b.Key, got)
		}
	}
	data, err := os.ReadFile(logFile)
	if err != nil || strings.Count(string(data), "backend=agent") < 4 || strings.Contains(string(data), "startup=") {
		t.Errorf("the agent's log of the commands (%v):\n%s\nwant backend=agent on each and no process start-up", err, data)
	}
}

func mustResult(t *testing.T, data []byte) types.Result {
	t.Helper()
	r, err := current.NewResult(data)
	if err != nil {
		t.Fatalf("parse result %s: %v", data, err)
	}
	return r
}
