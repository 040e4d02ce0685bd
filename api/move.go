package api

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// TypeMove marks a [MoveEntry].
const TypeMove EntryType = 0x04

// MoveEntrySize is the size of an encoded move entry.
const MoveEntrySize = 2 + 8 + 32 + 32 + 32

// MoveEntry is a log entry that re-indexes one handle after a rotation of
// the VRF key (design.md 11.2): from its position on, the history whose
// latest change record has leaf hash Leaf and sits at OldIndex (the
// handle's index under the previous VRF key) continues at NewIndex (its
// index under the new key). The map gets a leaf at NewIndex with value
// Leaf; OldIndex stays, frozen.
type MoveEntry struct {
	// Sequence is the sequence number of the VRF key rotation record
	// (kind 2) that this move belongs to; 0 is malformed.
	Sequence uint64
	OldIndex [32]byte
	NewIndex [32]byte
	// Leaf is the leaf hash of OldIndex's latest change record.
	Leaf [32]byte
}

// Type returns [TypeMove].
func (*MoveEntry) Type() EntryType { return TypeMove }
func (*MoveEntry) isEntry()        {}

func (m *MoveEntry) check() error {
	switch {
	case m.Sequence == 0:
		return formatErr("move entry", -1, "rotation sequence 0")
	case m.OldIndex == m.NewIndex:
		return formatErr("move entry", -1, "the new index is the old index")
	}
	return nil
}

// AppendBinary appends the canonical encoding, or returns a *FormatError
// if m has none (sequence 0, equal indices).
//
// SPEC(design.md 11.2): the move entry's layout.
func (m *MoveEntry) AppendBinary(b []byte) ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	b = append(b, FormatVersion, byte(TypeMove))
	b = binary.BigEndian.AppendUint64(b, m.Sequence)
	b = append(b, m.OldIndex[:]...)
	b = append(b, m.NewIndex[:]...)
	return append(b, m.Leaf[:]...), nil
}

// MarshalBinary returns the canonical encoding; see AppendBinary.
func (m *MoveEntry) MarshalBinary() ([]byte, error) {
	return m.AppendBinary(make([]byte, 0, MoveEntrySize))
}

// ParseMoveEntry parses an encoded move entry, checking its format only
// (design.md 11.2); [Moves.Move] checks the rules M1 to M3.
//
// SPEC(design.md 11.2)
func ParseMoveEntry(b []byte) (*MoveEntry, error) {
	d := &decoder{what: "move entry", b: b}
	parseHeader(d, TypeMove)
	m := &MoveEntry{}
	if m.Sequence = d.u64("rotation sequence"); d.err == nil && m.Sequence == 0 {
		d.off -= 8
		d.fail("rotation sequence 0")
	}
	d.array32(&m.OldIndex, "old index")
	d.array32(&m.NewIndex, "new index")
	if d.err == nil && m.NewIndex == m.OldIndex {
		d.off -= 32
		d.fail("the new index is the old index")
	}
	d.array32(&m.Leaf, "leaf")
	if err := d.end(); err != nil {
		return nil, err
	}
	return m, nil
}

// Re-indexing rules (design.md 11.2), named in a [*MoveError].
const (
	RuleMoveRotation    Rule = "move rotation"    // M1: no VRF rotation, or not the latest one
	RuleMoveOldIndex    Rule = "move old index"   // M2: the old index is not pending, or the leaf is not its latest
	RuleMoveNewIndex    Rule = "move new index"   // M3: the new index is already in use
	RuleFrozenIndex     Rule = "frozen index"     // M4: a change record at a pending or moved index
	RuleRotationPending Rule = "rotation pending" // M5: a VRF rotation while indices are pending
)

// ErrBadMove is wrapped by every [*MoveError].
var ErrBadMove = errors.New("api: re-indexing rule broken")

// MoveError reports an entry that breaks a re-indexing rule of design.md
// 11.2 at log position Index.
type MoveError struct {
	Rule   Rule
	Reason string
}

func (e *MoveError) Error() string {
	return fmt.Sprintf("api: %s: %s", e.Rule, e.Reason)
}

// Unwrap returns [ErrBadMove].
func (e *MoveError) Unwrap() error { return ErrBadMove }

// Moves is the re-indexing state of a log (design.md 11.2): the sequence
// of the latest VRF key rotation, the indices still to move (pending) and
// those moved. Every other index with a change record is live. The
// auditor's replay and the directory's replay of its own log keep one and
// feed it, in log order, every VRF rotation record ([Moves.Rotate]), every
// change record ([Moves.CheckChange]) and every move ([Moves.Move]).
// The zero value is a log without VRF rotations.
type Moves struct {
	Sequence uint64
	Pending  map[[32]byte]struct{}
	Moved    map[[32]byte]struct{}
}

