package client

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keytrans/kt/api"
)

// DeviceKeys are one device's private keys: the Ed25519 key that signs the
// changes it authorizes, the HPKE key messages are encrypted to, and the
// Ed25519 key that signs the messages it sends (design.md 4). They never
// leave the device.
type DeviceKeys struct {
	// ID identifies the device within its account (random).
	ID [16]byte
	// Signing is the device's Ed25519 signing key.
	Signing ed25519.PrivateKey
	// Suite is the HPKE suite of HPKE.
	Suite api.HPKESuite
	// HPKE is the device's HPKE private key.
	HPKE hpke.PrivateKey
	// Created is the device's creation time, Unix seconds (informational;
	// it is published in the device set).
	Created uint64
	// Message is the device's Ed25519 message-signing key (design.md 4,
	// 12.3), distinct from Signing. Nil in keys stored before message keys
	// existed: [Client.UpgradeMessageKey] (or the next change of the set)
	// generates it.
	Message ed25519.PrivateKey
}

// ErrUnsupportedSuite reports an HPKE suite this package cannot generate
// keys for.
var ErrUnsupportedSuite = errors.New("client: unsupported HPKE suite")

// GenerateDevice returns fresh keys for a new device with a random ID.
// suite must be [api.SuiteX25519] (the default when zero) or
// [api.SuiteHybrid] (MLKEM768-X25519); now is the creation time.
func GenerateDevice(suite api.HPKESuite, now time.Time) (*DeviceKeys, error) {
	var id [16]byte
	rand.Read(id[:])
	return generateDevice(id, suite, now)
}

func generateDevice(id [16]byte, suite api.HPKESuite, now time.Time) (*DeviceKeys, error) {
	if suite == (api.HPKESuite{}) {
		suite = api.SuiteX25519
	}
	if suite != api.SuiteX25519 && suite != api.SuiteHybrid {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedSuite, suite)
	}
	kem, err := hpke.NewKEM(suite.KEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupportedSuite, err)
	}
	sk, err := kem.GenerateKey()
	if err != nil {
		return nil, err
	}
	_, sign, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	_, msg, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	created := uint64(0)
	if s := now.Unix(); s > 0 {
		created = uint64(s)
	}
	return &DeviceKeys{ID: id, Signing: sign, Suite: suite, HPKE: sk, Created: created, Message: msg}, nil
}

// rekeyed returns new keys for the same device ID and suite.
func (k *DeviceKeys) rekeyed(now time.Time) (*DeviceKeys, error) {
	return generateDevice(k.ID, k.Suite, now)
}

// SigningPublic returns the device's Ed25519 public key.
func (k *DeviceKeys) SigningPublic() [32]byte {
	return [32]byte(k.Signing.Public().(ed25519.PublicKey))
}

// MessagePublic returns the device's message-signing public key, or zero
// if it has none.
func (k *DeviceKeys) MessagePublic() [32]byte {
	if k.Message == nil {
		return [32]byte{}
	}
	return [32]byte(k.Message.Public().(ed25519.PublicKey))
}

// Device returns the device's public entry in a device set, with its
// message-signing key if it has one.
func (k *DeviceKeys) Device() api.Device {
	return api.Device{
		ID:         k.ID,
		Suite:      k.Suite,
		HPKEKey:    k.HPKE.PublicKey().Bytes(),
		SigningKey: k.SigningPublic(),
		MessageKey: k.MessagePublic(),
		Created:    k.Created,
	}
}

// deviceKeysVersion is the first byte of encoded DeviceKeys: 2 with a
// message-signing key, 1 (as written before message keys) without.
const (
	deviceKeysV1 = 0x01
	deviceKeysV2 = 0x02
)

