package client

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"time"

	fmtlog "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/witness"
)

// Epoch is a verified epoch: an epoch checkpoint accepted under the witness
// policy and consistent with the client's trusted checkpoint, and its epoch
// record, proved to be the checkpoint's last entry.
type Epoch struct {
	// Checkpoint is the epoch checkpoint, a signed note with its
	// cosignatures.
	Checkpoint []byte
	// Size and Root are the checkpoint's tree size and RFC 6962 root.
	Size uint64
	Root [32]byte
	// Record is the epoch record; Record.LogSize = Size - 1.
	Record api.EpochRecord
	// Cosignatures are the verified cosignatures of policy witnesses; nil
	// when the epoch was reused from the trusted state.
	Cosignatures []witness.Cosignature
	// QuorumTime is the latest time as of which a quorum of witnesses had
	// cosigned (witness.Policy.QuorumTime); zero without a witness policy.
	QuorumTime time.Time
	// AuditStatements are, in audit mode (Params.Audit), the verified audit
	// statements of policy auditors that were counted for the audit
	// quorum (design.md 14.1): each says its auditor replayed the log up
	// to this checkpoint and every rule held. nil without an audit policy,
	// and when the epoch was reused from the trusted state.
	AuditStatements []witness.Cosignature
	// Reused is true when the response carried no epoch part and the
	// client's trusted epoch was used.
	Reused bool
}

// Time returns the epoch record's timestamp.
func (e *Epoch) Time() time.Time { return epochTime(e.Record.Timestamp) }

func epochTime(ms uint64) time.Time {
	if ms > math.MaxInt64 {
		ms = math.MaxInt64
	}
	return time.UnixMilli(int64(ms))
}

// Trusted returns the state a client stores after accepting e.
func (e *Epoch) Trusted() *Trusted {
	return &Trusted{
		Checkpoint: bytes.Clone(e.Checkpoint),
		Size:       e.Size,
		Root:       e.Root,
		Epoch:      e.Record,
		QuorumTime: e.QuorumTime,
	}
}

// VerifyEpoch verifies an epoch part against the parameters and the trusted
// state t (nil if the client trusts nothing yet), following design.md 12.2
// step 2 exactly:
//
//  1. the checkpoint is signed by the pinned log key for the pinned origin
//     ([ErrCheckpointSignature]);
//  2. its cosignatures satisfy the witness policy, none is invalid and none
//     is dated after now + skew ([ErrWitnessQuorum]);
//     2a. in audit mode, its audit statements satisfy the audit policy,
//     none is invalid, and only those dated between the epoch's timestamp
//     − skew and now + skew count ([ErrAuditQuorum]);
//  3. it is not smaller than t ([ErrRollback]) and is consistent with t
//     ([ErrInconsistent], as an [*InconsistencyError]);
//  4. the epoch record's log size is size − 1 ([ErrNotLatestEpoch]) and the
//     record is included at that index ([ErrEpochInclusion]);
//  5. in audit mode, the epoch timestamp is within MaxAuditLag + Skew of
//     now ([ErrAuditLag], step 2.5a); then the epoch timestamp and the
//     witness quorum time are within MaxAge + Skew of now, the timestamp
//     not after now + Skew, and the epoch number not below t's
//     ([ErrStale]).
//
// A nil part reuses t (which must then exist) and checks step 5 only.
// Malformed parts fail with [ErrMalformed] before any check. VerifyEpoch does
// not modify t; store the returned epoch's [Epoch.Trusted] state.
//
// SPEC(design.md 12.2 step 2)
func VerifyEpoch(p *Params, t *Trusted, part *ktpb.EpochPart, now time.Time) (*Epoch, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if part == nil {
		if t == nil {
			return nil, fail(StepParse, ErrMalformed, nil, "no epoch part, and no trusted epoch to reuse")
		}
		e := &Epoch{
			Checkpoint: t.Checkpoint,
			Size:       t.Size,
			Root:       t.Root,
			Record:     t.Epoch,
			QuorumTime: t.QuorumTime,
			Reused:     true,
		}
		if err := checkFreshness(p, t, e, now); err != nil {
			return nil, err
		}
		return e, nil
	}
	e, err := verifyEpochPart(p, t, part, now)
	if err != nil {
		return nil, err
	}
	// Step 2.5.
	if err := checkFreshness(p, t, e, now); err != nil {
		return nil, err
	}
	return e, nil
}

