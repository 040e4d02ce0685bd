package api

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"slices"
)

// Limits of a device set.
const (
	// MaxDevices is the largest number of devices in a device set.
	MaxDevices = 64
	// MaxHPKEKeySize bounds an HPKE public key (the hybrid
	// MLKEM768-X25519 key has 1216 bytes).
	MaxHPKEKeySize = 2048
)

// HPKESuite is an RFC 9180 ciphersuite: KEM, KDF and AEAD identifiers from
// the IANA HPKE registry.
type HPKESuite struct {
	KEM, KDF, AEAD uint16
}

// HPKE identifiers that format version 0x01 accepts.
const (
	KEMP256HKDFSHA256   uint16 = 0x0010 // DHKEM(P-256, HKDF-SHA256)
	KEMX25519HKDFSHA256 uint16 = 0x0020 // DHKEM(X25519, HKDF-SHA256)
	KEMMLKEM768         uint16 = 0x0041 // ML-KEM-768
	KEMMLKEM768X25519   uint16 = 0x647a // MLKEM768-X25519 (hybrid)

	KDFHKDFSHA256 uint16 = 0x0001
	KDFHKDFSHA384 uint16 = 0x0002
	KDFHKDFSHA512 uint16 = 0x0003

	AEADAES128GCM        uint16 = 0x0001
	AEADAES256GCM        uint16 = 0x0002
	AEADChaCha20Poly1305 uint16 = 0x0003
)

// Suites used by default.
var (
	// SuiteX25519 is the default: DHKEM(X25519, HKDF-SHA256),
	// HKDF-SHA256, AES-128-GCM.
	SuiteX25519 = HPKESuite{KEMX25519HKDFSHA256, KDFHKDFSHA256, AEADAES128GCM}
	// SuiteHybrid is the post-quantum hybrid: MLKEM768-X25519,
	// HKDF-SHA256, AES-128-GCM.
	SuiteHybrid = HPKESuite{KEMMLKEM768X25519, KDFHKDFSHA256, AEADAES128GCM}
)

// kemKeySize maps each accepted KEM to the size of its encoded public key.
var kemKeySize = map[uint16]int{
	KEMP256HKDFSHA256:   65,
	KEMX25519HKDFSHA256: 32,
	KEMMLKEM768:         1184,
	KEMMLKEM768X25519:   1216,
}

// PublicKeySize returns the size of the suite's KEM public keys, or an error
// if format version 0x01 does not accept the suite.
//
// SPEC(design.md 4.2)
func (s HPKESuite) PublicKeySize() (int, error) {
	n, ok := kemKeySize[s.KEM]
	if !ok {
		return 0, fmt.Errorf("unsupported HPKE KEM 0x%04x", s.KEM)
	}
	if s.KDF < KDFHKDFSHA256 || s.KDF > KDFHKDFSHA512 {
		return 0, fmt.Errorf("unsupported HPKE KDF 0x%04x", s.KDF)
	}
	if s.AEAD < AEADAES128GCM || s.AEAD > AEADChaCha20Poly1305 {
		return 0, fmt.Errorf("unsupported HPKE AEAD 0x%04x", s.AEAD)
	}
	return n, nil
}

func (s HPKESuite) String() string {
	return fmt.Sprintf("KEM 0x%04x, KDF 0x%04x, AEAD 0x%04x", s.KEM, s.KDF, s.AEAD)
}

// Device set format versions (design.md 5.3).
const (
	// DeviceSetV1 is the first format: no message-signing keys. It still
	// parses and is valid; its devices cannot send authenticated messages.
	DeviceSetV1 byte = 0x01
	// DeviceSetV2 adds a message-signing key to every device. New sets are
	// written in it.
	DeviceSetV2 byte = 0x02
)

