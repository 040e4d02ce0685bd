package witness_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytrans/kt/internal/testing/testwitness"
	"github.com/keytrans/kt/log/witness"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
)

// env is a log with an in-memory Merkle tree and test witnesses on
// httptest servers.
type env struct {
	lg    *testLog
	tree  *testonly.Tree
	ws    []*testwitness.Witness
	urls  []string
	proof witness.ProofFunc
	// proofCalls counts calls to proof by old size.
	mu         sync.Mutex
	proofCalls map[uint64]int
}

func newEnv(t *testing.T, n int) *env {
	t.Helper()
	e := &env{
		lg:         newTestLog(t, "example.com/kt-test"),
		tree:       testonly.New(rfc6962.DefaultHasher),
		proofCalls: make(map[uint64]int),
	}
	e.proof = func(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
		e.mu.Lock()
		e.proofCalls[oldSize]++
		e.mu.Unlock()
		return e.tree.ConsistencyProof(oldSize, newSize)
	}
	for i := range n {
		w, err := testwitness.New(fmt.Sprintf("w%d.example", i))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.AddLog(e.lg.origin, e.lg.vkey); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(w)
		t.Cleanup(srv.Close)
		e.ws = append(e.ws, w)
		e.urls = append(e.urls, srv.URL+"/")
	}
	return e
}

