package client

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors of verification. Every verification failure is a
// [*VerifyError] naming the step that failed, whose error chain contains
// exactly one of these sentinels (or, for a handle argument that is not a
// handle, api.ErrInvalidHandle), so callers switch with errors.Is. None of
// them is ever a warning: a response that fails any step must not be used.
var (
	// ErrInvalidParams: the pinned directory parameters, or the caller's
	// other arguments (monitor state, own keys, pinned key), are incomplete
	// or inconsistent: a local error, not the directory's answer.
	ErrInvalidParams = errors.New("client: invalid directory parameters")
	// ErrMalformed: a part of the response does not parse, has the wrong
	// size, or is missing (design.md 12.2 step 1).
	ErrMalformed = errors.New("client: malformed response")
	// ErrCheckpointSignature: the epoch checkpoint is not signed by the
	// pinned log key for the pinned origin (12.2 step 2.1).
	ErrCheckpointSignature = errors.New("client: checkpoint not signed by the log")
	// ErrWitnessQuorum: the checkpoint's cosignatures do not satisfy the
	// witness policy, one of them does not verify, or one is dated in the
	// future (12.2 step 2.2).
	ErrWitnessQuorum = errors.New("client: witness quorum not satisfied")
	// ErrAuditQuorum: in audit mode, the checkpoint's audit statements do
	// not satisfy the audit policy, one of them does not verify, or too
	// few are dated between the epoch's timestamp − skew and now + skew
	// (12.2 step 2.2a). Errors wrapping it are [*AuditQuorumError]
	// values naming the auditors that did and did not vouch.
	ErrAuditQuorum = errors.New("client: audit quorum not satisfied")
	// ErrRollback: the checkpoint is smaller than the trusted one
	// (12.2 step 2.3).
	ErrRollback = errors.New("client: checkpoint smaller than the trusted checkpoint")
	// ErrInconsistent: the checkpoint is not an extension of the trusted
	// one. Errors wrapping it are [*InconsistencyError] values carrying the
	// evidence (12.2 step 2.3).
	ErrInconsistent = errors.New("client: checkpoint inconsistent with the trusted checkpoint")
	// ErrNotLatestEpoch: the epoch record is not the checkpoint's last entry
	// (12.2 step 2.4).
	ErrNotLatestEpoch = errors.New("client: epoch record is not the checkpoint's last entry")
	// ErrEpochInclusion: the epoch record's inclusion proof does not verify
	// (12.2 step 2.4).
	ErrEpochInclusion = errors.New("client: epoch record not included in the checkpoint")
	// ErrStale: the epoch or its witness quorum is too old, dated in the
	// future, or older than the latest epoch already verified
	// (12.2 step 2.5).
	ErrStale = errors.New("client: epoch is stale")
	// ErrAuditLag: in audit mode, the epoch is older than MaxAuditLag +
	// Skew (12.2 step 2.5a). Errors wrapping it are [*AuditLagError]
	// values.
	ErrAuditLag = errors.New("client: audited epoch is older than the audit lag bound")
	// ErrVRF: the VRF proof does not verify for the handle under the
	// pinned VRF key (12.2 step 3).
	ErrVRF = errors.New("client: VRF proof does not verify")
	// ErrMapProof: the map proof does not prove the claimed membership or
	// absence under the epoch's map root (12.2 step 4, 13 step 2).
	ErrMapProof = errors.New("client: map proof does not verify")
	// ErrRecordMismatch: the change record (or the whole answer) is for
	// another handle (12.2 step 5).
	ErrRecordMismatch = errors.New("client: change record is for another handle")
	// ErrCommitment: the opening and device set do not open the change
	// record's commitment (12.2 step 6).
	ErrCommitment = errors.New("client: commitment does not open to the device set")
	// ErrAuthorizers: the change record's authorizers are not the device
	// set's keys, rule R7 (12.2 step 6).
	ErrAuthorizers = errors.New("client: change record authorizers do not match the device set")
	// ErrStrict: strict mode is on for the contact and the device set does
	// not carry a valid signature by the pinned account key (12.2 step 7).
	ErrStrict = errors.New("client: device set not signed by the pinned account key")
	// ErrUnusableKey: a device's HPKE public key does not deserialize with
	// its suite, so no message could be encrypted to it (12.2 step 8).
	ErrUnusableKey = errors.New("client: unusable HPKE public key")
	// ErrMonitorGap: the monitored changes do not form the complete chain
	// of versions since the known one, or one is not in the log at the
	// epoch (13 step 3).
	ErrMonitorGap = errors.New("client: monitored changes do not form a complete chain")
	// ErrMoved: after a rotation of the VRF key, the history at the own
	// handle's new index does not continue the history the device knows:
	// the directory moved it somewhere else, or put another history where
	// it belongs (design.md 11.2). An alert; it wraps the failure found
	// (ErrMonitorGap, ErrMapProof) when there is one.
	ErrMoved = errors.New("client: the directory did not move this handle's history to its new index")
)

// Step names used in [VerifyError.Step].
const (
	StepParams      = "params"
	StepParse       = "parse"
	StepHandle      = "handle"
	StepCheckpoint  = "checkpoint signature"
	StepWitnesses   = "witness quorum"
	StepAudit       = "audit quorum"
	StepAuditLag    = "audit lag"
	StepConsistency = "consistency"
	StepEpochRecord = "epoch record"
	StepFreshness   = "freshness"
	StepVRF         = "vrf"
	StepMap         = "map proof"
	StepRecord      = "record"
	StepCommitment  = "commitment"
	StepStrict      = "strict mode"
	StepHPKE        = "hpke keys"
	StepChain       = "monitor chain"
	StepMove        = "re-indexing"
)

