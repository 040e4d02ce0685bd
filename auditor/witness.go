package auditor

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	fmtlog "github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/witness"
)

// Witness errors. The HTTP edge ([Auditor.Handler]) maps each to the status
// C2SP tlog-witness prescribes, in one switch (witnessStatus).
var (
	// ErrMalformed: the request body is not an add-checkpoint body, or the
	// checkpoint is not a canonical checkpoint (400).
	ErrMalformed = errors.New("auditor: malformed request")
	// ErrTooLarge: the request body exceeds the limit (413).
	ErrTooLarge = errors.New("auditor: request body too large")
	// ErrBadSignature: no signature on the checkpoint verifies under the
	// log's key (403).
	ErrBadSignature = errors.New("auditor: no valid log signature")
	// ErrFrozen: the auditor holds evidence against the log and cosigns
	// nothing for it until an operator acts (403).
	ErrFrozen = errors.New("auditor: log frozen after split-view evidence")
	// ErrBadProof: the consistency proof does not verify (422).
	ErrBadProof = errors.New("auditor: consistency proof does not verify")
	// ErrViolation: the replay found a rule violation in the log below the
	// checkpoint's size; no checkpoint that contains it is cosigned, nor
	// audited (403).
	ErrViolation = errors.New("auditor: the log violates the protocol below this size")
)

// ConflictError: the old size is not the size of the latest cosigned
// checkpoint (409 with that size as text/x.tlog.size), or a checkpoint of
// the same size has another root (409, SizeKnown false).
type ConflictError struct {
	Size      uint64
	SizeKnown bool
	Reason    string
}

func (e *ConflictError) Error() string { return "auditor: conflict: " + e.Reason }

// AddCheckpoint is the add-checkpoint call of C2SP tlog-witness without
// its HTTP framing: body is the request body; it returns the cosignature
// lines. The check against the latest cosigned checkpoint and the update
// are atomic, and the update is durable before it returns.
//
// SPEC(design.md 9)
// SPEC(design.md 14)
func (a *Auditor) AddCheckpoint(ctx context.Context, body []byte) ([]byte, error) {
	if a.cfg.Cosigner == nil {
		return nil, fmt.Errorf("%w: witnessing is disabled", ErrUnknownLog)
	}
	req, err := witness.ParseAddCheckpoint(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	old, hashes, cpRaw := req.OldSize, req.Proof, req.Checkpoint
	origin, _, _ := strings.Cut(string(cpRaw), "\n")
	ls, ok := a.logs[origin]
	if !ok {
		// SPEC(tlog-witness): "If the checkpoint origin is unknown, the
		// witness MUST respond with a "404 Not Found" HTTP status code."
		return nil, fmt.Errorf("%w: %q", ErrUnknownLog, origin)
	}
	// SPEC(tlog-witness): "The witness MUST verify the checkpoint signature
	// against the public key(s) it trusts for the checkpoint origin, and it
	// MUST ignore signatures from unknown keys. ... If none of the
	// signatures verify against a trusted public key, the witness MUST
	// respond with a "403 Forbidden" HTTP status code."
	cp, err := ls.openCheckpoint(cpRaw)
	if err != nil {
		return nil, err
	}
	text := cp.Marshal()
	// SPEC(tlog-witness): "The old size MUST be equal to or lower than the
	// checkpoint size. Otherwise, the witness MUST respond with a "400 Bad
	// Request" HTTP status code."
	if old > cp.Size {
		return nil, fmt.Errorf("%w: old size %d beyond the checkpoint size %d", ErrMalformed, old, cp.Size)
	}

	// The audited view, read before taking ls.mu for the witness update:
	// a fork against it is evidence whatever the witness state.
	ls.mu.Lock()
	frozen, latest := ls.frozen, ls.latest
	bad, firstBad := ls.violations > 0, ls.firstBad
	ls.mu.Unlock()
	if frozen != "" {
		return nil, ErrFrozen
	}
	// design.md 14: "The auditor cosigns only checkpoints up to which no
	// violation was found."
	if bad && cp.Size > firstBad {
		return nil, fmt.Errorf("%w: entry %d", ErrViolation, firstBad)
	}
	if latest != nil && cp.Size <= latest.Size {
		// A checkpoint within the audited tree must be part of it: same
		// root at the same size, or provably consistent (with the log's
		// own proof) below it. A log that witnesses a checkpoint forked
		// from what it published gets 409, and the pair is evidence.
		b, err := a.compare(ctx, ls, cpRaw, cp, latest)
		if err != nil {
			return nil, err
		}
		if b != nil {
			return nil, &ConflictError{Reason: "inconsistent with the audited checkpoint"}
		}
	}
	ls.mu.Lock()
	defer ls.mu.Unlock() // the check and the durable update are atomic
	if ls.frozen != "" {
		return nil, ErrFrozen
	}
	// SPEC(tlog-witness): "The witness MUST check that the old size matches
	// the size of the latest checkpoint it cosigned for the checkpoint's
	// origin (or zero if it never cosigned a checkpoint for that origin). If
	// it doesn't match, the witness MUST respond with a "409 Conflict" HTTP
	// status code."
	if old != ls.cosSize {
		return nil, &ConflictError{Size: ls.cosSize, SizeKnown: true, Reason: fmt.Sprintf("old size %d, latest cosigned %d", old, ls.cosSize)}
	}
	switch {
	case old == 0:
		// SPEC(tlog-witness): "The proof MUST be empty if the old size is
		// zero."
		if len(hashes) != 0 {
			return nil, fmt.Errorf("%w: proof lines with old size 0", ErrBadProof)
		}
	case old == cp.Size:
		// SPEC(tlog-witness): "If the old size matches the checkpoint size,
		// the witness MUST check that the root hashes are also identical. If
		// they don't match, the witness MUST respond with a "409 Conflict"
		// HTTP status code."
		if !bytes.Equal(ls.cosRoot, cp.Hash) {
			prev := ls.cosigned
			ls.mu.Unlock()
			_, err := a.buildEvidence(ctx, ls, cpRaw, prev, nil)
			ls.mu.Lock()
			if err != nil {
				return nil, err
			}
			return nil, &ConflictError{Reason: "same size as the latest cosigned checkpoint, other root"}
		}
		if len(hashes) != 0 {
			return nil, fmt.Errorf("%w: proof lines between equal sizes", ErrBadProof)
		}
	default:
		// SPEC(tlog-witness): "The consistency proof lines MUST encode a
		// Merkle Consistency Proof from the old size to the checkpoint size
		// according to RFC 6962, Section 2.1.2. ... If the Merkle
		// Consistency Proof doesn't verify, the witness MUST respond with a
		// "422 Unprocessable Entity" HTTP status code."
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old, cp.Size, hashes, ls.cosRoot, cp.Hash); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadProof, err)
		}
	}
	line, err := signatureLine(a.cfg.Cosigner, text)
	if err != nil {
		return nil, fmt.Errorf("auditor: cosigning: %w", err)
	}
	// SPEC(tlog-witness): "The witness MUST persist the new checkpoint
	// before responding."
	if err := a.cfg.Store.write(key(kindWitness, origin), cpRaw); err != nil {
		return nil, err
	}
	ls.cosigned, ls.cosSize, ls.cosRoot = bytes.Clone(cpRaw), cp.Size, bytes.Clone(cp.Hash)
	return line, nil
}

