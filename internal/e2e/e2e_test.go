// Package e2e drives the directory end to end: the directory and its gRPC
// edge on a real 127.0.0.1 listener, over a real log backend (posix in a
// temporary directory, and Trillian's real binaries on MariaDB), with a
// 1-of-1 witness policy served by a test witness over HTTP. The tests talk
// to the directory only through the ktpb gRPC clients and verify every
// answer with package client.
package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"
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
	"github.com/keytrans/kt/internal/testwitness"
	"github.com/keytrans/kt/internal/trilliantest"
	"github.com/keytrans/kt/internal/vrf"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/posix"
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

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// deployment holds an operator's keys and its witness.
type deployment struct {
	logSigner   note.Signer
	logVkey     string
	vrf         *vrf.PrivateKey
	recovery    ed25519.PrivateKey
	token       *directory.TokenCredentials
	policy      []byte // 1-of-1 witness policy
	witness     *testwitness.Witness
	stateDir    string
	otherTokens *directory.TokenCredentials // another operator's token key
}

func newDeployment(t *testing.T) *deployment {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	vk, err := vrf.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, rk, _ := ed25519.GenerateKey(nil)
	key := make([]byte, 32)
	rand.Read(key)
	tk, err := directory.NewTokenCredentials(key)
	if err != nil {
		t.Fatal(err)
	}
	rand.Read(key)
	other, err := directory.NewTokenCredentials(key)
	if err != nil {
		t.Fatal(err)
	}
	w, err := testwitness.New("witness.e2e.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddLog(origin, vkey); err != nil {
		t.Fatal(err)
	}
	ws := httptest.NewServer(w) // 127.0.0.1
	t.Cleanup(ws.Close)
	policy := fmt.Appendf(nil, "witness w0 %s %s\ngroup g 1 w0\nquorum g\n", w.VerifierKey(), ws.URL)
	return &deployment{
		logSigner: s, logVkey: vkey, vrf: vk, recovery: rk, token: tk, policy: policy,
		witness: w, stateDir: filepath.Join(t.TempDir(), "state"), otherTokens: other,
	}
}

func (dp *deployment) config(l log.Log) directory.Config {
	return directory.Config{
		Log:               l,
		Origin:            origin,
		LogVerifierKey:    dp.logVkey,
		VRFKey:            dp.vrf,
		RecoveryKey:       dp.recovery.Public().(ed25519.PublicKey),
		Credentials:       dp.token,
		StateDir:          dp.stateDir,
		WitnessPolicy:     string(dp.policy),
		EpochInterval:     epochInterval,
		HeartbeatInterval: heartbeat,
		StartupWait:       5 * time.Second,
		CacheSize:         8 << 20,
		Logger:            discard,
	}
}

// backend opens a log; opening again after Close reopens the same log.
type backend struct {
	name string
	// setup prepares the backend for one test (and may skip it); it
	// returns the function that opens the log.
	setup func(t *testing.T, dp *deployment) (open func(t *testing.T) log.Log, restart func(t *testing.T))
}

var backends = []backend{
	{"posix", func(t *testing.T, dp *deployment) (func(*testing.T) log.Log, func(*testing.T)) {
		dir := filepath.Join(t.TempDir(), "log")
		open := func(t *testing.T) log.Log {
			l, err := posix.New(context.Background(), posix.Config{
				Dir: dir, Origin: origin, Signer: dp.logSigner,
				WitnessPolicy:      dp.policy,
				WitnessTimeout:     5 * time.Second,
				CheckpointInterval: 100 * time.Millisecond,
			})
			if err != nil {
				t.Fatalf("posix.New: %v", err)
			}
			return l
		}
		return open, func(*testing.T) {}
	}},
	{"trillian", func(t *testing.T, dp *deployment) (func(*testing.T) log.Log, func(*testing.T)) {
		env := trilliantest.Start(t, trilliantest.Options{SequencerInterval: 20 * time.Millisecond})
		var treeID int64
		open := func(t *testing.T) log.Log {
			l, err := trillian.New(context.Background(), trillian.Config{
				Conn: env.Conn, TreeID: treeID, CreateTree: treeID == 0,
				Origin: origin, Signer: dp.logSigner,
				WitnessPolicy:      dp.policy,
				WitnessTimeout:     5 * time.Second,
				CheckpointInterval: 20 * time.Millisecond,
				MaxPollInterval:    10 * time.Millisecond,
				Logger:             discard,
			})
			if err != nil {
				t.Fatalf("trillian.New: %v", err)
			}
			treeID = l.TreeID()
			return l
		}
		return open, func(t *testing.T) { env.Restart() }
	}},
}