// VerifyError reports which verification step failed. Err wraps one of the
// package's sentinel errors and, where there is one, the underlying error of
// the package that did the check (api, smt, vrf, witness).
type VerifyError struct {
	// Step is one of the Step constants.
	Step string
	Err  error
}

func (e *VerifyError) Error() string {
	return "client: " + e.Step + ": " + strings.TrimPrefix(e.Err.Error(), "client: ")
}

// Unwrap returns Err.
func (e *VerifyError) Unwrap() error { return e.Err }

// fail builds a *VerifyError for step whose chain holds sentinel and, if not
// nil, cause.
func fail(step string, sentinel error, cause error, format string, args ...any) *VerifyError {
	msg := fmt.Sprintf(format, args...)
	var err error
	switch {
	case cause != nil && msg != "":
		err = fmt.Errorf("%w: %s: %w", sentinel, msg, cause)
	case cause != nil:
		err = fmt.Errorf("%w: %w", sentinel, cause)
	case msg != "":
		err = fmt.Errorf("%w: %s", sentinel, msg)
	default:
		err = sentinel
	}
	return &VerifyError{Step: step, Err: err}
}

// InconsistencyError reports that the directory could not show the new
// checkpoint to be an append-only extension of the trusted one. It carries
// the evidence: both checkpoints, signed by the log key, and the
// consistency proof as received (empty when the sizes are equal). Two
// checkpoints of equal size and different roots prove a fork on their own;
// for different sizes, a failed proof may also be a corrupted answer, so
// the client hands the two checkpoints to an auditor (design.md 15), which
// holds the entries and can produce a kt-evidence/v1 bundle;
// [InconsistencyError.Evidence] builds the bundle itself when the proof
// received, or a Log service serving the larger tree, proves the fork.
type InconsistencyError struct {
	// Trusted is the client's trusted epoch checkpoint (signed note).
	Trusted []byte
	// New is the checkpoint the directory sent (signed note).
	New []byte
	// TrustedSize and NewSize are the tree sizes of the two checkpoints.
	TrustedSize, NewSize uint64
	// Proof is the consistency proof from TrustedSize to NewSize as
	// received.
	Proof [][]byte
	// Reason says what failed, in words.
	Reason string
}

func (e *InconsistencyError) Error() string {
	return fmt.Sprintf("%v: size %d to %d: %s", ErrInconsistent, e.TrustedSize, e.NewSize, e.Reason)
}

// Unwrap returns [ErrInconsistent].
func (e *InconsistencyError) Unwrap() error { return ErrInconsistent }

// AuditQuorumError reports that an epoch checkpoint is not vouched for by
// a quorum of the audit policy (design.md 12.2 step 2.2a). It wraps
// [ErrAuditQuorum] and, when the policy check itself failed, the
// witness.PolicyError.
type AuditQuorumError struct {
	// Quorum describes what the audit policy needs.
	Quorum string
	// Vouched lists, in policy order, the auditors whose valid statement
	// was counted.
	Vouched []string
	// Missing lists, in policy order, the auditors without a counted
	// statement (none, invalid, or rejected for its date).
	Missing []string
	// Invalid lists the auditors with a statement line that does not
	// verify.
	Invalid []string
	// Rejected says, per auditor, why a valid statement was not counted
	// (dated after now + skew, or before the epoch's timestamp − skew).
	Rejected []string
	// Cause is the audit policy's error, if it failed the note.
	Cause error
}

func (e *AuditQuorumError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: quorum %s", ErrAuditQuorum, e.Quorum)
	list := func(what string, names []string) {
		if len(names) > 0 {
			fmt.Fprintf(&b, "; %s: %s", what, strings.Join(names, ", "))
		}
	}
	if len(e.Vouched) == 0 {
		b.WriteString("; vouched by no auditor")
	}
	list("vouched by", e.Vouched)
	list("not vouched by", e.Missing)
	list("invalid statement from", e.Invalid)
	for _, r := range e.Rejected {
		fmt.Fprintf(&b, "; %s", r)
	}
	return b.String()
}

// Unwrap returns [ErrAuditQuorum] and Cause.
func (e *AuditQuorumError) Unwrap() []error {
	if e.Cause == nil {
		return []error{ErrAuditQuorum}
	}
	return []error{ErrAuditQuorum, e.Cause}
}

// AuditLagError reports, in audit mode, an epoch older than the audit lag
// bound (design.md 12.2 step 2.5a). It wraps [ErrAuditLag].
type AuditLagError struct {
	// Epoch is the epoch number and Time its timestamp.
	Epoch uint64
	Time  time.Time
	// Age is the clock minus Time; Bound is MaxAuditLag + Skew.
	Age, Bound time.Duration
}

func (e *AuditLagError) Error() string {
	return fmt.Sprintf("%v: epoch %d is dated %v, %v old, more than %v", ErrAuditLag, e.Epoch, e.Time.UTC().Format(time.RFC3339), e.Age.Round(time.Millisecond), e.Bound)
}

// Unwrap returns [ErrAuditLag].
func (e *AuditLagError) Unwrap() error { return ErrAuditLag }
