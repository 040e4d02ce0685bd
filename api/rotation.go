package api

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
)

// TypeRotation marks a [RotationRecord].
const TypeRotation EntryType = 0x03

// KeyKind says which of the directory's keys a [RotationRecord] rotates.
type KeyKind uint8

const (
	// KeyLog is the log signing key: the Ed25519 signed-note key whose
	// name is the origin.
	KeyLog KeyKind = 1
	// KeyVRF is the ECVRF-EDWARDS25519-SHA512-ELL2 key (design.md 4.1).
	KeyVRF KeyKind = 2
	// KeyRecovery is the Ed25519 recovery key of rule R6 (design.md 6.1).
	KeyRecovery KeyKind = 3
)

func (k KeyKind) String() string {
	switch k {
	case KeyLog:
		return "log"
	case KeyVRF:
		return "vrf"
	case KeyRecovery:
		return "recovery"
	default:
		return fmt.Sprintf("unknown key kind %d", uint8(k))
	}
}

// ProofSize returns the size of each of the two proofs of a rotation of
// this kind: 64 (an Ed25519 signature) for KeyLog and KeyRecovery, 80 (an
// ECVRF proof) for KeyVRF, and 0 for an unknown kind.
//
// SPEC(design.md 5.1)
func (k KeyKind) ProofSize() int {
	switch k {
	case KeyLog, KeyRecovery:
		return ed25519.SignatureSize
	case KeyVRF:
		return 80
	default:
		return 0
	}
}

// rotationSignedSize is the size of the part of a rotation record that the
// rotation statement covers: everything before the proofs.
const rotationSignedSize = 2 + 1 + 8 + 32 + 32

// RotationRecordSize returns the size of an encoded rotation record of
// kind k, or 0 for an unknown kind.
func RotationRecordSize(k KeyKind) int {
	if s := k.ProofSize(); s != 0 {
		return rotationSignedSize + 2*s
	}
	return 0
}

// RotationRecord is a log entry that replaces one of the directory's keys:
// from its position in the log on, NewKey is the key of kind Kind
// (design.md 11.1). OldProof and NewProof are proofs over
// [RotationStatement] by the old and the new key, so a rotation needs both
// the key being retired and the key taking over.
type RotationRecord struct {
	Kind KeyKind
	// Sequence is 1 for the first rotation of this kind, then +1.
	Sequence uint64
	OldKey   [32]byte
	NewKey   [32]byte
	// OldProof and NewProof are Kind.ProofSize() bytes each: Ed25519
	// signatures for KeyLog and KeyRecovery, ECVRF proofs (with the
	// statement as alpha) for KeyVRF.
	OldProof []byte
	NewProof []byte
}

// Type returns [TypeRotation].
func (*RotationRecord) Type() EntryType { return TypeRotation }
func (*RotationRecord) isEntry()        {}

// check returns a *FormatError if r has no canonical encoding.
func (r *RotationRecord) check() error {
	s := r.Kind.ProofSize()
	switch {
	case s == 0:
		return formatErr("rotation record", -1, "unknown key kind %d", uint8(r.Kind))
	case r.Sequence == 0:
		return formatErr("rotation record", -1, "sequence 0")
	case r.OldKey == r.NewKey:
		return formatErr("rotation record", -1, "the old and the new key are the same key")
	case len(r.OldProof) != s:
		return formatErr("rotation record", -1, "old key's proof is %d bytes, want %d for a %s key", len(r.OldProof), s, r.Kind)
	case len(r.NewProof) != s:
		return formatErr("rotation record", -1, "new key's proof is %d bytes, want %d for a %s key", len(r.NewProof), s, r.Kind)
	}
	return nil
}

// appendSigned appends the bytes [0, 75) that the rotation statement covers.
func (r *RotationRecord) appendSigned(b []byte) []byte {
	b = append(b, FormatVersion, byte(TypeRotation), byte(r.Kind))
	b = binary.BigEndian.AppendUint64(b, r.Sequence)
	b = append(b, r.OldKey[:]...)
	return append(b, r.NewKey[:]...)
}

// AppendBinary appends the canonical encoding, or returns a *FormatError
// if r has none (unknown kind, sequence 0, equal keys, proofs of the
// wrong size).
//
// SPEC(design.md 5.1)
func (r *RotationRecord) AppendBinary(b []byte) ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	b = r.appendSigned(b)
	b = append(b, r.OldProof...)
	return append(b, r.NewProof...), nil
}

