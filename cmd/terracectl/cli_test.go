package main

// These tests build the real terracectl and run it against an in-process embedded etcd.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/embedded"
	"github.com/terracenet/terrace/datastore/kv"
)

var ctlBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "terracectl-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctlBin = filepath.Join(dir, "terracectl")
	out, err := exec.Command("go", "build", "-o", ctlBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build terracectl: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// cli runs terracectl against one etcd with a clean environment and an empty config file, so the
// machine's /etc/terrace and TERRACE_* variables cannot change what is tested.
type cli struct {
	t         *testing.T
	endpoints string
	config    string
}

func newCLI(t *testing.T) (*cli, *embedded.Server) {
	t.Helper()
	srv := embedded.StartForTest(t)
	cfg := filepath.Join(t.TempDir(), "terracectl.yaml")
	if err := os.WriteFile(cfg, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return &cli{t: t, endpoints: strings.Join(srv.Endpoints(), ","), config: cfg}, srv
}

func (c *cli) run(stdin string, args ...string) result {
	c.t.Helper()
	full := append([]string{"--config", c.config, "--etcd-endpoints", c.endpoints}, args...)
	cmd := exec.Command(ctlBin, full...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + c.t.TempDir()}
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("run terracectl: %v", err)
	}
	return r
}

func (c *cli) mustRun(stdin string, args ...string) result {
	c.t.Helper()
	r := c.run(stdin, args...)
	if r.code != 0 {
		c.t.Fatalf("terracectl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// rawStore opens the etcd behind srv for reading and writing keys directly, closed at cleanup.
func rawStore(t *testing.T, srv *embedded.Server) *kv.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := kv.Open(ctx, kv.Config{Endpoints: srv.Endpoints()}, embedded.TestLogger())
	if err != nil {
		t.Fatalf("open etcd: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// storedKeys lists everything under /terrace/ straight from etcd.
func storedKeys(t *testing.T, srv *embedded.Server) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kvs, _, err := rawStore(t, srv).List(ctx, "/terrace/")
	if err != nil {
		t.Fatalf("list etcd: %v", err)
	}
	var keys []string
	for _, kv := range kvs {
		keys = append(keys, kv.Key)
	}
	return keys
}

func decodeOne(t *testing.T, data []byte) api.Resource {
	t.Helper()
	docs, err := api.Decode(data)
	if err != nil || len(docs) != 1 || docs[0].Err != nil {
		t.Fatalf("decode: %v %+v", err, docs)
	}
	return docs[0].Resource
}

// comparable strips what the datastore adds so a stored resource can be compared with its manifest.
func comparable(t *testing.T, r api.Resource) api.Resource {
	t.Helper()
	c, err := api.Clone(r)
	if err != nil {
		t.Fatal(err)
	}
	m := c.GetObjectMeta()
	m.ResourceVersion, m.UID, m.CreationTimestamp = "", "", ""
	return c
}

func TestRoundTripEveryKind(t *testing.T) {
	c, srv := newCLI(t)
	files, err := filepath.Glob("testdata/kinds/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	covered := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		want := decodeOne(t, data)
		info, err := api.KindOf(want)
		if err != nil {
			t.Fatal(err)
		}
		covered[info.Kind] = true
		api.SetDefaults(want)
		m := want.GetObjectMeta()
		ref := refOf(want)
		args := []string{info.Plural, m.Name}
		if m.Namespace != "" {
			args = append(args, "-n", m.Namespace)
		}
		t.Run(info.Kind, func(t *testing.T) {
			r := c.mustRun("", "apply", "-f", f)
			if got := strings.TrimSpace(r.stdout); got != ref+" created" {
				t.Errorf("first apply said %q, want %q", got, ref+" created")
			}
			r = c.mustRun(string(data), "apply", "-f", "-")
			if got := strings.TrimSpace(r.stdout); got != ref+" unchanged" {
				t.Errorf("second apply said %q, want %q", got, ref+" unchanged")
			}
			for _, format := range []string{"json", "yaml"} {
				r = c.mustRun("", append([]string{"get", "-o", format}, args...)...)
				var got api.Resource
				if format == "json" {
					var err error
					if got, err = api.Unmarshal([]byte(r.stdout)); err != nil {
						t.Fatalf("get -o json output: %v\n%s", err, r.stdout)
					}
				} else {
					got = decodeOne(t, []byte(r.stdout))
					if !strings.Contains(r.stdout, "apiVersion: terrace.dev/v1") {
						t.Errorf("yaml output lacks apiVersion terrace.dev/v1:\n%s", r.stdout)
					}
				}
				if got.GetObjectMeta().ResourceVersion == "" || got.GetObjectMeta().CreationTimestamp == "" {
					t.Errorf("%s output lacks resourceVersion or creationTimestamp: %+v", format, got.GetObjectMeta())
				}
				if diff := cmp.Diff(comparable(t, want), comparable(t, got), cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("get -o %s (-want +got):\n%s", format, diff)
				}
			}
			r = c.mustRun("", append([]string{"get"}, args...)...)
			lines := norm(r.stdout)
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], m.Name+" ") {
				t.Errorf("table output:\n%s", r.stdout)
			}
			r = c.mustRun("", append([]string{"get", "-o", "name"}, args...)...)
			if got := strings.TrimSpace(r.stdout); got != ref {
				t.Errorf("-o name = %q, want %q", got, ref)
			}
			r = c.mustRun("", "delete", "-f", f)
			if got := strings.TrimSpace(r.stdout); got != ref+" deleted" {
				t.Errorf("delete said %q", got)
			}
			r = c.run("", append([]string{"get"}, args...)...)
			if r.code != 1 || !strings.Contains(r.stderr, ref+" not found") {
				t.Errorf("get after delete: exit %d, stderr %q", r.code, r.stderr)
			}
		})
	}
	for _, k := range api.Kinds() {
		if !covered[k.Kind] {
			t.Errorf("no manifest in testdata/kinds for %s", k.Kind)
		}
	}
	if keys := storedKeys(t, srv); len(keys) != 0 {
		t.Errorf("left in etcd after deleting everything: %v", keys)
	}
}

const multiDoc = `apiVersion: terrace.dev/v1
kind: IPPool
metadata:
  name: ok-pool
spec:
  cidr: 198.19.0.0/16
---
apiVersion: terrace.dev/v1
kind: IPPool
metadata:
  name: Bad_Name
spec:
  cidr: 198.19.0.0/33
  ipipMode: Always
---
apiVersion: terrace.dev/v1
kind: GlobalNetworkPolicy
metadata:
  name: foo
spec:
  selector: app == 'x' &&& b
---
apiVersion: terrace.dev/v1
kind: Frobnicator
metadata:
  name: x
---
apiVersion: terrace.dev/v1
kind: IPPool
metadata:
  name: p3
spec:
  cidr: 198.20.0.0/16
  colour: blue
---
key: [unclosed
`

func TestApplyMultiDocumentReportsEach(t *testing.T) {
	c, srv := newCLI(t)
	r := c.run(multiDoc, "apply", "-f", "-")
	if r.code != 2 {
		t.Errorf("exit %d, want 2", r.code)
	}
	if got := strings.TrimSpace(r.stdout); got != "" {
		t.Errorf("stdout = %q, want nothing: no document may be written", got)
	}
	wantErr := []string{
		`error: document 2 (IPPool/Bad_Name, stdin:8): metadata.name: must be an RFC 1123`,
		`spec.cidr: "198.19.0.0/33" is not a CIDR`,
		`spec.ipipMode: Terrace never encapsulates`,
		`error: document 3 (GlobalNetworkPolicy/foo, stdin:16): spec.selector: invalid selector "app == 'x' &&& b" at column 14`,
		`error: document 4 (stdin:23): `, `unknown kind "Frobnicator"`,
		`error: document 5 (stdin:28): `, `unknown field "colour"`,
		`error: document 6 (stdin:36): parse YAML`,
		`error: apply: 5 of 6 documents invalid; nothing was changed`,
	}
	for _, w := range wantErr {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
	if n := strings.Count(r.stderr, "\n"); n != 6 {
		t.Errorf("want one line per invalid document and a summary (6), got %d:\n%s", n, r.stderr)
	}
	if diff := cmp.Diff([]string(nil), storedKeys(t, srv)); diff != "" {
		t.Errorf("stored keys (-want +got):\n%s", diff)
	}
}

func TestBadInput(t *testing.T) {
	c, srv := newCLI(t)
	valid := "apiVersion: terrace.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 198.18.0.0/16}\n"
	tests := []struct {
		name       string
		stdin      string
		args       []string
		endpoints  string
		wantCode   int
		wantStderr string
	}{
		{name: "malformed yaml", stdin: "kind: IPPool\nmetadata: {name: p\n", args: []string{"apply", "-f", "-"},
			wantCode: 2, wantStderr: "error: document 1 (stdin:1): parse YAML"},
		{name: "malformed json", stdin: `{"kind": "IPPool",`, args: []string{"create", "-f", "-"},
			wantCode: 2, wantStderr: "error: stdin: "},
		{name: "unknown kind", stdin: "apiVersion: terrace.dev/v1\nkind: Pod\nmetadata: {name: p}\n", args: []string{"create", "-f", "-"},
			wantCode: 2, wantStderr: `unknown kind "Pod"`},
		{name: "unknown field", stdin: strings.Replace(valid, "cidr:", "natOutgoing: true, cdir: 1, cidr:", 1), args: []string{"apply", "-f", "-"},
			wantCode: 2, wantStderr: `unknown field "cdir" at spec`},
		{name: "invalid value", stdin: strings.Replace(valid, "198.18.0.0/16", "198.18.0.0/16, blockSize: 99", 1), args: []string{"apply", "-f", "-"},
			wantCode: 2, wantStderr: "error: document 1 (IPPool/p, stdin:1): spec.blockSize"},
		{name: "wrong api version", stdin: strings.Replace(valid, "terrace.dev/v1", "v1", 1), args: []string{"apply", "-f", "-"},
			wantCode: 2, wantStderr: "apiVersion"},
		{name: "empty node name", args: []string{"delete", "node", ""},
			wantCode: 2, wantStderr: "metadata.name is empty"},
		{name: "empty name in a reference", args: []string{"delete", "np/prod/ "},
			wantCode: 2, wantStderr: "metadata.name is empty"},
		{name: "nameless document to delete", stdin: "apiVersion: terrace.dev/v1\nkind: Node\nmetadata: {}\n", args: []string{"delete", "-f", "-"},
			wantCode: 2, wantStderr: "metadata.name is empty"},
		{name: "empty input", stdin: "# nothing\n", args: []string{"apply", "-f", "-"},
			wantCode: 2, wantStderr: "no resources found"},
		{name: "missing file", args: []string{"apply", "-f", "/nonexistent/x.yaml"},
			wantCode: 2, wantStderr: "read /nonexistent/x.yaml"},
		{name: "no -f", args: []string{"apply"}, wantCode: 2, wantStderr: "no input"},
		{name: "unknown kind on get", args: []string{"get", "pods"}, wantCode: 2, wantStderr: "pods"},
		{name: "get without kind", args: []string{"get"}, wantCode: 2, wantStderr: "name a kind"},
		{name: "unknown output", args: []string{"get", "ippools", "-o", "xml"}, wantCode: 2, wantStderr: `unknown output format "xml"`},
		{name: "unknown flag", args: []string{"get", "ippools", "--colour"}, wantCode: 2, wantStderr: "unknown flag: --colour"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantStderr: `unknown command "frobnicate"`},
		{name: "get missing", args: []string{"get", "ippool", "nope"}, wantCode: 1, wantStderr: "error: ippool/nope not found"},
		{name: "delete missing", args: []string{"delete", "gnp", "nope"}, wantCode: 1, wantStderr: "error: globalnetworkpolicy/nope: not found"},
		// A short dial timeout keeps these cases cheap; the message and exit status do not depend on it.
		{name: "unreachable etcd", stdin: valid, args: []string{"apply", "-f", "-", "--etcd-dial-timeout", "1s"}, endpoints: "http://127.0.0.1:1",
			wantCode: 1, wantStderr: "error: connect to etcd at http://127.0.0.1:1"},
		{name: "force on ipam release --ip", args: []string{"ipam", "release", "--ip", "198.18.0.9", "--force"}, wantCode: 2, wantStderr: "--force applies to --node only"},
		{name: "get by name with -A", args: []string{"get", "networkpolicy", "np1", "-A"}, wantCode: 2, wantStderr: "-A lists a kind in every namespace"},
		{name: "force on a kind other than IPPool", args: []string{"delete", "gnp", "p", "--force"}, wantCode: 2, wantStderr: "--force applies to IPPools and Nodes only"},
		// Bad etcd settings are input: exit 2 for apply as for get.
		{name: "bad etcd settings on apply", stdin: valid, args: []string{"apply", "-f", "-", "--etcd-cert", "/x"},
			wantCode: 2, wantStderr: "--etcd-cert and --etcd-key must be given together"},
		{name: "unreachable etcd on get", args: []string{"get", "nodes", "--etcd-dial-timeout", "1s"}, endpoints: "http://127.0.0.1:1",
			wantCode: 1, wantStderr: "error: connect to etcd at http://127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc := *c
			if tt.endpoints != "" {
				cc.endpoints = tt.endpoints
			}
			r := cc.run(tt.stdin, tt.args...)
			if r.code != tt.wantCode {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tt.wantCode, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantStderr, r.stderr)
			}
			if lines := strings.Count(strings.TrimSpace(r.stderr), "\n") + 1; lines != 1 {
				t.Errorf("want one line of error, got %d:\n%s", lines, r.stderr)
			}
			if r.took > 10*time.Second {
				t.Errorf("took %v", r.took)
			}
			if keys := storedKeys(t, srv); len(keys) != 0 {
				t.Errorf("something was written: %v", keys)
			}
		})
	}
}

func getJSON(t *testing.T, c *cli, args ...string) map[string]any {
	t.Helper()
	r := c.mustRun("", append([]string{"get", "-o", "json"}, args...)...)
	var m map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatalf("decode %q: %v", r.stdout, err)
	}
	return m
}

func TestReplaceAndConflict(t *testing.T) {
	c, _ := newCLI(t)
	c.mustRun("", "create", "-f", "testdata/kinds/ippool.yaml")
	r := c.run("", "create", "-f", "testdata/kinds/ippool.yaml")
	if r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("second create: exit %d stderr %q", r.code, r.stderr)
	}
	stale := getJSON(t, c, "ippool", "pool-1")
	staleRV := stale["metadata"].(map[string]any)["resourceVersion"].(string)

	// Someone else changes it in between.
	c.mustRun(strings.Replace(mustRead(t, "testdata/kinds/ippool.yaml"), "natOutgoing: true", "natOutgoing: false", 1), "apply", "-f", "-")
	fresh := getJSON(t, c, "ippool", "pool-1")

	spec := stale["spec"].(map[string]any)
	spec["disabled"] = true
	b, _ := json.Marshal(stale)
	r = c.run(string(b), "replace", "-f", "-")
	if r.code != 1 || !strings.Contains(r.stderr, "conflict: resourceVersion "+staleRV+" is not the current one") {
		t.Errorf("stale replace: exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	if got := getJSON(t, c, "ippool", "pool-1"); !cmp.Equal(got, fresh) {
		t.Errorf("stale replace changed the pool:\n%s", cmp.Diff(fresh, got))
	}
	// apply and delete with the stale version say it the same way, and write nothing.
	for _, verb := range []string{"apply", "delete"} {
		r = c.run(string(b), verb, "-f", "-")
		if r.code != 1 || !strings.Contains(r.stderr, "conflict: resourceVersion "+staleRV+" is not the current one") {
			t.Errorf("stale %s: exit %d\nstdout %s\nstderr %s", verb, r.code, r.stdout, r.stderr)
		}
	}
	if got := getJSON(t, c, "ippool", "pool-1"); !cmp.Equal(got, fresh) {
		t.Errorf("stale apply or delete changed the pool:\n%s", cmp.Diff(fresh, got))
	}
	// A version that is not a revision at all is the file's mistake (exit 2), for every verb.
	stale["metadata"].(map[string]any)["resourceVersion"] = "12abc"
	b, _ = json.Marshal(stale)
	for _, verb := range []string{"apply", "replace", "delete"} {
		r = c.run(string(b), verb, "-f", "-")
		if r.code != 2 || !strings.Contains(r.stderr, `metadata.resourceVersion: "12abc" is not an etcd revision`) {
			t.Errorf("%s with a malformed resourceVersion: exit %d\nstdout %s\nstderr %s", verb, r.code, r.stdout, r.stderr)
		}
	}
	if got := getJSON(t, c, "ippool", "pool-1"); !cmp.Equal(got, fresh) {
		t.Errorf("a malformed resourceVersion changed the pool:\n%s", cmp.Diff(fresh, got))
	}

	fresh["spec"].(map[string]any)["disabled"] = true
	b, _ = json.Marshal(fresh)
	r = c.mustRun(string(b), "replace", "-f", "-")
	if strings.TrimSpace(r.stdout) != "ippool/pool-1 replaced" {
		t.Errorf("replace said %q", r.stdout)
	}
	if got := getJSON(t, c, "ippool", "pool-1")["spec"].(map[string]any)["disabled"]; got != true {
		t.Errorf("disabled = %v after replace", got)
	}
	r = c.run(strings.Replace(mustRead(t, "testdata/kinds/bgppeer.yaml"), "tor-1", "tor-9", 1), "replace", "-f", "-")
	if r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("replace of missing: exit %d stderr %q", r.code, r.stderr)
	}
}

