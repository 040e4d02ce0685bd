package directory

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/internal/testing/testauditor"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/internal/testing/testonly"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/witness"
)

// fakeAuditor is a testauditor served on loopback.
type fakeAuditor struct {
	*testauditor.Auditor
	name string // in the audit policy
	srv  *httptest.Server
}

func newFakeAuditor(t *testing.T, name string, logV note.Verifier) *fakeAuditor {
	t.Helper()
	ta, err := testauditor.New(name + "/audit")
	if err != nil {
		t.Fatal(err)
	}
	if logV != nil {
		ta.SetLog(logV)
	}
	a := &fakeAuditor{Auditor: ta, name: name, srv: httptest.NewServer(ta)}
	t.Cleanup(func() {
		ta.Close()
		a.srv.Close()
	})
	return a
}

func (a *fakeAuditor) line() string {
	return fmt.Sprintf("auditor %s %s %s\n", a.name, a.VerifierKey(), a.srv.URL)
}

var statement = testauditor.Statement

// auditPolicy is a policy naming the auditors, with quorum line q (for
// example "group g 2 a1 a2\nquorum g").
func auditPolicy(q string, as ...*fakeAuditor) []byte {
	var b strings.Builder
	for _, a := range as {
		b.WriteString(a.line())
	}
	b.WriteString(q + "\n")
	return []byte(b.String())
}

// newAuditEnv starts a directory over a memory log whose audit policy
// names the auditors made by mk (given the log's verifier).
func newAuditEnv(t *testing.T, mk func(logV note.Verifier) []byte, tune func(*Config)) *env {
	t.Helper()
	dir := t.TempDir()
	k := newKeys(t)
	policy := mk(k.verifier)
	e := &env{t: t, k: k, b: backends[0], logDir: filepath.Join(dir, "log"), stateDir: filepath.Join(dir, "state")}
	e.tune = func(c *Config) {
		c.AuditPolicy = policy
		if tune != nil {
			tune(c)
		}
	}
	e.start()
	t.Cleanup(e.stop)
	return e
}

// waitFor polls f for up to 30 s.
func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	for start := time.Now(); !f(); time.Sleep(5 * time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("not within 30s: %s", what)
		}
	}
}

// servedSize is the size of the served epoch checkpoint, 0 if none.
func servedSize(d *Directory) uint64 {
	if ep := d.cur.Load(); ep != nil {
		return ep.size
	}
	return 0
}

func publishedSize(d *Directory) uint64 {
	if ep := d.pub.Load(); ep != nil {
		return ep.size
	}
	return 0
}

// checkAudited checks that the served epoch's checkpoint note verifies
// with the log key and carries statements satisfying the audit policy,
// by exactly the auditors named.
func checkAudited(t *testing.T, e *env, policy []byte, by ...string) *ktpb.EpochPart {
	t.Helper()
	part, err := e.d.GetEpoch(ctxT(t), &ktpb.GetEpochRequest{})
	if err != nil {
		t.Fatalf("GetEpoch: %v", err)
	}
	if _, _, err := log.ParseCheckpoint(part.Checkpoint, testOrigin, e.k.verifier); err != nil {
		t.Fatalf("the served checkpoint: %v", err)
	}
	p, err := witness.ParseAuditPolicy(policy)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := p.Check(part.Checkpoint)
	if err != nil {
		t.Fatalf("the served checkpoint does not satisfy the audit policy: %v\n%s", err, part.Checkpoint)
	}
	var got []string
	for _, c := range cs {
		got = append(got, c.Witness)
	}
	if strings.Join(got, ",") != strings.Join(by, ",") {
		t.Errorf("statements by %v, want %v", got, by)
	}
	// The statements come after the log's signature, and nothing else
	// changed: the note is the published one plus the statement lines.
	if lines := strings.Count(string(part.Checkpoint), "\n— "); lines != 1+len(by) {
		t.Errorf("%d signature lines, want the log's and %d statements:\n%s", lines, len(by), part.Checkpoint)
	}
	return part
}

