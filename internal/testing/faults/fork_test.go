package faults

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api/layout"

	"github.com/keytrans/kt/api/ktpb"
)

// flip flips bit 0 of byte off of a file (negative: from its end).
func flip(t *testing.T, path string, off int) {
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

// edgeTile is the position: the level-0 tile on the right edge of
// a tree of size n and the offset of byte 5 of its last-but-one hash.
func edgeTile(n uint64) (string, int) {
	w := int(n % 256)
	if w < 2 {
		// The edge tile is full (or holds one hash): take the full one.
		return layout.TilePath(0, n/256-1, 0), 32*254 + 5
	}
	return layout.TilePath(0, n/256, uint8(w)), 32*(w-2) + 5
}

// largestFile returns the largest regular file under dir.
func largestFile(t *testing.T, dir string) string {
	t.Helper()
	var best string
	var size int64
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() > size && !strings.HasSuffix(p, "LOCK") {
			best, size = p, fi.Size()
		}
		return nil
	})
	if best == "" {
		t.Fatalf("no file in %s", dir)
	}
	return best
}

// TestNeverSignsAFork is issue 17 item 1 through the ktd binary: a log of
// a few hundred entries is built, ktd is stopped (SIGTERM), one bit of one
// stored file is flipped, and ktd is restarted. Where the damage is on
// what new checkpoints are built on (the right-edge tile of the issue's
// reproduction, the right-edge entry bundle, the checkpoint file, Tessera's
// tree state), ktd refuses to start with an error naming the file; damage
// inside a full tile is found at start with log.full_check; damage that no
// check at start sees (a full tile without the full check, the directory's
// state store) must not lead to a fork either: ktd then starts, and every
// checkpoint it signs extends the one it signed before, proved by the
// log's own consistency proof, as a client checks it. No run may sign a
// checkpoint that does not extend the last one.
func TestNeverSignsAFork(t *testing.T) {
	type damage struct {
		file string // relative to DATA_DIR
		off  int
	}
	for _, tc := range []struct {
		name   string
		where  func(t *testing.T, dataDir string, n uint64) damage
		extra  []string
		refuse bool
	}{
		{name: "right-edge tile", refuse: true, where: func(t *testing.T, _ string, n uint64) damage {
			p, off := edgeTile(n)
			return damage{filepath.Join("log", p), off}
		}},
		{name: "right-edge entry bundle", refuse: true, where: func(t *testing.T, _ string, n uint64) damage {
			return damage{filepath.Join("log", layout.EntriesPath(n/256, uint8(n%256))), -3}
		}},
		{name: "checkpoint file", refuse: true, where: func(*testing.T, string, uint64) damage {
			return damage{filepath.Join("log", "checkpoint"), -20}
		}},
		{name: "tree state", refuse: true, where: func(*testing.T, string, uint64) damage {
			return damage{filepath.Join("log", ".state", "treeState"), -6}
		}},
		{name: "full tile, full check", refuse: true, extra: []string{"--log-full-check"}, where: func(*testing.T, string, uint64) damage {
			return damage{filepath.Join("log", layout.TilePath(0, 0, 0)), 325}
		}},
		{name: "full tile, right-edge check", where: func(*testing.T, string, uint64) damage {
			return damage{filepath.Join("log", layout.TilePath(0, 0, 0)), 325}
		}},
		{name: "state store", where: func(t *testing.T, dataDir string, _ uint64) damage {
			p := largestFile(t, filepath.Join(dataDir, "state"))
			rel, _ := filepath.Rel(dataDir, p)
			fi, _ := os.Stat(p)
			return damage{rel, int(fi.Size() / 2)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			p := startKtd(t, flags(dataDir))
			k := loadKeys(t, dataDir)
			cc := dial(t, p.grpc)
			dc, lc := ktpb.NewDirectoryClient(cc), ktpb.NewLogClient(cc)
			if acked := enrollMany(t, k, dc, "a", 300, 16); len(acked) != 300 {
				t.Fatalf("%d of 300 enrollments acknowledged", len(acked))
			}
			_, size, _ := k.checkpoint(t, lc)
			k.waitSize(t, lc, size)
			p.stop(t)
			n, root := k.fileCheckpoint(t, dataDir)

			d := tc.where(t, dataDir, n)
			flip(t, filepath.Join(dataDir, d.file), d.off)
			t.Logf("log size %d; flipped bit 0 of byte %d of %s", n, d.off, d.file)

			p2, serving, err := launch(t, flags(dataDir, tc.extra...))
			if tc.refuse {
				if serving {
					t.Fatalf("ktd started on a damaged %s", d.file)
				}
				if err == nil {
					t.Fatal("ktd exited with status 0 on damaged storage")
				}
				name := strings.TrimPrefix(d.file, "log"+string(filepath.Separator))
				if !strings.Contains(p2.logs.String(), name) {
					t.Fatalf("ktd's error does not name %s:\n%s", name, p2.logs)
				}
				if m, r := k.fileCheckpoint2(dataDir); m != n || !slices.Equal(r, root) {
					if d.file != filepath.Join("log", "checkpoint") {
						t.Fatalf("ktd published checkpoint %d after refusing to start", m)
					}
				}
				return
			}
			if !serving {
				// Refusing is also safe; but these damages are not on
				// what the next checkpoints are built on.
				t.Logf("ktd refused to start: %v\n%s", err, p2.logs)
				return
			}
			cc2 := dial(t, p2.grpc)
			dc2, lc2 := ktpb.NewDirectoryClient(cc2), ktpb.NewLogClient(cc2)
			enrollMany(t, k, dc2, "b", 20, 4)
			deadline := time.Now().Add(20 * time.Second)
			for {
				_, m, r := k.checkpoint(t, lc2)
				if m > n {
					pr, err := lc2.GetConsistencyProof(t.Context(), &ktpb.GetConsistencyProofRequest{OldSize: n, NewSize: m})
					if err != nil {
						t.Fatalf("GetConsistencyProof(%d, %d): %v", n, m, err)
					}
					if err := proof.VerifyConsistency(rfc6962.DefaultHasher, n, m, pr.GetHashes(), root, r); err != nil {
						t.Fatalf("FORK: checkpoint %d does not extend %d: %v", m, n, err)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("no new checkpoint within 20s")
				}
				time.Sleep(50 * time.Millisecond)
			}
			p2.stop(t)
		})
	}
}

// fileCheckpoint2 is fileCheckpoint without failing: 0, nil when the file
// does not verify.
func (k *keys) fileCheckpoint2(dataDir string) (uint64, []byte) {
	raw, err := os.ReadFile(filepath.Join(dataDir, "log", "checkpoint"))
	if err != nil {
		return 0, nil
	}
	c, _, err := parseCheckpoint(raw, k)
	if err != nil {
		return 0, nil
	}
	return c.Size, c.Hash
}

// TestForkRefusedWhileRunning damages the right-edge tile under a running
// ktd (idle: no heartbeat epochs), then makes a change: the checkpoint
// built on the damaged edge does not extend the published one, the log
// refuses to sign it, and ktd exits non-zero naming the tile. The
// published checkpoint is still the one from before, and a restart
// refuses to start until the tile is repaired.
func TestForkRefusedWhileRunning(t *testing.T) {
	dataDir := t.TempDir()
	args := flags(dataDir, "--directory-heartbeat-interval", "1h")
	p := startKtd(t, args)
	k := loadKeys(t, dataDir)
	cc := dial(t, p.grpc)
	dc, lc := ktpb.NewDirectoryClient(cc), ktpb.NewLogClient(cc)
	enrollMany(t, k, dc, "a", 300, 16)
	// Idle: the file checkpoint stops changing once the last epoch is
	// published.
	var n uint64
	for stable := 0; stable < 5; {
		time.Sleep(100 * time.Millisecond)
		m, _ := k.fileCheckpoint(t, dataDir)
		if m == n {
			stable++
		} else {
			n, stable = m, 0
		}
	}
	_, served, _ := k.checkpoint(t, lc)
	if served != n {
		t.Fatalf("served checkpoint %d, file %d", served, n)
	}
	before, err := os.ReadFile(filepath.Join(dataDir, "log", "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	file, off := edgeTile(n)
	flip(t, filepath.Join(dataDir, "log", file), off)
	_, _ = dc.Enroll(t.Context(), &ktpb.EnrollRequest{Change: k.enrollment(t, "late@faults.example")})
	select {
	case err := <-p.exited:
		if err == nil {
			t.Fatal("ktd exited with status 0")
		}
		if !strings.Contains(p.logs.String(), "refusing to sign") || !strings.Contains(p.logs.String(), file) {
			t.Fatalf("ktd's exit does not say it refused to sign over %s:\n%s", file, p.logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ktd still runs 30s after its storage was damaged")
	}
	after, err := os.ReadFile(filepath.Join(dataDir, "log", "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Fatalf("a checkpoint was published over the damaged tile:\n%s", after)
	}
	// The damage is now below the tree state, in the tiles it was built on:
	// a restart refuses too.
	if p2, serving, _ := launch(t, args); serving {
		t.Fatalf("ktd restarted on damaged storage\n%s", p2.logs)
	}
}
