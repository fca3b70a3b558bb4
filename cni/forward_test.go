package cni

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/terracenet/terrace/node/nodeapi"
)

// TestViaAgentMarksRequestedAddresses: terrace-cni-etcd run as the plugin marks a command that
// asks for specific addresses as the shim does, so an agent that predates them refuses it instead
// of giving the pod others; one that does not ask is not marked.
func TestViaAgentMarksRequestedAddresses(t *testing.T) {
	cases := []struct {
		name  string
		extra string
		args  string
		want  bool
	}{
		{"automatic", "", "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0", false},
		{"runtimeConfig.ips", `,"runtimeConfig":{"ips":["198.18.0.7"]}`, "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0", true},
		{"args.cni.ips", `,"args":{"cni":{"ips":["198.18.0.7"]}}`, "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0", true},
		{"CNI_ARGS IP", "", "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0;IP=198.18.0.7", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan nodeapi.CNIRequest, 1)
			sock := filepath.Join(t.TempDir(), "node.sock")
			ln, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var req nodeapi.CNIRequest
				if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
					t.Errorf("decode request: %v", err)
				}
				got <- req
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(nodeapi.CNIResponse{Result: []byte(`{"cniVersion":"1.1.0"}`)})
			})}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })

			h := newHarness()
			h.p.UseAgent = true
			a := cmdArgs("c1", conf(`,"node_socket":"`+sock+`"`+tc.extra))
			a.Args = tc.args
			if err := h.p.Add(a); err != nil {
				t.Fatal(err)
			}
			req := <-got
			if req.RequestsAddresses != tc.want || req.Unchecked {
				t.Errorf("request marked requestsAddresses=%v unchecked=%v, want %v and false", req.RequestsAddresses, req.Unchecked, tc.want)
			}
			if len(h.be.allocs) != 0 {
				t.Errorf("the plugin assigned addresses itself though the agent took the command: %v", h.be.allocs)
			}
		})
	}
}
