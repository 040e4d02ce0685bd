package auditor_test

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/logapi"
)

const origin = "example.com/kt"

// testLog is a log signed by one key, served over the read API on
// 127.0.0.1. Its backing MemoryLog can be swapped (to rewrite history) and
// its reads broken (to interrupt an audit).
type testLog struct {
	skey, vkey string
	signer     note.Signer
	verifier   note.Verifier
	url        string

	mu  sync.Mutex
	mem *conformance.MemoryLog
	// failAfter, when positive, makes entry reads fail after that many
	// more succeed.
	failAfter atomic.Int64
	// noProofs makes consistency proofs fail (a log that stopped
	// answering them).
	noProofs atomic.Bool
	// cosign, when set, adds cosignature lines to every checkpoint served.
	cosign func(cp []byte) []byte
}

func newLogKey(t testing.TB) (skey, vkey string, s note.Signer, v note.Verifier) {
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	s, _ = note.NewSigner(skey)
	v, _ = note.NewVerifier(vkey)
	return
}

func newTestLog(t testing.TB) *testLog {
	skey, vkey, s, v := newLogKey(t)
	return newTestLogWithKey(t, skey, vkey, s, v)
}

func newTestLogWithKey(t testing.TB, skey, vkey string, s note.Signer, v note.Verifier) *testLog {
	l := &testLog{skey: skey, vkey: vkey, signer: s, verifier: v, mem: conformance.NewMemoryLog(origin, s)}
	srv := httptest.NewServer(logapi.NewHandler(l, logapi.WithLogger(quiet())))
	t.Cleanup(srv.Close)
	l.url = srv.URL
	return l
}

func (l *testLog) current() *conformance.MemoryLog {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mem
}

// replace makes the log serve m from now on.
func (l *testLog) replace(m *conformance.MemoryLog) {
	l.mu.Lock()
	l.mem = m
	l.mu.Unlock()
}

func (l *testLog) Checkpoint(ctx context.Context) ([]byte, error) {
	cp, err := l.current().Checkpoint(ctx)
	if err == nil && l.cosign != nil {
		cp = append(cp, l.cosign(cp)...)
	}
	return cp, err
}

func (l *testLog) Entries(ctx context.Context, start, end uint64) ([][]byte, error) {
	if n := l.failAfter.Load(); n > 0 {
		if l.failAfter.Add(-1) == 0 {
			l.failAfter.Store(-1)
		}
	} else if n < 0 {
		return nil, log.ErrPushback
	}
	return l.current().Entries(ctx, start, end)
}

func (l *testLog) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	return l.current().InclusionProof(ctx, index, size)
}

func (l *testLog) ConsistencyProof(ctx context.Context, o, n uint64) ([][]byte, error) {
	if l.noProofs.Load() {
		return nil, log.ErrPushback
	}
	return l.current().ConsistencyProof(ctx, o, n)
}