// signatureLine signs text with s and returns the note signature line.
//
// SPEC(tlog-witness): "The response body MUST be a sequence of one or
// more note signature lines, each starting with the — character
// (U+2014) and ending with a newline character (U+000A)."
func signatureLine(s note.Signer, text []byte) ([]byte, error) {
	sig, err := s.Sign(text)
	if err != nil {
		return nil, err
	}
	keyed := binary.BigEndian.AppendUint32(nil, s.KeyHash())
	keyed = append(keyed, sig...)
	return fmt.Appendf(nil, "— %s %s\n", s.Name(), base64.StdEncoding.EncodeToString(keyed)), nil
}

// readBody reads at most limit bytes of r's body (ErrTooLarge beyond).
func readBody(r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the body: %w", ErrMalformed, err)
	}
	if int64(len(b)) > limit {
		return nil, ErrTooLarge
	}
	return b, nil
}

// openCheckpoint verifies a checkpoint note of ls: ErrBadSignature if no
// signature verifies under the log key, ErrMalformed if it is not a
// canonical checkpoint (extension lines included: this protocol has none,
// design.md 9, and they would go unchecked).
func (ls *logState) openCheckpoint(raw []byte) (*fmtlog.Checkpoint, error) {
	n, err := note.Open(raw, note.VerifierList(ls.logVerifier()))
	if err != nil {
		if _, ok := errors.AsType[*note.UnverifiedNoteError](err); ok {
			return nil, ErrBadSignature
		}
		if _, ok := errors.AsType[*note.InvalidSignatureError](err); ok {
			return nil, ErrBadSignature
		}
		return nil, fmt.Errorf("%w: checkpoint: %w", ErrMalformed, err)
	}
	cp, _, err := log.ParseCheckpoint(raw, ls.cfg.Origin, ls.logVerifier())
	if err != nil || n.Text != string(cp.Marshal()) {
		return nil, fmt.Errorf("%w: not a canonical checkpoint", ErrMalformed)
	}
	return cp, nil
}
