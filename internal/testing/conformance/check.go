// Package conformance checks that a [log.Reader] serves what the standards
// say, against implementations that share no code with the backends:
//
//   - checkpoints: C2SP tlog-checkpoint, parsed by
//     github.com/transparency-dev/formats/log and golang.org/x/mod/sumdb/note
//     and, for the size and root lines, golang.org/x/mod/sumdb/tlog;
//   - the tree: RFC 6962, recomputed from the entries with
//     golang.org/x/mod/sumdb/tlog (the Go checksum database's
//     implementation), proofs checked with both sumdb/tlog and
//     github.com/transparency-dev/merkle, and compared byte for byte with
//     the proofs sumdb/tlog builds itself (RFC 6962 proofs are unique).
//
// [CheckReader] is the suite every backend's tests run, directly and
// through the HTTP read API. [MemoryLog] is an in-memory reference backend
// for tests. The package's own tests hold the RFC 6962 known-answer tests.
package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	fmtlog "github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keytrans/kt/log"
)

// maxErrors is how many failures CheckReader reports before it stops.
const maxErrors = 10

// maxCheckedSize bounds the logs CheckReader checks: it reads every entry
// and keeps every hash in memory.
const maxCheckedSize = 1 << 24

// CheckReader checks everything r serves against independent
// implementations, and returns the entries of its latest checkpoint.
//
// It fetches the checkpoint and verifies it for origin with v, with
// transparency-dev/formats, with sumdb/note, with [log.ParseCheckpoint], and
// parses its size and root with sumdb/tlog; it reads every entry, paging as
// the reader wishes, and recomputes the root with sumdb/tlog; for a sample of
// tree sizes (always including the checkpoint's) it checks inclusion proofs
// for a sample of indices and consistency proofs from every earlier size
// (a sample of them for large trees), each verified with sumdb/tlog and
// transparency-dev/merkle and compared with the proof sumdb/tlog builds;
// finally it checks that requests beyond the checkpoint, and inverted
// ranges, fail with [log.ErrOutOfRange].
//
// The log must not grow while CheckReader runs: every entry and size it
// checks is that of the first checkpoint it fetched.
func CheckReader(t testing.TB, r log.Reader, origin string, v note.Verifier) [][]byte {
	t.Helper()
	c := &checker{t: t}
	ctx := t.Context()

	raw, err := r.Checkpoint(ctx)
	if err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	size, root := c.checkCheckpoint(raw, origin, v)
	if size > maxCheckedSize {
		t.Fatalf("checkpoint size %d: more than the %d entries CheckReader reads one by one", size, maxCheckedSize)
	}

	// Every entry, and the tree recomputed by sumdb/tlog.
	var entries [][]byte
	var leafHashes []tlog.Hash
	store := hashStore{}
	for start := uint64(0); start < size; {
		es, err := r.Entries(ctx, start, size)
		if err != nil {
			t.Fatalf("Entries(%d, %d): %v", start, size, err)
		}
		if len(es) == 0 || uint64(len(es)) > size-start {
			t.Fatalf("Entries(%d, %d) returned %d entries", start, size, len(es))
		}
		for _, e := range es {
			if err := log.CheckEntries([][]byte{e}); err != nil {
				t.Fatalf("entry %d: %v", start, err)
			}
			hs, err := tlog.StoredHashes(int64(start), e, store)
			if err != nil {
				t.Fatalf("sumdb/tlog StoredHashes(%d): %v", start, err)
			}
			store = append(store, hs...)
			entries = append(entries, e)
			leafHashes = append(leafHashes, tlog.RecordHash(e))
			start++
		}
	}
	got, err := tlog.TreeHash(int64(size), store)
	if err != nil {
		t.Fatalf("sumdb/tlog TreeHash(%d): %v", size, err)
	}
	if got != root {
		t.Fatalf("root of the %d entries, by sumdb/tlog: %x; checkpoint root: %x", size, got[:], root[:])
	}

	// Proofs for a sample of tree sizes.
	rng := rand.New(rand.NewPCG(size, 0x6b74))
	for _, n := range sample(rng, 1, size, 12) {
		rootN, err := tlog.TreeHash(int64(n), store)
		if err != nil {
			t.Fatalf("sumdb/tlog TreeHash(%d): %v", n, err)
		}
		for _, i := range sample(rng, 0, n-1, 24) {
			c.checkInclusion(r, store, i, n, leafHashes[i], rootN)
		}
		for _, m := range sample(rng, 1, n, 48) {
			rootM, err := tlog.TreeHash(int64(m), store)
			if err != nil {
				t.Fatalf("sumdb/tlog TreeHash(%d): %v", m, err)
			}
			c.checkConsistency(r, store, m, n, rootM, rootN)
		}
	}

	// The contract on ranges.
	c.wantOutOfRange("Entries beyond the checkpoint", func() error {
		_, err := r.Entries(ctx, size, size+1)
		return err
	})
	c.wantOutOfRange("Entries ending beyond the checkpoint", func() error {
		_, err := r.Entries(ctx, 0, size+1)
		return err
	})
	c.wantOutOfRange("InclusionProof in a tree beyond the checkpoint", func() error {
		_, err := r.InclusionProof(ctx, 0, size+1)
		return err
	})
	c.wantOutOfRange("ConsistencyProof to a tree beyond the checkpoint", func() error {
		_, err := r.ConsistencyProof(ctx, 1, size+1)
		return err
	})
	if size > 0 {
		c.wantOutOfRange("InclusionProof with index = size", func() error {
			_, err := r.InclusionProof(ctx, size, size)
			return err
		})
		c.wantOutOfRange("Entries with an inverted range", func() error {
			_, err := r.Entries(ctx, size, size-1)
			return err
		})
		c.wantError("Entries with an empty range", func() error {
			_, err := r.Entries(ctx, 0, 0)
			return err
		})
		c.wantError("ConsistencyProof from the empty tree", func() error {
			_, err := r.ConsistencyProof(ctx, 0, size)
			return err
		})
	}
	if size > 1 {
		c.wantOutOfRange("ConsistencyProof with old > new", func() error {
			_, err := r.ConsistencyProof(ctx, size, size-1)
			return err
		})
	}
	return entries
}

