package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/keytrans/kt/internal/keyfile"
	"github.com/keytrans/kt/vrf"
)

// Key file formats. Each file holds one line of text.
const (
	recoveryPrivatePrefix = "kt-recovery-private:"
	recoveryPublicPrefix  = "kt-recovery-public:"
	tokenKeyPrefix        = "kt-enroll-token-key:"
	tokenKeySize          = 32
)

var b64 = base64.StdEncoding.Strict()

// loadVRFKey loads, or creates, the VRF private key.
func loadVRFKey(path string) (*vrf.PrivateKey, bool, error) {
	text, created, err := keyfile.LoadOrCreate(path, func() (string, error) {
		k, err := vrf.GenerateKey(nil)
		if err != nil {
			return "", err
		}
		b, err := k.MarshalText()
		return string(b), err
	})
	if err != nil {
		return nil, false, fmt.Errorf("VRF key %s: %w", path, err)
	}
	k, err := vrf.ParsePrivateKey(text)
	if err != nil {
		return nil, false, fmt.Errorf("VRF key %s: %w", path, err)
	}
	return k, created, nil
}

// loadRecoveryKey loads the recovery public key from a file holding either
// form, creating a private key file if none exists. private reports whether
// the file holds the private key.
func loadRecoveryKey(path string) (pub ed25519.PublicKey, private, created bool, err error) {
	text, created, err := keyfile.LoadOrCreate(path, func() (string, error) {
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return "", err
		}
		return recoveryPrivatePrefix + b64.EncodeToString(seed), nil
	})
	if err != nil {
		return nil, false, false, fmt.Errorf("recovery key %s: %w", path, err)
	}
	pub, private, err = parseRecoveryKey(text)
	if err != nil {
		return nil, false, false, fmt.Errorf("recovery key %s: %w", path, err)
	}
	return pub, private, created, nil
}

func parseRecoveryKey(text string) (pub ed25519.PublicKey, private bool, err error) {
	text = strings.TrimSpace(text)
	if s, ok := strings.CutPrefix(text, recoveryPrivatePrefix); ok {
		seed, err := b64.DecodeString(s)
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, false, errors.New("malformed private key")
		}
		return ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey), true, nil
	}
	if s, ok := strings.CutPrefix(text, recoveryPublicPrefix); ok {
		b, err := b64.DecodeString(s)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, false, errors.New("malformed public key")
		}
		return ed25519.PublicKey(b), false, nil
	}
	return nil, false, fmt.Errorf("want %q or %q followed by base64", recoveryPrivatePrefix, recoveryPublicPrefix)
}

// loadTokenKey loads, or creates, the HMAC key of enrollment tokens.
func loadTokenKey(path string) ([]byte, bool, error) {
	text, created, err := keyfile.LoadOrCreate(path, func() (string, error) {
		k := make([]byte, tokenKeySize)
		if _, err := rand.Read(k); err != nil {
			return "", err
		}
		return tokenKeyPrefix + b64.EncodeToString(k), nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("enrollment token key %s: %w", path, err)
	}
	s, ok := strings.CutPrefix(strings.TrimSpace(text), tokenKeyPrefix)
	k, err := b64.DecodeString(s)
	if !ok || err != nil || len(k) < tokenKeySize {
		return nil, false, fmt.Errorf("enrollment token key %s: want %q followed by the base64 of at least %d bytes", path, tokenKeyPrefix, tokenKeySize)
	}
	return k, created, nil
}
