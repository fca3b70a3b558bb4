package shim

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/terracenet/terrace/node/nodeapi"
)

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name, raw  string
		wantStatus int
		wantBody   string
		wantErr    string
	}{
		{"with length", "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", 200, "{}", ""},
		{"without length, to EOF", "HTTP/1.1 404 Not Found\r\nX: y\r\n\r\nnot here\n", 404, "not here\n", ""},
		{"no headers", "HTTP/1.0 503 Service Unavailable\r\n\r\n", 503, "", ""},
		{"length case-insensitive", "HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nabc", 200, "abc", ""},
		{"cut off", "HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0, "", "Content-Length says 10"},
		{"longer than said", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nabc", 0, "", "Content-Length says 1"},
		{"bad length", "HTTP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n", 0, "", "bad Content-Length"},
		{"no end of headers", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n", 0, "", "no end of headers"},
		{"empty", "", 0, "", "no end of headers"},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", 0, "", "is not HTTP/1.x"},
		{"HTTP/2 line", "HTTP/2 200\r\n\r\n", 0, "", "is not HTTP/1.x"},
		{"bad code", "HTTP/1.0 2x0 OK\r\n\r\n", 0, "", "bad status code"},
		{"short code", "HTTP/1.0 20 OK\r\n\r\n", 0, "", "bad status code"},
		{"header without colon", "HTTP/1.0 200 OK\r\nbroken\r\n\r\n", 0, "", "has no colon"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body, err := parseResponse([]byte(tc.raw))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseResponse = %d %q %v, want error containing %q", status, body, err, tc.wantErr)
				}
				return
			}
			if err != nil || status != tc.wantStatus || string(body) != tc.wantBody {
				t.Fatalf("parseResponse = %d %q %v, want %d %q", status, body, err, tc.wantStatus, tc.wantBody)
			}
		})
	}
}

func FuzzParseResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"))
	f.Add([]byte("HTTP/1.1 404 Not Found\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		status, body, err := parseResponse(raw)
		if err != nil {
			return
		}
		if status < 100 || status > 999 {
			t.Fatalf("status %d accepted", status)
		}
		if !bytes.HasSuffix(raw, body) || !bytes.HasPrefix(raw, []byte("HTTP/1.")) {
			t.Fatalf("body %q is not the end of an HTTP/1.x answer %q", body, raw)
		}
	})
}

