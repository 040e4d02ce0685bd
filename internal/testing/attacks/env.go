package attacks

import (
	"context"
	"crypto/ed25519"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/internal/testing/attacks/adversary"
	"github.com/keytrans/kt/internal/testing/fixture"
	"github.com/keytrans/kt/internal/testing/testwitness"
	"github.com/keytrans/kt/log"
)

// Timing of every deployment: short epochs so that the suite runs in about
// a minute (design.md 7 defaults are 1 s and 10 s).
const (
	Origin            = "attacks.example/kt"
	EpochInterval     = fixture.DefaultEpochInterval
	HeartbeatInterval = fixture.DefaultHeartbeatInterval
	// Wait bounds every wait for something that must happen.
	Wait = fixture.Wait
)

// Keys are the operator's keys. Two deployments with the same Keys are the
// same directory to every client: a fork (A4, A5).
type Keys = fixture.Keys

// NewKeys generates the operator's keys for Origin.
func NewKeys() (*Keys, error) { return fixture.NewKeys(Origin) }

// World owns everything a scenario starts: temporary directories,
// listeners, goroutines. Close releases it all, in reverse order.
type World struct {
	root string

	mu      sync.Mutex
	closers []func()
}

// NewWorld returns an empty world with its own temporary directory.
func NewWorld() (*World, error) {
	root, err := os.MkdirTemp("", "ktattack-")
	if err != nil {
		return nil, err
	}
	w := &World{root: root}
	w.onClose(func() { os.RemoveAll(root) })
	return w, nil
}

func (w *World) onClose(f func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closers = append(w.closers, f)
}

// Close stops everything the world started.
func (w *World) Close() {
	w.mu.Lock()
	cs := w.closers
	w.closers = nil
	w.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}

func (w *World) dir(name string) (string, error) {
	return os.MkdirTemp(w.root, name+"-")
}

// Switch is an http.Handler whose target can be replaced: the adversary
// pointing a log's public URL at another log (A5).
type Switch = fixture.Switch

func (w *World) httpServer(h http.Handler) string {
	srv := httptest.NewServer(h)
	w.onClose(srv.Close)
	return srv.URL
}

// Options configures a deployment.
type Options struct {
	// Keys are the operator's keys (default: fresh ones).
	Keys *Keys
	// Witness is the log's witness (default: a new honest one). A shared
	// witness sees both branches of a fork.
	Witness *testwitness.Witness
	// WitnessKey is the witness verifier key the policy names (default:
	// Witness's own). A witness whose key was stolen is a second witness
	// that signs with the first one's key under this name.
	WitnessKey string
	// NoWitness publishes checkpoints without cosignatures: what an
	// operator does when no honest witness cosigns its fork.
	NoWitness bool
	// MaxAge and Skew are the clients' freshness bound and clock skew
	// (default 60 s and 10 s, the defaults of package client).
	MaxAge, Skew time.Duration
	// Auditors, when non-zero, runs the directory in audit mode
	// (design.md 14.3) with that many auditors (fixture Options.Audit),
	// all of which must vouch; MaxAuditLag is the clients' audit lag
	// bound (default that of package client).
	Auditors    int
	MaxAuditLag time.Duration
}

// Deployment is one running directory on the embedded log, reached over
// gRPC on loopback, both directly and through the adversary's Proxy, with
// the log's HTTP read API for auditors.
type Deployment struct {
	Keys      *Keys
	Witness   *testwitness.Witness
	Policy    string
	Log       *adversary.Log
	Directory *directory.Directory
	Proxy     *adversary.Proxy

	// Honest is the directory's own gRPC Directory service; Front is the
	// same service through the Proxy (what the attacked clients use).
	Honest, Front ktpb.DirectoryClient
	LogRPC        ktpb.LogClient
	Operator      ktpb.OperatorClient
	// DirAddr is the directory's public gRPC address, LogURL its HTTP read
	// API (the base URL for logapi.NewClient).
	DirAddr, LogURL string
	// LogHandler is the read API's handler (what LogURL serves).
	LogHandler http.Handler
	Params     *client.Params
	// Auditors are the auditors of the audit policy (Options.Auditors).
	Auditors []*fixture.Auditor

	fx *fixture.Deployment
}

// Deploy starts a directory (package internal/testing/fixture) with the
// adversary's Log between it and the log, and its Proxy in front of it.
func (w *World) Deploy(ctx context.Context, o Options) (*Deployment, error) {
	base, err := w.dir("deployment")
	if err != nil {
		return nil, err
	}
	var adv *adversary.Log
	fd, err := fixture.Start(ctx, fixture.Options{
		Origin: Origin, Keys: o.Keys, DataDir: base,
		Witness: o.Witness, WitnessKey: o.WitnessKey, NoWitness: o.NoWitness,
		EpochInterval: EpochInterval, HeartbeatInterval: HeartbeatInterval,
		WrapLog: func(l log.Log) log.Log { adv = adversary.NewLog(l); return adv },
		Audit:   o.Auditors > 0, Auditors: o.Auditors,
		Client: client.Options{MaxAge: o.MaxAge, Skew: o.Skew, MaxAuditLag: o.MaxAuditLag},
	})
	if err != nil {
		return nil, err
	}
	w.onClose(func() { fd.Close() })
	d := &Deployment{
		fx: fd, Keys: fd.Keys, Policy: fd.Policy, Log: adv, Directory: fd.Directory,
		Honest: fd.Dir, LogRPC: fd.LogRPC, Operator: fd.Operator,
		DirAddr: fd.Addr, LogURL: fd.LogURL, LogHandler: fd.LogHandler, Params: fd.Params,
		Auditors: fd.Auditors,
	}
	if len(fd.Witnesses) > 0 {
		d.Witness = fd.Witnesses[0]
	}
	d.Proxy = adversary.NewProxy(d.Honest)
	front := grpc.NewServer()
	ktpb.RegisterDirectoryServer(front, d.Proxy)
	_, frontConn, err := fd.Serve(front)
	if err != nil {
		return nil, err
	}
	d.Front = ktpb.NewDirectoryClient(frontConn)
	return d, nil
}

