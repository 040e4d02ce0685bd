package auditor_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/witness"
)

// witnessFixture: a plain log (no key transparency entries needed: the
// witness only checks signatures and proofs) and a witness-only auditor.
type witnessFixture struct {
	l   *testLog
	n   *node
	cps map[uint64]string // checkpoint of each size
}

func newWitnessFixture(t testing.TB, size int) *witnessFixture {
	t.Helper()
	ctx := context.Background()
	l := newTestLog(t)
	f := &witnessFixture{l: l, cps: map[uint64]string{}}
	for i := range size {
		if _, err := l.current().Append(ctx, [][]byte{fmt.Appendf(nil, "entry %d", i)}); err != nil {
			t.Fatal(err)
		}
		cp, _ := l.Checkpoint(ctx)
		f.cps[uint64(i+1)] = string(cp)
	}
	f.n = newNode(t, "witness.example", nodeOpts{logs: []auditor.LogConfig{{Origin: origin, VKey: l.vkey}}})
	return f
}

func (f *witnessFixture) proof(t testing.TB, a, b uint64) string {
	p, err := f.l.ConsistencyProof(context.Background(), a, b)
	if err != nil {
		t.Fatal(err)
	}
	var s strings.Builder
	for _, h := range p {
		s.WriteString(base64.StdEncoding.EncodeToString(h) + "\n")
	}
	return s.String()
}

func (f *witnessFixture) add(t *testing.T, body string) (int, string) {
	return post(t, f.n.url+auditor.PathAddCheckpoint, body)
}

// TestWitnessProtocol drives add-checkpoint with the requests of C2SP
// tlog-witness and checks each status, the cosignature, and the state.
func TestWitnessProtocol(t *testing.T) {
	f := newWitnessFixture(t, 10)
	// First contact: old 0, empty proof.
	code, body := f.add(t, "old 0\n\n"+f.cps[3])
	if code != http.StatusOK {
		t.Fatalf("first checkpoint: %d %s", code, body)
	}
	signed := f.cps[3] + body
	if _, err := note.Open([]byte(signed), note.VerifierList(f.n.cos)); err != nil {
		t.Fatalf("cosignature does not verify: %v\n%s", err, signed)
	}
	// SPEC: wrong old size → 409 with the size as text/x.tlog.size.
	resp, err := http.Post(f.n.url+auditor.PathAddCheckpoint, "text/plain", strings.NewReader("old 0\n\n"+f.cps[5]))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || resp.Header.Get("Content-Type") != "text/x.tlog.size" {
		t.Fatalf("old size mismatch: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if code, body := f.add(t, "old 1\n"+f.proof(t, 1, 5)+"\n"+f.cps[5]); code != http.StatusConflict || body != "3\n" {
		t.Fatalf("stale old size: %d %q", code, body)
	}
	// A valid proof from 3 to 7.
	if code, body := f.add(t, "old 3\n"+f.proof(t, 3, 7)+"\n"+f.cps[7]); code != http.StatusOK {
		t.Fatalf("3 to 7: %d %s", code, body)
	}
	// The same checkpoint again (old = size, empty proof) is cosigned.
	if code, _ := f.add(t, "old 7\n\n"+f.cps[7]); code != http.StatusOK {
		t.Fatalf("same checkpoint again: %d", code)
	}
	// A wrong proof → 422, state unchanged.
	bad := f.proof(t, 7, 9)
	bad = "AAAA" + bad[4:]
	if code, _ := f.add(t, "old 7\n"+bad+"\n"+f.cps[9]); code != http.StatusUnprocessableEntity {
		t.Fatalf("bad proof: %d", code)
	}
	if code, body := f.add(t, "old 0\n\n"+f.cps[9]); code != http.StatusConflict || body != "7\n" {
		t.Fatalf("state after a bad proof: %d %q", code, body)
	}
	// A rollback (old > size) → 400.
	if code, _ := f.add(t, "old 7\n\n"+f.cps[5]); code != http.StatusBadRequest {
		t.Fatalf("old beyond size: %d", code)
	}
	if code, _ := post(t, f.n.url+auditor.PathCheckpoint, ""); code != http.StatusMethodNotAllowed {
		t.Fatalf("POST checkpoint: %d", code)
	}
	if code, _ := get(t, f.n.url+auditor.PathAddCheckpoint); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET add-checkpoint: %d", code)
	}
	// GET /kt/v1/checkpoint for a witnessed log: the latest cosigned.
	if code, body := get(t, f.n.url+auditor.PathCheckpoint); code != http.StatusOK || body != f.cps[7] {
		t.Fatalf("witnessed view: %d %q", code, body)
	}
}

