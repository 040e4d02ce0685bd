package replay

import (
	"errors"
	"maps"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/smt"
)

// Re-indexing rules (design.md 11.2), under this package's names.
const (
	RuleMoveRotation    = api.RuleMoveRotation
	RuleMoveOldIndex    = api.RuleMoveOldIndex
	RuleMoveNewIndex    = api.RuleMoveNewIndex
	RuleFrozenIndex     = api.RuleFrozenIndex
	RuleRotationPending = api.RuleRotationPending
)

func moveViolation(j uint64, err error) Violation {
	rule := Rule("re-indexing")
	if me, ok := errors.AsType[*api.MoveError](err); ok {
		rule = me.Rule
	}
	return Violation{Index: j, Rule: rule, Detail: err.Error(), Err: err}
}

// vrfRotated applies a rotation record at j. For the VRF key (kind 2) every
// live index becomes pending (rule M5 is checked here). The proofs and the
// rotation chain are checked where rotation records are verified.
//
// SPEC(design.md 11.2 M5)
func (e *Engine) vrfRotated(j uint64, r *api.RotationRecord, out []Violation) []Violation {
	if r.Kind != api.KeyVRF {
		return out
	}
	if err := e.moves.Rotate(r.Sequence, maps.Keys(e.handles)); err != nil {
		out = append(out, moveViolation(j, err))
	}
	return out
}

// move applies a move entry at j: rules M1 to M3, then, whatever the
// violations (a directory that logged it commits to it in its map), the
// new index continues the old one's state and the map gets a leaf at the
// new index with the entry's leaf.
//
// SPEC(design.md 11.2 M1)
// SPEC(design.md 11.2 M2)
// SPEC(design.md 11.2 M3)
func (e *Engine) move(j uint64, mv *api.MoveEntry, out []Violation) []Violation {
	old := e.handles[mv.OldIndex]
	if err := e.moves.Move(mv, old, e.handles[mv.NewIndex] != nil); err != nil {
		out = append(out, moveViolation(j, err))
	}
	if old != nil {
		c := *old
		e.handles[mv.NewIndex] = &c
		e.at[mv.NewIndex] = e.at[mv.OldIndex]
	}
	e.pending = append(e.pending, smt.Update{Key: mv.NewIndex, Value: mv.Leaf})
	e.changesSinceEpoch++
	return out
}

// Reindexing returns the sequence of the latest VRF key rotation (0 if
// none) and the number of indices it has not moved yet: the rotation is
// complete when that is zero (design.md 11.2).
func (e *Engine) Reindexing() (sequence uint64, pending int) {
	return e.moves.Sequence, len(e.moves.Pending)
}
