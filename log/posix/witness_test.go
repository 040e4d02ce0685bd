package posix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/internal/testing/testwitness"
	"github.com/keytrans/kt/log"
)

// hangable serves a witness, or hangs until the client gives up. (It
// reads the request body first: only then does net/http notice that the
// client went away and cancel the request's context, so the server can be
// closed when the test ends.)
type hangable struct {
	http.Handler
	hang     atomic.Bool
	requests atomic.Int64
}

func (h *hangable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.requests.Add(1)
	if h.hang.Load() {
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
		http.Error(w, "gave up", http.StatusServiceUnavailable)
		return
	}
	h.Handler.ServeHTTP(w, r)
}

// witnessed is a log key and witnesses, each served on 127.0.0.1.
type witnessed struct {
	skey      string
	signer    note.Signer
	verifier  note.Verifier
	witnesses []*testwitness.Witness
	hang      []*hangable
	cosigners []note.Verifier
	urls      []string
}

func newWitnessed(t *testing.T, n int) *witnessed {
	t.Helper()
	skey, s, v := newKey(t, testOrigin)
	vkey, err := log.VerifierKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	w := &witnessed{skey: skey, signer: s, verifier: v}
	for i := range n {
		wit, err := testwitness.New(fmt.Sprintf("witness%d.example", i))
		if err != nil {
			t.Fatal(err)
		}
		if err := wit.AddLog(testOrigin, vkey); err != nil {
			t.Fatal(err)
		}
		h := &hangable{Handler: wit}
		srv := httptest.NewServer(h) // listens on 127.0.0.1
		t.Cleanup(srv.Close)
		w.hang = append(w.hang, h)
		cv, err := fnote.NewVerifierForCosignatureV1(wit.VerifierKey())
		if err != nil {
			t.Fatal(err)
		}
		w.witnesses = append(w.witnesses, wit)
		w.cosigners = append(w.cosigners, cv)
		w.urls = append(w.urls, srv.URL)
	}
	return w
}

// policy lists every witness and requires k of them.
func (w *witnessed) policy(k int) []byte {
	var p []byte
	var names string
	for i, wit := range w.witnesses {
		p = fmt.Appendf(p, "witness w%d %s %s\n", i, wit.VerifierKey(), w.urls[i])
		names += fmt.Sprintf(" w%d", i)
	}
	return fmt.Appendf(p, "group g %d%s\nquorum g\n", k, names)
}

func (w *witnessed) config(dir string, k int) Config {
	cfg := testConfig(dir, w.signer)
	cfg.WitnessPolicy = w.policy(k)
	cfg.WitnessTimeout = 300 * time.Millisecond
	return cfg
}

// cosignedBy verifies the log signature of raw and returns which witnesses
// cosigned it (with valid cosignature/v1 signatures).
func (w *witnessed) cosignedBy(t *testing.T, raw []byte) (uint64, []bool) {
	t.Helper()
	cp, _, err := log.ParseCheckpoint(raw, testOrigin, w.verifier)
	if err != nil {
		t.Fatalf("log signature: %v", err)
	}
	got := make([]bool, len(w.cosigners))
	for i, cv := range w.cosigners {
		n, err := note.Open(raw, note.VerifierList(cv))
		got[i] = err == nil && len(n.Sigs) == 1
	}
	return cp.Size, got
}

func count(b []bool) int {
	n := 0
	for _, x := range b {
		if x {
			n++
		}
	}
	return n
}

// TestWitnessPolicyWithholdsCheckpoints: with a policy whose witness never
// answers, a new log starts, accepts durable appends, but publishes nothing;
// once the witness answers, the checkpoint is published with its
// cosignature.
func TestWitnessPolicyWithholdsCheckpoints(t *testing.T) {
	w := newWitnessed(t, 1)
	w.hang[0].hang.Store(true)
	dir := t.TempDir()
	l := openLog(t, w.config(dir, 1))
	defer closeLog(t, l)
	ctx := testCtx(t)

	if _, err := l.Checkpoint(ctx); !errors.Is(err, log.ErrNoCheckpoint) {
		t.Fatalf("Checkpoint with an unanswering witness: %v, want ErrNoCheckpoint", err)
	}
	idx, err := l.Append(ctx, [][]byte{[]byte("a"), []byte("b"), []byte("c")})
	if err != nil {
		t.Fatalf("Append without witnesses: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	if _, err := l.Await(short, idx[2]); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Await with an unanswering witness: %v, want DeadlineExceeded", err)
	}
	if n := w.hang[0].requests.Load(); n < 2 {
		t.Fatalf("the log asked the witness %d times, want retries", n)
	}
	if _, err := l.Checkpoint(ctx); !errors.Is(err, log.ErrNoCheckpoint) {
		t.Fatalf("Checkpoint after appends with an unanswering witness: %v, want ErrNoCheckpoint", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "checkpoint")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a checkpoint file exists: %v", err)
	}
	// The entries are sequenced (on disk) but not published: the tiles
	// handler must not serve them.
	if _, err := os.Stat(filepath.Join(dir, "tile/entries/000.p/3")); err != nil {
		t.Fatalf("entries not sequenced: %v", err)
	}
	for _, p := range []string{"/checkpoint", "/tile/entries/000.p/3", "/tile/0/000.p/3"} {
		rec := httptest.NewRecorder()
		l.TilesHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET %s of an unpublished log: status %d, want 404", p, rec.Code)
		}
	}
	if _, err := l.Entries(ctx, 0, 1); !errors.Is(err, log.ErrOutOfRange) {
		t.Errorf("Entries of unpublished entries: %v, want ErrOutOfRange", err)
	}

	w.hang[0].hang.Store(false)
	raw, err := l.Await(ctx, idx[2])
	if err != nil {
		t.Fatalf("Await once the witness answers: %v", err)
	}
	size, by := w.cosignedBy(t, raw)
	if size <= idx[2] || !by[0] {
		t.Fatalf("published checkpoint of size %d, cosigned %v; want size > %d and the cosignature", size, by, idx[2])
	}
}