// running is a deployment's directory, serving over gRPC, and its log.
type running struct {
	t   *testing.T
	dp  *deployment
	log log.Log
	*server
}

func start(t *testing.T, dp *deployment, open func(*testing.T) log.Log) *running {
	t.Helper()
	l := open(t)
	d, err := directory.New(context.Background(), dp.config(l))
	if err != nil {
		l.Close(context.Background())
		t.Fatalf("directory.New: %v", err)
	}
	s := serve(t, d, grpcserver.Options{RateLimit: -1, Logger: discard})
	r := &running{t: t, dp: dp, log: l, server: s}
	t.Cleanup(func() { r.stop() })
	return r
}

// stop stops the server and the directory and closes the log; it may be
// called twice.
func (r *running) stop() {
	if r.server == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.server.stop(ctx); err != nil {
		r.t.Errorf("stopping the directory: %v", err)
	}
	if err := r.log.Close(ctx); err != nil && !errors.Is(err, log.ErrClosed) {
		r.t.Errorf("closing the log: %v", err)
	}
	r.server = nil
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
	cp, err := r.log.Checkpoint(t.Context())
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	v, err := note.NewVerifier(r.dp.logVkey)
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
	noChangeLogged(t, r.logc, origin, r.dp.logVkey, size)
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
	dp := newDeployment(t)
	open, restart := b.setup(t, dp)
	r := start(t, dp, open)
	ctx := t.Context()

	// Parameters, with the witness policy: no insecure option.
	pb, err := r.dir.GetParameters(ctx, &ktpb.GetParametersRequest{})
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
	res := v.await(r.dir, "alice@example.com", "an epoch", func(*client.LookupResult) bool { return true })
	if res.Registered {
		t.Fatalf("alice is registered before enrolling")
	}
	if res.Epoch.QuorumTime.IsZero() || len(res.Epoch.Cosignatures) != 1 {
		t.Fatalf("epoch verified without the witness's cosignature: %+v", res.Epoch.Cosignatures)
	}
	alice := &handleState{origin: origin, handle: res.Handle, index: res.Index}
	var account [16]byte
	rand.Read(account[:])
	d1, d2 := newDevice(t), newDevice(t)
	d2b := d2.rekeyed(t)

	enroll := alice.change(api.AuthEnroll, d1.sign, deviceSet(account, d1))
	if _, err := r.dir.Enroll(ctx, &ktpb.EnrollRequest{Change: enroll, Credential: dp.token.IssueToken(alice.handle)}); err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	alice.accepted(enroll)
	res = v.awaitVersion(r.dir, alice)
	if !cmp.Equal(signingKeys(res.DeviceSet), keysOf(d1)) || res.Kind != api.AuthEnroll {
		t.Fatalf("after enrollment: kind %v, keys %x", res.Kind, signingKeys(res.DeviceSet))
	}

	steps := []struct {
		name   string
		signer *device
		set    []*device
	}{
		{"add device 2", d1, []*device{d1, d2}},
		{"re-key device 2", d2, []*device{d1, d2b}},
		{"remove device 1", d2b, []*device{d2b}},
	}
	changes := []*ktpb.HandleChange{enroll}
	for _, st := range steps {
		hc := alice.change(api.AuthDevice, st.signer.sign, deviceSet(account, st.set...))
		cr, err := r.dir.Change(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}})
		if err != nil {
			t.Fatalf("%s: Change: %v", st.name, err)
		}
		if len(cr.GetLogIndices()) != 1 {
			t.Fatalf("%s: %d log indices, want 1", st.name, len(cr.GetLogIndices()))
		}
		alice.accepted(hc)
		changes = append(changes, hc)
		res = v.awaitVersion(r.dir, alice)
		if got, want := signingKeys(res.DeviceSet), keysOf(st.set...); !cmp.Equal(got, want) {
			t.Fatalf("%s: lookup shows keys %x, want %x", st.name, got, want)
		}
		if len(res.Recipients) != len(st.set) {
			t.Fatalf("%s: %d recipients, want %d", st.name, len(res.Recipients), len(st.set))
		}
	}
	if res.DeviceSet.Devices[0].ID != d2.id {
		t.Fatalf("the re-keyed device has ID %x, want device 2's %x", res.DeviceSet.Devices[0].ID, d2.id)
	}

	// An unregistered handle: a verified absence proof.
	absent := v.await(r.dir, "bob@example.com", "an answer", func(*client.LookupResult) bool { return true })
	if absent.Registered || absent.DeviceSet != nil || len(absent.Recipients) != 0 {
		t.Fatalf("bob is registered: %+v", absent)
	}

	// Monitoring from version 0, as device 1 (the enrolling device) sees it.
	mresp, err := r.dir.Monitor(ctx, &ktpb.MonitorRequest{Index: alice.index[:], KnownSize: v.knownSize()})
	if err != nil {
		t.Fatalf("Monitor: %v", err)
	}
	mon, err := client.VerifyMonitor(params, v.trusted, &client.MonitorState{Index: alice.index}, mresp, client.OwnKeys{Device: d1.pub()}, time.Now())
	if err != nil {
		t.Fatalf("VerifyMonitor: %v", err)
	}
	v.trusted = mon.Trusted
	wantMon := []summary{
		{Version: 1, Kind: api.AuthEnroll, By: client.ByThisDevice, Added: [][32]byte{d1.pub()}},
		{Version: 2, Kind: api.AuthDevice, By: client.ByThisDevice, Added: [][32]byte{d2.pub()}},
		{Version: 3, Kind: api.AuthDevice, By: client.ByOwnDevice, Added: [][32]byte{d2b.pub()}, Removed: [][32]byte{d2.pub()}},
		{Version: 4, Kind: api.AuthDevice, By: client.ByOwnDevice, Removed: [][32]byte{d1.pub()}},
	}
	if diff := cmp.Diff(wantMon, summarize(mon.Changes)); diff != "" {
		t.Fatalf("monitored changes (-want +got):\n%s", diff)
	}
	if len(mon.Alerts) != 0 {
		t.Fatalf("alerts %v, want none", mon.Alerts)
	}
	// Device 1 and device 2's first keys were added and removed within the
	// answer: reported as transient.
	if got := signingKeys(&api.DeviceSet{Devices: mon.Transient}); !cmp.Equal(got, keysOf(d1, d2)) {
		t.Fatalf("transient devices %x, want devices 1 and 2 (old keys)", got)
	}
	for i, c := range mon.Changes {
		if b, err := c.Record.MarshalBinary(); err != nil || string(b) != string(changes[i].ChangeRecord) {
			t.Fatalf("monitored version %d is not the change sent", c.Version)
		}
	}

	var current []*device // Alice's devices after the rejected requests
	t.Run("rejected", func(t *testing.T) { current = rejected(t, r, v, alice, account, changes, d1, d2, d2b) })
	if t.Failed() {
		return
	}

	// Restart: stop everything, reopen on the same state and log.
	oldTrusted := v.trusted
	oldParams := pb
	r.stop()
	restart(t)
	r = start(t, dp, open)
	pb2, err := r.dir.GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		t.Fatalf("GetParameters after restart: %v", err)
	}
	if !proto.Equal(pb2, oldParams) {
		t.Fatalf("parameters changed across the restart:\n%v\n%v", oldParams, pb2)
	}
	// A client holding the old trusted checkpoint: lookups verify, with a
	// consistency proof from it to a checkpoint published after the restart.
	v2 := &viewer{t: t, params: params, trusted: oldTrusted}
	res = v2.await(r.dir, alice.handle, "a new epoch", func(r *client.LookupResult) bool { return r.Epoch.Size > oldTrusted.Size })
	if res.Version != alice.version || res.LeafHash != alice.leaf {
		t.Fatalf("after restart: version %d, want %d", res.Version, alice.version)
	}
	if !cmp.Equal(signingKeys(res.DeviceSet), keysOf(current...)) {
		t.Fatalf("after restart: keys %x", signingKeys(res.DeviceSet))
	}
	// Monitoring from version 4 finds the change made before the restart.
	mresp, err = r.dir.Monitor(ctx, &ktpb.MonitorRequest{Index: alice.index[:], KnownVersion: 4, KnownSize: v2.knownSize()})
	if err != nil {
		t.Fatalf("Monitor after restart: %v", err)
	}
	mon2, err := client.VerifyMonitor(params, v2.trusted, mon.State, mresp, client.OwnKeys{Device: d1.pub()}, time.Now())
	if err != nil {
		t.Fatalf("VerifyMonitor after restart: %v", err)
	}
	if len(mon2.Changes) != 1 || mon2.Changes[0].Version != 5 || mon2.Changes[0].By != client.ByOwnDevice || len(mon2.Alerts) != 0 {
		t.Fatalf("monitor after restart: %+v", summarize(mon2.Changes))
	}

	// The map rebuilt from the log alone has the published epoch's root,
	// both through the public Log service and from the backend directly.
	part, err := r.dir.GetEpoch(ctx, &ktpb.GetEpochRequest{KnownSize: v2.knownSize()})
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
	}{{"gRPC Log service", grpcReader{r.logc}}, {"backend", r.log}} {
		root, err := replayMap(ctx, params, rd.r)
		if err != nil {
			t.Fatalf("replaying the log over the %s: %v", rd.name, err)
		}
		if root != ep.Record.MapRoot {
			t.Fatalf("map rebuilt over the %s has root %x, the published epoch %d has %x", rd.name, root, ep.Record.Epoch, ep.Record.MapRoot)
		}
	}
}