// Device is one device of an account: where to encrypt to, which key
// signs the device's changes and which key signs its messages.
type Device struct {
	// ID identifies the device within its account; chosen at random by the
	// device.
	ID [16]byte
	// Suite is the HPKE suite of HPKEKey.
	Suite HPKESuite
	// HPKEKey is the serialized HPKE public key (RFC 9180 SerializePublicKey).
	HPKEKey []byte
	// SigningKey is the device's Ed25519 public key, which signs the
	// changes this device authorizes.
	SigningKey [32]byte
	// MessageKey is the device's Ed25519 message-signing key (design.md
	// 4, 12.3), which signs the envelopes it sends; never an authorizer.
	// All zero means none: always in format 0x01, and in format 0x02 for
	// a device that has not upgraded yet.
	MessageKey [32]byte
	// Created is when the device was added, in seconds since the Unix
	// epoch. Informational.
	Created uint64
}

// AccountKey is the optional account key of a device set, with its signature
// of the set (strict mode).
type AccountKey struct {
	Key       [32]byte // Ed25519 public key
	Signature [64]byte // over AccountStatement
}

// DeviceSet is the value committed to by a change record: every device of an
// account under one handle. A device set with no devices is a tombstone.
type DeviceSet struct {
	// Format is the encoding's format version: [DeviceSetV1] or
	// [DeviceSetV2]; 0 (the zero value) means format 0x02 if any device
	// has a message key and format 0x01 otherwise, so that a set built
	// from another set's devices keeps their message keys. ParseDeviceSet
	// returns 0 for format 0x01 (a set built without a format round-trips)
	// and [DeviceSetV2] for format 0x02.
	Format byte
	// AccountID is assigned at random by the directory at registration.
	AccountID [16]byte
	// Devices in canonical order: sorted by ID, IDs unique, every key
	// (signing, message, account) unique.
	Devices []Device
	// Account is nil when the account has no account key.
	Account *AccountKey
}

const deviceFixedSize = 16 + 6 + 2 + 32 + 8

// HasMessageKey reports whether the device has a message-signing key.
//
// SPEC(design.md 5.3)
func (d Device) HasMessageKey() bool { return d.MessageKey != [32]byte{} }

// version returns the format version byte s encodes as.
func (s *DeviceSet) version() byte {
	if s.Format != 0 {
		return s.Format
	}
	for i := range s.Devices {
		if s.Devices[i].HasMessageKey() {
			return DeviceSetV2
		}
	}
	return DeviceSetV1
}

// SPEC(design.md 4.2)
// SPEC(design.md 5.3)
// SPEC(design.md 5.4)
func (s *DeviceSet) check() error {
	const what = "device set"
	if v := s.version(); v != DeviceSetV1 && v != DeviceSetV2 {
		return formatErr(what, -1, "unknown format version 0x%02x", v)
	}
	if len(s.Devices) > MaxDevices {
		return formatErr(what, -1, "%d devices, more than the limit of %d", len(s.Devices), MaxDevices)
	}
	for i := range s.Devices {
		dev := &s.Devices[i]
		n, err := dev.Suite.PublicKeySize()
		if err != nil {
			return formatErr(what, -1, "device %d: %v", i, err)
		}
		if len(dev.HPKEKey) != n {
			return formatErr(what, -1, "device %d: HPKE public key has %d bytes, want %d for KEM 0x%04x", i, len(dev.HPKEKey), n, dev.Suite.KEM)
		}
		if i > 0 && bytes.Compare(s.Devices[i-1].ID[:], dev.ID[:]) >= 0 {
			return formatErr(what, -1, "device %d is out of order or has a duplicate ID", i)
		}
		if s.version() == DeviceSetV1 && dev.HasMessageKey() {
			return formatErr(what, -1, "device %d has a message-signing key, which format 0x01 cannot encode", i)
		}
	}
	if err := s.checkKeys(); err != nil {
		return formatErr(what, -1, "%s", err)
	}
	return nil
}

