package e2e

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/vrf"
)

// TestRotateVRFKey rotates the VRF key of a running deployment (design.md
// 11.2) over gRPC: forged rotations are refused by the directory; after
// the honest one the owner's monitor crosses the re-indexing without
// alerts, a client offline during it catches up (its remembered contact
// checks clean at the old index, then across a change at the new one),
// and a new client that pinned the old key follows the rotation.
func TestRotateVRFKey(t *testing.T) {
	ctx := context.Background()
	d := newRotationDeployment(t)
	via := &liveDir{DirectoryClient: d.Dir}
	alice, _, err := d.NewDevice(ctx, via, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	const handle = "mailto:alice@example.com"
	if err := d.Enroll(ctx, alice, handle, false); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Monitor(ctx); err != nil {
		t.Fatal(err)
	}
	// The offline device encrypts to alice, so remembers her as a
	// contact (design.md 13.3).
	offline, _, err := d.NewDevice(ctx, via, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Enroll(ctx, offline, "mailto:bob@example.com", false); err != nil {
		t.Fatal(err)
	}
	if _, err := offline.Encrypt(ctx, handle, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	before, err := offline.Lookup(ctx, handle)
	if err != nil {
		t.Fatal(err)
	}

	// Forged rotations: refused, the key unchanged.
	mallory, _ := vrf.GenerateKey(nil)
	for name, keys := range map[string][2]*vrf.PrivateKey{
		"old key's proof by another key": {mallory, nil},
		"new key's proof by another key": {nil, mallory},
	} {
		raw, err := d.VRFRotationRecord(1, keys[0], keys[1])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Operator.Rotate(ctx, &ktpb.RotateRequest{Record: raw}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: Rotate = %v, want PermissionDenied", name, err)
		}
	}

	// The honest rotation (control).
	if _, err := d.RotateVRF(ctx, 1); err != nil {
		t.Fatal(err)
	}
	newPub := d.Keys.NextVRF.Public()

	reps, err := alice.Monitor(ctx)
	if err != nil {
		t.Fatalf("the owner's monitor across the rotation: %v", err)
	}
	if len(reps[0].Alerts) != 0 {
		t.Fatalf("alerts across an honest re-indexing: %v", reps[0].Alerts)
	}
	if !alice.Params().VRFKey.Equal(newPub) {
		t.Fatal("the owner's client did not follow the VRF rotation")
	}
	if _, err := alice.Monitor(ctx); err != nil {
		t.Fatalf("the next poll: %v", err)
	}

	// The offline client: its lookup fails under the old key, it follows
	// the rotation, and its remembered contact is unchanged.
	res, err := offline.Lookup(ctx, handle)
	if err != nil {
		t.Fatalf("offline client after the rotation: %v", err)
	}
	if res.Version != before.Version || res.LeafHash != before.LeafHash || res.RecordIndex != before.Index || res.Index == before.Index {
		t.Fatalf("offline client: version %d (was %d), record index moved %v", res.Version, before.Version, res.RecordIndex != before.Index)
	}
	if !offline.Params().VRFKey.Equal(newPub) {
		t.Fatal("the offline client did not follow the VRF rotation")
	}

	// A change at the new index: the owner sees its own change, and the
	// offline client's contact check crosses the move.
	subs, err := alice.Rekey(ctx)
	if err != nil {
		t.Fatalf("a change after the rotation: %v", err)
	}
	if _, err := alice.AwaitVisible(ctx, subs...); err != nil {
		t.Fatal(err)
	}
	reps, err = alice.Monitor(ctx)
	if err != nil || len(reps[0].Alerts) != 0 {
		t.Fatalf("monitor after a change at the new index: %v %v", err, reps)
	}
	if res, err = offline.Lookup(ctx, handle); err != nil || res.Version != before.Version+1 || res.RecordIndex != res.Index {
		t.Fatalf("contact check across the move: %v (version %d)", err, res.Version)
	}
	reports, err := offline.CheckContacts(ctx)
	if err != nil || len(reports) != 1 || reports[0].Current != before.Version+1 {
		t.Fatalf("contacts after the move: %v %+v", err, reports)
	}

	// Clients served a forged VRF rotation refuse it (the controls are
	// the clients above): a proof by another key, and a record that is
	// not the log's.
	forgeVRF := func(proveOld, newKey *vrf.PrivateKey) func(*ktpb.Rotations) {
		return func(r *ktpb.Rotations) {
			rec := &api.RotationRecord{Kind: api.KeyVRF, Sequence: 1}
			if err := rec.ProveVRFRotation(d.Origin, [32]byte(d.Keys.VRF.Public().Bytes()), [32]byte(newKey.Public().Bytes()), proveOld.ProveRotation, newKey.ProveRotation); err != nil {
				t.Error(err)
				return
			}
			b, _ := rec.MarshalBinary()
			for _, x := range r.Rotations {
				if p, err := api.ParseRotationRecord(x.Record); err == nil && p.Kind == api.KeyVRF {
					x.Record = b
				}
			}
		}
	}
	for _, c := range []struct {
		name  string
		forge func(*ktpb.Rotations)
		rule  api.Rule
	}{
		{"old key's proof by another key", forgeVRF(mallory, d.Keys.NextVRF), api.RuleRotationOldProof},
		{"a rotation to another key, not in the log", forgeVRF(d.Keys.VRF, mallory), ""},
	} {
		fc, _, err := d.NewClient(&liveDir{DirectoryClient: d.Dir, forge: c.forge}, client.Config{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = fc.Lookup(ctx, handle)
		if !errors.Is(err, client.ErrRotation) {
			t.Fatalf("%s: Lookup = %v, want ErrRotation", c.name, err)
		}
		if re, ok := errors.AsType[*api.RotationError](err); c.rule != "" && (!ok || re.Rule != c.rule) {
			t.Fatalf("%s: %v, want rule %s", c.name, err, c.rule)
		}
	}

	// A client pinned before the rotation, new now.
	late, _, err := d.NewClient(via, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := late.Lookup(ctx, handle); err != nil {
		t.Fatalf("a new client with the old pinned key: %v", err)
	}
}
