// Package vrf is the directory's verifiable random function: RFC 9381
// ECVRF-EDWARDS25519-SHA512-ELL2, which maps a handle to its index in the
// verifiable map without revealing the handle to anyone who lacks the private
// key.
//
// # Use in the protocol
//
// The directory holds the [PrivateKey]; clients pin the [PublicKey] from the
// directory's metadata. For a handle, the directory computes
//
//	alpha = "kt/v1/handle" || 0x00 || handle     (api.VRFInput)
//	(index, proof) = Prove(alpha)
//
// where index, the map key, is the first 32 bytes of the 64-byte VRF output
// beta. A client that knows the handle runs [PublicKey.Verify] on the 80-byte
// proof and obtains the same index, so the directory cannot place a handle at
// an index of its choosing, and the log reveals only indices.
//
// # Implementation
//
// The curve arithmetic is
// [github.com/oasisprotocol/curve25519-voi/primitives/ed25519/extra/ecvrf],
// which implements the RFC 9381 (draft 11 and later) semantics. This package
// adds the protocol's conventions: fixed-size index, typed errors, public key
// validation at parse time and a text format for configuration files.
//
// # Text format
//
// Keys are written as a prefix and the standard, padded base64 encoding of
// the 32-byte RFC 8032 seed (private) or encoded point (public):
//
//	kt-vrf-private:<base64 of the 32-byte seed>
//	kt-vrf-public:<base64 of the 32-byte public key>
package vrf

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/oasisprotocol/curve25519-voi/curve"
	"github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
	"github.com/oasisprotocol/curve25519-voi/primitives/ed25519/extra/ecvrf"
)

const (
	// ProofSize is the size of a VRF proof, pi: Gamma (32) || c (16) || s (32).
	ProofSize = ecvrf.ProofSize
	// IndexSize is the size of a VRF index: the first bytes of beta.
	IndexSize = 32
	// PublicKeySize is the size of an encoded public key.
	PublicKeySize = ed25519.PublicKeySize
	// SeedSize is the size of a private key's seed.
	SeedSize = ed25519.SeedSize

	privatePrefix = "kt-vrf-private:"
	publicPrefix  = "kt-vrf-public:"
)

var (
	// ErrInvalidProof is returned by [PublicKey.Verify] for every proof that
	// does not verify: wrong length, undecodable, wrong key or wrong input.
	ErrInvalidProof = errors.New("vrf: invalid proof")
	// ErrInvalidKey is returned when a key cannot be parsed or is not a valid
	// public key (non-canonical encoding, not on the curve, small order).
	ErrInvalidKey = errors.New("vrf: invalid key")
)

var b64 = base64.StdEncoding.Strict()

// PrivateKey is a VRF private key. It is safe for concurrent use.
type PrivateKey struct {
	sk  ed25519.PrivateKey
	pub PublicKey
}

// PublicKey is a validated VRF public key. The zero value is not valid; get
// one from [PrivateKey.Public], [NewPublicKey] or [ParsePublicKey].
type PublicKey struct {
	b [PublicKeySize]byte
}

// GenerateKey returns a new private key with a seed read from r, or from
// crypto/rand if r is nil.
func GenerateKey(r io.Reader) (*PrivateKey, error) {
	if r == nil {
		r = rand.Reader
	}
	seed := make([]byte, SeedSize)
	if _, err := io.ReadFull(r, seed); err != nil {
		return nil, fmt.Errorf("vrf: reading seed: %w", err)
	}
	return NewPrivateKey(seed)
}

// NewPrivateKey returns the private key for a 32-byte RFC 8032 seed.
func NewPrivateKey(seed []byte) (*PrivateKey, error) {
	if len(seed) != SeedSize {
		return nil, fmt.Errorf("%w: seed is %d bytes, want %d", ErrInvalidKey, len(seed), SeedSize)
	}
	sk := ed25519.NewKeyFromSeed(seed)
	k := &PrivateKey{sk: sk}
	copy(k.pub.b[:], sk[SeedSize:])
	return k, nil
}

// Public returns the public key.
func (k *PrivateKey) Public() *PublicKey {
	p := k.pub
	return &p
}

// Seed returns a copy of the 32-byte seed.
func (k *PrivateKey) Seed() []byte {
	return append([]byte(nil), k.sk[:SeedSize]...)
}

// Prove evaluates the VRF on alpha and returns the index (the first 32 bytes
// of beta) and the 80-byte proof. Proofs are deterministic (RFC 9381 nonce
// generation).
//
// SPEC(design.md 4.1)
func (k *PrivateKey) Prove(alpha []byte) (index [IndexSize]byte, proof []byte) {
	proof = ecvrf.Prove(k.sk, alpha)
	beta, err := ecvrf.ProofToHash(proof)
	if err != nil {
		// A proof we just produced always decodes.
		panic("vrf: own proof does not decode: " + err.Error())
	}
	copy(index[:], beta)
	return index, proof
}

// MarshalText encodes the private key as "kt-vrf-private:<base64 seed>".
func (k *PrivateKey) MarshalText() ([]byte, error) {
	return []byte(privatePrefix + b64.EncodeToString(k.sk[:SeedSize])), nil
}

// ParsePrivateKey parses the text form written by [PrivateKey.MarshalText].
// Leading and trailing white space (such as a final newline in a key file)
// is ignored.
func ParsePrivateKey(s string) (*PrivateKey, error) {
	seed, err := decodeText(s, privatePrefix)
	if err != nil {
		return nil, err
	}
	return NewPrivateKey(seed)
}