// replayMap replays the whole log read from r, up to its latest
// checkpoint, with the auditor's engine (which checks every rule, among
// them the epoch rules the directory's own replay checks) and returns the
// root of the map after every change record. A violation is an error.
func replayMap(ctx context.Context, p *client.Params, r log.Reader) ([32]byte, error) {
	e, err := replay.New(replay.Config{Origin: p.Origin, Verifier: p.LogVerifier, RecoveryKey: p.RecoveryKey})
	if err != nil {
		return [32]byte{}, err
	}
	cp, err := r.Checkpoint(ctx)
	if err != nil {
		return [32]byte{}, err
	}
	vs, err := e.ReplayTo(ctx, r, cp, nil)
	if err != nil {
		return [32]byte{}, err
	}
	if len(vs) > 0 {
		return [32]byte{}, fmt.Errorf("%d violations, the first: %w", len(vs), &vs[0])
	}
	root, _ := e.MapRoot()
	return root, nil
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
func rejected(t *testing.T, r *running, v *viewer, alice *handleState, account [16]byte, changes []*ktpb.HandleChange, d1, d2, d2b *device) []*device {
	ctx := t.Context()
	stranger := newDevice(t)
	carolRes := v.await(r.dir, "carol@example.com", "an answer", func(*client.LookupResult) bool { return true })
	carol := &handleState{origin: origin, handle: carolRes.Handle, index: carolRes.Index}

	change := func(hcs ...*ktpb.HandleChange) func() error {
		return func() error {
			_, err := r.dir.Change(ctx, &ktpb.ChangeRequest{Changes: hcs})
			return err
		}
	}
	enrollCarol := func(cred string) func() error {
		hc := carol.change(api.AuthEnroll, stranger.sign, deviceSet(account, stranger))
		return func() error {
			_, err := r.dir.Enroll(ctx, &ktpb.EnrollRequest{Change: hc, Credential: cred})
			return err
		}
	}
	stale := *alice // built on version 3
	stale.version, stale.leaf = 3, api.LeafHash(changes[2].ChangeRecord)
	badHandle := alice.change(api.AuthDevice, d2b.sign, deviceSet(account, d2b, stranger))
	badHandle.Handle = "not a handle"
	oversized := alice.change(api.AuthDevice, d2b.sign, deviceSet(account, d2b, stranger))
	oversized.DeviceSet = make([]byte, grpcserver.DefaultMaxRecvMsgSize+1)
	next := alice.change(api.AuthDevice, d2b.sign, deviceSet(account, d2b, stranger))

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
		{"signed by a key not in the set", change(alice.change(api.AuthDevice, stranger.sign, deviceSet(account, d2b, stranger))), permission},
		{"replay of the latest change", change(changes[3]), aborted},
		{"replay of an older change", change(changes[1]), aborted},
		{"replay of the enrollment", func() error {
			_, err := r.dir.Enroll(ctx, &ktpb.EnrollRequest{Change: changes[0], Credential: r.dp.token.IssueToken(alice.handle)})
			return err
		}, aborted},
		{"signed by the removed device 1", change(alice.change(api.AuthDevice, d1.sign, deviceSet(account, d1, d2b))), permission},
		{"signed by device 2's old key", change(alice.change(api.AuthDevice, d2.sign, deviceSet(account, d2b, stranger))), permission},
		{"stale version", change(stale.change(api.AuthDevice, d2b.sign, deviceSet(account, d2b, stranger))), aborted},
		{"malformed handle", change(badHandle), invalid},
		{"malformed handle in a lookup", func() error {
			_, err := r.dir.Lookup(ctx, &ktpb.LookupRequest{Handle: "not a handle"})
			return err
		}, invalid},
		{"oversized request", change(oversized), codes.ResourceExhausted},
		{"unknown field in a valid change", change(withUnknown(next)), codes.InvalidArgument},
		{"unknown field in a lookup", func() error {
			_, err := r.dir.Lookup(ctx, withUnknown(&ktpb.LookupRequest{Handle: alice.handle}))
			return err
		}, codes.InvalidArgument},
		{"enrollment token of another operator", enrollCarol(r.dp.otherTokens.IssueToken(carol.handle)), permission},
		{"enrollment token for another handle", enrollCarol(r.dp.token.IssueToken(alice.handle)), permission},
		{"garbage enrollment token", enrollCarol("kt1.9999999999.AAAA"), permission},
		{"no enrollment token", enrollCarol(""), permission},
		{"recovery through the public Change API", change(alice.change(api.AuthRecovery, r.dp.recovery, deviceSet(account, stranger))), permission},
		{"atomic batch with one unauthorized change", change(
			alice.change(api.AuthDevice, d2b.sign, deviceSet(account, d2b, stranger)),
			carol.change(api.AuthDevice, stranger.sign, deviceSet(account, stranger)),
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
			res, err := v.tryLookup(r.dir, alice.handle)
			if err != nil {
				t.Fatal(err)
			}
			if res.Version != alice.version || res.LeafHash != alice.leaf {
				t.Fatalf("alice is at version %d, want %d", res.Version, alice.version)
			}
			if res, err := v.tryLookup(r.dir, carol.handle); err != nil || res.Registered {
				t.Fatalf("carol: registered %v, err %v", res != nil && res.Registered, err)
			}
		})
	}

	// The change refused for its unknown field goes through without it.
	if _, err := r.dir.Change(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{next}}); err != nil {
		t.Fatalf("Change: %v", err)
	}
	alice.accepted(next)
	res := v.awaitVersion(r.dir, alice)
	if !cmp.Equal(signingKeys(res.DeviceSet), keysOf(d2b, stranger)) {
		t.Fatalf("keys %x after the valid change", signingKeys(res.DeviceSet))
	}
	return []*device{d2b, stranger}
}
