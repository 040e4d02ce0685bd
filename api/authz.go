package api

import (
	"errors"
	"fmt"
	"slices"
)

// ErrCommitment reports an opening and value that do not match a change
// record's commitment.
var ErrCommitment = errors.New("api: commitment does not open to the value")

// Rule names a rule of docs/design.md that a change record or a log entry
// can break. Its values are the rule names of design.md 6.1 and 14, which
// appear in error messages, auditor reports and the JSON of ktctl; they
// never change. [*AuthError] and [*EpochError] carry one, and callers
// compare it with the constants below.
type Rule string

// SPEC(design.md 6.1): the authorization rules, which [CheckChange],
// [CheckChangeUnsigned] and [OpenCommitment] check.
const (
	RuleSignature   Rule = "R1 signature"   // the change signature does not verify
	RuleVersion     Rule = "R2 version"     // version is not previous + 1 (1 first)
	RulePrev        Rule = "R3 prev"        // prev is not the previous record's leaf hash
	RuleEnroll      Rule = "R4 enroll"      // an enrollment that R4 does not allow
	RuleKind        Rule = "R4 kind"        // an unknown authorization kind
	RuleDevice      Rule = "R5 device"      // signer is not a device authorizer
	RuleAccount     Rule = "R5 account"     // signer is not an account authorizer
	RuleRecovery    Rule = "R6 recovery"    // a recovery that R6 does not allow
	RuleAuthorizers Rule = "R7 authorizers" // authorizers are not the device set's keys
)

// SPEC(design.md 7)
// SPEC(design.md 14): the rules of the log as a whole, which a replay
// checks entry by entry: [CheckEpoch] checks the epoch rules; the caller
// parses (RuleParse) and compares checkpoints with the entries
// (RuleCheckpointRoot).
const (
	RuleParse          Rule = "parse"           // the entry does not parse
	RuleFirstEntry     Rule = "entry 0"         // entry 0 is not epoch record 0 with the empty map
	RuleEpochNumber    Rule = "epoch number"    // epoch is not previous + 1
	RuleEpochLogSize   Rule = "epoch log size"  // log size field is not the record's index
	RuleEpochTimestamp Rule = "epoch timestamp" // timestamp before the previous epoch's
	RuleMapRoot        Rule = "map root"        // map root is not the recomputed root (A6)
	RuleMapSize        Rule = "map size"        // map size is not the recomputed size
	RuleCheckpointRoot Rule = "checkpoint root" // a checkpoint's root is not the root of the entries
)

// HandleState is what the authorization rules need to know about the latest
// change record of a handle.
type HandleState struct {
	Version     uint64
	LeafHash    [32]byte // LeafHash of the latest change record
	Authorizers []Authorizer
}

// State returns the HandleState after r, whose encoding is entry.
func (r *ChangeRecord) State(entry []byte) *HandleState {
	return &HandleState{Version: r.Version, LeafHash: LeafHash(entry), Authorizers: r.Authorizers}
}

// CheckChange applies the authorization rules of docs/design.md to next, the
// proposed successor of prev (nil when the handle has no change record yet).
// recoveryKey is the directory's published recovery key. next must be
// canonical (as ParseChangeRecord returns it). The directory runs these
// checks before it logs a change and the auditor runs them again on replay;
// failures are [*AuthError] values.
//
// SPEC(design.md 6.1 R1)
// SPEC(design.md 6.1 R2)
// SPEC(design.md 6.1 R3)
// SPEC(design.md 6.1 R4)
// SPEC(design.md 6.1 R5)
// SPEC(design.md 6.1 R6)
func CheckChange(origin string, prev *HandleState, next *ChangeRecord, recoveryKey [32]byte) error {
	if err := CheckChangeUnsigned(prev, next, recoveryKey); err != nil {
		return err
	}
	// R1: last, because it is the expensive check.
	return next.VerifySignature(origin)
}