// poll calls f every 10 ms until it reports done or fails, or Wait passes.
func poll(ctx context.Context, f func() (bool, error)) error { return fixture.Poll(ctx, f) }

// Device is one device of a user: a real client.Client.
type Device struct {
	*client.Client
	Store *client.MemStore
}

// NewDevice returns an initialized client for a new device that talks to
// the directory through via (the Front when nil) with the deployment's
// pinned parameters.
func (d *Deployment) NewDevice(ctx context.Context, via ktpb.DirectoryClient, cfg client.Config) (*Device, error) {
	if via == nil {
		via = d.Front
	}
	c, st, err := d.fx.NewDevice(ctx, via, cfg)
	if err != nil {
		return nil, err
	}
	return &Device{Client: c, Store: st}, nil
}

// Enroll registers handle with c as its first device (with an operator
// token, as the operator's verification service would issue) and waits
// until it is visible.
func (d *Deployment) Enroll(ctx context.Context, c *Device, handle string, accountKey bool) error {
	return d.fx.Enroll(ctx, c.Client, handle, accountKey)
}

// Link adds nc's device to c's account and makes nc join handle.
func (d *Deployment) Link(ctx context.Context, c, nc *Device, handle string) error {
	return fixture.Link(ctx, c.Client, nc.Client, handle)
}

// AwaitVersion looks handle up with c until it reaches version v.
func AwaitVersion(ctx context.Context, c *Device, handle string, v uint64) (*client.LookupResult, error) {
	return fixture.AwaitVersion(ctx, c.Client, handle, v)
}

// Recover is the operator's recovery path (the Operator service's Recover
// RPC, with a change signed by the recovery key): it replaces handle's set
// by edit's result and returns the new version, once visible to c.
func (d *Deployment) Recover(ctx context.Context, c *Device, handle string, edit func(*api.DeviceSet)) (uint64, error) {
	return d.fx.Recover(ctx, c.Client, handle, edit)
}

// Ghost returns a fresh device that belongs to the adversary.
func Ghost() (api.Device, error) { return fixture.Ghost() }

// Auditor is a running auditor (package auditor) following one or more
// logs over their HTTP read API, with its HTTP endpoints (witness, gossip,
// evidence) on loopback.
type Auditor struct{ *fixture.Auditor }

// AuditorOptions configures StartAuditor.
type AuditorOptions struct {
	// Peers to gossip with.
	Peers []auditor.Peer
	// Gossip is the gossip interval (default: a minute, so that scenarios
	// drive rounds with GossipRound).
	Gossip time.Duration
	// Cosign enables the tlog-witness endpoint.
	Cosign bool
	// Audit gives the auditor an audit key (design.md 14.1): it answers
	// POST /kt/v1/audit with statements.
	Audit bool
}

// NewAuditorURL reserves a URL for an auditor started later with
// StartAuditorAt (so that two auditors can name each other as peers).
func (w *World) NewAuditorURL() (string, *Switch) {
	s := &Switch{}
	return w.httpServer(s), s
}

// StartAuditor starts an auditor of the log at logURL (read API) with the
// deployment's keys.
func (w *World) StartAuditor(ctx context.Context, name string, k *Keys, logURL string, o AuditorOptions) (*Auditor, error) {
	url, sw := w.NewAuditorURL()
	return w.StartAuditorAt(ctx, name, url, sw, k, logURL, o)
}

// StartAuditorAt is StartAuditor on a reserved URL.
func (w *World) StartAuditorAt(ctx context.Context, name, url string, sw *Switch, k *Keys, logURL string, o AuditorOptions) (*Auditor, error) {
	dir, err := w.dir("auditor-" + name)
	if err != nil {
		return nil, err
	}
	a, err := fixture.StartAuditor(ctx, fixture.AuditorOptions{
		Name: name, Origin: Origin, LogVKey: k.LogVKey, RecoveryKey: k.Recovery.Public().(ed25519.PublicKey),
		LogURL: logURL, Dir: dir, Switch: sw, URL: url,
		Peers: o.Peers, Gossip: o.Gossip, Cosign: o.Cosign, Audit: o.Audit, Run: true,
	})
	if err != nil {
		return nil, err
	}
	w.onClose(a.Close)
	return &Auditor{a}, nil
}

// AwaitAudited waits until a has audited a checkpoint of at least size.
func (a *Auditor) AwaitAudited(ctx context.Context, size uint64) error {
	return poll(ctx, func() (bool, error) {
		for _, s := range a.Status() {
			if s.Origin == Origin && s.Latest != nil && s.Latest.Size >= size {
				return true, nil
			}
		}
		return false, nil
	})
}
