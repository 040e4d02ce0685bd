package client_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/directory"
	fx "github.com/keytrans/kt/internal/testing/fixture"
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

// netEnv is a running deployment (package internal/testing/fixture):
// directory, public and operator gRPC services, and the operator's keys.
type netEnv struct {
	t         tb
	dep       *fx.Deployment
	keys      *fx.Keys
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

// newNetKeys returns a directory's keys; two directories with the same
// keys sign one log's checkpoints (a fork, when their histories differ).
func newNetKeys(t tb) *fx.Keys {
	t.Helper()
	k, err := fx.NewKeys(netOrigin)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newNetEnv(t tb) *netEnv { return newNetEnvWith(t, newNetKeys(t), netHeartbeat) }

// newNetEnvWith runs a directory with keys k and the given heartbeat
// interval, and its own witness.
func newNetEnvWith(t tb, k *fx.Keys, heartbeat time.Duration) *netEnv {
	t.Helper()
	d, err := fx.Start(t.Context(), fx.Options{
		Origin: netOrigin, Keys: k, DataDir: t.TempDir(),
		EpochInterval: netEpoch, HeartbeatInterval: heartbeat,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("stopping the deployment: %v", err)
		}
	})
	return &netEnv{t: t, dep: d, keys: k, readURL: d.LogURL, logSigner: k.LogSigner, recovery: k.Recovery,
		token: k.Token, pb: d.Parameters, params: d.Params, conn: d.Conn,
		dir: d.Dir, logc: d.LogRPC, op: d.Operator}
}

// newClient returns a client with an in-memory store over dir (the
// environment's directory client when nil).
func (e *netEnv) newClient(dir ktpb.DirectoryClient, cfg client.Config) (*client.Client, *client.MemStore) {
	e.t.Helper()
	c, st, err := e.dep.NewClient(dir, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return c, st
}

// device returns an initialized client for a new device.
func (e *netEnv) device(cfg client.Config) *client.Client {
	e.t.Helper()
	c, _, err := e.dep.NewDevice(e.t.Context(), nil, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// enroll registers handle with c as its first device and waits until the
// enrollment is visible.
func (e *netEnv) enroll(c *client.Client, handle string, accountKey bool) {
	e.t.Helper()
	if err := e.dep.Enroll(e.t.Context(), c, handle, accountKey); err != nil {
		e.t.Fatalf("Enroll %s: %v", handle, err)
	}
}

// link adds the device of nc to c's account and makes nc join handle.
func (e *netEnv) link(c, nc *client.Client, handle string) {
	e.t.Helper()
	if err := fx.Link(e.t.Context(), c, nc, handle); err != nil {
		e.t.Fatal(err)
	}
}

// awaitVersion polls c's lookups of handle until it reaches version v.
func awaitVersion(t tb, c *client.Client, handle string, v uint64) *client.LookupResult {
	t.Helper()
	res, err := fx.AwaitVersion(t.Context(), c, handle, v)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// recover makes the operator replace handle's set through the Recover
// RPC, with a change signed by the recovery key, and returns the new
// version once visible to c.
func (e *netEnv) recover(c *client.Client, handle string, edit func(*api.DeviceSet)) uint64 {
	e.t.Helper()
	v, err := e.dep.Recover(e.t.Context(), c, handle, edit)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// ghost returns a device that is not the owner's.
func ghost(t tb) api.Device {
	d, err := fx.Ghost()
	if err != nil {
		t.Fatal(err)
	}
	return d
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
