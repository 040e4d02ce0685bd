// Package testwitness is a small, in-memory C2SP tlog-witness server for
// tests: it verifies log signatures and consistency proofs, cosigns with
// cosignature/v1, and answers with the status codes of the specification.
// Its [Behavior] makes it misbehave on purpose (refuse, hang, sign with the
// wrong key, corrupt its cosignature, report a bogus size).
//
// It keeps its state in memory only and is not a witness to run for real;
// the auditor package provides that.
package testwitness

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	fmtlog "github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/log/witness"
)

// MaxBodyBytes bounds request bodies.
const MaxBodyBytes = 64 << 10

// Behavior makes the witness misbehave. The zero value behaves correctly.
type Behavior struct {
	// Status, when not zero, answers every request with this status and no
	// body, without looking at it.
	Status int
	// Hang blocks every request until the client gives up (its context is
	// cancelled), then answers 503.
	Hang bool
	// Delay waits this long before handling a request (or less, if the
	// client gives up first).
	Delay time.Duration
	// SignWith, when not nil, cosigns with this signer instead of the
	// witness's key (the state is still updated).
	SignWith note.Signer
	// Corrupt flips a bit of the cosignature before answering (the state is
	// still updated).
	Corrupt bool
	// ConflictSize, when not zero, answers every request with 409 Conflict
	// and this size, whatever the state.
	ConflictSize uint64
}

// Witness is an http.Handler serving POST /add-checkpoint.
type Witness struct {
	signer *fnote.Signer
	vkey   string

	mu       sync.Mutex // guards the fields below
	logs     map[string]note.Verifier
	state    map[string]treeHead
	behavior Behavior
	requests int
	statuses map[int]int
}

type treeHead struct {
	size uint64
	root []byte
}

// New returns a witness with a fresh Ed25519 key named name.
func New(name string) (*Witness, error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return nil, err
	}
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		return nil, err
	}
	// SPEC(tlog-cosignature): "Ed25519 public keys MAY be encoded as vkeys
	// with signature type 0x04".
	cvkey, err := fnote.VKeyToCosignatureV1(vkey)
	if err != nil {
		return nil, err
	}
	return &Witness{
		signer:   s,
		vkey:     cvkey,
		logs:     make(map[string]note.Verifier),
		state:    make(map[string]treeHead),
		statuses: make(map[int]int),
	}, nil
}

// VerifierKey returns the witness's cosignature/v1 verifier key (type 0x04),
// as a witness policy lists it.
func (w *Witness) VerifierKey() string { return w.vkey }

// Signer returns the witness's cosigner.
func (w *Witness) Signer() note.Signer { return w.signer }

// AddLog makes the witness accept checkpoints for origin signed by the key
// of vkey (an Ed25519 signed-note verifier key).
func (w *Witness) AddLog(origin, vkey string) error {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.logs[origin] = v
	return nil
}

// RemoveLog makes the witness forget the log of origin (its key and state).
func (w *Witness) RemoveLog(origin string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.logs, origin)
	delete(w.state, origin)
}

// SetBehavior replaces the witness's behavior.
func (w *Witness) SetBehavior(b Behavior) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.behavior = b
}

// Size returns the size of the latest checkpoint the witness cosigned for
// origin, and whether it cosigned any.
func (w *Witness) Size(origin string) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	th, ok := w.state[origin]
	return th.size, ok
}

// SetSize sets the witness's state for origin, as if it had cosigned a
// checkpoint of that size and root hash.
func (w *Witness) SetSize(origin string, size uint64, root []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.state[origin] = treeHead{size, bytes.Clone(root)}
}

// Requests returns the number of requests served so far.
func (w *Witness) Requests() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.requests
}

// Statuses returns how many responses had each HTTP status.
func (w *Witness) Statuses() map[int]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := make(map[int]int, len(w.statuses))
	for k, v := range w.statuses {
		m[k] = v
	}
	return m
}

// ServeHTTP implements the add-checkpoint call.
func (w *Witness) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w.mu.Lock()
	w.requests++
	b := w.behavior
	w.mu.Unlock()

	status, ctype, body := w.handle(r, b)
	w.mu.Lock()
	w.statuses[status]++
	w.mu.Unlock()
	if ctype != "" {
		rw.Header().Set("Content-Type", ctype)
	}
	rw.WriteHeader(status)
	rw.Write(body)
}