// checkKeys reports a key used twice: two devices' signing or message
// keys, a device's signing key as a message key, or either as the account
// key (design.md 4: keys of different roles are distinct keys).
//
// SPEC(design.md 4)
// SPEC(design.md 5.3)
func (s *DeviceSet) checkKeys() error {
	keys := make([][32]byte, 0, 2*len(s.Devices)+1)
	for _, dev := range s.Devices {
		keys = append(keys, dev.SigningKey)
		if dev.HasMessageKey() {
			keys = append(keys, dev.MessageKey)
		}
	}
	if s.Account != nil {
		keys = append(keys, s.Account.Key)
	}
	slices.SortFunc(keys, func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
	for i := 1; i < len(keys); i++ {
		if keys[i] == keys[i-1] {
			return fmt.Errorf("key %x is used twice", keys[i][:8])
		}
	}
	return nil
}

// appendUnsigned appends the encoding up to, not including, the account
// signature, without validation.
func (s *DeviceSet) appendUnsigned(b []byte) []byte {
	v := s.version()
	b = append(b, v)
	b = append(b, s.AccountID[:]...)
	b = append(b, byte(len(s.Devices)))
	for i := range s.Devices {
		dev := &s.Devices[i]
		b = append(b, dev.ID[:]...)
		b = binary.BigEndian.AppendUint16(b, dev.Suite.KEM)
		b = binary.BigEndian.AppendUint16(b, dev.Suite.KDF)
		b = binary.BigEndian.AppendUint16(b, dev.Suite.AEAD)
		b = binary.BigEndian.AppendUint16(b, uint16(len(dev.HPKEKey)))
		b = append(b, dev.HPKEKey...)
		b = append(b, dev.SigningKey[:]...)
		if v == DeviceSetV2 {
			b = append(b, dev.MessageKey[:]...)
		}
		b = binary.BigEndian.AppendUint64(b, dev.Created)
	}
	if s.Account == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	return append(b, s.Account.Key[:]...)
}

// AppendBinary appends the canonical encoding to b.
//
// SPEC(design.md 5.3)
func (s *DeviceSet) AppendBinary(b []byte) ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	b = s.appendUnsigned(b)
	if s.Account != nil {
		b = append(b, s.Account.Signature[:]...)
	}
	return b, nil
}

// MarshalBinary returns the canonical encoding.
func (s *DeviceSet) MarshalBinary() ([]byte, error) {
	n := 1 + 16 + 1 + 1 + 96
	for i := range s.Devices {
		n += deviceFixedSize + 32 + len(s.Devices[i].HPKEKey)
	}
	return s.AppendBinary(make([]byte, 0, n))
}

