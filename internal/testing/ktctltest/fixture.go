// Package ktctltest runs a small key transparency deployment for the tests
// of ktctl (package internal/testing/fixture): a directory over the
// embedded log (log/posix) in a data directory laid out as ktd's, its gRPC
// edge and HTTP read API on loopback, a test witness, and a scripted
// history of changes, including a recovery.
package ktctltest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/internal/testing/fixture"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/vrf"
)

// Origin is the fixture log's origin.
const Origin = "ktctl.test/kt"

// Fixture is a running deployment with a known history.
type Fixture struct {
	// DataDir is laid out as ktd's: log.key, vrf.key, recovery.key, plus
	// witness.policy (the 1-of-1 policy naming the witness "w0").
	DataDir    string
	PolicyFile string
	LogVkey    string
	// LogURL is the HTTP read API's base URL, which also serves the log
	// as C2SP tlog-tiles (as ktd does); GRPCAddr the gRPC address.
	LogURL   string
	GRPCAddr string
	// OperatorAddr is the Operator service's gRPC address (ktctl diff).
	OperatorAddr string
	// Witness is the witness's verifier key.
	WitnessVkey string
	VRF         *vrf.PrivateKey
	// NextVRF is the directory's next VRF key (design.md 11.2): a VRF
	// rotation to it is accepted.
	NextVRF  *vrf.PrivateKey
	Recovery ed25519.PrivateKey
	// Alice and Bob are the handles of the scripted history.
	Alice, Bob *Handle
	// Conn is a gRPC connection to GRPCAddr.
	Conn *grpc.ClientConn

	bob        *testkit.Device // bob's device, for Grow
	bobAccount [16]byte
}

// Version is one logged change of a handle.
type Version struct {
	Version  uint64
	LogIndex uint64
	// Epoch is the epoch that published it.
	Epoch uint64
	Kind  api.AuthKind
	Set   *api.DeviceSet
}

// Handle is a handle of the scripted history.
type Handle struct {
	Name     string // canonical
	Index    [32]byte
	Versions []Version

	leaf [32]byte
}

// Start runs the deployment and plays the history:
//
//	alice v1  enroll by A1                 {A1}
//	alice v2  device by A1                 {A1, A2}
//	bob   v1  enroll by B1                 {B1}
//	alice v3  device by A1: A2 re-keyed, account key added
//	alice v4  recovery: ghost device G added
//
// Each change is published in its own epoch before the next is made. The
// heartbeat is long, so the log does not grow after Start returns.
func Start(t testing.TB) *Fixture {
	t.Helper()
	return StartWith(t, Options{})
}

// Options configure StartWith.
type Options struct {
	// OpenLog opens the log (default fixture.OpenPosix): for example a
	// log/trillian Log, whose tiles LogURL then serves as ktd does.
	OpenLog func(context.Context, fixture.LogConfig) (log.Log, error)
}

