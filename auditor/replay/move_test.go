package replay_test

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/auditor/replay"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/vrf"
)

func vrfKey(t testing.TB, label string) *vrf.PrivateKey {
	k, err := vrf.NewPrivateKey(bytes.Repeat([]byte(label[:1]), 32))
	if err != nil {
		panic(err)
	}
	return k
}

// vrfConfig is the engine configuration of the tests of this file: the
// genesis VRF key and the VRF proof verifier (design.md 11.2).
func vrfConfig(k logKey, b *ktlog.Builder) replay.Config {
	var genesis [32]byte
	copy(genesis[:], vrfKey(nil, "o").Public().Bytes())
	return replay.Config{Origin: origin, Verifier: k.v, RecoveryKey: b.RecoveryKey(), ExactSignatures: true,
		VRFKey: genesis, VerifyVRFProof: vrf.VerifyRotationProof}
}

func newVRFEngine(t testing.TB, k logKey, b *ktlog.Builder) *replay.Engine {
	e, err := replay.New(vrfConfig(k, b))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func newIndex(h int) [32]byte { return ktlog.Index(fmt.Sprintf("h%d under the new key", h)) }
func oldIndex(h int) [32]byte { return ktlog.Index(fmt.Sprint("h", h)) }

// rotated returns a log of three handles (h0 to h2, two records each), a
// rotation of the VRF key (sequence 1) and the moves of the handles in
// moved, then an epoch, and the device keys of the handles.
func rotated(t testing.TB, moved ...int) (*ktlog.Builder, [][2]ed25519.PrivateKey) {
	b := ktlog.New(origin)
	keys := b.Honest(3, 2)
	b.VRFRotation(1, vrfKey(t, "o"), vrfKey(t, "n"))
	for _, h := range moved {
		b.Move(1, oldIndex(h), newIndex(h))
	}
	b.Epoch()
	return b, keys
}

func replayAll(t *testing.T, b *ktlog.Builder) ([]found, *replay.Engine) {
	t.Helper()
	k := newLogKey(t)
	e := newVRFEngine(t, k, b)
	vs := e.Append(b.Entries())
	var got []found
	for _, v := range vs {
		got = append(got, found{v.Index, v.Rule})
	}
	return got, e
}

// TestReindexHonest is the control: a VRF rotation, every handle moved,
// then a change at a new index that continues the moved history, a new
// handle enrolled, and a second rotation after the first is complete.
func TestReindexHonest(t *testing.T) {
	b, keys := rotated(t, 0, 1, 2)
	d := ktlog.Key("h0 d3")
	b.Change(newIndex(0), api.AuthDevice, keys[0][1], ktlog.Devices(d))
	e1 := ktlog.Key("h9 d1")
	b.Change(ktlog.Index("h9 new"), api.AuthEnroll, e1, ktlog.Devices(e1))
	b.Epoch()
	b.VRFRotation(2, vrfKey(t, "n"), vrfKey(t, "p"))
	b.Epoch()
	got, e := replayAll(t, b)
	if len(got) != 0 {
		t.Fatalf("violations in an honest re-indexing: %+v", got)
	}
	if seq, pending := e.Reindexing(); seq != 2 || pending != 4 {
		t.Fatalf("Reindexing() = %d, %d; want rotation 2 with the 4 live indices pending", seq, pending)
	}
	if st := e.Handle(newIndex(0)); st == nil || st.Version != 3 {
		t.Fatalf("state of h0's new index: %+v", st)
	}
}

// TestReindexViolations breaks each rule of design.md 11.2 once; the map
// root always matches (the builder commits to what it logs), so the rule
// is the only violation.
func TestReindexViolations(t *testing.T) {
	cases := []struct {
		name  string
		build func(t *testing.T) (*ktlog.Builder, uint64)
		rule  replay.Rule
	}{
		{"M1 move before any rotation", func(t *testing.T) (*ktlog.Builder, uint64) {
			b := ktlog.New(origin)
			b.Honest(1, 2)
			j := b.Move(1, oldIndex(0), newIndex(0))
			b.Epoch()
			return b, j
		}, replay.RuleMoveRotation},
		{"M1 move of another rotation", func(t *testing.T) (*ktlog.Builder, uint64) {
			b, _ := rotated(t)
			j := b.Move(2, oldIndex(0), newIndex(0))
			b.Epoch()
			return b, j
		}, replay.RuleMoveRotation},
		{"M2 index registered after the rotation", func(t *testing.T) (*ktlog.Builder, uint64) {
			b, _ := rotated(t, 0, 1, 2)
			k := ktlog.Key("late")
			late := ktlog.Index("late")
			b.Change(late, api.AuthEnroll, k, ktlog.Devices(k))
			j := b.Move(1, late, ktlog.Index("late 2"))
			b.Epoch()
			return b, j
		}, replay.RuleMoveOldIndex},
		{"M2 moved twice", func(t *testing.T) (*ktlog.Builder, uint64) {
			b, _ := rotated(t, 0)
			j := b.Move(1, oldIndex(0), ktlog.Index("elsewhere"))
			b.Epoch()
			return b, j
		}, replay.RuleMoveOldIndex},
		{"M2 not the latest leaf", func(t *testing.T) (*ktlog.Builder, uint64) {
			b, _ := rotated(t)
			j := b.MoveWith(&api.MoveEntry{Sequence: 1, OldIndex: oldIndex(0), NewIndex: newIndex(0), Leaf: ktlog.Index("some leaf")})
			b.Epoch()
			return b, j
		}, replay.RuleMoveOldIndex},
		{"M3 new index in use", func(t *testing.T) (*ktlog.Builder, uint64) {
			b, _ := rotated(t, 1)
			j := b.Move(1, oldIndex(0), newIndex(1))
			b.Epoch()
			return b, j
		}, replay.RuleMoveNewIndex},
		{"M4 change at a pending index", func(t *testing.T) (*ktlog.Builder, uint64) {
			b, keys := rotated(t)
			d := ktlog.Key("h0 d3")
			j := b.Change(oldIndex(0), api.AuthDevice, keys[0][1], ktlog.Devices(d))
			b.Epoch()
			return b, j
		}, replay.RuleFrozenIndex},
		{"M4 change at a moved index", func(t *testing.T) (*ktlog.Builder, uint64) {
			b, keys := rotated(t, 0)
			d := ktlog.Key("h0 d3")
			j := b.Change(oldIndex(0), api.AuthDevice, keys[0][1], ktlog.Devices(d))
			b.Epoch()
			return b, j
		}, replay.RuleFrozenIndex},
		{"M5 rotation while moves are pending", func(t *testing.T) (*ktlog.Builder, uint64) {
			b, _ := rotated(t, 0, 1)
			j := b.VRFRotation(2, vrfKey(t, "n"), vrfKey(t, "p"))
			b.Epoch()
			return b, j
		}, replay.RuleRotationPending},
	}
	// A forged rotation of the VRF key: a proof by a key other than the
	// one the record names (the control is TestReindexHonest).
	forged := func(proveOld, proveNew *vrf.PrivateKey) func(t *testing.T) (*ktlog.Builder, uint64) {
		return func(t *testing.T) (*ktlog.Builder, uint64) {
			b := ktlog.New(origin)
			b.Honest(1, 2)
			r := &api.RotationRecord{Kind: api.KeyVRF, Sequence: 1}
			if err := r.ProveVRFRotation(origin, [32]byte(vrfKey(t, "o").Public().Bytes()), [32]byte(vrfKey(t, "n").Public().Bytes()), proveOld.ProveRotation, proveNew.ProveRotation); err != nil {
				t.Fatal(err)
			}
			raw, err := r.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			j := b.Raw(raw)
			b.Epoch()
			return b, j
		}
	}
	cases = append(cases,
		struct {
			name  string
			build func(t *testing.T) (*ktlog.Builder, uint64)
			rule  replay.Rule
		}{"forged VRF rotation, old key's proof", forged(vrfKey(t, "w"), vrfKey(t, "n")), api.RuleRotationOldProof},
		struct {
			name  string
			build func(t *testing.T) (*ktlog.Builder, uint64)
			rule  replay.Rule
		}{"forged VRF rotation, new key's proof", forged(vrfKey(t, "o"), vrfKey(t, "w")), api.RuleRotationNewProof},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, j := c.build(t)
			got, _ := replayAll(t, b)
			if want := []found{{j, c.rule}}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("violations %+v, want %+v", got, want)
			}
		})
	}
}

