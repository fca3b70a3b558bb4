package node

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/terracenet/terrace/datastore/embedded"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/node/nodeapi"
)

// ctxWatcher is a component that records when its context ends.
type ctxWatcher struct{ stopped atomic.Int64 }

func (c *ctxWatcher) Name() string { return "watcher" }
func (c *ctxWatcher) Run(ctx context.Context, _ ComponentEnv) error {
	<-ctx.Done()
	c.stopped.Store(time.Now().UnixNano())
	return nil
}

// TestRunDrainsCNICommandsBeforeStopping: on SIGTERM a CNI command in flight finishes with the
// local API and the components still running, a new one is refused as "stopping" (the plugin
// then does it itself), and only then do the components and the server stop; Run returns nil.
func TestRunDrainsCNICommandsBeforeStopping(t *testing.T) {
	srv := embedded.StartForTest(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "node.sock")
	started, release := make(chan struct{}), make(chan struct{})
	var finished atomic.Int64
	comp := &ctxWatcher{}
	cfg := Config{
		NodeName: "host-a", IPv4: "192.0.2.10/24", Etcd: kv.Config{Endpoints: srv.Endpoints()},
		Socket: sock, StateDir: filepath.Join(dir, "state"), RunDir: filepath.Join(dir, "run"),
		Lister: fakeLister{ifs: hostIfs}, Components: []Component{comp},
		CNI: func(string, http.Handler) CommandRunner {
			return func(_ context.Context, req nodeapi.CNIRequest) (nodeapi.CNIResponse, error) {
				if req.ContainerID == "first" {
					close(started)
					<-release
					finished.Store(time.Now().UnixNano())
				}
				return nodeapi.CNIResponse{Result: []byte(`{}`)}, nil
			}
		},
	}
	ctx, signal := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, embedded.TestLogger()) }()

	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	post := func(cid string) (int, string, error) {
		body, _ := json.Marshal(nodeapi.CNIRequest{Command: "ADD", ContainerID: cid, IfName: "eth0", StdinData: []byte("{}")})
		resp, err := client.Post("http://node/v1/cni", "application/json", bytes.NewReader(body))
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data), nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if status, _, err := post("probe"); err == nil && status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent never ran a command")
		}
		time.Sleep(50 * time.Millisecond)
	}
	first := make(chan int, 1)
	go func() {
		status, _, err := post("first")
		if err != nil {
			t.Errorf("the command in flight: %v", err)
		}
		first <- status
	}()
	<-started
	signal()
	var status int
	var body string
	var err error
	// The drain starts once Run has seen the signal, which a loaded machine may delay.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if status, body, err = post("second"); err != nil || status == http.StatusServiceUnavailable {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || status != http.StatusServiceUnavailable || !bytes.Contains([]byte(body), []byte(nodeapi.CodeStopping)) {
		t.Errorf("a command while stopping: %d %s %v, want 503 stopping", status, body, err)
	}
	if comp.stopped.Load() != 0 {
		t.Error("components stopped while a CNI command was running")
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	if s := <-first; s != http.StatusOK {
		t.Errorf("the command in flight was answered %d, want 200", s)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	if s, f := comp.stopped.Load(), finished.Load(); s == 0 || s < f {
		t.Errorf("components stopped at %d, the command finished at %d: want after", s, f)
	}
	if _, _, err := post("late"); err == nil {
		t.Error("the socket still answers after Run returned")
	}
}
