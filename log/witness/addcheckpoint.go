package witness

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
)

// MaxProofLines is the most consistency proof lines an add-checkpoint
// request may carry.
//
// SPEC(tlog-witness): "The client MUST NOT send more than 63 consistency
// proof lines."
const MaxProofLines = 63

// hashSize is the size of an RFC 6962 (SHA-256) hash.
const hashSize = 32

// ErrMalformedRequest reports an add-checkpoint request body that is not
// in the form C2SP tlog-witness prescribes; a witness answers it with 400
// Bad Request. [ParseAddCheckpoint] and [AddCheckpointRequest.Marshal]
// wrap it with the reason.
var ErrMalformedRequest = errors.New("malformed add-checkpoint request")

// AddCheckpointRequest is the body of a C2SP tlog-witness add-checkpoint
// request.
//
// SPEC(tlog-witness): "The request body MUST be a sequence of an old size
// line, zero or more consistency proof lines, and an empty line, followed by
// a checkpoint. Each line MUST terminate in a newline character (U+000A)."
//
// The codec checks the form only. What the witness checks against its
// state (the old size against the latest cosigned size, "The proof MUST be
// empty if the old size is zero", the proof itself, the checkpoint's
// signatures) is left to the witness, since those failures have their own
// status codes (409, 422, 403).
type AddCheckpointRequest struct {
	// OldSize is the size of the latest checkpoint the client believes the
	// witness cosigned, 0 if none.
	OldSize uint64
	// Proof is the RFC 6962 consistency proof from OldSize to the
	// checkpoint's size: at most MaxProofLines hashes of 32 bytes. Parsing
	// returns nil for an empty proof.
	Proof [][]byte
	// Checkpoint is the signed checkpoint note, verbatim (not empty).
	Checkpoint []byte
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformedRequest, fmt.Sprintf(format, args...))
}

// ParseAddCheckpoint parses an add-checkpoint request body strictly: the
// body is accepted only in its one canonical encoding, so that
// Marshal(ParseAddCheckpoint(b)) == b. Errors wrap [ErrMalformedRequest].
//
// The checkpoint is returned verbatim and only checked to be non-empty; the
// witness opens it as a signed note.
//
// SPEC(design.md 9)
func ParseAddCheckpoint(body []byte) (*AddCheckpointRequest, error) {
	line, rest, ok := bytes.Cut(body, []byte("\n"))
	if !ok {
		return nil, malformed("no old size line")
	}
	// SPEC(tlog-witness): "The old size line MUST consist of the string old,
	// a single space (0x20), and the tree size of the previous checkpoint
	// encoded as an ASCII decimal with no leading zeroes (unless the size is
	// zero, in which case the encoding MUST be 0)."
	num, ok := bytes.CutPrefix(line, []byte("old "))
	if !ok || !canonicalDecimal(num) {
		return nil, malformed("malformed old size line %s", snippet(line))
	}
	old, err := strconv.ParseUint(string(num), 10, 64)
	if err != nil {
		return nil, malformed("old size %s out of range", snippet(num))
	}
	r := &AddCheckpointRequest{OldSize: old}
	for {
		line, rest, ok = bytes.Cut(rest, []byte("\n"))
		if !ok {
			return nil, malformed("no empty line after the proof")
		}
		if len(line) == 0 {
			break
		}
		// SPEC(tlog-witness): "The client MUST NOT send more than 63
		// consistency proof lines."
		if len(r.Proof) == MaxProofLines {
			return nil, malformed("more than %d proof lines", MaxProofLines)
		}
		// SPEC(tlog-witness): "Each consistency proof line MUST encode a
		// single hash in base64." Standard base64 (RFC 4648 section 4),
		// canonical: Go's decoder skips '\r' and '\n' and a non-strict one
		// ignores non-zero padding bits, so the line must be exactly the
		// encoding of the hash it decodes to.
		h, err := base64.StdEncoding.Strict().DecodeString(string(line))
		if err != nil || len(h) != hashSize || base64.StdEncoding.EncodeToString(h) != string(line) {
			return nil, malformed("proof line %d %s is not a base64 %d-byte hash", len(r.Proof)+1, snippet(line), hashSize)
		}
		r.Proof = append(r.Proof, h)
	}
	// SPEC(tlog-witness): "... and an empty line, followed by a checkpoint."
	if len(rest) == 0 {
		return nil, malformed("no checkpoint")
	}
	r.Checkpoint = rest
	return r, nil
}

// Marshal encodes the request body. It fails, with an error wrapping
// [ErrMalformedRequest], on a request [ParseAddCheckpoint] would reject:
// more than MaxProofLines hashes, a hash that is not 32 bytes, or an empty
// checkpoint.
//
// SPEC(design.md 9)
func (r *AddCheckpointRequest) Marshal() ([]byte, error) {
	// SPEC(tlog-witness): "The client MUST NOT send more than 63
	// consistency proof lines."
	if len(r.Proof) > MaxProofLines {
		return nil, malformed("%d proof hashes, more than %d", len(r.Proof), MaxProofLines)
	}
	if len(r.Checkpoint) == 0 {
		return nil, malformed("no checkpoint")
	}
	b := make([]byte, 0, 24+len(r.Proof)*(base64.StdEncoding.EncodedLen(hashSize)+1)+1+len(r.Checkpoint))
	// SPEC(tlog-witness): "The old size line MUST consist of the string old,
	// a single space (0x20), and the tree size of the previous checkpoint
	// encoded as an ASCII decimal with no leading zeroes".
	b = append(b, "old "...)
	b = strconv.AppendUint(b, r.OldSize, 10)
	b = append(b, '\n')
	for i, h := range r.Proof {
		if len(h) != hashSize {
			return nil, malformed("proof hash %d has %d bytes, want %d", i+1, len(h), hashSize)
		}
		// SPEC(tlog-witness): "Each consistency proof line MUST encode a
		// single hash in base64."
		b = base64.StdEncoding.AppendEncode(b, h)
		b = append(b, '\n')
	}
	b = append(b, '\n')
	return append(b, r.Checkpoint...), nil
}

// canonicalDecimal reports whether s is a decimal without sign or leading
// zeroes (except "0" itself) that may fit a uint64.
func canonicalDecimal(s []byte) bool {
	if len(s) == 0 || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
