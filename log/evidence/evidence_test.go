package evidence_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/evidence"
)

const origin = "example.com/kt"

type key struct {
	s note.Signer
	v note.Verifier
}

func newKey(name string) key {
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		panic(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	return key{s, v}
}

// forked returns two logs with the same first `common` entries, then
// different ones, each `size` entries long, and every checkpoint of each
// (checkpoints[i] has size i+1).
func forked(t testing.TB, k key, common, sizeA, sizeB int) (a, b *conformance.MemoryLog, cpa, cpb [][]byte) {
	ctx := context.Background()
	a = conformance.NewMemoryLog(origin, k.s)
	b = conformance.NewMemoryLog(origin, k.s)
	grow := func(l *conformance.MemoryLog, name string, n int) [][]byte {
		var cps [][]byte
		for i := range n {
			e := fmt.Sprintf("entry %d", i)
			if i >= common {
				e += " of " + name
			}
			if _, err := l.Append(ctx, [][]byte{[]byte(e)}); err != nil {
				t.Fatal(err)
			}
			cp, _ := l.Checkpoint(ctx)
			cps = append(cps, cp)
		}
		return cps
	}
	return a, b, grow(a, "a", sizeA), grow(b, "b", sizeB)
}

func TestBuildAndVerify(t *testing.T) {
	ctx := context.Background()
	k := newKey(origin)
	for _, tc := range []struct{ common, m, n int }{
		{0, 1, 1}, {0, 1, 2}, {0, 1, 7}, {1, 2, 2}, {1, 2, 5}, {3, 4, 4}, {3, 4, 9},
		{2, 3, 8}, {5, 6, 7}, {7, 8, 16}, {8, 13, 40}, {16, 17, 33}, {0, 2, 3},
	} {
		t.Run(fmt.Sprintf("common%d_%d_%d", tc.common, tc.m, tc.n), func(t *testing.T) {
			_, lb, cpa, cpb := forked(t, k, tc.common, tc.m, tc.n)
			x, y := cpa[tc.m-1], cpb[tc.n-1]
			bundle, err := evidence.Build(ctx, k.v, y, x, lb) // either order
			if err != nil {
				t.Fatal(err)
			}
			raw := bundle.Marshal()
			f, err := evidence.Verify(raw, k.v)
			if err != nil {
				t.Fatalf("%v\n%s", err, raw)
			}
			if f.A.Size != uint64(tc.m) || f.B.Size != uint64(tc.n) {
				t.Fatalf("fork sizes %d, %d", f.A.Size, f.B.Size)
			}
			// RootAtA is tree B's own root at A's size (an independent
			// record: B's checkpoint of that size).
			if tc.m < tc.n {
				cp, _, _ := log.ParseCheckpoint(cpb[tc.m-1], origin, k.v)
				if !bytes.Equal(cp.Hash, f.RootAtA) {
					t.Fatal("RootAtA is not tree B's root at size A")
				}
			}
			again, _ := evidence.Build(ctx, k.v, x, y, lb)
			if !bytes.Equal(again.Marshal(), raw) {
				t.Fatal("the bundle depends on the argument order")
			}
			p, err := evidence.Parse(raw)
			if err != nil || !bytes.Equal(p.Marshal(), raw) {
				t.Fatalf("round trip: %v", err)
			}
			tamper(t, k, p)
		})
	}
}

// tamper changes every part of a valid bundle and expects the typed error.
func tamper(t *testing.T, k key, good *evidence.Bundle) {
	t.Helper()
	clone := func() *evidence.Bundle {
		c := &evidence.Bundle{A: bytes.Clone(good.A), B: bytes.Clone(good.B)}
		for _, h := range good.Proof {
			c.Proof = append(c.Proof, bytes.Clone(h))
		}
		return c
	}
	check := func(name string, b *evidence.Bundle, want ...error) {
		t.Helper()
		_, err := b.Verify(k.v)
		for _, w := range want {
			if errors.Is(err, w) {
				return
			}
		}
		t.Errorf("%s: got %v, want %v", name, err, want)
	}
	for i := range good.Proof {
		for _, bit := range []int{0, 7, 255} {
			b := clone()
			b.Proof[i][bit/8] ^= 1 << (bit % 8)
			check(fmt.Sprintf("proof hash %d bit %d", i, bit), b, evidence.ErrProof)
		}
	}
	if len(good.Proof) > 0 {
		b := clone()
		b.Proof = b.Proof[:len(b.Proof)-1]
		check("proof shortened", b, evidence.ErrProof)
		b = clone()
		b.Proof = append(b.Proof, make([]byte, 32))
		check("proof lengthened", b, evidence.ErrProof)
		b = clone()
		b.Proof = b.Proof[1:]
		check("first proof hash dropped", b, evidence.ErrProof)
	} else {
		b := clone()
		b.Proof = [][]byte{make([]byte, 32)}
		check("proof on equal sizes", b, evidence.ErrMalformed)
	}
	b := clone()
	b.A, b.B = b.B, b.A
	check("swapped", b, evidence.ErrOrder, evidence.ErrProof)
	b = clone()
	b.A = b.B
	check("same checkpoint twice", b, evidence.ErrNoFork, evidence.ErrMalformed)
	for _, which := range []string{"A", "B"} {
		b = clone()
		n := &b.A
		if which == "B" {
			n = &b.B
		}
		(*n)[len(*n)-10] ^= 1 // inside the signature's base64
		check(which+" signature", b, evidence.ErrCheckpoint)
		b = clone()
		n = &b.A
		if which == "B" {
			n = &b.B
		}
		*n = bytes.Replace(*n, []byte(origin+"\n"), []byte(origin+"\n9"), 1)
		check(which+" size edited", b, evidence.ErrCheckpoint)
	}
	other := newKey(origin)
	if _, err := good.Verify(other.v); !errors.Is(err, evidence.ErrCheckpoint) {
		t.Errorf("verified under another key of the same name: %v", err)
	}
	if _, err := good.Verify(newKey("other.example/kt").v); !errors.Is(err, evidence.ErrCheckpoint) {
		t.Errorf("verified for another origin: %v", err)
	}
}

// TestNoForkNoEvidence: consistent checkpoints never make a bundle, and a
// proof source in the other view is caught.
func TestNoForkNoEvidence(t *testing.T) {
	ctx := context.Background()
	k := newKey(origin)
	la, lb, cpa, cpb := forked(t, k, 10, 12, 20)
	if _, err := evidence.Build(ctx, k.v, cpa[2], cpa[11], la); !errors.Is(err, evidence.ErrNoFork) {
		t.Errorf("consistent pair in log a: %v", err)
	}
	for _, pair := range [][2][]byte{{cpb[9], cpb[19]}, {cpa[4], cpb[15]}, {cpa[9], cpb[9]}, {cpa[0], cpa[0]}, {cpa[3], cpb[7]}} {
		if _, err := evidence.Build(ctx, k.v, pair[0], pair[1], lb); !errors.Is(err, evidence.ErrNoFork) {
			t.Errorf("consistent pair: %v", err)
		}
	}
	// The fork 12(a) vs 20(b), with proofs from log a: a's tree has no size
	// 20 (out of range); with a's checkpoint of size 12 vs b's size 11,
	// the larger tree is a's and log b cannot prove it.
	if _, err := evidence.Build(ctx, k.v, cpa[11], cpb[19], la); err == nil {
		t.Error("built from the smaller tree's log")
	}
	if _, err := evidence.Build(ctx, k.v, cpb[10], cpa[11], lb); !errors.Is(err, evidence.ErrProof) {
		t.Error("built from the wrong tree")
	}
	// A bundle whose proof is an honest consistency proof (between
	// consistent checkpoints) is no evidence.
	p, _ := lb.ConsistencyProof(ctx, 5, 20)
	b := &evidence.Bundle{A: cpb[4], B: cpb[19], Proof: p}
	if _, err := b.Verify(k.v); !errors.Is(err, evidence.ErrNoFork) {
		t.Errorf("honest proof: %v", err)
	}
	// Cross-check with sumdb/tlog: our proofs are real RFC 6962 proofs.
	hashes := func(ps [][]byte) tlog.TreeProof {
		var out tlog.TreeProof
		for _, h := range ps {
			out = append(out, tlog.Hash(h))
		}
		return out
	}
	c5, _, _ := log.ParseCheckpoint(cpb[4], origin, k.v)
	c20, _, _ := log.ParseCheckpoint(cpb[19], origin, k.v)
	if err := tlog.CheckTree(hashes(p), 20, tlog.Hash(c20.Hash), 5, tlog.Hash(c5.Hash)); err != nil {
		t.Fatal(err)
	}
}

func TestParseRejects(t *testing.T) {
	ctx := context.Background()
	k := newKey(origin)
	_, lb, cpa, cpb := forked(t, k, 2, 3, 9)
	good, err := evidence.Build(ctx, k.v, cpa[2], cpb[8], lb)
	if err != nil {
		t.Fatal(err)
	}
	raw := string(good.Marshal())
	for name, s := range map[string]string{
		"empty":            "",
		"no final NL":      strings.TrimSuffix(raw, "\n"),
		"CRLF":             strings.ReplaceAll(raw, "\n", "\r\n"),
		"other header":     strings.Replace(raw, "kt-evidence/v1", "kt-evidence/v2", 1),
		"one checkpoint":   strings.Join(strings.SplitAfter(raw, "\n")[:2], ""),
		"double space":     strings.Replace(raw, "checkpoint ", "checkpoint  ", 1),
		"unknown line":     raw + "comment x\n",
		"blank line":       raw + "\n",
		"short hash":       raw + "proof AAAA\n",
		"unpadded base64":  strings.Replace(raw, "=\n", "\n", 1),
		"proof first":      "kt-evidence/v1\nproof " + strings.Repeat("A", 43) + "=\n" + strings.Join(strings.SplitAfter(raw, "\n")[1:], ""),
		"huge":             raw + strings.Repeat("proof "+strings.Repeat("A", 43)+"=\n", 200),
		"noncanonical b64": strings.Replace(raw, "=\n", "=\n", 1) + "proof " + strings.Repeat("A", 42) + "B=\n",
	} {
		if _, err := evidence.Parse([]byte(s)); !errors.Is(err, evidence.ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	ctx := context.Background()
	k := newKey(origin)
	_, lb, cpa, cpb := forked(f, k, 2, 4, 9)
	for _, pair := range [][2][]byte{{cpa[3], cpb[8]}, {cpa[2], cpb[2]}} {
		b, err := evidence.Build(ctx, k.v, pair[0], pair[1], lb)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b.Marshal())
	}
	f.Add([]byte("kt-evidence/v1\n"))
	// kt-evidence/v2 (Parse reads both versions).
	for _, s := range goldenSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		b, err := evidence.Parse(in)
		if err != nil {
			return
		}
		if !bytes.Equal(b.Marshal(), in) {
			t.Fatal("parsed bundle re-encodes differently")
		}
		fk, err := b.Verify(k.v)
		if err == nil && fk.A.Size > fk.B.Size {
			t.Fatal("verified out of order")
		}
	})
}

