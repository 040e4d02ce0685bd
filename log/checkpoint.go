package log

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	fmtlog "github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/internal/keyfile"
)

// SignCheckpoint produces a C2SP tlog-checkpoint signed note for a tree of
// the given size and RFC 6962 root hash, signed by signer.
//
// SPEC(tlog-checkpoint): the note text is the origin line, the decimal tree
// size, the base64 root hash, then optional extension lines; each line ends
// with a newline.
//
// SPEC(design.md 9)
func SignCheckpoint(signer note.Signer, origin string, size uint64, root []byte) ([]byte, error) {
	if len(root) != 32 {
		return nil, fmt.Errorf("checkpoint root hash has %d bytes, want 32", len(root))
	}
	text := fmtlog.Checkpoint{Origin: origin, Size: size, Hash: root}.Marshal()
	return note.Sign(&note.Note{Text: string(text)}, signer)
}

// ParseCheckpoint parses a signed checkpoint note for origin and verifies the
// log's signature. Cosignatures by unknown keys are kept in the returned note's
// UnverifiedSigs; callers check witness policies separately.
//
// SPEC(design.md 9)
func ParseCheckpoint(raw []byte, origin string, logVerifier note.Verifier) (*fmtlog.Checkpoint, *note.Note, error) {
	cp, _, n, err := fmtlog.ParseCheckpoint(raw, origin, logVerifier)
	if err != nil {
		return nil, nil, fmt.Errorf("invalid checkpoint for %q: %w", origin, err)
	}
	// SPEC(tlog-checkpoint): the size has "no leading zeroes" and the root
	// is an RFC 6962 (SHA-256) root. The formats parser checks neither.
	if len(cp.Hash) != 32 {
		return nil, nil, fmt.Errorf("invalid checkpoint for %q: root hash has %d bytes, want 32", origin, len(cp.Hash))
	}
	if !strings.HasPrefix(n.Text, string(cp.Marshal())) {
		return nil, nil, fmt.Errorf("invalid checkpoint for %q: size or root hash not in canonical form", origin)
	}
	return cp, n, nil
}

// LoadOrCreateSigner reads a note signer key ("PRIVATE+KEY+name+hash+key",
// as golang.org/x/mod/sumdb/note writes it) from path, creating the file
// with a fresh Ed25519 key named origin when it does not exist. Creation is
// atomic and never overwrites an existing key (internal/keyfile), so two
// processes starting together agree on one key, and a key is never lost
// after checkpoints were signed with it.
func LoadOrCreateSigner(path, origin string) (note.Signer, note.Verifier, error) {
	text, _, err := keyfile.LoadOrCreate(path, func() (string, error) {
		skey, _, err := note.GenerateKey(rand.Reader, origin)
		return skey, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("log key %s: %w", path, err)
	}
	skey := strings.TrimSpace(text)
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, nil, fmt.Errorf("log key in %s: %w", path, err)
	}
	if s.Name() != origin {
		return nil, nil, fmt.Errorf("log key in %s is for origin %q, but the log's origin is %q", path, s.Name(), origin)
	}
	v, err := VerifierFor(skey)
	if err != nil {
		return nil, nil, err
	}
	return s, v, nil
}

// LoadOrCreateCosignerKey reads the note signer key file at path (the
// format of ktauditor's key_file and audit_key), creating it with a fresh
// Ed25519 key named name when missing, and returns its C2SP
// tlog-cosignature/v1 verifier key (type 0x04), as witness and audit
// policies name it.
func LoadOrCreateCosignerKey(path, name string) (string, error) {
	text, _, err := keyfile.LoadOrCreate(path, func() (string, error) {
		skey, _, err := note.GenerateKey(rand.Reader, name)
		return skey, err
	})
	if err != nil {
		return "", err
	}
	vk, err := VerifierKey(text)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return fnote.VKeyToCosignatureV1(vk)
}

// VerifierFor derives the verifier of a note signer key.
func VerifierFor(skey string) (note.Verifier, error) {
	vkey, err := VerifierKey(skey)
	if err != nil {
		return nil, err
	}
	return note.NewVerifier(vkey)
}

// VerifierKey derives the public verifier key string
// ("name+hash+base64key") from a note signer key string.
func VerifierKey(skey string) (string, error) {
	// PRIVATE+KEY+name+hash+base64(0x01||seed)
	parts := strings.SplitN(strings.TrimSpace(skey), "+", 5)
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return "", errors.New("malformed note signer key")
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		return "", err
	}
	pub, err := ed25519PublicFromSignerKey(parts[4])
	if err != nil {
		return "", err
	}
	return note.NewEd25519VerifierKey(s.Name(), pub)
}