// TestAuditServesOnceAudited: with an audit policy, lookups fail with
// ErrUnavailable naming the auditors missing until a quorum vouched for an
// epoch (503 answers are retried meanwhile); then the epoch is served with
// the statements on its checkpoint note, and lookups verify with the
// client library. GetParameters carries the policy.
func TestAuditServesOnceAudited(t *testing.T) {
	var a1, a2 *fakeAuditor
	var policy []byte
	e := newAuditEnv(t, func(v note.Verifier) []byte {
		a1, a2 = newFakeAuditor(t, "a1", v), newFakeAuditor(t, "a2", v)
		a2.SetLimit(0) // a2 has audited nothing yet: 503
		policy = auditPolicy("group g 2 a1 a2\nquorum g", a1, a2)
		return policy
	}, nil)
	ctx := ctxT(t)
	pb, err := e.d.GetParameters(ctx, nil)
	if err != nil || pb.AuditPolicy != string(policy) {
		t.Fatalf("GetParameters: audit_policy %q, %v", pb.GetAuditPolicy(), err)
	}

	waitFor(t, "a1 vouched and a2 answered 503 twice", func() bool { return a1.Count(200) > 0 && a2.Count(503) > 1 })
	_, err = e.d.Lookup(ctx, &ktpb.LookupRequest{Handle: "alice@example.com"})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "no epoch audited by the audit policy yet (waiting for a2)") {
		t.Fatalf("Lookup before the quorum: %v", err)
	}
	if _, err := e.d.GetEpoch(ctx, &ktpb.GetEpochRequest{}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("GetEpoch before the quorum: %v", err)
	}
	if servedSize(e.d) != 0 || publishedSize(e.d) == 0 {
		t.Fatalf("served %d, published %d", servedSize(e.d), publishedSize(e.d))
	}
	if e.d.AuditLag() <= 0 {
		t.Errorf("AuditLag before the first audited epoch: %v", e.d.AuditLag())
	}

	a2.SetLimit(-1)
	waitFor(t, "an audited epoch", func() bool { return servedSize(e.d) > 0 })
	checkAudited(t, e, policy, "a1", "a2")
	alice := newHandle(t, e.k, "alice@example.com")
	dev := testkit.NewDevice()
	i := e.enroll(alice, dev.Sign, testkit.Set([16]byte{1}, dev))
	if res := e.lookup(alice.handle, i); !res.Registered || res.Version != 1 {
		t.Fatalf("lookup: %+v", res)
	}
	checkAudited(t, e, policy, "a1", "a2")
}

// TestAuditRetries503: an auditor answering 503 is asked again (after
// Retry-After) until it vouches.
func TestAuditRetries503(t *testing.T) {
	var a1 *fakeAuditor
	var policy []byte
	e := newAuditEnv(t, func(v note.Verifier) []byte {
		a1 = newFakeAuditor(t, "a1", v)
		a1.Refuse(3)
		policy = auditPolicy("quorum a1", a1)
		return policy
	}, nil)
	waitFor(t, "an audited epoch", func() bool { return servedSize(e.d) > 0 })
	if n := a1.Count(503); n != 3 {
		t.Errorf("%d answers 503, want 3", n)
	}
	checkAudited(t, e, policy, "a1")
}

