package witness

import (
	"bytes"
	"fmt"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
	"golang.org/x/mod/sumdb/note"
)

// voiStdLib selects curve25519-voi's verification rules that match Go's
// crypto/ed25519 exactly (cofactorless, canonical S required, small-order
// and non-canonical A accepted), so using it changes no verdict.
var voiStdLib = &voi.Options{Verify: voi.VerifyOptionsStdLib}

// ed25519CosigVerifier is a C2SP tlog-cosignature/v1 Ed25519 verifier with
// the public key decompressed and its tables precomputed once, when the
// policy is parsed: verifying a checkpoint's cosignatures is the client's
// main cost (design.md 12.2), and a pinned key is used for every epoch.
// Its verdicts are those of transparency-dev/formats'
// NewVerifierForCosignatureV1, which it replaces for type 0x04 keys.
type ed25519CosigVerifier struct {
	name string
	hash uint32
	key  *voi.ExpandedPublicKey
}

func newEd25519CosigVerifier(name string, hash uint32, key []byte) (*ed25519CosigVerifier, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("Ed25519 key of %d bytes", len(key))
	}
	k, err := voi.NewExpandedPublicKey(voi.PublicKey(key))
	if err != nil {
		return nil, err
	}
	return &ed25519CosigVerifier{name: name, hash: hash, key: k}, nil
}

func (v *ed25519CosigVerifier) Name() string    { return v.name }
func (v *ed25519CosigVerifier) KeyHash() uint32 { return v.hash }

// Verify checks a cosignature/v1 timestamped_signature over msg.
//
// SPEC(tlog-cosignature): the signed message is "cosignature/v1\ntime
// <timestamp>\n" followed by the note text, and the signature is the
// big-endian u64 timestamp followed by the Ed25519 signature.
//
// SPEC(design.md 9)
func (v *ed25519CosigVerifier) Verify(msg, sig []byte) bool {
	t, s, err := parseTimestampedSignature(sig)
	if err != nil || len(s) != voi.SignatureSize || bytes.Count(msg, []byte("\n")) < 2 {
		return false
	}
	m := fmt.Appendf(make([]byte, 0, 32+len(msg)), "cosignature/v1\ntime %d\n%s", t, msg)
	return voi.VerifyExpandedWithOptions(v.key, m, s, voiStdLib)
}

var _ note.Verifier = (*ed25519CosigVerifier)(nil)
