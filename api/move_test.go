package api

import (
	"bytes"
	"errors"
	"maps"
	"testing"
)

func moveGoldenCases() []goldenCase {
	mv := &MoveEntry{Sequence: 1, OldIndex: seeded32("vrf index alice"), NewIndex: seeded32("vrf index alice, new key"), Leaf: seeded32("leaf")}
	return []goldenCase{
		{"move", "move entry: rotation 1, old index, new index, leaf", mustMarshal(mv), func(b []byte) (any, error) { return ParseMoveEntry(b) }, mv},
	}
}

func TestMoveEntryFormat(t *testing.T) {
	good := moveGoldenCases()[0].data
	if len(good) != MoveEntrySize {
		t.Fatalf("size %d, want %d", len(good), MoveEntrySize)
	}
	if e, err := ParseEntry(good); err != nil || e.Type() != TypeMove {
		t.Fatalf("control: ParseEntry = %v, %v", e, err)
	}
	bad := map[string][]byte{
		"truncated":     good[:MoveEntrySize-1],
		"trailing byte": append(bytes.Clone(good), 0),
		"sequence 0": func() []byte {
			b := bytes.Clone(good)
			copy(b[2:10], make([]byte, 8))
			return b
		}(),
		"same index": func() []byte {
			b := bytes.Clone(good)
			copy(b[42:74], b[10:42])
			return b
		}(),
		"other version": func() []byte { b := bytes.Clone(good); b[0] = 2; return b }(),
	}
	for name, b := range bad {
		if _, err := ParseMoveEntry(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	if _, err := (&MoveEntry{Sequence: 1}).MarshalBinary(); !errors.Is(err, ErrMalformed) {
		t.Errorf("marshalling equal indices: %v, want ErrMalformed", err)
	}
}

func indicesOf(ks ...[32]byte) func(func([32]byte) bool) {
	return func(yield func([32]byte) bool) {
		for _, k := range ks {
			if !yield(k) {
				return
			}
		}
	}
}

// TestMovesRules breaks each rule of design.md 11.2 on its own, after a
// control that follows them all.
func TestMovesRules(t *testing.T) {
	a, b := seeded32("a"), seeded32("b")
	a2, b2 := seeded32("a2"), seeded32("b2")
	sa := &HandleState{Version: 3, LeafHash: seeded32("leaf a")}
	sb := &HandleState{Version: 1, LeafHash: seeded32("leaf b")}
	fresh := func() *Moves {
		m := &Moves{}
		if err := m.Rotate(1, indicesOf(a, b)); err != nil {
			t.Fatal(err)
		}
		return m
	}
	rule := func(err error) Rule {
		if me, ok := errors.AsType[*MoveError](err); ok && errors.Is(err, ErrBadMove) {
			return me.Rule
		}
		return Rule("untyped: " + func() string {
			if err == nil {
				return "nil"
			}
			return err.Error()
		}())
	}

	// Control: both moved, then a second rotation is allowed.
	m := fresh()
	if err := m.Move(&MoveEntry{Sequence: 1, OldIndex: a, NewIndex: a2, Leaf: sa.LeafHash}, sa, false); err != nil {
		t.Fatalf("control: %v", err)
	}
	if err := m.Move(&MoveEntry{Sequence: 1, OldIndex: b, NewIndex: b2, Leaf: sb.LeafHash}, sb, false); err != nil {
		t.Fatalf("control: %v", err)
	}
	if err := m.CheckChange(a2); err != nil {
		t.Fatalf("control: change at a new index: %v", err)
	}
	if err := m.Rotate(2, indicesOf(a, b, a2, b2)); err != nil {
		t.Fatalf("control: second rotation after a complete move: %v", err)
	}
	if want := map[[32]byte]struct{}{a2: {}, b2: {}}; !maps.Equal(m.Pending, want) {
		t.Fatalf("pending after the second rotation: %d indices, want the 2 new ones", len(m.Pending))
	}

	cases := []struct {
		name string
		do   func(m *Moves) error
		want Rule
	}{
		{"move before any rotation", func(*Moves) error {
			return (&Moves{}).Move(&MoveEntry{Sequence: 1, OldIndex: a, NewIndex: a2, Leaf: sa.LeafHash}, sa, false)
		}, RuleMoveRotation},
		{"move of another rotation", func(m *Moves) error {
			return m.Move(&MoveEntry{Sequence: 2, OldIndex: a, NewIndex: a2, Leaf: sa.LeafHash}, sa, false)
		}, RuleMoveRotation},
		{"old index not registered at the rotation", func(m *Moves) error {
			return m.Move(&MoveEntry{Sequence: 1, OldIndex: seeded32("c"), NewIndex: a2, Leaf: sa.LeafHash}, sa, false)
		}, RuleMoveOldIndex},
		{"old index moved twice", func(m *Moves) error {
			if err := m.Move(&MoveEntry{Sequence: 1, OldIndex: a, NewIndex: a2, Leaf: sa.LeafHash}, sa, false); err != nil {
				return err
			}
			return m.Move(&MoveEntry{Sequence: 1, OldIndex: a, NewIndex: seeded32("a3"), Leaf: sa.LeafHash}, sa, false)
		}, RuleMoveOldIndex},
		{"leaf not the latest", func(m *Moves) error {
			return m.Move(&MoveEntry{Sequence: 1, OldIndex: a, NewIndex: a2, Leaf: sb.LeafHash}, sa, false)
		}, RuleMoveOldIndex},
		{"new index in use", func(m *Moves) error {
			return m.Move(&MoveEntry{Sequence: 1, OldIndex: a, NewIndex: a2, Leaf: sa.LeafHash}, sa, true)
		}, RuleMoveNewIndex},
		{"new index is a frozen old one", func(m *Moves) error {
			return m.Move(&MoveEntry{Sequence: 1, OldIndex: a, NewIndex: b, Leaf: sa.LeafHash}, sa, false)
		}, RuleMoveNewIndex},
		{"change at a pending index", func(m *Moves) error { return m.CheckChange(a) }, RuleFrozenIndex},
		{"change at a moved index", func(m *Moves) error {
			if err := m.Move(&MoveEntry{Sequence: 1, OldIndex: a, NewIndex: a2, Leaf: sa.LeafHash}, sa, false); err != nil {
				return err
			}
			return m.CheckChange(a)
		}, RuleFrozenIndex},
		{"rotation while pending", func(m *Moves) error { return m.Rotate(2, indicesOf(a, b)) }, RuleRotationPending},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := rule(c.do(fresh())); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func FuzzParseMoveEntry(f *testing.F) {
	for _, c := range moveGoldenCases() {
		f.Add(c.data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMoveEntry(b)
		if err != nil {
			if _, ok := errors.AsType[*FormatError](err); !ok || !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not a *FormatError", err)
			}
			return
		}
		out, err := m.MarshalBinary()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("non-canonical input accepted (%v):\n in %x\nout %x", err, b, out)
		}
	})
}