// TestAuditHungAuditor: an auditor that stops answering holds the served
// epoch back while publication goes on; lookups keep answering from the
// older audited epoch (a handle enrolled since is still absent there), and
// once the auditor answers again the served epoch catches up.
func TestAuditHungAuditor(t *testing.T) {
	var a1, a2 *fakeAuditor
	var policy []byte
	e := newAuditEnv(t, func(v note.Verifier) []byte {
		a1, a2 = newFakeAuditor(t, "a1", v), newFakeAuditor(t, "a2", v)
		policy = auditPolicy("group g 2 a1 a2\nquorum g", a1, a2)
		return policy
	}, func(c *Config) { c.AuditHTTPClient = &http.Client{Timeout: 300 * time.Millisecond} })
	ctx := ctxT(t)
	waitFor(t, "an audited epoch", func() bool { return servedSize(e.d) > 0 })
	a2.SetMode(testauditor.ModeHang)
	time.Sleep(50 * time.Millisecond) // requests in flight finish
	served := servedSize(e.d)

	alice := newHandle(t, e.k, "alice@example.com")
	dev := testkit.NewDevice()
	i := e.enroll(alice, dev.Sign, testkit.Set([16]byte{1}, dev))
	waitFor(t, "publication goes on", func() bool { return publishedSize(e.d) > i+1 && publishedSize(e.d) > served+5 })
	if got := servedSize(e.d); got != served {
		t.Fatalf("served epoch moved from size %d to %d without a2", served, got)
	}
	resp, err := e.d.Lookup(ctx, &ktpb.LookupRequest{Handle: alice.handle})
	if err != nil {
		t.Fatalf("Lookup while an auditor hangs: %v", err)
	}
	if resp.ChangeRecord != nil {
		t.Fatal("the handle enrolled after the audited epoch is served")
	}
	if sz := mustCheckpointSize(t, e, resp.Epoch.Checkpoint); sz != served {
		t.Fatalf("lookup answered at size %d, want the audited %d", sz, served)
	}
	if e.d.AuditLag() <= 0 {
		t.Errorf("AuditLag = %v while an auditor hangs", e.d.AuditLag())
	}
	// A client that trusts a published, not yet audited, checkpoint is
	// asked to retry; one beyond the log is out of range.
	pub := publishedSize(e.d)
	if _, err := e.d.Lookup(ctx, &ktpb.LookupRequest{Handle: alice.handle, KnownSize: pub}); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "not yet audited") {
		t.Errorf("Lookup with the published size %d known: %v", pub, err)
	}
	if _, err := e.d.Lookup(ctx, &ktpb.LookupRequest{Handle: alice.handle, KnownSize: 1 << 40}); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("Lookup with a size beyond the log known: %v", err)
	}

	a2.SetMode(testauditor.ModeOK)
	if res := e.lookup(alice.handle, i); !res.Registered {
		t.Fatal("not registered once audited")
	}
	checkAudited(t, e, policy, "a1", "a2")
}

func mustCheckpointSize(t *testing.T, e *env, raw []byte) uint64 {
	t.Helper()
	cp, _, err := log.ParseCheckpoint(raw, testOrigin, e.k.verifier)
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	return cp.Size
}

// TestAuditBadStatements: an auditor answering with something that is not
// its valid statement is ignored (its line is not on the served note) and
// counted; the others' statements make the quorum.
func TestAuditBadStatements(t *testing.T) {
	for _, mode := range []testauditor.Mode{testauditor.ModeCorrupt, testauditor.ModeOtherKey, testauditor.ModeTwoLines, testauditor.ModeGarbage} {
		t.Run(string(mode), func(t *testing.T) {
			var a1, a2, a3 *fakeAuditor
			var policy []byte
			m := &auditCounter{}
			e := newAuditEnv(t, func(v note.Verifier) []byte {
				a1, a2, a3 = newFakeAuditor(t, "a1", v), newFakeAuditor(t, "a2", v), newFakeAuditor(t, "a3", v)
				a3.SetMode(mode)
				a2.SetLimit(0) // until a3 has answered
				policy = auditPolicy("group g 2 a1 a2 a3\nquorum g", a1, a2, a3)
				return policy
			}, func(c *Config) { c.Metrics = m })
			waitFor(t, "a3 answered", func() bool { return m.get("a3", AuditInvalid) > 0 })
			if servedSize(e.d) != 0 {
				t.Fatal("served with one valid statement")
			}
			a2.SetLimit(-1)
			waitFor(t, "an audited epoch", func() bool { return servedSize(e.d) > 0 })
			checkAudited(t, e, policy, "a1", "a2")
			// (Whether a2 was asked while it held back is timing, and an
			// answer is counted just after it is applied: only a3's
			// statements and the quorum are checked, once counted.)
			waitFor(t, "a1's and a2's statements counted", func() bool { return m.get("a1", AuditOK) > 0 && m.get("a2", AuditOK) > 0 })
			if m.get("a3", AuditOK) != 0 {
				t.Errorf("metrics %v", m.snapshot())
			}
		})
	}
}

// auditCounter is a Metrics that counts AuditStatement calls.
type auditCounter struct {
	nopMetrics
	mu sync.Mutex
	n  map[string]int
}

func (c *auditCounter) AuditStatement(auditor, result string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[string]int)
	}
	c.n[auditor+" "+result]++
}

func (c *auditCounter) EpochServed(uint64, time.Duration) {}

func (c *auditCounter) get(auditor, result string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[auditor+" "+result]
}

