package auditor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/auditor/replay"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/evidence"
)

// This file turns the replay's violations into kt-evidence/v2 bundles
// (design.md 15.1) and serves them through gossip: every violation of the
// authorization rules R1-R6 (two records for one version included) whose
// records show it becomes a records bundle, and a wrong map root or map
// size a map-root bundle. They are recorded like fork evidence (store,
// evidence directory, webhook, metrics, GET /kt/v1/evidence), but do not
// freeze the log: the replay goes on and the witness keeps its own rules.
// Once a log has any evidence, every gossiped checkpoint of it is answered
// 409 with a bundle, so that gossiping clients learn it.

// saveAndProve saves the replay state and violations vs (saveState), then
// records a bundle for each violation that allows one. Building evidence
// is best effort: a failure is logged, never returned.
//
// SPEC(design.md 15.1)
func (a *Auditor) saveAndProve(ctx context.Context, ls *logState, vs []replay.Violation, target []byte) error {
	if err := a.saveState(ls, vs, target); err != nil {
		return err
	}
	a.proveViolations(ctx, ls, vs, target)
	return nil
}

// proveViolations builds, checks and records the bundles of vs, in the
// tree of target (the checkpoint being audited, whose size exceeds every
// violation's index), with proofs and earlier entries from the log's
// reader.
//
// SPEC(design.md 15.1): "every violation the replay finds becomes a bundle
// when the rule allows one: R1-R6 and two-records-one-version → records
// ...; map root / map size → map-root."
func (a *Auditor) proveViolations(ctx context.Context, ls *logState, vs []replay.Violation, target []byte) {
	if len(vs) == 0 || ls.cfg.Reader == nil {
		return
	}
	cp, _, err := log.ParseCheckpoint(target, ls.cfg.Origin, ls.logVerifier())
	if err != nil {
		return
	}
	done := map[string]bool{}
	for _, v := range vs {
		var what string
		switch {
		case v.Rule == replay.RuleMapRoot || v.Rule == replay.RuleMapSize:
			what = "map-root"
		case isAuthRule(v):
			what = "records"
		default:
			continue
		}
		id := fmt.Sprint(what, v.Index)
		if done[id] || v.Index >= cp.Size {
			continue
		}
		done[id] = true
		bundle, err := a.violationBundle(ctx, ls, v, what, target, cp.Size)
		if err != nil {
			a.log.Warn("no evidence for a violation", "origin", ls.cfg.Origin, "index", v.Index, "rule", v.Rule, "err", err)
			continue
		}
		if err := a.recordEvidence(ls, bundle); err != nil {
			a.log.Error("recording evidence", "origin", ls.cfg.Origin, "err", err)
		}
	}
}

// isAuthRule reports whether v is a violation of an authorization rule
// (R1-R6), which records can show.
func isAuthRule(v replay.Violation) bool {
	_, ok := errors.AsType[*api.AuthError](v.Err)
	return ok
}

