// Package logtest is the behavioural test suite that every [log.Log]
// backend passes. A backend's tests call [Run] with a [Factory] that opens
// logs of that backend; the suite checks the contract documented in package
// log: durable, ordered appends; bounded reads; proofs that verify against
// published, signed checkpoints; reopening keeps everything.
package logtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/log"
)

// Factory opens logs of one backend for the suite.
type Factory struct {
	// Open opens the log called name, creating it empty the first time.
	// Opening the same name again after Close gives the same log. Open
	// fails the test on error. The suite closes what it opens.
	Open func(t *testing.T, name string) log.Log
	// Origin of the checkpoints the backend signs.
	Origin string
	// Verifier of the log's checkpoint signature.
	Verifier note.Verifier
	// Timeout bounds each wait for a checkpoint; 0 means 30s.
	Timeout time.Duration
}

// Run runs the whole suite as subtests.
func Run(t *testing.T, f Factory) {
	t.Helper()
	if f.Timeout == 0 {
		f.Timeout = 30 * time.Second
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, f Factory)
	}{
		{"AppendReadVerify", testAppendReadVerify},
		{"InvalidEntriesStoreNothing", testInvalidEntries},
		{"OutOfRange", testOutOfRange},
		{"ConcurrentAppends", testConcurrentAppends},
		{"ConsistencyAcrossCheckpoints", testConsistencyAcrossCheckpoints},
		{"ReopenKeepsEverything", testReopen},
		{"AwaitHonoursContext", testAwaitContext},
		{"IndependentVerification", testIndependentVerification},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, f) })
	}
}

func (f Factory) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), f.Timeout)
	t.Cleanup(cancel)
	return ctx
}

func (f Factory) open(t *testing.T, name string) log.Log {
	l := f.Open(t, name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = l.Close(ctx) // a second Close after an explicit one may fail; that is fine here
	})
	return l
}

func entries(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "%s entry %d", prefix, i)
	}
	return out
}

// checkpoint is a verified checkpoint.
type checkpoint struct {
	size uint64
	root []byte
}

func (f Factory) verifyCheckpoint(t *testing.T, raw []byte) checkpoint {
	t.Helper()
	cp, _, err := log.ParseCheckpoint(raw, f.Origin, f.Verifier)
	if err != nil {
		t.Fatalf("published checkpoint does not verify: %v\n%s", err, raw)
	}
	return checkpoint{size: cp.Size, root: cp.Hash}
}

