package attacks

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/client"
)

// run plays scenario id and fails the test unless its control succeeded
// and the attack was detected.
func run(t *testing.T, id string) *Result {
	t.Helper()
	for _, s := range Scenarios() {
		if s.ID != id {
			continue
		}
		r, err := Run(t.Context(), s)
		if err != nil {
			t.Fatal(err)
		}
		if r.Control == "" {
			t.Fatalf("%s: no control run recorded", id)
		}
		for _, d := range r.Detections {
			t.Logf("%s: detected by %s after %v (%d polls): %s", id, d.By, d.After, d.Polls, d.Evidence)
		}
		for _, n := range r.Notes {
			t.Logf("%s: note: %s", id, n)
		}
		return r
	}
	t.Fatalf("no scenario %s", id)
	return nil
}

// detections returns r's detections by who, failing if there are none.
func detections(t *testing.T, r *Result, by string) []Detection {
	t.Helper()
	var out []Detection
	for _, d := range r.Detections {
		if d.By == by {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: not detected by %s; detections: %+v", r.ID, by, r.Detections)
	}
	return out
}

func wantErr(t *testing.T, d Detection, want error) {
	t.Helper()
	if !errors.Is(d.Err, want) {
		t.Errorf("%s: error %v, want %v", d.By, d.Err, want)
	}
}

func wantBundle(t *testing.T, d Detection) {
	t.Helper()
	if len(d.Bundle) == 0 {
		t.Fatalf("%s: no evidence bundle", d.By)
	}
	// Re-verified here, independently of the scenario: the bundle must
	// start with the kt-evidence/v1 header and verify offline.
	if !strings.HasPrefix(string(d.Bundle), "kt-evidence/v1\n") {
		t.Errorf("%s: bundle without the kt-evidence/v1 header", d.By)
	}
}

// wantBundleV2 checks that d carries a kt-evidence/v2 bundle of kind (the
// scenario verified it offline with evidence.Check and ktctl).
func wantBundleV2(t *testing.T, d Detection, kind string) {
	t.Helper()
	if want := "kt-evidence/v2\nkind " + kind + "\n"; !strings.HasPrefix(string(d.Bundle), want) {
		t.Errorf("%s: bundle does not start with %q: %.60q", d.By, want, d.Bundle)
	}
}

// TestA1GhostNotInLog: a ghost device injected into a lookup answer is
// refused by the sender's client: a forged record fails the map proof, an
// edited device set the commitment.
func TestA1GhostNotInLog(t *testing.T) {
	r := run(t, "A1")
	ds := detections(t, r, BySender)
	if len(ds) != 2 {
		t.Fatalf("%d sender detections, want 2", len(ds))
	}
	wantErr(t, ds[0], client.ErrMapProof)
	wantErr(t, ds[1], client.ErrCommitment)
}

// TestA2RecoveryGhost: a ghost device added through the recovery path
// raises the owner's recovery alert and is refused by a strict-mode
// sender.
func TestA2RecoveryGhost(t *testing.T) {
	r := run(t, "A2")
	m := detections(t, r, ByOwnerMonitor)[0]
	if as, _ := m.Detail.([]client.Alert); !slices.ContainsFunc(as, func(a client.Alert) bool { return a.Kind == client.AlertRecovery }) {
		t.Errorf("owner alerts %v, want a recovery alert", m.Detail)
	}
	wantErr(t, detections(t, r, ByStrictSender)[0], client.ErrStrict)
}

// TestA3Stale: a device set from before a revocation is refused, under the
// current epoch (map proof) and with its own older epoch (rollback).
func TestA3Stale(t *testing.T) {
	r := run(t, "A3")
	ds := detections(t, r, BySender)
	if len(ds) != 2 {
		t.Fatalf("%d sender detections, want 2", len(ds))
	}
	wantErr(t, ds[0], client.ErrMapProof)
	wantErr(t, ds[1], client.ErrRollback)
}

// TestA4SplitView: a fork shown to one sender lacks the witness quorum;
// auditors shown different branches produce the same verifiable evidence
// after one gossip round, and a sender gossiping with the deceived
// auditor gets it too.
func TestA4SplitView(t *testing.T) {
	r := run(t, "A4")
	ds := detections(t, r, BySender)
	if len(ds) != 2 {
		t.Fatalf("%d sender detections, want 2", len(ds))
	}
	wantErr(t, ds[0], client.ErrWitnessQuorum)
	wantErr(t, ds[1], client.ErrSplitView)
	wantBundle(t, ds[1])
	wantBundle(t, detections(t, r, ByAuditor)[0])
}

// TestA5RewrittenHistory: a rewritten history, even cosigned with a stolen
// witness key, is refused by the sender (inconsistent with its trusted
// checkpoint) and yields the auditor a verifiable evidence bundle.
func TestA5RewrittenHistory(t *testing.T) {
	r := run(t, "A5")
	s := detections(t, r, BySender)[0]
	wantErr(t, s, client.ErrInconsistent)
	var ie *client.InconsistencyError
	if !errors.As(s.Err, &ie) || len(ie.Trusted) == 0 || len(ie.New) == 0 {
		t.Errorf("the sender's error carries no checkpoints: %v", s.Err)
	}
	wantBundle(t, detections(t, r, ByAuditor)[0])
}

// TestA6BadMapRoot: a map root not derived from the logged changes is a
// map-root violation for the auditor.
func TestA6BadMapRoot(t *testing.T) {
	r := run(t, "A6")
	a := detections(t, r, ByAuditor)[0]
	if v, ok := a.Detail.(auditor.Violation); !ok || v.Rule != api.RuleMapRoot {
		t.Errorf("auditor violation %+v, want rule %q", a.Detail, api.RuleMapRoot)
	}
}

// TestA7AddRemove: a ghost added and removed between two polls is in the
// owner's version chain and raises the transient-device alert.
func TestA7AddRemove(t *testing.T) {
	r := run(t, "A7")
	m := detections(t, r, ByOwnerMonitor)[0]
	if as, _ := m.Detail.([]client.Alert); !slices.ContainsFunc(as, func(a client.Alert) bool { return a.Kind == client.AlertTransientDevice }) {
		t.Errorf("owner alerts %v, want a transient-device alert", m.Detail)
	}
}

// TestA8Replay: the directory refuses a replayed change and a change
// signed by a removed device; forced into the log, the auditor flags R2
// and R5.
func TestA8Replay(t *testing.T) {
	r := run(t, "A8")
	if n := len(detections(t, r, ByDirectory)); n != 2 {
		t.Errorf("%d directory rejections, want 2", n)
	}
	var rules []api.Rule
	for _, d := range detections(t, r, ByAuditor) {
		v, _ := d.Detail.(auditor.Violation)
		rules = append(rules, v.Rule)
	}
	if len(rules) != 2 || rules[0] != api.RuleVersion || rules[1] != api.RuleDevice {
		t.Errorf("auditor rules %q, want R2 then R5", rules)
	}
}

// TestA9Freeze: a frozen view is refused once older than the staleness
// bound on the sender's clock.
func TestA9Freeze(t *testing.T) {
	r := run(t, "A9")
	s := detections(t, r, BySender)[0]
	wantErr(t, s, client.ErrStale)
	if s.Polls < 2 {
		t.Errorf("detected at poll %d: the frozen view was never accepted, so the bound was not what tripped", s.Polls)
	}
}

// TestA10HostileInput: every hostile request at every interface gets a
// clear rejection, nothing is stored and every service still answers (the
// scenario checks all of it; here, that each interface was exercised).
func TestA10HostileInput(t *testing.T) {
	r := run(t, "A10")
	seen := map[string]bool{}
	for _, d := range r.Detections {
		for _, c := range d.Detail.([]HostileCase) {
			seen[c.Interface] = true
			if !c.OK {
				t.Errorf("%s: %s: %s", c.Interface, c.Request, c.Got)
			}
		}
	}
	for _, iface := range []string{"gRPC Directory/Log/Operator", "log read API", "auditor gossip", "auditor witness"} {
		if !seen[iface] {
			t.Errorf("interface %s not exercised", iface)
		}
	}
}

// TestA11ForgedRecord: a change that breaks R5, logged and mapped by the
// operator's own directory, is refused by both auditors of the audit
// policy, so the epoch is never served; served anyway it fails the
// sender's audit quorum; the auditor's records bundle verifies offline
// (evidence.Check and ktctl), and a client given it, directly or by
// gossip, refuses the log.
func TestA11ForgedRecord(t *testing.T) {
	r := run(t, "A11")
	a := detections(t, r, ByAuditor)
	if len(a) != 2 {
		t.Fatalf("%d auditor detections, want 2", len(a))
	}
	wantBundleV2(t, a[1], "records")
	s := detections(t, r, BySender)
	if len(s) != 3 {
		t.Fatalf("%d sender detections, want 3", len(s))
	}
	wantErr(t, s[0], client.ErrAuditQuorum)
	wantErr(t, s[1], client.ErrLogRefused)
	wantErr(t, s[2], client.ErrLogRefused)
}

// TestA11MapNotFromLog: a map root that points Bob at a record the log
// does not hold is refused by the auditors, whose map-root bundle ktctl
// confirms by replaying the log; served anyway it fails the sender's
// audit quorum.
func TestA11MapNotFromLog(t *testing.T) {
	r := run(t, "A11M")
	a := detections(t, r, ByAuditor)
	if len(a) != 2 {
		t.Fatalf("%d auditor detections, want 2", len(a))
	}
	wantBundleV2(t, a[1], "map-root")
	wantErr(t, detections(t, r, BySender)[0], client.ErrAuditQuorum)
}

// TestA11ContactMonitoring: without auditors the sender encrypts to the
// ghost in epoch N; its contact check in N+1 raises ErrContactChanged
// with a map-regression bundle that verifies offline, and the client
// then refuses the log.
func TestA11ContactMonitoring(t *testing.T) {
	r := run(t, "A11C")
	s := detections(t, r, BySender)
	if len(s) != 2 {
		t.Fatalf("%d sender detections, want 2", len(s))
	}
	wantErr(t, s[0], client.ErrContactChanged)
	wantBundleV2(t, s[0], "map-regression")
	wantErr(t, s[1], client.ErrLogRefused)
}

// TestA14AuditWithheld: with the auditors cut off, the honest directory
// in audit mode keeps serving its last audited epoch, which the sender
// refuses with ErrAuditLag once it is older than the audit lag bound,
// well before MaxAge.
func TestA14AuditWithheld(t *testing.T) {
	r := run(t, "A14")
	s := detections(t, r, BySender)[0]
	wantErr(t, s, client.ErrAuditLag)
	if errors.Is(s.Err, client.ErrStale) {
		t.Errorf("the audit lag failure is also ErrStale: %v", s.Err)
	}
}
