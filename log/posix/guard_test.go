package posix

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/tilecheck"
)

// guardLogSize gives a full level-0 tile and bundle (000) and partial ones
// (001.p/44), and a partial level-1 tile (000.p/1).
const guardLogSize = 300

// buildGuardLog writes a log of n entries in dir and closes it once a
// checkpoint covers them.
func buildGuardLog(t *testing.T, n int) (string, note.Signer, note.Verifier) {
	t.Helper()
	dir := t.TempDir()
	_, s, v := newKey(t, testOrigin)
	l := openLog(t, testConfig(dir, s))
	ctx := testCtx(t)
	for i := 0; i < n; i += 100 {
		es := make([][]byte, min(100, n-i))
		for j := range es {
			es[j] = fmt.Appendf(nil, "entry %d", i+j)
		}
		if _, err := l.Append(ctx, es); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Await(ctx, uint64(n-1)); err != nil {
		t.Fatal(err)
	}
	closeLog(t, l)
	return dir, s, v
}

// flipBit flips bit 0 of byte off of the file (negative: from the end).
func flipBit(t *testing.T, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off += len(b)
	}
	b[off] ^= 1
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestStartupRefusesCorruptStorage damages one file of a stopped log at a
// time and expects New to refuse with ErrCorrupt naming it; damage that
// no new checkpoint is built on (inside a full tile or bundle) is found by
// the full check only, and with the right-edge check alone the log starts
// and every checkpoint it signs extends the old one.
func TestStartupRefusesCorruptStorage(t *testing.T) {
	w := guardLogSize % 256
	edgeTile := layout.TilePath(0, 1, uint8(w))
	for _, tc := range []struct {
		name   string
		file   string
		off    int
		full   bool   // FullCheck
		starts bool   // the right-edge check does not see it
		names  string // the file the error must name
	}{
		// The reproduction: bit 0 of byte 32*(w-2)+5 of the
		// right-edge level-0 tile.
		{name: "right-edge tile", file: edgeTile, off: 32*(w-2) + 5, names: edgeTile},
		{name: "right-edge level-1 tile", file: layout.TilePath(1, 0, 1), off: 7, names: layout.TilePath(1, 0, 1)},
		{name: "right-edge entry bundle", file: layout.EntriesPath(1, uint8(w)), off: -1, names: layout.EntriesPath(1, uint8(w))},
		{name: "checkpoint signature", file: layout.CheckpointPath, off: -10, names: layout.CheckpointPath},
		{name: "checkpoint root", file: layout.CheckpointPath, off: len(testOrigin) + 6, names: layout.CheckpointPath},
		{name: "tree state root", file: treeStatePath, off: -5, names: treeStatePath},
		{name: "full tile, right-edge check", file: layout.TilePath(0, 0, 0), off: 325, starts: true},
		{name: "full tile, full check", file: layout.TilePath(0, 0, 0), off: 325, full: true, names: layout.TilePath(0, 0, 0)},
		{name: "full bundle, right-edge check", file: layout.EntriesPath(0, 0), off: 2, starts: true},
		{name: "full bundle, full check", file: layout.EntriesPath(0, 0), off: 2, full: true, names: layout.EntriesPath(0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, s, v := buildGuardLog(t, guardLogSize)
			before, err := os.ReadFile(filepath.Join(dir, layout.CheckpointPath))
			if err != nil {
				t.Fatal(err)
			}
			flipBit(t, filepath.Join(dir, tc.file), tc.off)
			cfg := testConfig(dir, s)
			cfg.Verifier, cfg.FullCheck = v, tc.full
			l, err := New(context.Background(), cfg)
			if !tc.starts {
				if !errors.Is(err, ErrCorrupt) {
					if l != nil {
						closeLog(t, l)
					}
					t.Fatalf("New: %v, want ErrCorrupt", err)
				}
				if !strings.Contains(err.Error(), tc.names) {
					t.Fatalf("New: %v, does not name %s", err, tc.names)
				}
				// The lock is released: a repaired directory opens.
				flipBit(t, filepath.Join(dir, tc.file), tc.off)
				closeLog(t, openLog(t, cfg))
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer closeLog(t, l)
			ctx := testCtx(t)
			if _, err := l.Append(ctx, [][]byte{[]byte("after")}); err != nil {
				t.Fatal(err)
			}
			after, err := l.Await(ctx, guardLogSize)
			if err != nil {
				t.Fatal(err)
			}
			checkExtends(t, l, v, before, after)
		})
	}
}

// checkExtends verifies that checkpoint after extends before, with a
// consistency proof from the log, as a client would.
func checkExtends(t *testing.T, l *Log, v note.Verifier, before, after []byte) {
	t.Helper()
	c0, _, err := log.ParseCheckpoint(before, testOrigin, v)
	if err != nil {
		t.Fatal(err)
	}
	c1, _, err := log.ParseCheckpoint(after, testOrigin, v)
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.ConsistencyProof(testCtx(t), c0.Size, c1.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, c0.Size, c1.Size, p, c0.Hash, c1.Hash); err != nil {
		t.Fatalf("checkpoint %d does not extend %d: %v", c1.Size, c0.Size, err)
	}
}

// TestGuardRefusesForkWhileRunning damages the right-edge tile under a
// running log: the next checkpoint Tessera builds on it does not extend
// the published one, and the guard refuses to sign it: the log reports
// the fault, refuses Appends, and the published checkpoint stays the old
// one.
func TestGuardRefusesForkWhileRunning(t *testing.T) {
	dir, s, v := buildGuardLog(t, guardLogSize)
	cfg := testConfig(dir, s)
	cfg.Verifier = v
	l := openLog(t, cfg)
	ctx := testCtx(t)
	before, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := guardLogSize % 256
	flipBit(t, filepath.Join(dir, layout.TilePath(0, 1, uint8(w))), 32*(w-2)+5)
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, _ = l.Append(actx, [][]byte{[]byte("on a damaged edge")}) // durable, never signed
	select {
	case <-l.Faulted():
	case <-time.After(10 * time.Second):
		t.Fatal("the log signed or kept trying: no fault within 10s")
	}
	if err := l.Fault(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), layout.TilePath(0, 1, uint8(w))) {
		t.Fatalf("Fault() = %v, want ErrCorrupt naming the tile", err)
	}
	if _, err := l.Append(ctx, [][]byte{[]byte("x")}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Append after the fault: %v, want ErrCorrupt", err)
	}
	time.Sleep(300 * time.Millisecond) // several checkpoint intervals
	raw, err := os.ReadFile(filepath.Join(dir, layout.CheckpointPath))
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != string(before) {
		t.Fatalf("a checkpoint was published after the fault:\n%s", raw)
	}
	if err := l.Close(ctx); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Close: %v, want the fault", err)
	}
}

