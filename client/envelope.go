package client

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/keytrans/kt/api"
)

// Envelope is one HPKE ciphertext of a message for one device (design.md
// 12.3). A message to a handle is one envelope per verified device of the
// recipient and of the sender's other devices. Senders write format 2,
// signed by the sending device's message-signing key; format 1 (no
// signature) is parsed so that it can be refused with a clear error.
type Envelope struct {
	// Version is the envelope format: [EnvelopeV2] (the zero value
	// encodes as it) or [EnvelopeV1]. ParseEnvelope sets it.
	Version byte
	// Suite is the HPKE suite of the recipient device's key.
	Suite api.HPKESuite
	// Device is the recipient device's ID.
	Device [16]byte
	// From is the sender's handle (never empty in format 2), To the
	// handle the message is addressed to, and Owner the handle whose
	// verified device set holds Device: To for the recipient's devices,
	// From for the copies to the sender's own devices.
	From, To, Owner string
	// SenderDevice is the sending device's ID in From's device set,
	// Timestamp the sender's clock in Unix milliseconds, and MessageID a
	// random ID shared by every envelope of one message. Format 2 only.
	SenderDevice [16]byte
	Timestamp    uint64
	MessageID    [16]byte
	// Enc is the HPKE encapsulated key and Ciphertext the AEAD ciphertext.
	Enc, Ciphertext []byte
	// Signature is the sending device's Ed25519 signature over
	// [MessageStatement] (format 2 only).
	Signature [64]byte
}

// Envelope format versions (design.md 12.3).
const (
	// EnvelopeV1 has no sender authentication; [Client.Decrypt] refuses
	// it ([ErrUnsignedEnvelope]).
	EnvelopeV1 byte = 0x01
	// EnvelopeV2 is signed by the sender device's message-signing key.
	EnvelopeV2 byte = 0x02
)

// Envelope encoding limits.
const (
	envelopeLabel = "kt/v1/envelope"
	messageLabel  = "kt/v1/message"
	// MaxPlaintext is the largest message Encrypt accepts (16 MiB).
	MaxPlaintext = 16 << 20
	maxEnc       = 2048
)

// ErrEnvelope reports an envelope that does not parse, is not for this
// device, does not decrypt, or is refused by [Client.Decrypt]; the errors
// of the sender checks (design.md 12.3) wrap it too.
var ErrEnvelope = errors.New("client: invalid envelope")

func (e *Envelope) version() byte {
	if e.Version == 0 {
		return EnvelopeV2
	}
	return e.Version
}

// header is the envelope's encoding up to the enc field; it is the HPKE
// info (after the label), so every field is bound to the ciphertext.
//
// SPEC(design.md 12.3)
func (e *Envelope) header() []byte {
	v := e.version()
	b := []byte{v}
	b = binary.BigEndian.AppendUint16(b, e.Suite.KEM)
	b = binary.BigEndian.AppendUint16(b, e.Suite.KDF)
	b = binary.BigEndian.AppendUint16(b, e.Suite.AEAD)
	b = append(b, e.Device[:]...)
	for _, s := range []string{e.From, e.To, e.Owner} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	if v == EnvelopeV2 {
		b = append(b, e.SenderDevice[:]...)
		b = binary.BigEndian.AppendUint64(b, e.Timestamp)
		b = append(b, e.MessageID[:]...)
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

// body is the encoding without the signature: what the message statement
// covers.
func (e *Envelope) body() []byte {
	b := e.header()
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.Enc)))
	b = append(b, e.Enc...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.Ciphertext)))
	return append(b, e.Ciphertext...)
}

// MessageStatement returns the bytes a format-2 envelope's signature
// covers (design.md 4.3):
//
//	"kt/v1/message" || 0x00 || u16 len(origin) || origin
//	|| envelope bytes without the final 64-byte signature
//
// SPEC(design.md 4.3)
func MessageStatement(origin string, e *Envelope) []byte {
	b := append([]byte(messageLabel), 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(origin)))
	b = append(b, origin...)
	return append(b, e.body()...)
}

