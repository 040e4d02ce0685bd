package witness_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/keytrans/kt/log"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// cosigner is an independent implementation of a C2SP tlog-cosignature/v1
// Ed25519 cosigner with a chosen timestamp, to cross-check formats/note and
// to produce cosignatures with exact times.
type cosigner struct {
	name string
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
}

func newCosigner(t testing.TB, name string) *cosigner {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &cosigner{name: name, priv: priv, pub: pub}
}

// keyHash is SHA-256(name || "\n" || 0x04 || pub)[:4].
func (c *cosigner) keyHash() uint32 {
	h := sha256.New()
	h.Write([]byte(c.name + "\n"))
	h.Write([]byte{0x04})
	h.Write(c.pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// vkey is the type 0x04 verifier key.
func (c *cosigner) vkey() string {
	return fmt.Sprintf("%s+%08x+%s", c.name, c.keyHash(), base64.StdEncoding.EncodeToString(append([]byte{0x04}, c.pub...)))
}

// sign returns the cosignature line for the note text at time ts.
func (c *cosigner) sign(text string, ts uint64) string {
	msg := fmt.Sprintf("cosignature/v1\ntime %d\n%s", ts, text)
	sig := binary.BigEndian.AppendUint32(nil, c.keyHash())
	sig = binary.BigEndian.AppendUint64(sig, ts)
	sig = append(sig, ed25519.Sign(c.priv, []byte(msg))...)
	return fmt.Sprintf("— %s %s\n", c.name, base64.StdEncoding.EncodeToString(sig))
}

// testLog is a log key and origin.
type testLog struct {
	origin string
	signer note.Signer
	vkey   string
}

func newTestLog(t testing.TB, origin string) *testLog {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return &testLog{origin: origin, signer: s, vkey: vkey}
}

func (l *testLog) checkpoint(t testing.TB, size uint64, root []byte) []byte {
	t.Helper()
	cp, err := log.SignCheckpoint(l.signer, l.origin, size, root)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// noteText returns the text of a signed note (up to the blank line).
func noteText(signed []byte) string {
	i := strings.LastIndex(string(signed), "\n\n")
	return string(signed[:i+1])
}

func hash32(b byte) []byte {
	h := sha256.Sum256([]byte{b})
	return h[:]
}

// signerKey encodes the cosigner's key as a plain Ed25519 note signer key
// (type 0x01): "PRIVATE+KEY+name+hash+base64(0x01 || seed)".
func (c *cosigner) signerKey() string {
	h := sha256.New()
	h.Write([]byte(c.name + "\n"))
	h.Write([]byte{0x01})
	h.Write(c.pub)
	hash := binary.BigEndian.Uint32(h.Sum(nil))
	return fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", c.name, hash, base64.StdEncoding.EncodeToString(append([]byte{0x01}, c.priv.Seed()...)))
}

// plainSigner is a plain Ed25519 note signer with the cosigner's key.
func plainSigner(t testing.TB, c *cosigner) note.Signer {
	t.Helper()
	s, err := note.NewSigner(c.signerKey())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// cosigV1Signer is formats/note's cosignature/v1 signer with the cosigner's
// key.
func cosigV1Signer(t testing.TB, c *cosigner) note.Signer {
	t.Helper()
	s, err := fnote.NewSignerForCosignatureV1(c.signerKey())
	if err != nil {
		t.Fatal(err)
	}
	return s
}
