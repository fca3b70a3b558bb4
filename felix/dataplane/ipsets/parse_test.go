package ipsets

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

const sampleSave = `create trcA hash:net family inet hashsize 1024 maxelem 1048576 bucketsize 12 initval 0x7b8e9d3c
add trcA 198.18.0.1
add trcA 198.18.1.0/24
create ports bitmap:port range 0-1024
add ports 80 comment "web server"
create trcB hash:ip,port family inet6 hashsize 1024 maxelem 65536 bucketsize 12 initval 0xf39647f7
add trcB 2001:db8::1,tcp:80
`

func TestParseSave(t *testing.T) {
	got, err := ParseSave([]byte(sampleSave))
	if err != nil {
		t.Fatal(err)
	}
	want := []*SavedSet{
		{Name: "trcA", Type: "hash:net", Family: "inet", Options: []string{"family", "inet", "hashsize", "1024", "maxelem", "1048576", "bucketsize", "12", "initval", "0x7b8e9d3c"}, Members: []string{"198.18.0.1", "198.18.1.0/24"}},
		{Name: "ports", Type: "bitmap:port", Family: "inet", Options: []string{"range", "0-1024"}, Members: []string{"80"}},
		{Name: "trcB", Type: "hash:ip,port", Family: "inet6", Options: []string{"family", "inet6", "hashsize", "1024", "maxelem", "65536", "bucketsize", "12", "initval", "0xf39647f7"}, Members: []string{"2001:db8::1,tcp:80"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	for _, bad := range []string{"create x\n", "add x 1\n", "create a hash:ip\ncreate a hash:ip\n", "add\n", "flush x\n"} {
		if _, err := ParseSave([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// FuzzParseSave: no panics, and accepted input survives a render/parse round trip.
func FuzzParseSave(f *testing.F) {
	f.Add([]byte(sampleSave))
	f.Add([]byte("create a hash:ip\nadd a 1.2.3.4\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sets, err := ParseSave(data)
		if err != nil {
			return
		}
		again, err := ParseSave([]byte(Render(sets)))
		if err != nil {
			t.Fatalf("re-parse failed: %v", err)
		}
		if diff := cmp.Diff(sets, again); diff != "" {
			t.Fatalf("round trip changed sets (-first +second):\n%s", diff)
		}
	})
}

// FuzzCanonicalMember: canonical forms are fixed points, so desired and kernel members compare.
func FuzzCanonicalMember(f *testing.F) {
	for _, s := range []string{"198.18.0.1", "2001:db8::1/64", "198.18.0.1,tcp:80", "::ffff:1.2.3.4", "1.2.3.4/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, ty := range []Type{TypeHashIP, TypeHashNet, TypeHashIPPort} {
			for _, fam := range []Family{FamilyInet, FamilyInet6} {
				c, err := CanonicalMember(ty, fam, s)
				if err != nil {
					continue
				}
				c2, err := CanonicalMember(ty, fam, c)
				if err != nil || c2 != c {
					t.Fatalf("%s/%s: %q -> %q -> %q, %v", ty, fam, s, c, c2, err)
				}
			}
		}
	})
}