// policy returns a policy naming the witnesses W0, W1, ... with the given
// quorum rule appended.
func (e *env) policy(t *testing.T, rule string) *witness.Policy {
	t.Helper()
	var b strings.Builder
	for i, w := range e.ws {
		fmt.Fprintf(&b, "witness W%d %s %s\n", i, w.VerifierKey(), e.urls[i])
	}
	b.WriteString(rule)
	p, err := witness.ParsePolicy([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// grow appends n entries and returns the log-signed checkpoint.
func (e *env) grow(t *testing.T, n int) []byte {
	t.Helper()
	for range n {
		e.tree.AppendData(fmt.Appendf(nil, "entry %d", e.tree.Size()))
	}
	return e.lg.checkpoint(t, e.tree.Size(), e.tree.Hash())
}

var quietLogger = slog.New(slog.DiscardHandler)

func newWitnesser(t *testing.T, p *witness.Policy, opts witness.WitnesserOpts) *witness.Witnesser {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger
	}
	w, err := witness.NewWitnesser(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestWitnessSequence(t *testing.T) {
	e := newEnv(t, 3)
	p := e.policy(t, "group every all W0 W1 W2\nquorum every\n")
	wr := newWitnesser(t, p, witness.WitnesserOpts{})
	ctx := context.Background()
	for _, n := range []int{1, 1, 5, 100, 1000} {
		cp := e.grow(t, n)
		out, err := wr.Witness(ctx, cp, e.proof)
		if err != nil {
			t.Fatalf("size %d: %v", e.tree.Size(), err)
		}
		if !strings.HasPrefix(string(out), string(cp)) {
			t.Fatalf("witnessed checkpoint does not start with the log's signed checkpoint:\n%s", out)
		}
		cs, err := p.Check(out)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if len(cs) != 3 {
			t.Fatalf("%d cosignatures, want 3", len(cs))
		}
		for i, w := range e.ws {
			if s, _ := w.Size(e.lg.origin); s != e.tree.Size() {
				t.Errorf("witness %d at size %d, want %d", i, s, e.tree.Size())
			}
		}
	}
	// One proof per size step, shared by the three witnesses; none for the
	// first checkpoint (old size 0).
	for old, calls := range e.proofCalls {
		if calls != 1 {
			t.Errorf("%d proof calls from size %d, want 1", calls, old)
		}
	}
	if len(e.proofCalls) != 4 {
		t.Errorf("proofs from sizes %v, want 4 distinct sizes", e.proofCalls)
	}
	// Witnessing the same checkpoint again works (old size = size, no proof).
	cp := e.lg.checkpoint(t, e.tree.Size(), e.tree.Hash())
	if _, err := wr.Witness(ctx, cp, e.proof); err != nil {
		t.Fatalf("re-witnessing the same checkpoint: %v", err)
	}
}

// TestWitnessResync: a witness that knows the log better than the Witnesser
// answers 409 with its size, and the Witnesser retries with the right proof.
func TestWitnessResync(t *testing.T) {
	e := newEnv(t, 2)
	p := e.policy(t, "group every all W0 W1\nquorum every\n")
	ctx := context.Background()
	first := newWitnesser(t, p, witness.WitnesserOpts{})
	if _, err := first.Witness(ctx, e.grow(t, 7), e.proof); err != nil {
		t.Fatal(err)
	}
	// A new Witnesser (a restarted log) knows nothing of the witnesses.
	second := newWitnesser(t, p, witness.WitnesserOpts{})
	out, err := second.Witness(ctx, e.grow(t, 10), e.proof)
	if err != nil {
		t.Fatalf("Witness after restart: %v", err)
	}
	if _, err := p.Check(out); err != nil {
		t.Fatal(err)
	}
	for i, w := range e.ws {
		st := w.Statuses()
		if st[http.StatusConflict] != 1 || st[http.StatusOK] != 2 {
			t.Errorf("witness %d statuses %v, want one 409 and two 200", i, st)
		}
	}
	if e.proofCalls[7] != 1 {
		t.Errorf("proof from size 7 fetched %d times, want 1", e.proofCalls[7])
	}

	// The witness moved on without us (another log instance): 409, resync.
	cp := e.grow(t, 3)
	e.ws[0].SetSize(e.lg.origin, e.tree.Size(), e.tree.Hash())
	if _, err := second.Witness(ctx, cp, e.proof); err != nil {
		t.Fatalf("Witness after the witness moved on: %v", err)
	}
}

func TestWitnessFailures(t *testing.T) {
	otherKey := newCosigner(t, "w1.example") // w1's name, another key
	otherSigner := plainSigner(t, otherKey)
	for _, tc := range []struct {
		name string
		// setup runs before the checkpoint is witnessed (at size 10, after
		// all witnesses cosigned size 5).
		setup func(t *testing.T, e *env)
		// rule replaces the quorum "all of W0 W1 W2" when not empty.
		rule    string
		opts    witness.WitnesserOpts
		proof   witness.ProofFunc
		wantErr error
		status  int
	}{
		{
			name:    "refused with 503",
			setup:   func(t *testing.T, e *env) { e.ws[1].SetBehavior(testwitness.Behavior{Status: 503}) },
			wantErr: witness.ErrWitnessStatus,
			status:  503,
		},
		{
			name:    "rate limited",
			setup:   func(t *testing.T, e *env) { e.ws[1].SetBehavior(testwitness.Behavior{Status: 429}) },
			wantErr: witness.ErrWitnessStatus,
			status:  429,
		},
		{
			name:  "hangs past the timeout",
			setup: func(t *testing.T, e *env) { e.ws[1].SetBehavior(testwitness.Behavior{Hang: true}) },
			// Only W1 is asked, so that the short timeout cannot make
			// another witness fail first on a loaded machine.
			rule:    "quorum W1\n",
			opts:    witness.WitnesserOpts{Timeout: 100 * time.Millisecond},
			wantErr: context.DeadlineExceeded,
		},
		{
			name: "cosigns with another key",
			setup: func(t *testing.T, e *env) {
				e.ws[1].SetBehavior(testwitness.Behavior{SignWith: cosigV1Signer(t, otherKey)})
			},
			wantErr: witness.ErrBadResponse,
			status:  200,
		},
		{
			name: "cosigns with a plain Ed25519 signature",
			setup: func(t *testing.T, e *env) {
				e.ws[1].SetBehavior(testwitness.Behavior{SignWith: otherSigner})
			},
			wantErr: witness.ErrBadResponse,
			status:  200,
		},
		{
			name:    "corrupt cosignature",
			setup:   func(t *testing.T, e *env) { e.ws[1].SetBehavior(testwitness.Behavior{Corrupt: true}) },
			wantErr: witness.ErrBadResponse,
			status:  200,
		},
		{
			name:    "unknown log",
			setup:   func(t *testing.T, e *env) { e.ws[1].RemoveLog(e.lg.origin) },
			wantErr: witness.ErrUnknownLog,
			status:  404,
		},
		{
			name: "log key the witness does not trust",
			setup: func(t *testing.T, e *env) {
				other := newTestLog(t, e.lg.origin)
				if err := e.ws[1].AddLog(e.lg.origin, other.vkey); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: witness.ErrLogSignature,
			status:  403,
		},
		{
			name: "bad consistency proof",
			proof: func(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
				return [][]byte{hash32(1), hash32(2), hash32(3)}, nil
			},
			wantErr: witness.ErrInvalidProof,
			status:  422,
		},
		{
			name: "proof function fails",
			proof: func(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
				return nil, errors.New("no proof today")
			},
			wantErr: nil, // a plain error, checked by message below
		},
		{
			name: "witness holds another root for the same size",
			setup: func(t *testing.T, e *env) {
				e.ws[1].SetSize(e.lg.origin, 10, hash32(7))
			},
			wantErr: witness.ErrConflict,
			status:  409,
		},
		{
			name: "witness is ahead of the log",
			setup: func(t *testing.T, e *env) {
				e.ws[1].SetSize(e.lg.origin, 11, hash32(7))
			},
			wantErr: witness.ErrConflict,
			status:  409,
		},
		{
			name: "witness keeps answering the same conflicting size",
			setup: func(t *testing.T, e *env) {
				e.ws[1].SetBehavior(testwitness.Behavior{ConflictSize: 3})
			},
			wantErr: witness.ErrBadResponse,
			status:  409,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 3)
			p := e.policy(t, "group every all W0 W1 W2\nquorum every\n")
			ctx := context.Background()
			// All witnesses cosign size 5, through another Witnesser: the
			// one under test learns their sizes from 409 answers.
			if _, err := newWitnesser(t, p, witness.WitnesserOpts{}).Witness(ctx, e.grow(t, 5), e.proof); err != nil {
				t.Fatal(err)
			}
			if tc.rule != "" {
				p = e.policy(t, tc.rule)
			}
			tc.opts.Logger = quietLogger
			wr := newWitnesser(t, p, tc.opts)
			cp := e.grow(t, 5)
			if tc.setup != nil {
				tc.setup(t, e)
			}
			proof := e.proof
			if tc.proof != nil {
				proof = tc.proof
			}
			out, err := wr.Witness(ctx, cp, proof)
			if err == nil {
				t.Fatalf("Witness succeeded:\n%s", out)
			}
			var pe *witness.PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T), want *PolicyError", err, err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v, want one wrapping %v", err, tc.wantErr)
			}
			if tc.proof != nil && tc.wantErr == nil && !strings.Contains(err.Error(), "no proof today") {
				t.Errorf("error %v does not carry the proof function's error", err)
			}
			if len(pe.Failures) == 0 {
				t.Fatal("PolicyError has no failures")
			}
			// W1 is the failing witness; with a bad proof, every witness
			// fails and the Witnesser gives up after the first failure.
			var f1 *witness.WitnessError
			for _, f := range pe.Failures {
				if f.Witness == "W1" || tc.proof != nil {
					f1 = f
				}
			}
			if f1 == nil {
				t.Fatalf("W1 not among the failures: %v", err)
			}
			if tc.status != 0 && f1.Status != tc.status {
				t.Errorf("W1 failure status %d, want %d", f1.Status, tc.status)
			}
		})
	}
}

