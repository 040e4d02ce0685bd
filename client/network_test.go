package client_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/directory/grpcserver"
	"github.com/keytrans/kt/internal/testwitness"
	"github.com/keytrans/kt/internal/vrf"
	"github.com/keytrans/kt/log/logapi"
	"github.com/keytrans/kt/log/posix"
)

// The network tests run a real directory on the embedded log (log/posix)
// in a temporary directory, behind its real gRPC edge on a loopback
// listener, with a 1-of-1 witness policy served by a test witness over
// HTTP, and drive it only through gRPC.
const (
	netOrigin    = "client-test.example/kt"
	netEpoch     = 100 * time.Millisecond
	netHeartbeat = 300 * time.Millisecond
	netWait      = 30 * time.Second
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// tb is what the network helpers need of a *testing.T; examples supply
// their own (exampleTB).
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	TempDir() string
	Cleanup(func())
	Context() context.Context
}

// netEnv is a running deployment: directory, public and operator gRPC
// services, and the operator's keys.
type netEnv struct {
	t         tb
	keys      *netKeys
	readURL   string // the log's HTTP read API
	logSigner note.Signer
	recovery  ed25519.PrivateKey
	token     *directory.TokenCredentials
	pb        *ktpb.Parameters
	params    *client.Params
	conn      *grpc.ClientConn
	dir       ktpb.DirectoryClient
	logc      ktpb.LogClient
	op        ktpb.OperatorClient
}

// netKeys are a directory's keys; two directories with the same keys
// sign one log's checkpoints (a fork, when their histories differ).
type netKeys struct {
	skey, vkey string
	vrf        *vrf.PrivateKey
	recovery   ed25519.PrivateKey
	token      []byte
}

func newNetKeys(t tb) *netKeys {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, netOrigin)
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
	return &netKeys{skey: skey, vkey: vkey, vrf: vk, recovery: rk, token: key}
}

func newNetEnv(t tb) *netEnv { return newNetEnvWith(t, newNetKeys(t), netHeartbeat) }