// ParseDeviceSet parses an encoded device set.
//
// SPEC(design.md 4.2)
// SPEC(design.md 5.3)
// SPEC(design.md 5.4)
func ParseDeviceSet(b []byte) (*DeviceSet, error) {
	d := &decoder{what: "device set", b: b}
	v := d.u8("format version")
	if d.err == nil && v != DeviceSetV1 && v != DeviceSetV2 {
		d.off--
		d.fail("unknown format version 0x%02x", v)
	}
	s := &DeviceSet{}
	if v == DeviceSetV2 {
		s.Format = DeviceSetV2
	}
	if id := d.take(16, "account ID"); id != nil {
		copy(s.AccountID[:], id)
	}
	n := int(d.u8("device count"))
	if d.err == nil && n > MaxDevices {
		d.off--
		d.fail("%d devices, more than the limit of %d", n, MaxDevices)
	}
	if d.err == nil && n > 0 {
		s.Devices = make([]Device, 0, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		var dev Device
		start := d.off
		if id := d.take(16, "device ID"); id != nil {
			copy(dev.ID[:], id)
		}
		if d.err == nil && i > 0 && bytes.Compare(s.Devices[i-1].ID[:], dev.ID[:]) >= 0 {
			d.off = start
			d.fail("device %d is out of order or has a duplicate ID", i)
			break
		}
		suiteOff := d.off
		dev.Suite = HPKESuite{KEM: d.u16("HPKE KEM"), KDF: d.u16("HPKE KDF"), AEAD: d.u16("HPKE AEAD")}
		if d.err != nil {
			break
		}
		want, err := dev.Suite.PublicKeySize()
		if err != nil {
			d.off = suiteOff
			d.fail("device %d: %v", i, err)
			break
		}
		if l := int(d.u16("HPKE key length")); d.err == nil && l != want {
			d.off -= 2
			d.fail("device %d: HPKE public key has %d bytes, want %d for KEM 0x%04x", i, l, want, dev.Suite.KEM)
			break
		}
		if k := d.take(want, "HPKE public key"); k != nil {
			dev.HPKEKey = slices.Clone(k)
		}
		d.array32(&dev.SigningKey, "signing key")
		if v == DeviceSetV2 {
			d.array32(&dev.MessageKey, "message-signing key")
		}
		dev.Created = d.u64("creation time")
		s.Devices = append(s.Devices, dev)
	}
	presOff := d.off
	switch p := d.u8("account key presence"); {
	case d.err != nil:
	case p == 1:
		s.Account = &AccountKey{}
		d.array32(&s.Account.Key, "account key")
		if sig := d.take(64, "account signature"); sig != nil {
			copy(s.Account.Signature[:], sig)
		}
	case p != 0:
		d.off = presOff
		d.fail("account key presence byte is %d, want 0 or 1", p)
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	if err := s.checkKeys(); err != nil {
		return nil, formatErr("device set", -1, "%s", err)
	}
	return s, nil
}

// IsTombstone reports whether the set has no devices: the handle reaches
// nobody.
//
// SPEC(design.md 3)
func (s *DeviceSet) IsTombstone() bool { return len(s.Devices) == 0 }

// Authorizers returns the authorizers that a change record committing to s
// must list, in canonical order: every device signing key (RoleDevice) and
// the account key (RoleAccount) if there is one. Message-signing keys are
// never authorizers (design.md 4).
//
// SPEC(design.md 5.3)
func (s *DeviceSet) Authorizers() []Authorizer {
	as := make([]Authorizer, 0, len(s.Devices)+1)
	for _, dev := range s.Devices {
		as = append(as, Authorizer{Role: RoleDevice, Digest: KeyDigest(dev.SigningKey)})
	}
	if s.Account != nil {
		as = append(as, Authorizer{Role: RoleAccount, Digest: KeyDigest(s.Account.Key)})
	}
	if len(as) == 0 {
		return nil
	}
	SortAuthorizers(as)
	return as
}

// AccountStatement returns the bytes that the account key signs in strict
// mode:
//
//	"kt/v1/device-set" || 0x00 || uint16 len(origin) || origin ||
//	index || uint64 version || device set encoding without the signature
//
// Binding the handle's VRF index and the version means a signed set cannot be
// replayed under another handle or as a later version (for example by the
// recovery path, to bring back a removed device). The statement encodes s as
// it is; s.Account must be non-nil.
//
// SPEC(design.md 4.3)
func AccountStatement(origin string, index [32]byte, version uint64, s *DeviceSet) []byte {
	b := appendLabel(nil, deviceSetLabel)
	b = appendOrigin(b, origin)
	b = append(b, index[:]...)
	b = binary.BigEndian.AppendUint64(b, version)
	return s.appendUnsigned(b)
}

// SignAccount sets s.Account to key's public key and its signature of
// AccountStatement(origin, index, version, s).
//
// SPEC(design.md 4.3)
func (s *DeviceSet) SignAccount(origin string, index [32]byte, version uint64, key ed25519.PrivateKey) {
	s.Account = &AccountKey{}
	copy(s.Account.Key[:], key.Public().(ed25519.PublicKey))
	copy(s.Account.Signature[:], ed25519.Sign(key, AccountStatement(origin, index, version, s)))
}

// VerifyAccount checks the account signature of s for the handle with the
// given VRF index at the given version. It fails if s has no account key.
//
// SPEC(design.md 4.3)
func (s *DeviceSet) VerifyAccount(origin string, index [32]byte, version uint64) error {
	if s.Account == nil {
		return fmt.Errorf("%w: the device set has no account key", ErrBadSignature)
	}
	if !VerifyEd25519(s.Account.Key, AccountStatement(origin, index, version, s), s.Account.Signature) {
		return fmt.Errorf("%w: account signature of the device set", ErrBadSignature)
	}
	return nil
}
