package vrf_test

import (
	"errors"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/vrf"
)

const origin = "example.com/kt"

func key(t *testing.T) *vrf.PrivateKey {
	t.Helper()
	k, err := vrf.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pub(k *vrf.PrivateKey) [32]byte { return [32]byte(k.Public().Bytes()) }

// TestVRFRotationRecord: a kind-2 rotation record proved by the old and the
// new key passes api.VerifyRotation and RotationChain.Next with
// vrf.VerifyRotationProof (control); a forged one, with a proof by a key
// other than the one it names, fails with the rule of the proof.
func TestVRFRotationRecord(t *testing.T) {
	oldK, newK, wrong := key(t), key(t), key(t)
	build := func(proveOld, proveNew *vrf.PrivateKey) *api.RotationRecord {
		r := &api.RotationRecord{Kind: api.KeyVRF, Sequence: 1}
		if err := r.ProveVRFRotation(origin, pub(oldK), pub(newK), proveOld.ProveRotation, proveNew.ProveRotation); err != nil {
			t.Fatal(err)
		}
		b, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		back, err := api.ParseRotationRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		return back
	}
	chain := api.RotationChain{Kind: api.KeyVRF, Key: pub(oldK)}

	honest := build(oldK, newK)
	next, err := chain.Next(origin, honest, vrf.VerifyRotationProof)
	if err != nil {
		t.Fatalf("control: honest rotation refused: %v", err)
	}
	if next.Key != pub(newK) || next.Sequence != 1 {
		t.Fatalf("control: chain after the rotation: %+v", next)
	}

	for _, c := range []struct {
		name   string
		rec    *api.RotationRecord
		origin string
		rule   api.Rule
		vrfErr error
	}{
		{"old proof by another key", build(wrong, newK), origin, api.RuleRotationOldProof, vrf.ErrInvalidProof},
		{"new proof by another key", build(oldK, wrong), origin, api.RuleRotationNewProof, vrf.ErrInvalidProof},
		{"proved for another log", honest, "other.example/kt", api.RuleRotationOldProof, vrf.ErrInvalidProof},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := chain.Next(c.origin, c.rec, vrf.VerifyRotationProof)
			re, ok := errors.AsType[*api.RotationError](err)
			if !ok || re.Rule != c.rule || !errors.Is(err, api.ErrBadRotation) || !errors.Is(err, c.vrfErr) {
				t.Fatalf("got %v, want %s wrapping %v", err, c.rule, c.vrfErr)
			}
		})
	}
	// An invalid new key (small order) fails as a key error, not a proof.
	small := &api.RotationRecord{Kind: api.KeyVRF, Sequence: 1}
	if err := small.ProveVRFRotation(origin, pub(oldK), [32]byte{1}, oldK.ProveRotation, newK.ProveRotation); err != nil {
		t.Fatal(err)
	}
	if err := api.VerifyRotation(origin, small, vrf.VerifyRotationProof); !errors.Is(err, vrf.ErrInvalidKey) {
		t.Errorf("small-order new key: %v, want vrf.ErrInvalidKey", err)
	}
}