// TestWitnessQuorumEarly: the Witnesser returns once the quorum is met,
// without waiting for a witness that hangs (its timeout is an hour).
func TestWitnessQuorumEarly(t *testing.T) {
	e := newEnv(t, 3)
	p := e.policy(t, "group maj 2 W0 W1 W2\nquorum maj\n")
	e.ws[2].SetBehavior(testwitness.Behavior{Hang: true})
	wr := newWitnesser(t, p, witness.WitnesserOpts{Timeout: time.Hour})
	out, err := wr.Witness(context.Background(), e.grow(t, 3), e.proof)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := p.Check(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].Witness != "W0" || cs[1].Witness != "W1" {
		t.Fatalf("cosignatures %+v, want W0 and W1", cs)
	}
}

// TestWitnessGiveUpEarly: once a failure makes the quorum impossible, the
// Witnesser returns without waiting for a witness that hangs.
func TestWitnessGiveUpEarly(t *testing.T) {
	e := newEnv(t, 3)
	p := e.policy(t, "group every all W0 W1 W2\nquorum every\n")
	e.ws[0].SetBehavior(testwitness.Behavior{Status: http.StatusInternalServerError})
	e.ws[2].SetBehavior(testwitness.Behavior{Hang: true})
	wr := newWitnesser(t, p, witness.WitnesserOpts{Timeout: time.Hour})
	_, err := wr.Witness(context.Background(), e.grow(t, 3), e.proof)
	var pe *witness.PolicyError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v, want *PolicyError", err)
	}
	if len(pe.Failures) != 1 || pe.Failures[0].Witness != "W0" {
		t.Fatalf("failures %v, want only W0's", pe.Failures)
	}
}