// verifyEpochPart runs steps 1 and 2.1 to 2.4 of design.md 12.2 on an
// epoch part: everything but freshness, which observers do not check
// (see [VerifyObserved]). now bounds the cosignature and audit statement
// timestamps (steps 2.2 and 2.2a).
//
// SPEC(design.md 12.2 step 1)
// SPEC(design.md 12.2 step 2.3)
// SPEC(design.md 12.2 step 2.4)
func verifyEpochPart(p *Params, t *Trusted, part *ktpb.EpochPart, now time.Time) (*Epoch, error) {
	// Step 1: parse.
	rec, err := api.ParseEpochRecord(part.GetEpochRecord())
	if err != nil {
		return nil, fail(StepParse, ErrMalformed, err, "epoch record")
	}
	if err := checkProof("epoch inclusion proof", part.GetInclusionProof()); err != nil {
		return nil, err
	}
	if err := checkProof("consistency proof", part.GetConsistencyProof()); err != nil {
		return nil, err
	}

	e := &Epoch{Checkpoint: part.GetCheckpoint(), Record: *rec}
	if t != nil && bytes.Equal(part.GetCheckpoint(), t.Checkpoint) {
		// The very note the client already verified and stored: its
		// signatures and cosignatures were checked when it was accepted
		// (design.md 12.2: "verified once per epoch and cached"); so were
		// its audit statements (step 2.2a).
		e.Size, e.Root, e.QuorumTime = t.Size, t.Root, t.QuorumTime
	} else {
		// Steps 2.1, 2.2 and 2.2a.
		n, err := verifyCheckpoint(p, e)
		if err != nil {
			return nil, err
		}
		if err := verifyCosignatures(p, n, e, now); err != nil {
			return nil, err
		}
		if err := verifyAudit(p, n, e, now); err != nil {
			return nil, err
		}
	}

	// Step 2.3: append-only with respect to the trusted checkpoint.
	cons := part.GetConsistencyProof()
	switch {
	case t == nil:
		if len(cons) != 0 {
			return nil, fail(StepParse, ErrMalformed, nil, "consistency proof given, but the client trusts no checkpoint")
		}
	case e.Size < t.Size:
		return nil, fail(StepConsistency, ErrRollback, nil, "checkpoint size %d is below the trusted size %d", e.Size, t.Size)
	case e.Size == t.Size:
		if e.Root != t.Root {
			return nil, &VerifyError{Step: StepConsistency, Err: inconsistency(t, e, cons, "same size, different root hashes")}
		}
		if len(cons) != 0 {
			return nil, fail(StepParse, ErrMalformed, nil, "non-empty consistency proof between equal sizes")
		}
	default:
		if err := log.VerifyConsistency(t.Size, e.Size, cons, t.Root[:], e.Root[:]); err != nil {
			return nil, &VerifyError{Step: StepConsistency, Err: inconsistency(t, e, cons, "consistency proof: "+err.Error())}
		}
	}

	// Step 2.4: the epoch record is the checkpoint's last entry.
	if e.Size == 0 {
		return nil, fail(StepEpochRecord, ErrNotLatestEpoch, nil, "epoch record has log size %d, checkpoint size is 0", rec.LogSize)
	}
	if err := checkEpochRecord(rec, api.LeafHash(part.GetEpochRecord()), e.Size-1, e.Size, e.Root, part.GetInclusionProof()); err != nil {
		return nil, err
	}
	return e, nil
}

// VerifyEpochRecord checks that raw is the epoch record at log index
// logIndex of a log whose tree of the given size has the given root: it
// parses ([ErrMalformed]), its log size is logIndex, so that it is the last
// entry of the tree of size logIndex + 1 and closes its epoch
// ([ErrNotLatestEpoch]), and inclusion proves it at logIndex in the tree
// ([ErrEpochInclusion]). For an epoch checkpoint, logIndex is size − 1
// (as in [VerifyEpoch]); a larger tree proves an earlier epoch. Errors are
// [*VerifyError] values.
//
// SPEC(design.md 12.2 step 2.4)
func VerifyEpochRecord(raw []byte, logIndex, size uint64, root [32]byte, inclusion [][]byte) (*api.EpochRecord, error) {
	rec, err := api.ParseEpochRecord(raw)
	if err != nil {
		return nil, fail(StepParse, ErrMalformed, err, "epoch record")
	}
	if err := checkProof("epoch inclusion proof", inclusion); err != nil {
		return nil, err
	}
	if err := checkEpochRecord(rec, api.LeafHash(raw), logIndex, size, root, inclusion); err != nil {
		return nil, err
	}
	return rec, nil
}

