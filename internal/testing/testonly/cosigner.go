// Package testonly holds helpers shared by tests in several packages. It is
// imported only from _test.go files and test tooling (internal/testing).
package testonly

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"testing"
)

// Cosigner is a C2SP tlog-cosignature/v1 witness key, implemented here from
// the specification rather than with transparency-dev/formats, so that tests
// of our cosignature verification do not check it against the library it
// calls.
type Cosigner struct {
	Name string
	Priv ed25519.PrivateKey
	Pub  ed25519.PublicKey
}

// NewCosigner returns a cosigner with a fresh key.
func NewCosigner(t testing.TB, name string) *Cosigner {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &Cosigner{Name: name, Priv: priv, Pub: pub}
}

// KeyHash is SHA-256(name || "\n" || 0x04 || pub)[:4].
//
// SPEC(tlog-cosignature): the key ID is the first four bytes of the SHA-256
// hash of the key name, a newline, the signature type 0x04 and the public key.
func (c *Cosigner) KeyHash() uint32 {
	h := sha256.New()
	h.Write([]byte(c.Name + "\n"))
	h.Write([]byte{0x04})
	h.Write(c.Pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// VKey is the C2SP signed-note verifier key of type 0x04.
func (c *Cosigner) VKey() string {
	return fmt.Sprintf("%s+%08x+%s", c.Name, c.KeyHash(), base64.StdEncoding.EncodeToString(append([]byte{0x04}, c.Pub...)))
}

// Sign returns the note signature line cosigning the note text at unix
// time ts.
//
// SPEC(tlog-cosignature): the signed message is "cosignature/v1\ntime
// <ts>\n" followed by the checkpoint text; the signature is the key ID, the
// 8-byte big-endian timestamp and the Ed25519 signature.
func (c *Cosigner) Sign(text string, ts uint64) string {
	msg := fmt.Sprintf("cosignature/v1\ntime %d\n%s", ts, text)
	sig := binary.BigEndian.AppendUint32(nil, c.KeyHash())
	sig = binary.BigEndian.AppendUint64(sig, ts)
	sig = append(sig, ed25519.Sign(c.Priv, []byte(msg))...)
	return fmt.Sprintf("— %s %s\n", c.Name, base64.StdEncoding.EncodeToString(sig))
}
