package attacks

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/directory/grpcserver"
	"github.com/keytrans/kt/internal/attacks/adversary"
	"github.com/keytrans/kt/internal/testwitness"
	"github.com/keytrans/kt/internal/vrf"
	"github.com/keytrans/kt/log/logapi"
	"github.com/keytrans/kt/log/posix"
)

// Timing of every deployment: short epochs so that the suite runs in about
// a minute (design.md 7 defaults are 1 s and 10 s).
const (
	Origin            = "attacks.example/kt"
	EpochInterval     = 100 * time.Millisecond
	HeartbeatInterval = 300 * time.Millisecond
	// Wait bounds every wait for something that must happen.
	Wait = 20 * time.Second
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Keys are the operator's keys. Two deployments with the same Keys are the
// same directory to every client: a fork (A4, A5).
type Keys struct {
	LogSigner note.Signer
	LogVKey   string
	VRF       *vrf.PrivateKey
	Recovery  ed25519.PrivateKey
	Token     *directory.TokenCredentials
}

// NewKeys generates the operator's keys for Origin.
func NewKeys() (*Keys, error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, Origin)
	if err != nil {
		return nil, err
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, err
	}
	vk, err := vrf.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	_, rk, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	tk := make([]byte, 32)
	rand.Read(tk)
	tc, err := directory.NewTokenCredentials(tk)
	if err != nil {
		return nil, err
	}
	return &Keys{LogSigner: signer, LogVKey: vkey, VRF: vk, Recovery: rk, Token: tc}, nil
}

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
type Switch struct {
	mu sync.RWMutex
	h  http.Handler
}

// Set replaces the target.
func (s *Switch) Set(h http.Handler) {
	s.mu.Lock()
	s.h = h
	s.mu.Unlock()
}

func (s *Switch) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	h := s.h
	s.mu.RUnlock()
	if h == nil {
		http.Error(rw, "not ready", http.StatusServiceUnavailable)
		return
	}
	h.ServeHTTP(rw, r)
}

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
}

