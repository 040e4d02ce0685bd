package auditor_test

import (
	"context"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/log/evidence"
)

// checkAll checks every bundle with the log's parameters and returns the
// kinds (sorted) and descriptions.
func checkAll(t *testing.T, l *testLog, b *ktlog.Builder, bundles [][]byte) ([]string, []string) {
	t.Helper()
	p := evidence.Params{Origin: origin, LogVerifier: l.verifier, RecoveryKey: b.RecoveryKey()}
	var kinds, whats []string
	for _, raw := range bundles {
		kind, what, _, err := evidence.Check(p, raw)
		if err != nil {
			t.Fatalf("a stored bundle does not check: %v\n%s", err, raw)
		}
		kinds = append(kinds, string(kind))
		whats = append(whats, what)
	}
	sort.Strings(kinds)
	return kinds, whats
}

// dishonest builds a log with a change record signed by a key that is not
// an authorizer (R5), a second record for one version (R2), and a map root
// that is not derived from the log (map root).
func dishonest(b *ktlog.Builder) {
	b.Honest(4, 2)
	d1, d2, x := ktlog.Key("d1"), ktlog.Key("d2"), ktlog.Index("x")
	a := b.Change(x, api.AuthEnroll, d1, ktlog.Devices(d1))
	b.Epoch()
	b.Change(x, api.AuthDevice, d2, ktlog.Devices(d2)) // R5: d2 is not an authorizer
	b.Epoch()
	r := b.Record(x, api.AuthDevice, ktlog.Devices(d1))
	r.Version, r.Prev = 2, api.LeafHash(b.Entries()[a]) // a second version 2
	r.Sign(origin, d1)
	b.AppendRecord(r)
	b.EpochWith(func(r *api.EpochRecord) { r.MapRoot = [32]byte{7} })
	b.Honest(2, 2)
}

