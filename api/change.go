package api

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// AuthKind says how a change was authorized.
type AuthKind uint8

const (
	// AuthEnroll: the first change of a handle, or the first after a
	// change that left no authorizers. Signed by a key it lists as an
	// authorizer (self-signed); the directory checks the account
	// credential out of band.
	AuthEnroll AuthKind = 1
	// AuthDevice: signed by a device key listed in the previous record's
	// authorizers.
	AuthDevice AuthKind = 2
	// AuthAccount: signed by the account key listed in the previous
	// record's authorizers.
	AuthAccount AuthKind = 3
	// AuthRecovery: signed by the directory's published recovery key,
	// without the owner. Monitors always alert on it.
	AuthRecovery AuthKind = 4
)

func (k AuthKind) String() string {
	switch k {
	case AuthEnroll:
		return "enroll"
	case AuthDevice:
		return "device"
	case AuthAccount:
		return "account"
	case AuthRecovery:
		return "recovery"
	default:
		return "unknown"
	}
}

// Role says what kind of key an [Authorizer] is.
type Role uint8

const (
	// RoleDevice: a device's Ed25519 signing key.
	RoleDevice Role = 1
	// RoleAccount: the account key.
	RoleAccount Role = 2
)

func (r Role) String() string {
	switch r {
	case RoleDevice:
		return "device"
	case RoleAccount:
		return "account"
	default:
		return "unknown"
	}
}

// Authorizer names a key allowed to authorize the next change of a handle, by
// its digest: the log shows who may sign without showing the key until it
// signs.
type Authorizer struct {
	Role   Role
	Digest [32]byte // KeyDigest of the Ed25519 public key
}

// KeyDigest returns SHA-256 of a 32-byte Ed25519 public key, as authorizers
// name keys.
//
// SPEC(design.md 5.1)
func KeyDigest(pub [32]byte) [32]byte { return sha256.Sum256(pub[:]) }

func compareAuthorizers(a, b Authorizer) int {
	if a.Role != b.Role {
		return int(a.Role) - int(b.Role)
	}
	return bytes.Compare(a.Digest[:], b.Digest[:])
}

// SortAuthorizers sorts authorizers into canonical order: by role, then by
// digest.
//
// SPEC(design.md 5.1)
func SortAuthorizers(as []Authorizer) { slices.SortFunc(as, compareAuthorizers) }

// Limits of a change record.
const (
	// MaxAuthorizers is MaxDevices device keys plus one account key.
	MaxAuthorizers = MaxDevices + 1
	// changeFixedSize is the size of a change record without authorizers.
	changeFixedSize = 2 + 32 + 8 + 32 + 32 + 1 + 1 + 32 + 64
	// ChangeRecordMaxSize is the size of a change record with
	// MaxAuthorizers authorizers.
	ChangeRecordMaxSize = changeFixedSize + MaxAuthorizers*33
)

// ChangeRecord is the log entry for one change of one handle's device set.
type ChangeRecord struct {
	// Index is the handle's VRF index: the first 32 bytes of the VRF
	// output for VRFInput(handle).
	Index [32]byte
	// Version is 1 for the first change of the handle, then +1 per change.
	Version uint64
	// Commitment is Commit(opening, Index, Version, device set encoding).
	Commitment [32]byte
	// Prev is LeafHash of the previous change record of this handle, or
	// zero for version 1.
	Prev [32]byte
	// Kind says how this change was authorized.
	Kind AuthKind
	// Authorizers lists the keys allowed to authorize the next change:
	// canonical order (SortAuthorizers), no duplicates, at most one
	// account key, at most MaxAuthorizers.
	Authorizers []Authorizer
	// Signer is the Ed25519 public key that signed the change statement.
	Signer [32]byte
	// Signature is the Ed25519 signature of ChangeStatement(origin, r).
	Signature [64]byte
}

// Type returns [TypeChange].
func (*ChangeRecord) Type() EntryType { return TypeChange }
func (*ChangeRecord) isEntry()        {}

// check reports why r has no canonical encoding.
//
// SPEC(design.md 5.1)
// SPEC(design.md 5.4)
func (r *ChangeRecord) check() error {
	const what = "change record"
	if r.Version == 0 {
		return formatErr(what, -1, "version 0 (versions start at 1)")
	}
	if r.Kind < AuthEnroll || r.Kind > AuthRecovery {
		return formatErr(what, -1, "unknown authorization kind %d", r.Kind)
	}
	if len(r.Authorizers) > MaxAuthorizers {
		return formatErr(what, -1, "%d authorizers, more than the limit of %d", len(r.Authorizers), MaxAuthorizers)
	}
	accounts := 0
	for i, a := range r.Authorizers {
		if a.Role != RoleDevice && a.Role != RoleAccount {
			return formatErr(what, -1, "authorizer %d has unknown role %d", i, a.Role)
		}
		if a.Role == RoleAccount {
			accounts++
		}
		if i > 0 && compareAuthorizers(r.Authorizers[i-1], a) >= 0 {
			return formatErr(what, -1, "authorizer %d is out of order or duplicate", i)
		}
	}
	if accounts > 1 {
		return formatErr(what, -1, "%d account-key authorizers, at most 1", accounts)
	}
	return nil
}