// TestWitnessPolicyQuorum: every published checkpoint carries a quorum of
// cosignatures; when the quorum is lost, the published checkpoint stays
// where it was; when it is back, publication resumes consistently.
func TestWitnessPolicyQuorum(t *testing.T) {
	w := newWitnessed(t, 3)
	l := openLog(t, w.config(t.TempDir(), 2))
	defer closeLog(t, l)
	ctx := testCtx(t)

	// One witness refuses: 2 of 3 still publish.
	w.witnesses[2].SetBehavior(testwitness.Behavior{Status: http.StatusForbidden})
	idx, err := l.Append(ctx, [][]byte{[]byte("one"), []byte("two")})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := l.Await(ctx, idx[1])
	if err != nil {
		t.Fatalf("Await with 2 of 3 witnesses: %v", err)
	}
	size1, by := w.cosignedBy(t, raw)
	if count(by) < 2 || by[2] {
		t.Fatalf("checkpoint cosigned by %v, want witnesses 0 and 1", by)
	}
	cp1, _, _ := log.ParseCheckpoint(raw, testOrigin, w.verifier)

	// A second one hangs: the quorum is lost, nothing new is published.
	w.hang[1].hang.Store(true)
	idx, err = l.Append(ctx, [][]byte{[]byte("three")})
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	if _, err := l.Await(short, idx[0]); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Await without a quorum: %v, want DeadlineExceeded", err)
	}
	raw, err = l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if size, _ := w.cosignedBy(t, raw); size != size1 {
		t.Fatalf("published size moved from %d to %d without a quorum", size1, size)
	}

	// Quorum back.
	w.hang[1].hang.Store(false)
	raw, err = l.Await(ctx, idx[0])
	if err != nil {
		t.Fatalf("Await with the quorum back: %v", err)
	}
	size2, by := w.cosignedBy(t, raw)
	if size2 <= idx[0] || count(by) < 2 {
		t.Fatalf("checkpoint of size %d cosigned by %v", size2, by)
	}
	cp2, _, _ := log.ParseCheckpoint(raw, testOrigin, w.verifier)
	p, err := l.ConsistencyProof(ctx, cp1.Size, cp2.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, cp1.Size, cp2.Size, p, cp1.Hash, cp2.Hash); err != nil {
		t.Fatalf("checkpoints before and after the outage are inconsistent: %v", err)
	}
	for i, wit := range w.witnesses[:2] {
		if got, ok := wit.Size(testOrigin); !ok || got < size2 {
			t.Errorf("witness %d holds size %d (%v), want %d", i, got, ok, size2)
		}
	}
}

// TestWitnessPolicyReopen: a witnessed log reopens with its checkpoint, and
// keeps publishing cosigned checkpoints to witnesses that remember it.
func TestWitnessPolicyReopen(t *testing.T) {
	w := newWitnessed(t, 1)
	dir := t.TempDir()
	l := openLog(t, w.config(dir, 1))
	ctx := testCtx(t)
	idx, err := l.Append(ctx, [][]byte{[]byte("before")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Await(ctx, idx[0]); err != nil {
		t.Fatal(err)
	}
	closeLog(t, l)

	l = openLog(t, w.config(dir, 1))
	defer closeLog(t, l)
	idx, err = l.Append(ctx, [][]byte{[]byte("after")})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := l.Await(ctx, idx[0])
	if err != nil {
		t.Fatal(err)
	}
	if size, by := w.cosignedBy(t, raw); size <= idx[0] || !by[0] {
		t.Fatalf("after reopen: size %d cosigned %v", size, by)
	}
}