func (w *Witness) handle(r *http.Request, b Behavior) (int, string, []byte) {
	if r.URL.Path != "/add-checkpoint" {
		return http.StatusNotFound, "", nil
	}
	// SPEC(tlog-witness): "The request MUST be an HTTP POST."
	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, "", nil
	}
	// Read the body first: the server notices that the client went away
	// (and cancels r.Context()) only once the body has been read.
	raw, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil || len(raw) > MaxBodyBytes {
		return http.StatusBadRequest, "", nil
	}
	if b.Hang {
		<-r.Context().Done()
		return http.StatusServiceUnavailable, "", nil
	}
	if b.Delay > 0 {
		select {
		case <-time.After(b.Delay):
		case <-r.Context().Done():
			return http.StatusServiceUnavailable, "", nil
		}
	}
	if b.Status != 0 {
		return b.Status, "", nil
	}
	if b.ConflictSize != 0 {
		return http.StatusConflict, "text/x.tlog.size", fmt.Appendf(nil, "%d\n", b.ConflictSize)
	}

	req, err := witness.ParseAddCheckpoint(raw)
	if err != nil {
		return http.StatusBadRequest, "text/plain", []byte(err.Error() + "\n")
	}
	old, hashes, cpRaw := req.OldSize, req.Proof, req.Checkpoint
	origin, _, _ := strings.Cut(string(cpRaw), "\n")

	w.mu.Lock()
	defer w.mu.Unlock() // the check and the update are atomic
	v, ok := w.logs[origin]
	if !ok {
		// SPEC(tlog-witness): "If the checkpoint origin is unknown, the
		// witness MUST respond with a "404 Not Found" HTTP status code."
		return http.StatusNotFound, "", nil
	}
	// SPEC(tlog-witness): "The witness MUST verify the checkpoint signature
	// against the public key(s) it trusts for the checkpoint origin, and it
	// MUST ignore signatures from unknown keys. ... If none of the signatures
	// verify against a trusted public key, the witness MUST respond with a
	// "403 Forbidden" HTTP status code."
	n, err := note.Open(cpRaw, note.VerifierList(v))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		if errors.As(err, &unverified) || errors.As(err, &invalid) {
			return http.StatusForbidden, "", nil
		}
		return http.StatusBadRequest, "", nil
	}
	var cp fmtlog.Checkpoint
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil || cp.Origin != origin {
		return http.StatusBadRequest, "", nil
	}
	// SPEC(tlog-witness): "The old size MUST be equal to or lower than the
	// checkpoint size. Otherwise, the witness MUST respond with a "400 Bad
	// Request" HTTP status code."
	if old > cp.Size {
		return http.StatusBadRequest, "", nil
	}
	// SPEC(tlog-witness): "The witness MUST check that the old size matches
	// the size of the latest checkpoint it cosigned for the checkpoint's
	// origin (or zero if it never cosigned a checkpoint for that origin). If
	// it doesn't match, the witness MUST respond with a "409 Conflict" HTTP
	// status code. The response body MUST consist of the tree size of the
	// latest cosigned checkpoint in decimal, followed by a newline (U+000A).
	// The response MUST have a Content-Type of text/x.tlog.size."
	prev := w.state[origin]
	if old != prev.size {
		return http.StatusConflict, "text/x.tlog.size", fmt.Appendf(nil, "%d\n", prev.size)
	}
	switch {
	case old == 0:
		// SPEC(tlog-witness): "The proof MUST be empty if the old size is
		// zero."
		if len(hashes) != 0 {
			return http.StatusUnprocessableEntity, "", nil
		}
	case old == cp.Size:
		// SPEC(tlog-witness): "If the old size matches the checkpoint size,
		// the witness MUST check that the root hashes are also identical. If
		// they don't match, the witness MUST respond with a "409 Conflict"
		// HTTP status code."
		if !bytes.Equal(prev.root, cp.Hash) {
			return http.StatusConflict, "", nil
		}
		if len(hashes) != 0 {
			return http.StatusUnprocessableEntity, "", nil
		}
	default:
		// SPEC(tlog-witness): "The consistency proof lines MUST encode a
		// Merkle Consistency Proof from the old size to the checkpoint size
		// according to RFC 6962, Section 2.1.2. ... If the Merkle
		// Consistency Proof doesn't verify, the witness MUST respond with a
		// "422 Unprocessable Entity" HTTP status code."
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old, cp.Size, hashes, prev.root, cp.Hash); err != nil {
			return http.StatusUnprocessableEntity, "", nil
		}
	}

	var signer note.Signer = w.signer
	if b.SignWith != nil {
		signer = b.SignWith
	}
	sig, err := signer.Sign([]byte(n.Text))
	if err != nil {
		return http.StatusInternalServerError, "", nil
	}
	if b.Corrupt {
		sig[len(sig)-1] ^= 1
	}
	// SPEC(tlog-witness): "The witness MUST persist the new checkpoint before
	// responding."
	w.state[origin] = treeHead{cp.Size, bytes.Clone(cp.Hash)}
	// SPEC(tlog-witness): "The response body MUST be a sequence of one or
	// more note signature lines, each starting with the — character (U+2014)
	// and ending with a newline character (U+000A)."
	keyed := binary.BigEndian.AppendUint32(nil, signer.KeyHash())
	keyed = append(keyed, sig...)
	return http.StatusOK, "", fmt.Appendf(nil, "— %s %s\n", signer.Name(), base64.StdEncoding.EncodeToString(keyed))
}