// TestReindexStateRestore: a replay state saved in the middle of a
// re-indexing keeps what is pending and moved, so a change at a frozen
// index after the restore is still found (M4), and an honest move still
// passes (control).
func TestReindexStateRestore(t *testing.T) {
	b, keys := rotated(t, 0)
	k := newLogKey(t)
	e := newVRFEngine(t, k, b)
	if vs := e.Append(b.Entries()); len(vs) != 0 {
		t.Fatal(vs)
	}
	saved, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	r, err := replay.Restore(vrfConfig(k, b), saved)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := r.MarshalBinary()
	if !bytes.Equal(saved, again) {
		t.Fatal("the restored state encodes differently")
	}
	if seq, pending := r.Reindexing(); seq != 1 || pending != 2 {
		t.Fatalf("restored Reindexing() = %d, %d", seq, pending)
	}
	n := b.Len()
	b.Move(1, oldIndex(1), newIndex(1))
	d := ktlog.Key("h0 d3")
	j := b.Change(oldIndex(0), api.AuthDevice, keys[0][1], ktlog.Devices(d))
	b.Epoch()
	vs := r.Append(b.Entries()[n:])
	if len(vs) != 1 || vs[0].Index != j || vs[0].Rule != replay.RuleFrozenIndex {
		t.Fatalf("after the restore: %+v, want one %s at %d", vs, replay.RuleFrozenIndex, j)
	}
}