type checker struct {
	t      testing.TB
	errors int
}

func (c *checker) errorf(format string, args ...any) {
	c.t.Helper()
	c.errors++
	c.t.Errorf(format, args...)
	if c.errors >= maxErrors {
		c.t.Fatalf("stopping after %d errors", c.errors)
	}
}

// checkCheckpoint verifies the checkpoint with three parsers and returns its
// size and root.
func (c *checker) checkCheckpoint(raw []byte, origin string, v note.Verifier) (uint64, tlog.Hash) {
	t := c.t
	t.Helper()

	// transparency-dev/formats: what witnesses and Tessera clients use.
	cp, _, n1, err := fmtlog.ParseCheckpoint(raw, origin, v)
	if err != nil {
		t.Fatalf("checkpoint rejected by transparency-dev/formats: %v\n%s", err, raw)
	}

	// sumdb/note directly: the log's signature must be among the verified
	// ones, and the text must be what formats parsed.
	n2, err := note.Open(raw, note.VerifierList(v))
	if err != nil {
		t.Fatalf("checkpoint rejected by sumdb/note: %v", err)
	}
	if !slices.ContainsFunc(n2.Sigs, func(s note.Signature) bool {
		return s.Name == v.Name() && s.Hash == v.KeyHash()
	}) {
		t.Fatalf("checkpoint has no verified signature by %s", v.Name())
	}
	if n1.Text != n2.Text {
		t.Fatalf("formats and sumdb/note disagree on the note text: %q and %q", n1.Text, n2.Text)
	}

	// sumdb/tlog parses the size and root lines, canonically (no leading
	// zeros, a 32-byte hash); its own first line is fixed, so the origin
	// line is swapped for it.
	first, rest, _ := strings.Cut(n2.Text, "\n")
	if first != origin {
		t.Fatalf("checkpoint origin line %q, want %q", first, origin)
	}
	tree, err := tlog.ParseTree([]byte("go.sum database tree\n" + rest))
	if err != nil {
		t.Fatalf("checkpoint size and root rejected by sumdb/tlog: %v\n%s", err, n2.Text)
	}
	if uint64(tree.N) != cp.Size || !bytes.Equal(tree.Hash[:], cp.Hash) {
		t.Fatalf("sumdb/tlog reads size %d root %x; formats reads size %d root %x", tree.N, tree.Hash[:], cp.Size, cp.Hash)
	}

	// And our own parser.
	cp3, _, err := log.ParseCheckpoint(raw, origin, v)
	if err != nil {
		t.Fatalf("checkpoint rejected by log.ParseCheckpoint: %v", err)
	}
	if cp3.Size != cp.Size || !bytes.Equal(cp3.Hash, cp.Hash) || cp3.Origin != origin {
		t.Fatalf("log.ParseCheckpoint reads %+v; formats reads %+v", cp3, cp)
	}
	return cp.Size, tree.Hash
}