// checkEpochRecord is step 2.4 of design.md 12.2 for the epoch record rec
// (with leaf hash leaf) at logIndex in the tree (size, root).
//
// SPEC(design.md 12.2 step 2.4): "The epoch record's log size MUST be
// size − 1 and its leaf MUST be included at that index".
func checkEpochRecord(rec *api.EpochRecord, leaf [32]byte, logIndex, size uint64, root [32]byte, inclusion [][]byte) error {
	if rec.LogSize != logIndex || logIndex >= size {
		return fail(StepEpochRecord, ErrNotLatestEpoch, nil, "epoch record at log index %d has log size %d (tree size %d)", logIndex, rec.LogSize, size)
	}
	if err := log.VerifyInclusion(logIndex, size, leaf[:], inclusion, root[:]); err != nil {
		return fail(StepEpochRecord, ErrEpochInclusion, err, "epoch record at index %d", logIndex)
	}
	return nil
}

// verifyCheckpoint checks the log's signature (step 2.1) and fills e.Size
// and e.Root. It returns the opened note for the cosignature check.
//
// SPEC(design.md 9)
// SPEC(design.md 12.2 step 2.1)
func verifyCheckpoint(p *Params, e *Epoch) (*note.Note, error) {
	cp, n, err := log.ParseCheckpoint(e.Checkpoint, p.Origin, p.LogVerifier)
	if err != nil {
		return nil, classifyCheckpointError(p, e.Checkpoint, err)
	}
	// SPEC(design.md 9): checkpoints have "no extension lines".
	if n.Text != string(cp.Marshal()) {
		return nil, fail(StepParse, ErrMalformed, nil, "checkpoint has extension lines")
	}
	e.Size = cp.Size
	copy(e.Root[:], cp.Hash)
	return n, nil
}

// classifyCheckpointError tells a malformed checkpoint from one the log did
// not sign (or signed for another origin). It runs only on failure, so the
// successful path verifies the log signature once.
//
// SPEC(design.md 12.2 step 2.1)
func classifyCheckpointError(p *Params, raw []byte, err error) error {
	n, openErr := note.Open(raw, note.VerifierList(p.LogVerifier))
	var unverified *note.UnverifiedNoteError
	var invalid *note.InvalidSignatureError
	switch {
	case errors.As(openErr, &unverified) || errors.As(openErr, &invalid):
		return fail(StepCheckpoint, ErrCheckpointSignature, err, "")
	case openErr != nil:
		return fail(StepParse, ErrMalformed, err, "checkpoint")
	}
	// The log's signature verifies: the text is at fault.
	var cp fmtlog.Checkpoint
	if _, uerr := cp.Unmarshal([]byte(n.Text)); uerr == nil && cp.Origin != p.Origin {
		return fail(StepCheckpoint, ErrCheckpointSignature, err, "checkpoint for origin %q", cp.Origin)
	}
	return fail(StepParse, ErrMalformed, err, "checkpoint")
}

// verifyCosignatures applies the witness policy (step 2.2) and sets
// e.Cosignatures and e.QuorumTime.
//
// SPEC(design.md 12.2 step 2.2)
func verifyCosignatures(p *Params, n *note.Note, e *Epoch, now time.Time) error {
	if p.Witnesses == nil || p.Witnesses.QuorumNone() {
		return nil // allowed by Validate only with InsecureNoWitnesses
	}
	cs, err := p.Witnesses.CheckNote(n)
	if err != nil {
		return fail(StepWitnesses, ErrWitnessQuorum, err, "")
	}
	limit := now.Add(p.skew())
	for _, c := range cs {
		if c.Time.After(limit) {
			return fail(StepWitnesses, ErrWitnessQuorum, nil, "cosignature by %s is dated %v, after now + skew (%v)", c.Witness, c.Time.UTC(), limit.UTC())
		}
	}
	qt, ok := p.Witnesses.QuorumTime(cs)
	if !ok {
		return fail(StepWitnesses, ErrWitnessQuorum, nil, "no quorum time")
	}
	e.Cosignatures, e.QuorumTime = cs, qt
	return nil
}

