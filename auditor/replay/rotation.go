package replay

import (
	"errors"
	"fmt"

	fmtlog "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/log"
)

// Key rotation (design.md 11.1). The engine keeps the chain of each key
// kind: the current key, from which the next rotation record must start,
// and the records it accepted (saved with the state). A record that
// breaks the chain is a violation and is not followed.

// Rotation rules, reported in a [Violation] with an *api.RotationError.
const (
	RuleRotationOldProof = api.RuleRotationOldProof
	RuleRotationNewProof = api.RuleRotationNewProof
	RuleRotationSequence = api.RuleRotationSequence
	RuleRotationOldKey   = api.RuleRotationOldKey
	RuleRotationKind     = api.RuleRotationKind
)

// rotations is the engine's view of the log's key rotations.
type rotations struct {
	chains map[api.KeyKind]api.RotationChain
	// records are the accepted rotation records, in log order.
	records [][]byte
	// verifiers are the log's keys, the configured one first.
	verifiers []note.Verifier
}

// initialChain returns the chain of kind k before any rotation: the
// configured key, or, when the configuration does not know the key (the
// VRF key, or a log key given only as a verifier), ok false: the first
// rotation of the kind then names it.
func (e *Engine) initialChain(k api.KeyKind) (api.RotationChain, bool) {
	switch k {
	case api.KeyRecovery:
		if e.cfg.RecoveryKey != ([32]byte{}) {
			return api.RotationChain{Kind: k, Key: e.cfg.RecoveryKey}, true
		}
	case api.KeyLog:
		if e.cfg.LogKey != ([32]byte{}) {
			return api.RotationChain{Kind: k, Key: e.cfg.LogKey}, true
		}
	case api.KeyVRF:
		if e.cfg.VRFKey != ([32]byte{}) {
			return api.RotationChain{Kind: k, Key: e.cfg.VRFKey}, true
		}
	}
	return api.RotationChain{Kind: k}, false
}

// rotation checks the rotation record r at index j and follows it.
//
// SPEC(design.md 11.1)
// SPEC(design.md 14): a rotation record that breaks the chain is a
// violation.
func (e *Engine) rotation(j uint64, raw []byte, r *api.RotationRecord, out []Violation) []Violation {
	c, ok := e.rot.chains[r.Kind]
	if !ok {
		if c, ok = e.initialChain(r.Kind); !ok {
			c = api.RotationChain{Kind: r.Kind, Key: r.OldKey}
			if r.Kind == api.KeyLog && !e.isLogKey(r.OldKey) {
				// The old key must be the key the checkpoints were
				// verified with.
				err := &api.RotationError{Kind: r.Kind, Sequence: r.Sequence, Rule: RuleRotationOldKey, Reason: "the old key is not the log key"}
				return append(out, Violation{Index: j, Rule: RuleRotationOldKey, Detail: err.Error(), Err: err})
			}
		}
	}
	next, err := c.Next(e.cfg.Origin, r, e.cfg.VerifyVRFProof)
	if err != nil {
		rule := Rule("rotation")
		if re, ok := errors.AsType[*api.RotationError](err); ok {
			rule = re.Rule
		}
		return append(out, Violation{Index: j, Rule: rule, Detail: err.Error(), Err: err})
	}
	e.follow(next, raw)
	return out
}

// follow makes next the current key of its kind.
func (e *Engine) follow(next api.RotationChain, raw []byte) {
	if e.rot.chains == nil {
		e.rot.chains = map[api.KeyKind]api.RotationChain{}
	}
	e.rot.chains[next.Kind] = next
	e.rot.records = append(e.rot.records, raw)
	switch next.Kind {
	case api.KeyRecovery:
		e.cfg.RecoveryKey = next.Key
	case api.KeyLog:
		if v, err := note.NewVerifier(log.Ed25519VerifierKey(e.cfg.Origin, next.Key)); err == nil {
			e.cfg.Verifier = v
			e.rot.verifiers = append(e.rot.verifiers, v)
		}
	}
}

// isLogKey reports whether pub is the configured log key (by its
// signed-note key hash and name).
func (e *Engine) isLogKey(pub [32]byte) bool {
	v, err := note.NewVerifier(log.Ed25519VerifierKey(e.cfg.Origin, pub))
	return err == nil && v.KeyHash() == e.configured.KeyHash()
}

// LogVerifier returns the verifier of the log's current key: the
// configured one until a rotation of the log key was replayed.
func (e *Engine) LogVerifier() note.Verifier { return e.cfg.Verifier }

// RecoveryKey returns the current recovery key (rule R6).
func (e *Engine) RecoveryKey() [32]byte { return e.cfg.RecoveryKey }

// Rotations returns the rotation records replayed and followed, in log
// order.
func (e *Engine) Rotations() [][]byte { return append([][]byte(nil), e.rot.records...) }

// restoreRotations follows the saved rotation records again (Restore).
func (e *Engine) restoreRotations(records [][]byte) error {
	for i, raw := range records {
		r, err := api.ParseRotationRecord(raw)
		if err != nil {
			return fmt.Errorf("%w: rotation %d: %w", ErrState, i, err)
		}
		if vs := e.rotation(0, raw, r, nil); len(vs) > 0 {
			return fmt.Errorf("%w: saved rotation %d: %v", ErrState, i, vs[0].Err)
		}
	}
	return nil
}

// parseAnyKey parses a saved checkpoint signed by any key the log had.
func (e *Engine) parseAnyKey(raw []byte) (*fmtlog.Checkpoint, error) {
	var first error
	for _, v := range append([]note.Verifier{e.configured}, e.rot.verifiers...) {
		cp, _, err := log.ParseCheckpoint(raw, e.cfg.Origin, v)
		if err == nil {
			return cp, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}

// ParseTarget parses a checkpoint to replay up to. One that does not
// verify under the current log key but carries a signature named by the
// origin may be signed by a key a rotation in the entries still to replay
// introduces: its size is taken unverified, and Checkpoint verifies it
// after the replay, under the key the replayed entries make current.
func (e *Engine) ParseTarget(raw []byte) (*fmtlog.Checkpoint, error) {
	cp, err := e.ParseCheckpoint(raw)
	if err == nil {
		return cp, nil
	}
	_, oerr := note.Open(raw, note.VerifierList())
	u, ok := errors.AsType[*note.UnverifiedNoteError](oerr)
	if !ok {
		return nil, err
	}
	for _, s := range u.Note.UnverifiedSigs {
		if s.Name == e.cfg.Origin {
			var c fmtlog.Checkpoint
			if _, perr := c.Unmarshal([]byte(u.Note.Text)); perr == nil && c.Origin == e.cfg.Origin {
				return &c, nil
			}
		}
	}
	return nil, err
}
