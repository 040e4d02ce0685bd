package client_test

import (
	"errors"
	"testing"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/smt"
	"github.com/keytrans/kt/vrf"
)

// Rotation of the VRF key and re-indexing (design.md 11.2) in the
// simulator: rotateVRF logs a kind-2 rotation record and makes the new key
// the simulator's, move logs a move entry, lookupR answers lookups as
// design.md 11.2 says a directory does after a rotation.

// rotateVRF logs a rotation of the VRF key to a new key and returns the
// client parameters that follow it (what a client has after accepting the
// record, design.md 11.1).
func (f *fixture) rotateVRF(t testing.TB) (*client.Params, *vrf.PrivateKey) {
	t.Helper()
	oldK := f.k.vrf
	newK, err := vrf.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &api.RotationRecord{Kind: api.KeyVRF, Sequence: 1}
	if err := r.ProveVRFRotation(testOrigin, [32]byte(oldK.Public().Bytes()), [32]byte(newK.Public().Bytes()), oldK.ProveRotation, newK.ProveRotation); err != nil {
		t.Fatal(err)
	}
	f.s.append(mustMarshal(t, r))
	f.k.vrf = newK
	p := *f.p
	p.VRFKey = newK.Public()
	p.PrevVRFKeys = []*vrf.PublicKey{oldK.Public()}
	return &p, oldK
}

// vrfIndex returns name's index and proof under k.
func vrfIndex(t testing.TB, k *vrf.PrivateKey, name string) ([32]byte, []byte) {
	canon, err := api.NormalizeHandle(name)
	if err != nil {
		t.Fatal(err)
	}
	return k.Prove(api.VRFInput(canon))
}

// moveTo logs the move of name's history to index to (its index under the
// new key for an honest directory) and makes to the handle's index.
func (f *fixture) moveTo(t testing.TB, name string, to [32]byte) {
	t.Helper()
	h := f.s.handle(name)
	c := f.s.latest[h.index]
	mv := &api.MoveEntry{Sequence: 1, OldIndex: h.index, NewIndex: to, Leaf: c.leaf}
	f.s.append(mustMarshal(t, mv))
	f.s.pending = append(f.s.pending, smt.Update{Key: to, Value: c.leaf})
	f.s.latest[to] = c
	h.index = to
}

func (f *fixture) move(t testing.TB, name string) {
	to, _ := vrfIndex(t, f.k.vrf, name)
	f.moveTo(t, name, to)
}

// lookupR answers a lookup at the latest epoch after a rotation from
// oldK: a moved record's VRF proof under oldK, or the fallback under oldK
// when the current index is absent.
func (f *fixture) lookupR(t testing.TB, oldK *vrf.PrivateKey, name string, knownSize uint64) *ktpb.LookupResponse {
	t.Helper()
	resp := f.s.lookup(name, knownSize)
	e := f.s.ep()
	idx, _ := vrfIndex(t, f.k.vrf, name)
	old, pi := vrfIndex(t, oldK, name)
	if c := e.latest[idx]; c != nil {
		if c.record.Index == old {
			resp.RecordVrfProof = pi
			p, _ := e.snap.Prove(old)
			resp.PrevMapProof = mustMarshal(t, p)
		}
		return resp
	}
	p, _ := e.snap.Prove(old)
	resp.PrevVrfProof, resp.PrevMapProof = pi, mustMarshal(t, p)
	if c := e.latest[old]; c != nil {
		resp.ChangeRecord, resp.Opening, resp.DeviceSet = c.bytes, c.opening[:], c.set
	}
	return resp
}

func wantErr(t *testing.T, err, sentinel error) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("got %v, want %v", err, sentinel)
	}
	var ve *client.VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("%v is not a *client.VerifyError", err)
	}
}