// TestWitnessForkIsEvidence: a checkpoint of the size already cosigned with
// another root gets 409, and the two signed checkpoints become evidence.
func TestWitnessForkIsEvidence(t *testing.T) {
	f := newWitnessFixture(t, 6)
	if code, _ := f.add(t, "old 0\n\n"+f.cps[6]); code != http.StatusOK {
		t.Fatal(code)
	}
	other := conformance.NewMemoryLog(origin, f.l.signer)
	for i := range 6 {
		other.Append(context.Background(), [][]byte{fmt.Appendf(nil, "other %d", i)})
	}
	fork, _ := other.Checkpoint(context.Background())
	code, body := f.add(t, "old 6\n\n"+string(fork))
	if code != http.StatusConflict || body == "6\n" {
		t.Fatalf("fork: %d %q", code, body)
	}
	evs, _ := f.n.a.Evidence(origin)
	if len(evs) != 1 {
		t.Fatalf("%d bundles", len(evs))
	}
	// Frozen now: even the good chain gets 403.
	if code, _ := f.add(t, "old 6\n\n"+f.cps[6]); code != http.StatusForbidden {
		t.Fatalf("after evidence: %d", code)
	}
}

// TestBadInput sends hostile requests to every endpoint and checks the
// status and that nothing was stored; the service keeps answering.
func TestBadInput(t *testing.T) {
	f := newWitnessFixture(t, 4)
	otherSKey, _, _ := note.GenerateKey(rand.Reader, origin)
	otherSigner, _ := note.NewSigner(otherSKey)
	root := func(size uint64) []byte {
		c, _, _ := log.ParseCheckpoint([]byte(f.cps[size]), origin, f.l.verifier)
		return c.Hash
	}
	wrongKey, _ := log.SignCheckpoint(otherSigner, origin, 4, root(4))
	unknownSKey, _, _ := note.GenerateKey(rand.Reader, "unknown.example/log")
	unknownSigner, _ := note.NewSigner(unknownSKey)
	unknown, _ := log.SignCheckpoint(unknownSigner, "unknown.example/log", 4, root(4))
	ext, _ := note.Sign(&note.Note{Text: strings.SplitAfterN(f.cps[4], "\n", 4)[0] + "4\n" + base64.StdEncoding.EncodeToString(root(4)) + "\nextension\n"}, f.l.signer)
	cp4 := f.cps[4]
	tampered := strings.Replace(cp4, "\n4\n", "\n5\n", 1)
	huge := "old 0\n\n" + cp4 + strings.Repeat("x", 70<<10)
	before, _ := f.n.store.Count()
	for _, tc := range []struct {
		name, path, body string
		want             int
	}{
		{"empty", auditor.PathAddCheckpoint, "", 400},
		{"no newline", auditor.PathAddCheckpoint, "old 0", 400},
		{"leading zero", auditor.PathAddCheckpoint, "old 00\n\n" + cp4, 400},
		{"plus sign", auditor.PathAddCheckpoint, "old +0\n\n" + cp4, 400},
		{"negative", auditor.PathAddCheckpoint, "old -1\n\n" + cp4, 400},
		{"huge size", auditor.PathAddCheckpoint, "old 99999999999999999999\n\n" + cp4, 400},
		{"no empty line", auditor.PathAddCheckpoint, "old 0\n" + cp4, 400},
		{"bad base64 proof", auditor.PathAddCheckpoint, "old 0\n!!!!\n\n" + cp4, 400},
		{"short proof hash", auditor.PathAddCheckpoint, "old 0\nAAAA\n\n" + cp4, 400},
		{"64 proof lines", auditor.PathAddCheckpoint, "old 0\n" + strings.Repeat(base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n", 64) + "\n" + cp4, 400},
		{"no checkpoint", auditor.PathAddCheckpoint, "old 0\n\n", 400},
		{"garbage note", auditor.PathAddCheckpoint, "old 0\n\n" + origin + "\nnot a note\n", 400},
		{"unknown origin", auditor.PathAddCheckpoint, "old 0\n\n" + string(unknown), 404},
		{"wrong key", auditor.PathAddCheckpoint, "old 0\n\n" + string(wrongKey), 403},
		{"tampered body", auditor.PathAddCheckpoint, "old 0\n\n" + tampered, 403},
		{"extension line", auditor.PathAddCheckpoint, "old 0\n\n" + string(ext), 400},
		{"proof with old 0", auditor.PathAddCheckpoint, "old 0\n" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + "\n\n" + cp4, 422},
		{"huge body", auditor.PathAddCheckpoint, huge, 413},
		{"gossip empty", auditor.PathGossip, "", 404},
		{"gossip garbage", auditor.PathGossip, origin + "\ngarbage", 400},
		{"gossip unknown origin", auditor.PathGossip, string(unknown), 404},
		{"gossip wrong key", auditor.PathGossip, string(wrongKey), 400},
		{"gossip huge", auditor.PathGossip, huge, 413},
		{"gossip bad evidence", auditor.PathGossip, "kt-evidence/v1\ncheckpoint AAAA\n", 400},
		{"gossip evidence of no fork", auditor.PathGossip, "kt-evidence/v1\ncheckpoint " + base64.StdEncoding.EncodeToString([]byte(cp4)) + "\ncheckpoint " + base64.StdEncoding.EncodeToString([]byte(cp4)) + "\n", 400},
		{"gossip evidence wrong key", auditor.PathGossip, "kt-evidence/v1\ncheckpoint " + base64.StdEncoding.EncodeToString(wrongKey) + "\ncheckpoint " + base64.StdEncoding.EncodeToString([]byte(cp4)) + "\n", 400},
	} {
		code, body := post(t, f.n.url+tc.path, tc.body)
		if code != tc.want {
			t.Errorf("%s: %d %q, want %d", tc.name, code, body, tc.want)
		}
	}
	for _, tc := range []struct {
		path string
		want int
	}{
		{auditor.PathCheckpoint + "?origin=nope", 404},
		{auditor.PathCheckpoint + "?origin=a&origin=b", 400},
		{auditor.PathCheckpoint + "?x=1", 400},
		{auditor.PathCheckpoint, 503}, // nothing cosigned yet
		{auditor.PathEvidence + "/nope", 404},
		{auditor.PathEvidence + "?origin=nope", 404},
		{"/nope", 404},
	} {
		if code, body := get(t, f.n.url+tc.path); code != tc.want {
			t.Errorf("GET %s: %d %q, want %d", tc.path, code, body, tc.want)
		}
	}
	if after, _ := f.n.store.Count(); after != before {
		t.Fatalf("bad input stored %d keys", after-before)
	}
	// Still serving.
	if code, _ := f.add(t, "old 0\n\n"+cp4); code != http.StatusOK {
		t.Fatalf("after bad input: %d", code)
	}
}

// TestWitnesserInterop: the project's own tlog-witness client (the one
// log/posix and log/trillian use) gathers our cosignature under a policy.
func TestWitnesserInterop(t *testing.T) {
	ctx := context.Background()
	f := newWitnessFixture(t, 9)
	policy := fmt.Sprintf("log %s\nwitness w %s %s\nquorum w\n", f.l.vkey, f.n.vkey, f.n.url)
	p, err := witness.ParsePolicy([]byte(policy))
	if err != nil {
		t.Fatal(err)
	}
	w, err := witness.NewWitnesser(p, witness.WitnesserOpts{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	proofs := func(ctx context.Context, a, b uint64) ([][]byte, error) { return f.l.ConsistencyProof(ctx, a, b) }
	for _, size := range []uint64{2, 5, 9} {
		signed, err := w.Witness(ctx, []byte(f.cps[size]), proofs)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if _, err := p.Check(signed); err != nil {
			t.Fatalf("size %d: policy: %v", size, err)
		}
	}
	// A fresh Witnesser (a restarted log) resyncs through 409.
	w2, _ := witness.NewWitnesser(p, witness.WitnesserOpts{Logger: quiet()})
	if _, err := w2.Witness(ctx, []byte(f.cps[9]), proofs); err != nil {
		t.Fatal(err)
	}
}

// TestWitnessChecksAuditedView: a log that asks the auditor to cosign a
// checkpoint below what the auditor audited, from another history, gets
// 409 and leaves evidence, even though its proof from the last cosigned
// size verifies.
func TestWitnessChecksAuditedView(t *testing.T) {
	ctx := context.Background()
	la, lb, ba, _ := forkedLogs(t, 8, 60, 40)
	n := newNode(t, "a.example", nodeOpts{logs: []auditor.LogConfig{logConfig(la, ba)}})
	// The auditor cosigned size 20 of the common history, then audited la.
	cp20 := la.sizedCheckpoint(t, 20)
	if code, body := post(t, n.url+auditor.PathAddCheckpoint, "old 0\n\n"+string(cp20)); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	// lb's checkpoint of size 40 extends size 20 (the common prefix) but
	// forks from la.
	theirs, _ := lb.Checkpoint(ctx)
	p, _ := lb.ConsistencyProof(ctx, 20, 40)
	var ps strings.Builder
	for _, h := range p {
		ps.WriteString(base64.StdEncoding.EncodeToString(h) + "\n")
	}
	if code, body := post(t, n.url+auditor.PathAddCheckpoint, "old 20\n"+ps.String()+"\n"+string(theirs)); code != http.StatusConflict {
		t.Fatalf("forked checkpoint below the audited size: %d %s", code, body)
	}
	if evs, _ := n.a.Evidence(origin); len(evs) != 1 {
		t.Fatalf("%d bundles", len(evs))
	}
}

// TestWitnessStateDurable: the latest cosigned checkpoint and the frozen
// mark survive a restart; after the operator unfreezes, cosigning resumes
// from the recorded state.
func TestWitnessStateDurable(t *testing.T) {
	f := newWitnessFixture(t, 8)
	dir := f.n.dir
	if code, _ := f.add(t, "old 0\n\n"+f.cps[3]); code != http.StatusOK {
		t.Fatal(code)
	}
	reopen := func() {
		f.n.close()
		f.n = newNode(t, "witness.example", nodeOpts{logs: []auditor.LogConfig{{Origin: origin, VKey: f.l.vkey}}, dir: dir})
	}
	reopen()
	if code, body := f.add(t, "old 0\n\n"+f.cps[5]); code != http.StatusConflict || body != "3\n" {
		t.Fatalf("after a restart: %d %q", code, body)
	}
	// Evidence (a same-size fork), then a restart: still frozen.
	other := conformance.NewMemoryLog(origin, f.l.signer)
	for i := range 3 {
		other.Append(context.Background(), [][]byte{fmt.Appendf(nil, "other %d", i)})
	}
	fork, _ := other.Checkpoint(context.Background())
	if code, _ := f.add(t, "old 3\n\n"+string(fork)); code != http.StatusConflict {
		t.Fatal(code)
	}
	reopen()
	if code, _ := f.add(t, "old 3\n"+f.proof(t, 3, 5)+"\n"+f.cps[5]); code != http.StatusForbidden {
		t.Fatalf("frozen after a restart: %d", code)
	}
	f.n.close()
	st, _ := auditor.OpenStore(dir)
	if ok, err := st.Unfreeze(origin); !ok || err != nil {
		t.Fatal(ok, err)
	}
	st.Close()
	reopen()
	if code, body := f.add(t, "old 3\n"+f.proof(t, 3, 5)+"\n"+f.cps[5]); code != http.StatusOK {
		t.Fatalf("after unfreeze: %d %s", code, body)
	}
	if evs, _ := f.n.a.Evidence(origin); len(evs) != 1 {
		t.Fatal("the evidence was not kept")
	}
}
