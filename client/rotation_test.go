package client_test

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/client"
)

func testRotation(t *testing.T, seq uint64, old, nw ed25519.PrivateKey) []byte {
	t.Helper()
	r := &api.RotationRecord{Kind: api.KeyRecovery, Sequence: seq}
	if err := r.SignRotation("example.com/kt", old, nw); err != nil {
		t.Fatal(err)
	}
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestStateRotations: the accepted rotations survive the persisted
// encoding; a state with a malformed or misordered rotation is refused
// (ErrState), never reset.
func TestStateRotations(t *testing.T) {
	_, k1, _ := ed25519.GenerateKey(nil)
	_, k2, _ := ed25519.GenerateKey(nil)
	_, k3, _ := ed25519.GenerateKey(nil)
	r1, r2 := testRotation(t, 1, k1, k2), testRotation(t, 2, k2, k3)
	st := &client.State{Rotations: []client.Rotation{{LogIndex: 5, Record: r1}, {LogIndex: 9, Record: r2}}}
	b, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got client.State
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if len(got.Rotations) != 2 || got.Rotations[1].LogIndex != 9 || got.Rotations[1].Parsed == nil || got.Rotations[1].Parsed.Sequence != 2 {
		t.Fatalf("rotations after a round trip: %+v", got.Rotations)
	}
	for name, rs := range map[string][]client.Rotation{
		"out of order": {{LogIndex: 9, Record: r1}, {LogIndex: 5, Record: r2}},
		"malformed":    {{LogIndex: 5, Record: r1[:100]}},
	} {
		b, err := (&client.State{Rotations: rs}).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var s client.State
		if err := s.UnmarshalBinary(b); !errors.Is(err, client.ErrState) || !strings.Contains(err.Error(), "rotation") {
			t.Errorf("%s: UnmarshalBinary = %v, want ErrState naming the rotation", name, err)
		}
	}
}
