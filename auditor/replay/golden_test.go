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
}
