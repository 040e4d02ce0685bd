package api

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Verification codes (design.md 13.5): a short code two people compare out
// of band to confirm that their clients see the same logged identities for
// each other.

// ErrVerificationCode reports a verification code, or an input to one,
// that is malformed: a code that is not 30 digits, a handle that is not
// canonical, the same handle on both sides, an unknown identity kind.
var ErrVerificationCode = errors.New("api: invalid verification code")

// ErrNoIdentity reports a device set without an identity: a tombstone.
var ErrNoIdentity = errors.New("api: the device set has no identity")

const (
	verifyLabel        = "kt/v1/verify"
	verifyDevicesLabel = "kt/v1/verify-devices"

	// IdentityAccountKey and IdentityDeviceSet are the first byte of an
	// [Identity]: an account key, or the digest of a whole device set
	// without one.
	IdentityAccountKey = 0x01
	IdentityDeviceSet  = 0x02

	// VerificationCodeGroups and VerificationCodeGroupDigits give the
	// shape of a verification code: 6 groups of 5 decimal digits.
	VerificationCodeGroups      = 6
	VerificationCodeGroupDigits = 5
	// VerificationCodeDigits is the number of digits of a code.
	VerificationCodeDigits = VerificationCodeGroups * VerificationCodeGroupDigits

	// maxCodeInput bounds the user input ParseVerificationCode reads.
	maxCodeInput = 256
)

// Identity is the identity of a handle for verification codes (design.md
// 13.5): 0x01 || account key, or 0x02 || H("kt/v1/verify-devices" || 0x00
// || device set encoding).
type Identity [33]byte

// Kind returns [IdentityAccountKey] or [IdentityDeviceSet] (0 for the zero
// value).
func (i Identity) Kind() byte { return i[0] }

// String describes i in words: "account key 1a2b…" or "device set 3c4d…"
// (the first 8 bytes, hex).
func (i Identity) String() string {
	switch i[0] {
	case IdentityAccountKey:
		return "account key " + hex.EncodeToString(i[1:9]) + "…"
	case IdentityDeviceSet:
		return "device set " + hex.EncodeToString(i[1:9]) + "…"
	}
	return "no identity"
}

// IdentityOf returns the identity of a handle's verified device set s, at
// the handle's VRF index and the set's version: its account key, whose
// signature must verify (4.3), or, without one, the digest of the whole
// set encoding, which changes with every device change. A tombstone has
// none ([ErrNoIdentity]).
//
// SPEC(design.md 13.5): "identity = 0x01 || account key if the set
// carries one; = 0x02 || H("kt/v1/verify-devices" || 0x00 || device set
// encoding) otherwise".
func IdentityOf(origin string, index [32]byte, version uint64, s *DeviceSet) (Identity, error) {
	var id Identity
	if s == nil || s.IsTombstone() {
		return id, ErrNoIdentity
	}
	if s.Account != nil {
		// SPEC(design.md 13.5): "A set that carries an account key has an
		// identity only if its account signature verifies".
		if err := s.VerifyAccount(origin, index, version); err != nil {
			return id, err
		}
		id[0] = IdentityAccountKey
		copy(id[1:], s.Account.Key[:])
		return id, nil
	}
	enc, err := s.MarshalBinary()
	if err != nil {
		return id, err
	}
	h := sha256.New()
	h.Write(appendLabel(nil, verifyDevicesLabel))
	h.Write(enc)
	id[0] = IdentityDeviceSet
	copy(id[1:], h.Sum(nil))
	return id, nil
}

// VerifyParty is one side of a verification code: a canonical handle and
// its identity.
type VerifyParty struct {
	Handle   string
	Identity Identity
}

