package client_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/log"
)

// fakeAuditor answers POST /kt/v1/gossip with a fixed status and body,
// and records what it was sent.
type fakeAuditor struct {
	mu     sync.Mutex
	status int
	body   []byte
	got    []byte
	path   string
}

func (a *fakeAuditor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got, _ = io.ReadAll(r.Body)
	a.path = r.Method + " " + r.URL.Path
	w.WriteHeader(a.status)
	w.Write(a.body)
}

func (a *fakeAuditor) set(status int, body []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status, a.body = status, body
}

func (e *netEnv) sign(size uint64, root []byte) []byte {
	e.t.Helper()
	cp, err := log.SignCheckpoint(e.logSigner, netOrigin, size, root)
	if err != nil {
		e.t.Fatal(err)
	}
	return cp
}

func randomRoot() []byte {
	r := make([]byte, 32)
	rand.Read(r)
	return r
}

// TestGossip posts the trusted checkpoint to an auditor (a test server
// following design.md 15) and checks each kind of answer.
func TestGossip(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	aud := &fakeAuditor{}
	srv := httptest.NewServer(aud)
	defer srv.Close()
	alice := e.device(client.Config{Auditors: []string{srv.URL}})
	bob := e.device(client.Config{})
	e.enroll(bob, "bob@example.com", false)

	// An older log checkpoint, and Alice's trusted one after it.
	oldCp, err := e.logc.GetCheckpoint(ctx, &ktpb.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	oldParsed, _, _ := log.ParseCheckpoint(oldCp.Note, netOrigin, e.params.LogVerifier)
	e.awaitEpochAfter(oldParsed.Size)
	res, err := alice.Lookup(ctx, "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	tr := res.Trusted
	e.awaitEpochAfter(tr.Size)
	newCp, err := e.logc.GetCheckpoint(ctx, &ktpb.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}

	sameSizeFork := e.sign(tr.Size, randomRoot())
	cases := []struct {
		name     string
		status   int
		body     []byte
		want     error
		evidence bool
	}{
		{"auditor ahead, consistent", 200, newCp.Note, nil, false},
		{"auditor behind, consistent", 200, oldCp.Note, nil, false},
		{"auditor at the same checkpoint", 200, tr.Checkpoint, nil, false},
		{"same size, other root", 200, sameSizeFork, client.ErrSplitView, true},
		{"auditor ahead on a fork", 200, e.sign(tr.Size+1000, randomRoot()), client.ErrSplitView, false},
		{"auditor behind on a fork", 200, e.sign(oldParsed.Size, randomRoot()), client.ErrSplitView, false},
		{"409 with evidence", 409, client.Evidence(tr.Checkpoint, sameSizeFork, nil), client.ErrSplitView, true},
		{"409 with bogus evidence", 409, client.Evidence(tr.Checkpoint, tr.Checkpoint, nil), client.ErrGossip, false},
		{"409 with garbage", 409, []byte("no"), client.ErrGossip, false},
		{"checkpoint not signed by the log", 200, []byte(fmt.Sprintf("%s\n%d\n%x\n\n", netOrigin, tr.Size, tr.Root)), client.ErrGossip, false},
		{"400", 400, []byte("bad checkpoint"), client.ErrGossip, false},
		{"404", 404, []byte("unknown origin"), client.ErrGossip, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			aud.set(c.status, c.body)
			rs, err := alice.Gossip(ctx)
			if len(rs) != 1 {
				t.Fatalf("%d results", len(rs))
			}
			if aud.path != "POST /kt/v1/gossip" || string(aud.got) != string(tr.Checkpoint) {
				t.Fatalf("the auditor got %s with %q, want the trusted checkpoint", aud.path, aud.got)
			}
			got := rs[0].Err
			if c.want == nil {
				if got != nil || err != nil {
					t.Fatalf("consistent answer: %v, %v", got, err)
				}
				return
			}
			if !errors.Is(got, c.want) {
				t.Fatalf("result %v, want %v", got, c.want)
			}
			var sv *client.SplitViewError
			if errors.Is(c.want, client.ErrSplitView) {
				if !errors.As(err, &sv) {
					t.Fatalf("Gossip returned %v, want the split view", err)
				}
				if c.evidence != (sv.Evidence != nil) {
					t.Fatalf("evidence %q", sv.Evidence)
				}
				if sv.Evidence != nil {
					if err := client.VerifyEvidence(e.params, sv.Evidence); err != nil {
						t.Fatalf("evidence does not verify: %v", err)
					}
				}
			} else if err != nil {
				t.Fatalf("Gossip returned %v for a non-conflict", err)
			}
		})
	}
	// Gossip never replaced the trusted checkpoint.
	st, _ := alice.State(ctx)
	if st.Trusted.Size != tr.Size {
		t.Fatalf("gossip changed the trusted checkpoint")
	}
}

// TestVerifyEvidence checks kt-evidence/v1 bundles of real forks of
// different sizes (the proof computed in tree B per design.md 15) and
// rejects bundles that prove nothing.
func TestVerifyEvidence(t *testing.T) {
	e := newNetEnv(t)
	leaves := func(n int, tag string) *testonly.Tree {
		tr := testonly.New(rfc6962.DefaultHasher)
		for i := range n {
			tr.AppendData(fmt.Appendf(nil, "%s %d", tag, i))
		}
		return tr
	}
	for _, m := range []uint64{1, 3, 4, 7, 8, 13} {
		t.Run(fmt.Sprintf("fork at size %d of 20", m), func(t *testing.T) {
			b := leaves(20, "b")
			a := leaves(int(m)-1, "b")
			a.AppendData([]byte("forked"))
			pr, err := b.ConsistencyProof(m, 20)
			if err != nil {
				t.Fatal(err)
			}
			if m&(m-1) == 0 {
				pr = append([][]byte{b.HashAt(m)}, pr...)
			}
			A, B := e.sign(m, a.Hash()), e.sign(20, b.Hash())
			if err := client.VerifyEvidence(e.params, client.Evidence(A, B, pr)); err != nil {
				t.Fatalf("a real fork: %v", err)
			}
			// A consistent pair proves nothing.
			A2 := e.sign(m, b.HashAt(m))
			if err := client.VerifyEvidence(e.params, client.Evidence(A2, B, pr)); !errors.Is(err, client.ErrEvidence) {
				t.Fatalf("consistent checkpoints: %v", err)
			}
			// A proof that does not reach B's root proves nothing.
			bad := append([][]byte(nil), pr...)
			bad[len(bad)-1] = randomRoot()
			if err := client.VerifyEvidence(e.params, client.Evidence(A, B, bad)); !errors.Is(err, client.ErrEvidence) {
				t.Fatalf("proof off B's root: %v", err)
			}
			// Swapped order, or a checkpoint from another key.
			if err := client.VerifyEvidence(e.params, client.Evidence(B, A, pr)); !errors.Is(err, client.ErrEvidence) {
				t.Fatalf("swapped: %v", err)
			}
		})
	}
	for _, bad := range []string{"", "kt-evidence/v2\n", "kt-evidence/v1\ncheckpoint !!\n", "kt-evidence/v1\nproof AAAA\n"} {
		if err := client.VerifyEvidence(e.params, []byte(bad)); !errors.Is(err, client.ErrEvidence) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestWatch runs the monitoring loop with gossip: a recovery change made
// while it runs is reported as an alert, and each poll gossips.
func TestWatch(t *testing.T) {
	e := newNetEnv(t)
	aud := &fakeAuditor{status: 200}
	srv := httptest.NewServer(aud)
	defer srv.Close()
	bob := e.device(client.Config{Auditors: []string{srv.URL}})
	e.enroll(bob, "bob@example.com", false)
	cp, err := e.logc.GetCheckpoint(t.Context(), &ktpb.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	aud.set(200, cp.Note) // behind or equal: consistent
	lax := e.device(client.Config{})

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type poll struct {
		alerts  int
		gossips int
		err     error
	}
	polls := make(chan poll, 100)
	done := make(chan error, 1)
	go func() {
		done <- bob.Watch(ctx, 50*time.Millisecond, func(rs []*client.MonitorReport, gs []client.GossipResult, err error) {
			p := poll{gossips: len(gs), err: err}
			for _, r := range rs {
				p.alerts += len(r.Alerts)
			}
			polls <- p
		})
	}()
	first := <-polls
	if first.err != nil || first.alerts != 0 || first.gossips != 1 {
		t.Fatalf("first poll: %+v", first)
	}
	e.recover(lax, "bob@example.com", func(s *api.DeviceSet) { addSorted(s, ghost(t)) })
	for deadline := time.After(netWait); ; {
		select {
		case p := <-polls:
			if p.err != nil {
				t.Fatalf("poll: %v", p.err)
			}
			if p.alerts == 0 {
				continue
			}
		case <-deadline:
			t.Fatal("no alert")
		}
		break
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch returned %v", err)
	}
}
