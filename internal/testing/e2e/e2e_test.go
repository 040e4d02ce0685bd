// Package e2e drives the directory end to end: the directory and its gRPC
// edge on a real 127.0.0.1 listener, over a real log backend (posix in a
// temporary directory, and Trillian's real binaries on MariaDB), with a
// 1-of-1 witness policy served by a test witness over HTTP. The tests talk
// to the directory only through the ktpb gRPC clients and verify every
// answer with package client.
package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/auditor/replay"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/directory/grpcserver"
	"github.com/keytrans/kt/internal/testing/fixture"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/internal/testing/trilliantest"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/trillian"
)

const (
	origin = "e2e.example/kt"
	// epochInterval and heartbeat are short so that the suite runs in
	// seconds; the protocol does not depend on their values.
	epochInterval = 100 * time.Millisecond
	heartbeat     = 300 * time.Millisecond
	// waitFor bounds every poll for a state the directory must reach.
	waitFor = 30 * time.Second
)

// backend opens a log; opening again after Close reopens the same log.
type backend struct {
	name string
	// setup prepares the backend for one test (and may skip it); it
	// returns the function that opens the log (the fixture's OpenLog) and
	// the one that restarts the backend while the directory is stopped.
	setup func(t *testing.T) (open func(context.Context, fixture.LogConfig) (log.Log, error), restart func(t *testing.T))
}

var backends = []backend{
	{"posix", func(t *testing.T) (func(context.Context, fixture.LogConfig) (log.Log, error), func(*testing.T)) {
		return fixture.OpenPosix, func(*testing.T) {}
	}},
	{"trillian", func(t *testing.T) (func(context.Context, fixture.LogConfig) (log.Log, error), func(*testing.T)) {
		env := trilliantest.Start(t, trilliantest.Options{SequencerInterval: 20 * time.Millisecond})
		var treeID int64
		open := func(ctx context.Context, c fixture.LogConfig) (log.Log, error) {
			l, err := trillian.New(ctx, trillian.Config{
				Conn: env.Conn, TreeID: treeID, CreateTree: treeID == 0,
				Origin: c.Origin, Signer: c.Signer,
				WitnessPolicy:      c.WitnessPolicy,
				WitnessTimeout:     c.WitnessTimeout,
				CheckpointInterval: 20 * time.Millisecond,
				MaxPollInterval:    10 * time.Millisecond,
				Logger:             fixture.Quiet,
			})
			if err != nil {
				return nil, fmt.Errorf("trillian.New: %w", err)
			}
			treeID = l.TreeID()
			return l, nil
		}
		return open, func(t *testing.T) { env.Restart() }
	}},
}

// running is a deployment (package internal/testing/fixture) over a
// backend's log: its directory serving over gRPC, with a 1-of-1 witness
// policy.
type running struct {
	t *testing.T
	*fixture.Deployment
	otherTokens *directory.TokenCredentials // another operator's token key
}

func start(t *testing.T, open func(context.Context, fixture.LogConfig) (log.Log, error)) *running {
	t.Helper()
	d := fixture.New(t, fixture.Options{
		Origin: origin, EpochInterval: epochInterval, HeartbeatInterval: heartbeat,
		OpenLog: open, Graceful: true,
		DialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20))},
	})
	key := make([]byte, 32)
	rand.Read(key)
	other, err := directory.NewTokenCredentials(key)
	if err != nil {
		t.Fatal(err)
	}
	return &running{t: t, Deployment: d, otherTokens: other}
}

// stop stops the gRPC server and the directory and closes the log; it may
// be called twice.
func (r *running) stop() {
	if err := r.Stop(); err != nil {
		r.t.Errorf("stopping the directory: %v", err)
	}
}

// restart starts the directory again on the same state and log.
func (r *running) restart() {
	r.t.Helper()
	if err := r.Restart(r.t.Context()); err != nil {
		r.t.Fatalf("restarting the directory: %v", err)
	}
}

// viewer is a client: pinned parameters and a trusted state, updated by
// every verified answer.
type viewer struct {
	t       *testing.T
	params  *client.Params
	trusted *client.Trusted
}