func (c *auditCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// TestAuditCheckStatement: each check on an answer breaks alone and gets
// its typed error; the control passes.
func TestAuditCheckStatement(t *testing.T) {
	var a1, a2 *fakeAuditor
	e := newAuditEnv(t, func(v note.Verifier) []byte {
		a1, a2 = newFakeAuditor(t, "a1", v), newFakeAuditor(t, "a2", v)
		return auditPolicy("group g 2 a1 a2\nquorum g", a1, a2)
	}, nil)
	waitFor(t, "an audited epoch", func() bool { return servedSize(e.d) > 0 })
	ep := e.d.pub.Load()
	text := string(ep.full.Checkpoint[:bytes.Index(ep.full.Checkpoint, []byte("\n\n"))+1])
	good := statement(a1.Signer(), text)

	// a1's key, signing at a chosen time.
	at := func(ts time.Time) []byte { return []byte(a1.timed(t).Sign(text, uint64(ts.Unix()))) }
	for _, tc := range []struct {
		name string
		as   string
		body []byte
		want error
	}{
		{"control", "a1", good, nil},
		{"no newline", "a1", bytes.TrimSuffix(good, []byte("\n")), errStatementSyntax},
		{"two lines", "a1", append(bytes.Clone(good), good...), errStatementSyntax},
		{"not a signature line", "a1", []byte("ok\n"), errStatementSyntax},
		{"another auditor's line for a1", "a2", good, errStatementInvalid},
		{"unknown key", "a1", []byte(testonly.NewCosigner(t, "a1/audit").Sign(text, uint64(time.Now().Unix()))), errStatementInvalid},
		{"another text", "a1", statement(a1.Signer(), strings.Replace(text, "\n", "x\n", 1)), errStatementInvalid},
		{"future", "a1", at(time.Now().Add(time.Minute)), errStatementTime},
		{"before the epoch", "a1", at(time.UnixMilli(int64(ep.record.Timestamp)).Add(-time.Minute)), errStatementTime},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.d.checkStatement(ep, tc.as, tc.body)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("checkStatement: %v, want %v", err, tc.want)
			}
		})
	}
}

// timed is the auditor's audit key as a testonly.Cosigner, which signs at
// a chosen time.
func (a *fakeAuditor) timed(t *testing.T) *testonly.Cosigner {
	t.Helper()
	// PRIVATE+KEY+name+hash+base64(0x01 || seed); the base64 may hold '+'.
	parts := strings.SplitN(a.SignerKey(), "+", 5)
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil {
		t.Fatal(err)
	}
	priv := ed25519.NewKeyFromSeed(raw[1:])
	c := &testonly.Cosigner{Name: a.Signer().Name(), Priv: priv, Pub: priv.Public().(ed25519.PublicKey)}
	if c.KeyHash() != a.Signer().KeyHash() {
		t.Fatal("key hash mismatch")
	}
	return c
}

// TestAuditNeverBackwards: a quorum of statements on an epoch older than
// the served one does not serve it, nor does publishing an older epoch
// queue it.
func TestAuditNeverBackwards(t *testing.T) {
	var a1 *fakeAuditor
	e := newAuditEnv(t, func(v note.Verifier) []byte {
		a1 = newFakeAuditor(t, "a1", v)
		return auditPolicy("quorum a1", a1)
	}, nil)
	waitFor(t, "an audited epoch", func() bool { return servedSize(e.d) > 0 })
	old := e.d.pub.Load()
	waitFor(t, "a later audited epoch", func() bool { return servedSize(e.d) > old.size })
	served := e.d.cur.Load()

	text := string(old.full.Checkpoint[:bytes.Index(old.full.Checkpoint, []byte("\n\n"))+1])
	signed, err := e.d.checkStatement(old, "a1", statement(a1.Signer(), text))
	if err != nil {
		t.Fatal(err)
	}
	stale := &auditEpoch{ep: old, stmts: map[string][]byte{}, refused: map[string]bool{}}
	e.d.addStatement(stale, "a1", signed)
	if cur := e.d.cur.Load(); cur.size < served.size {
		t.Fatalf("served epoch went back from size %d to %d", served.size, cur.size)
	}
	e.d.publish(old)
	e.d.audit.mu.Lock()
	for _, p := range e.d.audit.pending {
		if p.ep == old {
			t.Error("an epoch older than the served one was queued")
		}
	}
	e.d.audit.mu.Unlock()
	if cur := e.d.cur.Load(); cur.size < served.size {
		t.Fatalf("served epoch went back from size %d to %d", served.size, cur.size)
	}
}