// TestLookupAcrossVRFRotation: after a rotation, a moved handle (not
// changed since), a handle not moved yet, a handle changed after its move
// and an unregistered handle all verify under the new key (controls); each
// way of hiding or misplacing a history fails with its typed error.
func TestLookupAcrossVRFRotation(t *testing.T) {
	f := newFixture(t)
	aliceOld := f.s.handle(alice).index
	bobOld := f.s.handle(bob).index
	p2, oldK := f.rotateVRF(t)
	f.move(t, alice)
	f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})

	// Controls.
	res, err := client.VerifyLookup(p2, nil, alice, f.lookupR(t, oldK, alice, 0), f.now, nil)
	if err != nil {
		t.Fatalf("control: moved alice: %v", err)
	}
	if aliceNew, _ := vrfIndex(t, f.k.vrf, alice); res.Index != aliceNew || res.RecordIndex != aliceOld || res.NotMoved || res.Version != 1 {
		t.Fatalf("control: moved alice: index %x record index %x not moved %v version %d", res.Index[:4], res.RecordIndex[:4], res.NotMoved, res.Version)
	}
	res, err = client.VerifyLookup(p2, nil, bob, f.lookupR(t, oldK, bob, 0), f.now, nil)
	if err != nil {
		t.Fatalf("control: bob, not moved: %v", err)
	}
	if !res.NotMoved || res.RecordIndex != bobOld || !res.Registered {
		t.Fatalf("control: bob: not moved %v, record index %x, registered %v", res.NotMoved, res.RecordIndex[:4], res.Registered)
	}
	res, err = client.VerifyLookup(p2, nil, carol, f.lookupR(t, oldK, carol, 0), f.now, nil)
	if err != nil || res.Registered {
		t.Fatalf("control: carol, never registered: %v, registered %v", err, res != nil && res.Registered)
	}

	// The client that did not follow the rotation refuses every answer:
	// the proofs are under a key it does not know.
	_, err = client.VerifyLookup(f.p, nil, alice, f.lookupR(t, oldK, alice, 0), f.now, nil)
	wantErr(t, err, client.ErrVRF)

	t.Run("fallback withheld for a handle not moved", func(t *testing.T) {
		resp := f.lookupR(t, oldK, bob, 0)
		resp.PrevVrfProof, resp.PrevMapProof, resp.ChangeRecord, resp.Opening, resp.DeviceSet = nil, nil, nil, nil, nil
		_, err := client.VerifyLookup(p2, nil, bob, resp, f.now, nil)
		wantErr(t, err, client.ErrMapProof)
	})
	t.Run("fallback under a wrong proof", func(t *testing.T) {
		resp := f.lookupR(t, oldK, bob, 0)
		_, pi := vrfIndex(t, oldK, carol)
		resp.PrevVrfProof = pi
		_, err := client.VerifyLookup(p2, nil, bob, resp, f.now, nil)
		wantErr(t, err, client.ErrVRF)
	})
	t.Run("fallback hides the record", func(t *testing.T) {
		resp := f.lookupR(t, oldK, bob, 0)
		resp.ChangeRecord, resp.Opening, resp.DeviceSet = nil, nil, nil
		_, err := client.VerifyLookup(p2, nil, bob, resp, f.now, nil)
		wantErr(t, err, client.ErrMapProof)
	})
	t.Run("moved record without its VRF proof", func(t *testing.T) {
		resp := f.lookupR(t, oldK, alice, 0)
		resp.RecordVrfProof, resp.PrevMapProof = nil, nil
		_, err := client.VerifyLookup(p2, nil, alice, resp, f.now, nil)
		wantErr(t, err, client.ErrRecordMismatch)
	})
	t.Run("moved record without the map proof at its own index", func(t *testing.T) {
		resp := f.lookupR(t, oldK, alice, 0)
		resp.PrevMapProof = nil
		_, err := client.VerifyLookup(p2, nil, alice, resp, f.now, nil)
		wantErr(t, err, client.ErrMalformed)
	})
	t.Run("moved record with the map proof of another index", func(t *testing.T) {
		resp := f.lookupR(t, oldK, alice, 0)
		resp.PrevMapProof = resp.MapProof
		_, err := client.VerifyLookup(p2, nil, alice, resp, f.now, nil)
		wantErr(t, err, client.ErrMapProof)
	})
	t.Run("moved record with another handle's VRF proof", func(t *testing.T) {
		resp := f.lookupR(t, oldK, alice, 0)
		_, resp.RecordVrfProof = vrfIndex(t, oldK, bob)
		_, err := client.VerifyLookup(p2, nil, alice, resp, f.now, nil)
		wantErr(t, err, client.ErrVRF)
	})
	t.Run("moved record with a proof under no earlier key", func(t *testing.T) {
		resp := f.lookupR(t, oldK, alice, 0)
		_, resp.RecordVrfProof = vrfIndex(t, f.k.vrf, bob)
		_, err := client.VerifyLookup(p2, nil, alice, resp, f.now, nil)
		wantErr(t, err, client.ErrVRF)
	})

	// The directory moves bob's history to alice's new index: alice's
	// lookup shows a record moved from bob's old index, which alice's
	// proof under the old key does not give.
	t.Run("another handle's history at the new index", func(t *testing.T) {
		g := newFixture(t)
		_, gOld := g.rotateVRF(t)
		aliceNew, _ := vrfIndex(t, g.k.vrf, alice)
		g.moveTo(t, bob, aliceNew)
		g.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
		resp := g.s.lookup(alice, 0)
		_, resp.RecordVrfProof = vrfIndex(t, gOld, alice)
		bobOld, _ := vrfIndex(t, gOld, bob)
		pp, _ := g.s.ep().snap.Prove(bobOld)
		resp.PrevMapProof = mustMarshal(t, pp)
		p := *g.p
		p.VRFKey, p.PrevVRFKeys = g.k.vrf.Public(), []*vrf.PublicKey{gOld.Public()}
		_, err := client.VerifyLookup(&p, nil, alice, resp, g.now, nil)
		wantErr(t, err, client.ErrRecordMismatch)
	})

	// After a change at the new index the record is there and needs no
	// extra proof.
	f.s.change(alice, set(f.a1), api.AuthDevice, f.a1.sign)
	f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
	res, err = client.VerifyLookup(p2, nil, alice, f.lookupR(t, oldK, alice, 0), f.now, nil)
	if err != nil || res.Version != 2 || res.RecordIndex != res.Index {
		t.Fatalf("control: alice changed after the move: %v", err)
	}
}