// MarshalBinary returns the canonical encoding; see AppendBinary.
func (r *RotationRecord) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(make([]byte, 0, RotationRecordSize(r.Kind)))
}

// ParseRotationRecord parses an encoded rotation record. It checks the
// format only (design.md 5.1); [VerifyRotation] checks the proofs and
// [RotationChain.Next] the sequence and the old key.
//
// SPEC(design.md 5.1)
func ParseRotationRecord(b []byte) (*RotationRecord, error) {
	d := &decoder{what: "rotation record", b: b}
	parseHeader(d, TypeRotation)
	r := &RotationRecord{Kind: KeyKind(d.u8("key kind"))}
	s := r.Kind.ProofSize()
	if d.err == nil && s == 0 {
		d.off--
		d.fail("unknown key kind %d", uint8(r.Kind))
	}
	if r.Sequence = d.u64("sequence"); d.err == nil && r.Sequence == 0 {
		d.off -= 8
		d.fail("sequence 0")
	}
	d.array32(&r.OldKey, "old key")
	d.array32(&r.NewKey, "new key")
	if d.err == nil && r.OldKey == r.NewKey {
		d.off -= 32
		d.fail("the new key is the old key")
	}
	r.OldProof = clone(d.take(s, "old key's proof"))
	r.NewProof = clone(d.take(s, "new key's proof"))
	if err := d.end(); err != nil {
		return nil, err
	}
	return r, nil
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

const rotationLabel = "kt/v1/rotate"

// RotationStatement returns the bytes both proofs of r are over:
//
//	"kt/v1/rotate" || 0x00 || u16(origin) || origin || r's bytes [0, 75)
//
// For KeyVRF it is the alpha of both ECVRF proofs.
//
// SPEC(design.md 4.3)
func RotationStatement(origin string, r *RotationRecord) []byte {
	b := make([]byte, 0, len(rotationLabel)+1+2+len(origin)+rotationSignedSize)
	b = appendLabel(b, rotationLabel)
	b = appendOrigin(b, origin)
	return r.appendSigned(b)
}

// SignRotation sets r.OldKey, r.NewKey, r.OldProof and r.NewProof for a
// rotation of an Ed25519 key (KeyLog or KeyRecovery) from oldKey to
// newKey; r.Kind and r.Sequence must be set. It returns a *FormatError
// for another kind.
func (r *RotationRecord) SignRotation(origin string, oldKey, newKey ed25519.PrivateKey) error {
	if r.Kind != KeyLog && r.Kind != KeyRecovery {
		return formatErr("rotation record", -1, "SignRotation signs Ed25519 keys, not a %s key", r.Kind)
	}
	copy(r.OldKey[:], oldKey.Public().(ed25519.PublicKey))
	copy(r.NewKey[:], newKey.Public().(ed25519.PublicKey))
	msg := RotationStatement(origin, r)
	r.OldProof = ed25519.Sign(oldKey, msg)
	r.NewProof = ed25519.Sign(newKey, msg)
	return nil
}

// ErrBadRotation is wrapped by every [*RotationError]: a rotation record
// whose proofs do not verify, or that does not continue the chain of
// rotations of its kind.
var ErrBadRotation = errors.New("api: invalid key rotation")

// Rotation rules (design.md 11.1), named in a [*RotationError].
const (
	RuleRotationOldProof Rule = "rotation old proof" // the old key's proof does not verify
	RuleRotationNewProof Rule = "rotation new proof" // the new key's proof does not verify
	RuleRotationSequence Rule = "rotation sequence"  // sequence is not the previous + 1
	RuleRotationOldKey   Rule = "rotation old key"   // old key is not the current key of its kind
	RuleRotationKind     Rule = "rotation kind"      // a kind the verifier cannot check
)

// RotationError reports a rotation record that breaks a rule of design.md
// 11.1. Err is ErrBadSignature when a proof failed to verify, or the
// error of the VRF verifier.
type RotationError struct {
	Kind     KeyKind
	Sequence uint64
	Rule     Rule
	Reason   string
	Err      error
}

func (e *RotationError) Error() string {
	s := fmt.Sprintf("api: invalid rotation %d of the %s key (%s): %s", e.Sequence, e.Kind, e.Rule, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns [ErrBadRotation] and Err if set.
func (e *RotationError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrBadRotation, e.Err}
	}
	return []error{ErrBadRotation}
}

// VRFProofVerifier verifies an ECVRF proof (RFC 9381, suite 0x04) of alpha
// under the 32-byte public key pub; the vrf package provides one. It
// returns an error if the key is invalid or the proof does not verify.
type VRFProofVerifier func(pub [32]byte, alpha, proof []byte) error

// VerifyRotation checks both proofs of r over RotationStatement(origin, r):
// Ed25519 signatures (by the rules of [VerifyEd25519]) for KeyLog and
// KeyRecovery, verifyVRF for KeyVRF (nil: a KeyVRF record fails with
// RuleRotationKind). It does not check the sequence or that OldKey is
// current; see [RotationChain.Next].
//
// SPEC(design.md 11.1): "Both proofs verify over the rotation statement."
func VerifyRotation(origin string, r *RotationRecord, verifyVRF VRFProofVerifier) error {
	if err := r.check(); err != nil {
		return err
	}
	fail := func(rule Rule, err error, format string, args ...any) error {
		return &RotationError{Kind: r.Kind, Sequence: r.Sequence, Rule: rule, Reason: fmt.Sprintf(format, args...), Err: err}
	}
	msg := RotationStatement(origin, r)
	switch r.Kind {
	case KeyLog, KeyRecovery:
		if !VerifyEd25519(r.OldKey, msg, [64]byte(r.OldProof)) {
			return fail(RuleRotationOldProof, ErrBadSignature, "the old key's signature does not verify")
		}
		if !VerifyEd25519(r.NewKey, msg, [64]byte(r.NewProof)) {
			return fail(RuleRotationNewProof, ErrBadSignature, "the new key's signature does not verify")
		}
	case KeyVRF:
		if verifyVRF == nil {
			return fail(RuleRotationKind, nil, "no VRF verifier given")
		}
		if err := verifyVRF(r.OldKey, msg, r.OldProof); err != nil {
			return fail(RuleRotationOldProof, err, "the old key's ECVRF proof does not verify")
		}
		if err := verifyVRF(r.NewKey, msg, r.NewProof); err != nil {
			return fail(RuleRotationNewProof, err, "the new key's ECVRF proof does not verify")
		}
	}
	return nil
}

// RotationChain is the current key of one kind and the sequence number of
// the rotation that made it current (0: the key of the directory
// parameters, never rotated). Clients, the auditor and ktctl keep one per
// kind and advance it with Next, record by record, in log order.
type RotationChain struct {
	Kind     KeyKind
	Key      [32]byte
	Sequence uint64
}

// Next checks that r continues the chain (same kind, sequence = c.Sequence
// + 1, OldKey = c.Key) and that its proofs verify (VerifyRotation), and
// returns the chain after r. On error c is unchanged and the error is a
// *RotationError or a *FormatError.
//
// SPEC(design.md 11.1): "sequence = previous + 1 (1 first), old key = the
// current key of the kind, both proofs verify."
func (c RotationChain) Next(origin string, r *RotationRecord, verifyVRF VRFProofVerifier) (RotationChain, error) {
	fail := func(rule Rule, format string, args ...any) (RotationChain, error) {
		return c, &RotationError{Kind: r.Kind, Sequence: r.Sequence, Rule: rule, Reason: fmt.Sprintf(format, args...)}
	}
	if r.Kind != c.Kind {
		return fail(RuleRotationKind, "a rotation of the %s key given to the chain of the %s key", r.Kind, c.Kind)
	}
	if c.Sequence == ^uint64(0) || r.Sequence != c.Sequence+1 {
		return fail(RuleRotationSequence, "sequence %d does not follow %d", r.Sequence, c.Sequence)
	}
	if r.OldKey != c.Key {
		return fail(RuleRotationOldKey, "the old key is not the current %s key", c.Kind)
	}
	if err := VerifyRotation(origin, r, verifyVRF); err != nil {
		return c, err
	}
	return RotationChain{Kind: c.Kind, Key: r.NewKey, Sequence: r.Sequence}, nil
}