// TestAuditUnservedBounded: while no auditor vouches, at most
// MaxUnservedEpochs published epochs (the newest) wait with their map
// snapshots; once an auditor vouches, the newest is served.
func TestAuditUnservedBounded(t *testing.T) {
	var a1 *fakeAuditor
	e := newAuditEnv(t, func(v note.Verifier) []byte {
		a1 = newFakeAuditor(t, "a1", v)
		a1.SetLimit(0)
		return auditPolicy("quorum a1", a1)
	}, func(c *Config) { c.EpochInterval, c.HeartbeatInterval = time.Millisecond, time.Millisecond })
	waitFor(t, "more epochs than the bound", func() bool {
		ep := e.d.pub.Load()
		return ep != nil && ep.record.Epoch > MaxUnservedEpochs+10
	})
	if n := e.d.unservedEpochs(); n != MaxUnservedEpochs {
		t.Fatalf("%d unserved epochs kept, want %d", n, MaxUnservedEpochs)
	}
	e.d.audit.mu.Lock()
	first, last := e.d.audit.pending[0].ep.record.Epoch, e.d.audit.pending[MaxUnservedEpochs-1].ep.record.Epoch
	e.d.audit.mu.Unlock()
	if last-first != MaxUnservedEpochs-1 {
		t.Errorf("kept epochs %d..%d, not the newest %d in a row", first, last, MaxUnservedEpochs)
	}
	a1.SetLimit(-1)
	waitFor(t, "an audited epoch", func() bool { return servedSize(e.d) > 0 })
	if e.d.cur.Load().record.Epoch < first {
		t.Errorf("served epoch %d, older than the kept ones", e.d.cur.Load().record.Epoch)
	}
}

// TestAuditRestart: after a restart nothing is served until the auditors
// vouch again (for the recovered epoch or a later one).
func TestAuditRestart(t *testing.T) {
	var a1 *fakeAuditor
	var policy []byte
	e := newAuditEnv(t, func(v note.Verifier) []byte {
		a1 = newFakeAuditor(t, "a1", v)
		policy = auditPolicy("quorum a1", a1)
		return policy
	}, nil)
	waitFor(t, "an audited epoch", func() bool { return servedSize(e.d) > 0 })
	before := servedSize(e.d)
	e.stop()
	a1.SetLimit(0)
	e.start()
	ctx := ctxT(t)
	if _, err := e.d.GetEpoch(ctx, &ktpb.GetEpochRequest{}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("GetEpoch after a restart, before any statement: %v", err)
	}
	a1.SetLimit(-1)
	waitFor(t, "an audited epoch", func() bool { return servedSize(e.d) >= before })
	checkAudited(t, e, policy, "a1")
}

// TestCheckAuditPolicy: each refusal of an audit policy, with the typed
// error; New refuses the same policies.
func TestCheckAuditPolicy(t *testing.T) {
	a1v, a2v := testonly.NewCosigner(t, "a1/audit").VKey(), testonly.NewCosigner(t, "a2/audit").VKey()
	good := "auditor a1 " + a1v + " https://a1.example\nauditor a2 " + a2v + " https://a2.example/\ngroup g 2 a1 a2\nquorum g\n"
	witnesses := "witness w " + testonly.NewCosigner(t, "w.example").VKey() + "\nquorum w\n"
	for _, tc := range []struct {
		name, audit, witnesses, want string
	}{
		{"control", good, witnesses, ""},
		{"control without witnesses", good, "", ""},
		{"does not parse", "auditor a1 " + a1v + " https://a1.example\nquorum nobody\n", "", "nobody"},
		{"a witness line", strings.ReplaceAll(good, "auditor ", "witness "), "", `"witness" line in an audit policy`},
		{"no URL", "auditor a1 " + a1v + "\nquorum a1\n", "", "auditor a1 has no URL"},
		{"quorum none", "auditor a1 " + a1v + " https://a1.example\nquorum none\n", "", "quorum none"},
		{"key shared with a witness", good, "witness w " + a2v + "\nquorum w\n", "must not be a witness key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CheckAuditPolicy([]byte(tc.audit), []byte(tc.witnesses))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckAuditPolicy: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrAuditPolicy) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckAuditPolicy: %v, want ErrAuditPolicy with %q", err, tc.want)
			}
			dir := t.TempDir()
			e := &env{t: t, k: newKeys(t), b: backends[0], logDir: filepath.Join(dir, "log"), stateDir: filepath.Join(dir, "state")}
			cfg := e.config(e.b.open(t, e.k, e.logDir))
			cfg.AuditPolicy, cfg.WitnessPolicy = []byte(tc.audit), tc.witnesses
			if d, err := New(context.Background(), cfg); !errors.Is(err, ErrAuditPolicy) {
				if d != nil {
					d.Close(context.Background())
				}
				t.Fatalf("New: %v, want ErrAuditPolicy", err)
			}
		})
	}
}