// TestViolationEvidence: the replay's violations become kt-evidence/v2
// bundles (records for R5 and for two records of one version, map-root for
// a map root not derived from the log), stored, written to the evidence
// directory, served, and each accepted by evidence.Check; the log is not
// frozen; every gossiped checkpoint of it is then answered 409 with a
// bundle that proves by itself.
func TestViolationEvidence(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	b := ktlog.New(origin)
	dishonest(b)
	l.appendAll(t, b)
	dir := t.TempDir()
	n := newNode(t, "auditor.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}, evidenceDir: dir})
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	evs, err := n.a.Evidence(origin)
	if err != nil {
		t.Fatal(err)
	}
	kinds, whats := checkAll(t, l, b, evs)
	if strings.Join(kinds, ",") != "map-root,records,records" {
		t.Fatalf("kinds %v: %v", kinds, whats)
	}
	joined := strings.Join(whats, "\n")
	for _, w := range []string{"R5 device", "two records for version 2", "claim: the map of epoch"} {
		if !strings.Contains(joined, w) {
			t.Errorf("no bundle proves %q:\n%s", w, joined)
		}
	}
	files, _ := os.ReadDir(dir)
	st := n.a.Status()[0]
	if len(files) != 3 || len(st.Evidence) != 3 || st.Frozen != "" {
		t.Fatalf("%d files, status %+v", len(files), st)
	}
	code, list := get(t, n.url+auditor.PathEvidence+"?origin="+origin)
	if code != http.StatusOK || len(strings.Fields(list)) != 3 {
		t.Fatalf("GET evidence: %d %q", code, list)
	}
	// Audited again: the same violations are not recorded twice.
	b.Honest(1, 1)
	l.appendAll(t, b)
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	if evs, _ := n.a.Evidence(origin); len(evs) != 3 {
		t.Fatalf("%d bundles after a second audit", len(evs))
	}

	// Gossip: a valid checkpoint of the log gets 409 and a bundle that
	// proves misbehaviour without a replay.
	cp, _ := l.Checkpoint(ctx)
	code, body := post(t, n.url+auditor.PathGossip, string(cp))
	if code != http.StatusConflict {
		t.Fatalf("gossip: %d %s", code, body)
	}
	kind, _, replay, err := evidence.Check(evidence.Params{LogVerifier: l.verifier, RecoveryKey: b.RecoveryKey()}, []byte(body))
	if err != nil || kind != evidence.KindRecords || replay {
		t.Fatalf("gossip answer: %s %v %v", kind, replay, err)
	}
	// A checkpoint without a valid log signature is still 400.
	if code, _ := post(t, n.url+auditor.PathGossip, strings.Replace(string(cp), "\n\n", "\nx\n\n", 1)); code != http.StatusBadRequest {
		t.Fatalf("badly signed gossip: %d", code)
	}
}

// TestMapRootEvidenceOnly: a log whose only fault is a map root not
// derived from the log has a map-root bundle, which gossip answers with.
func TestMapRootEvidenceOnly(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	b := ktlog.New(origin)
	b.Honest(3, 2)
	b.EpochWith(func(r *api.EpochRecord) { r.MapSize++ })
	b.Epoch()
	l.appendAll(t, b)
	n := newNode(t, "auditor.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}})
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	evs, _ := n.a.Evidence(origin)
	if kinds, _ := checkAll(t, l, b, evs); strings.Join(kinds, ",") != "map-root" {
		t.Fatalf("kinds %v", kinds)
	}
	cp, _ := l.Checkpoint(ctx)
	code, body := post(t, n.url+auditor.PathGossip, string(cp))
	if code != http.StatusConflict || !strings.HasPrefix(body, evidence.HeaderV2+"\nkind map-root\n") {
		t.Fatalf("gossip: %d %s", code, body)
	}
}

// TestHonestNoEvidence (control): an honest log has no bundle and gossip
// answers 200.
func TestHonestNoEvidence(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	b := ktlog.New(origin)
	b.Honest(10, 3)
	l.appendAll(t, b)
	n := newNode(t, "auditor.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)}})
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	if evs, _ := n.a.Evidence(origin); len(evs) != 0 {
		t.Fatalf("%d bundles", len(evs))
	}
	cp, _ := l.Checkpoint(ctx)
	if code, body := post(t, n.url+auditor.PathGossip, string(cp)); code != http.StatusOK {
		t.Fatalf("gossip: %d %s", code, body)
	}
}

// TestGossipV2Evidence: a peer that has not audited the log takes a
// records bundle by gossip (409, stored) and answers later gossip with
// it, but refuses a map-root claim its own replay does not confirm (422),
// and a bundle that does not check (400). The gossip round spreads the
// self-verifying bundles.
func TestGossipV2Evidence(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	b := ktlog.New(origin)
	dishonest(b)
	l.appendAll(t, b)
	cfg2 := logConfig(l, b)
	cfg2.Reader = nil // witnessed only: cannot replay
	n2 := newNode(t, "auditor2.example", nodeOpts{logs: []auditor.LogConfig{cfg2}})
	n1 := newNode(t, "auditor1.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, b)},
		peers: []auditor.Peer{{Name: "auditor2", URL: n2.url}}})
	if err := n1.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	evs, _ := n1.a.Evidence(origin)
	p := evidence.Params{LogVerifier: l.verifier, RecoveryKey: b.RecoveryKey()}
	var rec, mapRoot []byte
	for _, e := range evs {
		switch kind, _, _, _ := evidence.Check(p, e); kind {
		case evidence.KindRecords:
			rec = e
		case evidence.KindMapRoot:
			mapRoot = e
		}
	}
	if rec == nil || mapRoot == nil {
		t.Fatal("missing bundles")
	}
	if code, body := post(t, n2.url+auditor.PathGossip, string(mapRoot)); code != http.StatusUnprocessableEntity {
		t.Fatalf("map-root to a peer that cannot replay: %d %s", code, body)
	}
	bad := strings.Replace(string(rec), "kind records", "kind map-root", 1)
	if code, _ := post(t, n2.url+auditor.PathGossip, bad); code != http.StatusBadRequest {
		t.Fatalf("a records bundle labelled map-root: %d", code)
	}
	if evs, _ := n2.a.Evidence(origin); len(evs) != 0 {
		t.Fatalf("peer stored %d bundles", len(evs))
	}
	// The gossip round posts every self-verifying bundle to the peer.
	n1.a.GossipRound(ctx, origin)
	evs2, _ := n2.a.Evidence(origin)
	if kinds, _ := checkAll(t, l, b, evs2); strings.Join(kinds, ",") != "records,records" {
		t.Fatalf("peer holds %v", kinds)
	}
	if code, body := post(t, n2.url+auditor.PathGossip, string(rec)); code != http.StatusConflict || body != string(rec) {
		t.Fatalf("records bundle: %d", code)
	}
	cp, _ := l.Checkpoint(ctx)
	if code, _ := post(t, n2.url+auditor.PathGossip, string(cp)); code != http.StatusConflict {
		t.Fatalf("checkpoint gossip after evidence: %d", code)
	}
	// The auditor that replayed confirms a map-root bundle posted to it.
	if code, _ := post(t, n1.url+auditor.PathGossip, string(mapRoot)); code != http.StatusConflict {
		t.Fatalf("map-root to the auditor that found it: %d", code)
	}
}
