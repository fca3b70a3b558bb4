package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/google/go-cmp/cmp"

	"github.com/terracenet/terrace/node/nodeapi"
)

// handOverCall records what run handed to the fallback.
type handOverCall struct {
	Stdin, Mode string
}

type runResult struct {
	status         int
	stdout, stderr string
	handedOver     []handOverCall
}

// runShim runs one invocation with env as the whole environment; handOverErr is what the fallback's
// exec returns (it returns only on failure).
func runShim(t *testing.T, name string, env map[string]string, stdin string, handOverErr error) runResult {
	t.Helper()
	var out, errOut bytes.Buffer
	var r runResult
	e := environment{
		getenv: func(k string) string { return env[k] },
		stdin:  strings.NewReader(stdin), stdout: &out, stderr: &errOut,
		handOver: func(in []byte, mode string) error {
			r.handedOver = append(r.handedOver, handOverCall{Stdin: string(in), Mode: mode})
			return handOverErr
		},
	}
	r.status = e.run(name)
	r.stdout, r.stderr = out.String(), errOut.String()
	return r
}

// VERSION prints exactly what skel prints for the same versions.
func TestRunVersionMatchesSkel(t *testing.T) {
	var want bytes.Buffer
	if err := version.PluginSupports(SupportedVersions...).Encode(&want); err != nil {
		t.Fatal(err)
	}
	if CurrentVersion != version.Current() {
		t.Errorf("CurrentVersion %s, the CNI library's %s", CurrentVersion, version.Current())
	}
	for _, name := range []string{"terrace-cni", IPAMName} {
		r := runShim(t, name, map[string]string{"CNI_COMMAND": "VERSION"}, "not read", nil)
		if r.status != 0 || r.stdout != want.String() || len(r.handedOver) != 0 {
			t.Errorf("%s VERSION: status %d, stdout %q, handed over %v; want 0, %q", name, r.status, r.stdout, r.handedOver, want.String())
		}
	}
}

func TestRunWithoutCommandPrintsAbout(t *testing.T) {
	for name, about := range map[string]string{"terrace-cni": About[""], IPAMName: About[IPAMName]} {
		r := runShim(t, name, nil, "", nil)
		want := about + "\nCNI protocol versions supported: 0.4.0, 1.0.0, 1.1.0\n"
		if r.status != 0 || r.stdout != "" || r.stderr != want {
			t.Errorf("%s without CNI_COMMAND: status %d, stdout %q, stderr %q; want 0, nothing, %q", name, r.status, r.stdout, r.stderr, want)
		}
	}
}

// Commands the shim does not send, and configurations it cannot read, go to the complete plugin,
// with the standard input the runtime gave; if that cannot run, the runtime is told to try again.
func TestRunHandsOver(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "cni.log")
	conf := `{"cniVersion":"1.1.0","name":"n","log_file_path":"` + logFile + `","node_socket":"/nonexistent/node.sock"}`
	tests := []struct {
		name, cmd, stdin, wantMode string
	}{
		{"GC", "GC", conf, FallbackUseAgent},
		{"STATUS", "STATUS", conf, FallbackUseAgent},
		{"unknown command: the fallback says so", "BOGUS", conf, FallbackUseAgent},
		{"configuration not JSON: the fallback says what is wrong", "ADD", `{"name":`, FallbackUseAgent},
		{"no agent", "ADD", conf, FallbackNoAgent},
		{"no agent, DEL", "DEL", conf, FallbackNoAgent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"CNI_COMMAND": tc.cmd, "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
			r := runShim(t, "terrace-cni", env, tc.stdin, nil)
			if diff := cmp.Diff([]handOverCall{{tc.stdin, tc.wantMode}}, r.handedOver); diff != "" {
				t.Errorf("hand-over (-want +got):\n%s", diff)
			}
			// Here the exec "returned": it failed.
			r = runShim(t, "terrace-cni", env, tc.stdin, errors.New("exec: no such file"))
			var ce types.Error
			if r.status != 1 || json.Unmarshal([]byte(r.stdout), &ce) != nil || ce.Code != types.ErrTryAgainLater || !strings.Contains(ce.Msg, "no such file") {
				t.Errorf("failed hand-over: status %d, stdout %q; want 1 and CNI error %d", r.status, r.stdout, types.ErrTryAgainLater)
			}
		})
	}
	data, err := os.ReadFile(logFile)
	if err != nil || !strings.Contains(string(data), `msg="node agent did not take the command; handing it to terrace-cni-etcd"`) ||
		!strings.Contains(string(data), "via=terrace-cni") {
		t.Errorf("plugin log %q (%v) does not record the hand-over", data, err)
	}
}

