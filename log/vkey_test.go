package log

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// TestEd25519VerifierKey checks the vkey against the one
// golang.org/x/mod/sumdb/note generates for the same key.
func TestEd25519VerifierKey(t *testing.T) {
	for range 4 {
		_, vkey, err := note.GenerateKey(rand.Reader, "example.com/kt")
		if err != nil {
			t.Fatal(err)
		}
		raw, err := ed25519PublicFromVkey(vkey)
		if err != nil {
			t.Fatal(err)
		}
		if got := Ed25519VerifierKey("example.com/kt", [32]byte(raw)); got != vkey {
			t.Errorf("Ed25519VerifierKey = %q, want %q", got, vkey)
		}
	}
}

func ed25519PublicFromVkey(vkey string) (ed25519.PublicKey, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.SplitN(vkey, "+", 3)[2])
	if err != nil || len(raw) != 33 {
		return nil, errors.New("malformed vkey")
	}
	return raw[1:], nil
}

func TestEd25519PrivateKey(t *testing.T) {
	skey, vkey, err := note.GenerateKey(rand.Reader, "example.com/kt")
	if err != nil {
		t.Fatal(err)
	}
	k, err := Ed25519PrivateKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	if got := Ed25519VerifierKey("example.com/kt", [32]byte(k.Public().(ed25519.PublicKey))); got != vkey {
		t.Errorf("public key of the parsed private key is %q, want %q", got, vkey)
	}
	for _, bad := range []string{"", vkey, "PRIVATE+KEY+x+00000000+AAAA"} {
		if _, err := Ed25519PrivateKey(bad); err == nil {
			t.Errorf("Ed25519PrivateKey(%q) accepted", bad)
		}
	}
}
