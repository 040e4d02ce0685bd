package adversary

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/internal/testing/conformance"
)

func changeEntry(t *testing.T, index byte, version uint64) []byte {
	t.Helper()
	rec := &api.ChangeRecord{Version: version, Kind: api.AuthDevice}
	rec.Index[0] = index
	b, err := rec.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLogSubstitutes: an armed substitution replaces exactly the matching
// entry of the next Append, once, keeping the count and order of entries;
// everything else passes through unchanged.
func TestLogSubstitutes(t *testing.T) {
	ctx := context.Background()
	skey, _, _ := note.GenerateKey(rand.Reader, "example.com/log")
	s, _ := note.NewSigner(skey)
	l := NewLog(conformance.NewMemoryLog("example.com/log", s))

	a1, a2, b1 := changeEntry(t, 1, 1), changeEntry(t, 1, 2), changeEntry(t, 2, 1)
	var target [32]byte
	target[0] = 1
	repl := []byte("replacement")
	l.Arm(ChangeOf(target, 2, func(h *api.ChangeRecord) []byte {
		if h.Version != 2 || h.Index != target {
			t.Errorf("substitute called with version %d", h.Version)
		}
		return repl
	}))
	if _, err := l.Append(ctx, [][]byte{a1, b1}); err != nil {
		t.Fatal(err)
	}
	if !l.Armed() || len(l.Substitutions()) != 0 {
		t.Fatalf("substituted an entry that does not match")
	}
	idx, err := l.Append(ctx, [][]byte{b1, a2, a1})
	if err != nil {
		t.Fatal(err)
	}
	if l.Armed() {
		t.Fatal("still armed after the substitution")
	}
	subs := l.Substitutions()
	if len(subs) != 1 || subs[0].Index != idx[1] || !bytes.Equal(subs[0].Honest, a2) || !bytes.Equal(subs[0].Replaced, repl) {
		t.Fatalf("substitutions %+v, indices %v", subs, idx)
	}
	// Once only: the same entry again goes through.
	if _, err := l.Append(ctx, [][]byte{a2}); err != nil {
		t.Fatal(err)
	}
	got, err := l.Entries(ctx, 0, 6)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]byte{a1, b1, b1, repl, a1, a2}
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("entry %d differs", i)
		}
	}
}

func TestCheckpointSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    uint64
		fail bool
	}{
		{"o\n12\nroot\n\n— sig\n", 12, false},
		{"o\n", 0, true},
		{"o\nx\nroot\n", 0, true},
	} {
		n, err := checkpointSize([]byte(c.in))
		if (err != nil) != c.fail || n != c.n {
			t.Errorf("%q: %d, %v", c.in, n, err)
		}
	}
}