// verifyAudit applies the audit policy (step 2.2a) and sets
// e.AuditStatements. It runs after the witness quorum, on the note whose
// log signature verified; e.Record is the parsed (not yet proved) epoch
// record, whose timestamp bounds the statements from below.
//
// SPEC(design.md 12.2 step 2.2a)
// SPEC(design.md 14.1)
func verifyAudit(p *Params, n *note.Note, e *Epoch, now time.Time) error {
	if p.Audit == nil {
		return nil
	}
	cs, err := p.Audit.CheckNote(n)
	qe := &AuditQuorumError{Quorum: p.Audit.Quorum(), Cause: err}
	var pe *witness.PolicyError
	if errors.As(err, &pe) {
		qe.Invalid = pe.Invalid
	}
	// A statement dated in the future, or before the epoch it vouches
	// for was closed, is not counted.
	var counted []witness.Cosignature
	for _, c := range cs {
		if err := witness.CheckStatementTime(c.Time, e.Time(), now, p.skew()); err != nil {
			qe.Rejected = append(qe.Rejected, fmt.Sprintf("statement by %s %v", c.Witness, err))
			continue
		}
		counted = append(counted, c)
	}
	// QuorumTime answers false exactly when the statements do not satisfy
	// the quorum ("quorum none" is refused by Validate).
	if _, ok := p.Audit.QuorumTime(counted); ok && err == nil {
		e.AuditStatements = counted
		return nil
	}
	vouched := make(map[string]bool, len(counted))
	for _, c := range counted {
		vouched[c.Witness] = true
	}
	for _, a := range p.Audit.Witnesses() {
		if vouched[a.Name] {
			qe.Vouched = append(qe.Vouched, a.Name)
		} else {
			qe.Missing = append(qe.Missing, a.Name)
		}
	}
	return &VerifyError{Step: StepAudit, Err: qe}
}

// checkAuditLag is step 2.5a: in audit mode, the served epoch may lag the
// clock by at most MaxAuditLag + Skew.
//
// SPEC(design.md 12.2 step 2.5a)
func checkAuditLag(p *Params, e *Epoch, now time.Time) error {
	if p.Audit == nil {
		return nil
	}
	bound := p.maxAuditLag() + p.skew()
	if age := now.Sub(e.Time()); age > bound {
		return &VerifyError{Step: StepAuditLag, Err: &AuditLagError{Epoch: e.Record.Epoch, Time: e.Time(), Age: age, Bound: bound}}
	}
	return nil
}

// checkFreshness is steps 2.5a and 2.5.
//
// SPEC(design.md 12.2 step 2.5)
func checkFreshness(p *Params, t *Trusted, e *Epoch, now time.Time) error {
	if err := checkAuditLag(p, e, now); err != nil {
		return err
	}
	bound := p.maxAge() + p.skew()
	ts := e.Time()
	switch {
	case ts.After(now.Add(p.skew())):
		return fail(StepFreshness, ErrStale, nil, "epoch %d is dated %v, after now + skew", e.Record.Epoch, ts.UTC())
	case now.Sub(ts) > bound:
		return fail(StepFreshness, ErrStale, nil, "epoch %d is dated %v, older than %v", e.Record.Epoch, ts.UTC(), bound)
	case !e.QuorumTime.IsZero() && now.Sub(e.QuorumTime) > bound:
		return fail(StepFreshness, ErrStale, nil, "the witness quorum last cosigned at %v, older than %v", e.QuorumTime.UTC(), bound)
	case e.QuorumTime.IsZero() && !p.InsecureNoWitnesses:
		return fail(StepFreshness, ErrStale, nil, "no witness quorum time")
	case t != nil && e.Record.Epoch < t.Epoch.Epoch:
		return fail(StepFreshness, ErrStale, nil, "epoch %d is older than the verified epoch %d", e.Record.Epoch, t.Epoch.Epoch)
	}
	return nil
}

// SPEC(design.md 12.2 step 2.3)
func inconsistency(t *Trusted, e *Epoch, cons [][]byte, reason string) *InconsistencyError {
	var pr [][]byte
	for _, h := range cons {
		pr = append(pr, bytes.Clone(h))
	}
	return &InconsistencyError{
		Trusted:     bytes.Clone(t.Checkpoint),
		New:         bytes.Clone(e.Checkpoint),
		TrustedSize: t.Size,
		NewSize:     e.Size,
		Proof:       pr,
		Reason:      reason,
	}
}
