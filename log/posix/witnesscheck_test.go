package posix

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/keytrans/kt/log"
)

// TestBehindWitnesses: a log reopened on storage behind what its witness
// cosigned (SetSize: as if it had cosigned a larger checkpoint) refuses to
// open with ErrBehindWitnesses and signs nothing; one at another root at
// the same size too; the control, the witness at the log's own size, opens.
func TestBehindWitnesses(t *testing.T) {
	w := newWitnessed(t, 1)
	dir := t.TempDir()
	l := openLog(t, w.config(dir, 1))
	ctx := testCtx(t)
	idx, err := l.Append(ctx, [][]byte{[]byte("a"), []byte("b")})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := l.Await(ctx, idx[1])
	if err != nil {
		t.Fatal(err)
	}
	closeLog(t, l)
	size, _ := w.cosignedBy(t, raw)
	root := make([]byte, 32)
	cpPath := filepath.Join(dir, "checkpoint")

	for _, tc := range []struct {
		name string
		size uint64
		root []byte
	}{
		{"witness ahead", size + 5, root},
		{"witness at another root", size, root},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w.witnesses[0].SetSize(testOrigin, tc.size, tc.root)
			before, _ := os.ReadFile(cpPath)
			_, err := New(context.Background(), w.config(dir, 1))
			if !errors.Is(err, ErrBehindWitnesses) {
				t.Fatalf("New: %v, want ErrBehindWitnesses", err)
			}
			if after, _ := os.ReadFile(cpPath); string(after) != string(before) {
				t.Errorf("the checkpoint changed")
			}
		})
	}

	// Control: the witness at the log's checkpoint.
	cp, _, err := log.ParseCheckpoint(raw, testOrigin, w.verifier)
	if err != nil {
		t.Fatal(err)
	}
	w.witnesses[0].SetSize(testOrigin, size, cp.Hash)
	l = openLog(t, w.config(dir, 1))
	closeLog(t, l)
}