// agent serves h on a fresh unix socket, as terrace-node's local API would.
func agent(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "node.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func answer(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func TestForward(t *testing.T) {
	result := []byte(`{"cniVersion":"1.1.0","ips":[{"address":"198.18.0.5/32"}]}`)
	tests := []struct {
		name       string
		serve      http.HandlerFunc
		noSocket   bool
		wantTaken  bool
		wantUsable bool
		wantResult []byte
		wantCode   uint // 0: no error
		wantMsg    string
	}{
		{name: "result", serve: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 200, nodeapi.CNIResponse{Result: result})
		}, wantTaken: true, wantResult: result},
		{name: "the command's CNI error", serve: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 200, nodeapi.CNIResponse{Error: &nodeapi.CNIError{Code: 101, Msg: "pools exhausted", Details: "p4"}})
		}, wantTaken: true, wantCode: 101, wantMsg: "pools exhausted"},
		{name: "no agent", noSocket: true},
		{name: "agent without commands", serve: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 404, nodeapi.APIError{Code: nodeapi.CodeNotFound, Message: "this agent does not run CNI commands"})
		}, wantUsable: true},
		{name: "not connected to etcd", serve: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 503, nodeapi.APIError{Code: nodeapi.CodeUnavailable, Message: "not connected"})
		}},
		{name: "another node's agent", serve: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 403, nodeapi.APIError{Code: nodeapi.CodeWrongNode, Message: "serves host-b"})
		}},
		{name: "refused as malformed (a newer plugin)", serve: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 400, nodeapi.APIError{Code: nodeapi.CodeInvalid, Message: "unknown field"})
		}, wantUsable: true},
		{name: "namespace the agent cannot see", serve: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 422, nodeapi.APIError{Code: nodeapi.CodeNetnsUnseen, Message: "does not see it"})
		}, wantUsable: true},
		{name: "agent stopping", serve: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 503, nodeapi.APIError{Code: nodeapi.CodeStopping, Message: "terrace-node is stopping"})
		}},
		{name: "agent failed", serve: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 500, nodeapi.APIError{Code: nodeapi.CodeInternal, Message: "boom"})
		}, wantTaken: true, wantCode: types.ErrTryAgainLater, wantMsg: "node agent failed the command"},
		{name: "connection lost before the answer", serve: func(w http.ResponseWriter, r *http.Request) {
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close()
			}
		}, wantTaken: true, wantCode: types.ErrTryAgainLater, wantMsg: "partly done"},
		{name: "garbage answer", serve: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			w.Write([]byte("not json"))
		}, wantTaken: true, wantCode: types.ErrTryAgainLater, wantMsg: "decode the node agent's answer"},
		{name: "answer cut off", serve: func(w http.ResponseWriter, r *http.Request) {
			// Longer than the server buffers, so no Content-Length: only the JSON shows the cut.
			c, bw, err := w.(http.Hijacker).Hijack()
			if err == nil {
				bw.WriteString("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"result\":\"" + strings.Repeat("A", 4096))
				bw.Flush()
				c.Close()
			}
		}, wantTaken: true, wantCode: types.ErrTryAgainLater, wantMsg: "partly done"},
		{name: "caller not allowed to change state (not root)", serve: func(w http.ResponseWriter, r *http.Request) {
			answer(w, 403, nodeapi.APIError{Code: nodeapi.CodeForbidden, Message: "only root may change state"})
		}},
	}
	req := nodeapi.CNIRequest{Command: "ADD", ContainerID: "c1", Netns: "/run/netns/p", IfName: "eth0", StdinData: []byte(`{"cniVersion":"1.1.0"}`)}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "none.sock")
			if !tc.noSocket {
				sock = agent(t, func(w http.ResponseWriter, r *http.Request) {
					var got nodeapi.CNIRequest
					if r.Method != http.MethodPost || r.URL.Path != "/v1/cni" || json.NewDecoder(r.Body).Decode(&got) != nil {
						answer(w, 400, nodeapi.APIError{Code: nodeapi.CodeInvalid, Message: "unexpected request " + r.Method + " " + r.URL.Path})
						return
					}
					if diff := cmp.Diff(req, got); diff != "" {
						t.Errorf("the agent got another request (-sent +got):\n%s", diff)
					}
					tc.serve(w, r)
				})
			}
			res, taken, why, err := Forward(time.Now().Add(10*time.Second), sock, req)
			if taken != tc.wantTaken || why.AgentUsable != tc.wantUsable {
				t.Fatalf("taken %v (usable %v, %q), want %v (usable %v)", taken, why.AgentUsable, why.Reason, tc.wantTaken, tc.wantUsable)
			}
			if !taken {
				if why.Reason == "" || err != nil || res != nil {
					t.Errorf("not taken: reason %q, err %v, result %q; want a reason only", why.Reason, err, res)
				}
				return
			}
			if tc.wantCode == 0 {
				if err != nil || !bytes.Equal(res, tc.wantResult) {
					t.Fatalf("Forward = %q, %v; want %q", res, err, tc.wantResult)
				}
				return
			}
			if err == nil || err.Code != tc.wantCode || !strings.Contains(err.Msg, tc.wantMsg) {
				t.Fatalf("Forward error %v, want CNI code %d with %q", err, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

func TestRequestCarriesTheEnvironment(t *testing.T) {
	env := map[string]string{"TERRACE_NODE_NAME": "host-a", EnvNodeSocket: "/s.sock", "UNRELATED": "x"}
	args := Args{ContainerID: "c", Netns: "/n", IfName: "eth0", Args: "K8S_POD_NAME=p", Path: "/opt/cni/bin", StdinData: []byte("{}")}
	got := Request("DEL", args, func(k string) string { return env[k] }, "veth")
	want := nodeapi.CNIRequest{Command: "DEL", ContainerID: "c", Netns: "/n", IfName: "eth0", Args: "K8S_POD_NAME=p", Path: "/opt/cni/bin",
		StdinData: []byte("{}"), Env: map[string]string{"TERRACE_NODE_NAME": "host-a", EnvNodeSocket: "/s.sock"}, FailAt: "veth", Hostname: got.Hostname,
		PluginPid: os.Getpid()}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	if got.Hostname == "" {
		t.Error("the request carries no host name (the default node name)")
	}
	// The namespace is identified as the plugin sees it: here, this process's own.
	args.Netns = "/proc/self/ns/net"
	got = Request("ADD", args, func(string) string { return "" }, "")
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	if got.NetnsDev != st.Dev || got.NetnsIno != st.Ino || got.NetnsIno == 0 {
		t.Errorf("request identifies the namespace as %d:%d, want %d:%d", got.NetnsDev, got.NetnsIno, st.Dev, st.Ino)
	}
}

func TestReadConf(t *testing.T) {
	tests := []struct {
		name, conf, envSocket, wantSocket, wantLog string
		wantValid                                  bool
	}{
		{"defaults", `{}`, "", DefaultNodeSocket, DefaultLogFile, true},
		{"environment", `{}`, "/env.sock", "/env.sock", DefaultLogFile, true},
		{"configuration wins", `{"node_socket":"/conf.sock","log_file_path":"/l.log"}`, "/env.sock", "/conf.sock", "/l.log", true},
		{"camel-case key", `{"nodeSocket":"/alt.sock"}`, "/env.sock", "/alt.sock", DefaultLogFile, true},
		{"not JSON: defaults still filled in", `{not json`, "/env.sock", "/env.sock", DefaultLogFile, false},
		{"wrong type", `{"node_socket":7}`, "", DefaultNodeSocket, DefaultLogFile, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvNodeSocket, tc.envSocket)
			t.Setenv(EnvLogFile, "")
			nc := readConf([]byte(tc.conf))
			if nc.NodeSocket != tc.wantSocket || nc.LogFilePath != tc.wantLog || nc.valid != tc.wantValid {
				t.Fatalf("readConf = %+v; want socket %s, log %s, valid %v", nc, tc.wantSocket, tc.wantLog, tc.wantValid)
			}
		})
	}
}

// The shim's own error codes are the spec's, which the CNI library names.
func TestErrorCodesAreTheSpecs(t *testing.T) {
	for _, c := range []struct{ shim, lib uint }{
		{ErrIOFailure, types.ErrIOFailure}, {ErrInternal, types.ErrInternal}, {ErrTryAgainLater, types.ErrTryAgainLater},
	} {
		if c.shim != c.lib {
			t.Errorf("shim code %d, CNI library %d", c.shim, c.lib)
		}
	}
}