// monitored returns a1's monitoring state of alice after an honest poll
// of the latest epoch, before any rotation.
func (f *fixture) monitored(t testing.TB) (*client.MonitorState, *client.Trusted) {
	t.Helper()
	st := &client.MonitorState{Index: f.s.handle(alice).index}
	res, err := client.VerifyMonitor(f.p, nil, st, f.s.monitor(alice, 0, 0), f.own(), f.now)
	if err != nil {
		t.Fatal(err)
	}
	return res.State, res.Trusted
}

// crossMonitor is the owner's poll across the rotation: a lookup under
// the new key, then the monitoring answer for where the history is.
func (f *fixture) crossMonitor(t testing.TB, p *client.Params, oldK *vrf.PrivateKey, st *client.MonitorState, tr *client.Trusted) (*client.MonitorResult, error) {
	t.Helper()
	lk, err := client.VerifyLookup(p, tr, alice, f.lookupR(t, oldK, alice, tr.Size), f.now, nil)
	if err != nil {
		return nil, err
	}
	return client.VerifyMonitorMove(p, lk.Trusted, st, lk, f.s.monitor(alice, st.Version, lk.Trusted.Size), f.own(), f.now)
}

// TestMonitorAcrossVRFRotation: the owner's monitor crosses an honest
// re-indexing without alerts, before and after the move and with a device
// offline across it; it fails with ErrMoved when the directory moved the
// history somewhere else.
func TestMonitorAcrossVRFRotation(t *testing.T) {
	t.Run("honest, polled before and after the move", func(t *testing.T) {
		f := newFixture(t)
		st, tr := f.monitored(t)
		oldIdx := st.Index
		p2, oldK := f.rotateVRF(t)
		f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
		res, err := f.crossMonitor(t, p2, oldK, st, tr)
		if err != nil {
			t.Fatalf("not moved yet: %v", err)
		}
		if res.State.Index != oldIdx || len(res.Alerts) != 0 {
			t.Fatalf("not moved yet: index %x, alerts %v", res.State.Index[:4], res.Alerts)
		}
		f.move(t, alice)
		f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
		res, err = f.crossMonitor(t, p2, oldK, res.State, res.Trusted)
		if err != nil {
			t.Fatalf("moved: %v", err)
		}
		newIdx, _ := vrfIndex(t, f.k.vrf, alice)
		if res.State.Index != newIdx || len(res.Alerts) != 0 || len(res.Changes) != 0 {
			t.Fatalf("moved: index %x, alerts %v, changes %d", res.State.Index[:4], res.Alerts, len(res.Changes))
		}
		// From now on an ordinary poll at the new index.
		f.s.change(alice, set(f.a1), api.AuthDevice, f.a1.sign)
		f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
		res, err = client.VerifyMonitor(p2, res.Trusted, res.State, f.s.monitor(alice, res.State.Version, res.Trusted.Size), f.own(), f.now)
		if err != nil || len(res.Alerts) != 0 || len(res.Changes) != 1 {
			t.Fatalf("after the move: %v, alerts %v", err, res)
		}
	})

	t.Run("offline across the rotation", func(t *testing.T) {
		f := newFixture(t)
		st, tr := f.monitored(t)
		// Missed: a change at the old index, the rotation, the move and a
		// change at the new index.
		f.s.change(alice, set(f.a1), api.AuthDevice, f.a1.sign)
		p2, oldK := f.rotateVRF(t)
		f.move(t, alice)
		f.s.change(alice, set(f.a1, f.a2), api.AuthDevice, f.a1.sign)
		f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
		res, err := f.crossMonitor(t, p2, oldK, st, tr)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Changes) != 2 || len(res.Alerts) != 0 || res.State.Version != 3 {
			t.Fatalf("changes %d alerts %v version %d", len(res.Changes), res.Alerts, res.State.Version)
		}
	})

	t.Run("history moved elsewhere, an enrollment in its place", func(t *testing.T) {
		f := newFixture(t)
		f.s.change(alice, set(f.a1), api.AuthDevice, f.a1.sign) // version 2
		f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
		st, tr := f.monitored(t)
		p2, oldK := f.rotateVRF(t)
		var elsewhere [32]byte
		elsewhere[0] = 0xee
		f.moveTo(t, alice, elsewhere)
		// A fresh history at alice's new index, enrolled by a key that
		// is not hers.
		h := f.s.handle(alice)
		h.index, _ = vrfIndex(t, f.k.vrf, alice)
		h.versions = nil
		m := newDevice(t, "mallory", api.SuiteX25519)
		f.s.change(alice, set(m), api.AuthEnroll, m.sign)
		f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
		_, err := f.crossMonitor(t, p2, oldK, st, tr)
		wantErr(t, err, client.ErrMoved)
	})

	// Records at the old index after one at the new index, or at a third
	// index, are not the chain (design.md 11.2), whatever the map says.
	for _, c := range []struct {
		name  string
		where func(f *fixture, old, new [32]byte) [32]byte
	}{
		{"a record at the old index after the move", func(f *fixture, old, new [32]byte) [32]byte { return old }},
		{"a record at a third index", func(f *fixture, old, new [32]byte) [32]byte { return [32]byte{0x33} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			st, tr := f.monitored(t)
			oldIdx := st.Index
			p2, oldK := f.rotateVRF(t)
			f.move(t, alice)
			f.s.change(alice, set(f.a1), api.AuthDevice, f.a1.sign)
			h := f.s.handle(alice)
			newIdx := h.index
			h.index = c.where(f, oldIdx, newIdx)
			f.s.change(alice, set(f.a1, f.a2), api.AuthDevice, f.a1.sign)
			h.index = newIdx
			f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
			_, err := f.crossMonitor(t, p2, oldK, st, tr)
			wantErr(t, err, client.ErrMoved)
			wantErr(t, err, client.ErrMonitorGap)
		})
	}

	t.Run("a history at the new index that does not link", func(t *testing.T) {
		f := newFixture(t)
		st, tr := f.monitored(t)
		p2, oldK := f.rotateVRF(t)
		var elsewhere [32]byte
		elsewhere[0] = 0xee
		f.moveTo(t, alice, elsewhere)
		h := f.s.handle(alice)
		h.index, _ = vrfIndex(t, f.k.vrf, alice)
		m := newDevice(t, "mallory", api.SuiteX25519)
		f.s.logChange(f.s.record(alice, set(m), api.AuthRecovery, f.k.recovery, func(r *api.ChangeRecord) { r.Prev[0] ^= 1 }))
		f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
		_, err := f.crossMonitor(t, p2, oldK, st, tr)
		wantErr(t, err, client.ErrMoved)
		wantErr(t, err, client.ErrMonitorGap)
	})
}

