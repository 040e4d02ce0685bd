package auditor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	fmtlog "github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/keytrans/kt/auditor/replay"
)

// Audit statement errors (POST /kt/v1/audit), mapped to HTTP statuses at
// the edge with the witness errors ([ErrMalformed] 400, [ErrTooLarge] 413,
// [ErrBadSignature], [ErrFrozen] and [ErrViolation] 403, [ErrUnknownLog]
// and [ErrNotAudited] 404, [*ForkError] and [*ConflictError] 409).
var (
	// ErrNoAuditKey: the auditor has no audit key (Config.AuditSigner),
	// so it makes no statements (404).
	ErrNoAuditKey = errors.New("auditor: no audit key")
	// ErrNotYetAudited: the checkpoint is beyond what the auditor has
	// audited, and the audit did not reach it within Config.AuditWait or
	// the request's lifetime; or the log did not serve the proof that
	// relates it to the audited checkpoint (503, Retry-After).
	ErrNotYetAudited = errors.New("auditor: checkpoint not audited yet")
)

// Audit is POST /kt/v1/audit without its HTTP framing (design.md 14.2):
// body is one checkpoint note of an audited log. It returns one note
// signature line, the audit statement made with Config.AuditSigner, when
// the log's signature verifies, the checkpoint's size N is at least 1 and
// at most the latest audited size, the replay found no violation below N,
// and the checkpoint is the audited tree at N (the same root at the audited
// size, otherwise the log's consistency proof from N to the audited size
// verifies). For N beyond the audited size it asks the follower ([Auditor.Run])
// for an audit step at once, in place of waiting for the next poll (one
// step at a time: a request during a step makes one more), and waits up to
// Config.AuditWait, bounded by ctx, before returning [ErrNotYetAudited].
//
// The statement says: the auditor replayed entries [0, N) of the log,
// every rule held, the checkpoint's root is the root of those entries, and
// it is consistent with every checkpoint of the log the auditor has seen.
// A checkpoint that contradicts the audited one is answered with the
// evidence (a *ForkError, recorded as any other evidence), or a
// *ConflictError when the log's proofs at hand do not prove a fork.
//
// SPEC(design.md 14.1)
// SPEC(design.md 14.2)
func (a *Auditor) Audit(ctx context.Context, body []byte) ([]byte, error) {
	if a.cfg.AuditSigner == nil {
		return nil, ErrNoAuditKey
	}
	origin, _, _ := strings.Cut(string(body), "\n")
	ls, ok := a.logs[origin]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownLog, origin)
	}
	if ls.cfg.Reader == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotAudited, origin)
	}
	// SPEC(design.md 14.2): 403 when no valid log signature; 400 malformed.
	cp, err := ls.openCheckpoint(body)
	if err != nil {
		return nil, err
	}
	// SPEC(design.md 14.2): "A statement is only made for N ≥ 1."
	if cp.Size == 0 {
		return nil, fmt.Errorf("%w: no audit statement for the empty tree", ErrMalformed)
	}
	wait := time.NewTimer(a.cfg.AuditWait)
	defer wait.Stop()
	asked := false
	for {
		ls.mu.Lock()
		frozen, latest, changed := ls.frozen, ls.latest, ls.changed
		bad, first := ls.violationBelow(cp.Size), ls.firstBad
		ls.mu.Unlock()
		switch {
		case frozen != "":
			// SPEC(design.md 14.2): 403 when the log is frozen (evidence).
			return nil, fmt.Errorf("%w: %s", ErrFrozen, frozen)
		case bad:
			// SPEC(design.md 14.2): 403 for a violation at an index < N.
			return nil, a.violationError(ls, first)
		case latest != nil && cp.Size <= latest.Size:
			return a.vouch(ctx, ls, body, cp, latest)
		}
		if !asked {
			// SPEC(design.md 14.2): N beyond the audited size triggers an
			// audit step at once, coalesced with the poller's.
			select {
			case ls.kick <- struct{}{}:
			default: // a step is already asked for
			}
			asked = true
		}
		select {
		case <-changed:
		case <-wait.C:
			return nil, a.notYet(ls, cp.Size)
		case <-ctx.Done():
			return nil, a.notYet(ls, cp.Size)
		}
	}
}

