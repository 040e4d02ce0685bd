package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/log"
)

// buildKtd builds cmd/ktd into a temporary directory (with -race when the
// tests run with it, which reuses the packages the tests compiled).
func buildKtd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ktd")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "github.com/keytrans/kt/cmd/ktd")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/ktd: %v\n%s", err, out)
	}
	return bin
}

// ktdProc is a running ktd process.
type ktdProc struct {
	d              *testkit.Daemon
	cmd            *exec.Cmd
	grpc, operator string // bound addresses, from its startup log line
	logs           *testkit.SyncBuffer
	exited         chan error
}

var (
	grpcAddrRE     = regexp.MustCompile(`\bgrpc=(\S+)`)
	operatorAddrRE = regexp.MustCompile(`\boperator=(\S+)`)
)

// startKtd runs `ktd flags...` and waits for its "ktd serving" log line,
// which names the bound listeners.
func startKtd(t *testing.T, bin string, flags []string) *ktdProc {
	t.Helper()
	d, ok, err := testkit.Launch(t, bin, flags, `msg="ktd serving"`)
	if !ok {
		t.Fatalf("ktd exited at startup: %v\n%s", err, d.Logs)
	}
	g, o := grpcAddrRE.FindStringSubmatch(d.Line), operatorAddrRE.FindStringSubmatch(d.Line)
	if g == nil || o == nil {
		t.Fatalf("ktd's serving line names no gRPC or operator address: %s", d.Line)
	}
	return &ktdProc{d: d, cmd: d.Cmd, logs: d.Logs, exited: d.Exited, grpc: g[1], operator: o[1]}
}

// stop sends SIGTERM, as an init system would, and expects a clean exit.
func (p *ktdProc) stop(t *testing.T) { p.d.Stop(t) }

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// issueToken runs `ktd issue-token` as an operator would.
func issueToken(t *testing.T, bin string, flags []string, handle string) string {
	t.Helper()
	out, err := exec.Command(bin, append(append([]string{"issue-token"}, flags...), handle)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("ktd issue-token %s: %v\n%s", handle, err, ee.Stderr)
		}
		t.Fatalf("ktd issue-token %s: %v", handle, err)
	}
	return strings.TrimSpace(string(out))
}

// recoveryKey reads the private recovery key ktd created in dataDir.
func recoveryKey(t *testing.T, dataDir string) ed25519.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "recovery.key"))
	if err != nil {
		t.Fatal(err)
	}
	s, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "kt-recovery-private:")
	if !ok {
		t.Fatalf("recovery.key is not a private key: %q", b)
	}
	seed, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(seed) != ed25519.SeedSize {
		t.Fatalf("recovery.key: %v", err)
	}
	return ed25519.NewKeyFromSeed(seed)
}

