package api

import (
	"errors"
	"fmt"
	"slices"
)

// ErrCommitment reports an opening and value that do not match a change
// record's commitment.
var ErrCommitment = errors.New("api: commitment does not open to the value")

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
func CheckChangeUnsigned(prev *HandleState, next *ChangeRecord, recoveryKey [32]byte) error {
	// R2, R3: the record continues the handle's history exactly.
	if prev == nil {
		if next.Version != 1 {
			return &AuthError{Rule: "R2 version", Reason: fmt.Sprintf("first change of the handle has version %d, want 1", next.Version)}
		}
		if next.Prev != ([32]byte{}) {
			return &AuthError{Rule: "R3 prev", Reason: "first change of the handle has a non-zero prev"}
		}
	} else {
		if prev.Version == ^uint64(0) || next.Version != prev.Version+1 {
			return &AuthError{Rule: "R2 version", Reason: fmt.Sprintf("version %d does not follow %d", next.Version, prev.Version)}
		}
		if next.Prev != prev.LeafHash {
			return &AuthError{Rule: "R3 prev", Reason: "prev is not the leaf hash of the handle's latest change record"}
		}
	}
	// R4-R7: the signer was allowed to make this change.
	switch next.Kind {
	case AuthEnroll:
		if prev != nil && len(prev.Authorizers) != 0 {
			return &AuthError{Rule: "R4 enroll", Reason: "enrollment while the handle still has authorizers"}
		}
		d := KeyDigest(next.Signer)
		if !slices.ContainsFunc(next.Authorizers, func(a Authorizer) bool { return a.Digest == d }) {
			return &AuthError{Rule: "R4 enroll", Reason: "the enrolling key is not among the new authorizers"}
		}
	case AuthDevice, AuthAccount:
		role := RoleDevice
		if next.Kind == AuthAccount {
			role = RoleAccount
		}
		if prev == nil {
			return &AuthError{Rule: "R5 " + next.Kind.String(), Reason: "the first change of a handle must be an enrollment"}
		}
		if !HasAuthorizer(prev.Authorizers, role, next.Signer) {
			return &AuthError{Rule: "R5 " + next.Kind.String(), Reason: fmt.Sprintf("the signer is not a %s authorizer of the previous change", role)}
		}
	case AuthRecovery:
		if prev == nil {
			return &AuthError{Rule: "R6 recovery", Reason: "the first change of a handle must be an enrollment"}
		}
		if next.Signer != recoveryKey {
			return &AuthError{Rule: "R6 recovery", Reason: "the signer is not the directory's recovery key"}
		}
	default:
		return &AuthError{Rule: "R4 kind", Reason: fmt.Sprintf("unknown authorization kind %d", next.Kind)}
	}
	return nil
}

// OpenCommitment checks that opening and value open r's commitment, parses
// the device set, and checks rule R7: r's authorizers are exactly those the
// device set implies. Clients run it on every lookup and monitoring answer;
// the directory runs it before logging a change.
func OpenCommitment(r *ChangeRecord, opening [32]byte, value []byte) (*DeviceSet, error) {
	if Commit(opening, r.Index, r.Version, value) != r.Commitment {
		return nil, ErrCommitment
	}
	s, err := ParseDeviceSet(value)
	if err != nil {
		return nil, err
	}
	if !slices.Equal(s.Authorizers(), r.Authorizers) {
		return nil, &AuthError{Rule: "R7 authorizers", Reason: "the change record's authorizers are not the device set's signing keys"}
	}
	return s, nil
}