// Deploy starts a directory.
func (w *World) Deploy(ctx context.Context, o Options) (*Deployment, error) {
	var err error
	k := o.Keys
	if k == nil {
		if k, err = NewKeys(); err != nil {
			return nil, err
		}
	}
	d := &Deployment{Keys: k, Witness: o.Witness}
	var policy []byte
	if !o.NoWitness {
		if d.Witness == nil {
			if d.Witness, err = testwitness.New("witness.attacks.example"); err != nil {
				return nil, err
			}
			if err := d.Witness.AddLog(Origin, k.LogVKey); err != nil {
				return nil, err
			}
		}
		url := w.httpServer(d.Witness)
		wk := o.WitnessKey
		if wk == "" {
			wk = d.Witness.VerifierKey()
		}
		d.Policy = fmt.Sprintf("witness w0 %s %s\ngroup g 1 w0\nquorum g\n", wk, url)
		policy = []byte(d.Policy)
	}
	base, err := w.dir("deployment")
	if err != nil {
		return nil, err
	}
	pl, err := posix.New(ctx, posix.Config{
		Dir: filepath.Join(base, "log"), Origin: Origin, Signer: k.LogSigner,
		WitnessPolicy: policy, WitnessTimeout: 5 * time.Second,
		CheckpointInterval: 100 * time.Millisecond,
	})
	if err != nil {
		return nil, fmt.Errorf("posix.New: %w", err)
	}
	w.onClose(func() { pl.Close(context.Background()) })
	d.Log = adversary.NewLog(pl)
	dir, err := directory.New(ctx, directory.Config{
		Log: d.Log, Origin: Origin, LogVerifierKey: k.LogVKey, VRFKey: k.VRF,
		RecoveryKey: k.Recovery.Public().(ed25519.PublicKey), Credentials: k.Token,
		StateDir: filepath.Join(base, "state"), WitnessPolicy: d.Policy,
		EpochInterval: EpochInterval, HeartbeatInterval: HeartbeatInterval,
		StartupWait: 5 * time.Second, CacheSize: 8 << 20, Logger: quiet,
	})
	if err != nil {
		return nil, fmt.Errorf("directory.New: %w", err)
	}
	d.Directory = dir
	w.onClose(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		dir.Close(cctx)
	})
	pub, err := grpcserver.New(grpcserver.Options{RateLimit: -1, Logger: quiet}, dir, dir)
	if err != nil {
		return nil, err
	}
	ops, err := grpcserver.NewOperator(grpcserver.Options{RateLimit: -1, Logger: quiet}, dir)
	if err != nil {
		return nil, err
	}
	var conn, opConn, frontConn *grpc.ClientConn
	if d.DirAddr, conn, err = w.serve(pub); err != nil {
		return nil, err
	}
	if _, opConn, err = w.serve(ops); err != nil {
		return nil, err
	}
	d.Honest, d.LogRPC, d.Operator = ktpb.NewDirectoryClient(conn), ktpb.NewLogClient(conn), ktpb.NewOperatorClient(opConn)
	d.Proxy = adversary.NewProxy(d.Honest)
	front := grpc.NewServer()
	ktpb.RegisterDirectoryServer(front, d.Proxy)
	if _, frontConn, err = w.serve(front); err != nil {
		return nil, err
	}
	d.Front = ktpb.NewDirectoryClient(frontConn)
	d.LogHandler = logapi.NewHandler(d.Log, logapi.WithLogger(quiet))
	d.LogURL = w.httpServer(d.LogHandler)

	pb, err := d.Honest.GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		return nil, err
	}
	if d.Params, err = client.NewParams(pb, client.Options{MaxAge: o.MaxAge, Skew: o.Skew, InsecureNoWitnesses: o.NoWitness}); err != nil {
		return nil, err
	}
	// Wait for the first epoch.
	err = poll(ctx, func() (bool, error) {
		_, err := d.Honest.GetEpoch(ctx, &ktpb.GetEpochRequest{})
		if status.Code(err) == codes.Unavailable {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return nil, fmt.Errorf("no first epoch: %w", err)
	}
	return d, nil
}

func (w *World) serve(s *grpc.Server) (string, *grpc.ClientConn, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go s.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.Stop()
		return "", nil, err
	}
	w.onClose(func() {
		conn.Close()
		s.Stop()
	})
	return lis.Addr().String(), conn, nil
}