// MarshalBinary encodes the private keys:
//
//	u8 version (1 or 2) || ID (16) || Ed25519 seed (32) || KEM, KDF, AEAD (2 each)
//	|| u64 created || u16 length || HPKE SerializePrivateKey
//	|| version 2 only: message-signing Ed25519 seed (32)
func (k *DeviceKeys) MarshalBinary() ([]byte, error) {
	sk, err := k.HPKE.Bytes()
	if err != nil {
		return nil, err
	}
	v := byte(deviceKeysV1)
	if k.Message != nil {
		v = deviceKeysV2
	}
	b := []byte{v}
	b = append(b, k.ID[:]...)
	b = append(b, k.Signing.Seed()...)
	b = binary.BigEndian.AppendUint16(b, k.Suite.KEM)
	b = binary.BigEndian.AppendUint16(b, k.Suite.KDF)
	b = binary.BigEndian.AppendUint16(b, k.Suite.AEAD)
	b = binary.BigEndian.AppendUint64(b, k.Created)
	b = binary.BigEndian.AppendUint16(b, uint16(len(sk)))
	b = append(b, sk...)
	if k.Message != nil {
		b = append(b, k.Message.Seed()...)
	}
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary wrote; errors wrap [ErrState].
func (k *DeviceKeys) UnmarshalBinary(b []byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: device keys: %s", ErrState, fmt.Sprintf(format, args...))
	}
	const head = 1 + 16 + 32 + 6 + 8 + 2
	if len(b) < head || b[0] != deviceKeysV1 && b[0] != deviceKeysV2 {
		return bad("truncated or unknown version")
	}
	var msgSeed []byte
	if b[0] == deviceKeysV2 {
		if len(b) < head+ed25519.SeedSize {
			return bad("truncated message key")
		}
		b, msgSeed = b[:len(b)-ed25519.SeedSize], b[len(b)-ed25519.SeedSize:]
	}
	var out DeviceKeys
	copy(out.ID[:], b[1:17])
	out.Signing = ed25519.NewKeyFromSeed(b[17:49])
	out.Suite = api.HPKESuite{
		KEM:  binary.BigEndian.Uint16(b[49:]),
		KDF:  binary.BigEndian.Uint16(b[51:]),
		AEAD: binary.BigEndian.Uint16(b[53:]),
	}
	out.Created = binary.BigEndian.Uint64(b[55:])
	n := int(binary.BigEndian.Uint16(b[63:]))
	if len(b)-head != n {
		return bad("HPKE key length %d, have %d bytes", n, len(b)-head)
	}
	if _, err := out.Suite.PublicKeySize(); err != nil {
		return bad("%v", err)
	}
	kem, err := hpke.NewKEM(out.Suite.KEM)
	if err != nil {
		return bad("%v", err)
	}
	if out.HPKE, err = kem.NewPrivateKey(b[head:]); err != nil {
		return bad("HPKE private key: %v", err)
	}
	if msgSeed != nil {
		out.Message = ed25519.NewKeyFromSeed(msgSeed)
		if out.MessagePublic() == out.SigningPublic() {
			return bad("the message key is the signing key")
		}
	}
	*k = out
	return nil
}

// Device descriptors carry a new device's public keys to an existing device
// of the account, which signs the change that adds it (design.md 13.1).
const (
	descriptorPrefix = "kt-device:"
	descriptorLabel  = "kt/v1/device-descriptor"
)

// ErrDescriptor reports a device descriptor that does not parse or whose
// self-signature does not verify.
var ErrDescriptor = errors.New("client: invalid device descriptor")

// Descriptor returns the device's descriptor: "kt-device:" followed by the
// unpadded base64url encoding of
//
//	device set encoding with only this device, account ID zero, no account key
//	|| Ed25519 signature by the device's signing key over
//	   "kt/v1/device-descriptor" || 0x00 || that encoding
//
// The self-signature shows that whoever made the descriptor holds the
// signing key it names; it does not say whose device it is: the owner
// decides that by adding it.
//
// SPEC(design.md 13.1)
func (k *DeviceKeys) Descriptor() string {
	set := &api.DeviceSet{Devices: []api.Device{k.Device()}}
	if k.Message != nil {
		set.Format = api.DeviceSetV2
	}
	b, err := set.MarshalBinary()
	if err != nil {
		panic(err) // a generated device always encodes
	}
	sig := ed25519.Sign(k.Signing, descriptorStatement(b))
	return descriptorPrefix + base64.RawURLEncoding.EncodeToString(append(b, sig...))
}

// SPEC(design.md 13.1)
func descriptorStatement(b []byte) []byte {
	s := append([]byte(descriptorLabel), 0)
	return append(s, b...)
}

// ParseDescriptor decodes and checks a device descriptor made by
// [DeviceKeys.Descriptor]: the encoding, the suite and key sizes, that the
// HPKE key deserializes, and the self-signature.
//
// SPEC(design.md 13.1)
func ParseDescriptor(s string) (api.Device, error) {
	bad := func(format string, args ...any) (api.Device, error) {
		return api.Device{}, fmt.Errorf("%w: %s", ErrDescriptor, fmt.Sprintf(format, args...))
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), descriptorPrefix)
	if !ok {
		return bad("missing %q prefix", descriptorPrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return bad("%v", err)
	}
	if len(raw) < ed25519.SignatureSize {
		return bad("truncated")
	}
	b, sig := raw[:len(raw)-ed25519.SignatureSize], raw[len(raw)-ed25519.SignatureSize:]
	set, err := api.ParseDeviceSet(b)
	if err != nil {
		return bad("%v", err)
	}
	if len(set.Devices) != 1 || set.Account != nil || set.AccountID != ([16]byte{}) {
		return bad("not a single device")
	}
	d := set.Devices[0]
	if !ed25519.Verify(d.SigningKey[:], descriptorStatement(b), sig) {
		return bad("self-signature does not verify")
	}
	if _, err := recipients(set); err != nil {
		return bad("%v", err)
	}
	d.HPKEKey = bytes.Clone(d.HPKEKey)
	return d, nil
}
