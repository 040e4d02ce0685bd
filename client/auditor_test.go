package client_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/client"
	fx "github.com/keytrans/kt/internal/testing/fixture"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/evidence"
)

// realAuditor is an auditor (package auditor) following a directory's log
// through its HTTP read API, with its HTTP endpoints on loopback.
type realAuditor struct {
	a   *auditor.Auditor
	url string
}

// startAuditor starts an auditor that follows e's log. It audits only when
// asked (auditOnce), so the test decides how far it has read.
func (e *netEnv) startAuditor() *realAuditor {
	e.t.Helper()
	o := e.dep.AuditorOptions("auditor")
	o.Dir = e.t.TempDir()
	a, err := fx.StartAuditor(e.t.Context(), o)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(a.Close)
	return &realAuditor{a: a.Auditor, url: a.URL}
}

// auditOnce makes the auditor replay the log up to its current checkpoint
// and returns the size it audited.
func (r *realAuditor) auditOnce(t tb) uint64 {
	t.Helper()
	if err := r.a.AuditOnce(t.Context(), netOrigin); err != nil {
		t.Fatalf("AuditOnce: %v", err)
	}
	st := r.a.Status()[0]
	if st.Latest == nil || st.Violations != 0 {
		t.Fatalf("the auditor of an honest log: %+v", st)
	}
	return st.Latest.Size
}