// vouch makes the statement for checkpoint raw (cp) of ls, of a size at
// most latest's, if it is the audited tree at its size.
//
// SPEC(design.md 14.2)
func (a *Auditor) vouch(ctx context.Context, ls *logState, raw []byte, cp *fmtlog.Checkpoint, latest *replay.Checkpoint) ([]byte, error) {
	if cp.Size == latest.Size {
		// SPEC(design.md 14.2): "same root if N = audited size".
		if !bytes.Equal(cp.Hash, latest.Root[:]) {
			return nil, a.contradiction(ctx, ls, raw, cp, latest)
		}
	} else {
		// SPEC(design.md 14.2): "else the log's consistency proof N →
		// audited verifies with the checkpoint's root".
		p, err := ls.cfg.Reader.ConsistencyProof(ctx, cp.Size, latest.Size)
		if err != nil {
			return nil, fmt.Errorf("%w: the log's consistency proof from %d to the audited size %d: %w", ErrNotYetAudited, cp.Size, latest.Size, err)
		}
		if proof.VerifyConsistency(rfc6962.DefaultHasher, cp.Size, latest.Size, p, cp.Hash, latest.Root[:]) != nil {
			return nil, a.contradiction(ctx, ls, raw, cp, latest)
		}
	}
	line, err := signatureLine(a.cfg.AuditSigner, cp.Marshal())
	if err != nil {
		return nil, fmt.Errorf("auditor: audit statement: %w", err)
	}
	a.m.AuditStatement(ls.cfg.Origin)
	return line, nil
}

// contradiction records the evidence that raw and the audited checkpoint
// latest are a fork and returns the 409 error: a *ForkError with the
// bundle, or a *ConflictError when the log's proofs do not prove a fork.
//
// SPEC(design.md 14.2): "409: the checkpoint is inconsistent with the
// audited view (evidence recorded as today)".
func (a *Auditor) contradiction(ctx context.Context, ls *logState, raw []byte, cp *fmtlog.Checkpoint, latest *replay.Checkpoint) error {
	b, err := a.compare(ctx, ls, raw, cp, latest)
	if err != nil {
		return err
	}
	if b != nil {
		return &ForkError{Origin: ls.cfg.Origin, Bundle: b}
	}
	return &ConflictError{Reason: fmt.Sprintf("size %d is not provably part of the audited tree of size %d", cp.Size, latest.Size)}
}

// violationError is ErrViolation naming the rule and the index of the
// first violation, at index first.
func (a *Auditor) violationError(ls *logState, first uint64) error {
	idx := make([]byte, 8)
	putU64(idx, first)
	vals, err := a.cfg.Store.list(key(kindViolation, ls.cfg.Origin, idx))
	if err != nil {
		return err
	}
	for _, v := range vals {
		var r violationRecord
		if json.Unmarshal(v, &r) == nil {
			return fmt.Errorf("%w: entry %d violates %s: %s", ErrViolation, first, r.Rule, r.Detail)
		}
	}
	return fmt.Errorf("%w: entry %d", ErrViolation, first)
}

// notYet is ErrNotYetAudited saying how far the audit of ls is.
func (a *Auditor) notYet(ls *logState, size uint64) error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	audited := uint64(0)
	if ls.latest != nil {
		audited = ls.latest.Size
	}
	msg := fmt.Sprintf("size %d: audited up to size %d, %d entries replayed, the log's latest checkpoint seen has size %d", size, audited, ls.replayed, ls.target)
	if ls.lastErr != "" {
		msg += "; last audit step failed: " + ls.lastErr
	}
	return fmt.Errorf("%w: %s", ErrNotYetAudited, msg)
}

// stateLatest returns the audited checkpoint last with the auditor's audit
// statement appended, for GET /kt/v1/checkpoint, or nil (no audit key, no
// checkpoint, a violation below its size, or a note that is not a
// canonical checkpoint).
//
// SPEC(design.md 14.2): "the latest audited checkpoint now carries the
// auditor's own audit statement line (sign it when the audit step finishes
// clean)".
func (a *Auditor) stateLatest(ls *logState, last *replay.Checkpoint, violations, first uint64) []byte {
	if a.cfg.AuditSigner == nil || last == nil || last.Size == 0 || (violations > 0 && first < last.Size) {
		return nil
	}
	cp, err := ls.openCheckpoint(last.Note)
	if err != nil {
		return nil
	}
	line, err := signatureLine(a.cfg.AuditSigner, cp.Marshal())
	if err != nil {
		a.log.Error("audit statement", "origin", ls.cfg.Origin, "err", err)
		return nil
	}
	a.m.AuditStatement(ls.cfg.Origin)
	return append(bytes.Clone(last.Note), line...)
}
