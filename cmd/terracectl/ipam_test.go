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
	"sigs.k8s.io/yaml"

	"github.com/terracenet/terrace/datastore"
	"github.com/terracenet/terrace/datastore/api"
	"github.com/terracenet/terrace/datastore/embedded"
	"github.com/terracenet/terrace/datastore/kv"
	"github.com/terracenet/terrace/ipam"
)

const ipamPools = `apiVersion: terrace.dev/v1
kind: IPPool
metadata: {name: p4}
spec: {cidr: 198.18.0.0/24, blockSize: 28}
---
apiVersion: terrace.dev/v1
kind: IPPool
metadata: {name: p6}
spec: {cidr: "2001:db8:1000::/48"}
`

func TestIPAMCommands(t *testing.T) {
	c, srv := newCLI(t)
	c.mustRun(ipamPools, "apply", "-f", "-")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := kv.Open(ctx, kv.Config{Endpoints: srv.Endpoints()}, embedded.TestLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := ipam.New(s, datastore.New(s, embedded.TestLogger()), embedded.TestLogger())
	got, err := a.AutoAssign(ctx, ipam.AutoAssignArgs{Node: "gone-node", Handle: "net.c1", Num4: 2, Num6: 1,
		Attrs: map[string]string{ipam.AttrNamespace: "ns", ipam.AttrPod: "web"}})
	if err != nil {
		t.Fatal(err)
	}

	var show struct {
		Pools []ipam.PoolUsage `json:"pools"`
	}
	if err := json.Unmarshal([]byte(c.mustRun("", "ipam", "show", "-o", "json").stdout), &show); err != nil {
		t.Fatal(err)
	}
	if len(show.Pools) != 2 || show.Pools[0].Used != 2 || show.Pools[0].Free != "254" || show.Pools[1].Used != 1 {
		t.Fatalf("show: %+v", show.Pools)
	}
	table := c.mustRun("", "ipam", "show", "--show-blocks").stdout
	if !strings.Contains(table, "198.18.0.0/28") || !strings.Contains(table, "gone-node") {
		t.Fatalf("show --show-blocks:\n%s", table)
	}
	var info ipam.IPInfo
	if err := json.Unmarshal([]byte(c.mustRun("", "ipam", "show", "--ip", got.IPv4[1].String(), "-o", "json").stdout), &info); err != nil {
		t.Fatal(err)
	}
	if !info.Allocated || info.Handle != "net.c1" || info.BlockNode != "gone-node" {
		t.Fatalf("show --ip: %+v", info)
	}

	// Within the default grace period nothing has leaked; with none, all three addresses have.
	if out := c.mustRun("", "ipam", "check").stdout; strings.Contains(out, "LEAKED") {
		t.Fatalf("leaks within grace:\n%s", out)
	}
	rep := c.mustRun("", "ipam", "check", "--grace-period", "0", "-o", "json").stdout
	var r ipam.Report
	if err := json.Unmarshal([]byte(rep), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Leaks) != 3 || len(r.OrphanBlocks) != 2 {
		t.Fatalf("report: %d leaks, %d orphan blocks\n%s", len(r.Leaks), len(r.OrphanBlocks), rep)
	}
	file := filepath.Join(t.TempDir(), "report.json")
	if err := os.WriteFile(file, []byte(rep), 0o600); err != nil {
		t.Fatal(err)
	}
	// The same report as YAML carries the same fields, and release reads it too (below).
	repYAML := c.mustRun("", "ipam", "check", "--grace-period", "0", "-o", "yaml").stdout
	var ry ipam.Report
	if err := yaml.UnmarshalStrict([]byte(repYAML), &ry); err != nil {
		t.Fatalf("decode YAML report: %v\n%s", err, repYAML)
	}
	ry.CheckedAt = r.CheckedAt // two runs of check
	jr, _ := json.Marshal(r)
	jy, _ := json.Marshal(ry)
	if diff := cmp.Diff(string(jr), string(jy)); diff != "" || strings.HasPrefix(strings.TrimSpace(repYAML), "{") {
		t.Fatalf("YAML report differs from the JSON one (-json +yaml):\n%s\n%s", diff, repYAML)
	}
	fileYAML := filepath.Join(t.TempDir(), "report.yaml")
	if err := os.WriteFile(fileYAML, []byte(repYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	out := c.mustRun("", "ipam", "release", "--from-report", file).stdout
	if strings.Count(out, "released ") != 3 || strings.Count(out, "freed block ") != 2 {
		t.Fatalf("release --from-report:\n%s", out)
	}
	if keys := storedKeys(t, srv); strings.Contains(strings.Join(keys, " "), "/terrace/ipam/") {
		t.Fatalf("IPAM keys left after repair: %v", keys)
	}
	if res := c.run("", "ipam", "release", "--ip", got.IPv4[0].String()); res.code != 1 || !strings.Contains(res.stdout, "skipped") {
		t.Fatalf("release of a free address: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	// The same report again: everything in it is skipped now (already released), which exits 1
	// as --ip does.
	if res := c.run("", "ipam", "release", "--from-report", fileYAML); res.code != 1 || !strings.Contains(res.stdout, "skipped") {
		t.Fatalf("release --from-report of a report already applied: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	// Not reports: nothing to release and no error would hide a wrong file.
	for name, content := range map[string]string{"empty-object": "{}", "null": "null", "trailing": rep + "\n{}", "stray bracket": rep + "}"} {
		bad := filepath.Join(t.TempDir(), name+".json")
		if err := os.WriteFile(bad, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if res := c.run("", "ipam", "release", "--from-report", bad); res.code != 2 || !strings.Contains(res.stderr, "is not an `ipam check -o json|yaml` report") {
			t.Errorf("release --from-report %s: exit %d\n%s", name, res.code, res.stderr)
		}
	}
	// --show-blocks as JSON always has the list.
	if out := c.mustRun("", "ipam", "show", "--show-blocks", "-o", "json").stdout; !strings.Contains(out, `"blocks": [`) {
		t.Errorf("ipam show --show-blocks -o json lacks the blocks list:\n%s", out)
	}

	// --node refuses a Node that still exists (its pods would be left without their blocks)
	// unless forced; a removed node's blocks are released.
	c.mustRun("apiVersion: terrace.dev/v1\nkind: Node\nmetadata: {name: live-node}\n", "apply", "-f", "-")
	if _, err := a.AutoAssign(ctx, ipam.AutoAssignArgs{Node: "live-node", Handle: "net.c2", Num4: 1}); err != nil {
		t.Fatal(err)
	}
	if res := c.run("", "ipam", "release", "--node", "live-node"); res.code != 2 || !strings.Contains(res.stderr, "still exists") {
		t.Fatalf("release --node of a live node: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if bl, _ := a.BlocksForNode(ctx, "live-node"); len(bl) != 1 {
		t.Fatalf("a refused release changed the node's blocks: %v", bl)
	}
	if out := c.mustRun("", "ipam", "release", "--node", "live-node", "--force").stdout; !strings.Contains(out, "keeps 1 allocated") {
		t.Fatalf("release --node --force:\n%s", out)
	}
	// A node with no blocks says so instead of printing nothing.
	if out := c.mustRun("", "ipam", "release", "--node", "no-such-node").stdout; !strings.Contains(out, "node no-such-node has no blocks to release") {
		t.Fatalf("release --node of a node without blocks:\n%s", out)
	}
	// Again, as JSON: nothing left to release is empty lists, not nulls.
	if out := c.mustRun("", "ipam", "release", "--node", "live-node", "--force", "-o", "json").stdout; !strings.Contains(out, `"freed": []`) || !strings.Contains(out, `"retained": []`) {
		t.Fatalf("release --node --force -o json a second time:\n%s", out)
	}

	c.mustRun("", "ipam", "configure", "--strict-affinity=true", "--max-blocks-per-host", "4")
	cfg, err := datastore.New(s, embedded.TestLogger()).Get(ctx, "IPAMConfiguration", "", "default")
	if err != nil {
		t.Fatal(err)
	}
	if spec := cfg.(*api.IPAMConfiguration).Spec; !spec.StrictAffinity || spec.MaxBlocksPerHost != 4 {
		t.Fatalf("configure stored %+v", spec)
	}

	for _, args := range [][]string{
		{"ipam", "release"},
		{"ipam", "release", "--ip", "nope"},
		{"ipam", "show", "-o", "wide"},
		{"ipam", "show", "--ip", "198.18.0.1", "--show-blocks"},
		{"ipam", "configure"},
		{"ipam", "release", "--from-report", filepath.Join(t.TempDir(), "missing.json")},
	} {
		if res := c.run("", args...); res.code != 2 {
			t.Errorf("terracectl %s: exit %d, want 2\n%s", strings.Join(args, " "), res.code, res.stderr)
		}
	}
}

// TestIPAMReportsWithUndecodablePool: ipam show and check still report the readable pools when
// one stored pool cannot be decoded, and say which one.
func TestIPAMReportsWithUndecodablePool(t *testing.T) {
	c, srv := newCLI(t)
	c.mustRun(ipamPools, "apply", "-f", "-")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := rawStore(t, srv).Put(ctx, "/terrace/v1/ippools/zz-broken", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"ipam", "show"}, {"ipam", "show", "-o", "json"}, {"ipam", "show", "--show-blocks"}} {
		r := c.run("", args...)
		if r.code != 1 || !strings.Contains(r.stderr, "/terrace/v1/ippools/zz-broken") {
			t.Errorf("%v: exit %d, stderr %q; want 1 naming the broken key", args, r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "p4") || !strings.Contains(r.stdout, "p6") {
			t.Errorf("%v hid the readable pools:\n%s", args, r.stdout)
		}
	}
	r := c.run("", "ipam", "check", "-o", "json", "--exit-code")
	var rep ipam.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("ipam check -o json: %v\n%s", err, r.stdout)
	}
	if r.code != 1 || len(rep.Inconsistencies) != 1 || !strings.Contains(rep.Inconsistencies[0].Detail, "zz-broken") {
		t.Errorf("ipam check --exit-code: exit %d, inconsistencies %+v; want 1 and the broken pool", r.code, rep.Inconsistencies)
	}
}