// ADD, DEL and CHECK go to the agent with the whole invocation; its result or CNI error is
// printed as skel prints them, and what it does not take goes to the fallback.
func TestRunForwards(t *testing.T) {
	result := `{"cniVersion":"1.1.0","ips":[{"address":"198.18.0.5/32"}]}`
	tests := []struct {
		name       string
		answer     func(w http.ResponseWriter)
		wantStatus int
		wantStdout string
		wantMode   string // hand-over expected
	}{
		{"result", func(w http.ResponseWriter) { answer(w, 200, nodeapi.CNIResponse{Result: []byte(result)}) }, 0, result, ""},
		{"CNI error", func(w http.ResponseWriter) {
			answer(w, 200, nodeapi.CNIResponse{Error: &nodeapi.CNIError{Code: 7, Msg: "missing network name"}})
		}, 1, skelPrint(t, types.NewError(7, "missing network name", "")), ""},
		{"CNI error with details", func(w http.ResponseWriter) {
			answer(w, 200, nodeapi.CNIResponse{Error: &nodeapi.CNIError{Code: 1, Msg: "incompatible CNI versions", Details: "config is \"9.9.9\""}})
		}, 1, skelPrint(t, types.NewError(1, "incompatible CNI versions", "config is \"9.9.9\"")), ""},
		{"not ready", func(w http.ResponseWriter) { answer(w, 503, nodeapi.APIError{Code: nodeapi.CodeUnavailable}) }, 0, "", FallbackNoAgent},
		{"older agent", func(w http.ResponseWriter) { answer(w, 404, nodeapi.APIError{Code: nodeapi.CodeNotFound}) }, 0, "", FallbackUseAgent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got nodeapi.CNIRequest
			sock := agent(t, func(w http.ResponseWriter, r *http.Request) {
				_ = json.NewDecoder(r.Body).Decode(&got)
				tc.answer(w)
			})
			conf := `{"cniVersion":"1.1.0","name":"n","node_socket":"` + sock + `","log_file_path":"` + filepath.Join(t.TempDir(), "l.log") + `"}`
			env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0",
				"CNI_ARGS": "K8S_POD_NAME=p", "CNI_PATH": "/opt/cni/bin", "CNI_NETNS_OVERRIDE": "true", "TERRACE_NODE_NAME": "host-a"}
			r := runShim(t, IPAMName, env, conf, nil)
			if tc.wantMode != "" {
				if diff := cmp.Diff([]handOverCall{{conf, tc.wantMode}}, r.handedOver); diff != "" {
					t.Errorf("hand-over (-want +got):\n%s", diff)
				}
				return
			}
			if r.status != tc.wantStatus || r.stdout != tc.wantStdout || len(r.handedOver) != 0 {
				t.Errorf("status %d, stdout %q, handed over %v; want %d, %q", r.status, r.stdout, r.handedOver, tc.wantStatus, tc.wantStdout)
			}
			want := nodeapi.CNIRequest{Plugin: IPAMName, Command: "ADD", ContainerID: "c1", Netns: "/proc/self/ns/net", IfName: "eth0",
				Args: "K8S_POD_NAME=p", Path: "/opt/cni/bin", StdinData: []byte(conf), Env: map[string]string{"TERRACE_NODE_NAME": "host-a"},
				Hostname: got.Hostname, PluginPid: os.Getpid(), NetnsDev: got.NetnsDev, NetnsIno: got.NetnsIno, NetnsOverride: "true", Unchecked: true}
			if diff := cmp.Diff(want, got); diff != "" || got.NetnsIno == 0 {
				t.Errorf("the agent got (-want +got):\n%s (namespace inode %d)", diff, got.NetnsIno)
			}
		})
	}
}