// appendAll appends b's entries beyond what the log holds.
func (l *testLog) appendAll(t testing.TB, b *ktlog.Builder) {
	t.Helper()
	m := l.current()
	cp, err := m.Checkpoint(context.Background())
	size := uint64(0)
	if err == nil {
		c, _, _ := log.ParseCheckpoint(cp, origin, l.verifier)
		size = c.Size
	}
	ents := b.Entries()[size:]
	for len(ents) > 0 {
		n := min(len(ents), 500)
		if _, err := m.Append(context.Background(), ents[:n]); err != nil {
			t.Fatal(err)
		}
		ents = ents[n:]
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type node struct {
	a     *auditor.Auditor
	store *auditor.Store
	dir   string
	url   string
	cos   note.Verifier
	vkey  string // cosignature/v1 vkey
	srv   *httptest.Server
	// auditVKey is the cosignature/v1 vkey of the audit key ("" without).
	auditVKey string
	m         *countingMetrics
	stop      func() // ends Run (nil unless nodeOpts.run)
}

type nodeOpts struct {
	logs         []auditor.LogConfig
	peers        []auditor.Peer
	skey         string // cosigner key; generated if empty
	auditKey     string // audit key (note signer key); none if empty
	auditWait    time.Duration
	run          bool   // run the follower and gossip loops (Run) until cleanup
	dir          string // store directory; temporary if empty
	webhook      string
	evidenceDir  string
	poll, gossip time.Duration
	progress     time.Duration
	logger       *slog.Logger
}

// newNode starts an auditor with its HTTP endpoints on 127.0.0.1.
func newNode(t testing.TB, name string, o nodeOpts) *node {
	t.Helper()
	if o.skey == "" {
		var err error
		o.skey, _, err = note.GenerateKey(rand.Reader, name)
		if err != nil {
			t.Fatal(err)
		}
	}
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	st, err := auditor.OpenStore(o.dir)
	if err != nil {
		t.Fatal(err)
	}
	cos, err := fnote.NewSignerForCosignatureV1(o.skey)
	if err != nil {
		t.Fatal(err)
	}
	if o.logger == nil {
		o.logger = quiet()
	}
	var auditSigner note.Signer
	if o.auditKey != "" {
		if auditSigner, err = fnote.NewSignerForCosignatureV1(o.auditKey); err != nil {
			t.Fatal(err)
		}
	}
	m := &countingMetrics{}
	a, err := auditor.New(auditor.Config{Logs: o.logs, Store: st, Cosigner: cos, AuditSigner: auditSigner, AuditWait: o.auditWait,
		Peers: o.peers, Logger: o.logger, ProgressInterval: o.progress, WebhookURL: o.webhook, EvidenceDir: o.evidenceDir,
		PollInterval: o.poll, GossipInterval: o.gossip, Metrics: m})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	cvk := cosignatureVKey(t, o.skey)
	cv, err := fnote.NewVerifierForCosignatureV1(cvk)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{a: a, store: st, dir: o.dir, url: srv.URL, cos: cv, vkey: cvk, srv: srv, m: m}
	if o.auditKey != "" {
		n.auditVKey = cosignatureVKey(t, o.auditKey)
	}
	t.Cleanup(n.close)
	if o.run {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			a.Run(ctx)
			close(done)
		}()
		n.stop = func() { cancel(); <-done }
	}
	return n
}

// cosignatureVKey is the tlog-cosignature/v1 verifier key of the note
// signer key skey.
func cosignatureVKey(t testing.TB, skey string) string {
	t.Helper()
	vk, err := log.VerifierKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	cvk, err := fnote.VKeyToCosignatureV1(vk)
	if err != nil {
		t.Fatal(err)
	}
	return cvk
}

// countingMetrics counts the audit measurements and ignores the others.
type countingMetrics struct {
	mu         sync.Mutex
	statements int
	requests   map[int]int
}

func (m *countingMetrics) counts() (statements int, requests map[int]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.statements, maps.Clone(m.requests)
}

func (m *countingMetrics) AuditRequest(_ string, status int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.requests == nil {
		m.requests = map[int]int{}
	}
	m.requests[status]++
}

func (m *countingMetrics) AuditStatement(string) {
	m.mu.Lock()
	m.statements++
	m.mu.Unlock()
}

func (*countingMetrics) Target(string, uint64)      {}
func (*countingMetrics) Audited(string, uint64)     {}
func (*countingMetrics) Entries(string, int)        {}
func (*countingMetrics) Violation(string, string)   {}
func (*countingMetrics) Warning(string, string)     {}
func (*countingMetrics) Evidence(string)            {}
func (*countingMetrics) WitnessRequest(string, int) {}
func (*countingMetrics) Gossip(string, string)      {}

func (n *node) close() {
	if n.stop != nil {
		n.stop()
		n.stop = nil
	}
	if n.srv != nil {
		n.srv.Close()
		n.srv = nil
	}
	if n.store != nil {
		n.store.Close()
		n.store = nil
	}
}

func logConfig(l *testLog, b *ktlog.Builder) auditor.LogConfig {
	return auditor.LogConfig{Origin: origin, VKey: l.vkey, RecoveryKey: b.RecoveryKey(), Reader: logapi.NewClient(l.url, nil)}
}

func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func sleep() { time.Sleep(10 * time.Millisecond) }

// sizedCheckpoint returns a checkpoint of the log at an earlier size,
// signed by the log's key, with the root the log's tree has there.
func (l *testLog) sizedCheckpoint(t testing.TB, size uint64) []byte {
	t.Helper()
	ctx := context.Background()
	ents, err := l.current().Entries(ctx, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	for uint64(len(ents)) < size {
		more, err := l.current().Entries(ctx, uint64(len(ents)), size)
		if err != nil {
			t.Fatal(err)
		}
		ents = append(ents, more...)
	}
	m := conformance.NewMemoryLog(origin, l.signer)
	if _, err := m.Append(ctx, ents); err != nil {
		t.Fatal(err)
	}
	cp, err := m.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// sizedCheckpointAfter appends b's entries and returns the checkpoint of
// that size.
func (l *testLog) sizedCheckpointAfter(t testing.TB, b *ktlog.Builder) []byte {
	t.Helper()
	l.appendAll(t, b)
	cp, err := l.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cp
}
