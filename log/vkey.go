package log

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Ed25519VerifierKey returns the C2SP signed-note verifier key
// "name+hash+base64(0x01 || pub)" of the Ed25519 public key pub for name:
// the vkey of a log key that a rotation record names (design.md 11.1).
func Ed25519VerifierKey(name string, pub [32]byte) string {
	// key hash = SHA-256(name || "\n" || 0x01 || key)[:4]
	h := sha256.New()
	h.Write([]byte(name + "\n"))
	h.Write([]byte{0x01})
	h.Write(pub[:])
	return fmt.Sprintf("%s+%08x+%s", name, binary.BigEndian.Uint32(h.Sum(nil)[:4]), base64.StdEncoding.EncodeToString(append([]byte{0x01}, pub[:]...)))
}

// Ed25519PrivateKey returns the Ed25519 private key of a note signer key
// "PRIVATE+KEY+name+hash+base64(0x01 || seed)", as LoadOrCreateSigner
// reads it: the key that signs a log key rotation record.
func Ed25519PrivateKey(skey string) (ed25519.PrivateKey, error) {
	parts := strings.SplitN(strings.TrimSpace(skey), "+", 5)
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return nil, errors.New("malformed note signer key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return nil, errors.New("malformed Ed25519 note signer key")
	}
	return ed25519.NewKeyFromSeed(raw[1:]), nil
}
