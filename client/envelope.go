package client

import (
	"bytes"
	"crypto/hpke"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/keytrans/kt/api"
)

// Envelope is one HPKE ciphertext of a message for one device (design.md
// 12.3). A message to a handle is one envelope per verified device of the
// recipient and of the sender's other devices.
type Envelope struct {
	// Suite is the HPKE suite of the recipient device's key.
	Suite api.HPKESuite
	// Device is the recipient device's ID.
	Device [16]byte
	// From is the sender's handle ("" if the sender has none), To the
	// handle the message is addressed to, and Owner the handle whose
	// verified device set holds Device: To for the recipient's devices,
	// From for the copies to the sender's own devices.
	From, To, Owner string
	// Enc is the HPKE encapsulated key and Ciphertext the AEAD ciphertext.
	Enc, Ciphertext []byte
}

// Envelope encoding limits.
const (
	envelopeVersion = 0x01
	envelopeLabel   = "kt/v1/envelope"
	// MaxPlaintext is the largest message Encrypt accepts (16 MiB).
	MaxPlaintext = 16 << 20
	maxEnc       = 2048
)

// ErrEnvelope reports an envelope that does not parse, is not for this
// device, or does not decrypt.
var ErrEnvelope = errors.New("client: invalid envelope")

// header is the envelope's encoding up to the enc field; it is the HPKE
// info (after the label), so every field is bound to the ciphertext.
//
// SPEC(design.md 12.3)
func (e *Envelope) header() []byte {
	b := []byte{envelopeVersion}
	b = binary.BigEndian.AppendUint16(b, e.Suite.KEM)
	b = binary.BigEndian.AppendUint16(b, e.Suite.KDF)
	b = binary.BigEndian.AppendUint16(b, e.Suite.AEAD)
	b = append(b, e.Device[:]...)
	for _, s := range []string{e.From, e.To, e.Owner} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	return b
}

// info is the HPKE info string: "kt/v1/envelope" || 0x00 || header.
//
// SPEC(design.md 12.3)
func (e *Envelope) info() []byte {
	b := append([]byte(envelopeLabel), 0)
	return append(b, e.header()...)
}

// MarshalBinary encodes e:
//
//	u8 version (1) || u16 KEM || u16 KDF || u16 AEAD || device ID (16)
//	|| u16 len || from || u16 len || to || u16 len || owner
//	|| u16 len || enc || u32 len || ciphertext
//
// SPEC(design.md 12.3)
func (e *Envelope) MarshalBinary() ([]byte, error) {
	for _, s := range []string{e.From, e.To, e.Owner} {
		if len(s) > 0xffff {
			return nil, fmt.Errorf("%w: handle too long", ErrEnvelope)
		}
	}
	if len(e.Enc) > maxEnc || len(e.Ciphertext) > MaxPlaintext+64 {
		return nil, fmt.Errorf("%w: too large", ErrEnvelope)
	}
	b := e.header()
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.Enc)))
	b = append(b, e.Enc...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.Ciphertext)))
	return append(b, e.Ciphertext...), nil
}

// ParseEnvelope decodes an envelope strictly: known version, accepted
// suite, no trailing bytes.
//
// SPEC(design.md 12.3)
func ParseEnvelope(b []byte) (*Envelope, error) {
	bad := func(format string, args ...any) (*Envelope, error) {
		return nil, fmt.Errorf("%w: %s", ErrEnvelope, fmt.Sprintf(format, args...))
	}
	take := func(n int) []byte { return cutPrefix(&b, n) }
	head := take(1 + 6 + 16)
	if head == nil {
		return bad("truncated")
	}
	if head[0] != envelopeVersion {
		return bad("unknown version %d", head[0])
	}
	e := &Envelope{Suite: api.HPKESuite{
		KEM:  binary.BigEndian.Uint16(head[1:]),
		KDF:  binary.BigEndian.Uint16(head[3:]),
		AEAD: binary.BigEndian.Uint16(head[5:]),
	}}
	if _, err := e.Suite.PublicKeySize(); err != nil {
		return bad("%v", err)
	}
	copy(e.Device[:], head[7:])
	for _, dst := range []*string{&e.From, &e.To, &e.Owner} {
		l := take(2)
		if l == nil {
			return bad("truncated")
		}
		s := take(int(binary.BigEndian.Uint16(l)))
		if s == nil {
			return bad("truncated handle")
		}
		*dst = string(s)
	}
	l := take(2)
	if l == nil {
		return bad("truncated")
	}
	n := int(binary.BigEndian.Uint16(l))
	if n > maxEnc {
		return bad("enc of %d bytes", n)
	}
	if e.Enc = bytes.Clone(take(n)); e.Enc == nil && n > 0 {
		return bad("truncated enc")
	}
	l = take(4)
	if l == nil {
		return bad("truncated")
	}
	m := binary.BigEndian.Uint32(l)
	if m > MaxPlaintext+64 {
		return bad("ciphertext of %d bytes", m)
	}
	if e.Ciphertext = bytes.Clone(take(int(m))); e.Ciphertext == nil && m > 0 {
		return bad("truncated ciphertext")
	}
	if len(b) != 0 {
		return bad("%d trailing bytes", len(b))
	}
	return e, nil
}

// seal encrypts plaintext to r, filling e.Enc and e.Ciphertext.
//
// SPEC(design.md 12.3)
func (e *Envelope) seal(r *Recipient, plaintext []byte) error {
	enc, s, err := hpke.NewSender(r.PublicKey, r.KDF, r.AEAD, e.info())
	if err != nil {
		return err
	}
	ct, err := s.Seal(nil, plaintext)
	if err != nil {
		return err
	}
	e.Enc, e.Ciphertext = enc, ct
	return nil
}

// Open decrypts e with the device's keys. It fails with [ErrEnvelope] if
// the envelope is for another device or suite, or does not decrypt (a
// modified field, a wrong key, a removed device's old key).
//
// SPEC(design.md 12.3)
func (e *Envelope) Open(k *DeviceKeys) ([]byte, error) {
	if e.Device != k.ID {
		return nil, fmt.Errorf("%w: for device %x, this is device %x", ErrEnvelope, e.Device, k.ID)
	}
	if e.Suite != k.Suite {
		return nil, fmt.Errorf("%w: suite %v, this device uses %v", ErrEnvelope, e.Suite, k.Suite)
	}
	kdf, err := hpke.NewKDF(e.Suite.KDF)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEnvelope, err)
	}
	aead, err := hpke.NewAEAD(e.Suite.AEAD)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEnvelope, err)
	}
	r, err := hpke.NewRecipient(e.Enc, k.HPKE, kdf, aead, e.info())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEnvelope, err)
	}
	pt, err := r.Open(nil, e.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("%w: does not decrypt: %w", ErrEnvelope, err)
	}
	return pt, nil
}