func mustRead(t *testing.T, f string) string {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLabelCommand(t *testing.T) {
	c, _ := newCLI(t)
	c.mustRun("", "apply", "-f", "testdata/kinds/node.yaml")
	labels := func() map[string]any {
		l, _ := getJSON(t, c, "node", "host-9")["metadata"].(map[string]any)["labels"].(map[string]any)
		return l
	}
	steps := []struct {
		args     []string
		wantCode int
		wantOut  string
		want     map[string]any
	}{
		{args: []string{"zone=a", "tier=edge"}, wantOut: "node/host-9 labeled", want: map[string]any{"rack": "r1", "zone": "a", "tier": "edge"}},
		{args: []string{"zone=b"}, wantCode: 1, want: map[string]any{"rack": "r1", "zone": "a", "tier": "edge"}},
		{args: []string{"zone=b", "--overwrite"}, wantOut: "node/host-9 labeled", want: map[string]any{"rack": "r1", "zone": "b", "tier": "edge"}},
		{args: []string{"rack-", "tier-"}, wantOut: "node/host-9 labeled", want: map[string]any{"zone": "b"}},
		{args: []string{"zone=b"}, wantOut: "node/host-9 not labeled (no change)", want: map[string]any{"zone": "b"}},
		{args: []string{"Bad Key=x"}, wantCode: 2, want: map[string]any{"zone": "b"}},
	}
	for i, s := range steps {
		r := c.run("", append([]string{"label", "node", "host-9"}, s.args...)...)
		if r.code != s.wantCode || (s.wantOut != "" && strings.TrimSpace(r.stdout) != s.wantOut) {
			t.Errorf("step %d %v: exit %d stdout %q stderr %q", i, s.args, r.code, r.stdout, r.stderr)
		}
		if diff := cmp.Diff(s.want, labels()); diff != "" {
			t.Errorf("step %d labels (-want +got):\n%s", i, diff)
		}
	}
	if r := c.run("", "label", "node", "ghost", "a=b"); r.code != 1 || !strings.Contains(r.stderr, "node/ghost not found") {
		t.Errorf("label missing node: exit %d stderr %q", r.code, r.stderr)
	}
	// The KIND/NAME form that -o name prints works too.
	if r := c.run("", "label", "node/host-9", "zone-"); r.code != 0 || strings.TrimSpace(r.stdout) != "node/host-9 labeled" || len(labels()) != 0 {
		t.Errorf("label by reference: exit %d stdout %q stderr %q labels %v", r.code, r.stdout, r.stderr, labels())
	}
	for _, args := range [][]string{{"node/host-9"}, {"node", "host-9"}} {
		if r := c.run("", append([]string{"label"}, args...)...); r.code != 2 {
			t.Errorf("label %v without changes: exit %d stderr %q", args, r.code, r.stderr)
		}
	}
}

func TestNamespaces(t *testing.T) {
	c, _ := newCLI(t)
	c.mustRun("", "apply", "-f", "testdata/kinds/np.yaml", "-f", "testdata/kinds/netset.yaml")
	np := strings.Replace(mustRead(t, "testdata/kinds/np.yaml"), "  namespace: prod\n", "", 1)
	c.mustRun(np, "apply", "-f", "-", "-n", "dev")

	r := c.mustRun("", "get", "np")
	if !strings.Contains(r.stderr, "No networkpolicies found") || r.stdout != "" {
		t.Errorf("default namespace: stdout %q stderr %q", r.stdout, r.stderr)
	}
	r = c.mustRun("", "get", "networkpolicies", "-n", "prod")
	if diff := cmp.Diff([]string{"NAME ORDER SELECTOR TYPES", "allow-web 100 app == 'web' Ingress"}, norm(r.stdout)); diff != "" {
		t.Errorf("-n prod (-want +got):\n%s", diff)
	}
	r = c.mustRun("", "get", "np", "-A")
	if diff := cmp.Diff([]string{"NAMESPACE NAME ORDER SELECTOR TYPES", "dev allow-web 100 app == 'web' Ingress", "prod allow-web 100 app == 'web' Ingress"}, norm(r.stdout)); diff != "" {
		t.Errorf("-A (-want +got):\n%s", diff)
	}
	list := getJSON(t, c, "netsets", "-A")
	if list["kind"] != "List" || len(list["items"].([]any)) != 1 {
		t.Errorf("-o json list: %v", list)
	}
	r = c.run(mustRead(t, "testdata/kinds/np.yaml"), "apply", "-f", "-", "-n", "dev")
	if r.code != 2 || !strings.Contains(r.stderr, `does not match --namespace "dev"`) {
		t.Errorf("namespace mismatch: exit %d stderr %q", r.code, r.stderr)
	}
	r = c.mustRun("", "delete", "np", "allow-web", "-n", "dev")
	if strings.TrimSpace(r.stdout) != "networkpolicy/dev/allow-web deleted" {
		t.Errorf("delete said %q", r.stdout)
	}

	// What -o name prints is accepted back by get and delete.
	names := strings.Fields(c.mustRun("", "get", "np", "-A", "-o", "name").stdout)
	names = append(names, strings.Fields(c.mustRun("", "get", "netsets", "-A", "-o", "name").stdout)...)
	if len(names) != 2 {
		t.Fatalf("-o name: %q", names)
	}
	r = c.mustRun("", append([]string{"get", "-o", "name"}, names...)...)
	if diff := cmp.Diff(names, strings.Fields(r.stdout)); diff != "" {
		t.Errorf("get by reference (-want +got):\n%s", diff)
	}
	c.mustRun("", append([]string{"delete"}, names...)...)
	if r := c.run("", "get", names[0]); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("after delete by reference: exit %d stderr %q", r.code, r.stderr)
	}
	if r := c.run("", "get", "np/a/b/c"); r.code != 2 {
		t.Errorf("bad reference: exit %d stderr %q", r.code, r.stderr)
	}
}

