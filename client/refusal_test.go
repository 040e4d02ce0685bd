package client_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/evidence"
)

// countingDir counts the Directory calls a client makes.
type countingDir struct {
	ktpb.DirectoryClient
	calls atomic.Int64
}

func (d *countingDir) Lookup(ctx context.Context, req *ktpb.LookupRequest, opts ...grpc.CallOption) (*ktpb.LookupResponse, error) {
	d.calls.Add(1)
	return d.DirectoryClient.Lookup(ctx, req, opts...)
}

func (d *countingDir) Monitor(ctx context.Context, req *ktpb.MonitorRequest, opts ...grpc.CallOption) (*ktpb.MonitorResponse, error) {
	d.calls.Add(1)
	return d.DirectoryClient.Monitor(ctx, req, opts...)
}

// checkRefused fails unless err is the refusal of the log by bundle.
func checkRefused(t *testing.T, what string, err error, bundle []byte) {
	t.Helper()
	var re *client.LogRefusedError
	if !errors.Is(err, client.ErrLogRefused) || !errors.As(err, &re) {
		t.Fatalf("%s: %v, want ErrLogRefused", what, err)
	}
	id := sha256.Sum256(bundle)
	if re.Kind != "fork" || re.ID != hex.EncodeToString(id[:]) || re.Origin != netOrigin {
		t.Fatalf("%s: refusal %+v", what, re)
	}
	if msg := err.Error(); !strings.Contains(msg, re.ID) || !strings.Contains(msg, "re-pin the directory with new parameters") {
		t.Fatalf("%s: the error %q does not name the evidence or say how to proceed", what, msg)
	}
}