// newNetEnvWith runs a directory with keys k and the given heartbeat
// interval, and its own witness.
func newNetEnvWith(t tb, k *netKeys, heartbeat time.Duration) *netEnv {
	t.Helper()
	skey, vkey, vk, rk := k.skey, k.vkey, k.vrf, k.recovery
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := directory.NewTokenCredentials(k.token)
	if err != nil {
		t.Fatal(err)
	}
	w, err := testwitness.New("witness.client-test.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddLog(netOrigin, vkey); err != nil {
		t.Fatal(err)
	}
	ws := httptest.NewServer(w)
	t.Cleanup(ws.Close)
	policy := fmt.Sprintf("witness w0 %s %s\ngroup g 1 w0\nquorum g\n", w.VerifierKey(), ws.URL)

	dir := t.TempDir()
	l, err := posix.New(context.Background(), posix.Config{
		Dir: filepath.Join(dir, "log"), Origin: netOrigin, Signer: signer,
		WitnessPolicy: []byte(policy), WitnessTimeout: 5 * time.Second,
		CheckpointInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("posix.New: %v", err)
	}
	d, err := directory.New(context.Background(), directory.Config{
		Log: l, Origin: netOrigin, LogVerifierKey: vkey, VRFKey: vk,
		RecoveryKey: rk.Public().(ed25519.PublicKey), Credentials: tk,
		StateDir: filepath.Join(dir, "state"), WitnessPolicy: policy,
		EpochInterval: netEpoch, HeartbeatInterval: heartbeat,
		StartupWait: 5 * time.Second, CacheSize: 8 << 20, Logger: quiet,
	})
	if err != nil {
		l.Close(context.Background())
		t.Fatalf("directory.New: %v", err)
	}
	// The log's HTTP read API (design.md 10), for auditors.
	ra := httptest.NewServer(logapi.NewHandler(l, logapi.WithLogger(quiet)))
	t.Cleanup(ra.Close)
	pub, err := grpcserver.New(grpcserver.Options{RateLimit: -1, Logger: quiet}, d, d)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := grpcserver.NewOperator(grpcserver.Options{RateLimit: -1, Logger: quiet}, d)
	if err != nil {
		t.Fatal(err)
	}
	serve := func(s *grpc.Server) *grpc.ClientConn {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go s.Serve(lis)
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}
	conn, opConn := serve(pub), serve(ops)
	t.Cleanup(func() {
		conn.Close()
		opConn.Close()
		pub.Stop()
		ops.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.Close(ctx); err != nil {
			t.Errorf("closing the directory: %v", err)
		}
		l.Close(ctx)
	})
	e := &netEnv{t: t, keys: k, readURL: ra.URL, logSigner: signer, recovery: rk, token: tk, conn: conn,
		dir: ktpb.NewDirectoryClient(conn), logc: ktpb.NewLogClient(conn), op: ktpb.NewOperatorClient(opConn)}
	if e.pb, err = e.dir.GetParameters(t.Context(), &ktpb.GetParametersRequest{}); err != nil {
		t.Fatal(err)
	}
	if e.params, err = client.NewParams(e.pb, client.Options{}); err != nil {
		t.Fatal(err)
	}
	// Wait for the first epoch.
	deadline := time.Now().Add(netWait)
	for {
		_, err := e.dir.GetEpoch(t.Context(), &ktpb.GetEpochRequest{})
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("no first epoch: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return e
}

// newClient returns a client with an in-memory store over dir (the
// environment's directory client when nil).
func (e *netEnv) newClient(dir ktpb.DirectoryClient, cfg client.Config) (*client.Client, *client.MemStore) {
	e.t.Helper()
	if dir == nil {
		dir = e.dir
	}
	if cfg.Log == nil {
		cfg.Log = e.logc
	}
	st := &client.MemStore{}
	c, err := client.New(dir, e.params, st, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return c, st
}

// device returns an initialized client for a new device.
func (e *netEnv) device(cfg client.Config) *client.Client {
	e.t.Helper()
	c, _ := e.newClient(nil, cfg)
	if _, err := c.Init(e.t.Context(), api.HPKESuite{}); err != nil {
		e.t.Fatal(err)
	}
	return c
}

// enroll registers handle with c as its first device and waits until the
// enrollment is visible.
func (e *netEnv) enroll(c *client.Client, handle string, accountKey bool) {
	e.t.Helper()
	canon, _ := api.NormalizeHandle(handle)
	s, err := c.Enroll(e.t.Context(), handle, e.token.IssueToken(canon), accountKey)
	if err != nil {
		e.t.Fatalf("Enroll %s: %v", handle, err)
	}
	awaitVersion(e.t, c, handle, s.Version)
}

// link adds the device of nc to c's account and makes nc join handle.
func (e *netEnv) link(c, nc *client.Client, handle string) {
	e.t.Helper()
	ctx := e.t.Context()
	st, err := nc.State(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	d, err := client.ParseDescriptor(st.Device.Descriptor())
	if err != nil {
		e.t.Fatal(err)
	}
	subs, err := c.AddDevice(ctx, d)
	if err != nil {
		e.t.Fatalf("AddDevice: %v", err)
	}
	awaitVersion(e.t, c, handle, subs[0].Version)
	if _, err := nc.Join(ctx, handle); err != nil {
		e.t.Fatalf("Join: %v", err)
	}
}

// awaitVersion polls c's lookups of handle until it reaches version v.
func awaitVersion(t tb, c *client.Client, handle string, v uint64) *client.LookupResult {
	t.Helper()
	deadline := time.Now().Add(netWait)
	for {
		res, err := c.Lookup(t.Context(), handle)
		if err != nil {
			t.Fatalf("lookup %s: %v", handle, err)
		}
		if res.Version >= v {
			if res.Version != v {
				t.Fatalf("lookup %s: version %d, want %d", handle, res.Version, v)
			}
			return res
		}
		if time.Now().After(deadline) {
			t.Fatalf("lookup %s: version %d not seen within %v", handle, v, netWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recover makes the operator replace handle's set through the Recover
// RPC, with a change signed by the recovery key, and returns the new
// version once visible to c.
func (e *netEnv) recover(c *client.Client, handle string, edit func(*api.DeviceSet)) uint64 {
	e.t.Helper()
	ctx := e.t.Context()
	res, err := c.Lookup(ctx, handle)
	if err != nil {
		e.t.Fatal(err)
	}
	set := &api.DeviceSet{AccountID: res.DeviceSet.AccountID, Devices: append([]api.Device(nil), res.DeviceSet.Devices...)}
	edit(set)
	hc, err := client.NewChange(netOrigin, res, set, api.AuthRecovery, e.recovery)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.op.Recover(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}}); err != nil {
		e.t.Fatalf("Recover: %v", err)
	}
	awaitVersion(e.t, c, handle, res.Version+1)
	return res.Version + 1
}

// ghost returns a device that is not the owner's.
func ghost(t tb) api.Device {
	k, err := client.GenerateDevice(api.SuiteX25519, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return k.Device()
}

func addSorted(set *api.DeviceSet, d api.Device) {
	set.Devices = append(set.Devices, d)
	for i := len(set.Devices) - 1; i > 0 && string(set.Devices[i].ID[:]) < string(set.Devices[i-1].ID[:]); i-- {
		set.Devices[i], set.Devices[i-1] = set.Devices[i-1], set.Devices[i]
	}
}

func decryptAll(t *testing.T, c *client.Client, envs []*client.Envelope) (string, error) {
	t.Helper()
	st, err := c.State(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range envs {
		if e.Device != st.Device.ID {
			continue
		}
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		pt, _, err := c.Decrypt(t.Context(), b)
		return string(pt), err
	}
	return "", errors.New("no envelope for this device")
}