// skelPrint is what the CNI library prints for e.
func skelPrint(t *testing.T, e *types.Error) string {
	t.Helper()
	out, err := json.MarshalIndent(e, "", "    ")
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// The shim's log lines read as the complete plugin's (log/slog's text handler).
func TestLogLineMatchesSlog(t *testing.T) {
	for _, v := range []string{"plain", "", "with space", `quo"te`, "a=b", "tab\there", "new\nline", "ünïcödé", "nbsp\u00a0x",
		"bidi\u202ex", `back\slash`, "bad\xffutf8", "\x7f", "/var/run/terrace/node.sock"} {
		if got, want := logLine(time.Date(2026, 12, 4, 10, 0, 0, 123456789, time.UTC), "msg "+v, "k", v), slogLine(t, "msg "+v, v); got != want {
			t.Errorf("value %q:\n got %s\nwant %s", v, got, want)
		}
	}
}

func FuzzLogLine(f *testing.F) {
	f.Add("message", "value")
	f.Add("", "a b")
	f.Fuzz(func(t *testing.T, msg, v string) {
		if got, want := logLine(time.Date(2026, 12, 4, 10, 0, 0, 123456789, time.UTC), msg, "k", v), slogLine(t, msg, v); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})
}

func slogLine(t *testing.T, msg, v string) string {
	var b bytes.Buffer
	rec := slog.NewRecord(time.Date(2026, 12, 4, 10, 0, 0, 123456789, time.UTC), slog.LevelInfo, msg, 0)
	rec.AddAttrs(slog.String("k", v))
	if err := slog.NewTextHandler(&b, nil).Handle(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// A request that asks for specific addresses says so, so an agent that predates them refuses it
// (unknown field) instead of giving the pod other addresses.
func TestRunMarksRequestedAddresses(t *testing.T) {
	tests := []struct {
		name, extra, cniArgs string
		want                 bool
	}{
		{"none", "", "K8S_POD_NAME=p", false},
		{"empty lists", `,"runtimeConfig":{"ips":[]},"args":{"cni":{"ips":[],"labels":[{"key":"a","value":"b"}]}}`, "", false},
		{"runtimeConfig", `,"runtimeConfig":{"ips":["198.18.0.5/24"]}`, "", true},
		{"args", `,"args":{"cni":{"ips":["198.18.0.5"]}}`, "", true},
		{"CNI_ARGS", "", "IgnoreUnknown=1;IP=198.18.0.5", true},
		{"CNI_ARGS other key", "", "IgnoreUnknown=1;IPS=198.18.0.5;K8S_POD_IP=x", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got nodeapi.CNIRequest
			sock := agent(t, func(w http.ResponseWriter, r *http.Request) {
				_ = json.NewDecoder(r.Body).Decode(&got)
				answer(w, 200, nodeapi.CNIResponse{Result: []byte(`{}`)})
			})
			conf := `{"cniVersion":"1.1.0","name":"n","node_socket":"` + sock + `","log_file_path":"` + filepath.Join(t.TempDir(), "l.log") + `"` + tc.extra + `}`
			env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0", "CNI_ARGS": tc.cniArgs}
			if r := runShim(t, "terrace-cni", env, conf, nil); r.status != 0 || len(r.handedOver) != 0 {
				t.Fatalf("status %d, handed over %v", r.status, r.handedOver)
			}
			if got.RequestsAddresses != tc.want {
				t.Errorf("requestsAddresses = %v, want %v", got.RequestsAddresses, tc.want)
			}
		})
	}
}

// TestRunHugePolicyWaitStillForwards: a policy_setup_timeout_seconds so large that adding it to the
// command's budget would overflow into the past must not make every command fail unsent; the agent
// (which refuses the value for ADD) gets the command and answers.
func TestRunHugePolicyWaitStillForwards(t *testing.T) {
	for _, secs := range []string{"10000000000", "-100"} {
		var got int
		sock := agent(t, func(w http.ResponseWriter, r *http.Request) {
			got++
			answer(w, 200, nodeapi.CNIResponse{Result: []byte(`{}`)})
		})
		conf := `{"cniVersion":"1.1.0","name":"n","policy_setup_timeout_seconds":` + secs + `,"node_socket":"` + sock +
			`","log_file_path":"` + filepath.Join(t.TempDir(), "l.log") + `"}`
		env := map[string]string{"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}
		r := runShim(t, "", env, conf, nil)
		if r.status != 0 || got != 1 {
			t.Errorf("policy wait %s s: status %d, stdout %q, agent asked %d times; want the command forwarded once", secs, r.status, r.stdout, got)
		}
	}
}

// TestRunUnsentRequestHandedOver: a request the agent cannot have received whole (it read a little
// and closed, as after refusing an oversized body) was not started, so the fallback does the
// command instead of the runtime getting "try again later" for ever.
func TestRunUnsentRequestHandedOver(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "node.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 512)
			_, _ = c.Read(buf)
			c.Close()
		}
	}()
	big := strings.Repeat("x", 8<<20) // far more than the socket buffers hold
	conf := `{"cniVersion":"1.1.0","name":"n","node_socket":"` + sock + `","log_file_path":"` +
		filepath.Join(t.TempDir(), "l.log") + `","pad":"` + big + `"}`
	env := map[string]string{"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}
	r := runShim(t, "", env, conf, nil)
	if len(r.handedOver) != 1 || r.handedOver[0].Mode != FallbackNoAgent {
		t.Fatalf("status %d, stdout %.200q, handed over %d times; want one hand-over to the fallback", r.status, r.stdout, len(r.handedOver))
	}
}

// TestRunNotUTF8HandedOver: a CNI variable that is not valid UTF-8 would reach the agent altered
// (the request is JSON), so the command goes to the fallback, which reads the environment itself;
// the agent is not asked.
func TestRunNotUTF8HandedOver(t *testing.T) {
	for _, v := range []string{"CNI_ARGS", "CNI_CONTAINERID", "CNI_NETNS", "CNI_PATH"} {
		t.Run(v, func(t *testing.T) {
			var asked int
			sock := agent(t, func(w http.ResponseWriter, r *http.Request) {
				asked++
				answer(w, 200, nodeapi.CNIResponse{Result: []byte(`{}`)})
			})
			conf := `{"cniVersion":"1.1.0","name":"n","node_socket":"` + sock + `","log_file_path":"` +
				filepath.Join(t.TempDir(), "l.log") + `"}`
			env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/var/run/netns/p"}
			env[v] += "\xff"
			r := runShim(t, "", env, conf, nil)
			if asked != 0 || len(r.handedOver) != 1 || r.handedOver[0].Mode != FallbackNoAgent || r.handedOver[0].Stdin != conf {
				t.Errorf("agent asked %d times, handed over %+v; want one hand-over without the agent, stdin intact", asked, r.handedOver)
			}
		})
	}
	// Valid UTF-8 beyond ASCII is forwarded as it is.
	var asked int
	sock := agent(t, func(w http.ResponseWriter, r *http.Request) {
		asked++
		answer(w, 200, nodeapi.CNIResponse{Result: []byte(`{}`)})
	})
	conf := `{"cniVersion":"1.1.0","name":"n","node_socket":"` + sock + `","log_file_path":"` + filepath.Join(t.TempDir(), "l.log") + `"}`
	r := runShim(t, "", map[string]string{"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_ARGS": "K8S_POD_NAME=café"}, conf, nil)
	if asked != 1 || len(r.handedOver) != 0 {
		t.Errorf("UTF-8 CNI_ARGS: agent asked %d times, handed over %d; want forwarded", asked, len(r.handedOver))
	}
}
