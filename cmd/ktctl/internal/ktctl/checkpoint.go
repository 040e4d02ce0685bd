package ktctl

import (
	"context"
	"fmt"
	"slices"
	"time"

	"golang.org/x/mod/sumdb/note"

	klog "github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/witness"
)

// Cosignature statuses.
const (
	// CosigValid: the line is by a policy witness's key and verifies.
	CosigValid = "valid"
	// CosigInvalid: the line claims a policy witness's key (name and key
	// hash) but does not verify.
	CosigInvalid = "invalid"
	// CosigUnknown: no policy witness has this key (or no policy was
	// given), so the line is neither trusted nor checked.
	CosigUnknown = "unknown-key"
)

// Signature is one signature line of a checkpoint note other than the
// log's.
type Signature struct {
	// Witness is the policy's name for the key, or "" when no policy
	// witness has it.
	Witness string `json:"witness,omitempty"`
	// KeyName and KeyHash identify the key, as on the note's line.
	KeyName string `json:"key_name"`
	KeyHash string `json:"key_hash"`
	// Time is the cosignature/v1 timestamp, when the line has the
	// cosignature/v1 shape (witness.ParseCosignature; nil otherwise).
	Time *time.Time `json:"time,omitempty"`
	// Status is CosigValid, CosigInvalid or CosigUnknown.
	Status string `json:"status"`
}

// Quorum is the result of checking a checkpoint against a witness policy.
type Quorum struct {
	// Rule describes the policy's quorum, for example "g = 1 of {w0}".
	Rule string `json:"rule"`
	// Satisfied reports whether the valid cosignatures meet the rule and
	// none of the policy's witnesses has an invalid line.
	Satisfied bool `json:"satisfied"`
	// Time is the quorum time (see witness.Policy.QuorumTime), when
	// satisfied and the rule is not "none".
	Time *time.Time `json:"time,omitempty"`
	// Error says why not, when not satisfied.
	Error string `json:"error,omitempty"`
}

// Checkpoint is a checkpoint whose log signature verified.
type Checkpoint struct {
	Origin string `json:"origin"`
	Size   uint64 `json:"size"`
	Root   Hex    `json:"root"`
	// LogKey is the verifier key of the log signature that verified.
	LogKey string `json:"log_key"`
	// Cosignatures are the note's other signature lines, in order.
	Cosignatures []Signature `json:"cosignatures"`
	// Quorum is nil without a policy.
	Quorum *Quorum `json:"quorum,omitempty"`
	// Raw is the signed note as served.
	Raw Hex `json:"-"`
	// Note is the parsed note.
	Note *note.Note `json:"-"`
}

// RootHash returns the root as an array.
func (c *Checkpoint) RootHash() [32]byte { return [32]byte(c.Root) }

// FetchCheckpoint fetches the latest checkpoint from r and verifies it
// (see [VerifyCheckpoint]).
func FetchCheckpoint(ctx context.Context, r klog.Reader, k *Keys) (*Checkpoint, error) {
	raw, err := r.Checkpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetching the checkpoint: %w", err)
	}
	return VerifyCheckpoint(raw, k)
}

// VerifyCheckpoint verifies the log signature of a checkpoint note with the
// pinned key, and, with a policy, every cosignature line of a policy
// witness. A bad log signature, an invalid cosignature by a policy witness,
// or an unmet quorum is a [*VerifyError]; in the latter two cases the
// returned Checkpoint is complete, so that callers can show what was found.
//
// SPEC(design.md 9)
func VerifyCheckpoint(raw []byte, k *Keys) (*Checkpoint, error) {
	cp, n, err := klog.ParseCheckpoint(raw, k.Origin, k.LogVerifier)
	if err != nil {
		return nil, verifyErr("checkpoint", err, "the log signature does not verify with the pinned key %s", k.LogVerifierKey)
	}
	c := &Checkpoint{
		Origin: cp.Origin, Size: cp.Size, Root: cp.Hash, LogKey: k.LogVerifierKey,
		Raw: raw, Note: n, Cosignatures: []Signature{},
	}
	msg := []byte(n.Text)
	for _, s := range slices.Concat(n.Sigs, n.UnverifiedSigs) {
		if s.Name == k.LogVerifier.Name() && s.Hash == k.LogVerifier.KeyHash() {
			continue
		}
		sig := Signature{KeyName: s.Name, KeyHash: fmt.Sprintf("%08x", s.Hash), Status: CosigUnknown}
		ts, tsig, err := witness.ParseCosignature(s)
		if err == nil {
			ts = ts.UTC()
			sig.Time = &ts
		}
		if k.Policy != nil {
			for _, w := range k.Policy.Witnesses() {
				v := w.Verifier()
				if v.Name() != s.Name || v.KeyHash() != s.Hash {
					continue
				}
				sig.Witness = w.Name
				if err == nil && v.Verify(msg, tsig) {
					sig.Status = CosigValid
					break
				}
				sig.Status = CosigInvalid
			}
		}
		c.Cosignatures = append(c.Cosignatures, sig)
	}
	if k.Policy == nil {
		return c, nil
	}
	q := &Quorum{Rule: k.Policy.Quorum()}
	c.Quorum = q
	cs, err := k.Policy.CheckNote(n)
	if err != nil {
		q.Error = err.Error()
		return c, verifyErr("witness policy", err, "checkpoint of size %d", c.Size)
	}
	q.Satisfied = true
	if t, ok := k.Policy.QuorumTime(cs); ok {
		t = t.UTC()
		q.Time = &t
	}
	return c, nil
}