// VerificationCodeInput returns the bytes hashed for the code of a and b
// (design.md 13.5), after checking them: both handles canonical and
// different, both identities of a known kind.
//
// SPEC(design.md 13.5)
func VerificationCodeInput(origin string, a, b VerifyParty) ([]byte, error) {
	if len(origin) == 0 || len(origin) > 0xffff {
		return nil, fmt.Errorf("%w: origin of %d bytes", ErrVerificationCode, len(origin))
	}
	for _, p := range []VerifyParty{a, b} {
		if c, err := NormalizeHandle(p.Handle); err != nil || c != p.Handle {
			return nil, fmt.Errorf("%w: handle %q is not canonical", ErrVerificationCode, p.Handle)
		}
		if k := p.Identity.Kind(); k != IdentityAccountKey && k != IdentityDeviceSet {
			return nil, fmt.Errorf("%w: identity of %s has unknown kind %d", ErrVerificationCode, p.Handle, k)
		}
	}
	// SPEC(design.md 13.5): "h1 < h2 bytewise (a handle is never
	// verified against itself)".
	switch {
	case a.Handle == b.Handle:
		return nil, fmt.Errorf("%w: %s on both sides", ErrVerificationCode, a.Handle)
	case a.Handle > b.Handle:
		a, b = b, a
	}
	buf := appendLabel(nil, verifyLabel)
	buf = appendOrigin(buf, origin)
	for _, p := range []VerifyParty{a, b} {
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(p.Handle)))
		buf = append(buf, p.Handle...)
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(p.Identity)))
		buf = append(buf, p.Identity[:]...)
	}
	return buf, nil
}

// VerificationCode returns the verification code of the two parties a and
// b under the log origin (design.md 13.5): six groups of five decimal
// digits separated by spaces, the same whichever party is a. It fails with
// [ErrVerificationCode] for inputs [VerificationCodeInput] refuses.
//
// SPEC(design.md 13.5): "group_j = uint40(d[5j : 5j+5]) mod 100000,
// j = 0 … 5, rendered as the six groups in decimal, five digits each
// (zero-padded), separated by single spaces".
func VerificationCode(origin string, a, b VerifyParty) (string, error) {
	in, err := VerificationCodeInput(origin, a, b)
	if err != nil {
		return "", err
	}
	d := sha256.Sum256(in)
	var sb strings.Builder
	for j := range VerificationCodeGroups {
		c := d[5*j : 5*j+5]
		v := uint64(c[0])<<32 | uint64(c[1])<<24 | uint64(c[2])<<16 | uint64(c[3])<<8 | uint64(c[4])
		if j > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%05d", v%100000)
	}
	return sb.String(), nil
}

// ParseVerificationCode reads a code typed by a user: spaces and hyphens
// are removed, and the rest must be exactly 30 ASCII digits. It returns
// the code in the form [VerificationCode] writes, or an error wrapping
// [ErrVerificationCode].
//
// SPEC(design.md 13.5): "Input typed back by a user is read by removing
// spaces and hyphens; it must then be exactly 30 ASCII digits".
func ParseVerificationCode(s string) (string, error) {
	if len(s) > maxCodeInput {
		return "", fmt.Errorf("%w: %d bytes of input", ErrVerificationCode, len(s))
	}
	digits := make([]byte, 0, VerificationCodeDigits)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ' ' || c == '-':
		case c >= '0' && c <= '9':
			digits = append(digits, c)
		default:
			return "", fmt.Errorf("%w: character %q at byte %d (a code is %d digits)", ErrVerificationCode, c, i, VerificationCodeDigits)
		}
	}
	if len(digits) != VerificationCodeDigits {
		return "", fmt.Errorf("%w: %d digits, want %d", ErrVerificationCode, len(digits), VerificationCodeDigits)
	}
	var sb strings.Builder
	for j := range VerificationCodeGroups {
		if j > 0 {
			sb.WriteByte(' ')
		}
		sb.Write(digits[j*VerificationCodeGroupDigits : (j+1)*VerificationCodeGroupDigits])
	}
	return sb.String(), nil
}
