package auditor_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/google/go-cmp/cmp"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/auditor/replay"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/log/evidence"
	"github.com/keytrans/kt/log/witness"
)

func TestAuditHonest(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	b := ktlog.New(origin)
	b.Honest(30, 4)
	l.appendAll(t, b)
	n := newNode(t, "auditor.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}})
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	st := n.a.Status()[0]
	if st.Latest == nil || st.Latest.Size != b.Len() || st.Violations != 0 || st.Clean != st.Latest || st.Lag != 0 {
		t.Fatalf("status after audit: %+v", st)
	}
	// More entries, audited incrementally.
	b.Honest(5, 2)
	l.appendAll(t, b)
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	cp, _ := l.Checkpoint(ctx)
	code, body := get(t, n.url+auditor.PathCheckpoint)
	if code != http.StatusOK || body != string(cp) {
		t.Fatalf("GET checkpoint: %d %q", code, body)
	}
	if code, _ := get(t, n.url+auditor.PathCheckpoint+"?origin="+origin); code != http.StatusOK {
		t.Fatal(code)
	}
	if vs, _ := n.a.Violations(origin); len(vs) != 0 {
		t.Fatal(vs)
	}
}

// auditFaulty audits a log built by build and returns the stored
// violations.
func auditFaulty(t *testing.T, build func(b *ktlog.Builder)) ([]auditor.Violation, auditor.LogStatus) {
	t.Helper()
	l := newTestLog(t)
	b := ktlog.New(origin)
	build(b)
	l.appendAll(t, b)
	n := newNode(t, "auditor.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}})
	if err := n.a.AuditOnce(context.Background(), origin); err != nil {
		t.Fatal(err)
	}
	vs, err := n.a.Violations(origin)
	if err != nil {
		t.Fatal(err)
	}
	return vs, n.a.Status()[0]
}

func rules(vs []auditor.Violation) []string {
	var out []string
	for _, v := range vs {
		out = append(out, fmt.Sprintf("%d %s", v.Index, v.Rule))
	}
	return out
}

// TestBadMapRoot: an epoch record whose map root is not derived from the
// records (A6) is a violation, stored with the checkpoint that covers it,
// and the log is no longer clean.
func TestBadMapRoot(t *testing.T) {
	d := ktlog.Key("d")
	vs, st := auditFaulty(t, func(b *ktlog.Builder) {
		b.Honest(6, 3)
		b.Change(ktlog.Index("late"), api.AuthEnroll, d, ktlog.Devices(d))
		// The directory publishes the map without the last change.
		b.EpochWith(func(r *api.EpochRecord) {
			r.MapRoot = [32]byte{7}
		})
		b.Honest(2, 2)
	})
	if diff := cmp.Diff([]string{"19 map root"}, rules(vs)); diff != "" {
		t.Fatal(diff)
	}
	if len(vs[0].Checkpoint) == 0 || st.Clean != nil || st.Latest == nil || st.Violations != 1 {
		t.Fatalf("status: %+v", st)
	}
}

// TestNoCosignAfterViolation: once the replay found a violation, the
// witness cosigns no checkpoint that contains it (design.md 14), but still
// one below it.
func TestNoCosignAfterViolation(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	b := ktlog.New(origin)
	b.Honest(3, 2)
	good := l.sizedCheckpointAfter(t, b)
	bad := b.EpochWith(func(r *api.EpochRecord) { r.MapRoot[0] ^= 1 })
	b.Honest(2, 2)
	l.appendAll(t, b)
	n := newNode(t, "a.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}})
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	if vs, _ := n.a.Violations(origin); len(vs) != 1 || vs[0].Index != bad {
		t.Fatalf("%v", vs)
	}
	cp, _ := l.Checkpoint(ctx)
	if code, body := post(t, n.url+auditor.PathAddCheckpoint, "old 0\n\n"+string(cp)); code != http.StatusForbidden {
		t.Fatalf("checkpoint containing the violation: %d %s", code, body)
	}
	if code, body := post(t, n.url+auditor.PathAddCheckpoint, "old 0\n\n"+string(good)); code != http.StatusOK {
		t.Fatalf("checkpoint below the violation: %d %s", code, body)
	}
}

// TestRemovedDevice: a change authorized by a device that an earlier
// change removed is flagged (R5, A8).
func TestRemovedDevice(t *testing.T) {
	d1, d2 := ktlog.Key("d1"), ktlog.Key("d2")
	ix := ktlog.Index("bob")
	vs, _ := auditFaulty(t, func(b *ktlog.Builder) {
		b.Change(ix, api.AuthEnroll, d1, ktlog.Devices(d1, d2))
		b.Epoch()
		b.Change(ix, api.AuthDevice, d1, ktlog.Devices(d1)) // d2 removed
		b.Epoch()
		b.Change(ix, api.AuthDevice, d2, ktlog.Devices(d1, d2)) // d2 signs anyway
		b.Epoch()
	})
	if diff := cmp.Diff([]string{"5 R5 device"}, rules(vs)); diff != "" {
		t.Fatal(diff)
	}
}

// TestRewrittenHistory: after the auditor audited a log, the log serves a
// different history (entries rewritten, then grown). The consistency proof
// fails and the auditor holds evidence that verifies offline.
func TestRewrittenHistory(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	b := ktlog.New(origin)
	b.Honest(10, 3)
	l.appendAll(t, b)
	evDir := t.TempDir()
	n := newNode(t, "auditor.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}, evidenceDir: evDir})
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	// The rewritten history: the same first 7 entries, then others.
	alt := conformance.NewMemoryLog(origin, l.signer)
	ents := b.Entries()
	if _, err := alt.Append(ctx, ents[:7]); err != nil {
		t.Fatal(err)
	}
	rb := ktlog.New(origin)
	rb.Honest(12, 2)
	if _, err := alt.Append(ctx, rb.Entries()[7:]); err != nil {
		t.Fatal(err)
	}
	l.replace(alt)
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	evs, err := n.a.Evidence(origin)
	if err != nil || len(evs) != 1 {
		t.Fatalf("evidence: %d, %v", len(evs), err)
	}
	f, err := evidence.Verify(evs[0], l.verifier)
	if err != nil {
		t.Fatal(err)
	}
	if f.A.Size != b.Len() || f.B.Size != rb.Len() {
		t.Fatalf("fork %v", f)
	}
	st := n.a.Status()[0]
	if st.Frozen == "" || len(st.Evidence) != 1 {
		t.Fatalf("not frozen: %+v", st)
	}
	files, _ := filepath.Glob(filepath.Join(evDir, "*.txt"))
	if len(files) != 1 {
		t.Fatalf("evidence files: %v", files)
	}
	if got, _ := os.ReadFile(files[0]); !bytes.Equal(got, evs[0]) {
		t.Fatal("evidence file differs")
	}
	code, body := get(t, n.url+auditor.PathEvidence)
	if code != http.StatusOK || strings.TrimSpace(body) != st.Evidence[0] {
		t.Fatalf("evidence list: %d %q", code, body)
	}
	code, body = get(t, n.url+auditor.PathEvidence+"/"+st.Evidence[0])
	if code != http.StatusOK || body != string(evs[0]) {
		t.Fatalf("evidence: %d", code)
	}
	// The same checkpoints gossiped again make no second bundle.
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	if evs, _ := n.a.Evidence(origin); len(evs) != 1 {
		t.Fatal("evidence recorded twice")
	}
}

// TestSubstitutedEntries: the read API serves entries that differ from
// the ones the checkpoint commits to; the root check catches it.
func TestSubstitutedEntries(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	b := ktlog.New(origin)
	b.Honest(8, 3)
	l.appendAll(t, b)
	// Serve the checkpoint of l but the entries of another history of the
	// same length.
	other := ktlog.New(origin)
	other.Honest(9, 3)
	alt := conformance.NewMemoryLog(origin, l.signer)
	alt.Append(ctx, other.Entries()[:b.Len()])
	sub := &substituting{testLog: l, entries: alt}
	n := newNode(t, "auditor.example", nodeOpts{logs: []auditor.LogConfig{{Origin: origin, VKey: l.vkey, Reader: sub}}})
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	vs, _ := n.a.Violations(origin)
	want := []string{fmt.Sprintf("%d %s", b.Len(), replay.RuleCheckpointRoot)}
	if diff := cmp.Diff(want, rules(vs)); diff != "" {
		t.Fatal(diff)
	}
}

type substituting struct {
	*testLog
	entries *conformance.MemoryLog
}

func (s *substituting) Entries(ctx context.Context, start, end uint64) ([][]byte, error) {
	return s.entries.Entries(ctx, start, end)
}

// TestRestartResume: an audit interrupted mid-way (the log stops serving
// entries), with the process state then discarded, resumes from the store
// and ends with the same result as an uninterrupted audit.
func TestRestartResume(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	b := ktlog.New(origin)
	b.Honest(700, 50)
	d := ktlog.Key("x")
	b.Change(ktlog.Index("h5"), api.AuthDevice, d, ktlog.Devices(d)) // R5
	b.EpochWith(func(r *api.EpochRecord) { r.MapSize++ })
	b.Honest(300, 50)
	l.appendAll(t, b)

	ref := newNode(t, "ref.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}})
	if err := ref.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	want, _ := ref.a.Violations(origin)
	wantSt := ref.a.Status()[0]
	if len(want) == 0 {
		t.Fatal("expected violations")
	}

	dir := t.TempDir()
	n := newNode(t, "a.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}, dir: dir})
	// Let two pages through (the read API serves 1024 entries per page at
	// most), then fail; progress is saved every ProgressInterval and on
	// the failure.
	l.failAfter.Store(2)
	if err := n.a.AuditOnce(ctx, origin); err == nil {
		t.Fatal("interrupted audit succeeded")
	}
	mid := n.a.Status()[0]
	if mid.Latest != nil {
		t.Fatalf("a checkpoint was verified before the end: %+v", mid.Latest)
	}
	if mid.Replayed == 0 || mid.Replayed >= b.Len() {
		t.Fatalf("replayed %d of %d before the interruption", mid.Replayed, b.Len())
	}
	n.close()
	l.failAfter.Store(0)

	// A new process on the same store.
	n2 := newNode(t, "a.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}, dir: dir})
	// It resumes where the first stopped.
	if r := n2.a.Status()[0].Replayed; r != mid.Replayed {
		t.Fatalf("restored at %d, stopped at %d", r, mid.Replayed)
	}
	if err := n2.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	got, _ := n2.a.Violations(origin)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("violations differ after resume:\n%s", diff)
	}
	gotSt := n2.a.Status()[0]
	if gotSt.Latest == nil || gotSt.Latest.Size != wantSt.Latest.Size || gotSt.Latest.Root != wantSt.Latest.Root || gotSt.Violations != wantSt.Violations {
		t.Fatalf("status after resume %+v, want %+v", gotSt, wantSt)
	}
}

// TestProgress: a catch-up logs its position, speed and ETA.
func TestProgress(t *testing.T) {
	l := newTestLog(t)
	b := ktlog.New(origin)
	b.Honest(600, 50)
	l.appendAll(t, b)
	var buf testkit.SyncBuffer
	n := newNode(t, "a.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)},
		progress: time.Nanosecond, logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if err := n.a.AuditOnce(context.Background(), origin); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"catching up", "entries_per_s=", "eta=", fmt.Sprintf("target=%d", b.Len())} {
		if !strings.Contains(out, want) {
			t.Fatalf("progress log lacks %q:\n%s", want, out)
		}
	}
}

// TestManyLogs: one auditor audits a key transparency log and witnesses
// another log; each is served separately.
func TestManyLogs(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	b := ktlog.New(origin)
	b.Honest(5, 2)
	l.appendAll(t, b)
	const other = "other.example/log"
	skey, vkey, err := note.GenerateKey(rand.Reader, other)
	if err != nil {
		t.Fatal(err)
	}
	osig, _ := note.NewSigner(skey)
	ol := conformance.NewMemoryLog(other, osig)
	ol.Append(ctx, [][]byte{[]byte("x"), []byte("y")})
	ocp, _ := ol.Checkpoint(ctx)
	n := newNode(t, "a.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b), {Origin: other, VKey: vkey}}})
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	if err := n.a.AuditOnce(ctx, other); !errors.Is(err, auditor.ErrNotAudited) {
		t.Fatalf("AuditOnce of a witnessed log: %v", err)
	}
	if code, _ := post(t, n.url+auditor.PathAddCheckpoint, "old 0\n\n"+string(ocp)); code != http.StatusOK {
		t.Fatalf("cosign the other log: %d", code)
	}
	if code, _ := get(t, n.url+auditor.PathCheckpoint); code != http.StatusBadRequest {
		t.Fatalf("no origin with two logs: %d", code)
	}
	cp, _ := l.Checkpoint(ctx)
	for o, want := range map[string]string{origin: string(cp), other: string(ocp)} {
		if code, body := get(t, n.url+auditor.PathCheckpoint+"?origin="+o); code != 200 || body != want {
			t.Fatalf("%s: %d %q", o, code, body)
		}
	}
	sts := n.a.Status()
	if len(sts) != 2 || !sts[0].Audited || sts[1].Audited || sts[1].Cosigned != 2 {
		t.Fatalf("%+v", sts)
	}
}

// TestFutureEpochWarning: an epoch stamped later than the witnesses'
// cosignatures (by more than the skew) is a warning, not a violation.
func TestFutureEpochWarning(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		offset time.Duration
		warn   bool
	}{{"past", -time.Hour, false}, {"now", 0, false}, {"future", time.Hour, true}} {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLog(t)
			b := ktlog.New(origin)
			b.Honest(2, 2)
			ts := uint64(time.Now().Add(tc.offset).UnixMilli())
			b.EpochWith(func(r *api.EpochRecord) { r.Timestamp = ts })
			l.appendAll(t, b)
			w2 := newNode(t, "w.example", nodeOpts{logs: []auditor.LogConfig{{Origin: origin, VKey: l.vkey}}})
			l.cosign = func(cp []byte) []byte {
				_, sig := post(t, w2.url+auditor.PathAddCheckpoint, "old 0\n\n"+string(cp))
				return []byte(sig)
			}
			p, err := witness.ParsePolicy([]byte(fmt.Sprintf("witness w %s\nquorum w\n", w2.vkey)))
			if err != nil {
				t.Fatal(err)
			}
			lc := logConfig(l, b)
			lc.WitnessPolicy = p
			n := newNode(t, "a.example", nodeOpts{logs: []auditor.LogConfig{lc}})
			if err := n.a.AuditOnce(ctx, origin); err != nil {
				t.Fatal(err)
			}
			st := n.a.Status()[0]
			if st.Violations != 0 || (st.Warnings != 0) != tc.warn {
				t.Fatalf("violations %d, warnings %d", st.Violations, st.Warnings)
			}
		})
	}
}

// TestFollowerDefersStateSaves: while the follower drives the steps, the
// replay state is written at most every SaveInterval (here: only the
// first step's), and stopping the follower writes it: a restart resumes
// at the last audited checkpoint, not at the first save.
func TestFollowerDefersStateSaves(t *testing.T) {
	l := newTestLog(t)
	b := ktlog.New(origin)
	b.Honest(50, 10)
	l.appendAll(t, b)
	dir := t.TempDir()
	n := newNode(t, "a.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}, dir: dir, run: true, poll: 10 * time.Millisecond})
	awaitAudited := func(n *node, size uint64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if st := n.a.Status()[0]; st.Latest != nil && st.Latest.Size >= size {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("not audited to %d: %+v", size, n.a.Status()[0])
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	awaitAudited(n, b.Len())
	first := b.Len()
	b.Honest(50, 10)
	l.appendAll(t, b)
	awaitAudited(n, b.Len())
	if first >= b.Len() {
		t.Fatal("the log did not grow")
	}
	n.close() // stops the follower, which writes the state
	n2 := newNode(t, "a.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}, dir: dir})
	if st := n2.a.Status()[0]; st.Replayed != b.Len() || st.Latest == nil || st.Latest.Size != b.Len() {
		t.Fatalf("restored at %d (latest %+v), want %d", st.Replayed, st.Latest, b.Len())
	}
}