// TestReportEvidence: a client given valid evidence of its log's
// misbehaviour stores it durably and, after a restart on the same store,
// refuses lookups, encryption, monitoring and changes without asking the
// directory; bundles that prove nothing are not stored.
func TestReportEvidence(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	bob := e.device(client.Config{})
	e.enroll(bob, "bob@example.com", false)

	store := &client.FileStore{Path: filepath.Join(t.TempDir(), "state.json")}
	dir := &countingDir{DirectoryClient: e.dir}
	start := func() *client.Client {
		c, err := client.New(dir, e.params, store, client.Config{Log: e.logc})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	alice := start()
	if _, err := alice.Init(ctx, api.HPKESuite{}); err != nil {
		t.Fatal(err)
	}
	e.enroll(alice, "alice@example.com", false)
	res, err := alice.Lookup(ctx, "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	tr := res.Trusted

	// Bundles that prove nothing are refused and not stored.
	otherKeys := newNetKeys(t)
	otherFork, err := log.SignCheckpoint(otherKeys.LogSigner, netOrigin, tr.Size, randomRoot())
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"garbage":                    []byte("kt-evidence/v1\nno\n"),
		"empty":                      nil,
		"one checkpoint twice":       specBundle([2][]byte{tr.Checkpoint, tr.Checkpoint}, nil),
		"signed by another log key":  specBundle(canonical(t, tr.Checkpoint, otherFork), nil),
		"out of the canonical order": specBundle(reverse(canonical(t, tr.Checkpoint, e.sign(tr.Size, randomRoot()))), nil),
	} {
		if err := alice.ReportEvidence(ctx, b); !errors.Is(err, client.ErrEvidence) {
			t.Fatalf("%s: ReportEvidence %v, want ErrEvidence", name, err)
		}
	}
	if st, err := alice.State(ctx); err != nil || st.Refused != nil {
		t.Fatalf("a bogus bundle was stored: %v %+v", err, st.Refused)
	}
	if _, err := start().Lookup(ctx, "bob@example.com"); err != nil {
		t.Fatalf("lookup after bogus bundles: %v", err)
	}

	// A valid bundle: two checkpoints of one size with different roots.
	bundle := specBundle(canonical(t, tr.Checkpoint, e.sign(tr.Size, randomRoot())), nil)
	if err := alice.ReportEvidence(ctx, bundle); err != nil {
		t.Fatalf("ReportEvidence: %v", err)
	}
	// Another bundle later keeps the first.
	if err := alice.ReportEvidence(ctx, specBundle(canonical(t, tr.Checkpoint, e.sign(tr.Size, randomRoot())), nil)); err != nil {
		t.Fatal(err)
	}

	// A restart: a new Client on the same store.
	alice = start()
	before := dir.calls.Load()
	_, err = alice.Lookup(ctx, "bob@example.com")
	checkRefused(t, "Lookup", err, bundle)
	envs, err := alice.Encrypt(ctx, "bob@example.com", []byte("hello"))
	checkRefused(t, "Encrypt", err, bundle)
	if envs != nil {
		t.Fatal("Encrypt returned envelopes")
	}
	_, err = alice.Monitor(ctx)
	checkRefused(t, "Monitor", err, bundle)
	_, err = alice.Rekey(ctx)
	checkRefused(t, "Rekey", err, bundle)
	if n := dir.calls.Load() - before; n != 0 {
		t.Fatalf("the refused directory was asked %d times", n)
	}
	st, err := alice.State(ctx)
	if err != nil || len(st.Refused) != 1 {
		t.Fatalf("state: %v, %d refusals", err, len(st.Refused))
	}
	for k, r := range st.Refused {
		if !strings.HasPrefix(k, netOrigin+"+") || string(r.Bundle) != string(bundle) || r.What == "" || r.Time.IsZero() {
			t.Fatalf("refusal %q: %+v", k, r)
		}
	}
}

// TestGossipRefusal: an auditor's 409 with a valid bundle refuses the log
// durably; a 409 with a bundle that does not verify stores nothing.
func TestGossipRefusal(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	aud := &fakeAuditor{}
	srv := httptest.NewServer(aud)
	defer srv.Close()
	bob := e.device(client.Config{})
	e.enroll(bob, "bob@example.com", false)
	alice, store := e.newClient(nil, client.Config{Auditors: []string{srv.URL}})
	res, err := alice.Lookup(ctx, "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	tr := res.Trusted

	aud.set(409, specBundle([2][]byte{tr.Checkpoint, tr.Checkpoint}, nil))
	if _, err := alice.Gossip(ctx); err != nil {
		t.Fatalf("gossip with bogus evidence: %v", err)
	}
	if st, _ := alice.State(ctx); st.Refused != nil {
		t.Fatal("bogus evidence was stored")
	}
	if _, err := alice.Lookup(ctx, "bob@example.com"); err != nil {
		t.Fatalf("lookup after bogus evidence: %v", err)
	}

	bundle := specBundle(canonical(t, tr.Checkpoint, e.sign(tr.Size, randomRoot())), nil)
	aud.set(409, bundle)
	if _, err := alice.Gossip(ctx); !errors.Is(err, client.ErrSplitView) {
		t.Fatalf("gossip with evidence: %v", err)
	}
	restarted, err := client.New(e.dir, e.params, store, client.Config{Log: e.logc})
	if err != nil {
		t.Fatal(err)
	}
	_, err = restarted.Lookup(ctx, "bob@example.com")
	checkRefused(t, "Lookup after gossip", err, bundle)
}

// TestReportEvidenceV2: kt-evidence/v2 bundles go through the same check
// (evidence.Check): a records bundle proving a rule violation refuses the
// log; a map-root bundle (which only a replay can judge) and a records
// bundle of an honest record are not stored.
func TestReportEvidenceV2(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	alice0 := f.s.handle(alice).versions[0]
	// An enrollment signed by a key that is not in the new set (R1).
	mallory := newDevice(t, "m", api.SuiteX25519)
	bad := f.s.logChange(f.s.record(carol, set(mallory), api.AuthEnroll, f.b1.sign, nil))
	f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
	ep := f.s.ep()
	build := func(kind string, e evidence.Entry) []byte {
		t.Helper()
		var b []byte
		var err error
		if kind == "map-root" {
			b, err = evidence.BuildMapRoot(ctx, f.s.log, ep.checkpoint, ep.size, e)
		} else {
			b, err = evidence.BuildRecords(ctx, f.s.log, ep.checkpoint, ep.size, &e, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	violation := build("records", evidence.Entry{Index: bad.logIndex, Data: bad.bytes})
	honest := build("records", evidence.Entry{Index: alice0.logIndex, Data: alice0.bytes})
	mapRoot := build("map-root", evidence.Entry{Index: ep.size - 1, Data: ep.recordBytes})

	store := &client.MemStore{}
	start := func() *client.Client {
		c, err := client.New(nilDir{}, f.p, store, client.Config{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := start()
	if err := c.ReportEvidence(ctx, honest); !errors.Is(err, client.ErrEvidence) || !errors.Is(err, evidence.ErrNotEvidence) {
		t.Fatalf("honest record: %v", err)
	}
	if err := c.ReportEvidence(ctx, mapRoot); !errors.Is(err, client.ErrEvidence) || !strings.Contains(err.Error(), "replay") {
		t.Fatalf("map-root bundle: %v", err)
	}
	if b, _ := store.Load(ctx); b != nil {
		t.Fatalf("a bundle that proves nothing to a client was stored: %s", b)
	}
	if err := c.ReportEvidence(ctx, violation); err != nil {
		t.Fatalf("records bundle: %v", err)
	}
	_, err := start().Lookup(ctx, bob)
	var re *client.LogRefusedError
	if !errors.As(err, &re) || re.Kind != "records" || re.ID != evidence.ID(violation) || !strings.Contains(re.What, "R") {
		t.Fatalf("lookup after a records bundle: %v", err)
	}
	t.Logf("refused: %v", err)
}
