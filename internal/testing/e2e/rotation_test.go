package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/fixture"
	"github.com/keytrans/kt/log"
)

// liveDir is a DirectoryClient that follows the deployment across
// restarts (each Restart dials a new connection), and optionally tampers
// with GetRotations answers: the directory as an adversary.
type liveDir struct {
	ktpb.DirectoryClient
	forge func(*ktpb.Rotations)
}

func (l *liveDir) GetRotations(ctx context.Context, in *ktpb.GetRotationsRequest, opts ...grpc.CallOption) (*ktpb.Rotations, error) {
	r, err := l.DirectoryClient.GetRotations(ctx, in, opts...)
	if err == nil && l.forge != nil && len(r.GetRotations()) > 0 {
		l.forge(r)
	}
	return r, err
}

func newRotationDeployment(t *testing.T) *fixture.Deployment {
	return fixture.New(t, fixture.Options{Origin: origin, EpochInterval: epochInterval, HeartbeatInterval: heartbeat})
}

func restart(t *testing.T, ctx context.Context, d *fixture.Deployment, via ...*liveDir) {
	t.Helper()
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	for _, v := range via {
		v.DirectoryClient = d.Dir
	}
}

// checkpointSigners returns the key hashes of the log-named signatures of
// the latest checkpoint.
func checkpointSigners(t *testing.T, ctx context.Context, d *fixture.Deployment) []uint32 {
	t.Helper()
	ep, err := d.Dir.GetEpoch(ctx, &ktpb.GetEpochRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = note.Open(ep.GetCheckpoint(), note.VerifierList())
	var u *note.UnverifiedNoteError
	if !errors.As(err, &u) {
		t.Fatalf("checkpoint: %v", err)
	}
	var hs []uint32
	for _, s := range u.Note.UnverifiedSigs {
		if s.Name == origin {
			hs = append(hs, s.Hash)
		}
	}
	slices.Sort(hs)
	return hs
}

// awaitSigners waits until the served checkpoint carries exactly the log
// signatures of vkeys (a restart serves the stored epoch until the next).
func awaitSigners(t *testing.T, ctx context.Context, d *fixture.Deployment, vkeys ...string) {
	t.Helper()
	want := make([]uint32, len(vkeys))
	for i, v := range vkeys {
		want[i] = keyHash(t, v)
	}
	slices.Sort(want)
	err := fixture.Poll(ctx, func() (bool, error) {
		got := checkpointSigners(t, ctx, d)
		return slices.Equal(got, want), nil
	})
	if err != nil {
		t.Fatalf("the served checkpoint is signed by %08x, want %08x: %v", checkpointSigners(t, ctx, d), want, err)
	}
}

func keyHash(t *testing.T, vkey string) uint32 {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return v.KeyHash()
}

// TestRotateLogKey rotates the log signing key end to end over gRPC
// (design.md 11.1): the operator configures the next key and restarts
// (checkpoints signed by both keys), appends the rotation record, the
// witness learns the new key, the operator finishes (checkpoints signed by
// the new key alone). A client online during the rotation follows it from
// the second signature; a client offline during the whole rotation
// catches up from its handover epoch; a client pinned with the published
// parameters (the key before the rotation) follows it from scratch; a
// client restarted from its store keeps the new key.
func TestRotateLogKey(t *testing.T) {
	ctx := context.Background()
	d := newRotationDeployment(t)
	oldVKey := d.Keys.LogVKey
	via := &liveDir{DirectoryClient: d.Dir}
	alice, _, err := d.NewDevice(ctx, via, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	const handle = "mailto:alice@example.com"
	if err := d.Enroll(ctx, alice, handle, false); err != nil {
		t.Fatal(err)
	}
	online, onlineStore, err := d.NewClient(via, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	offline, _, err := d.NewClient(via, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{online, offline} {
		if _, err := c.Lookup(ctx, handle); err != nil {
			t.Fatal(err)
		}
	}

	// A rotation to a key the log does not sign with is refused.
	if err := d.Keys.StartLogRotation(origin); err != nil {
		t.Fatal(err)
	}
	_, early, err := d.Keys.LogRotation(origin, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Operator.Rotate(ctx, &ktpb.RotateRequest{Record: early}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Rotate before the log signs with the new key: %v, want InvalidArgument", err)
	}

	// 1. The log signs with both keys.
	restart(t, ctx, d, via)
	newVKey := d.Keys.NextLogVKey
	awaitSigners(t, ctx, d, oldVKey, newVKey)
	// 2. The rotation record.
	_, raw, err := d.Keys.LogRotation(origin, 1)
	if err != nil {
		t.Fatal(err)
	}
	rr, err := d.Operator.Rotate(ctx, &ktpb.RotateRequest{Record: raw})
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if _, err := d.Operator.Rotate(ctx, &ktpb.RotateRequest{Record: raw}); status.Code(err) == codes.OK {
		t.Fatalf("the same rotation was accepted twice")
	}
	// The online client sees the second signature and follows.
	if _, err := online.Lookup(ctx, handle); err != nil {
		t.Fatalf("online lookup during the rotation: %v", err)
	}
	if got, want := online.Params().LogVerifier.KeyHash(), keyHash(t, newVKey); got != want {
		t.Fatalf("online client verifies with key %08x, want the new key %08x", got, want)
	}

	// 3. The witness learns the new key (ktauditor does by replaying the
	// log), and the operator finishes the rotation.
	for _, w := range d.Witnesses {
		if err := w.AddLog(origin, newVKey); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Keys.FinishLogRotation(); err != nil {
		t.Fatal(err)
	}
	restart(t, ctx, d, via)
	awaitSigners(t, ctx, d, newVKey)
	if _, err := online.Lookup(ctx, handle); err != nil {
		t.Fatalf("online lookup after the rotation: %v", err)
	}

	// The offline client's trusted checkpoint predates the rotation.
	st, _ := offline.State(ctx)
	if st.Trusted.Size > rr.GetLogIndex() {
		t.Fatalf("the offline client trusts size %d, beyond the rotation at %d", st.Trusted.Size, rr.GetLogIndex())
	}
	if _, err := offline.Lookup(ctx, handle); err != nil {
		t.Fatalf("offline client catching up: %v", err)
	}
	if got, want := offline.Params().LogVerifier.KeyHash(), keyHash(t, newVKey); got != want {
		t.Fatalf("offline client verifies with %08x, want %08x", got, want)
	}

	// The published parameters still name the key the clients pinned.
	params, err := d.Dir.GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if params.GetLogPublicKey() != oldVKey {
		t.Fatalf("parameters name log key %q, want the key before the rotation %q", params.GetLogPublicKey(), oldVKey)
	}
	fresh, err := client.New(via, d.Params, &client.MemStore{}, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Lookup(ctx, handle); err != nil {
		t.Fatalf("a new client with the pinned parameters: %v", err)
	}
	if got, want := fresh.Params().LogVerifier.KeyHash(), keyHash(t, newVKey); got != want {
		t.Fatalf("new client verifies with %08x, want %08x", got, want)
	}

	// The rotation is persisted: a client started from the online
	// client's store verifies with the new key without asking.
	again, err := client.New(via, d.Params, onlineStore, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := again.Lookup(ctx, handle); err != nil {
		t.Fatal(err)
	}
	if s, _ := again.State(ctx); len(s.Rotations) != 1 || again.Params().LogVerifier.KeyHash() != keyHash(t, newVKey) {
		t.Fatalf("restarted client: %d rotations, key %08x", len(s.Rotations), again.Params().LogVerifier.KeyHash())
	}
}

// TestRotationForgedRefusedByClient serves forged rotations to clients
// that trusted the log before an honest log key rotation and expects each
// refusal with its typed error; the control, the honest answer, is
// accepted by a client in the same position.
func TestRotationForgedRefusedByClient(t *testing.T) {
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
	if err := d.Keys.StartLogRotation(origin); err != nil {
		t.Fatal(err)
	}
	oldKey, err := log.Ed25519PrivateKey(d.Keys.LogSKey)
	if err != nil {
		t.Fatal(err)
	}
	newKey, err := log.Ed25519PrivateKey(d.Keys.NextLogSKey)
	if err != nil {
		t.Fatal(err)
	}
	_, mallory, _ := ed25519.GenerateKey(nil)
	_, mallory2, _ := ed25519.GenerateKey(nil)
	sign := func(seq uint64, old, nw ed25519.PrivateKey) []byte {
		r := &api.RotationRecord{Kind: api.KeyLog, Sequence: seq}
		if err := r.SignRotation(origin, old, nw); err != nil {
			t.Fatal(err)
		}
		b, _ := r.MarshalBinary()
		return b
	}
	setRecord := func(b []byte) func(*ktpb.Rotations) {
		return func(r *ktpb.Rotations) { r.Rotations[0].Record = b }
	}
	cases := []struct {
		name  string
		forge func(*ktpb.Rotations)
		want  error
		rule  api.Rule
	}{
		{"control", nil, nil, ""},
		{"old key not current", setRecord(sign(1, mallory, mallory2)), client.ErrRotation, api.RuleRotationOldKey},
		{"bad new-key proof", func(r *ktpb.Rotations) {
			b := bytes.Clone(r.Rotations[0].Record)
			b[len(b)-1] ^= 1
			r.Rotations[0].Record = b
		}, client.ErrRotation, api.RuleRotationNewProof},
		{"skipped sequence", setRecord(sign(2, oldKey, newKey)), client.ErrRotation, api.RuleRotationSequence},
		{"not in the log", setRecord(sign(1, oldKey, mallory)), client.ErrRotation, ""},
		{"handover checkpoint not witnessed", func(r *ktpb.Rotations) {
			if r.Rotations[0].Epoch == nil {
				t.Errorf("no handover epoch for a client that trusted the log before the rotation")
				return
			}
			cp := r.Rotations[0].Epoch.Checkpoint
			// Keep the log's signatures, drop the witness's.
			var keep []string
			for _, l := range strings.SplitAfter(string(cp[bytes.Index(cp, []byte("\n\n"))+2:]), "\n") {
				if strings.HasPrefix(l, "— "+origin+" ") {
					keep = append(keep, l)
				}
			}
			r.Rotations[0].Epoch.Checkpoint = append(bytes.Clone(cp[:bytes.Index(cp, []byte("\n\n"))+2]), strings.Join(keep, "")...)
		}, client.ErrWitnessQuorum, ""},
		{"no rotation record", func(r *ktpb.Rotations) { r.Rotations = nil }, client.ErrCheckpointSignature, ""},
	}
	clients := make([]*client.Client, len(cases))
	vias := make([]*liveDir, len(cases))
	for i, c := range cases {
		vias[i] = &liveDir{DirectoryClient: d.Dir, forge: c.forge}
		if clients[i], _, err = d.NewClient(vias[i], client.Config{}); err != nil {
			t.Fatal(err)
		}
		if _, err := clients[i].Lookup(ctx, handle); err != nil {
			t.Fatal(err)
		}
	}
	// The honest rotation, finished.
	restart(t, ctx, d, append(vias, via)...)
	_, raw, err := d.Keys.LogRotation(origin, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Operator.Rotate(ctx, &ktpb.RotateRequest{Record: raw}); err != nil {
		t.Fatal(err)
	}
	for _, w := range d.Witnesses {
		if err := w.AddLog(origin, d.Keys.NextLogVKey); err != nil {
			t.Fatal(err)
		}
	}
	newHash := keyHash(t, d.Keys.NextLogVKey)
	if err := d.Keys.FinishLogRotation(); err != nil {
		t.Fatal(err)
	}
	restart(t, ctx, d, append(vias, via)...)
	awaitSigners(t, ctx, d, d.Keys.LogVKey)

	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl := clients[i]
			before, _ := cl.State(ctx)
			_, err := cl.Lookup(ctx, handle)
			if c.want == nil {
				if err != nil {
					t.Fatalf("control: %v", err)
				}
				if cl.Params().LogVerifier.KeyHash() != newHash {
					t.Fatalf("control: the client did not follow the rotation")
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			var re *api.RotationError
			if c.rule != "" && (!errors.As(err, &re) || re.Rule != c.rule) {
				t.Fatalf("got %v, want rule %q", err, c.rule)
			}
			after, _ := cl.State(ctx)
			if len(after.Rotations) != 0 || !proto.Equal(&ktpb.Checkpoint{Note: before.Trusted.Checkpoint}, &ktpb.Checkpoint{Note: after.Trusted.Checkpoint}) {
				t.Fatalf("a refused rotation changed the client's state: %d rotations, trusted size %d -> %d (err %v)", len(after.Rotations), before.Trusted.Size, after.Trusted.Size, err)
			}
			if cl.Params().LogVerifier.KeyHash() == newHash {
				t.Fatalf("the client follows a refused rotation")
			}
		})
	}
}

// TestRotationRefusedByDirectory: Rotate refuses a record that does not
// continue the chain, and accepts the honest one (the control).
func TestRotationRefusedByDirectory(t *testing.T) {
	ctx := context.Background()
	d := newRotationDeployment(t)
	_, other, _ := ed25519.GenerateKey(nil)
	_, next, _ := ed25519.GenerateKey(nil)
	mk := func(seq uint64, old, nw ed25519.PrivateKey, mod func([]byte)) []byte {
		r := &api.RotationRecord{Kind: api.KeyRecovery, Sequence: seq}
		if err := r.SignRotation(origin, old, nw); err != nil {
			t.Fatal(err)
		}
		b, _ := r.MarshalBinary()
		if mod != nil {
			mod(b)
		}
		return b
	}
	for _, c := range []struct {
		name string
		rec  []byte
		code codes.Code
	}{
		{"malformed", []byte{1, 3, 3}, codes.InvalidArgument},
		{"old key not current", mk(1, other, next, nil), codes.PermissionDenied},
		{"bad old proof", mk(1, d.Keys.Recovery, next, func(b []byte) { b[80] ^= 1 }), codes.PermissionDenied},
		{"bad new proof", mk(1, d.Keys.Recovery, next, func(b []byte) { b[len(b)-1] ^= 1 }), codes.PermissionDenied},
		{"skipped sequence", mk(2, d.Keys.Recovery, next, nil), codes.PermissionDenied},
	} {
		if _, err := d.Operator.Rotate(ctx, &ktpb.RotateRequest{Record: c.rec}); status.Code(err) != c.code {
			t.Errorf("%s: Rotate = %v, want %v", c.name, err, c.code)
		}
	}
	if _, err := d.Operator.Rotate(ctx, &ktpb.RotateRequest{Record: mk(1, d.Keys.Recovery, next, nil)}); err != nil {
		t.Fatalf("control: %v", err)
	}
	rs, err := d.Dir.GetRotations(ctx, &ktpb.GetRotationsRequest{})
	if err != nil || len(rs.GetRotations()) != 1 {
		t.Fatalf("GetRotations: %v, %d rotations; want the control's alone", err, len(rs.GetRotations()))
	}
}

// TestRotateRecoveryKey rotates the recovery key (design.md 11.1): R6 then
// accepts only the new key; the owner's monitor follows the rotation when
// it sees a recovery signed by the new key (an AlertRecovery, not a rule
// violation); a client offline during the rotation follows it; a restart
// with the old key configured is refused, with the new one it serves.
func TestRotateRecoveryKey(t *testing.T) {
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
	offline, _, err := d.NewClient(via, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := offline.Lookup(ctx, handle); err != nil {
		t.Fatal(err)
	}
	oldKey := d.Keys.Recovery
	if _, err := d.RotateRecovery(ctx, 1); err != nil {
		t.Fatal(err)
	}
	newPub := [32]byte(d.Keys.Recovery.Public().(ed25519.PublicKey))

	// R6: the old key is refused, the new one accepted.
	res, err := alice.Lookup(ctx, handle)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := client.NewChange(origin, res, &api.DeviceSet{AccountID: res.DeviceSet.AccountID, Devices: res.DeviceSet.Devices}, api.AuthRecovery, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Operator.Recover(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a recovery signed by the rotated-out key: %v, want PermissionDenied", err)
	}
	if _, err := d.Recover(ctx, alice, handle, func(*api.DeviceSet) {}); err != nil {
		t.Fatalf("a recovery signed by the new key: %v", err)
	}
	reps, err := alice.Monitor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var recovery, violation bool
	for _, a := range reps[0].Alerts {
		recovery = recovery || a.Kind == client.AlertRecovery
		violation = violation || a.Kind == client.AlertRuleViolation
	}
	if !recovery || violation {
		t.Fatalf("monitor alerts %+v: want a recovery alert and no rule violation", reps[0].Alerts)
	}
	if alice.Params().RecoveryKey != newPub {
		t.Fatalf("the monitor did not follow the recovery key rotation")
	}

	if n, err := offline.FollowRotations(ctx); err != nil || n != 1 {
		t.Fatalf("offline client: FollowRotations = %d, %v; want 1", n, err)
	}
	if offline.Params().RecoveryKey != newPub {
		t.Fatalf("offline client's recovery key is not the new one")
	}

	// A restart with the old recovery key configured is refused.
	newKey := d.Keys.Recovery
	d.Keys.Recovery = oldKey
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(ctx); err == nil || !strings.Contains(err.Error(), "recovery key") {
		t.Fatalf("restart with the rotated-out recovery key: %v, want a refusal", err)
	}
	d.Keys.Recovery = newKey
	if err := d.Restart(ctx); err != nil {
		t.Fatalf("restart with the new recovery key: %v", err)
	}
	via.DirectoryClient = d.Dir
	if _, err := offline.Lookup(ctx, handle); err != nil {
		t.Fatal(err)
	}
}

// TestRecoveryRotationForgedRefusedByClient: a client offline during an
// honest rotation of the recovery key is served forged records instead;
// each is refused with its rule and nothing is stored; the control
// follows.
func TestRecoveryRotationForgedRefusedByClient(t *testing.T) {
	ctx := context.Background()
	d := newRotationDeployment(t)
	oldKey := d.Keys.Recovery
	_, mallory, _ := ed25519.GenerateKey(nil)
	_, other, _ := ed25519.GenerateKey(nil)
	sign := func(seq uint64, old, nw ed25519.PrivateKey) []byte {
		r := &api.RotationRecord{Kind: api.KeyRecovery, Sequence: seq}
		if err := r.SignRotation(origin, old, nw); err != nil {
			t.Fatal(err)
		}
		b, _ := r.MarshalBinary()
		return b
	}
	setRecord := func(b []byte) func(*ktpb.Rotations) {
		return func(r *ktpb.Rotations) { r.Rotations[0].Record = b }
	}
	cases := []struct {
		name  string
		forge func(*ktpb.Rotations)
		rule  api.Rule
	}{
		{"control", nil, ""},
		{"old key not current", setRecord(sign(1, mallory, other)), api.RuleRotationOldKey},
		{"skipped sequence", setRecord(sign(2, oldKey, other)), api.RuleRotationSequence},
		{"bad old proof", func(r *ktpb.Rotations) {
			b := bytes.Clone(r.Rotations[0].Record)
			b[80] ^= 1
			r.Rotations[0].Record = b
		}, api.RuleRotationOldProof},
	}
	clients := make([]*client.Client, len(cases))
	for i, c := range cases {
		var err error
		if clients[i], _, err = d.NewClient(&liveDir{DirectoryClient: d.Dir, forge: c.forge}, client.Config{}); err != nil {
			t.Fatal(err)
		}
		if _, err := clients[i].FollowRotations(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.RotateRecovery(ctx, 1); err != nil {
		t.Fatal(err)
	}
	newPub := [32]byte(d.Keys.Recovery.Public().(ed25519.PublicKey))
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, err := clients[i].FollowRotations(ctx)
			if c.rule == "" {
				if err != nil || n != 1 || clients[i].Params().RecoveryKey != newPub {
					t.Fatalf("control: %d, %v", n, err)
				}
				return
			}
			var re *api.RotationError
			if !errors.Is(err, client.ErrRotation) || !errors.As(err, &re) || re.Rule != c.rule {
				t.Fatalf("got %v, want ErrRotation with rule %q", err, c.rule)
			}
			if st, _ := clients[i].State(ctx); len(st.Rotations) != 0 || clients[i].Params().RecoveryKey == newPub {
				t.Fatal("a refused rotation was stored or followed")
			}
		})
	}
}