// NewPublicKey validates and returns a 32-byte encoded public key. It rejects
// non-canonical encodings, points not on the curve and points of small order
// (RFC 9381 Section 5.4.5, ECVRF_validate_key).
//
// SPEC(design.md 4)
func NewPublicKey(b []byte) (*PublicKey, error) {
	if len(b) != PublicKeySize {
		return nil, fmt.Errorf("%w: public key is %d bytes, want %d", ErrInvalidKey, len(b), PublicKeySize)
	}
	var y curve.CompressedEdwardsY
	if _, err := y.SetBytes(b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	if !y.IsCanonicalVartime() {
		return nil, fmt.Errorf("%w: non-canonical point encoding", ErrInvalidKey)
	}
	var p curve.EdwardsPoint
	if _, err := p.SetCompressedY(&y); err != nil {
		return nil, fmt.Errorf("%w: not a curve point", ErrInvalidKey)
	}
	if p.IsSmallOrder() {
		return nil, fmt.Errorf("%w: point of small order", ErrInvalidKey)
	}
	k := &PublicKey{}
	copy(k.b[:], b)
	return k, nil
}

// ParsePublicKey parses the text form written by [PublicKey.MarshalText] and
// validates the key like [NewPublicKey]. Surrounding white space is ignored.
//
// SPEC(design.md 4.1)
func ParsePublicKey(s string) (*PublicKey, error) {
	b, err := decodeText(s, publicPrefix)
	if err != nil {
		return nil, err
	}
	return NewPublicKey(b)
}

// Bytes returns the 32-byte encoding of the public key.
func (k *PublicKey) Bytes() []byte {
	return append([]byte(nil), k.b[:]...)
}

// Equal reports whether k and o are the same key.
func (k *PublicKey) Equal(o *PublicKey) bool {
	return o != nil && k.b == o.b
}

// String returns the text form, "kt-vrf-public:<base64>".
//
// SPEC(design.md 4.1)
func (k *PublicKey) String() string {
	return publicPrefix + b64.EncodeToString(k.b[:])
}

// MarshalText encodes the public key as "kt-vrf-public:<base64>".
func (k *PublicKey) MarshalText() ([]byte, error) {
	return []byte(k.String()), nil
}

// UnmarshalText parses the text form, validating the key.
func (k *PublicKey) UnmarshalText(text []byte) error {
	p, err := ParsePublicKey(string(text))
	if err != nil {
		return err
	}
	*k = *p
	return nil
}

// Verify checks proof for alpha under k and returns the index it proves.
// Every failure, including a proof of the wrong length, is ErrInvalidProof.
//
// SPEC(design.md 4.1)
func (k *PublicKey) Verify(alpha, proof []byte) (index [IndexSize]byte, err error) {
	if len(proof) != ProofSize {
		return index, fmt.Errorf("%w: proof is %d bytes, want %d", ErrInvalidProof, len(proof), ProofSize)
	}
	ok, beta := ecvrf.Verify(k.b[:], proof, alpha)
	if !ok || len(beta) != ecvrf.OutputSize {
		return index, ErrInvalidProof
	}
	copy(index[:], beta)
	return index, nil
}

func decodeText(s, prefix string) ([]byte, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return nil, fmt.Errorf("%w: missing %q prefix", ErrInvalidKey, prefix)
	}
	b, err := b64.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("%w: bad base64: %w", ErrInvalidKey, err)
	}
	if len(b) != 32 {
		return nil, fmt.Errorf("%w: key is %d bytes, want 32", ErrInvalidKey, len(b))
	}
	// The decoder skips embedded newlines; only the canonical encoding is
	// accepted, so each key has exactly one text form.
	if b64.EncodeToString(b) != rest {
		return nil, fmt.Errorf("%w: non-canonical base64", ErrInvalidKey)
	}
	return b, nil
}

// RotationLabel starts every rotation statement (api.RotationStatement):
// the alpha of the proofs of possession in a VRF key rotation record.
const RotationLabel = "kt/v1/rotate\x00"

// ErrNotRotationStatement is returned by [PrivateKey.ProveRotation] and
// [VerifyRotationProof] for an alpha that does not start with
// [RotationLabel]: a rotation proof is never made or accepted over another
// input, such as a handle's (design.md 11.2).
var ErrNotRotationStatement = errors.New("vrf: not a rotation statement")

// ProveRotation returns k's proof of possession over a rotation statement
// (design.md 11.2): the 80-byte ECVRF proof with the statement as alpha.
// It returns ErrNotRotationStatement if statement does not start with
// [RotationLabel].
//
// SPEC(design.md 11.2)
func (k *PrivateKey) ProveRotation(statement []byte) ([]byte, error) {
	if !strings.HasPrefix(string(statement), RotationLabel) {
		return nil, ErrNotRotationStatement
	}
	_, proof := k.Prove(statement)
	return proof, nil
}

// VerifyRotationProof checks a proof of possession in a VRF key rotation
// record: pub MUST be a valid VRF public key (RFC 9381 5.4.5, as
// [NewPublicKey]; ErrInvalidKey) and proof MUST verify under it for
// statement (ErrInvalidProof), which MUST be a rotation statement
// (ErrNotRotationStatement). Its signature is api.VRFProofVerifier, the
// verifier api.VerifyRotation calls for key kind 2.
//
// SPEC(design.md 11.2): "both proofs are ECVRF proofs ... whose alpha is
// the rotation statement"; "The new public key MUST pass RFC 9381 5.4.5
// validation".
func VerifyRotationProof(pub [PublicKeySize]byte, statement, proof []byte) error {
	if !strings.HasPrefix(string(statement), RotationLabel) {
		return ErrNotRotationStatement
	}
	k, err := NewPublicKey(pub[:])
	if err != nil {
		return err
	}
	_, err = k.Verify(statement, proof)
	return err
}
