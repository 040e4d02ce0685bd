package trillian

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keytrans/kt/internal/testing/testwitness"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/witness"
)

// witnesses starts n test witnesses that know the test log, and returns
// them with a policy that needs all of them.
func witnesses(t *testing.T, n int) ([]*testwitness.Witness, []byte) {
	t.Helper()
	testKey(t)
	var (
		ws     []*testwitness.Witness
		policy strings.Builder
		names  []string
	)
	// The policy names this log: New checks that it is the configured key.
	fmt.Fprintf(&policy, "log %s\n", vkey)
	for i := range n {
		w, err := testwitness.New(fmt.Sprintf("w%d.example", i))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.AddLog(testOrigin, vkey); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(w)
		t.Cleanup(srv.Close)
		ws = append(ws, w)
		names = append(names, fmt.Sprintf("W%d", i))
		fmt.Fprintf(&policy, "witness W%d %s %s\n", i, w.VerifierKey(), srv.URL)
	}
	fmt.Fprintf(&policy, "group everyone all %s\nquorum everyone\n", strings.Join(names, " "))
	return ws, []byte(policy.String())
}

// checkWitnessed checks that a checkpoint carries the log's signature and
// satisfies the policy.
func checkWitnessed(t *testing.T, raw, policy []byte) uint64 {
	t.Helper()
	_, v := testKey(t)
	cp, _, err := log.ParseCheckpoint(raw, testOrigin, v)
	if err != nil {
		t.Fatal(err)
	}
	p, err := witness.ParsePolicy(policy)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Check(raw); err != nil {
		t.Fatalf("published checkpoint does not satisfy the witness policy: %v\n%s", err, raw)
	}
	return cp.Size
}

func TestWitnessedCheckpoints(t *testing.T) {
	env := newMemEnv(t)
	ws, policy := witnesses(t, 2)
	cfg := testConfig(t, env.ClientConn, 0)
	cfg.WitnessPolicy = policy
	l := openLog(t, cfg)
	ctx := ctxT(t)
	for round := range 3 {
		idx, err := l.Append(ctx, [][]byte{fmt.Appendf(nil, "round %d", round)})
		if err != nil {
			t.Fatal(err)
		}
		raw, err := l.Await(ctx, idx[0])
		if err != nil {
			t.Fatal(err)
		}
		size := checkWitnessed(t, raw, policy)
		for i, w := range ws {
			// The witnesses checked consistency up to what was published.
			if got, ok := w.Size(testOrigin); !ok || got < size {
				t.Errorf("round %d: witness %d is at size %d (%v), the published checkpoint at %d", round, i, got, ok, size)
			}
		}
	}
}

// TestWitnessQuorumWithheld makes a witness refuse: nothing is published
// until it cooperates again.
func TestWitnessQuorumWithheld(t *testing.T) {
	env := newMemEnv(t)
	ws, policy := witnesses(t, 2)
	ws[1].SetBehavior(testwitness.Behavior{Status: http.StatusServiceUnavailable})
	cfg := testConfig(t, env.ClientConn, 0)
	cfg.WitnessPolicy = policy
	l := openLog(t, cfg)
	ctx := ctxT(t)
	if _, err := l.Checkpoint(ctx); !errors.Is(err, log.ErrNoCheckpoint) {
		t.Fatalf("Checkpoint without a quorum: %v, want ErrNoCheckpoint", err)
	}
	idx, err := l.Append(ctx, [][]byte{[]byte("waiting for witnesses")})
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if raw, err := l.Await(short, idx[0]); err == nil {
		t.Fatalf("Await returned a checkpoint without the quorum:\n%s", raw)
	}
	if _, err := l.Entries(ctx, 0, 1); !errors.Is(err, log.ErrNoCheckpoint) {
		t.Fatalf("Entries without a published checkpoint: %v, want ErrNoCheckpoint", err)
	}
	ws[1].SetBehavior(testwitness.Behavior{})
	raw, err := l.Await(ctx, idx[0])
	if err != nil {
		t.Fatal(err)
	}
	if size := checkWitnessed(t, raw, policy); size <= idx[0] {
		t.Fatalf("checkpoint size %d does not cover index %d", size, idx[0])
	}
}

// TestWitnessBadCosignatureNotPublished makes a witness return a corrupt
// cosignature: the checkpoint is not published with it.
func TestWitnessBadCosignatureNotPublished(t *testing.T) {
	env := newMemEnv(t)
	ws, policy := witnesses(t, 1)
	ws[0].SetBehavior(testwitness.Behavior{Corrupt: true})
	cfg := testConfig(t, env.ClientConn, 0)
	cfg.WitnessPolicy = policy
	l := openLog(t, cfg)
	ctx := ctxT(t)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if raw, err := l.Await(short, 0); err == nil {
		t.Fatalf("Await returned a checkpoint with a corrupt cosignature:\n%s", raw)
	}
	if _, err := l.Checkpoint(ctx); !errors.Is(err, log.ErrNoCheckpoint) {
		t.Fatalf("Checkpoint: %v, want ErrNoCheckpoint", err)
	}
}