// Sign sets the signature of a format-2 envelope: key (the sending
// device's message-signing key) over [MessageStatement] for origin.
//
// SPEC(design.md 12.3)
func (e *Envelope) Sign(origin string, key ed25519.PrivateKey) {
	copy(e.Signature[:], ed25519.Sign(key, MessageStatement(origin, e)))
}

// VerifySignature checks a format-2 envelope's signature under the
// message-signing key. It fails with [ErrMessageSignature].
//
// SPEC(design.md 12.3 receiving step 5)
func (e *Envelope) VerifySignature(origin string, key [32]byte) error {
	if e.version() != EnvelopeV2 || !api.VerifyEd25519(key, MessageStatement(origin, e), e.Signature) {
		return fmt.Errorf("%w: %w: by device %x of %s", ErrEnvelope, ErrMessageSignature, e.SenderDevice, e.From)
	}
	return nil
}

func (e *Envelope) check() error {
	for _, s := range []string{e.From, e.To, e.Owner} {
		if len(s) > 0xffff {
			return fmt.Errorf("%w: handle too long", ErrEnvelope)
		}
	}
	if len(e.Enc) > maxEnc || len(e.Ciphertext) > MaxPlaintext+64 {
		return fmt.Errorf("%w: too large", ErrEnvelope)
	}
	switch v := e.version(); {
	case v == EnvelopeV2 && e.From == "":
		return fmt.Errorf("%w: format 2 needs a sender handle", ErrEnvelope)
	case v != EnvelopeV1 && v != EnvelopeV2:
		return fmt.Errorf("%w: unknown version %d", ErrEnvelope, v)
	}
	return nil
}

// MarshalBinary encodes e. Format 2:
//
//	u8 version (2) || u16 KEM || u16 KDF || u16 AEAD || device ID (16)
//	|| u16 len || from || u16 len || to || u16 len || owner
//	|| sender device ID (16) || u64 timestamp (ms) || message ID (16)
//	|| u16 len || enc || u32 len || ciphertext || signature (64)
//
// Format 1 is the same without the sender device, timestamp, message ID
// and signature.
//
// SPEC(design.md 12.3)
func (e *Envelope) MarshalBinary() ([]byte, error) {
	if err := e.check(); err != nil {
		return nil, err
	}
	b := e.body()
	if e.version() == EnvelopeV2 {
		b = append(b, e.Signature[:]...)
	}
	return b, nil
}

// ParseEnvelope decodes an envelope of either format strictly: known
// version, accepted suite, a sender handle in format 2, no trailing bytes.
// It checks no signature ([Client.Decrypt] does).
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
	v := head[0]
	if v != EnvelopeV1 && v != EnvelopeV2 {
		return bad("unknown version %d", v)
	}
	e := &Envelope{Version: v, Suite: api.HPKESuite{
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
	if v == EnvelopeV2 {
		if e.From == "" {
			return bad("format 2 without a sender handle")
		}
		f := take(16 + 8 + 16)
		if f == nil {
			return bad("truncated sender fields")
		}
		copy(e.SenderDevice[:], f)
		e.Timestamp = binary.BigEndian.Uint64(f[16:])
		copy(e.MessageID[:], f[24:])
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
	if v == EnvelopeV2 {
		sig := take(64)
		if sig == nil {
			return bad("truncated signature")
		}
		copy(e.Signature[:], sig)
	}
	if len(b) != 0 {
		return bad("%d trailing bytes", len(b))
	}
	return e, nil
}

// Seal encrypts plaintext to r (a device of a verified [LookupResult]),
// filling Enc and Ciphertext; every header field must be set first, since
// the HPKE info binds them, and a format-2 envelope is signed afterwards
// ([Envelope.Sign]). [Client.Encrypt] does all of this; Seal is for tools
// and tests that build envelopes themselves.
//
// SPEC(design.md 12.3)
func (e *Envelope) Seal(r *Recipient, plaintext []byte) error { return e.seal(r, plaintext) }

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
