package replay_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/auditor/replay"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/log"
)

func rotationRecord(t *testing.T, kind api.KeyKind, seq uint64, old, nw ed25519.PrivateKey, mod func([]byte)) []byte {
	t.Helper()
	r := &api.RotationRecord{Kind: kind, Sequence: seq}
	if err := r.SignRotation(origin, old, nw); err != nil {
		t.Fatal(err)
	}
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(b)
	}
	return b
}

// TestReplayRecoveryRotation: after an honest rotation of the recovery key
// R6 accepts only the new key; each forged rotation is a violation naming
// its rule with an *api.RotationError, and is not followed.
func TestReplayRecoveryRotation(t *testing.T) {
	k := newLogKey(t)
	newKey := ktlog.Key("recovery 2")
	other := ktlog.Key("mallory")
	h := ktlog.Index("h1")
	d := ktlog.Key("d1")
	for _, c := range []struct {
		name   string
		record func(b *ktlog.Builder) []byte
		rule   replay.Rule // "" for the control
	}{
		{"control", func(b *ktlog.Builder) []byte { return rotationRecord(t, api.KeyRecovery, 1, b.Recovery, newKey, nil) }, ""},
		{"old key not current", func(b *ktlog.Builder) []byte { return rotationRecord(t, api.KeyRecovery, 1, other, newKey, nil) }, replay.RuleRotationOldKey},
		{"bad old proof", func(b *ktlog.Builder) []byte {
			return rotationRecord(t, api.KeyRecovery, 1, b.Recovery, newKey, func(r []byte) { r[80] ^= 1 })
		}, replay.RuleRotationOldProof},
		{"bad new proof", func(b *ktlog.Builder) []byte {
			return rotationRecord(t, api.KeyRecovery, 1, b.Recovery, newKey, func(r []byte) { r[len(r)-1] ^= 1 })
		}, replay.RuleRotationNewProof},
		{"skipped sequence", func(b *ktlog.Builder) []byte { return rotationRecord(t, api.KeyRecovery, 2, b.Recovery, newKey, nil) }, replay.RuleRotationSequence},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := ktlog.New(origin)
			b.Honest(1, 1)
			b.Change(h, api.AuthEnroll, d, ktlog.Devices(d))
			b.Epoch()
			oldRecovery := b.Recovery
			rot := b.Raw(c.record(b))
			b.Epoch()
			// A recovery by the new key, then one by the old key.
			byNew := b.Change(h, api.AuthRecovery, newKey, ktlog.Devices(d))
			byOld := b.Change(h, api.AuthRecovery, oldRecovery, ktlog.Devices(d))
			b.Epoch()
			e := newEngine(t, k, b, false)
			vs := e.Append(b.Entries())
			got := map[uint64]replay.Rule{}
			for _, v := range vs {
				got[v.Index] = v.Rule
			}
			if c.rule == "" {
				if len(vs) != 1 || got[byOld] != api.RuleRecovery {
					t.Fatalf("control: violations %v, want only R6 at the old key's recovery %d", vs, byOld)
				}
				if e.RecoveryKey() != ktlog.Pub(newKey) || len(e.Rotations()) != 1 {
					t.Fatal("control: the engine did not follow the rotation")
				}
				// The rotation survives a save and restore.
				st, _ := e.MarshalBinary()
				r, err := replay.Restore(replay.Config{Origin: origin, Verifier: k.v, RecoveryKey: ktlog.Pub(oldRecovery)}, st)
				if err != nil {
					t.Fatal(err)
				}
				if r.RecoveryKey() != ktlog.Pub(newKey) || len(r.Rotations()) != 1 {
					t.Fatal("restored engine lost the rotation")
				}
				return
			}
			if got[rot] != c.rule {
				t.Fatalf("violations %v, want %q at %d", vs, c.rule, rot)
			}
			for _, v := range vs {
				if v.Index == rot {
					if _, ok := errors.AsType[*api.RotationError](v.Err); !ok || !errors.Is(v.Err, api.ErrBadRotation) {
						t.Fatalf("violation error %v, want an *api.RotationError", v.Err)
					}
				}
			}
			// Not followed: the new key's recovery breaks R6, the old one's does not.
			if got[byNew] != api.RuleRecovery || got[byOld] != "" {
				t.Fatalf("after a refused rotation: violations %v", vs)
			}
			if e.RecoveryKey() != ktlog.Pub(oldRecovery) || len(e.Rotations()) != 0 {
				t.Fatal("the engine followed a refused rotation")
			}
		})
	}
}

// TestReplayLogRotation: after a rotation of the log key the engine
// verifies checkpoints under the new key, refuses the old key alone, and a
// fresh engine replays up to a checkpoint signed by the new key alone.
func TestReplayLogRotation(t *testing.T) {
	kp, kp2 := newKeyPair(t), newKeyPair(t)
	k, k2 := kp.logKey, kp2.logKey
	b := ktlog.New(origin)
	b.Honest(2, 1)
	b.Raw(rotationRecord(t, api.KeyLog, 1, kp.priv, kp2.priv, nil))
	b.Epoch()
	e := newEngine(t, k, b, false)
	if vs := e.Append(b.Entries()); len(vs) != 0 {
		t.Fatalf("violations %v", vs)
	}
	if _, _, err := e.Checkpoint(k.checkpoint(t, b.Entries())); err == nil {
		t.Fatal("a checkpoint signed by the rotated-out key alone was accepted")
	}
	if _, _, err := e.Checkpoint(k2.checkpoint(t, b.Entries())); err != nil {
		t.Fatalf("checkpoint under the new key: %v", err)
	}
	if e.LogVerifier().KeyHash() != k2.v.KeyHash() {
		t.Fatal("the engine's log key is not the new one")
	}
	// From scratch, to a checkpoint by the new key alone.
	f := newEngine(t, k, b, false)
	vs, err := f.ReplayTo(t.Context(), entrySource(b.Entries()), k2.checkpoint(t, b.Entries()), nil)
	if err != nil || len(vs) != 0 {
		t.Fatalf("ReplayTo across the rotation: %v, %v", vs, err)
	}
	// A forged rotation (old key not the log key) is a violation, and a
	// checkpoint under the forged new key is refused.
	mallory, other := newKeyPair(t), newKeyPair(t)
	fb := ktlog.New(origin)
	fb.Honest(2, 1)
	j := fb.Raw(rotationRecord(t, api.KeyLog, 1, other.priv, mallory.priv, nil))
	fb.Epoch()
	g := newEngine(t, k, fb, false)
	vs = g.Append(fb.Entries())
	if len(vs) != 1 || vs[0].Index != j || vs[0].Rule != replay.RuleRotationOldKey {
		t.Fatalf("forged log rotation: violations %v", vs)
	}
	if _, _, err := g.Checkpoint(mallory.logKey.checkpoint(t, fb.Entries())); err == nil {
		t.Fatal("a checkpoint under a forged rotation's key was accepted")
	}
	if _, _, err := g.Checkpoint(k.checkpoint(t, fb.Entries())); err != nil {
		t.Fatalf("control: the real key's checkpoint: %v", err)
	}
}

// keyPair is a log key and its Ed25519 private key.
type keyPair struct {
	logKey
	priv ed25519.PrivateKey
}

func newKeyPair(t *testing.T) keyPair {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	p, err := log.Ed25519PrivateKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{logKey{s, v}, p}
}

type entrySource [][]byte

func (s entrySource) Entries(_ context.Context, start, end uint64) ([][]byte, error) {
	return s[start:min(end, start+2)], nil
}
