package omniwitness_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/keytrans/kt/internal/testing/omniwitness"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/witness"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// tree is an in-memory RFC 6962 tree built with golang.org/x/mod/sumdb/tlog,
// an implementation independent of the transparency-dev/merkle code the
// omniwitness verifies proofs with.
type tree struct {
	hashes []tlog.Hash // stored hashes, in tlog's storage order
	size   int64
}

func (tr *tree) append(t *testing.T, data []byte) {
	t.Helper()
	hs, err := tlog.StoredHashes(tr.size, data, tr)
	if err != nil {
		t.Fatal(err)
	}
	tr.hashes = append(tr.hashes, hs...)
	tr.size++
}

// ReadHashes implements tlog.HashReader.
func (tr *tree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(tr.hashes)) {
			return nil, fmt.Errorf("hash index %d out of range", x)
		}
		out[i] = tr.hashes[x]
	}
	return out, nil
}

func (tr *tree) root(t *testing.T) []byte {
	t.Helper()
	h, err := tlog.TreeHash(tr.size, tr)
	if err != nil {
		t.Fatal(err)
	}
	return h[:]
}

func (tr *tree) proof(_ context.Context, oldSize, newSize uint64) ([][]byte, error) {
	p, err := tlog.ProveTree(int64(newSize), int64(oldSize), tr)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(p))
	for i := range p {
		out[i] = p[i][:]
	}
	return out, nil
}

// TestOmniwitnessCosigns pushes checkpoints of a growing log through
// witness.Witnesser to the unmodified omniwitness, and checks its
// cosignatures with the policy.
func TestOmniwitnessCosigns(t *testing.T) {
	const origin = "example.com/kt-omniwitness-test"
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	logVerifier, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}

	url, wvkey := omniwitness.Start(t, omniwitness.Log{Origin: origin, VerifierKey: vkey})
	policy, err := witness.ParsePolicy(fmt.Appendf(nil, "log %s\nwitness omni %s %s\nquorum omni\n", vkey, wvkey, url))
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	wr, err := witness.NewWitnesser(policy, witness.WitnesserOpts{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tr := &tree{}
	grow := func(n int) []byte {
		for range n {
			tr.append(t, fmt.Appendf(nil, "entry %d", tr.size))
		}
		cp, err := log.SignCheckpoint(signer, origin, uint64(tr.size), tr.root(t))
		if err != nil {
			t.Fatal(err)
		}
		return cp
	}

	for _, n := range []int{1, 1, 2, 13, 100, 1000} {
		cp := grow(n)
		out, err := wr.Witness(ctx, cp, tr.proof)
		if err != nil {
			t.Fatalf("size %d: %v", tr.size, err)
		}
		// Still a valid checkpoint for the log...
		parsed, _, err := log.ParseCheckpoint(out, origin, logVerifier)
		if err != nil {
			t.Fatalf("size %d: witnessed checkpoint: %v", tr.size, err)
		}
		if parsed.Size != uint64(tr.size) {
			t.Fatalf("witnessed checkpoint has size %d, want %d", parsed.Size, tr.size)
		}
		// ...cosigned by the omniwitness, as the policy requires.
		cs, err := policy.Check(out)
		if err != nil {
			t.Fatalf("size %d: Check: %v", tr.size, err)
		}
		if _, ok := policy.QuorumTime(cs); !ok {
			t.Fatalf("size %d: no quorum time", tr.size)
		}
	}

	// A restarted log knows nothing of the witness: 409, then a resync.
	restarted, err := witness.NewWitnesser(policy, witness.WitnesserOpts{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	out, err := restarted.Witness(ctx, grow(5), tr.proof)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if _, err := policy.Check(out); err != nil {
		t.Fatal(err)
	}

	// The omniwitness refuses a fork: another root for the size it holds.
	fork, err := log.SignCheckpoint(signer, origin, uint64(tr.size), make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wr.Witness(ctx, fork, tr.proof); !errors.Is(err, witness.ErrConflict) {
		t.Errorf("forked checkpoint: error %v, want ErrConflict", err)
	}
	// And a bad consistency proof.
	next := grow(3)
	bad := func(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
		p, err := tr.proof(ctx, oldSize, newSize)
		if err == nil && len(p) > 0 {
			p[0] = make([]byte, 32)
		}
		return p, err
	}
	if _, err := wr.Witness(ctx, next, bad); !errors.Is(err, witness.ErrInvalidProof) {
		t.Errorf("bad proof: error %v, want ErrInvalidProof", err)
	}
	// A checkpoint signed by a key the witness does not trust.
	otherSKey, _, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	otherSigner, err := note.NewSigner(otherSKey)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := log.SignCheckpoint(otherSigner, origin, uint64(tr.size), tr.root(t))
	if err != nil {
		t.Fatal(err)
	}
	// SPEC(tlog-witness) says 403 Forbidden; this omniwitness version answers
	// 500 (its "no valid signature" error arrives wrapped in a way its HTTP
	// handler does not recognise). What matters here is that it refuses.
	_, err = wr.Witness(ctx, forged, tr.proof)
	var pe *witness.PolicyError
	if !errors.As(err, &pe) || len(pe.Cosigned) != 0 || len(pe.Failures) != 1 {
		t.Fatalf("checkpoint signed by another key: error %v, want a refusal", err)
	}
	if f := pe.Failures[0]; !errors.Is(f, witness.ErrLogSignature) && f.Status != 500 {
		t.Errorf("checkpoint signed by another key: %v, want 403 (or this omniwitness's 500)", f)
	}
	// The honest checkpoint still goes through after all that.
	if _, err := wr.Witness(ctx, next, tr.proof); err != nil {
		t.Errorf("honest checkpoint after the refusals: %v", err)
	}
}
