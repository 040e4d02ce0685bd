package conformance_test

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/tlog"
)

// Proof verification cost depends only on the proof length, so the trees
// here are synthetic: every perfect subtree a proof needs gets a
// deterministic pseudo-random hash, and the proof is built from those with
// merkle's proof package. The roots are the ones those hashes imply, and
// sumdb/tlog must accept the proofs against them too (checked in setup).

func synthHash(id compact.NodeID) []byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:], uint64(id.Level))
	binary.BigEndian.PutUint64(b[8:], id.Index)
	h := sha256.Sum256(b[:])
	return h[:]
}

func synthProof(b *testing.B, n proof.Nodes, err error) [][]byte {
	if err != nil {
		b.Fatal(err)
	}
	hashes := make([][]byte, len(n.IDs))
	for i, id := range n.IDs {
		hashes[i] = synthHash(id)
	}
	p, err := n.Rehash(hashes, rfc6962.DefaultHasher.HashChildren)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

var benchSizes = []uint64{1_000_000, 10_000_000}

func BenchmarkVerifyInclusion(b *testing.B) {
	h := rfc6962.DefaultHasher
	for _, size := range benchSizes {
		index := size - size/3 - 1
		leaf := synthHash(compact.NewNodeID(0, index))
		n, err := proof.Inclusion(index, size)
		p := synthProof(b, n, err)
		root, err := proof.RootFromInclusionProof(h, index, size, leaf, p)
		if err != nil {
			b.Fatal(err)
		}
		tp := toTlog(b, p)
		if err := tlog.CheckRecord(tp, int64(size), tlog.Hash(root), int64(index), tlog.Hash(leaf)); err != nil {
			b.Fatalf("sumdb/tlog rejects the synthetic proof: %v", err)
		}
		b.Run(fmt.Sprintf("merkle/%dM/%d-hashes", size/1_000_000, len(p)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := proof.VerifyInclusion(h, index, size, leaf, p, root); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("sumdb-tlog/%dM/%d-hashes", size/1_000_000, len(p)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := tlog.CheckRecord(tp, int64(size), tlog.Hash(root), int64(index), tlog.Hash(leaf)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// impliedRoot returns the root VerifyConsistency computes for the side
// whose expected root is wrong.
func impliedRoot(b *testing.B, err error) []byte {
	var m proof.RootMismatchError
	if !errors.As(err, &m) {
		b.Fatalf("want a root mismatch, got %v", err)
	}
	return m.CalculatedRoot
}

func BenchmarkVerifyConsistency(b *testing.B) {
	h := rfc6962.DefaultHasher
	for _, size := range benchSizes {
		old := size/2 + 12345
		n, err := proof.Consistency(old, size)
		p := synthProof(b, n, err)
		dummy := make([]byte, 32)
		root1 := impliedRoot(b, proof.VerifyConsistency(h, old, size, p, dummy, dummy))
		root2 := impliedRoot(b, proof.VerifyConsistency(h, old, size, p, root1, dummy))
		tp := toTlog(b, p)
		if err := tlog.CheckTree(tp, int64(size), tlog.Hash(root2), int64(old), tlog.Hash(root1)); err != nil {
			b.Fatalf("sumdb/tlog rejects the synthetic proof: %v", err)
		}
		b.Run(fmt.Sprintf("merkle/%dM/%d-hashes", size/1_000_000, len(p)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := proof.VerifyConsistency(h, old, size, p, root1, root2); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("sumdb-tlog/%dM/%d-hashes", size/1_000_000, len(p)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := tlog.CheckTree(tp, int64(size), tlog.Hash(root2), int64(old), tlog.Hash(root1)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
