package ktctl

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/witness"
	"github.com/keytrans/kt/vrf"
)

// Keys are the pinned keys every check starts from.
type Keys struct {
	// Origin is the log's checkpoint origin: the name of its key.
	Origin string
	// LogVerifier verifies the log's checkpoint signatures (required).
	LogVerifier note.Verifier
	// LogVerifierKey is LogVerifier's vkey text.
	LogVerifierKey string
	// Policy, when set, names the cosigners and says which quorum a
	// checkpoint needs.
	Policy *witness.Policy
	// RecoveryKey, when set, is the directory's recovery public key; it is
	// needed to check rule R6 on recovery changes.
	RecoveryKey *[32]byte
}

// Key files in a ktd data directory (see cmd/ktd: Config.DataDir).
const (
	LogKeyFile      = "log.key"
	VRFKeyFile      = "vrf.key"
	RecoveryKeyFile = "recovery.key"
)

const (
	recoveryPrivatePrefix = "kt-recovery-private:"
	recoveryPublicPrefix  = "kt-recovery-public:"
)

var b64 = base64.StdEncoding.Strict()

// ParseLogKey returns the log's verifier from s: a C2SP signed-note vkey
// ("origin+hash+base64"), or the path of a file holding a vkey or a note
// signer key (as ktd's log.key does; only its public half is used).
func ParseLogKey(s string) (note.Verifier, string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, "", errors.New("empty log key")
	}
	if v, err := note.NewVerifier(s); err == nil {
		return v, s, nil
	}
	b, err := os.ReadFile(s)
	if err != nil {
		if strings.Count(s, "+") >= 2 {
			return nil, "", fmt.Errorf("log key %q is neither a valid verifier key nor a readable file", s)
		}
		return nil, "", fmt.Errorf("log key: %w", err)
	}
	text := strings.TrimSpace(string(b))
	if strings.HasPrefix(text, "PRIVATE+KEY+") {
		vkey, err := log.VerifierKey(text)
		if err != nil {
			return nil, "", fmt.Errorf("log key file %s: %w", s, err)
		}
		text = vkey
	}
	v, err := note.NewVerifier(text)
	if err != nil {
		return nil, "", fmt.Errorf("log key file %s: %w", s, err)
	}
	return v, text, nil
}

// DataDirLogKey returns the log verifier of a ktd data directory.
func DataDirLogKey(dir string) (note.Verifier, string, error) {
	p := filepath.Join(dir, LogKeyFile)
	if _, err := os.Stat(p); err != nil {
		return nil, "", fmt.Errorf("data directory %s: %w", dir, err)
	}
	return ParseLogKey(p)
}

// LoadVRFKey reads a VRF private key file ("kt-vrf-private:<base64>"), as
// ktd keeps in DataDir/vrf.key.
func LoadVRFKey(path string) (*vrf.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("VRF key: %w", err)
	}
	k, err := vrf.ParsePrivateKey(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("VRF key %s: %w", path, err)
	}
	return k, nil
}

// ParseRecoveryKey returns the recovery public key from s: the base64 of
// the 32-byte key, "kt-recovery-public:<base64>", or the path of a file
// holding that or "kt-recovery-private:<base64 seed>" (ktd's recovery.key).
func ParseRecoveryKey(s string) ([32]byte, error) {
	s = strings.TrimSpace(s)
	if k, err := parseRecoveryText(s); err == nil {
		return k, nil
	}
	b, err := os.ReadFile(s)
	if err != nil {
		return [32]byte{}, fmt.Errorf("recovery key %q is neither a key nor a readable file", s)
	}
	k, err := parseRecoveryText(strings.TrimSpace(string(b)))
	if err != nil {
		return [32]byte{}, fmt.Errorf("recovery key file %s: %w", s, err)
	}
	return k, nil
}

// ErrNotRecoveryPrivateKey reports a file that does not hold
// "kt-recovery-private:<base64 seed>".
var ErrNotRecoveryPrivateKey = errors.New("does not hold a recovery private key (kt-recovery-private:<base64 seed>)")

// LoadRecoveryPrivateKey reads the recovery private key file at path
// ("kt-recovery-private:<base64 seed>", ktd's recovery.key).
func LoadRecoveryPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := parseRecoveryPrivate(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("%s %w", path, err)
	}
	return k, nil
}

func parseRecoveryPrivate(s string) (ed25519.PrivateKey, error) {
	rest, ok := strings.CutPrefix(s, recoveryPrivatePrefix)
	seed, err := b64.DecodeString(rest)
	if !ok || err != nil || len(seed) != ed25519.SeedSize {
		return nil, ErrNotRecoveryPrivateKey
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

func parseRecoveryText(s string) ([32]byte, error) {
	if strings.HasPrefix(s, recoveryPrivatePrefix) {
		k, err := parseRecoveryPrivate(s)
		if err != nil {
			return [32]byte{}, errors.New("malformed recovery private key")
		}
		return [32]byte(k.Public().(ed25519.PublicKey)), nil
	}
	rest, _ := strings.CutPrefix(s, recoveryPublicPrefix)
	b, err := b64.DecodeString(rest)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return [32]byte{}, fmt.Errorf("want %q or %q followed by base64, or the base64 of 32 bytes", recoveryPrivatePrefix, recoveryPublicPrefix)
	}
	return [32]byte(b), nil
}

// LoadPolicy reads a witness policy file with [witness.ReadPolicyFile].
func LoadPolicy(path string) (*witness.Policy, error) {
	return witness.ReadPolicyFile(path)
}