// append appends and awaits publication, returning the indices and the
// verified checkpoint that covers them.
func (f Factory) appendAndAwait(t *testing.T, l log.Log, es [][]byte) ([]uint64, checkpoint) {
	t.Helper()
	ctx := f.ctx(t)
	idx, err := l.Append(ctx, es)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if len(idx) != len(es) {
		t.Fatalf("Append returned %d indices for %d entries", len(idx), len(es))
	}
	var max uint64
	for _, i := range idx {
		max = maxU(max, i)
	}
	raw, err := l.Await(ctx, max)
	if err != nil {
		t.Fatalf("Await(%d): %v", max, err)
	}
	cp := f.verifyCheckpoint(t, raw)
	if cp.size <= max {
		t.Fatalf("Await(%d) returned a checkpoint of size %d", max, cp.size)
	}
	return idx, cp
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// readAll reads entries [start, end), paging as the backend wishes.
func readAll(t *testing.T, ctx context.Context, r log.Reader, start, end uint64) [][]byte {
	t.Helper()
	var out [][]byte
	for start < end {
		got, err := r.Entries(ctx, start, end)
		if err != nil {
			t.Fatalf("Entries(%d, %d): %v", start, end, err)
		}
		if len(got) == 0 || uint64(len(got)) > end-start {
			t.Fatalf("Entries(%d, %d) returned %d entries", start, end, len(got))
		}
		out = append(out, got...)
		start += uint64(len(got))
	}
	return out
}

// rootOf recomputes the RFC 6962 root of entries independently of the
// backend, with a compact range.
func rootOf(t *testing.T, es [][]byte) []byte {
	t.Helper()
	h := rfc6962.DefaultHasher
	if len(es) == 0 {
		return h.EmptyRoot()
	}
	rf := compact.RangeFactory{Hash: h.HashChildren}
	cr := rf.NewEmptyRange(0)
	for _, e := range es {
		if err := cr.Append(h.HashLeaf(e), nil); err != nil {
			t.Fatal(err)
		}
	}
	root, err := cr.GetRootHash(nil)
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func testAppendReadVerify(t *testing.T, f Factory) {
	l := f.open(t, "append-read-verify")
	ctx := f.ctx(t)
	want := entries("arv", 37)
	idx, cp := f.appendAndAwait(t, l, want)
	// Distinct indices, all within the checkpoint; a single writer's call
	// fills exactly the range after the earlier size.
	distinct := map[uint64]bool{}
	for _, i := range idx {
		if distinct[i] || i >= uint64(len(want)) {
			t.Fatalf("indices of one Append on an empty log are not a permutation of 0..%d: %v", len(want)-1, idx)
		}
		distinct[i] = true
	}
	// A later call gets larger indices.
	later, _ := f.appendAndAwait(t, l, entries("arv later", 3))
	for _, i := range later {
		if i < uint64(len(want)) {
			t.Fatalf("a later Append got index %d, below the %d entries appended before", i, len(want))
		}
	}
	all := readAll(t, ctx, l, 0, cp.size)
	if got := rootOf(t, all); !bytes.Equal(got, cp.root) {
		t.Fatalf("checkpoint root %x is not the root of the entries (%x)", cp.root, got)
	}
	for i, e := range want {
		if !bytes.Equal(all[idx[i]], e) {
			t.Errorf("entry %d: got %q, want %q", idx[i], all[idx[i]], e)
		}
	}
	// The latest checkpoint may have grown in the meantime; prove against cp.
	for i, e := range want {
		p, err := l.InclusionProof(ctx, idx[i], cp.size)
		if err != nil {
			t.Fatalf("InclusionProof(%d, %d): %v", idx[i], cp.size, err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, idx[i], cp.size, rfc6962.DefaultHasher.HashLeaf(e), p, cp.root); err != nil {
			t.Fatalf("inclusion proof for %d in %d does not verify: %v", idx[i], cp.size, err)
		}
		// The same proof must not verify for different bytes.
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, idx[i], cp.size, rfc6962.DefaultHasher.HashLeaf(append(e, 'x')), p, cp.root); err == nil {
			t.Fatalf("inclusion proof for %d verified for tampered bytes", idx[i])
		}
	}
	// Checkpoint() returns a checkpoint at least as large.
	raw, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	if latest := f.verifyCheckpoint(t, raw); latest.size < cp.size {
		t.Fatalf("Checkpoint() size %d is smaller than awaited size %d", latest.size, cp.size)
	}
}

func testInvalidEntries(t *testing.T, f Factory) {
	l := f.open(t, "invalid-entries")
	ctx := f.ctx(t)
	_, cp := f.appendAndAwait(t, l, entries("valid", 3))
	for _, tc := range []struct {
		name string
		es   [][]byte
	}{
		{"empty entry", [][]byte{[]byte("ok"), {}}},
		{"oversized entry", [][]byte{[]byte("ok"), make([]byte, log.MaxEntrySize+1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := l.Append(ctx, tc.es)
			if !errors.Is(err, log.ErrInvalidEntry) {
				t.Fatalf("Append(%s): got %v, want ErrInvalidEntry", tc.name, err)
			}
		})
	}
	// Nothing from the rejected batches was stored: the next valid append
	// lands right after the earlier one.
	idx, _ := f.appendAndAwait(t, l, entries("after", 1))
	if idx[0] != cp.size {
		t.Fatalf("after rejected appends, next index is %d, want %d: something was stored", idx[0], cp.size)
	}
	// A maximum-size entry is accepted.
	big := bytes.Repeat([]byte{0xAB}, log.MaxEntrySize)
	idx, _ = f.appendAndAwait(t, l, [][]byte{big})
	got := readAll(t, ctx, l, idx[0], idx[0]+1)
	if !bytes.Equal(got[0], big) {
		t.Fatalf("maximum-size entry read back differently")
	}
}

func testOutOfRange(t *testing.T, f Factory) {
	l := f.open(t, "out-of-range")
	ctx := f.ctx(t)
	_, cp := f.appendAndAwait(t, l, entries("oor", 5))
	// Let any later checkpoint settle: the bounds below are relative to the
	// latest published size, which cannot shrink.
	raw, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := f.verifyCheckpoint(t, raw).size
	if n < cp.size {
		t.Fatalf("checkpoint shrank from %d to %d", cp.size, n)
	}
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"entries start beyond size", func() error { _, err := l.Entries(ctx, n, n+1); return err }},
		{"entries end beyond size", func() error { _, err := l.Entries(ctx, 0, n+1); return err }},
		{"entries inverted", func() error { _, err := l.Entries(ctx, 3, 2); return err }},
		{"entries empty range", func() error { _, err := l.Entries(ctx, 2, 2); return err }},
		{"inclusion index beyond size", func() error { _, err := l.InclusionProof(ctx, n, n); return err }},
		{"inclusion size beyond published", func() error { _, err := l.InclusionProof(ctx, 0, n+100); return err }},
		{"consistency new beyond published", func() error { _, err := l.ConsistencyProof(ctx, 1, n+100); return err }},
		{"consistency inverted", func() error { _, err := l.ConsistencyProof(ctx, n, n-1); return err }},
		{"consistency from zero", func() error { _, err := l.ConsistencyProof(ctx, 0, n); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, log.ErrOutOfRange) {
				t.Fatalf("got %v, want ErrOutOfRange", err)
			}
		})
	}
	// Equal sizes: an empty consistency proof.
	p, err := l.ConsistencyProof(ctx, n, n)
	if err != nil || len(p) != 0 {
		t.Fatalf("ConsistencyProof(%d, %d) = %d hashes, %v; want empty", n, n, len(p), err)
	}
}

