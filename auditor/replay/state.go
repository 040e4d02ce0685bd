package replay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/smt"
)

// stateMagic starts every encoded engine state; the version in it changes
// with the encoding. stateMagicV3 (without the re-indexing state),
// stateMagicV2 (also without the rotation records) and stateMagicV1 (also
// without the log index of each index's latest record) are still
// restored.
const (
	stateMagic   = "kt-replay-state/v4\n"
	stateMagicV3 = "kt-replay-state/v3\n"
	stateMagicV2 = "kt-replay-state/v2\n"
	stateMagicV1 = "kt-replay-state/v1\n"
)

// ErrState reports an encoded state that does not decode or is not for the
// configured log.
var ErrState = errors.New("replay: invalid saved state")

// MarshalBinary encodes the engine's state: everything needed to resume the
// replay at Size() without the earlier entries. The encoding is
// deterministic (indices in increasing order), so two engines that replayed
// the same entries and checkpoints encode identically.
//
// Layout (integers big-endian): magic; origin (uint16 length, bytes); size;
// compact range hashes (uint16 count, 32 bytes each); next epoch; last
// timestamp; violations; first violation; last and clean checkpoints
// (uint32 length, note; length 0 for none); handle count (uint64), then per
// index in increasing order: index (32), version (8), leaf hash (32),
// authorizer count (1), authorizers (role 1, digest 32), log index of the
// latest record (8; all ones when unknown); then the rotation records
// followed (uint16 count, each uint16 length and the record; design.md
// 11.1); then the re-indexing state (design.md 11.2): the latest VRF
// rotation sequence (8), the pending indices and the moved indices, each
// as a count (8) and the indices in increasing order (32 each).
// kt-replay-state/v3 is the same without the re-indexing state, v2 also
// without the rotation records (and restores with none), v1 also without
// the log index of each index's latest record.
func (e *Engine) MarshalBinary() ([]byte, error) {
	b := []byte(stateMagic)
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.cfg.Origin)))
	b = append(b, e.cfg.Origin...)
	b = binary.BigEndian.AppendUint64(b, e.size)
	hs := e.rng.Hashes()
	b = binary.BigEndian.AppendUint16(b, uint16(len(hs)))
	for _, h := range hs {
		b = append(b, h...)
	}
	b = binary.BigEndian.AppendUint64(b, e.chain.Next)
	b = binary.BigEndian.AppendUint64(b, e.chain.Time)
	b = binary.BigEndian.AppendUint64(b, e.violations)
	b = binary.BigEndian.AppendUint64(b, e.firstBad)
	for _, c := range []*Checkpoint{e.last, e.clean} {
		var n []byte
		if c != nil {
			n = c.Note
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(n)))
		b = append(b, n...)
	}
	keys := make([][32]byte, 0, len(e.handles))
	for k := range e.handles {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
	b = binary.BigEndian.AppendUint64(b, uint64(len(keys)))
	for _, k := range keys {
		h := e.handles[k]
		b = append(b, k[:]...)
		b = binary.BigEndian.AppendUint64(b, h.Version)
		b = append(b, h.LeafHash[:]...)
		b = append(b, byte(len(h.Authorizers)))
		for _, a := range h.Authorizers {
			b = append(b, byte(a.Role))
			b = append(b, a.Digest[:]...)
		}
		at, ok := e.at[k]
		if !ok {
			at = unknownAt
		}
		b = binary.BigEndian.AppendUint64(b, at)
	}
	// v3: the rotation records followed (design.md 11.1).
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.rot.records)))
	for _, r := range e.rot.records {
		b = binary.BigEndian.AppendUint16(b, uint16(len(r)))
		b = append(b, r...)
	}
	// v4: the re-indexing state (design.md 11.2).
	b = binary.BigEndian.AppendUint64(b, e.moves.Sequence)
	for _, set := range []map[[32]byte]struct{}{e.moves.Pending, e.moves.Moved} {
		ks := slices.SortedFunc(maps.Keys(set), func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
		b = binary.BigEndian.AppendUint64(b, uint64(len(ks)))
		for _, k := range ks {
			b = append(b, k[:]...)
		}
	}
	return b, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || n > len(r.b) || n < 0 {
		r.err = fmt.Errorf("%w: truncated", ErrState)
		// Enough for the fixed-size reads that follow; never n, which
		// the input chose.
		return make([]byte, 64)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}
func (r *reader) u8() byte    { return r.take(1)[0] }
func (r *reader) u16() int    { return int(binary.BigEndian.Uint16(r.take(2))) }
func (r *reader) u32() int    { return int(binary.BigEndian.Uint32(r.take(4))) }
func (r *reader) u64() uint64 { return binary.BigEndian.Uint64(r.take(8)) }

// Restore returns an engine in the state b encodes (from
// [Engine.MarshalBinary]), for the log cfg describes. The saved
// checkpoints are verified again with cfg.Verifier, and the compact range
// and the map are rebuilt, so a state for another log, or one whose range
// does not match its size, is refused. A kt-replay-state/v1 state (before
// the engine kept the log index of each index's latest record) restores
// with those positions unknown: violations then carry no Prev until the
// index has a new record.
func Restore(cfg Config, b []byte) (*Engine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	v1 := bytes.HasPrefix(b, []byte(stateMagicV1))
	v2 := bytes.HasPrefix(b, []byte(stateMagicV2))
	v3 := bytes.HasPrefix(b, []byte(stateMagicV3))
	if !v1 && !v2 && !v3 && !bytes.HasPrefix(b, []byte(stateMagic)) {
		return nil, fmt.Errorf("%w: not a replay state (%q, %q, %q or %q)", ErrState, strings.TrimSpace(stateMagic), strings.TrimSpace(stateMagicV3), strings.TrimSpace(stateMagicV2), strings.TrimSpace(stateMagicV1))
	}
	r := &reader{b: b[len(stateMagic):]} // the magics have one length
	if origin := string(r.take(r.u16())); r.err == nil && origin != cfg.Origin {
		return nil, fmt.Errorf("%w: state is for origin %q, not %q", ErrState, origin, cfg.Origin)
	}
	e := &Engine{cfg: cfg, handles: map[[32]byte]*api.HandleState{}, at: map[[32]byte]uint64{}, configured: cfg.Verifier}
	e.size = r.u64()
	nh := r.u16()
	hs := make([][]byte, nh)
	for i := range hs {
		hs[i] = bytes.Clone(r.take(32))
	}
	e.chain.Next = r.u64()
	e.chain.Time = r.u64()
	e.violations = r.u64()
	e.firstBad = r.u64()
	var notes [2][]byte
	for i := range notes {
		notes[i] = bytes.Clone(r.take(r.u32()))
	}
	n := r.u64()
	minHandle := uint64(32 + 8 + 32 + 1 + 8)
	if v1 {
		minHandle -= 8
	}
	if r.err == nil && n > uint64(len(r.b))/minHandle {
		return nil, fmt.Errorf("%w: %d handles cannot fit", ErrState, n)
	}
	leaves := make([]smt.Leaf, 0, n)
	for range n {
		var k [32]byte
		copy(k[:], r.take(32))
		h := &api.HandleState{Version: r.u64()}
		copy(h.LeafHash[:], r.take(32))
		na := int(r.u8())
		if na > 0 {
			h.Authorizers = make([]api.Authorizer, na)
		}
		for i := range h.Authorizers {
			h.Authorizers[i].Role = api.Role(r.u8())
			copy(h.Authorizers[i].Digest[:], r.take(32))
		}
		at := unknownAt
		if !v1 {
			at = r.u64()
		}
		if r.err != nil {
			break
		}
		if at != unknownAt && at >= e.size {
			return nil, fmt.Errorf("%w: a record at index %d beyond the replayed size", ErrState, at)
		}
		if _, dup := e.handles[k]; dup {
			return nil, fmt.Errorf("%w: index listed twice", ErrState)
		}
		e.handles[k] = h
		e.at[k] = at
		leaves = append(leaves, smt.Leaf{Key: k, Value: h.LeafHash})
	}
	var rots [][]byte
	if !v1 && !v2 {
		nr := r.u16()
		for range nr {
			rots = append(rots, bytes.Clone(r.take(r.u16())))
		}
	}
	if !v1 && !v2 && !v3 && r.err == nil {
		if err := restoreMoves(r, e); err != nil {
			return nil, err
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: trailing bytes", ErrState)
	}
	if err := e.restoreRotations(rots); err != nil {
		return nil, err
	}
	rng, err := rangeFactory.NewRange(0, e.size, hs)
	if err != nil {
		return nil, fmt.Errorf("%w: compact range: %w", ErrState, err)
	}
	e.rng = rng
	if e.m, err = smt.New(leaves); err != nil {
		return nil, fmt.Errorf("%w: map: %w", ErrState, err)
	}
	for i, nb := range notes {
		if len(nb) == 0 {
			continue
		}
		cp, err := e.parseAnyKey(nb)
		if err != nil {
			return nil, fmt.Errorf("%w: saved checkpoint: %w", ErrState, err)
		}
		if cp.Size > e.size {
			return nil, fmt.Errorf("%w: saved checkpoint beyond the replayed size", ErrState)
		}
		c := &Checkpoint{Size: cp.Size, Note: nb}
		copy(c.Root[:], cp.Hash)
		if i == 0 {
			e.last = c
		} else {
			e.clean = c
		}
	}
	if e.last != nil && e.last.Size == e.size && e.last.Root != e.Root() {
		return nil, fmt.Errorf("%w: saved checkpoint does not match the saved range", ErrState)
	}
	return e, nil
}

// restoreMoves reads the re-indexing state of a kt-replay-state/v3
// encoding. Every pending or moved index must have a state.
func restoreMoves(r *reader, e *Engine) error {
	e.moves.Sequence = r.u64()
	sets := []*map[[32]byte]struct{}{&e.moves.Pending, &e.moves.Moved}
	for i, set := range sets {
		n := r.u64()
		if r.err == nil && n > uint64(len(r.b))/32 {
			return fmt.Errorf("%w: %d re-indexed indices cannot fit", ErrState, n)
		}
		*set = make(map[[32]byte]struct{}, n)
		for range n {
			k := [32]byte(r.take(32))
			if r.err != nil {
				return r.err
			}
			if e.handles[k] == nil {
				return fmt.Errorf("%w: a re-indexed index without a state", ErrState)
			}
			if _, dup := (*set)[k]; dup || (i == 1 && isIn(e.moves.Pending, k)) {
				return fmt.Errorf("%w: re-indexed index listed twice", ErrState)
			}
			(*set)[k] = struct{}{}
		}
	}
	if e.moves.Sequence == 0 && len(e.moves.Pending)+len(e.moves.Moved) > 0 {
		return fmt.Errorf("%w: re-indexed indices without a VRF rotation", ErrState)
	}
	return nil
}

func isIn(m map[[32]byte]struct{}, k [32]byte) bool { _, ok := m[k]; return ok }
