package fastpath

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf"
)

// TestObject reads the committed object without loading it: the programs, maps and constants
// the Go side names must be there, of the kinds it uses (a stale object after a change of
// fastpath.c that `make bpf` was not run for shows here first).
func TestObject(t *testing.T) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		t.Fatalf("read object: %v", err)
	}
	for _, name := range []string{progFromWorkload, progToWorkload} {
		p := spec.Programs[name]
		if p == nil {
			t.Fatalf("program %s missing; have %v", name, spec.Programs)
		}
		if p.Type != ebpf.SchedCLS {
			t.Errorf("program %s is %v, want a tc (SchedCLS) program", name, p.Type)
		}
		if p.License == "" {
			t.Errorf("program %s has no license: kfuncs need a GPL-compatible one", name)
		}
	}
	want := map[string]struct {
		typ       ebpf.MapType
		key, val  uint32
		maxEntrie uint32
	}{
		mapWorkloads:  {ebpf.Hash, 4, 4, 65536},
		mapWorkloads6: {ebpf.Hash, 16, 4, 65536},
		mapOut:        {ebpf.Hash, 4, 4, 1024},
		mapStats:      {ebpf.PerCPUArray, 4, 8, 4},
	}
	for name, w := range want {
		m := spec.Maps[name]
		if m == nil {
			t.Fatalf("map %s missing", name)
		}
		if m.Type != w.typ || m.KeySize != w.key || m.ValueSize != w.val || m.MaxEntries != w.maxEntrie {
			t.Errorf("map %s: %v key %d value %d entries %d, want %v %d %d %d", name, m.Type, m.KeySize, m.ValueSize, m.MaxEntries, w.typ, w.key, w.val, w.maxEntrie)
		}
	}
	for _, v := range []string{"tcp_established_timeout_ms", "udp_stream_timeout_ms", "udp_timeout_ms"} {
		vs := spec.Variables[v]
		if vs == nil || !vs.Constant() || vs.Size() != 4 {
			t.Errorf("constant %s: %+v, want a 4-byte constant the loader sets", v, vs)
		}
	}
}