// TestAllSmallForks: for every fork point and pair of sizes up to 12
// (every shape of the RFC 9162 algorithm, powers of two included), Build
// makes a bundle that verifies and whose RootAtA is tree B's own root at
// A's size; and every consistent pair of one tree gives ErrNoFork.
func TestAllSmallForks(t *testing.T) {
	ctx := context.Background()
	k := newKey(origin)
	const max = 12
	_, lb, _, cpb := forked(t, k, 0, max, max)
	for common := 0; common < max; common++ {
		_, lb2, cpa, cpb2 := forked(t, k, common, max, max)
		for m := 1; m <= max; m++ {
			for n := m; n <= max; n++ {
				b, err := evidence.Build(ctx, k.v, cpa[m-1], cpb2[n-1], lb2)
				if m <= common {
					// A is in the common prefix: consistent with B.
					if !errors.Is(err, evidence.ErrNoFork) {
						t.Fatalf("common %d, %d vs %d: %v", common, m, n, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("common %d, %d vs %d: %v", common, m, n, err)
				}
				f, err := b.Verify(k.v)
				if err != nil {
					t.Fatal(err)
				}
				if m < n {
					c, _, _ := log.ParseCheckpoint(cpb2[m-1], origin, k.v)
					if !bytes.Equal(f.RootAtA, c.Hash) {
						t.Fatalf("common %d, %d vs %d: RootAtA is not B's root at %d", common, m, n, m)
					}
					// Independent check with sumdb/tlog: the proof lines
					// (without the prepended subtree hash) are the RFC 6962
					// proof between B's tree at m and at n.
					p := b.Proof
					if m&(m-1) == 0 {
						p = p[1:]
					}
					var tp tlog.TreeProof
					for _, h := range p {
						tp = append(tp, tlog.Hash(h))
					}
					if err := tlog.CheckTree(tp, int64(n), tlog.Hash(f.B.Hash), int64(m), tlog.Hash(f.RootAtA)); err != nil {
						t.Fatalf("common %d, %d vs %d: sumdb/tlog rejects the proof: %v", common, m, n, err)
					}
				}
			}
		}
	}
	// One tree: never a fork.
	for m := 1; m <= max; m++ {
		for n := m; n <= max; n++ {
			if _, err := evidence.Build(ctx, k.v, cpb[m-1], cpb[n-1], lb); !errors.Is(err, evidence.ErrNoFork) {
				t.Fatalf("%d vs %d of one tree: %v", m, n, err)
			}
		}
	}
}