func (c *checker) checkInclusion(r log.Reader, store hashStore, i, n uint64, leaf, root tlog.Hash) {
	c.t.Helper()
	p, err := r.InclusionProof(c.t.Context(), i, n)
	if err != nil {
		c.errorf("InclusionProof(%d, %d): %v", i, n, err)
		return
	}
	want, err := tlog.ProveRecord(int64(n), int64(i), store)
	if err != nil {
		c.t.Fatalf("sumdb/tlog ProveRecord(%d, %d): %v", n, i, err)
	}
	tp, err := toTlog(p)
	if err != nil {
		c.errorf("InclusionProof(%d, %d): %v", i, n, err)
		return
	}
	if err := tlog.CheckRecord(tp, int64(n), root, int64(i), leaf); err != nil {
		c.errorf("InclusionProof(%d, %d) rejected by sumdb/tlog: %v", i, n, err)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, n, leaf[:], p, root[:]); err != nil {
		c.errorf("InclusionProof(%d, %d) rejected by transparency-dev/merkle: %v", i, n, err)
	}
	if !slices.Equal(tp, want) {
		c.errorf("InclusionProof(%d, %d) = %x, sumdb/tlog builds %x", i, n, p, want)
	}
}

func (c *checker) checkConsistency(r log.Reader, store hashStore, m, n uint64, rootM, rootN tlog.Hash) {
	c.t.Helper()
	p, err := r.ConsistencyProof(c.t.Context(), m, n)
	if err != nil {
		c.errorf("ConsistencyProof(%d, %d): %v", m, n, err)
		return
	}
	want, err := tlog.ProveTree(int64(n), int64(m), store)
	if err != nil {
		c.t.Fatalf("sumdb/tlog ProveTree(%d, %d): %v", n, m, err)
	}
	tp, err := toTlog(p)
	if err != nil {
		c.errorf("ConsistencyProof(%d, %d): %v", m, n, err)
		return
	}
	if err := tlog.CheckTree(tp, int64(n), rootN, int64(m), rootM); err != nil {
		c.errorf("ConsistencyProof(%d, %d) rejected by sumdb/tlog: %v", m, n, err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, m, n, p, rootM[:], rootN[:]); err != nil {
		c.errorf("ConsistencyProof(%d, %d) rejected by transparency-dev/merkle: %v", m, n, err)
	}
	if !slices.Equal(tp, want) {
		c.errorf("ConsistencyProof(%d, %d) = %x, sumdb/tlog builds %x", m, n, p, want)
	}
}

func (c *checker) wantOutOfRange(what string, f func() error) {
	c.t.Helper()
	if err := f(); !errors.Is(err, log.ErrOutOfRange) {
		c.errorf("%s: got error %v, want log.ErrOutOfRange", what, err)
	}
}

func (c *checker) wantError(what string, f func() error) {
	c.t.Helper()
	if err := f(); err == nil {
		c.errorf("%s: no error", what)
	}
}

func toTlog(p [][]byte) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(p))
	for i, h := range p {
		if len(h) != tlog.HashSize {
			return nil, fmt.Errorf("hash %d has %d bytes, want %d", i, len(h), tlog.HashSize)
		}
		out[i] = tlog.Hash(h)
	}
	return out, nil
}

// hashStore is a sumdb/tlog HashReader over the hashes that
// tlog.StoredHashes returned, in stored-hash-index order.
type hashStore []tlog.Hash

func (s hashStore) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(s)) {
			return nil, fmt.Errorf("stored hash %d not written", x)
		}
		out[i] = s[x]
	}
	return out, nil
}

// sample returns up to about k distinct values in [lo, hi], sorted: all of
// them when there are few, otherwise the edges, powers of two and their
// neighbours (where proofs change shape), and random values.
func sample(rng *rand.Rand, lo, hi uint64, k int) []uint64 {
	if hi < lo {
		return nil
	}
	if hi-lo < uint64(k) {
		out := make([]uint64, 0, hi-lo+1)
		for x := lo; x <= hi; x++ {
			out = append(out, x)
		}
		return out
	}
	set := map[uint64]bool{}
	add := func(x uint64) {
		if x >= lo && x <= hi {
			set[x] = true
		}
	}
	for _, x := range []uint64{lo, lo + 1, hi - 1, hi, lo + (hi-lo)/2} {
		add(x)
	}
	for b := 0; b < bits.Len64(hi) && len(set) < k; b += 1 + b/4 {
		p := uint64(1) << b
		add(p - 1)
		add(p)
		add(p + 1)
	}
	for len(set) < k {
		add(lo + rng.Uint64N(hi-lo+1))
	}
	out := make([]uint64, 0, len(set))
	for x := range set {
		out = append(out, x)
	}
	slices.Sort(out)
	return out
}