// checkpointSize returns the size of e's latest published checkpoint.
func (e *netEnv) checkpointSize() uint64 {
	e.t.Helper()
	cp, err := e.logc.GetCheckpoint(e.t.Context(), &ktpb.GetCheckpointRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	c, _, err := log.ParseCheckpoint(cp.Note, netOrigin, e.params.LogVerifier)
	if err != nil {
		e.t.Fatal(err)
	}
	return c.Size
}

// TestGossipRealAuditor gossips with the real auditor following the real
// directory: on the honest path the answer is a 200 with a checkpoint
// consistent with the client's (both when the auditor is behind and when
// it is ahead).
func TestGossipRealAuditor(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	aud := e.startAuditor()
	alice := e.device(client.Config{Auditors: []string{aud.url}})
	e.enroll(alice, "alice@example.com", false)

	// Before the auditor has audited anything it has no view (503): an
	// auditor error, not a conflict.
	rs, err := alice.Gossip(ctx)
	if err != nil || len(rs) != 1 || !errors.Is(rs[0].Err, client.ErrGossip) {
		t.Fatalf("gossip before any audit: %v, %+v", err, rs)
	}

	audited := aud.auditOnce(t)
	st, _ := alice.State(ctx)
	for _, when := range []string{"first", "after the log grew"} {
		rs, err := alice.Gossip(ctx)
		if err != nil || len(rs) != 1 || rs[0].Err != nil {
			t.Fatalf("%s gossip: %v, %+v", when, err, rs)
		}
		if rs[0].Size != audited {
			t.Fatalf("%s gossip: the auditor answered size %d, it audited %d", when, rs[0].Size, audited)
		}
		// The auditor moves ahead of Alice's trusted checkpoint.
		e.enroll(e.device(client.Config{}), fmt.Sprintf("bob%d@example.com", len(when)), false)
		for e.checkpointSize() <= st.Trusted.Size {
			time.Sleep(10 * time.Millisecond)
		}
		audited = aud.auditOnce(t)
	}
	// Lookup-triggered gossip on the honest path.
	carol, _ := e.newClient(nil, client.Config{Auditors: []string{aud.url}, GossipOnLookup: true})
	if res, err := carol.Lookup(ctx, "alice@example.com"); err != nil || !res.Registered {
		t.Fatalf("lookup with gossip: %v", err)
	}
	if evs, _ := aud.a.Evidence(netOrigin); len(evs) != 0 {
		t.Fatalf("evidence on the honest path")
	}
	if st2, _ := alice.State(ctx); st2.Trusted.Size != st.Trusted.Size {
		t.Fatal("gossip replaced the trusted checkpoint")
	}
}

// TestGossipRealAuditorFork: two directories with the same keys (one log
// key, so one origin) and different histories. Alice uses directory A; two
// real auditors follow directory B. Gossip with each surfaces a
// SplitViewError carrying a bundle that log/evidence verifies offline with
// the log key alone: when the auditor is behind (it answers 200 with its
// checkpoint; the client builds the bundle over directory A's Log service
// and passes it on, so the auditor records it too) and when it is ahead
// (it answers 409 with the bundle it built over directory B's log).
func TestGossipRealAuditorFork(t *testing.T) {
	keys := newNetKeys(t)
	a := newNetEnvWith(t, keys, netHeartbeat)
	// B publishes only when it changes, so the test controls its size.
	b := newNetEnvWith(t, keys, time.Hour)
	ctx := t.Context()

	e := b.device(client.Config{})
	b.enroll(e, "mallory@example.com", false)
	behind := b.startAuditor()
	sizeB := behind.auditOnce(t)

	alice, store := a.newClient(nil, client.Config{Auditors: []string{behind.url}})
	if _, err := alice.Init(ctx, api.HPKESuite{}); err != nil {
		t.Fatal(err)
	}
	e = a.device(client.Config{})
	a.enroll(e, "bob@example.com", false)
	for i := 0; ; i++ {
		a.enroll(alice, fmt.Sprintf("alice%d@example.com", i), false)
		if st, _ := alice.State(ctx); st.Trusted.Size > sizeB {
			break
		}
	}
	st, _ := alice.State(ctx)
	check := func(name string, aud *realAuditor, fromAuditor bool) {
		t.Helper()
		rs, err := alice.Gossip(ctx)
		var sv *client.SplitViewError
		if !errors.As(err, &sv) || len(rs) != 1 || !errors.Is(rs[0].Err, client.ErrSplitView) {
			t.Fatalf("%s: %v, %+v", name, err, rs)
		}
		if sv.Evidence == nil {
			t.Fatalf("%s: no evidence (%s)", name, sv.Reason)
		}
		if (sv.Theirs == nil) != fromAuditor {
			t.Fatalf("%s: the bundle came from the wrong side (%s)", name, sv.Reason)
		}
		f, err := evidence.Verify(sv.Evidence, a.params.LogVerifier)
		if err != nil {
			t.Fatalf("%s: log/evidence rejects the bundle: %v", name, err)
		}
		if f.A.Size != min(sizeOf(t, aud), st.Trusted.Size) || f.B.Size != max(sizeOf(t, aud), st.Trusted.Size) {
			t.Fatalf("%s: fork of sizes %d and %d; Alice has %d", name, f.A.Size, f.B.Size, st.Trusted.Size)
		}
		evs, err := aud.a.Evidence(netOrigin)
		if err != nil || len(evs) != 1 || !bytes.Equal(evs[0], sv.Evidence) {
			t.Fatalf("%s: the auditor holds %d bundles (%v), want the client's", name, len(evs), err)
		}
	}
	check("auditor behind", behind, false)

	// Directory B grows past Alice's checkpoint; a fresh auditor follows it.
	for b.checkpointSize() <= st.Trusted.Size {
		b.enroll(b.device(client.Config{}), fmt.Sprintf("m%d@example.com", b.checkpointSize()), false)
	}
	ahead := b.startAuditor()
	ahead.auditOnce(t)
	// Alice's same state, gossiping with the other auditor.
	alice, err := client.New(a.dir, a.params, store, client.Config{Log: a.logc, Auditors: []string{ahead.url}})
	if err != nil {
		t.Fatal(err)
	}
	check("auditor ahead", ahead, true)

	// The verified bundles refused the log: Alice's client asks directory
	// A nothing more.
	var refused *client.LogRefusedError
	if _, err := alice.Lookup(ctx, "bob@example.com"); !errors.As(err, &refused) || refused.Kind != "fork" {
		t.Fatalf("lookup after gossip found evidence: %v", err)
	}

	// Alice's state (without the refusal) shown directory B (without
	// witness checks, whose policies differ here): the lookup fails with an
	// InconsistencyError, from which directory B's Log service (the larger
	// tree) builds a bundle that log/evidence verifies; directory A's (the
	// smaller) cannot.
	np := *a.params
	np.Witnesses, np.InsecureNoWitnesses = nil, true
	stAlice, err := alice.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stAlice.Refused = nil
	raw, err := stAlice.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	unrefused := &client.MemStore{}
	unrefused.Update(ctx, func([]byte) ([]byte, error) { return raw, nil })
	ab, err := client.New(b.dir, &np, unrefused, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var ie *client.InconsistencyError
	if _, err := ab.Lookup(ctx, "bob@example.com"); !errors.As(err, &ie) {
		t.Fatalf("alice's checkpoint shown directory B: %v", err)
	}
	// The proof directory B sent was computed in tree B: on its own it
	// proves the fork, unless the prepended subtree hash is missing.
	ev, err := ie.Evidence(ctx, &np, nil)
	if pow2 := ie.TrustedSize&(ie.TrustedSize-1) == 0; pow2 != errors.Is(err, client.ErrEvidence) {
		t.Fatalf("evidence from the received proof (trusted size %d): %v", ie.TrustedSize, err)
	}
	if err == nil {
		if _, err := evidence.Verify(ev, a.params.LogVerifier); err != nil {
			t.Fatalf("log/evidence rejects the bundle: %v", err)
		}
	}
	// Without it, the Log service of the larger tree (B) builds one; that
	// of the smaller (A) cannot.
	bare := *ie
	bare.Proof = nil
	if _, err := bare.Evidence(ctx, &np, a.logc); !errors.Is(err, client.ErrEvidence) {
		t.Fatalf("evidence from the smaller tree: %v", err)
	}
	if ev, err = bare.Evidence(ctx, &np, b.logc); err != nil {
		t.Fatalf("InconsistencyError.Evidence over B's Log service: %v", err)
	}
	if _, err := evidence.Verify(ev, a.params.LogVerifier); err != nil {
		t.Fatalf("log/evidence rejects the bundle: %v", err)
	}

	// With GossipOnLookup, a new device of directory A gossips its first
	// checkpoint before storing it: the lookup fails with the split view
	// and nothing is trusted.
	carol, cstore := a.newClient(nil, client.Config{Auditors: []string{ahead.url}, GossipOnLookup: true})
	var sv *client.SplitViewError
	if _, err := carol.Lookup(ctx, "bob@example.com"); !errors.As(err, &sv) || sv.Evidence == nil {
		t.Fatalf("lookup with gossip on a fork: %v", err)
	}
	// The auditor's 409 bundle verified: Carol's client refuses the log.
	if _, err := carol.Encrypt(ctx, "bob@example.com", []byte("x")); !errors.Is(err, client.ErrLogRefused) {
		t.Fatalf("encrypt with gossip on a fork: %v", err)
	}
	if b, _ := cstore.Load(ctx); b != nil {
		var st client.State
		if err := st.UnmarshalBinary(b); err != nil || st.Trusted != nil {
			t.Fatalf("a checkpoint was trusted despite the split view (%v)", err)
		}
	}
}

func sizeOf(t *testing.T, r *realAuditor) uint64 {
	t.Helper()
	return r.a.Status()[0].Latest.Size
}
