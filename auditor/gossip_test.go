package auditor_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/log/evidence"
)

// forkedLogs returns two read APIs of one log key that agree on the first
// common entries and then differ: a split view, each side honest on its
// own.
func forkedLogs(t *testing.T, common, sizeA, sizeB int) (la, lb *testLog, ba, bb *ktlog.Builder) {
	t.Helper()
	la = newTestLog(t)
	lb = newTestLogWithKey(t, la.skey, la.vkey, la.signer, la.verifier)
	base := ktlog.New(origin)
	base.Honest(common, 3)
	ba, bb = base.Fork(), base.Fork()
	ba.Honest(1, 1)
	bb.Honest(2, 1)
	for ba.Len() < uint64(sizeA) {
		ba.Epoch()
	}
	for bb.Len() < uint64(sizeB) {
		bb.Epoch()
	}
	if ba.Len() != uint64(sizeA) || bb.Len() != uint64(sizeB) {
		t.Fatalf("sizes %d, %d", ba.Len(), bb.Len())
	}
	la.appendAll(t, ba)
	lb.appendAll(t, bb)
	return
}

// TestGossipFork: one log forked for two auditors; after one gossip round
// started by either, both hold the same evidence, which verifies offline,
// and both stopped cosigning the log.
func TestGossipFork(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ sizeA, sizeB int }{{35, 60}, {60, 35}, {45, 45}} {
		t.Run(fmt.Sprintf("%d_%d", tc.sizeA, tc.sizeB), func(t *testing.T) {
			la, lb, ba, bb := forkedLogs(t, 8, tc.sizeA, tc.sizeB)
			hook := &webhook{}
			hs := httptest.NewServer(hook)
			defer hs.Close()
			n2 := newNode(t, "auditor2.example", nodeOpts{logs: []auditor.LogConfig{logConfig(lb, bb)}, webhook: hs.URL})
			n1 := newNode(t, "auditor1.example", nodeOpts{logs: []auditor.LogConfig{logConfig(la, ba)},
				peers: []auditor.Peer{{Name: "auditor2", URL: n2.url}}})
			for _, n := range []*node{n1, n2} {
				if err := n.a.AuditOnce(ctx, origin); err != nil {
					t.Fatal(err)
				}
				if st := n.a.Status()[0]; st.Latest == nil || st.Violations != 0 {
					t.Fatalf("each side is honest on its own: %+v", st)
				}
			}
			n1.a.GossipRound(ctx, origin)
			e1, _ := n1.a.Evidence(origin)
			e2, _ := n2.a.Evidence(origin)
			if len(e1) != 1 || len(e2) != 1 || !bytes.Equal(e1[0], e2[0]) {
				t.Fatalf("evidence after one round: %d and %d bundles", len(e1), len(e2))
			}
			f, err := evidence.Verify(e1[0], la.verifier)
			if err != nil {
				t.Fatal(err)
			}
			if lo, hi := min(tc.sizeA, tc.sizeB), max(tc.sizeA, tc.sizeB); f.A.Size != uint64(lo) || f.B.Size != uint64(hi) {
				t.Fatalf("fork sizes %d, %d", f.A.Size, f.B.Size)
			}
			for _, n := range []*node{n1, n2} {
				if st := n.a.Status()[0]; st.Frozen == "" {
					t.Fatal("not frozen after evidence")
				}
			}
			if p := n1.a.Peers()[0]; p.Result != "evidence" {
				t.Fatalf("peer status %+v", p)
			}
			hook.wait(t, e2[0])
			// Frozen: no more cosignatures for the log.
			cp, _ := la.Checkpoint(ctx)
			code, _ := post(t, n1.url+auditor.PathAddCheckpoint, "old 0\n\n"+string(cp))
			if code != http.StatusForbidden {
				t.Fatalf("add-checkpoint on a frozen log: %d", code)
			}
			// A client that posts either side's checkpoint gets the bundle.
			code, body := post(t, n2.url+auditor.PathGossip, string(cp))
			if code != http.StatusConflict && code != http.StatusOK {
				t.Fatalf("gossip of the other view: %d %s", code, body)
			}
			// An operator unfreezes (store offline).
			n1.close()
			st, _ := auditor.OpenStore(n1.dir)
			if ok, err := st.Unfreeze(origin); !ok || err != nil {
				t.Fatalf("unfreeze: %v %v", ok, err)
			}
			st.Close()
		})
	}
}

