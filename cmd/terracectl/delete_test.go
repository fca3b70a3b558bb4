package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/embedded"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/ipam"
)

const deleteNodes = `apiVersion: terrace.dev/v1
kind: Node
metadata: {name: n1}
---
apiVersion: terrace.dev/v1
kind: Node
metadata: {name: n2}
`

// ipamClient opens its own connection to the test etcd, as a node daemon would have.
func ipamClient(t *testing.T, srv *embedded.Server) (*ipam.Allocator, *datastore.Client, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	s, err := kv.Open(ctx, kv.Config{Endpoints: srv.Endpoints()}, embedded.TestLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ds := datastore.New(s, embedded.TestLogger())
	return ipam.New(s, ds, embedded.TestLogger()), ds, ctx
}

func checkReport(t *testing.T, c *cli) ipam.Report {
	t.Helper()
	var r ipam.Report
	out := c.mustRun("", "ipam", "check", "-o", "json").stdout
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("decode report: %v\n%s", err, out)
	}
	return r
}

func TestDeleteNodeReleasesBlocks(t *testing.T) {
	c, srv := newCLI(t)
	c.mustRun(ipamPools+"---\n"+deleteNodes, "apply", "-f", "-")
	a, ds, ctx := ipamClient(t, srv)
	got, err := a.AutoAssign(ctx, ipam.AutoAssignArgs{Node: "n1", Handle: "net.a", Num4: 1, Num6: 1})
	if err != nil {
		t.Fatal(err)
	}
	// The IPv6 block stays affine to n1 but empty.
	if _, err := a.ReleaseIPs(ctx, got.IPv6...); err != nil {
		t.Fatal(err)
	}
	out := c.mustRun("", "delete", "node", "n1").stdout
	t.Logf("delete node n1:\n%s", out)
	for _, want := range []string{"node/n1 deleted", "freed block 2001:db8:1000::/122",
		"block 198.18.0.0/28 keeps 1 allocated address;"} {
		if !strings.Contains(out, want) {
			t.Errorf("delete node output lacks %q:\n%s", want, out)
		}
	}
	if bl, err := a.BlocksForNode(ctx, "n1"); err != nil || len(bl) != 0 {
		t.Errorf("n1 still owns %v (%v)", bl, err)
	}
	if r := checkReport(t, c); len(r.OrphanBlocks) != 0 || len(r.Inconsistencies) != 0 {
		t.Errorf("check after a complete node delete: %+v", r)
	}
	// The address left on the removed node is reported (once past the grace period).
	var r ipam.Report
	if err := json.Unmarshal([]byte(c.mustRun("", "ipam", "check", "--grace-period", "0", "-o", "json").stdout), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Leaks) != 1 || r.Leaks[0].IP != got.IPv4[0] || r.Leaks[0].Reason != "node n1 does not exist" {
		t.Errorf("leaks after the node delete: %+v", r.Leaks)
	}
	if _, err := a.ReleaseIPs(ctx, got.IPv4...); err != nil {
		t.Fatal(err)
	}

	// A delete interrupted between the Node and its blocks: check reports the blocks, and the
	// same delete run again finishes the job.
	if _, err := a.AutoAssign(ctx, ipam.AutoAssignArgs{Node: "n2", Handle: "net.b", Num4: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ReleaseByHandle(ctx, "net.b"); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.Delete(ctx, "Node", "", "n2", ""); err != nil {
		t.Fatal(err)
	}
	r = checkReport(t, c)
	if len(r.OrphanBlocks) != 1 || r.OrphanBlocks[0].Node != "n2" || r.OrphanBlocks[0].InUse != 0 {
		t.Fatalf("orphan blocks after an interrupted delete: %+v", r.OrphanBlocks)
	}
	out = c.mustRun("", "delete", "node", "n2").stdout
	t.Logf("delete node n2 again:\n%s", out)
	if !strings.Contains(out, "node/n2 was already deleted") || !strings.Contains(out, "freed block "+r.OrphanBlocks[0].Block.String()) {
		t.Errorf("re-run of an interrupted delete:\n%s", out)
	}
	if r := checkReport(t, c); len(r.OrphanBlocks) != 0 {
		t.Errorf("orphan blocks left: %+v", r.OrphanBlocks)
	}
	if res := c.run("", "delete", "node", "n2"); res.code != 1 || !strings.Contains(res.stderr, "not found") {
		t.Errorf("delete of a missing node: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	c.mustRun("", "delete", "node", "n2", "--ignore-not-found")
}

func TestDeletePoolInUse(t *testing.T) {
	c, srv := newCLI(t)
	c.mustRun(ipamPools, "apply", "-f", "-")
	// The other bad pool input of issue 3: an overlapping pool and a block size out of range.
	for doc, want := range map[string]string{
		"apiVersion: terrace.dev/v1\nkind: IPPool\nmetadata: {name: over}\nspec: {cidr: 198.18.0.128/25}\n":             "overlaps",
		"apiVersion: terrace.dev/v1\nkind: IPPool\nmetadata: {name: big}\nspec: {cidr: 198.19.0.0/16, blockSize: 19}\n": "spec.blockSize",
	} {
		if res := c.run(doc, "apply", "-f", "-"); res.code != 2 || !strings.Contains(res.stderr, want) {
			t.Errorf("apply of a bad pool: exit %d, want 2\n%s%s", res.code, res.stdout, res.stderr)
		}
	}
	a, _, ctx := ipamClient(t, srv)
	got, err := a.AutoAssign(ctx, ipam.AutoAssignArgs{Node: "n1", Handle: "net.a", Num4: 2})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "p4.yaml")
	if err := os.WriteFile(file, []byte("apiVersion: terrace.dev/v1\nkind: IPPool\nmetadata: {name: p4}\nspec: {cidr: 198.18.0.0/24}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"delete", "ippool", "p4"},
		{"delete", "ippool/p4", "--force"}, // enabled: --force alone is not enough
		{"delete", "-f", file},
		{"delete", "-f", file, "--force"},
	} {
		res := c.run("", args...)
		t.Logf("terracectl %s: %s", strings.Join(args, " "), res.stderr)
		if res.code != 2 || !strings.Contains(res.stderr, "IP pool p4 still has 2 allocated addresses") {
			t.Errorf("terracectl %s: exit %d, want 2 and the count\n%s%s", strings.Join(args, " "), res.code, res.stdout, res.stderr)
		}
	}
	c.mustRun("apiVersion: terrace.dev/v1\nkind: IPPool\nmetadata: {name: p4}\nspec: {cidr: 198.18.0.0/24, blockSize: 28, disabled: true}\n", "apply", "-f", "-")
	if res := c.run("", "delete", "-f", file); res.code != 2 || !strings.Contains(res.stderr, "--force") {
		t.Errorf("disabled pool without --force: exit %d\n%s", res.code, res.stderr)
	}
	out := c.mustRun("", "delete", "-f", file, "--force").stdout
	t.Logf("forced delete:\n%s", out)
	if !strings.Contains(out, "ippool/p4 deleted") || !strings.Contains(out, "its blocks keep 2 allocated addresses until released") {
		t.Errorf("forced delete:\n%s", out)
	}
	r := checkReport(t, c)
	if len(r.BlocksWithoutPool) != 1 || r.BlocksWithoutPool[0].InUse != 2 || r.BlocksWithoutPool[0].Node != "" {
		t.Errorf("blocks without pool after a forced delete: %+v", r.BlocksWithoutPool)
	}
	if res := c.run("", "ipam", "check"); !strings.Contains(res.stdout, "BLOCK OUTSIDE EVERY POOL") || res.code != 0 {
		t.Errorf("check table (exit %d):\n%s", res.code, res.stdout)
	}
	// --exit-code: the same report, and exit 1 because it found a problem.
	if res := c.run("", "ipam", "check", "--exit-code", "-o", "json"); res.code != 1 || !strings.Contains(res.stdout, `"blocksWithoutPool"`) {
		t.Errorf("check --exit-code with a problem: exit %d, stdout:\n%s", res.code, res.stdout)
	}
	if _, err := a.ReleaseIPs(ctx, got.IPv4...); err != nil {
		t.Fatal(err)
	}
	// The empty pool goes without --force.
	c.mustRun("", "delete", "ippool", "p6")
	if keys := storedKeys(t, srv); strings.Contains(strings.Join(keys, " "), "/terrace/ipam/") {
		t.Errorf("IPAM keys left: %v", keys)
	}
	if res := c.run("", "ipam", "check", "--exit-code"); res.code != 0 {
		t.Errorf("check --exit-code on a clean datastore: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if r := checkReport(t, c); !r.Clean() {
		t.Errorf("check not clean at the end: %+v", r)
	}
}

// TestManifestPoolOverlapRefusedWhole: a manifest whose IPPool overlaps a stored pool, or another
// pool of the same manifest, is refused before any of its documents is written (the datastore's
// own check would refuse only that pool, after the documents before it were written).
func TestManifestPoolOverlapRefusedWhole(t *testing.T) {
	c, srv := newCLI(t)
	c.mustRun(ipamPools, "apply", "-f", "-")
	before := storedKeys(t, srv)
	policy := "apiVersion: terrace.dev/v1\nkind: GlobalNetworkPolicy\nmetadata: {name: first}\nspec: {selector: all()}\n---\n"
	tests := []struct {
		name, manifest, want string
	}{
		{name: "overlaps a stored pool", want: `overlaps IPPool "p4"`,
			manifest: policy + "apiVersion: terrace.dev/v1\nkind: IPPool\nmetadata: {name: over}\nspec: {cidr: 198.18.0.128/25}\n"},
		{name: "two new pools overlap each other", want: `overlaps IPPool "b"`,
			manifest: policy + "apiVersion: terrace.dev/v1\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 198.19.0.0/24}\n---\n" +
				"apiVersion: terrace.dev/v1\nkind: IPPool\nmetadata: {name: b}\nspec: {cidr: 198.19.0.0/25}\n"},
	}
	for _, tt := range tests {
		for _, verb := range []string{"apply", "create"} {
			r := c.run(tt.manifest, verb, "-f", "-")
			if r.code != 2 || !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stderr, "nothing was changed") || r.stdout != "" {
				t.Errorf("%s, %s: exit %d, stdout %q, stderr %q; want 2, the overlap and nothing written", tt.name, verb, r.code, r.stdout, r.stderr)
			}
			if diff := cmp.Diff(before, storedKeys(t, srv)); diff != "" {
				t.Errorf("%s, %s: stored keys changed (-before +after):\n%s", tt.name, verb, diff)
			}
		}
	}
	// The stored pools re-applied with a new one beside them do not overlap themselves.
	again := ipamPools + "---\napiVersion: terrace.dev/v1\nkind: IPPool\nmetadata: {name: n4}\nspec: {cidr: 198.19.8.0/24}\n"
	if r := c.run(again, "apply", "-f", "-"); r.code != 0 || !strings.Contains(r.stdout, "ippool/n4 created") {
		t.Errorf("apply of the stored pools and a new one: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestDeleteRunningNodeRefused: a Node whose terrace-node holds its name is not deleted (its
// blocks would go to other hosts while it still routes its pods) unless --force is given.
func TestDeleteRunningNodeRefused(t *testing.T) {
	c, srv := newCLI(t)
	c.mustRun(ipamPools+"---\n"+deleteNodes, "apply", "-f", "-")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec := `{"id":"x","hostname":"rack1-07","pid":4242,"ipv4":"192.0.2.7","since":"2026-12-05T08:00:00Z"}`
	if _, err := rawStore(t, srv).Put(ctx, datastore.NodeInstanceKey("n1"), []byte(rec)); err != nil {
		t.Fatal(err)
	}
	r := c.run("", "delete", "node", "n1")
	if r.code != 2 || !strings.Contains(r.stderr, `host "rack1-07" (pid 4242`) || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("delete of a running node: exit %d\n%s", r.code, r.stderr)
	}
	if got := c.mustRun("", "get", "node", "n1", "-o", "name").stdout; !strings.Contains(got, "n1") {
		t.Fatalf("the running node was deleted anyway: %q", got)
	}
	// A node nobody runs goes as before; the running one with --force.
	c.mustRun("", "delete", "node", "n2")
	if out := c.mustRun("", "delete", "node", "n1", "--force").stdout; !strings.Contains(out, "node/n1 deleted") {
		t.Fatalf("delete --force: %q", out)
	}
	if r := c.run("", "get", "node", "n1"); r.code == 0 {
		t.Fatalf("node n1 still there after delete --force:\n%s", r.stdout)
	}
}