func TestVersion(t *testing.T) {
	c, _ := newCLI(t)
	r := c.mustRun("", "version")
	if !strings.HasPrefix(r.stdout, "terracectl ") {
		t.Errorf("version = %q", r.stdout)
	}
	r = c.mustRun("", "version", "-o", "json")
	var v map[string]string
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v["version"] == "" {
		t.Errorf("version -o json = %q (%v)", r.stdout, err)
	}
	r = c.mustRun("", "version", "-o", "yaml")
	if !strings.HasPrefix(r.stdout, "go: go1.") || !strings.Contains(r.stdout, "\nversion: ") {
		t.Errorf("version -o yaml = %q", r.stdout)
	}
	if res := c.run("", "version", "-o", "xml"); res.code != 2 || !strings.Contains(res.stderr, "want json or yaml") {
		t.Errorf("version -o xml: exit %d %q", res.code, res.stderr)
	}
}

// TestGetWithUndecodableValue: a stored value terracectl cannot read (a newer version's, or one
// written by hand) is named on stderr and the command fails, but the other resources of the kind
// are still shown.
func TestGetWithUndecodableValue(t *testing.T) {
	c, srv := newCLI(t)
	c.mustRun("", "create", "-f", "testdata/kinds/ippool.yaml")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := rawStore(t, srv).Put(ctx, "/terrace/v1/ippools/zz-broken", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"name", "yaml"} {
		r := c.run("", "get", "ippools", "-o", format)
		if r.code != 1 || !strings.Contains(r.stderr, "/terrace/v1/ippools/zz-broken") {
			t.Errorf("get -o %s: exit %d, stderr %q; want 1 naming the broken key", format, r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "pool-1") {
			t.Errorf("get -o %s hid the readable pool: stdout %q", format, r.stdout)
		}
	}
	// The readable one alone, by name, is not affected.
	if r := c.mustRun("", "get", "ippool", "pool-1", "-o", "name"); strings.TrimSpace(r.stdout) != "ippool/pool-1" {
		t.Errorf("get ippool pool-1: %q", r.stdout)
	}
}

// TestEmptyListRoundTrip: what `get -o yaml|json` prints when nothing matches is a List with no
// items, and feeding it back (a backup of an empty kind restored by a script) changes nothing and
// succeeds, while a file with no document at all is still refused.
func TestEmptyListRoundTrip(t *testing.T) {
	c, srv := newCLI(t)
	for _, format := range []string{"yaml", "json"} {
		t.Run(format, func(t *testing.T) {
			out := c.mustRun("", "get", "globalnetworkpolicies", "-o", format).stdout
			if !strings.Contains(out, "List") {
				t.Fatalf("get -o %s of nothing printed %q, want an empty List", format, out)
			}
			for _, verb := range []string{"apply", "create", "replace", "delete"} {
				r := c.run(out, verb, "-f", "-")
				if r.code != 0 || !strings.Contains(r.stderr, "nothing to do") || r.stdout != "" {
					t.Errorf("%s -f of an empty List: exit %d, stdout %q, stderr %q; want 0 and a note", verb, r.code, r.stdout, r.stderr)
				}
			}
			r := c.mustRun(out, "get", "-f", "-", "-o", format)
			if docs, lists, err := api.DecodeManifest([]byte(r.stdout)); err != nil || len(docs) != 0 || lists != 1 {
				t.Errorf("get -f of an empty List -o %s printed %q (%d documents, %d lists, %v), want an empty List", format, r.stdout, len(docs), lists, err)
			}
		})
	}
	// Mixed with a real document, the List's emptiness does not matter.
	pool, err := os.ReadFile("testdata/kinds/ippool.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r := c.mustRun("kind: List\nitems: []\n---\n"+string(pool), "apply", "-f", "-")
	if !strings.Contains(r.stdout, "created") || strings.Contains(r.stderr, "nothing to do") {
		t.Errorf("apply of an empty List and a pool: stdout %q, stderr %q", r.stdout, r.stderr)
	}
	if r := c.run("\n# only a comment\n", "apply", "-f", "-"); r.code != 2 || !strings.Contains(r.stderr, "no resources found") {
		t.Errorf("apply of no document: exit %d, stderr %q; want 2", r.code, r.stderr)
	}
	if got := len(storedKeys(t, srv)); got != 1 {
		t.Errorf("stored %d keys, want the one pool", got)
	}
}

// TestDeleteManifestWithInvalidDocument: delete -f with one document it cannot use deletes
// nothing, not the documents around it.
func TestDeleteManifestWithInvalidDocument(t *testing.T) {
	c, srv := newCLI(t)
	pool := "apiVersion: terrace.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 198.18.0.0/16}\n"
	if r := c.run(pool, "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("apply: exit %d: %s", r.code, r.stderr)
	}
	r := c.run(pool+"---\napiVersion: terrace.dev/v1\nkind: Node\nmetadata: {}\n", "delete", "-f", "-")
	if r.code != 2 || !strings.Contains(r.stderr, "delete: 1 of 2 documents invalid; nothing was changed") {
		t.Errorf("exit %d, stderr %q; want 2 and the summary", r.code, r.stderr)
	}
	if diff := cmp.Diff([]string{"/terrace/v1/ippools/p"}, storedKeys(t, srv)); diff != "" {
		t.Errorf("stored keys (-want +got):\n%s", diff)
	}
}

// TestConfigFileKeys: the config file holds the global flags; a subcommand's own flag there is
// refused by every subcommand alike rather than ignored by some (get read -o from its command
// line only).
func TestConfigFileKeys(t *testing.T) {
	c, _ := newCLI(t)
	for _, tc := range []struct {
		file string
		args []string
		code int
		msg  string
	}{
		{"output: json\n", []string{"get", "ippools"}, 2, `unknown key "output"`},
		{"namespace: prod\n", []string{"version"}, 2, `unknown key "namespace"`},
		{"log-level: debug\nnode-socket: /run/x.sock\n", []string{"get", "ippools"}, 0, ""},
	} {
		if err := os.WriteFile(c.config, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		r := c.run("", tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("file %q, %v: exit %d, stderr %q; want %d and %q", tc.file, tc.args, r.code, r.stderr, tc.code, tc.msg)
		}
	}
}