// TestGuardSign checks the signer's rule directly: it signs a tree head
// that extends the last one signed and refuses, for good, one that does
// not (smaller, same size with another root, larger with a root the tiles
// do not prove consistent).
func TestGuardSign(t *testing.T) {
	dir, s, v := buildGuardLog(t, guardLogSize)
	raw, err := os.ReadFile(filepath.Join(dir, layout.CheckpointPath))
	if err != nil {
		t.Fatal(err)
	}
	cp, _, err := log.ParseCheckpoint(raw, testOrigin, v)
	if err != nil {
		t.Fatal(err)
	}
	body := func(size uint64, root []byte) []byte {
		return fmt.Appendf(nil, "%s\n%d\n%s\n", testOrigin, size, base64.StdEncoding.EncodeToString(root))
	}
	small, err := tilecheck.Root(context.Background(), tilecheck.Tiles{F: client.FileFetcher{Root: dir}, Latest: cp.Size}, 100)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), cp.Hash...)
	bad[0] ^= 1
	for _, tc := range []struct {
		name string
		msg  []byte
		ok   bool
	}{
		{"same tree head", body(cp.Size, cp.Hash), true},
		{"smaller tree", body(100, small), false},
		{"same size, other root", body(cp.Size, bad), false},
		{"other origin", []byte("other/origin\n300\n" + base64.StdEncoding.EncodeToString(cp.Hash) + "\n"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fault error
			g := &guardSigner{Signer: s, origin: testOrigin, tiles: client.FileFetcher{Root: dir},
				last: &treeHead{cp.Size, cp.Hash}, fault: func(err error) { fault = err }}
			_, err := g.Sign(tc.msg)
			if tc.ok {
				if err != nil || fault != nil {
					t.Fatalf("Sign: %v (fault %v)", err, fault)
				}
				return
			}
			if err == nil || fault == nil {
				t.Fatalf("Sign: %v (fault %v), want a refusal", err, fault)
			}
			// Refused for good: not even the valid tree head is signed now.
			if _, err := g.Sign(body(cp.Size, cp.Hash)); err == nil {
				t.Fatal("the guard signed after a refusal")
			}
		})
	}
}