// StartWith is Start with options.
func StartWith(t testing.TB, o Options) *Fixture {
	t.Helper()
	f := &Fixture{DataDir: t.TempDir()}
	keys, err := fixture.NewKeys(Origin)
	if err != nil {
		t.Fatal(err)
	}
	// The heartbeat is long, so the log does not grow after Start returns.
	dep := fixture.New(t, fixture.Options{
		Origin: Origin, Keys: keys, DataDir: f.DataDir, Credentials: directory.OpenEnrollment{},
		EpochInterval: 50 * time.Millisecond, HeartbeatInterval: time.Hour,
		OpenLog: o.OpenLog,
	})
	f.LogVkey, f.VRF, f.NextVRF, f.Recovery = keys.LogVKey, keys.VRF, keys.NextVRF, keys.Recovery
	f.WitnessVkey = dep.Witnesses[0].VerifierKey()
	f.LogURL, f.GRPCAddr, f.OperatorAddr, f.Conn = dep.LogURL, dep.Addr, dep.OperatorAddr, dep.Conn
	// The data directory as ktd's: the log and state (written by the
	// fixture), the keys and the witness policy.
	vrfText, _ := f.VRF.MarshalText()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(f.DataDir, name), []byte(text+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("log.key", keys.LogSKey)
	write("vrf.key", string(vrfText))
	write("recovery.key", "kt-recovery-private:"+base64.StdEncoding.EncodeToString(f.Recovery.Seed()))
	write("witness.policy", dep.Policy)
	f.PolicyFile = filepath.Join(f.DataDir, "witness.policy")
	d := dep.Directory
	f.play(t, d)
	return f
}

func (f *Fixture) handle(t testing.TB, name string) *Handle {
	h, err := api.NormalizeHandle(name)
	if err != nil {
		t.Fatal(err)
	}
	index, _ := f.VRF.Prove(api.VRFInput(h))
	return &Handle{Name: h, Index: index}
}

// change builds h's next change to set, signed by signer.
func (f *Fixture) change(h *Handle, kind api.AuthKind, signer ed25519.PrivateKey, set *api.DeviceSet) *ktpb.HandleChange {
	version := uint64(len(h.Versions)) + 1
	ds, err := set.MarshalBinary()
	if err != nil {
		panic(err)
	}
	var opening [32]byte
	rand.Read(opening[:])
	rec := &api.ChangeRecord{
		Index: h.Index, Version: version, Commitment: api.Commit(opening, h.Index, version, ds),
		Prev: h.leaf, Kind: kind, Authorizers: set.Authorizers(),
	}
	rec.Sign(Origin, signer)
	b, err := rec.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return &ktpb.HandleChange{Handle: h.Name, ChangeRecord: b, Opening: opening[:], DeviceSet: ds}
}

// apply sends a change and waits until an epoch publishes it.
func (f *Fixture) apply(t testing.TB, h *Handle, kind api.AuthKind, signer ed25519.PrivateKey, set *api.DeviceSet, send func(context.Context, *ktpb.HandleChange) (*ktpb.ChangeResponse, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := f.change(h, kind, signer, set)
	resp, err := send(ctx, hc)
	if err != nil {
		t.Fatalf("%s version %d: %v", h.Name, len(h.Versions)+1, err)
	}
	idx := resp.GetLogIndices()[0]
	dc := ktpb.NewDirectoryClient(f.Conn)
	for {
		part, err := dc.GetEpoch(ctx, &ktpb.GetEpochRequest{})
		if err != nil {
			t.Fatal(err)
		}
		rec, err := api.ParseEpochRecord(part.GetEpochRecord())
		if err != nil {
			t.Fatal(err)
		}
		if rec.LogSize > idx {
			h.Versions = append(h.Versions, Version{Version: uint64(len(h.Versions)) + 1, LogIndex: idx, Epoch: rec.Epoch, Kind: kind, Set: set})
			h.leaf = api.LeafHash(hc.ChangeRecord)
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("change at %d not published: %v", idx, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (f *Fixture) play(t testing.TB, d *directory.Directory) {
	dc := ktpb.NewDirectoryClient(f.Conn)
	enroll := func(ctx context.Context, hc *ktpb.HandleChange) (*ktpb.ChangeResponse, error) {
		return dc.Enroll(ctx, &ktpb.EnrollRequest{Change: hc, Credential: "open"})
	}
	change := func(ctx context.Context, hc *ktpb.HandleChange) (*ktpb.ChangeResponse, error) {
		return dc.Change(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}})
	}
	recov := func(ctx context.Context, hc *ktpb.HandleChange) (*ktpb.ChangeResponse, error) {
		return d.Recover(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}})
	}
	f.Alice, f.Bob = f.handle(t, "+14155550100"), f.handle(t, "bob@example.com")
	var acct, bacct [16]byte
	rand.Read(acct[:])
	rand.Read(bacct[:])
	a1, a2, b1 := testkit.NewDevice(), testkit.NewDevice(), testkit.NewDevice()
	f.bob, f.bobAccount = b1, bacct
	f.apply(t, f.Alice, api.AuthEnroll, a1.Sign, testkit.Set(acct, a1), enroll)
	f.apply(t, f.Alice, api.AuthDevice, a1.Sign, testkit.Set(acct, a1, a2), change)
	f.apply(t, f.Bob, api.AuthEnroll, b1.Sign, testkit.Set(bacct, b1), enroll)
	a2r := a2.Rekeyed()
	_, ak, _ := ed25519.GenerateKey(nil)
	s3 := testkit.Set(acct, a1, a2r)
	s3.SignAccount(Origin, f.Alice.Index, 3, ak)
	f.apply(t, f.Alice, api.AuthDevice, a1.Sign, s3, change)
	ghost := testkit.NewDevice()
	s4 := testkit.Set(acct, a1, a2r, ghost)
	s4.SignAccount(Origin, f.Alice.Index, 4, ak)
	f.apply(t, f.Alice, api.AuthRecovery, f.Recovery, s4, recov)
}

// Size returns the log's current checkpoint size, read over HTTP.
func (f *Fixture) Size(t testing.TB) uint64 {
	t.Helper()
	resp, err := http.Get(f.LogURL + "/log/v1/checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var origin string
	var size uint64
	if _, err := fmt.Fscanf(resp.Body, "%s\n%d\n", &origin, &size); err != nil {
		t.Fatal(err)
	}
	return size
}

// Grow adds a device to bob's set (signed by bob's device) and waits until
// an epoch publishes it: the log grows by a change and an epoch record.
func (f *Fixture) Grow(t testing.TB) {
	t.Helper()
	dc := ktpb.NewDirectoryClient(f.Conn)
	var devs []*testkit.Device
	devs = append(devs, f.bob)
	for range len(f.Bob.Versions) {
		devs = append(devs, testkit.NewDevice())
	}
	f.apply(t, f.Bob, api.AuthDevice, f.bob.Sign, testkit.Set(f.bobAccount, devs...), func(ctx context.Context, hc *ktpb.HandleChange) (*ktpb.ChangeResponse, error) {
		return dc.Change(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}})
	})
}
