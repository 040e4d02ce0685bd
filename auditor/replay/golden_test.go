package replay_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/auditor/replay"
	"github.com/keytrans/kt/internal/testing/ktlog"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestStateGolden pins the saved-state encoding (an auditor's store holds
// it across upgrades): a change is a visible diff of testdata/state.golden,
// and the golden state must still restore.
func TestStateGolden(t *testing.T) {
	skey, vkey, err := note.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{9}, 32)), origin)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	k := logKey{s, v}
	b := ktlog.New(origin)
	b.Honest(3, 2)
	d := ktlog.Key("x")
	b.Change(ktlog.Index("h1"), api.AuthDevice, d, ktlog.Devices(d)) // a violation
	e := newEngine(t, k, b, false)
	e.Append(b.Entries()[:5])
	e.Checkpoint(k.checkpoint(t, b.Entries()[:5]))
	e.Append(b.Entries()[5:])
	e.Checkpoint(k.checkpoint(t, b.Entries()))
	got, _ := e.MarshalBinary()
	path := filepath.Join("testdata", "state.golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the saved-state encoding changed: bump the version in its magic and keep reading the old one")
	}
	r, err := replay.Restore(replay.Config{Origin: origin, Verifier: v}, want)
	if err != nil {
		t.Fatal(err)
	}
	if r.Size() != b.Len() || r.Clean().Size != 5 || r.Last().Size != b.Len() {
		t.Fatalf("restored size %d clean %d last %d", r.Size(), r.Clean().Size, r.Last().Size)
	}
	if n, first, _ := r.Violations(); n != 1 || first != b.Len()-1 {
		t.Fatalf("restored violations %d at %d", n, first)
	}
	if j, ok := r.HandleEntry(ktlog.Index("h1")); !ok || j != b.Len()-1 {
		t.Fatalf("restored position of h1: %d %v", j, ok)
	}

	// The kt-replay-state/v2 encoding (before the rotation records were
	// kept) restores to the same state.
	old2, err := os.ReadFile(filepath.Join("testdata", "state-v2.golden"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := replay.Restore(replay.Config{Origin: origin, Verifier: v}, old2)
	if err != nil {
		t.Fatal(err)
	}
	if m2, _ := r2.MarshalBinary(); !bytes.Equal(m2, want) {
		t.Fatal("the v2 state restores to another state")
	}

	// The kt-replay-state/v1 encoding (before the positions were kept)
	// restores to the same state with the positions unknown, and a
	// violation after it has no Prev until the index has a new record.
	old, err := os.ReadFile(filepath.Join("testdata", "state-v1.golden"))
	if err != nil {
		t.Fatal(err)
	}
	r1, err := replay.Restore(replay.Config{Origin: origin, Verifier: v}, old)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Size() != r.Size() || r1.Root() != r.Root() || r1.Handles() != r.Handles() {
		t.Fatal("the v1 state restores to another state")
	}
	if _, ok := r1.HandleEntry(ktlog.Index("h1")); ok {
		t.Fatal("a v1 state knows a position")
	}
	// The kt-replay-state/v3 encoding (before the re-indexing state of
	// design.md 11.2) restores to the same state, with no VRF rotation.
	old3, err := os.ReadFile(filepath.Join("testdata", "state-v3.golden"))
	if err != nil {
		t.Fatal(err)
	}
	r3, err := replay.Restore(replay.Config{Origin: origin, Verifier: v}, old3)
	if err != nil {
		t.Fatal(err)
	}
	if m3, _ := r3.MarshalBinary(); !bytes.Equal(m3, want) {
		t.Fatal("the v3 state restores to another state")
	}
	if seq, pending := r3.Reindexing(); seq != 0 || pending != 0 {
		t.Fatal("a v3 state restores with a re-indexing")
	}
	y := ktlog.Key("y") // not an authorizer: an R5 violation
	b.Change(ktlog.Index("h1"), api.AuthDevice, y, ktlog.Devices(y))
	vs := r1.Append(b.Entries()[r1.Size():])
	if len(vs) != 1 || vs[0].Prev != nil {
		t.Fatalf("violation after a v1 restore: %+v", vs)
	}
	vs = r.Append(b.Entries()[r.Size():])
	if len(vs) != 1 || vs[0].Prev == nil || *vs[0].Prev != b.Len()-2 {
		t.Fatalf("violation after a v2 restore: %+v", vs)
	}
}
