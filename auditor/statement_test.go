package auditor_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/evidence"
	"github.com/keytrans/kt/log/witness"
)

// auditKey returns a new audit key named after the auditor's witness key
// (design.md 14.1: NAME/audit).
func auditKey(t testing.TB, name string) string {
	t.Helper()
	skey, _, err := note.GenerateKey(rand.Reader, name+"/audit")
	if err != nil {
		t.Fatal(err)
	}
	return skey
}

// auditPolicy is an audit policy (witness.ParseAuditPolicy) that needs
// n's statement.
func auditPolicy(t testing.TB, n *node) *witness.Policy {
	t.Helper()
	p, err := witness.ParseAuditPolicy([]byte(fmt.Sprintf("auditor a %s %s\nquorum a\n", n.auditVKey, n.url)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type answer struct {
	code       int
	retryAfter string
	body       string
}

func postAudit(t testing.TB, n *node, body []byte) answer {
	t.Helper()
	resp, err := http.Post(n.url+auditor.PathAudit, "text/plain", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header.Get("Retry-After"), string(b)}
}

// checkStatement checks that line is exactly one signature line and that
// it is a valid statement on checkpoint cp under n's audit policy, signed
// around now.
func checkStatement(t testing.TB, n *node, cp []byte, line string) {
	t.Helper()
	if !strings.HasPrefix(line, "— ") || strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
		t.Fatalf("not one signature line: %q", line)
	}
	cs, err := auditPolicy(t, n).Check(append(cp, line...))
	if err != nil {
		t.Fatalf("the statement does not satisfy the audit policy: %v", err)
	}
	if len(cs) != 1 || cs[0].Witness != "a" || time.Since(cs[0].Time) > time.Minute || time.Until(cs[0].Time) > time.Minute {
		t.Fatalf("statements %+v", cs)
	}
}

// auditedLog is a log of two parts, audited up to the end of the second:
// small is the checkpoint after the first part, cp the latest.
func auditedLog(t *testing.T, o nodeOpts) (l *testLog, b *ktlog.Builder, n *node, small, cp []byte) {
	t.Helper()
	l = newTestLog(t)
	b = ktlog.New(origin)
	b.Honest(6, 3)
	small = l.sizedCheckpointAfter(t, b)
	b.Honest(4, 2)
	cp = l.sizedCheckpointAfter(t, b)
	o.logs = []auditor.LogConfig{logConfig(l, b)}
	if o.auditKey == "" {
		o.auditKey = auditKey(t, "auditor.example")
	}
	n = newNode(t, "auditor.example", o)
	if err := n.a.AuditOnce(context.Background(), origin); err != nil {
		t.Fatal(err)
	}
	return
}

// TestAuditStatement: the statement on the audited checkpoint and on an
// earlier one (through the log's consistency proof) verifies under an
// audit policy naming the audit key and not under one naming the witness
// key; the latest audited checkpoint served at GET /kt/v1/checkpoint
// carries the auditor's own statement; both are counted.
func TestAuditStatement(t *testing.T) {
	l, b, n, small, cp := auditedLog(t, nodeOpts{})
	for _, c := range [][]byte{cp, small} {
		a := postAudit(t, n, c)
		if a.code != http.StatusOK {
			t.Fatalf("%d %s", a.code, a.body)
		}
		checkStatement(t, n, c, a.body)
		// The witness key makes no audit statement, and the audit key no
		// cosignature.
		wp, err := witness.ParseAuditPolicy([]byte("auditor w " + n.vkey + "\nquorum w\n"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := wp.Check(append(c, a.body...)); err == nil {
			t.Fatal("the statement verifies under the witness key")
		}
	}
	code, served := get(t, n.url+auditor.PathCheckpoint)
	if code != http.StatusOK || !strings.HasPrefix(served, string(cp)) {
		t.Fatalf("GET checkpoint: %d %q", code, served)
	}
	checkStatement(t, n, cp, served[len(cp):])
	// Gossip answers with the log's checkpoint as before.
	if code, body := post(t, n.url+auditor.PathGossip, string(small)); code != http.StatusOK || body != string(cp) {
		t.Fatalf("gossip: %d %q", code, body)
	}
	statements, requests := n.m.counts()
	if statements != 3 || requests[http.StatusOK] != 2 || len(requests) != 1 {
		t.Fatalf("metrics: %d statements, requests %v", statements, requests)
	}
	// Restarted, the auditor states its latest audited checkpoint again.
	n.close()
	n2 := newNode(t, "auditor.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}, dir: n.dir, auditKey: auditKey(t, "auditor.example")})
	code, served = get(t, n2.url+auditor.PathCheckpoint)
	if code != http.StatusOK || !strings.HasPrefix(served, string(cp)) {
		t.Fatalf("GET checkpoint after a restart: %d %q", code, served)
	}
	checkStatement(t, n2, cp, served[len(cp):])
}

// TestAuditTriggersStep: a checkpoint beyond the audited size makes the
// follower audit at once: with a poll interval of an hour, the answer is
// still a statement.
func TestAuditTriggersStep(t *testing.T) {
	l := newTestLog(t)
	b := ktlog.New(origin)
	b.Honest(4, 2)
	first := l.sizedCheckpointAfter(t, b)
	n := newNode(t, "auditor.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}, auditKey: auditKey(t, "auditor.example"),
		poll: time.Hour, run: true})
	// Run audits once at start; then not for an hour.
	if a := postAudit(t, n, first); a.code != http.StatusOK {
		t.Fatalf("first checkpoint: %d %s", a.code, a.body)
	}
	for round := range 3 {
		b.Honest(3, 2)
		cp := l.sizedCheckpointAfter(t, b)
		a := postAudit(t, n, cp)
		if a.code != http.StatusOK {
			t.Fatalf("round %d: %d %s", round, a.code, a.body)
		}
		checkStatement(t, n, cp, a.body)
		if st := n.a.Status()[0]; st.Latest == nil || st.Latest.Size != b.Len() {
			t.Fatalf("round %d: status %+v", round, st)
		}
	}
}

// TestAuditNotYet: when the auditor cannot audit up to the checkpoint's
// size within AuditWait (its view of the log is behind), 503 with
// Retry-After: 1 and a body saying how far the audit is; without a
// follower running too.
func TestAuditNotYet(t *testing.T) {
	l := newTestLog(t)
	b := ktlog.New(origin)
	b.Honest(5, 2)
	audited := l.sizedCheckpointAfter(t, b)
	b.Honest(2, 2)
	ahead := l.sizedCheckpointAfter(t, b)
	// The auditor's read API serves the first part only.
	l2 := newTestLogWithKey(t, l.skey, l.vkey, l.signer, l.verifier)
	l2.replace(conformance.NewMemoryLog(origin, l.signer))
	b1 := ktlog.New(origin)
	b1.Honest(5, 2)
	l2.appendAll(t, b1)
	c, _, _ := log.ParseCheckpoint(audited, origin, l.verifier)
	for _, run := range []bool{false, true} {
		t.Run(fmt.Sprint("run=", run), func(t *testing.T) {
			n := newNode(t, "auditor.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l2, b1)}, auditKey: auditKey(t, "auditor.example"),
				auditWait: 300 * time.Millisecond, run: run, poll: time.Hour})
			if !run {
				if err := n.a.AuditOnce(context.Background(), origin); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			a := postAudit(t, n, ahead)
			if a.code != http.StatusServiceUnavailable || a.retryAfter != "1" || !strings.Contains(a.body, fmt.Sprintf("audited up to size %d", c.Size)) {
				t.Fatalf("%+v", a)
			}
			if time.Since(start) < 300*time.Millisecond {
				t.Fatal("answered before AuditWait")
			}
			_, err := n.a.Audit(context.Background(), ahead)
			if !errors.Is(err, auditor.ErrNotYetAudited) {
				t.Fatalf("Audit: %v", err)
			}
			// Control: the audited checkpoint itself gets its statement.
			if a := postAudit(t, n, audited); a.code != http.StatusOK {
				t.Fatalf("%+v", a)
			}
			// The request's context bounds the wait too.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
			defer cancel()
			if _, err := n.a.Audit(ctx, ahead); !errors.Is(err, auditor.ErrNotYetAudited) {
				t.Fatalf("Audit with a short context: %v", err)
			}
		})
	}
}

// TestAuditViolation: a checkpoint containing an entry the replay found in
// violation gets 403 naming the entry and the rule; one below it gets its
// statement; the latest audited checkpoint is served without one.
func TestAuditViolation(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	b := ktlog.New(origin)
	b.Honest(3, 2)
	good := l.sizedCheckpointAfter(t, b)
	bad := b.EpochWith(func(r *api.EpochRecord) { r.MapRoot[0] ^= 1 })
	b.Honest(2, 2)
	cp := l.sizedCheckpointAfter(t, b)
	n := newNode(t, "a.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}, auditKey: auditKey(t, "a.example")})
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	a := postAudit(t, n, cp)
	if a.code != http.StatusForbidden || !strings.Contains(a.body, fmt.Sprintf("entry %d violates map root", bad)) {
		t.Fatalf("checkpoint containing the violation: %+v", a)
	}
	if _, err := n.a.Audit(ctx, cp); !errors.Is(err, auditor.ErrViolation) {
		t.Fatal(err)
	}
	// The checkpoint just above the bad entry contains it too; the
	// checkpoint up to it (excluded) does not.
	if a := postAudit(t, n, l.sizedCheckpoint(t, bad+1)); a.code != http.StatusForbidden {
		t.Fatalf("size %d: %+v", bad+1, a)
	}
	if a := postAudit(t, n, l.sizedCheckpoint(t, bad)); a.code != http.StatusOK {
		t.Fatalf("size %d: %+v", bad, a)
	}
	a = postAudit(t, n, good)
	if a.code != http.StatusOK {
		t.Fatalf("checkpoint below the violation: %+v", a)
	}
	checkStatement(t, n, good, a.body)
	if code, served := get(t, n.url+auditor.PathCheckpoint); code != http.StatusOK || served != string(cp) {
		t.Fatalf("GET checkpoint of a log in violation: %d %q", code, served)
	}
}

// TestAuditForkedCheckpoint: a checkpoint of the audited size with another
// root, signed by the log, gets no statement but 409 with the evidence,
// which is recorded; the log is then frozen (403) and its latest audited
// checkpoint served without a statement. A checkpoint below the audited
// size from another history gets 409 too.
func TestAuditForkedCheckpoint(t *testing.T) {
	ctx := context.Background()
	l, b, n, _, cp := auditedLog(t, nodeOpts{})
	other := conformance.NewMemoryLog(origin, l.signer)
	for i := range b.Len() {
		if _, err := other.Append(ctx, [][]byte{fmt.Appendf(nil, "other %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	fork, _ := other.Checkpoint(ctx)
	a := postAudit(t, n, fork)
	if a.code != http.StatusConflict || !strings.HasPrefix(a.body, evidence.Header+"\n") {
		t.Fatalf("same size, other root: %+v", a)
	}
	if _, err := evidence.Verify([]byte(a.body), l.verifier); err != nil {
		t.Fatalf("the answer is not evidence: %v", err)
	}
	if evs, _ := n.a.Evidence(origin); len(evs) != 1 {
		t.Fatalf("%d bundles recorded", len(evs))
	}
	a = postAudit(t, n, cp)
	if a.code != http.StatusForbidden || !strings.Contains(a.body, "frozen") {
		t.Fatalf("frozen log: %+v", a)
	}
	if _, err := n.a.Audit(ctx, cp); !errors.Is(err, auditor.ErrFrozen) {
		t.Fatal(err)
	}
	if code, served := get(t, n.url+auditor.PathCheckpoint); code != http.StatusOK || served != string(cp) {
		t.Fatalf("GET checkpoint of a frozen log: %d %q", code, served)
	}

	// Below the audited size.
	la, lb, ba, _ := forkedLogs(t, 8, 60, 40)
	n = newNode(t, "a.example", nodeOpts{logs: []auditor.LogConfig{logConfig(la, ba)}, auditKey: auditKey(t, "a.example")})
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	theirs, _ := lb.Checkpoint(ctx)
	if a := postAudit(t, n, theirs); a.code != http.StatusConflict {
		t.Fatalf("forked checkpoint below the audited size: %+v", a)
	}
	if evs, _ := n.a.Evidence(origin); len(evs) != 1 {
		t.Fatalf("%d bundles recorded", len(evs))
	}
}

// TestAuditBadRequests: every refusal of POST /kt/v1/audit with its status
// and typed error.
func TestAuditBadRequests(t *testing.T) {
	ctx := context.Background()
	l, b, n, small, cp := auditedLog(t, nodeOpts{})
	// Another key under the log's name.
	_, _, s2, _ := newLogKey(t)
	m2 := conformance.NewMemoryLog(origin, s2)
	m2.Append(ctx, [][]byte{[]byte("x")})
	forged, _ := m2.Checkpoint(ctx)
	// Another origin.
	oskey, _, _ := note.GenerateKey(rand.Reader, "other.example/kt")
	osigner, _ := note.NewSigner(oskey)
	om := conformance.NewMemoryLog("other.example/kt", osigner)
	om.Append(ctx, [][]byte{[]byte("x")})
	otherOrigin, _ := om.Checkpoint(ctx)
	sign := func(text string) []byte {
		b, err := note.Sign(&note.Note{Text: text}, l.signer)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	empty := sign(fmt.Sprintf("%s\n0\n%s\n", origin, base64.StdEncoding.EncodeToString(make([]byte, 32))))
	c, _, _ := log.ParseCheckpoint(small, origin, l.verifier)
	extension := sign(fmt.Sprintf("%s\n%d\n%s\nextension\n", origin, c.Size, base64.StdEncoding.EncodeToString(c.Hash)))

	// A witness-only log, and an auditor without audit key.
	wn := newNode(t, "w.example", nodeOpts{logs: []auditor.LogConfig{{Origin: origin, VKey: l.vkey}}, auditKey: auditKey(t, "w.example")})
	plain := newNode(t, "p.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}})

	for _, tc := range []struct {
		name string
		n    *node
		body []byte
		code int
		err  error
	}{
		{"no audit key", plain, cp, http.StatusNotFound, auditor.ErrNoAuditKey},
		{"witnessed, not audited", wn, cp, http.StatusNotFound, auditor.ErrNotAudited},
		{"unknown origin", n, otherOrigin, http.StatusNotFound, auditor.ErrUnknownLog},
		{"bad signature", n, forged, http.StatusForbidden, auditor.ErrBadSignature},
		{"unsigned", n, []byte(strings.SplitAfter(string(cp), "\n\n")[0]), http.StatusBadRequest, auditor.ErrMalformed},
		{"garbage", n, []byte(origin + "\nnot a checkpoint\n"), http.StatusBadRequest, auditor.ErrMalformed},
		{"empty tree", n, empty, http.StatusBadRequest, auditor.ErrMalformed},
		{"extension line", n, extension, http.StatusBadRequest, auditor.ErrMalformed},
		{"too large", n, append(cp, strings.Repeat("x", auditor.DefaultMaxBodyBytes)...), http.StatusRequestEntityTooLarge, nil},
		{"control", n, cp, http.StatusOK, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if a := postAudit(t, tc.n, tc.body); a.code != tc.code {
				t.Fatalf("%+v", a)
			}
			if tc.err != nil {
				if _, err := tc.n.a.Audit(ctx, tc.body); !errors.Is(err, tc.err) {
					t.Fatalf("Audit: %v, want %v", err, tc.err)
				}
			}
		})
	}
	if _, requests := n.m.counts(); requests[http.StatusNotFound] != 1 || requests[http.StatusForbidden] != 1 ||
		requests[http.StatusBadRequest] != 4 || requests[http.StatusRequestEntityTooLarge] != 1 || requests[http.StatusOK] != 1 {
		t.Fatalf("request metrics %v", requests)
	}
	if evs, _ := n.a.Evidence(origin); len(evs) != 0 {
		t.Fatal("bad requests left evidence")
	}
}

// TestAuditProofUnavailable: below the audited size the statement needs
// the log's consistency proof; while the log does not give it, 503 with
// Retry-After (and no evidence); at the audited size none is needed.
func TestAuditProofUnavailable(t *testing.T) {
	l, _, n, small, cp := auditedLog(t, nodeOpts{})
	l.noProofs.Store(true)
	a := postAudit(t, n, small)
	if a.code != http.StatusServiceUnavailable || a.retryAfter != "1" || !strings.Contains(a.body, "consistency proof") {
		t.Fatalf("%+v", a)
	}
	if _, err := n.a.Audit(context.Background(), small); !errors.Is(err, auditor.ErrNotYetAudited) {
		t.Fatal(err)
	}
	if a := postAudit(t, n, cp); a.code != http.StatusOK {
		t.Fatalf("control: %+v", a)
	}
	if evs, _ := n.a.Evidence(origin); len(evs) != 0 {
		t.Fatal("evidence without a fork")
	}
	l.noProofs.Store(false)
	if a := postAudit(t, n, small); a.code != http.StatusOK {
		t.Fatalf("with proofs again: %+v", a)
	}
}