type webhook struct {
	mu     sync.Mutex
	bodies [][]byte
}

func (h *webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.bodies = append(h.bodies, b)
	h.mu.Unlock()
}

func (h *webhook) wait(t *testing.T, want []byte) {
	t.Helper()
	for range 200 {
		h.mu.Lock()
		for _, b := range h.bodies {
			if bytes.Equal(b, want) {
				h.mu.Unlock()
				return
			}
		}
		h.mu.Unlock()
		sleep()
	}
	t.Fatal("webhook did not receive the evidence")
}

func post(t testing.TB, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestGossipConsistent: a client's older, consistent checkpoint gets the
// auditor's latest one back; a checkpoint the auditor has not reached yet
// also gets 200 (nothing to compare yet).
func TestGossipConsistent(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	b := ktlog.New(origin)
	b.Honest(10, 3)
	l.appendAll(t, b)
	old, _ := l.Checkpoint(ctx)
	b.Honest(10, 3)
	l.appendAll(t, b)
	n := newNode(t, "a.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}})
	if code, _ := post(t, n.url+auditor.PathGossip, string(old)); code != http.StatusServiceUnavailable {
		t.Fatalf("before any audit: %d", code)
	}
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	latest, _ := l.Checkpoint(ctx)
	code, body := post(t, n.url+auditor.PathGossip, string(old))
	if code != http.StatusOK || body != string(latest) {
		t.Fatalf("older checkpoint: %d %q", code, body)
	}
	b.Honest(3, 3)
	l.appendAll(t, b)
	newer, _ := l.Checkpoint(ctx)
	if code, body := post(t, n.url+auditor.PathGossip, string(newer)); code != http.StatusOK || body != string(latest) {
		t.Fatalf("newer checkpoint: %d %q", code, body)
	}
	if evs, _ := n.a.Evidence(origin); len(evs) != 0 {
		t.Fatal("evidence from consistent checkpoints")
	}
}

// TestGossipSplitViewFromClient: a client in the other view posts its
// checkpoint; the auditor (holding the larger tree) answers 409 with the
// bundle.
func TestGossipSplitViewFromClient(t *testing.T) {
	ctx := context.Background()
	la, lb, ba, _ := forkedLogs(t, 8, 60, 35)
	n := newNode(t, "a.example", nodeOpts{logs: []auditor.LogConfig{logConfig(la, ba)}})
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	theirs, _ := lb.Checkpoint(ctx)
	code, body := post(t, n.url+auditor.PathGossip, string(theirs))
	if code != http.StatusConflict {
		t.Fatalf("%d %s", code, body)
	}
	if _, err := evidence.Verify([]byte(body), la.verifier); err != nil {
		t.Fatal(err)
	}
}

// TestRunGossips: Run's own loops poll the log and gossip with the peer
// on their intervals, and end when the context is cancelled.
func TestRunGossips(t *testing.T) {
	la, lb, ba, bb := forkedLogs(t, 8, 50, 40)
	n2 := newNode(t, "auditor2.example", nodeOpts{logs: []auditor.LogConfig{logConfig(lb, bb)}, poll: 20 * time.Millisecond})
	n1 := newNode(t, "auditor1.example", nodeOpts{logs: []auditor.LogConfig{logConfig(la, ba)},
		peers: []auditor.Peer{{Name: "auditor2", URL: n2.url}}, poll: 20 * time.Millisecond, gossip: 30 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	for _, n := range []*node{n1, n2} {
		go func() { done <- n.a.Run(ctx) }()
	}
	for i := 0; ; i++ {
		e1, _ := n1.a.Evidence(origin)
		e2, _ := n2.a.Evidence(origin)
		if len(e1) == 1 && len(e2) == 1 && bytes.Equal(e1[0], e2[0]) {
			break
		}
		if i == 1000 {
			t.Fatal("no evidence from the background loops")
		}
		sleep()
	}
	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