func (v *viewer) knownSize() uint64 {
	if v.trusted == nil {
		return 0
	}
	return v.trusted.Size
}

// tryLookup looks handle up once and verifies the answer; the trusted
// state advances only on success.
func (v *viewer) tryLookup(c ktpb.DirectoryClient, handle string) (*client.LookupResult, error) {
	resp, err := c.Lookup(v.t.Context(), &ktpb.LookupRequest{Handle: handle, KnownSize: v.knownSize()})
	if err != nil {
		return nil, err
	}
	res, err := client.VerifyLookup(v.params, v.trusted, handle, resp, time.Now(), nil)
	if err != nil {
		return nil, fmt.Errorf("VerifyLookup: %w", err)
	}
	v.trusted = res.Trusted
	return res, nil
}

// await polls Lookup until ok accepts a verified answer. Unavailable (no
// epoch published yet) is retried; any other error fails the test.
func (v *viewer) await(c ktpb.DirectoryClient, handle string, what string, ok func(*client.LookupResult) bool) *client.LookupResult {
	v.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		res, err := v.tryLookup(c, handle)
		switch {
		case err == nil && ok(res):
			return res
		case err != nil && status.Code(err) != codes.Unavailable:
			v.t.Fatalf("lookup %s: %v", handle, err)
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("lookup %s: %s not seen within %v (last error: %v)", handle, what, waitFor, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (v *viewer) awaitVersion(c ktpb.DirectoryClient, h *handleState) *client.LookupResult {
	v.t.Helper()
	res := v.await(c, h.handle, fmt.Sprintf("version %d", h.version), func(r *client.LookupResult) bool {
		return r.Registered && r.Version >= h.version
	})
	if res.Version != h.version || res.LeafHash != h.leaf {
		v.t.Fatalf("lookup %s: version %d leaf %x, want version %d leaf %x", h.handle, res.Version, res.LeafHash, h.version, h.leaf)
	}
	return res
}

// logSize returns the size of the log's latest checkpoint, verified.
func (r *running) logSize(t *testing.T) uint64 {
	t.Helper()
	cp, err := r.Log.Checkpoint(t.Context())
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	v, err := note.NewVerifier(r.Keys.LogVKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := log.ParseCheckpoint(cp, origin, v)
	if err != nil {
		t.Fatal(err)
	}
	return c.Size
}

// checkNoChangeLogged waits until the log has grown past size (the next
// heartbeat epoch) and checks, over the public Log service, that every
// entry appended since is an epoch record: no change was logged.
func (r *running) checkNoChangeLogged(t *testing.T, size uint64) {
	t.Helper()
	noChangeLogged(t, r.LogRPC, origin, r.Keys.LogVKey, size)
}

// noChangeLogged is checkNoChangeLogged for any log served over gRPC.
func noChangeLogged(t *testing.T, logc ktpb.LogClient, origin, logVkey string, size uint64) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	var now uint64
	for {
		cp, err := logc.GetCheckpoint(t.Context(), &ktpb.GetCheckpointRequest{})
		if err != nil {
			t.Fatalf("GetCheckpoint: %v", err)
		}
		v, _ := note.NewVerifier(logVkey)
		c, _, err := log.ParseCheckpoint(cp.GetNote(), origin, v)
		if err != nil {
			t.Fatal(err)
		}
		if now = c.Size; now > size {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log did not grow past %d within %v", size, waitFor)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := size; i < now; {
		es, err := logc.GetEntries(t.Context(), &ktpb.GetEntriesRequest{Start: i, End: now})
		if err != nil {
			t.Fatalf("GetEntries: %v", err)
		}
		for _, e := range es.GetEntries() {
			ent, err := api.ParseEntry(e)
			if err != nil {
				t.Fatalf("entry %d: %v", i, err)
			}
			if ent.Type() != api.TypeEpoch {
				t.Errorf("entry %d is a %v record: a rejected request was logged", i, ent.Type())
			}
			i++
		}
	}
}

// summary is what the test checks of a monitored change.
type summary struct {
	Version        uint64
	Kind           api.AuthKind
	By             client.Authority
	Added, Removed [][32]byte
	Alerts         int
}

func summarize(cs []client.Change) []summary {
	var out []summary
	for _, c := range cs {
		s := summary{Version: c.Version, Kind: c.Record.Kind, By: c.By, Alerts: len(c.Alerts)}
		for _, d := range c.Added {
			s.Added = append(s.Added, d.SigningKey)
		}
		for _, d := range c.Removed {
			s.Removed = append(s.Removed, d.SigningKey)
		}
		out = append(out, s)
	}
	return out
}

func TestEndToEnd(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { scenario(t, b) })
	}
}

func scenario(t *testing.T, b backend) {
	open, restart := b.setup(t)
	r := start(t, open)
	ctx := t.Context()

	// Parameters, with the witness policy: no insecure option.
	pb, err := r.Dir.GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		t.Fatalf("GetParameters: %v", err)
	}
	params, err := client.NewParams(pb, client.Options{})
	if err != nil {
		t.Fatalf("client.NewParams: %v", err)
	}
	if params.Witnesses == nil || params.InsecureNoWitnesses {
		t.Fatalf("parameters carry no witness policy")
	}
	v := &viewer{t: t, params: params}

	// Alice's device learns her handle's canonical form and VRF index from
	// a verified absence proof.
	res := v.await(r.Dir, "alice@example.com", "an epoch", func(*client.LookupResult) bool { return true })
	if res.Registered {
		t.Fatalf("alice is registered before enrolling")
	}
	if res.Epoch.QuorumTime.IsZero() || len(res.Epoch.Cosignatures) != 1 {
		t.Fatalf("epoch verified without the witness's cosignature: %+v", res.Epoch.Cosignatures)
	}
	alice := &handleState{origin: origin, handle: res.Handle, index: res.Index}
	var account [16]byte
	rand.Read(account[:])
	d1, d2 := testkit.NewDevice(), testkit.NewDevice()
	d2b := d2.Rekeyed()

	enroll := alice.change(api.AuthEnroll, d1.Sign, testkit.Set(account, d1))
	if _, err := r.Dir.Enroll(ctx, &ktpb.EnrollRequest{Change: enroll, Credential: r.Keys.Token.IssueToken(alice.handle)}); err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	alice.accepted(enroll)
	res = v.awaitVersion(r.Dir, alice)
	if !cmp.Equal(signingKeys(res.DeviceSet), testkit.Pubs(d1)) || res.Kind != api.AuthEnroll {
		t.Fatalf("after enrollment: kind %v, keys %x", res.Kind, signingKeys(res.DeviceSet))
	}

	steps := []struct {
		name   string
		signer *testkit.Device
		set    []*testkit.Device
	}{
		{"add device 2", d1, []*testkit.Device{d1, d2}},
		{"re-key device 2", d2, []*testkit.Device{d1, d2b}},
		{"remove device 1", d2b, []*testkit.Device{d2b}},
	}
	changes := []*ktpb.HandleChange{enroll}
	for _, st := range steps {
		hc := alice.change(api.AuthDevice, st.signer.Sign, testkit.Set(account, st.set...))
		cr, err := r.Dir.Change(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}})
		if err != nil {
			t.Fatalf("%s: Change: %v", st.name, err)
		}
		if len(cr.GetLogIndices()) != 1 {
			t.Fatalf("%s: %d log indices, want 1", st.name, len(cr.GetLogIndices()))
		}
		alice.accepted(hc)
		changes = append(changes, hc)
		res = v.awaitVersion(r.Dir, alice)
		if got, want := signingKeys(res.DeviceSet), testkit.Pubs(st.set...); !cmp.Equal(got, want) {
			t.Fatalf("%s: lookup shows keys %x, want %x", st.name, got, want)
		}
		if len(res.Recipients) != len(st.set) {
			t.Fatalf("%s: %d recipients, want %d", st.name, len(res.Recipients), len(st.set))
		}
	}
	if res.DeviceSet.Devices[0].ID != d2.ID {
		t.Fatalf("the re-keyed device has ID %x, want device 2's %x", res.DeviceSet.Devices[0].ID, d2.ID)
	}

	// An unregistered handle: a verified absence proof.
	absent := v.await(r.Dir, "bob@example.com", "an answer", func(*client.LookupResult) bool { return true })
	if absent.Registered || absent.DeviceSet != nil || len(absent.Recipients) != 0 {
		t.Fatalf("bob is registered: %+v", absent)
	}

	// Monitoring from version 0, as device 1 (the enrolling device) sees it.
	// Signed by device 2's new key, a current device (design.md 13.4).
	mresp, err := r.Dir.Monitor(ctx, signed(origin, &ktpb.MonitorRequest{Index: alice.index[:], KnownSize: v.knownSize()}, d2b.Sign))
	if err != nil {
		t.Fatalf("Monitor: %v", err)
	}
	mon, err := client.VerifyMonitor(params, v.trusted, &client.MonitorState{Index: alice.index}, mresp, client.OwnKeys{Device: d1.Pub()}, time.Now())
	if err != nil {
		t.Fatalf("VerifyMonitor: %v", err)
	}
	v.trusted = mon.Trusted
	wantMon := []summary{
		{Version: 1, Kind: api.AuthEnroll, By: client.ByThisDevice, Added: [][32]byte{d1.Pub()}},
		{Version: 2, Kind: api.AuthDevice, By: client.ByThisDevice, Added: [][32]byte{d2.Pub()}},
		{Version: 3, Kind: api.AuthDevice, By: client.ByOwnDevice, Added: [][32]byte{d2b.Pub()}, Removed: [][32]byte{d2.Pub()}},
		{Version: 4, Kind: api.AuthDevice, By: client.ByOwnDevice, Removed: [][32]byte{d1.Pub()}},
	}
	if diff := cmp.Diff(wantMon, summarize(mon.Changes)); diff != "" {
		t.Fatalf("monitored changes (-want +got):\n%s", diff)
	}
	if len(mon.Alerts) != 0 {
		t.Fatalf("alerts %v, want none", mon.Alerts)
	}
	// Device 1 and device 2's first keys were added and removed within the
	// answer: reported as transient.
	if got := signingKeys(&api.DeviceSet{Devices: mon.Transient}); !cmp.Equal(got, testkit.Pubs(d1, d2)) {
		t.Fatalf("transient devices %x, want devices 1 and 2 (old keys)", got)
	}
	for i, c := range mon.Changes {
		if b, err := c.Record.MarshalBinary(); err != nil || string(b) != string(changes[i].ChangeRecord) {
			t.Fatalf("monitored version %d is not the change sent", c.Version)
		}
	}

	var current []*testkit.Device // Alice's devices after the rejected requests
	t.Run("rejected", func(t *testing.T) { current = rejected(t, r, v, alice, account, changes, d1, d2, d2b) })
	if t.Failed() {
		return
	}

	// Restart: stop everything, reopen on the same state and log.
	oldTrusted := v.trusted
	oldParams := pb
	r.stop()
	restart(t)
	r.restart()
	pb2, err := r.Dir.GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		t.Fatalf("GetParameters after restart: %v", err)
	}
	if !proto.Equal(pb2, oldParams) {
		t.Fatalf("parameters changed across the restart:\n%v\n%v", oldParams, pb2)
	}
	// A client holding the old trusted checkpoint: lookups verify, with a
	// consistency proof from it to a checkpoint published after the restart.
	v2 := &viewer{t: t, params: params, trusted: oldTrusted}
	res = v2.await(r.Dir, alice.handle, "a new epoch", func(r *client.LookupResult) bool { return r.Epoch.Size > oldTrusted.Size })
	if res.Version != alice.version || res.LeafHash != alice.leaf {
		t.Fatalf("after restart: version %d, want %d", res.Version, alice.version)
	}
	if !cmp.Equal(signingKeys(res.DeviceSet), testkit.Pubs(current...)) {
		t.Fatalf("after restart: keys %x", signingKeys(res.DeviceSet))
	}
	// Monitoring from version 4 finds the change made before the restart.
	mresp, err = r.Dir.Monitor(ctx, signed(origin, &ktpb.MonitorRequest{Index: alice.index[:], KnownVersion: 4, KnownSize: v2.knownSize()}, current[0].Sign))
	if err != nil {
		t.Fatalf("Monitor after restart: %v", err)
	}
	mon2, err := client.VerifyMonitor(params, v2.trusted, mon.State, mresp, client.OwnKeys{Device: d1.Pub()}, time.Now())
	if err != nil {
		t.Fatalf("VerifyMonitor after restart: %v", err)
	}
	if len(mon2.Changes) != 1 || mon2.Changes[0].Version != 5 || mon2.Changes[0].By != client.ByOwnDevice || len(mon2.Alerts) != 0 {
		t.Fatalf("monitor after restart: %+v", summarize(mon2.Changes))
	}

	// The map rebuilt from the log alone has the published epoch's root,
	// both through the public Log service and from the backend directly.
	part, err := r.Dir.GetEpoch(ctx, &ktpb.GetEpochRequest{KnownSize: v2.knownSize()})
	if err != nil {
		t.Fatalf("GetEpoch: %v", err)
	}
	ep, err := client.VerifyEpoch(params, v2.trusted, part, time.Now())
	if err != nil {
		t.Fatalf("VerifyEpoch: %v", err)
	}
	for _, rd := range []struct {
		name string
		r    log.Reader
	}{{"gRPC Log service", client.LogReader{C: r.LogRPC}}, {"backend", r.Log}} {
		root, err := fixture.ReplayMap(ctx, replay.Config{Origin: params.Origin, Verifier: params.LogVerifier, RecoveryKey: params.RecoveryKey}, rd.r)
		if err != nil {
			t.Fatalf("replaying the log over the %s: %v", rd.name, err)
		}
		if root != ep.Record.MapRoot {
			t.Fatalf("map rebuilt over the %s has root %x, the published epoch %d has %x", rd.name, root, ep.Record.Epoch, ep.Record.MapRoot)
		}
	}
}

