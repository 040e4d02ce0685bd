package directory

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/auditor/replay"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/vrf"
)

// vrfRotation returns a kind-2 rotation record (sequence 1) from old to
// nw, proved by proveOld and proveNew.
func vrfRotation(t testing.TB, old, nw, proveOld, proveNew *vrf.PrivateKey) []byte {
	t.Helper()
	r := &api.RotationRecord{Kind: api.KeyVRF, Sequence: 1}
	if err := r.ProveVRFRotation(testOrigin, [32]byte(old.Public().Bytes()), [32]byte(nw.Public().Bytes()), proveOld.ProveRotation, proveNew.ProveRotation); err != nil {
		t.Fatal(err)
	}
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVRFRotation rotates the VRF key of a running directory (design.md
// 11.2) and follows it with the client library: lookups of moved, changed
// and unregistered handles verify under the new key with the parameters
// that followed the rotation record (and fail with ErrVRF with the old
// ones); the owner's monitor crosses the move without alerts, online and
// offline; an auditor's replay of the whole log finds no violation (the
// map the directory publishes is the one the moves imply); and the
// directory restarts into the rotated state. Forged rotations are refused
// and leave the log unchanged.
func TestVRFRotation(t *testing.T) {
	next, err := vrf.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	e := &env{t: t, k: newKeys(t), b: backends[0], logDir: dir + "/log", stateDir: dir + "/state"}
	e.tune = func(c *Config) {
		c.NextVRFKey = next
		c.VerifyVRFProof = vrf.VerifyRotationProof
	}
	e.start()
	t.Cleanup(e.stop)
	old := e.k.vrf
	ctx := ctxT(t)

	dev := testkit.NewDevice()
	alice := newHandle(t, e.k, "alice@example.com")
	e.enroll(alice, dev.Sign, testkit.Set([16]byte{1}, dev))
	aliceOld := alice.index
	bob := newHandle(t, e.k, "bob@example.com")
	bdev := testkit.NewDevice()
	i := e.enroll(bob, bdev.Sign, testkit.Set([16]byte{2}, bdev))
	e.waitEpoch(i)

	// The owner's monitor before the rotation: at version 1 (offline from
	// now on) and, after one more change, at version 2.
	own := client.OwnKeys{Device: dev.Pub()}
	mon := func(p *client.Params, st *client.MonitorState, index [32]byte) *ktpb.MonitorResponse {
		t.Helper()
		r, err := e.d.Monitor(ctx, signedMonitor(&ktpb.MonitorRequest{Index: index[:], KnownVersion: st.Version}, dev.Sign, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	st0 := &client.MonitorState{Index: aliceOld}
	r1, err := client.VerifyMonitor(e.params, nil, st0, mon(e.params, st0, aliceOld), own, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	offline := r1.State
	dev2 := testkit.NewDevice()
	i = e.apply(alice, alice.change(api.AuthDevice, dev.Sign, testkit.Set([16]byte{1}, dev, dev2), nil))
	e.waitEpoch(i)
	r2, err := client.VerifyMonitor(e.params, nil, offline, mon(e.params, offline, aliceOld), own, time.Now())
	if err != nil || len(r2.Alerts) != 0 {
		t.Fatalf("monitor before the rotation: %v %v", err, r2)
	}
	online := r2.State

	// Forged rotations: refused, nothing logged.
	size := e.d.size
	wrong, _ := vrf.GenerateKey(nil)
	for name, rec := range map[string][]byte{
		"old key's proof by another key": vrfRotation(t, old, next, wrong, next),
		"new key's proof by another key": vrfRotation(t, old, next, old, wrong),
		"to a key that is not the next":  vrfRotation(t, old, wrong, old, wrong),
	} {
		_, err := e.d.Rotate(ctx, &ktpb.RotateRequest{Record: rec})
		if !errors.Is(err, ErrUnauthorized) && !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: Rotate = %v, want a refusal", name, err)
		}
	}
	if e.d.size != size {
		t.Fatalf("forged rotations changed the log size from %d to %d", size, e.d.size)
	}

	// The rotation (control).
	raw := vrfRotation(t, old, next, old, next)
	rr, err := e.d.Rotate(ctx, &ktpb.RotateRequest{Record: raw})
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	e.waitEpoch(rr.LogIndex + 1)
	p2, err := e.params.WithRotations([]client.Rotation{{LogIndex: rr.LogIndex, Record: raw}})
	if err != nil {
		t.Fatalf("following the rotation: %v", err)
	}
	aliceNew, _ := next.Prove(api.VRFInput(alice.handle))

	lookup := func(p *client.Params, handle string) (*client.LookupResult, error) {
		resp, err := e.d.Lookup(ctx, &ktpb.LookupRequest{Handle: handle})
		if err != nil {
			t.Fatalf("Lookup %s: %v", handle, err)
		}
		return client.VerifyLookup(p, nil, handle, resp, time.Now(), nil)
	}
	res, err := lookup(p2, alice.handle)
	if err != nil || res.Version != 2 || res.Index != aliceNew || res.RecordIndex != aliceOld || res.NotMoved {
		t.Fatalf("alice after the rotation: %v %+v", err, res)
	}
	if res, err := lookup(p2, bob.handle); err != nil || res.Version != 1 {
		t.Fatalf("bob after the rotation: %v", err)
	}
	if res, err := lookup(p2, "carol@example.com"); err != nil || res.Registered {
		t.Fatalf("carol, never registered, after the rotation: %v", err)
	}
	if _, err := lookup(e.params, alice.handle); !errors.Is(err, client.ErrVRF) {
		t.Fatalf("a client that did not follow the rotation: %v, want ErrVRF", err)
	}
	// The owner's monitor crosses the move.
	r3, err := client.VerifyMonitorMove(p2, nil, online, res, mon(p2, online, aliceNew), own, time.Now())
	if err != nil || len(r3.Alerts) != 0 || r3.State.Index != aliceNew {
		t.Fatalf("monitor across the move: %v %+v", err, r3)
	}

	// A change at the new index, then the offline device catches up.
	alice.index = aliceNew
	i = e.apply(alice, alice.change(api.AuthDevice, dev.Sign, testkit.Set([16]byte{1}, dev), nil))
	e.waitEpoch(i)
	res, err = lookup(p2, alice.handle)
	if err != nil || res.Version != 3 || res.RecordIndex != aliceNew {
		t.Fatalf("alice changed after the move: %v %+v", err, res)
	}
	r4, err := client.VerifyMonitorMove(p2, nil, offline, res, mon(p2, offline, aliceNew), own, time.Now())
	if err != nil || len(r4.Alerts) != 0 || len(r4.Changes) != 2 || r4.State.Version != 3 {
		t.Fatalf("offline device across the move: %v %+v", err, r4)
	}

	// An auditor replaying the whole log finds nothing wrong.
	ents, err := e.log.Entries(ctx, 0, e.d.size)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := replay.New(replay.Config{Origin: testOrigin, Verifier: e.k.verifier, RecoveryKey: [32]byte(e.k.recovery.Public().(ed25519.PublicKey)), VRFKey: [32]byte(old.Public().Bytes()), VerifyVRFProof: vrf.VerifyRotationProof})
	if err != nil {
		t.Fatal(err)
	}
	if vs := eng.Append(ents); len(vs) != 0 {
		t.Fatalf("the auditor's replay: %v", vs)
	}
	if seq, pending := eng.Reindexing(); seq != 1 || pending != 0 {
		t.Fatalf("the auditor's view of the re-indexing: rotation %d, %d pending", seq, pending)
	}

	// A restart keeps the rotated state.
	e.restart()
	if res, err := lookup(p2, alice.handle); err != nil || res.Version != 3 {
		t.Fatalf("after a restart: %v", err)
	}
	if res, err := lookup(p2, bob.handle); err != nil || res.Version != 1 || res.RecordIndex == res.Index {
		t.Fatalf("bob after a restart: %v %+v", err, res)
	}
}

// TestReplicatedVRFRotation: a reader follows a rotation of the VRF key
// that the writer logged: it answers under the new key, with the moved
// records proved, as the client library verifies.
func TestReplicatedVRFRotation(t *testing.T) {
	next, err := vrf.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b, _ := replicatedPairTuned(t, func(c *Config) {
		c.NextVRFKey = next
		c.VerifyVRFProof = vrf.VerifyRotationProof
	})
	ctx := ctxT(t)
	alice := newHandle(t, a.k, "alice@example.com")
	dev := testkit.NewDevice()
	i := a.enroll(alice, dev.Sign, testkit.Set([16]byte{1}, dev))
	b.lookup(alice.handle, i)

	raw := vrfRotation(t, a.k.vrf, next, a.k.vrf, next)
	rr, err := a.d.Rotate(ctx, &ktpb.RotateRequest{Record: raw})
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	p2, err := b.params.WithRotations([]client.Rotation{{LogIndex: rr.LogIndex, Record: raw}})
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(i uint64) *client.LookupResult {
		t.Helper()
		b.waitEpoch(i)
		resp, err := b.d.Lookup(ctx, &ktpb.LookupRequest{Handle: alice.handle})
		if err != nil {
			t.Fatal(err)
		}
		res, err := client.VerifyLookup(p2, nil, alice.handle, resp, time.Now(), nil)
		if err != nil {
			t.Fatalf("the reader's answer after the rotation: %v", err)
		}
		return res
	}
	if res := lookup(rr.LogIndex + 1); res.Version != 1 || res.RecordIndex == res.Index {
		t.Fatalf("reader, moved record: %+v", res)
	}
	alice.index, _ = next.Prove(api.VRFInput(alice.handle))
	i = a.apply(alice, alice.change(api.AuthDevice, dev.Sign, testkit.Set([16]byte{1}, dev, testkit.NewDevice()), nil))
	if res := lookup(i); res.Version != 2 || res.RecordIndex != res.Index {
		t.Fatalf("reader, changed after the move: %+v", res)
	}
}