func testConcurrentAppends(t *testing.T, f Factory) {
	l := f.open(t, "concurrent")
	ctx := f.ctx(t)
	const workers, per = 8, 25
	var (
		mu   sync.Mutex
		seen = map[uint64][]byte{}
		wg   sync.WaitGroup
		errs = make(chan error, workers)
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				e := fmt.Appendf(nil, "worker %d entry %d", w, i)
				idx, err := l.Append(ctx, [][]byte{e})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if prev, dup := seen[idx[0]]; dup {
					mu.Unlock()
					errs <- fmt.Errorf("index %d returned for both %q and %q", idx[0], prev, e)
					return
				}
				seen[idx[0]] = e
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var max uint64
	for i := range seen {
		max = maxU(max, i)
	}
	raw, err := l.Await(ctx, max)
	if err != nil {
		t.Fatal(err)
	}
	cp := f.verifyCheckpoint(t, raw)
	all := readAll(t, ctx, l, 0, cp.size)
	for i, e := range seen {
		if !bytes.Equal(all[i], e) {
			t.Fatalf("entry %d: got %q, want %q", i, all[i], e)
		}
	}
	if got := rootOf(t, all); !bytes.Equal(got, cp.root) {
		t.Fatalf("checkpoint root does not match entries")
	}
}

func testConsistencyAcrossCheckpoints(t *testing.T, f Factory) {
	l := f.open(t, "consistency")
	ctx := f.ctx(t)
	var cps []checkpoint
	for round := range 4 {
		_, cp := f.appendAndAwait(t, l, entries(fmt.Sprintf("round %d", round), round*7+1))
		cps = append(cps, cp)
	}
	last := cps[len(cps)-1]
	for _, old := range cps {
		p, err := l.ConsistencyProof(ctx, old.size, last.size)
		if err != nil {
			t.Fatalf("ConsistencyProof(%d, %d): %v", old.size, last.size, err)
		}
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.size, last.size, p, old.root, last.root); err != nil {
			t.Fatalf("consistency %d -> %d does not verify: %v", old.size, last.size, err)
		}
		if old.size < last.size {
			bad := sha256.Sum256(old.root)
			if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.size, last.size, p, bad[:], last.root); err == nil {
				t.Fatalf("consistency proof verified against a forged old root")
			}
		}
	}
}

func testReopen(t *testing.T, f Factory) {
	ctx := f.ctx(t)
	l := f.Open(t, "reopen")
	idx, cp := f.appendAndAwait(t, l, entries("before", 10))
	before := readAll(t, ctx, l, 0, cp.size)
	if err := l.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := l.Append(ctx, entries("closed", 1)); err == nil {
		t.Errorf("Append after Close succeeded")
	}

	l2 := f.open(t, "reopen")
	raw, err := l2.Await(ctx, idx[len(idx)-1])
	if err != nil {
		t.Fatalf("Await after reopen: %v", err)
	}
	cp2 := f.verifyCheckpoint(t, raw)
	if cp2.size < cp.size {
		t.Fatalf("after reopen the checkpoint has size %d, before it was %d", cp2.size, cp.size)
	}
	after := readAll(t, ctx, l2, 0, cp.size)
	for i := range before {
		if !bytes.Equal(before[i], after[i]) {
			t.Fatalf("entry %d changed across reopen", i)
		}
	}
	p, err := l2.ConsistencyProof(ctx, cp.size, cp2.size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, cp.size, cp2.size, p, cp.root, cp2.root); err != nil {
		t.Fatalf("checkpoint after reopen is not consistent with the one before: %v", err)
	}
	idx2, _ := f.appendAndAwait(t, l2, entries("after", 3))
	if idx2[0] < cp.size {
		t.Fatalf("append after reopen got index %d, below the earlier size %d", idx2[0], cp.size)
	}
}

func testAwaitContext(t *testing.T, f Factory) {
	l := f.open(t, "await-context")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	// Nothing will ever be at this index.
	if _, err := l.Await(ctx, 1<<40); err == nil {
		t.Fatalf("Await for an index that will never exist returned without error")
	}
}

// testIndependentVerification checks the backend's checkpoints, entries and
// proofs with implementations it does not use: golang.org/x/mod/sumdb/tlog
// and note, transparency-dev/formats, directly and through the HTTP read
// API.
func testIndependentVerification(t *testing.T, f Factory) {
	l := f.open(t, "independent")
	for round, n := range []int{1, 2, 5, 64, 200} {
		f.appendAndAwait(t, l, entries(fmt.Sprintf("independent %d", round), n))
	}
	conformance.CheckReader(t, l, f.Origin, f.Verifier)
	conformance.CheckHTTP(t, l, f.Origin, f.Verifier)
}