// TestStrictAcrossVRFRotation: a strict-mode lookup of a record moved and
// not changed since verifies the account signature at the record's own
// index (design.md 11.2), where the owner signed it; the control is the
// same lookup before the rotation, and a set signed for the new index
// (which no owner signed) is refused.
func TestStrictAcrossVRFRotation(t *testing.T) {
	for _, signAtNew := range []bool{false, true} {
		f := newFixture(t)
		pinned := f.account(t)
		h := f.s.handle(alice)
		s := set(f.a1, f.a2)
		p2Key, _ := vrf.GenerateKey(nil)
		newIdx, _ := p2Key.Prove(api.VRFInput(h.name))
		at := h.index
		if signAtNew {
			at = newIdx
		}
		s.SignAccount(testOrigin, at, 2, f.acct)
		f.s.change(alice, s, api.AuthDevice, f.a1.sign)
		f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
		if _, err := client.VerifyLookup(f.p, nil, alice, f.s.lookup(alice, 0), f.now, pinned); (err == nil) == signAtNew {
			t.Fatalf("before the rotation (signed at the new index: %v): %v", signAtNew, err)
		}
		// The rotation to p2Key, and the move.
		oldK := f.k.vrf
		r := &api.RotationRecord{Kind: api.KeyVRF, Sequence: 1}
		if err := r.ProveVRFRotation(testOrigin, [32]byte(oldK.Public().Bytes()), [32]byte(p2Key.Public().Bytes()), oldK.ProveRotation, p2Key.ProveRotation); err != nil {
			t.Fatal(err)
		}
		f.s.append(mustMarshal(t, r))
		f.k.vrf = p2Key
		p2 := *f.p
		p2.VRFKey, p2.PrevVRFKeys = p2Key.Public(), []*vrf.PublicKey{oldK.Public()}
		f.move(t, alice)
		f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)})
		_, err := client.VerifyLookup(&p2, nil, alice, f.lookupR(t, oldK, alice, 0), f.now, pinned)
		switch {
		case !signAtNew && err != nil:
			t.Fatalf("control: a moved record signed at its own index: %v", err)
		case signAtNew:
			wantErr(t, err, client.ErrStrict)
		}
	}
}