// poll calls f every 10 ms until it reports done or fails, or Wait passes.
func poll(ctx context.Context, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, Wait)
	defer cancel()
	for {
		done, err := f()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not done within %v: %w", Wait, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

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
	if cfg.Log == nil {
		cfg.Log = d.LogRPC
	}
	st := &client.MemStore{}
	c, err := client.New(via, d.Params, st, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := c.Init(ctx, api.HPKESuite{}); err != nil {
		return nil, err
	}
	return &Device{Client: c, Store: st}, nil
}

// Enroll registers handle with c as its first device (with an operator
// token, as the operator's verification service would issue) and waits
// until it is visible.
func (d *Deployment) Enroll(ctx context.Context, c *Device, handle string, accountKey bool) error {
	canon, err := api.NormalizeHandle(handle)
	if err != nil {
		return err
	}
	s, err := c.Enroll(ctx, handle, d.Keys.Token.IssueToken(canon), accountKey)
	if err != nil {
		return fmt.Errorf("enroll %s: %w", handle, err)
	}
	_, err = AwaitVersion(ctx, c, handle, s.Version)
	return err
}

// Link adds nc's device to c's account and makes nc join handle.
func (d *Deployment) Link(ctx context.Context, c, nc *Device, handle string) error {
	st, err := nc.State(ctx)
	if err != nil {
		return err
	}
	dev, err := client.ParseDescriptor(st.Device.Descriptor())
	if err != nil {
		return err
	}
	subs, err := c.AddDevice(ctx, dev)
	if err != nil {
		return fmt.Errorf("AddDevice: %w", err)
	}
	if _, err := AwaitVersion(ctx, c, handle, subs[0].Version); err != nil {
		return err
	}
	if _, err := nc.Join(ctx, handle); err != nil {
		return fmt.Errorf("Join: %w", err)
	}
	return nil
}

// AwaitVersion looks handle up with c until it reaches version v.
func AwaitVersion(ctx context.Context, c *Device, handle string, v uint64) (*client.LookupResult, error) {
	var res *client.LookupResult
	err := poll(ctx, func() (bool, error) {
		r, err := c.Lookup(ctx, handle)
		if err != nil {
			return false, fmt.Errorf("lookup %s: %w", handle, err)
		}
		if r.Version > v {
			return false, fmt.Errorf("lookup %s: version %d, want %d", handle, r.Version, v)
		}
		res = r
		return r.Version == v, nil
	})
	return res, err
}

// Recover is the operator's recovery path (the Operator service's Recover
// RPC, with a change signed by the recovery key): it replaces handle's set
// by edit's result and returns the new version, once visible to c.
func (d *Deployment) Recover(ctx context.Context, c *Device, handle string, edit func(*api.DeviceSet)) (uint64, error) {
	res, err := c.Lookup(ctx, handle)
	if err != nil {
		return 0, err
	}
	set := &api.DeviceSet{AccountID: res.DeviceSet.AccountID, Devices: append([]api.Device(nil), res.DeviceSet.Devices...)}
	edit(set)
	hc, err := client.NewChange(Origin, res, set, api.AuthRecovery, d.Keys.Recovery)
	if err != nil {
		return 0, err
	}
	if _, err := d.Operator.Recover(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}}); err != nil {
		return 0, fmt.Errorf("Recover: %w", err)
	}
	if _, err := AwaitVersion(ctx, c, handle, res.Version+1); err != nil {
		return 0, err
	}
	return res.Version + 1, nil
}

// Ghost returns a fresh device that belongs to the adversary.
func Ghost() (api.Device, error) {
	k, err := client.GenerateDevice(api.SuiteX25519, time.Now())
	if err != nil {
		return api.Device{}, err
	}
	return k.Device(), nil
}

// Auditor is a running auditor (package auditor) following one or more
// logs over their HTTP read API, with its HTTP endpoints (witness, gossip,
// evidence) on loopback.
type Auditor struct {
	*auditor.Auditor
	Name, URL string
	Store     *auditor.Store
}

// AuditorOptions configures StartAuditor.
type AuditorOptions struct {
	// Peers to gossip with.
	Peers []auditor.Peer
	// Gossip is the gossip interval (default: a minute, so that scenarios
	// drive rounds with GossipRound).
	Gossip time.Duration
	// Cosign enables the tlog-witness endpoint.
	Cosign bool
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
	st, err := auditor.OpenStore(filepath.Join(dir, "state"))
	if err != nil {
		return nil, err
	}
	var cos note.Signer
	if o.Cosign {
		skey, _, err := note.GenerateKey(rand.Reader, name)
		if err != nil {
			return nil, err
		}
		if cos, err = fnote.NewSignerForCosignatureV1(skey); err != nil {
			return nil, err
		}
	}
	if o.Gossip == 0 {
		o.Gossip = time.Minute
	}
	var rk [32]byte
	copy(rk[:], k.Recovery.Public().(ed25519.PublicKey))
	a, err := auditor.New(auditor.Config{
		Logs:  []auditor.LogConfig{{Origin: Origin, VKey: k.LogVKey, RecoveryKey: rk, Reader: logapi.NewClient(logURL, nil)}},
		Store: st, Cosigner: cos, Peers: o.Peers,
		PollInterval: 100 * time.Millisecond, GossipInterval: o.Gossip,
		EvidenceDir: filepath.Join(dir, "evidence"), Logger: quiet,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	sw.Set(a.Handler())
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		a.Run(rctx)
		close(done)
	}()
	w.onClose(func() {
		cancel()
		<-done
		st.Close()
	})
	return &Auditor{Auditor: a, Name: name, URL: url, Store: st}, nil
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