// TestWitnessAlreadyCosigned: a checkpoint that already satisfies the policy
// is returned as it is, without requests.
func TestWitnessAlreadyCosigned(t *testing.T) {
	e := newEnv(t, 2)
	p := e.policy(t, "group some any W0 W1\nquorum some\n")
	wr := newWitnesser(t, p, witness.WitnesserOpts{})
	out, err := wr.Witness(context.Background(), e.grow(t, 2), e.proof)
	if err != nil {
		t.Fatal(err)
	}
	before := e.ws[0].Requests() + e.ws[1].Requests()
	again, err := wr.Witness(context.Background(), out, e.proof)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(out) {
		t.Errorf("re-witnessed checkpoint changed:\n%s\nwant\n%s", again, out)
	}
	if after := e.ws[0].Requests() + e.ws[1].Requests(); after != before {
		t.Errorf("%d requests for an already cosigned checkpoint", after-before)
	}
}

func TestWitnessConcurrent(t *testing.T) {
	e := newEnv(t, 3)
	p := e.policy(t, "group maj 2 W0 W1 W2\nquorum maj\n")
	wr := newWitnesser(t, p, witness.WitnesserOpts{})
	cp := e.grow(t, 4)
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range 4 {
		wg.Go(func() {
			if _, err := wr.Witness(context.Background(), cp, e.proof); err == nil {
				ok.Add(1)
			} else {
				t.Errorf("concurrent Witness: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 4 {
		t.Fatalf("%d of 4 concurrent calls succeeded", ok.Load())
	}
}

func TestNewWitnesser(t *testing.T) {
	e := newEnv(t, 2)
	var b strings.Builder
	fmt.Fprintf(&b, "witness W0 %s %s\n", e.ws[0].VerifierKey(), e.urls[0])
	fmt.Fprintf(&b, "witness W1 %s\n", e.ws[1].VerifierKey())
	for _, tc := range []struct {
		rule string
		ok   bool
	}{
		{"quorum W0\n", true},
		{"quorum none\n", true},
		{"quorum W1\n", false},
		{"group g any W0 W1\nquorum g\n", false},
	} {
		p, err := witness.ParsePolicy([]byte(b.String() + tc.rule))
		if err != nil {
			t.Fatal(err)
		}
		_, err = witness.NewWitnesser(p, witness.WitnesserOpts{})
		if (err == nil) != tc.ok {
			t.Errorf("%q: NewWitnesser error %v, want ok=%v", tc.rule, err, tc.ok)
		}
	}
	// Quorum none: the checkpoint is returned as it is.
	p, _ := witness.ParsePolicy([]byte("quorum none\n"))
	wr := newWitnesser(t, p, witness.WitnesserOpts{})
	cp := e.grow(t, 1)
	out, err := wr.Witness(context.Background(), cp, e.proof)
	if err != nil || string(out) != string(cp) {
		t.Errorf("quorum none: %q, %v", out, err)
	}
	if _, err := wr.Witness(context.Background(), []byte("not a note"), e.proof); err == nil {
		t.Error("Witness of garbage succeeded")
	}
}
