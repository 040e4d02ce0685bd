package witness

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// Signature sizes of the cosignature/v1 signature types, after the
// timestamp.
const (
	ed25519SignatureSize = 64   // type 0x04
	mldsa44SignatureSize = 2420 // type 0x06 (FIPS 204 ML-DSA-44)
)

// ErrMalformedCosignature is wrapped by every error of [ParseCosignature].
var ErrMalformedCosignature = errors.New("witness: malformed cosignature/v1 signature")

// ParseCosignature decodes a cosignature/v1 note signature line: the
// base64 of the 4-byte key hash followed by a timestamped_signature. It
// returns the timestamp and the timestamped_signature (timestamp and
// signature), which is what the witness's [note.Verifier] checks. It does
// not verify the signature.
//
// SPEC(tlog-cosignature): "The signature MUST be a timestamped_signature
// structure": a big-endian u64 timestamp, which "MUST NOT exceed 2^63 - 1",
// followed by the signature, 64 bytes for Ed25519 (type 0x04) and 2420 for
// ML-DSA-44 (type 0x06). The key hash on the line MUST be s.Hash.
//
// Errors wrap [ErrMalformedCosignature].
//
// SPEC(design.md 9)
func ParseCosignature(s note.Signature) (time.Time, []byte, error) {
	raw, err := base64.StdEncoding.DecodeString(s.Base64)
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("%w: %w", ErrMalformedCosignature, err)
	}
	if len(raw) < 4 {
		return time.Time{}, nil, fmt.Errorf("%w: %d bytes, no key hash", ErrMalformedCosignature, len(raw))
	}
	if h := binary.BigEndian.Uint32(raw); h != s.Hash {
		return time.Time{}, nil, fmt.Errorf("%w: key hash %08x on a line for key hash %08x", ErrMalformedCosignature, h, s.Hash)
	}
	sig := raw[4:]
	ts, _, err := parseTimestampedSignature(sig)
	if err != nil {
		return time.Time{}, nil, err
	}
	if ts > math.MaxInt64 {
		return time.Time{}, nil, fmt.Errorf("%w: timestamp %d exceeds 2^63 - 1", ErrMalformedCosignature, ts)
	}
	return time.Unix(int64(ts), 0), sig, nil
}

// parseTimestampedSignature splits a cosignature/v1 timestamped_signature
// into its big-endian u64 timestamp and the signature, which must have the
// size of one of the cosignature/v1 signature types. It does not bound the
// timestamp (see [ParseCosignature]).
func parseTimestampedSignature(b []byte) (uint64, []byte, error) {
	if len(b) < 8 {
		return 0, nil, fmt.Errorf("%w: %d bytes, no timestamp", ErrMalformedCosignature, len(b))
	}
	switch n := len(b) - 8; n {
	case ed25519SignatureSize, mldsa44SignatureSize:
	default:
		return 0, nil, fmt.Errorf("%w: signature of %d bytes, want %d (Ed25519) or %d (ML-DSA-44)", ErrMalformedCosignature, n, ed25519SignatureSize, mldsa44SignatureSize)
	}
	return binary.BigEndian.Uint64(b), b[8:], nil
}
