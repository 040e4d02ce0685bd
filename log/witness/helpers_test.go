package witness_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/keytrans/kt/internal/testing/testonly"
	"github.com/keytrans/kt/log"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// cosigner is an independent implementation of a C2SP tlog-cosignature/v1
// Ed25519 cosigner with a chosen timestamp, to cross-check formats/note and
// to produce cosignatures with exact times.
type cosigner = testonly.Cosigner

func newCosigner(t testing.TB, name string) *cosigner { return testonly.NewCosigner(t, name) }

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
func signerKey(c *cosigner) string {
	h := sha256.New()
	h.Write([]byte(c.Name + "\n"))
	h.Write([]byte{0x01})
	h.Write(c.Pub)
	hash := binary.BigEndian.Uint32(h.Sum(nil))
	return fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", c.Name, hash, base64.StdEncoding.EncodeToString(append([]byte{0x01}, c.Priv.Seed()...)))
}

// plainSigner is a plain Ed25519 note signer with the cosigner's key.
func plainSigner(t testing.TB, c *cosigner) note.Signer {
	t.Helper()
	s, err := note.NewSigner(signerKey(c))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// cosigV1Signer is formats/note's cosignature/v1 signer with the cosigner's
// key.
func cosigV1Signer(t testing.TB, c *cosigner) note.Signer {
	t.Helper()
	s, err := fnote.NewSignerForCosignatureV1(signerKey(c))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
