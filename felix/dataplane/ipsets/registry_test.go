package ipsets

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var ctx = context.Background()

func newTestRegistry(f *fakeIpset, threshold int) *Registry {
	return New(f, Options{SwapThreshold: threshold, Sleep: func(context.Context, time.Duration) error { return nil }})
}

var (
	metaA = Meta{Name: "trcA", Type: TypeHashIP, Family: FamilyInet}
	metaB = Meta{Name: "trcB", Type: TypeHashNet, Family: FamilyInet6}
	metaC = Meta{Name: "trcC", Type: TypeHashIPPort, Family: FamilyInet}
)

func mustT(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestFirstApplyAndNoop(t *testing.T) {
	f := newFakeIpset()
	r := newTestRegistry(f, 1000)
	mustT(t, r.AddOrReplace(metaA, []string{"198.18.0.2", "198.18.0.1", "::ffff:198.18.0.3"}))
	mustT(t, r.AddOrReplace(metaB, []string{"2001:db8:1000::1/128", "2001:db8:1000:1::5/64"}))
	mustT(t, r.AddOrReplace(metaC, []string{"198.18.0.1,tcp:80", "198.18.0.1,53"}))
	mustT(t, r.Apply(ctx))
	want := `create trcA hash:ip family inet hashsize 1024 maxelem 1048576
add trcA 198.18.0.1
add trcA 198.18.0.2
add trcA 198.18.0.3
create trcB hash:net family inet6 hashsize 1024 maxelem 1048576
add trcB 2001:db8:1000:1::/64
add trcB 2001:db8:1000::1
create trcC hash:ip,port family inet hashsize 1024 maxelem 1048576
add trcC 198.18.0.1,tcp:53
add trcC 198.18.0.1,tcp:80
`
	if diff := cmp.Diff([]string{want}, f.restores); diff != "" {
		t.Fatalf("payload (-want +got):\n%s", diff)
	}
	saves := f.saves
	mustT(t, r.Apply(ctx))
	if len(f.restores) != 1 || f.saves != saves {
		t.Fatalf("no-op apply restored %d / read %d times", len(f.restores)-1, f.saves-saves)
	}
	// A resync of an untouched kernel reads it back and finds nothing to write.
	mustT(t, r.Resync(ctx))
	if len(f.restores) != 1 {
		t.Fatalf("resync of a clean kernel wrote:\n%s", f.restores[1])
	}
}

func TestSmallDeltaAndSwap(t *testing.T) {
	f := newFakeIpset()
	r := newTestRegistry(f, 2)
	mustT(t, r.AddOrReplace(metaA, []string{"198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"}))
	mustT(t, r.AddOrReplace(metaB, []string{"2001:db8:1000::1"}))
	mustT(t, r.Apply(ctx))

	// Small delta: del/add lines for that set only.
	mustT(t, r.RemoveMembers("trcA", []string{"198.18.0.4"}))
	mustT(t, r.AddMembers("trcA", []string{"198.18.0.9"}))
	mustT(t, r.Apply(ctx))
	if diff := cmp.Diff("del trcA 198.18.0.4\nadd trcA 198.18.0.9\n", f.restores[1]); diff != "" {
		t.Fatalf("delta payload (-want +got):\n%s", diff)
	}

	// Large change (more than the threshold and than half the set): build and swap.
	mustT(t, r.AddOrReplace(metaA, []string{"198.18.1.1", "198.18.1.2", "198.18.0.1"}))
	mustT(t, r.Apply(ctx))
	want := `create trc-tmp hash:ip family inet hashsize 1024 maxelem 1048576
add trc-tmp 198.18.0.1
add trc-tmp 198.18.1.1
add trc-tmp 198.18.1.2
swap trc-tmp trcA
destroy trc-tmp
`
	if diff := cmp.Diff(want, f.restores[2]); diff != "" {
		t.Fatalf("swap payload (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]bool{"198.18.0.1": true, "198.18.1.1": true, "198.18.1.2": true}, f.sets["trcA"].members); diff != "" {
		t.Fatalf("kernel members (-want +got):\n%s", diff)
	}
	if _, ok := f.sets[TempName]; ok {
		t.Fatal("temp set left behind")
	}
}

func TestDeletesHeldUntilInSyncAndForeignUntouched(t *testing.T) {
	f := newFakeIpset()
	f.create("trcOld", "hash:ip", "inet", "198.18.5.5")
	f.create("KUBE-foreign", "hash:ip", "inet", "192.0.2.1")
	f.create("other", "hash:net", "inet6", "2001:db8::/64")
	r := newTestRegistry(f, 1000)
	mustT(t, r.AddOrReplace(metaA, []string{"198.18.0.1"}))
	mustT(t, r.Apply(ctx))
	if _, ok := f.sets["trcOld"]; !ok {
		t.Fatal("stale set destroyed before in-sync")
	}
	r.SetInSync()
	mustT(t, r.Apply(ctx))
	if diff := cmp.Diff("destroy trcOld\n", f.restores[len(f.restores)-1]); diff != "" {
		t.Fatalf("deletion payload (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"KUBE-foreign", "other", "trcA"}, f.order); diff != "" {
		t.Fatalf("sets (-want +got):\n%s", diff)
	}
	if !f.sets["KUBE-foreign"].members["192.0.2.1"] {
		t.Fatal("foreign set changed")
	}

	// Removing a desired set destroys it once in sync, and a set still in use is retried and reported.
	r.Remove("trcA")
	f.inUse["trcA"] = true
	err := r.Apply(ctx)
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("err = %v, want in-use failure", err)
	}
	delete(f.inUse, "trcA")
	mustT(t, r.Apply(ctx))
	if _, ok := f.sets["trcA"]; ok {
		t.Fatal("removed set survived")
	}
}

func TestResyncRepairsDrift(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(f *fakeIpset)
	}{
		{"set destroyed", func(f *fakeIpset) {
			delete(f.sets, "trcB")
			f.order = []string{"foreign", "trcA", "trcC"}
		}},
		{"member deleted", func(f *fakeIpset) { delete(f.sets["trcA"].members, "198.18.0.1") }},
		{"member added", func(f *fakeIpset) { f.sets["trcC"].members["198.18.0.7,udp:1"] = true }},
		{"type changed", func(f *fakeIpset) { f.sets["trcA"].typ = "hash:net" }},
		{"temp left over", func(f *fakeIpset) { f.create(TempName, "hash:ip", "inet", "198.18.9.9") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIpset()
			f.create("foreign", "hash:ip", "inet", "192.0.2.1")
			r := newTestRegistry(f, 1000)
			mustT(t, r.AddOrReplace(metaA, []string{"198.18.0.1", "198.18.0.2"}))
			mustT(t, r.AddOrReplace(metaB, []string{"2001:db8:1000::/64"}))
			mustT(t, r.AddOrReplace(metaC, []string{"198.18.0.1,tcp:80"}))
			r.SetInSync()
			mustT(t, r.Apply(ctx))
			want := f.render()
			tc.tamper(f)
			if f.render() == want {
				t.Fatal("tamper changed nothing")
			}
			mustT(t, r.Resync(ctx))
			if diff := cmp.Diff(want, f.render()); diff != "" {
				t.Fatalf("after resync (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRetryAfterPartialFailure(t *testing.T) {
	f := &flakyIpset{fakeIpset: newFakeIpset(), failures: 1}
	r := New(f, Options{Sleep: func(context.Context, time.Duration) error { return nil }})
	mustT(t, r.AddOrReplace(metaA, []string{"198.18.0.1", "198.18.0.2"}))
	mustT(t, r.Apply(ctx))
	if diff := cmp.Diff(map[string]bool{"198.18.0.1": true, "198.18.0.2": true}, f.sets["trcA"].members); diff != "" {
		t.Fatal(diff)
	}
	if f.saves != 2 {
		t.Fatalf("saves = %d, want a re-read after the failure", f.saves)
	}
}

// flakyIpset fails after applying only the first line of the next restores.
type flakyIpset struct {
	*fakeIpset
	failures int
}

func (f *flakyIpset) Run(c context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	if len(args) > 0 && args[0] == "restore" && f.failures > 0 {
		f.failures--
		first, _, _ := strings.Cut(string(stdin), "\n")
		_ = f.line(first)
		return nil, fmt.Errorf("ipset: Error in line 2: boom")
	}
	return f.fakeIpset.Run(c, stdin, name, args...)
}

func TestValidation(t *testing.T) {
	r := newTestRegistry(newFakeIpset(), 0)
	bad := []struct {
		m       Meta
		members []string
	}{
		{Meta{Name: "KUBE-x", Type: TypeHashIP, Family: FamilyInet}, nil},
		{Meta{Name: "trc" + strings.Repeat("x", 29), Type: TypeHashIP, Family: FamilyInet}, nil},
		{Meta{Name: TempName, Type: TypeHashIP, Family: FamilyInet}, nil},
		{Meta{Name: "trcX", Type: "bitmap:port", Family: FamilyInet}, nil},
		{Meta{Name: "trcX", Type: TypeHashIP, Family: "inet5"}, nil},
		{metaA, []string{"2001:db8::1"}},
		{metaA, []string{"not-an-ip"}},
		{metaB, []string{"198.18.0.0/15"}},
		{metaB, []string{"::/0"}},
		{metaC, []string{"198.18.0.1,icmp:8"}},
		{metaC, []string{"198.18.0.1,tcp:70000"}},
		{metaC, []string{"198.18.0.1"}},
	}
	for _, tc := range bad {
		if err := r.AddOrReplace(tc.m, tc.members); err == nil {
			t.Errorf("AddOrReplace(%+v, %v) accepted", tc.m, tc.members)
		}
	}
	if err := r.AddMembers("trcNope", []string{"198.18.0.1"}); err == nil {
		t.Error("AddMembers to an unknown set accepted")
	}
	if err := r.AddOrReplace(Meta{Name: "trc" + strings.Repeat("x", 28), Type: TypeHashIP, Family: FamilyInet}, nil); err != nil {
		t.Errorf("31-char name rejected: %v", err)
	}
}

func TestCanonicalMember(t *testing.T) {
	tests := []struct {
		t    Type
		f    Family
		in   string
		want string
	}{
		{TypeHashIP, FamilyInet, " 198.18.0.1 ", "198.18.0.1"},
		{TypeHashIP, FamilyInet6, "2001:DB8::0001", "2001:db8::1"},
		{TypeHashNet, FamilyInet, "198.18.3.7/16", "198.18.0.0/16"},
		{TypeHashNet, FamilyInet, "198.18.3.7/32", "198.18.3.7"},
		{TypeHashNet, FamilyInet, "198.18.3.7", "198.18.3.7"},
		{TypeHashNet, FamilyInet6, "2001:db8:1000::9/48", "2001:db8:1000::/48"},
		{TypeHashIPPort, FamilyInet6, "2001:db8::1,udp:053", "2001:db8::1,udp:53"},
		{TypeHashIPPort, FamilyInet, "198.18.0.1,8080", "198.18.0.1,tcp:8080"},
	}
	for _, tc := range tests {
		got, err := CanonicalMember(tc.t, tc.f, tc.in)
		if err != nil {
			t.Errorf("CanonicalMember(%s, %q): %v", tc.t, tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("CanonicalMember(%s, %q) = %q, want %q", tc.t, tc.in, got, tc.want)
		}
	}
}

func TestRecreateInUseDoesNotBlockOtherSets(t *testing.T) {
	f := newFakeIpset()
	f.create("trcA", "hash:net", "inet", "198.18.0.0/24") // wrong type, and in use
	f.inUse["trcA"] = true
	r := newTestRegistry(f, 1000)
	mustT(t, r.AddOrReplace(metaA, []string{"198.18.0.1"}))
	mustT(t, r.AddOrReplace(Meta{Name: "trcZ", Type: TypeHashIP, Family: FamilyInet}, []string{"198.18.0.9"}))
	if err := r.Apply(ctx); err == nil {
		t.Fatal("recreating an in-use set reported success")
	}
	if s, ok := f.sets["trcZ"]; !ok || !s.members["198.18.0.9"] {
		t.Fatal("other set held up by the failing recreate")
	}
	delete(f.inUse, "trcA")
	mustT(t, r.Apply(ctx))
	if f.sets["trcA"].typ != "hash:ip" || !f.sets["trcA"].members["198.18.0.1"] {
		t.Fatalf("trcA not recreated: %+v", f.sets["trcA"])
	}
}

func TestNameFor(t *testing.T) {
	a4, a6, b4 := NameFor(FamilyInet, "selector:a"), NameFor(FamilyInet6, "selector:a"), NameFor(FamilyInet, "selector:b")
	for _, n := range []string{a4, a6, b4} {
		if err := (Meta{Name: n, Type: TypeHashIP, Family: FamilyInet}).Validate(); err != nil {
			t.Errorf("NameFor gave an invalid name: %v", err)
		}
	}
	if a4 == a6 || a4 == b4 || a4 != NameFor(FamilyInet, "selector:a") || !strings.HasPrefix(a6, "trc6-") {
		t.Errorf("names not distinct/stable: %s %s %s", a4, a6, b4)
	}
}

func TestIncrementalChangesNetOut(t *testing.T) {
	f := newFakeIpset()
	r := newTestRegistry(f, 1000)
	mustT(t, r.AddOrReplace(metaA, []string{"198.18.0.1", "198.18.0.2"}))
	mustT(t, r.Apply(ctx))
	// Added and removed again before the next apply: nothing to write.
	mustT(t, r.AddMembers("trcA", []string{"198.18.0.9"}))
	mustT(t, r.RemoveMembers("trcA", []string{"198.18.0.9"}))
	// Removed and re-added: nothing either.
	mustT(t, r.RemoveMembers("trcA", []string{"198.18.0.1"}))
	mustT(t, r.AddMembers("trcA", []string{"198.18.0.1"}))
	mustT(t, r.Apply(ctx))
	if len(f.restores) != 1 {
		t.Fatalf("net-zero changes wrote %q", f.restores[1:])
	}
	// Sequences of deltas across applies keep the kernel exact.
	for i, step := range []struct {
		add, del []string
	}{
		{add: []string{"198.18.0.3"}},
		{del: []string{"198.18.0.1", "198.18.0.3"}},
		{add: []string{"198.18.0.1", "198.18.0.4"}, del: []string{"198.18.0.2"}},
	} {
		mustT(t, r.AddMembers("trcA", step.add))
		mustT(t, r.RemoveMembers("trcA", step.del))
		mustT(t, r.Apply(ctx))
		want := map[string]bool{}
		for _, m := range r.Members("trcA") {
			want[m] = true
		}
		if diff := cmp.Diff(want, f.sets["trcA"].members); diff != "" {
			t.Fatalf("step %d: kernel (-want +got):\n%s", i, diff)
		}
	}
	if diff := cmp.Diff([]string{"198.18.0.1", "198.18.0.4"}, r.Members("trcA")); diff != "" {
		t.Fatal(diff)
	}
}

// TestPrime: a read made ahead is what the first apply plans from (no second ipset save) and it is
// used once; a Resync reads the kernel again.
func TestPrime(t *testing.T) {
	f := newFakeIpset()
	mustT(t, f.line("create trcA hash:ip family inet hashsize 1024 maxelem 1048576"))
	mustT(t, f.line("add trcA 198.18.0.9"))
	r := newTestRegistry(f, 1000)
	mustT(t, r.Prime(ctx))
	if f.saves != 1 || len(f.restores) != 0 {
		t.Fatalf("prime: %d saves, %d restores; want one read and no write", f.saves, len(f.restores))
	}
	mustT(t, r.AddOrReplace(metaA, []string{"198.18.0.1"}))
	mustT(t, r.ApplyUpdates(ctx))
	if f.saves != 1 {
		t.Errorf("first apply read the kernel again (%d saves)", f.saves)
	}
	want := []string{"del trcA 198.18.0.9\nadd trcA 198.18.0.1\n"}
	if diff := cmp.Diff(want, f.restores); diff != "" {
		t.Fatalf("payload planned from the primed read (-want +got):\n%s", diff)
	}
	mustT(t, r.Prime(ctx))
	mustT(t, f.line("del trcA 198.18.0.1")) // tampering after the read
	mustT(t, r.Resync(ctx))
	if !f.sets["trcA"].members["198.18.0.1"] {
		t.Error("resync planned from the primed read and missed the tampering")
	}
}

// TestReadAhead: a resync read made on another goroutine repairs drift without a second read
// when nothing was written in between; after a write, finish reads again.
func TestReadAhead(t *testing.T) {
	f := newFakeIpset()
	r := newTestRegistry(f, 1000)
	mustT(t, r.AddOrReplace(metaA, []string{"198.18.0.1", "198.18.0.2"}))
	mustT(t, r.Apply(ctx))

	mustT(t, f.line("del trcA 198.18.0.2")) // tampering
	read, finish := r.ReadAhead()
	done := make(chan struct{})
	go func() { read(ctx); close(done) }()
	<-done
	saves := f.saves
	mustT(t, finish(ctx))
	if f.saves != saves {
		t.Errorf("finish read again (%d saves) though nothing was written since the read", f.saves-saves)
	}
	if !f.sets["trcA"].members["198.18.0.2"] {
		t.Error("not repaired from the read-ahead")
	}

	read, finish = r.ReadAhead()
	read(ctx)
	mustT(t, r.AddMembers("trcA", []string{"198.18.0.3"}))
	mustT(t, r.Apply(ctx))
	saves = f.saves
	mustT(t, finish(ctx))
	if f.saves != saves+1 {
		t.Errorf("finish after a write: %d saves, want a fresh read", f.saves-saves)
	}
	if got := len(f.sets["trcA"].members); got != 3 {
		t.Errorf("trcA has %d members after finish, want 3", got)
	}
}

// TestDeferDeletions: with DeferDeletions, Apply, Resync and a read-ahead's finish repair and
// update but destroy nothing (the caller's tables may still use the set); ApplyDeletions does.
func TestDeferDeletions(t *testing.T) {
	f := newFakeIpset()
	r := New(f, Options{DeferDeletions: true, Sleep: func(context.Context, time.Duration) error { return nil }})
	mustT(t, r.AddOrReplace(metaA, []string{"198.18.0.1"}))
	mustT(t, r.AddOrReplace(metaC, []string{"198.18.0.1,tcp:80"}))
	r.SetInSync()
	mustT(t, r.Apply(ctx))
	r.Remove(metaC.Name)
	f.create("trcStale", "hash:ip", "inet")
	mustT(t, r.Apply(ctx))
	mustT(t, r.Resync(ctx))
	read, finish := r.ReadAhead()
	read(ctx)
	mustT(t, finish(ctx))
	for _, n := range []string{metaC.Name, "trcStale"} {
		if _, ok := f.sets[n]; !ok {
			t.Fatalf("%s destroyed before ApplyDeletions", n)
		}
	}
	mustT(t, r.ApplyDeletions(ctx))
	for _, n := range []string{metaC.Name, "trcStale"} {
		if _, ok := f.sets[n]; ok {
			t.Errorf("%s still there after ApplyDeletions", n)
		}
	}
	if _, ok := f.sets[metaA.Name]; !ok {
		t.Error("a wanted set was destroyed")
	}
}