// violationBundle returns the checked bundle of v: for an authorization
// rule, the records bundle of the previous record and v's (if that pair
// proves it), else of v's record alone; for the map rules, the map-root
// bundle of the epoch record.
//
// SPEC(design.md 15.1 records)
// SPEC(design.md 15.1 map-root)
func (a *Auditor) violationBundle(ctx context.Context, ls *logState, v replay.Violation, what string, target []byte, size uint64) ([]byte, error) {
	r := ls.cfg.Reader
	ent, err := entryAt(ctx, r, v.Index)
	if err != nil {
		return nil, err
	}
	p := ls.params()
	if what == "map-root" {
		b, err := evidence.BuildMapRoot(ctx, r, target, size, ent)
		if err != nil {
			return nil, err
		}
		if _, _, _, err := evidence.Check(p, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	var tries [][]byte
	if v.Prev != nil {
		prev, err := entryAt(ctx, r, *v.Prev)
		if err != nil {
			return nil, err
		}
		b, err := evidence.BuildRecords(ctx, r, target, size, &prev, &ent)
		if err != nil {
			return nil, err
		}
		tries = append(tries, b)
	}
	b, err := evidence.BuildRecords(ctx, r, target, size, &ent, nil)
	if err != nil {
		return nil, err
	}
	tries = append(tries, b)
	var errs []error
	for _, b := range tries {
		_, _, _, err := evidence.Check(p, b)
		if err == nil {
			return b, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func entryAt(ctx context.Context, r log.Reader, i uint64) (evidence.Entry, error) {
	es, err := r.Entries(ctx, i, i+1)
	if err != nil {
		return evidence.Entry{}, fmt.Errorf("reading entry %d: %w", i, err)
	}
	if len(es) != 1 {
		return evidence.Entry{}, fmt.Errorf("reading entry %d: %d entries", i, len(es))
	}
	return evidence.Entry{Index: i, Data: es[0]}, nil
}

// params are the log's parameters for evidence.Check.
func (ls *logState) params() evidence.Params {
	return evidence.Params{Origin: ls.cfg.Origin, LogVerifier: ls.logVerifier(), RecoveryKey: ls.cfg.RecoveryKey}
}

// isFork reports whether bundle is kt-evidence/v1 (split view).
func isFork(bundle []byte) bool { return bytes.HasPrefix(bundle, []byte(evidence.Header+"\n")) }

// answerBundle returns the bundle a gossip about ls is answered with once
// ls has evidence, nil if it has none: a fork bundle first, then one that
// proves by itself, then a map-root claim.
//
// SPEC(design.md 15.1): "once the log has any evidence every POST
// /kt/v1/gossip for it answers 409 with a bundle (so gossiping clients
// learn it)"
func (a *Auditor) answerBundle(ls *logState) []byte {
	ls.mu.Lock()
	n := len(ls.evidence)
	ls.mu.Unlock()
	if n == 0 {
		return nil
	}
	bs, err := a.cfg.Store.list(key(kindEvidence, ls.cfg.Origin))
	if err != nil || len(bs) == 0 {
		return nil
	}
	rank := func(b []byte) int {
		switch {
		case isFork(b):
			return 0
		case strings.HasPrefix(string(b), evidence.HeaderV2+"\nkind "+string(evidence.KindMapRoot)+"\n"):
			return 2
		}
		return 1
	}
	return slices.MinFunc(bs, func(x, y []byte) int { return rank(x) - rank(y) })
}

// gossipEvidenceV2 verifies a kt-evidence/v2 bundle received by gossip and
// records it (a *ForkError echoing it, 409). A map-root bundle proves
// nothing by itself: it is recorded only when this auditor's own replay
// found the map root or size of that epoch record wrong; otherwise the
// answer wraps ErrBadProof (422). A records bundle whose verdict rests on
// rule R6 needs the log's recovery key in the configuration.
//
// SPEC(design.md 15.1)
func (a *Auditor) gossipEvidenceV2(body []byte) error {
	b, err := evidence.Parse(body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	origin, _, _ := strings.Cut(string(b.Checkpoint), "\n")
	ls, ok := a.logs[origin]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownLog, origin)
	}
	kind, what, replayNeeded, err := evidence.Check(ls.params(), body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if kind == evidence.KindRecords && ls.cfg.RecoveryKey == ([32]byte{}) && strings.HasPrefix(what, string(api.RuleRecovery)) {
		return fmt.Errorf("%w: the verdict (%s) rests on rule R6 and this auditor does not know the log's recovery key", ErrBadProof, what)
	}
	// SPEC(design.md 11.1): after a rotation of the recovery key the R6
	// verdict depends on the record's position, which a bundle does not
	// prove; such bundles are not judged.
	if kind == evidence.KindRecords && ls.recoveryKey() != ls.cfg.RecoveryKey && strings.HasPrefix(what, string(api.RuleRecovery)) {
		return fmt.Errorf("%w: the verdict (%s) rests on rule R6 and the log's recovery key was rotated", ErrBadProof, what)
	}
	if replayNeeded {
		if err := a.confirmMapRoot(ls, b.Entries[0].Index); err != nil {
			return err
		}
	}
	if err := a.recordEvidence(ls, body); err != nil {
		return err
	}
	return &ForkError{Origin: origin, Bundle: body}
}

// confirmMapRoot checks that this auditor's replay found the map root or
// size of the epoch record at j wrong.
//
// SPEC(design.md 15.1 map-root): "NOT self-verifying"
func (a *Auditor) confirmMapRoot(ls *logState, j uint64) error {
	if ls.cfg.Reader == nil {
		return fmt.Errorf("%w: a map-root claim, and this auditor does not replay the log", ErrBadProof)
	}
	vs, err := a.Violations(ls.cfg.Origin)
	if err != nil {
		return err
	}
	for _, v := range vs {
		if v.Index == j && (v.Rule == replay.RuleMapRoot || v.Rule == replay.RuleMapSize) {
			return nil
		}
	}
	return fmt.Errorf("%w: a map-root claim about entry %d that this auditor's replay does not confirm", ErrBadProof, j)
}

// gossipBundles posts to peer p every self-verifying bundle of ls it has
// not taken yet (a 409 answer), so that evidence spreads between
// auditors.
//
// SPEC(design.md 15.1): "gossiped to peers"
func (a *Auditor) gossipBundles(ctx context.Context, ls *logState, p Peer) {
	ls.mu.Lock()
	n := len(ls.evidence)
	ls.mu.Unlock()
	if n == 0 {
		return
	}
	bs, err := a.cfg.Store.list(key(kindEvidence, ls.cfg.Origin))
	if err != nil {
		return
	}
	for _, b := range bs {
		if strings.HasPrefix(string(b), evidence.HeaderV2+"\nkind "+string(evidence.KindMapRoot)+"\n") {
			continue // the peer's own replay decides
		}
		k := ls.cfg.Origin + "\x00" + p.Name + "\x00" + evidenceID(b)
		if _, done := a.gossiped.Load(k); done {
			continue
		}
		st, _, err := evidence.Post(ctx, a.cfg.HTTPClient, p.URL, b)
		if err == nil && st == 409 {
			a.gossiped.Store(k, struct{}{})
		} else {
			a.log.Warn("peer did not take the evidence", "peer", p.Name, "status", st, "err", err)
		}
	}
}