// appendSigned appends the signed part of the record (everything before
// Signer) without validation.
func (r *ChangeRecord) appendSigned(b []byte) []byte {
	b = append(b, FormatVersion, byte(TypeChange))
	b = append(b, r.Index[:]...)
	b = binary.BigEndian.AppendUint64(b, r.Version)
	b = append(b, r.Commitment[:]...)
	b = append(b, r.Prev[:]...)
	b = append(b, byte(r.Kind), byte(len(r.Authorizers)))
	for _, a := range r.Authorizers {
		b = append(b, byte(a.Role))
		b = append(b, a.Digest[:]...)
	}
	return b
}

// AppendBinary appends the canonical encoding to b.
//
// SPEC(design.md 5.1)
func (r *ChangeRecord) AppendBinary(b []byte) ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	b = r.appendSigned(b)
	b = append(b, r.Signer[:]...)
	return append(b, r.Signature[:]...), nil
}

// MarshalBinary returns the canonical encoding.
func (r *ChangeRecord) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(make([]byte, 0, changeFixedSize+33*len(r.Authorizers)))
}

// ParseChangeRecord parses an encoded change record.
//
// SPEC(design.md 5.1)
// SPEC(design.md 5.4)
func ParseChangeRecord(b []byte) (*ChangeRecord, error) {
	d := &decoder{what: "change record", b: b}
	parseHeader(d, TypeChange)
	r := &ChangeRecord{}
	d.array32(&r.Index, "VRF index")
	off := d.off
	r.Version = d.u64("version")
	if d.err == nil && r.Version == 0 {
		d.off = off
		d.fail("version 0 (versions start at 1)")
	}
	d.array32(&r.Commitment, "commitment")
	d.array32(&r.Prev, "prev")
	r.Kind = AuthKind(d.u8("authorization kind"))
	if d.err == nil && (r.Kind < AuthEnroll || r.Kind > AuthRecovery) {
		d.off--
		d.fail("unknown authorization kind %d", r.Kind)
	}
	n := int(d.u8("authorizer count"))
	if d.err == nil && n > MaxAuthorizers {
		d.off--
		d.fail("%d authorizers, more than the limit of %d", n, MaxAuthorizers)
	}
	if d.err == nil && n > 0 {
		r.Authorizers = make([]Authorizer, 0, n)
	}
	accounts := 0
	for i := 0; i < n && d.err == nil; i++ {
		start := d.off
		a := Authorizer{Role: Role(d.u8("authorizer role"))}
		d.array32(&a.Digest, "authorizer digest")
		if d.err != nil {
			break
		}
		switch a.Role {
		case RoleDevice:
		case RoleAccount:
			accounts++
		default:
			d.off = start
			d.fail("authorizer %d has unknown role %d", i, a.Role)
		}
		if d.err == nil && accounts > 1 {
			d.off = start
			d.fail("more than one account-key authorizer")
		}
		if d.err == nil && i > 0 && compareAuthorizers(r.Authorizers[i-1], a) >= 0 {
			d.off = start
			d.fail("authorizer %d is out of order or duplicate", i)
		}
		r.Authorizers = append(r.Authorizers, a)
	}
	if s := d.take(32, "signer"); s != nil {
		copy(r.Signer[:], s)
	}
	if s := d.take(64, "signature"); s != nil {
		copy(r.Signature[:], s)
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return r, nil
}

// Labels that domain-separate what is signed and hashed.
const (
	changeLabel    = "kt/v1/change"
	deviceSetLabel = "kt/v1/device-set"
	commitLabel    = "kt/v1/commit"
	handleLabel    = "kt/v1/handle"
)

// ChangeStatement returns the bytes that the signer of r signs:
//
//	"kt/v1/change" || 0x00 || uint16 len(origin) || origin || record bytes
//
// where the record bytes are r's encoding up to, not including, Signer and
// Signature. origin is the log's checkpoint origin, so a statement signed
// for one directory cannot be replayed into another. The statement encodes
// r as it is; only canonical records (MarshalBinary succeeds) are valid.
//
// SPEC(design.md 4.3)
func ChangeStatement(origin string, r *ChangeRecord) []byte {
	b := make([]byte, 0, len(changeLabel)+1+2+len(origin)+changeFixedSize+33*len(r.Authorizers))
	b = appendLabel(b, changeLabel)
	b = appendOrigin(b, origin)
	return r.appendSigned(b)
}

// Sign sets Signer to key's public key and Signature to key's signature of
// ChangeStatement(origin, r). Call it last, after every other field is set.
//
// SPEC(design.md 4.3)
func (r *ChangeRecord) Sign(origin string, key ed25519.PrivateKey) {
	copy(r.Signer[:], key.Public().(ed25519.PublicKey))
	copy(r.Signature[:], ed25519.Sign(key, ChangeStatement(origin, r)))
}

// VerifySignature checks Signature against Signer over
// ChangeStatement(origin, r), by the rules of crypto/ed25519 (see
// [VerifyEd25519]). It does not check that Signer was allowed to
// sign; see [CheckChange].
//
// SPEC(design.md 6.1 R1)
func (r *ChangeRecord) VerifySignature(origin string) error {
	if !VerifyEd25519(r.Signer, ChangeStatement(origin, r), r.Signature) {
		return &AuthError{Rule: RuleSignature, Reason: "the signature does not verify under the signer key", Err: ErrBadSignature}
	}
	return nil
}

// HasAuthorizer reports whether as lists the key with the given role.
func HasAuthorizer(as []Authorizer, role Role, key [32]byte) bool {
	want := Authorizer{Role: role, Digest: KeyDigest(key)}
	return slices.Contains(as, want)
}
