package log

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
)

// ed25519PublicFromSignerKey decodes the key part of a note signer key
// (base64 of the algorithm byte 0x01 followed by the 32-byte seed) and returns
// the public key.
func ed25519PublicFromSignerKey(b64 string) (ed25519.PublicKey, error) {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return nil, errors.New("malformed Ed25519 note signer key")
	}
	return ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey), nil
}