// withUnknown returns a copy of m carrying an unknown field (number 999).
func withUnknown[M proto.Message](m M) M {
	c := proto.Clone(m).(M)
	raw := protowire.AppendTag(nil, 999, protowire.VarintType)
	raw = protowire.AppendVarint(raw, 1)
	c.ProtoReflect().SetUnknown(raw)
	return c
}

// rejected sends hostile and mistaken requests over gRPC, with Alice at
// version 4 (only the re-keyed device 2). Each must fail with the code
// grpcserver.Code gives its domain error, and store nothing: no change
// record is logged by the next heartbeat and Alice's lookup is unchanged.
//
// Last, it sends the change refused for an unknown field without it, and
// returns Alice's devices after it.
func rejected(t *testing.T, r *running, v *viewer, alice *handleState, account [16]byte, changes []*ktpb.HandleChange, d1, d2, d2b *testkit.Device) []*testkit.Device {
	ctx := t.Context()
	stranger := testkit.NewDevice()
	carolRes := v.await(r.Dir, "carol@example.com", "an answer", func(*client.LookupResult) bool { return true })
	carol := &handleState{origin: origin, handle: carolRes.Handle, index: carolRes.Index}

	change := func(hcs ...*ktpb.HandleChange) func() error {
		return func() error {
			_, err := r.Dir.Change(ctx, &ktpb.ChangeRequest{Changes: hcs})
			return err
		}
	}
	enrollCarol := func(cred string) func() error {
		hc := carol.change(api.AuthEnroll, stranger.Sign, testkit.Set(account, stranger))
		return func() error {
			_, err := r.Dir.Enroll(ctx, &ktpb.EnrollRequest{Change: hc, Credential: cred})
			return err
		}
	}
	stale := *alice // built on version 3
	stale.version, stale.leaf = 3, api.LeafHash(changes[2].ChangeRecord)
	badHandle := alice.change(api.AuthDevice, d2b.Sign, testkit.Set(account, d2b, stranger))
	badHandle.Handle = "not a handle"
	oversized := alice.change(api.AuthDevice, d2b.Sign, testkit.Set(account, d2b, stranger))
	oversized.DeviceSet = make([]byte, grpcserver.DefaultMaxRecvMsgSize+1)
	next := alice.change(api.AuthDevice, d2b.Sign, testkit.Set(account, d2b, stranger))

	var (
		permission = grpcserver.Code(directory.ErrUnauthorized)
		aborted    = grpcserver.Code(directory.ErrStaleVersion)
		invalid    = grpcserver.Code(directory.ErrInvalidArgument)
	)
	if permission != codes.PermissionDenied || aborted != codes.Aborted || invalid != codes.InvalidArgument {
		t.Fatalf("grpcserver.Code maps to %v, %v, %v", permission, aborted, invalid)
	}
	tests := []struct {
		name string
		send func() error
		want codes.Code
	}{
		{"signed by a key not in the set", change(alice.change(api.AuthDevice, stranger.Sign, testkit.Set(account, d2b, stranger))), permission},
		{"replay of the latest change", change(changes[3]), aborted},
		{"replay of an older change", change(changes[1]), aborted},
		{"replay of the enrollment", func() error {
			_, err := r.Dir.Enroll(ctx, &ktpb.EnrollRequest{Change: changes[0], Credential: r.Keys.Token.IssueToken(alice.handle)})
			return err
		}, aborted},
		{"signed by the removed device 1", change(alice.change(api.AuthDevice, d1.Sign, testkit.Set(account, d1, d2b))), permission},
		{"signed by device 2's old key", change(alice.change(api.AuthDevice, d2.Sign, testkit.Set(account, d2b, stranger))), permission},
		{"stale version", change(stale.change(api.AuthDevice, d2b.Sign, testkit.Set(account, d2b, stranger))), aborted},
		{"malformed handle", change(badHandle), invalid},
		{"malformed handle in a lookup", func() error {
			_, err := r.Dir.Lookup(ctx, &ktpb.LookupRequest{Handle: "not a handle"})
			return err
		}, invalid},
		{"oversized request", change(oversized), codes.ResourceExhausted},
		{"unknown field in a valid change", change(withUnknown(next)), codes.InvalidArgument},
		{"unknown field in a lookup", func() error {
			_, err := r.Dir.Lookup(ctx, withUnknown(&ktpb.LookupRequest{Handle: alice.handle}))
			return err
		}, codes.InvalidArgument},
		{"enrollment token of another operator", enrollCarol(r.otherTokens.IssueToken(carol.handle)), permission},
		{"enrollment token for another handle", enrollCarol(r.Keys.Token.IssueToken(alice.handle)), permission},
		{"garbage enrollment token", enrollCarol("kt1.9999999999.AAAA"), permission},
		{"no enrollment token", enrollCarol(""), permission},
		{"recovery through the public Change API", change(alice.change(api.AuthRecovery, r.Keys.Recovery, testkit.Set(account, stranger))), permission},
		{"atomic batch with one unauthorized change", change(
			alice.change(api.AuthDevice, d2b.Sign, testkit.Set(account, d2b, stranger)),
			carol.change(api.AuthDevice, stranger.Sign, testkit.Set(account, stranger)),
		), permission},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			size := r.logSize(t)
			err := tc.send()
			if got := status.Code(err); got != tc.want {
				t.Fatalf("got %v (%v), want %v", got, err, tc.want)
			}
			r.checkNoChangeLogged(t, size)
			res, err := v.tryLookup(r.Dir, alice.handle)
			if err != nil {
				t.Fatal(err)
			}
			if res.Version != alice.version || res.LeafHash != alice.leaf {
				t.Fatalf("alice is at version %d, want %d", res.Version, alice.version)
			}
			if res, err := v.tryLookup(r.Dir, carol.handle); err != nil || res.Registered {
				t.Fatalf("carol: registered %v, err %v", res != nil && res.Registered, err)
			}
		})
	}

	// The change refused for its unknown field goes through without it.
	if _, err := r.Dir.Change(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{next}}); err != nil {
		t.Fatalf("Change: %v", err)
	}
	alice.accepted(next)
	res := v.awaitVersion(r.Dir, alice)
	if !cmp.Equal(signingKeys(res.DeviceSet), testkit.Pubs(d2b, stranger)) {
		t.Fatalf("keys %x after the valid change", signingKeys(res.DeviceSet))
	}
	return []*testkit.Device{d2b, stranger}
}