// CheckChangeUnsigned is [CheckChange] without R1, the signature check: the
// rules R2 to R6, which need only the record and the handle's state. It is
// for callers that verify signatures separately, in batches (the auditor's
// replay); they MUST also check R1 before accepting next.
//
// SPEC(design.md 6.1 R2)
// SPEC(design.md 6.1 R3)
// SPEC(design.md 6.1 R4)
// SPEC(design.md 6.1 R5)
// SPEC(design.md 6.1 R6)
// SPEC(design.md 14 step 2)
func CheckChangeUnsigned(prev *HandleState, next *ChangeRecord, recoveryKey [32]byte) error {
	// R2, R3: the record continues the handle's history exactly.
	if prev == nil {
		if next.Version != 1 {
			return &AuthError{Rule: RuleVersion, Reason: fmt.Sprintf("first change of the handle has version %d, want 1", next.Version)}
		}
		if next.Prev != ([32]byte{}) {
			return &AuthError{Rule: RulePrev, Reason: "first change of the handle has a non-zero prev"}
		}
	} else {
		if prev.Version == ^uint64(0) || next.Version != prev.Version+1 {
			return &AuthError{Rule: RuleVersion, Reason: fmt.Sprintf("version %d does not follow %d", next.Version, prev.Version)}
		}
		if next.Prev != prev.LeafHash {
			return &AuthError{Rule: RulePrev, Reason: "prev is not the leaf hash of the handle's latest change record"}
		}
	}
	// R4-R7: the signer was allowed to make this change.
	switch next.Kind {
	case AuthEnroll:
		if prev != nil && len(prev.Authorizers) != 0 {
			return &AuthError{Rule: RuleEnroll, Reason: "enrollment while the handle still has authorizers"}
		}
		d := KeyDigest(next.Signer)
		if !slices.ContainsFunc(next.Authorizers, func(a Authorizer) bool { return a.Digest == d }) {
			return &AuthError{Rule: RuleEnroll, Reason: "the enrolling key is not among the new authorizers"}
		}
	case AuthDevice, AuthAccount:
		role, rule := RoleDevice, RuleDevice
		if next.Kind == AuthAccount {
			role, rule = RoleAccount, RuleAccount
		}
		if prev == nil {
			return &AuthError{Rule: rule, Reason: "the first change of a handle must be an enrollment"}
		}
		if !HasAuthorizer(prev.Authorizers, role, next.Signer) {
			return &AuthError{Rule: rule, Reason: fmt.Sprintf("the signer is not a %s authorizer of the previous change", role)}
		}
	case AuthRecovery:
		if prev == nil {
			return &AuthError{Rule: RuleRecovery, Reason: "the first change of a handle must be an enrollment"}
		}
		if next.Signer != recoveryKey {
			return &AuthError{Rule: RuleRecovery, Reason: "the signer is not the directory's recovery key"}
		}
	default:
		return &AuthError{Rule: RuleKind, Reason: fmt.Sprintf("unknown authorization kind %d", next.Kind)}
	}
	return nil
}

// OpenCommitment checks that opening and value open r's commitment, parses
// the device set, and checks rule R7: r's authorizers are exactly those the
// device set implies. Clients run it on every lookup and monitoring answer;
// the directory runs it before logging a change.
//
// SPEC(design.md 4.4)
// SPEC(design.md 6.1 R7)
// SPEC(design.md 12.2 step 6)
func OpenCommitment(r *ChangeRecord, opening [32]byte, value []byte) (*DeviceSet, error) {
	if Commit(opening, r.Index, r.Version, value) != r.Commitment {
		return nil, ErrCommitment
	}
	s, err := ParseDeviceSet(value)
	if err != nil {
		return nil, err
	}
	if !slices.Equal(s.Authorizers(), r.Authorizers) {
		return nil, &AuthError{Rule: RuleAuthorizers, Reason: "the change record's authorizers are not the device set's signing keys"}
	}
	return s, nil
}