// checkpointSize is the size of the log's latest checkpoint, verified.
func checkpointSize(t *testing.T, logc ktpb.LogClient, pb *ktpb.Parameters) uint64 {
	t.Helper()
	cp, err := logc.GetCheckpoint(t.Context(), &ktpb.GetCheckpointRequest{})
	if err != nil {
		t.Fatalf("GetCheckpoint: %v", err)
	}
	v, err := note.NewVerifier(pb.GetLogPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := log.ParseCheckpoint(cp.GetNote(), pb.GetOrigin(), v)
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	return c.Size
}

// TestDaemon is the user's scenario through the ktd binary itself, on the
// embedded backend in a fresh data directory: `ktd issue-token` issues
// enrollment tokens; Alice enrolls with hers, adds a device and removes
// the first; her lookups and her monitor are verified by the client
// library's verification core; the operator's recovery service, on its
// own loopback listener, refuses bad requests (each with its gRPC code,
// nothing logged) and records a recovery as kind 4, which Alice's monitor
// reports as such; after SIGTERM and a restart on the same data directory
// everything is still there and verifies against the trusted state from
// before, and the handle keeps changing.
func TestDaemon(t *testing.T) {
	bin := buildKtd(t)
	dataDir := t.TempDir()
	flags := []string{
		"--data-dir", dataDir,
		"--grpc-listen", "127.0.0.1:0",
		"--http-listen", "127.0.0.1:0",
		"--operator-listen", "127.0.0.1:0",
		"--metrics-listen", "",
		"--log-checkpoint-interval", "100ms",
		"--directory-epoch-interval", "100ms",
		"--directory-heartbeat-interval", "300ms",
		"--directory-cache-size", "8388608",
	}
	aliceToken := issueToken(t, bin, flags, "alice@example.com") // before the first start: creates the token key
	p := startKtd(t, bin, flags)
	dc := ktpb.NewDirectoryClient(dial(t, p.grpc))
	logc := ktpb.NewLogClient(dial(t, p.grpc))
	oc := ktpb.NewOperatorClient(dial(t, p.operator))
	ctx := t.Context()

	pb, err := dc.GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		t.Fatalf("GetParameters: %v", err)
	}
	params, err := client.NewParams(pb, client.Options{InsecureNoWitnesses: true, MaxAge: time.Hour})
	if err != nil {
		t.Fatalf("client.NewParams: %v", err)
	}
	v := &viewer{t: t, params: params}
	origin := pb.GetOrigin()

	// Alice learns her canonical handle and VRF index from a verified
	// absence proof, and enrolls with the token the operator issued.
	res := v.await(dc, "Alice@Example.com", "an epoch", func(*client.LookupResult) bool { return true })
	if res.Registered {
		t.Fatal("alice is registered before enrolling")
	}
	alice := &handleState{origin: origin, handle: res.Handle, index: res.Index}
	var account [16]byte
	rand.Read(account[:])
	d1, d2 := testkit.NewDevice(), testkit.NewDevice()
	enroll := alice.change(api.AuthEnroll, d1.Sign, testkit.Set(account, d1))
	bobToken := issueToken(t, bin, flags, "bob@example.com") // while ktd runs
	if _, err := dc.Enroll(ctx, &ktpb.EnrollRequest{Change: enroll, Credential: bobToken}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Enroll with another handle's token: %v, want PermissionDenied", err)
	}
	if _, err := dc.Enroll(ctx, &ktpb.EnrollRequest{Change: enroll, Credential: aliceToken}); err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	alice.accepted(enroll)
	v.awaitVersion(dc, alice)

	// Add device 2, then remove device 1 (signed by device 2).
	for _, st := range []struct {
		name   string
		signer *testkit.Device
		set    []*testkit.Device
	}{
		{"add device 2", d1, []*testkit.Device{d1, d2}},
		{"remove device 1", d2, []*testkit.Device{d2}},
	} {
		hc := alice.change(api.AuthDevice, st.signer.Sign, testkit.Set(account, st.set...))
		if _, err := dc.Change(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}}); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		alice.accepted(hc)
		res = v.awaitVersion(dc, alice)
		if got, want := signingKeys(res.DeviceSet), testkit.Pubs(st.set...); !cmp.Equal(got, want) {
			t.Fatalf("%s: lookup shows keys %x, want %x", st.name, got, want)
		}
	}

	// Bob enrolls with the token issued while ktd was running.
	bobRes := v.await(dc, "bob@example.com", "an answer", func(*client.LookupResult) bool { return true })
	bob := &handleState{origin: origin, handle: bobRes.Handle, index: bobRes.Index}
	b1 := testkit.NewDevice()
	bobEnroll := bob.change(api.AuthEnroll, b1.Sign, testkit.Set([16]byte{1}, b1))
	if _, err := dc.Enroll(ctx, &ktpb.EnrollRequest{Change: bobEnroll, Credential: bobToken}); err != nil {
		t.Fatalf("Enroll bob: %v", err)
	}
	bob.accepted(bobEnroll)
	v.awaitVersion(dc, bob)

	// Alice's monitor, as device own sees it; the request is signed by
	// signer, a current device (design.md 13.4).
	monitor := func(state *client.MonitorState, own, signer *testkit.Device) *client.MonitorResult {
		t.Helper()
		mresp, err := dc.Monitor(ctx, signed(origin, &ktpb.MonitorRequest{Index: alice.index[:], KnownVersion: state.Version, KnownSize: v.knownSize()}, signer.Sign))
		if err != nil {
			t.Fatalf("Monitor: %v", err)
		}
		mon, err := client.VerifyMonitor(params, v.trusted, state, mresp, client.OwnKeys{Device: own.Pub()}, time.Now())
		if err != nil {
			t.Fatalf("VerifyMonitor: %v", err)
		}
		v.trusted = mon.Trusted
		return mon
	}
	mon := monitor(&client.MonitorState{Index: alice.index}, d1, d2)
	want := []summary{
		{Version: 1, Kind: api.AuthEnroll, By: client.ByThisDevice, Added: [][32]byte{d1.Pub()}},
		{Version: 2, Kind: api.AuthDevice, By: client.ByThisDevice, Added: [][32]byte{d2.Pub()}},
		{Version: 3, Kind: api.AuthDevice, By: client.ByOwnDevice, Removed: [][32]byte{d1.Pub()}},
	}
	if diff := cmp.Diff(want, summarize(mon.Changes)); diff != "" || len(mon.Alerts) != 0 {
		t.Fatalf("monitored changes (-want +got):\n%s\nalerts: %v", diff, mon.Alerts)
	}

	// The operator's recovery service refuses bad requests, each with its
	// code, and logs nothing.
	recovery := recoveryKey(t, dataDir)
	d3 := testkit.NewDevice()
	var newAccount [16]byte
	rand.Read(newAccount[:])
	stale := *alice
	stale.version, stale.leaf = 1, api.LeafHash(enroll.ChangeRecord) // as if at version 1
	sizeBefore := checkpointSize(t, logc, pb)
	for _, bad := range []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"empty request", func() error { _, err := oc.Recover(ctx, &ktpb.ChangeRequest{}); return err }, codes.InvalidArgument},
		{"device change sent to Recover", func() error {
			_, err := oc.Recover(ctx, req(alice.change(api.AuthDevice, d2.Sign, testkit.Set(account, d2, d3))))
			return err
		}, codes.PermissionDenied},
		{"recovery signed by a device", func() error {
			_, err := oc.Recover(ctx, req(alice.change(api.AuthRecovery, d2.Sign, testkit.Set(newAccount, d3))))
			return err
		}, codes.PermissionDenied},
		{"recovery at a stale version", func() error {
			_, err := oc.Recover(ctx, req(stale.change(api.AuthRecovery, recovery, testkit.Set(newAccount, d3))))
			return err
		}, codes.Aborted},
		{"malformed handle", func() error {
			hc := alice.change(api.AuthRecovery, recovery, testkit.Set(newAccount, d3))
			hc.Handle = "not a handle"
			_, err := oc.Recover(ctx, req(hc))
			return err
		}, codes.InvalidArgument},
		{"unknown field", func() error {
			_, err := oc.Recover(ctx, withUnknown(req(alice.change(api.AuthRecovery, recovery, testkit.Set(newAccount, d3)))))
			return err
		}, codes.InvalidArgument},
		{"recovery sent to the public Change", func() error {
			_, err := dc.Change(ctx, req(alice.change(api.AuthRecovery, recovery, testkit.Set(newAccount, d3))))
			return err
		}, codes.PermissionDenied},
	} {
		if err := bad.call(); status.Code(err) != bad.code {
			t.Errorf("%s: %v, want %v", bad.name, err, bad.code)
		}
	}
	noChangeLogged(t, logc, origin, pb.GetLogPublicKey(), sizeBefore)
	if res := v.awaitVersion(dc, alice); !cmp.Equal(signingKeys(res.DeviceSet), testkit.Pubs(d2)) {
		t.Fatalf("after the refused recoveries: keys %x", signingKeys(res.DeviceSet))
	}

	// A recovery through the operator listener: logged as kind 4, and
	// Alice's monitor (device 2) says the directory's recovery path made it.
	rec := alice.change(api.AuthRecovery, recovery, testkit.Set(newAccount, d3))
	rr, err := oc.Recover(ctx, req(rec))
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	alice.accepted(rec)
	res = v.awaitVersion(dc, alice)
	if res.Kind != api.AuthRecovery || !cmp.Equal(signingKeys(res.DeviceSet), testkit.Pubs(d3)) {
		t.Fatalf("after recovery: kind %v, keys %x", res.Kind, signingKeys(res.DeviceSet))
	}
	es, err := logc.GetEntries(ctx, &ktpb.GetEntriesRequest{Start: rr.GetLogIndices()[0], End: rr.GetLogIndices()[0] + 1})
	if err != nil {
		t.Fatalf("GetEntries of the recovery: %v", err)
	}
	if logged, err := api.ParseChangeRecord(es.GetEntries()[0]); err != nil || logged.Kind != api.AuthRecovery || logged.Version != 4 {
		t.Fatalf("the recovery's log entry: %+v, %v; want a kind-4 record at version 4", logged, err)
	}
	// Device 2's keys no longer authorize the handle: the directory
	// refuses it the device sets, and its records-only poll shows the
	// kind-4 record, which is its alert (design.md 13.4).
	if _, err := dc.Monitor(ctx, signed(origin, &ktpb.MonitorRequest{Index: alice.index[:], KnownVersion: mon.State.Version, KnownSize: v.knownSize()}, d2.Sign)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("device 2's full Monitor after the recovery: %v, want PermissionDenied", err)
	}
	ro, err := dc.Monitor(ctx, &ktpb.MonitorRequest{Index: alice.index[:], KnownVersion: mon.State.Version, KnownSize: v.knownSize(), RecordsOnly: true})
	if err != nil || len(ro.GetChanges()) != 1 {
		t.Fatalf("device 2's records-only Monitor after the recovery: %v, %v", ro, err)
	}
	if r, err := api.ParseChangeRecord(ro.GetChanges()[0].GetChangeRecord()); err != nil || r.Kind != api.AuthRecovery {
		t.Fatalf("the record device 2 sees: %+v, %v; want kind 4", r, err)
	}
	mon = monitor(mon.State, d2, d3)
	if len(mon.Changes) != 1 || mon.Changes[0].Version != 4 || mon.Changes[0].Record.Kind != api.AuthRecovery || !mon.Changes[0].AccountIDChanged || mon.Changes[0].By != client.ByRecovery {
		t.Fatalf("monitor after recovery: %+v", summarize(mon.Changes))
	}

	// Restart on the same data directory.
	trusted := v.trusted
	p.stop(t)
	p = startKtd(t, bin, flags)
	dc = ktpb.NewDirectoryClient(dial(t, p.grpc))
	pb2, err := dc.GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		t.Fatalf("GetParameters after restart: %v", err)
	}
	if pb2.GetLogPublicKey() != pb.GetLogPublicKey() || pb2.GetVrfPublicKey() != pb.GetVrfPublicKey() {
		t.Fatal("the keys changed across the restart")
	}
	v = &viewer{t: t, params: params, trusted: trusted}
	res = v.await(dc, alice.handle, "a new epoch", func(r *client.LookupResult) bool { return r.Epoch.Size > trusted.Size })
	if res.Version != 4 || res.LeafHash != alice.leaf || res.Kind != api.AuthRecovery || !cmp.Equal(signingKeys(res.DeviceSet), testkit.Pubs(d3)) {
		t.Fatalf("alice after restart: version %d kind %v keys %x", res.Version, res.Kind, signingKeys(res.DeviceSet))
	}
	v.awaitVersion(dc, bob)
	// The chain continues: the recovered device adds one.
	d4 := testkit.NewDevice()
	hc := alice.change(api.AuthDevice, d3.Sign, testkit.Set(newAccount, d3, d4))
	if _, err := dc.Change(ctx, req(hc)); err != nil {
		t.Fatalf("Change after restart: %v", err)
	}
	alice.accepted(hc)
	v.awaitVersion(dc, alice)
	mon = monitor(mon.State, d3, d3)
	if len(mon.Changes) != 1 || mon.Changes[0].Version != 5 || mon.Changes[0].By != client.ByThisDevice {
		t.Fatalf("monitor after restart: %+v", summarize(mon.Changes))
	}
	p.stop(t)
}

func req(hcs ...*ktpb.HandleChange) *ktpb.ChangeRequest {
	return &ktpb.ChangeRequest{Changes: hcs}
}