// TestAuditReplicated: replicated readers run the collector over the
// epochs they learn: nothing is served before the auditor vouches, then
// the reader serves audited epochs, with the statement on the note, and
// what the writer logged becomes visible there.
func TestAuditReplicated(t *testing.T) {
	a1 := newFakeAuditor(t, "a1", nil)
	a1.SetLimit(0)
	policy := auditPolicy("quorum a1", a1)
	w, r, _ := replicatedPairTuned(t, func(c *Config) {
		v, err := note.NewVerifier(c.LogVerifierKey)
		if err != nil {
			t.Fatal(err)
		}
		a1.SetLog(v)
		c.AuditPolicy = policy
	})
	ctx := ctxT(t)
	waitFor(t, "the reader learnt an epoch", func() bool { return publishedSize(r.d) > 0 })
	if _, err := r.d.GetEpoch(ctx, &ktpb.GetEpochRequest{}); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "no epoch audited") {
		t.Fatalf("reader's GetEpoch before any statement: %v", err)
	}
	a1.SetLimit(-1)
	waitFor(t, "the reader serves an audited epoch", func() bool { return servedSize(r.d) > 0 })
	checkAudited(t, r, policy, "a1")

	alice := newHandle(t, w.k, "alice@example.com")
	dev := testkit.NewDevice()
	i := w.enroll(alice, dev.Sign, testkit.Set([16]byte{1}, dev))
	if res := r.lookup(alice.handle, i); !res.Registered || res.Version != 1 {
		t.Fatalf("reader's lookup: %+v", res)
	}
	checkAudited(t, r, policy, "a1")
	waitFor(t, "the writer serves an audited epoch", func() bool { return servedSize(w.d) > 0 })
	checkAudited(t, w, policy, "a1")
}

// FuzzAuditStatement feeds arbitrary answers to checkStatement: it never
// panics, and what it accepts is exactly one signature line, a valid
// statement by the auditor asked, on the checkpoint asked about.
func FuzzAuditStatement(f *testing.F) {
	_, _, logS, _ := testkit.NoteKey(f, testOrigin)
	signed, err := note.Sign(&note.Note{Text: testOrigin + "\n2\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"}, logS)
	if err != nil {
		f.Fatal(err)
	}
	c1, c2 := testonly.NewCosigner(f, "a1/audit"), testonly.NewCosigner(f, "a2/audit")
	p, err := CheckAuditPolicy([]byte("auditor a1 "+c1.VKey()+" http://a1\nauditor a2 "+c2.VKey()+" http://a2\ngroup g 2 a1 a2\nquorum g\n"), nil)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	d := &Directory{audit: &auditState{policy: p}}
	ep := &epoch{record: &api.EpochRecord{Timestamp: uint64(now.UnixMilli())}, full: &ktpb.EpochPart{Checkpoint: signed}}
	text := testOrigin + "\n2\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
	good := c1.Sign(text, uint64(now.Unix()))
	f.Add([]byte(good))
	f.Add([]byte(good + good))
	f.Add([]byte(c2.Sign(text, uint64(now.Unix()))))
	f.Add([]byte("— a1/audit AAAA\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := d.checkStatement(ep, "a1", body)
		if err != nil {
			return
		}
		if !bytes.Equal(out, append(bytes.Clone(signed), body...)) || bytes.Count(body, []byte("\n")) != 1 {
			t.Fatalf("accepted %q", body)
		}
		cs, _ := p.Check(out)
		if len(cs) != 1 || cs[0].Witness != "a1" {
			t.Fatalf("accepted %q: statements %v", body, cs)
		}
	})
}