// Rotate applies a VRF key rotation record of sequence seq: every live
// index among indices (the indices with a change record) becomes pending.
// A rotation while an index is still pending breaks M5 (the error); the
// rotation is applied nonetheless, and the indices still pending stay so.
//
// SPEC(design.md 11.2 M5)
func (m *Moves) Rotate(seq uint64, indices func(yield func([32]byte) bool)) error {
	var err error
	if n := len(m.Pending); n > 0 {
		err = &MoveError{Rule: RuleRotationPending, Reason: fmt.Sprintf("VRF rotation %d while %d indices of rotation %d are not moved", seq, n, m.Sequence)}
	}
	if m.Pending == nil {
		m.Pending = map[[32]byte]struct{}{}
	}
	if m.Moved == nil {
		m.Moved = map[[32]byte]struct{}{}
	}
	for k := range indices {
		if _, moved := m.Moved[k]; !moved {
			m.Pending[k] = struct{}{}
		}
	}
	m.Sequence = seq
	return err
}

// Frozen reports whether index is pending or moved: no change record may
// be logged at it (M4).
func (m *Moves) Frozen(index [32]byte) bool {
	if _, ok := m.Pending[index]; ok {
		return true
	}
	_, ok := m.Moved[index]
	return ok
}

// CheckChange checks rule M4 for a change record at index.
//
// SPEC(design.md 11.2 M4)
func (m *Moves) CheckChange(index [32]byte) error {
	if _, ok := m.Pending[index]; ok {
		return &MoveError{Rule: RuleFrozenIndex, Reason: fmt.Sprintf("change record at index %x, which VRF rotation %d froze and which is not moved yet", index[:8], m.Sequence)}
	}
	if _, ok := m.Moved[index]; ok {
		return &MoveError{Rule: RuleFrozenIndex, Reason: fmt.Sprintf("change record at index %x, which was moved", index[:8])}
	}
	return nil
}

// Move checks a move entry against rules M1 to M3, given the state of its
// old index (nil if none) and whether its new index is in use, and on
// success marks the old index moved. The caller then gives the new index
// the old index's state and the map a leaf at the new index with value
// mv.Leaf. On error nothing changes.
//
// SPEC(design.md 11.2 M1)
// SPEC(design.md 11.2 M2)
// SPEC(design.md 11.2 M3)
func (m *Moves) Move(mv *MoveEntry, old *HandleState, newInUse bool) error {
	switch {
	case m.Sequence == 0:
		return &MoveError{Rule: RuleMoveRotation, Reason: "a move entry before any VRF key rotation"}
	case mv.Sequence != m.Sequence:
		return &MoveError{Rule: RuleMoveRotation, Reason: fmt.Sprintf("a move of VRF rotation %d after rotation %d", mv.Sequence, m.Sequence)}
	}
	if _, ok := m.Pending[mv.OldIndex]; !ok {
		why := "was not registered at the rotation"
		if _, moved := m.Moved[mv.OldIndex]; moved {
			why = "was already moved"
		}
		return &MoveError{Rule: RuleMoveOldIndex, Reason: fmt.Sprintf("old index %x %s", mv.OldIndex[:8], why)}
	}
	if old == nil || old.LeafHash != mv.Leaf {
		return &MoveError{Rule: RuleMoveOldIndex, Reason: fmt.Sprintf("the leaf is not the latest leaf hash of old index %x", mv.OldIndex[:8])}
	}
	if newInUse || m.Frozen(mv.NewIndex) {
		return &MoveError{Rule: RuleMoveNewIndex, Reason: fmt.Sprintf("new index %x is already in use", mv.NewIndex[:8])}
	}
	delete(m.Pending, mv.OldIndex)
	m.Moved[mv.OldIndex] = struct{}{}
	return nil
}

// ProveVRFRotation sets r's keys and proofs for a rotation of the VRF key
// (r.Kind must be KeyVRF; r.Sequence must be set): prove makes the ECVRF
// proof of possession of a key over the rotation statement (vrf's
// PrivateKey.ProveRotation), oldPub and newPub are the public keys.
func (r *RotationRecord) ProveVRFRotation(origin string, oldPub, newPub [32]byte, proveOld, proveNew func(statement []byte) ([]byte, error)) error {
	if r.Kind != KeyVRF {
		return formatErr("rotation record", -1, "ProveVRFRotation proves VRF keys, not a %s key", r.Kind)
	}
	r.OldKey, r.NewKey = oldPub, newPub
	msg := RotationStatement(origin, r)
	var err error
	if r.OldProof, err = proveOld(msg); err != nil {
		return err
	}
	r.NewProof, err = proveNew(msg)
	return err
}
