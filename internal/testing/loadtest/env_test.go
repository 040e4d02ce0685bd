package loadtest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/directory/grpcserver"
	"github.com/keytrans/kt/internal/testing/fixture"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/posix"
	"github.com/keytrans/kt/vrf"
)

const origin = "loadtest.example/kt"

// envConfig is what differs between the smoke test and the benchmarks.
type envConfig struct {
	conns         int           // client connections
	epochInterval time.Duration // zero: directory default (1s)
	ckptInterval  time.Duration // zero: posix default (250ms)
	addr          string        // listen address; empty: 127.0.0.1:0
	remote        string        // connect to this server instead of starting one
	dir           string        // keep the state here (reused if present); empty: a temporary directory, removed
}

// server is a directory on the posix log behind the gRPC edge on
// 127.0.0.1 (package internal/testing/fixture, without witnesses), with
// gRPC clients connected to it; or, with envConfig.remote, only the
// clients of a server in another process.
type server struct {
	epochs  epochRecorder
	dep     *fixture.Deployment // nil when remote
	dir     string              // the data directory
	keep    bool                // dir is envConfig.dir, kept on close
	vrf     *vrf.PrivateKey
	token   *directory.TokenCredentials
	d       *directory.Directory
	conns   []*grpc.ClientConn // remote only; the fixture's otherwise
	clients []ktpb.DirectoryClient
	params  *client.Params
	addr    string
}

func startServer(cfg envConfig) (*server, error) {
	if cfg.remote != "" {
		s := &server{addr: cfg.remote}
		if err := s.connect(cfg); err != nil {
			s.close()
			return nil, err
		}
		return s, nil
	}
	if cfg.dir != "" {
		if err := os.MkdirAll(cfg.dir, 0o700); err != nil {
			return nil, err
		}
	}
	s := &server{}
	if err := s.start(cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// benchKeys returns the log signing key and the VRF key: new ones, kept
// in dir/bench-keys when dir is not empty (the directory is kept), so
// that a restart on it finds the same keys.
func benchKeys(dir string) (skey string, vk *vrf.PrivateKey, err error) {
	path := filepath.Join(dir, "bench-keys")
	if b, err := os.ReadFile(path); err == nil && dir != "" {
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 2 {
			return "", nil, fmt.Errorf("%s: want 2 lines", path)
		}
		vk, err := vrf.ParsePrivateKey(lines[1])
		return lines[0], vk, err
	}
	if skey, _, err = note.GenerateKey(rand.Reader, origin); err != nil {
		return "", nil, err
	}
	if vk, err = vrf.GenerateKey(nil); err != nil {
		return "", nil, err
	}
	if dir != "" {
		vt, err := vk.MarshalText()
		if err != nil {
			return "", nil, err
		}
		if err := os.WriteFile(path, []byte(skey+"\n"+string(vt)+"\n"), 0o600); err != nil {
			return "", nil, err
		}
	}
	return skey, vk, nil
}

func (s *server) start(cfg envConfig) error {
	skey, vk, err := benchKeys(cfg.dir)
	if err != nil {
		return err
	}
	k := &fixture.Keys{LogSKey: skey, VRF: vk}
	if k.LogSigner, err = note.NewSigner(skey); err != nil {
		return err
	}
	if k.LogVKey, err = log.VerifierKey(skey); err != nil {
		return err
	}
	if _, k.Recovery, err = ed25519.GenerateKey(nil); err != nil {
		return err
	}
	// A fixed token key: a load generator in another process issues
	// tokens this server accepts.
	if k.Token, err = directory.NewTokenCredentials(bytes.Repeat([]byte{7}, 32)); err != nil {
		return err
	}
	// The library's defaults where the configuration leaves them zero.
	epoch := cmp.Or(cfg.epochInterval, directory.DefaultEpochInterval)
	// KT_BENCH_AUDITORS=n (n > 0): audit mode (design.md 14.3), the brief's
	// shape: two witnesses (2 of 2) and n auditors in the process, all of
	// whose statements an epoch needs before it is served.
	auditors := envInt("KT_BENCH_AUDITORS", 0)
	s.dep, err = fixture.Start(context.Background(), fixture.Options{
		Origin: origin, Keys: k, DataDir: cfg.dir, NoWitness: auditors == 0,
		Witnesses: 2, Quorum: 2, Audit: auditors > 0, Auditors: auditors,
		EpochInterval:      epoch,
		HeartbeatInterval:  max(epoch, directory.DefaultHeartbeatInterval),
		CheckpointInterval: cmp.Or(cfg.ckptInterval, posix.DefaultCheckpointInterval),
		StartupWait:        directory.DefaultStartupWait,
		CacheSize:          int64(benchCacheMB) << 20,
		Metrics:            &s.epochs,
		GRPC:               &grpcserver.Options{RateLimit: -1, MaxConcurrentStreams: 1 << 12},
		Addr:               cfg.addr,
		Conns:              cfg.conns,
		Graceful:           true,
		Client:             client.Options{MaxAge: time.Hour},
	})
	if err != nil {
		return err
	}
	s.dir, s.keep = s.dep.DataDir, cfg.dir != ""
	s.vrf, s.token, s.d, s.params, s.addr = vk, k.Token, s.dep.Directory, s.dep.Params, s.dep.Addr
	for _, cc := range s.dep.Conns {
		s.clients = append(s.clients, ktpb.NewDirectoryClient(cc))
	}
	return nil
}

// connect opens cfg.conns client connections to a remote s.addr and
// fetches the parameters.
func (s *server) connect(cfg envConfig) error {
	ctx := context.Background()
	for range cfg.conns {
		cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		s.conns = append(s.conns, cc)
		s.clients = append(s.clients, ktpb.NewDirectoryClient(cc))
	}
	pb, err := s.clients[0].GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		return fmt.Errorf("GetParameters: %w", err)
	}
	s.params, err = client.NewParams(pb, client.Options{InsecureNoWitnesses: true, MaxAge: time.Hour})
	return err
}

func (s *server) client(i int) ktpb.DirectoryClient { return s.clients[i%len(s.clients)] }

// close stops everything and removes the temporary directory.
func (s *server) close() error {
	var errs []error
	for _, cc := range s.conns {
		errs = append(errs, cc.Close())
	}
	if s.dep != nil {
		if err := s.dep.Close(); err != nil && !errors.Is(err, directory.ErrUnavailable) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// epochRecorder is the directory's Metrics in the benchmarks: it adds up
// the time the sequencer spends closing epochs (map update, epoch record,
// the wait for its checkpoint), during which no change is appended.
type epochRecorder struct {
	mu      sync.Mutex
	n       int
	closed  time.Duration
	changes int             // accepted
	waits   []time.Duration // audit mode: publication to serving, per epoch served
}

// AuditStatement implements directory.AuditMetrics.
func (*epochRecorder) AuditStatement(string, string) {}

// EpochServed implements directory.AuditMetrics.
func (e *epochRecorder) EpochServed(_ uint64, wait time.Duration) {
	e.mu.Lock()
	e.waits = append(e.waits, wait)
	e.mu.Unlock()
}

// auditWaits returns and forgets the audit waits recorded since the last
// call, sorted.
func (e *epochRecorder) auditWaits() []time.Duration {
	e.mu.Lock()
	w := e.waits
	e.waits = nil
	e.mu.Unlock()
	slices.Sort(w)
	return w
}

func (e *epochRecorder) ChangesAccepted(n int) {
	e.mu.Lock()
	e.changes += n
	e.mu.Unlock()
}
func (*epochRecorder) ChangeRejected(error) {}
func (*epochRecorder) Lookups(int)          {}
func (e *epochRecorder) EpochClosed(_ uint64, _ int, took time.Duration) {
	e.mu.Lock()
	e.n++
	e.closed += took
	e.mu.Unlock()
}

// accepted returns the number of changes appended so far.
func (e *epochRecorder) accepted() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changes
}

// total returns the epochs closed so far and the time spent closing them.
func (e *epochRecorder) total() (int, time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n, e.closed
}

// device is one client device.
type device = testkit.Device

// poolSize is the number of devices the bulk-loaded handles share.
const poolSize = 256

// poolDevice returns device i of the bulk-load pool. Its keys are derived
// from i, so that a load generator in another process can sign changes of
// the handles a BenchmarkServe process bulk-loaded.
func poolDevice(i int) *device {
	seed := func(label string) []byte {
		h := sha256.Sum256(fmt.Appendf(nil, "kt loadtest pool device %d %s", i, label))
		return h[:]
	}
	d := &device{ID: [16]byte(seed("id")), Sign: ed25519.NewKeyFromSeed(seed("sign"))}
	k, err := ecdh.X25519().NewPrivateKey(seed("hpke"))
	if err != nil {
		panic(err) // every 32-byte string is an X25519 key
	}
	d.HPKE = k.PublicKey().Bytes()
	return d
}

// handle is what the client side tracks about one handle. Its state is
// advanced when a change is built: the benchmarks expect every change they
// build to be accepted, and fail otherwise.
type handle struct {
	name    string
	index   [32]byte
	account [16]byte
	version uint64   // of the last change built
	leaf    [32]byte // leaf hash of the last change built
	main    *device  // in every device set; signs every change
	spare   *device  // added at even versions, removed at odd ones
}

func newHandle(k *vrf.PrivateKey, name string) (*handle, error) {
	n, err := api.NormalizeHandle(name)
	if err != nil {
		return nil, err
	}
	h := &handle{name: n}
	h.index, _ = k.Prove(api.VRFInput(n))
	rand.Read(h.account[:])
	h.main, h.spare = testkit.NewDevice(), testkit.NewDevice()
	return h, nil
}

// next builds the handle's next change, signed by its main device: the
// enrollment at version 1, then alternately adding and removing the spare
// device.
func (h *handle) next() (*ktpb.HandleChange, error) {
	version := h.version + 1
	kind := api.AuthDevice
	if version == 1 {
		kind = api.AuthEnroll
	}
	set := &api.DeviceSet{AccountID: h.account, Devices: []api.Device{h.main.API()}}
	if version%2 == 0 {
		set.Devices = append(set.Devices, h.spare.API())
		slices.SortFunc(set.Devices, func(a, b api.Device) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	}
	latest := &client.LookupResult{Handle: h.name, Index: h.index, Version: h.version, LeafHash: h.leaf}
	hc, err := client.NewChange(origin, latest, set, kind, h.main.Sign)
	if err != nil {
		return nil, err
	}
	h.version, h.leaf = version, api.LeafHash(hc.ChangeRecord)
	return hc, nil
}

// parallel calls f(i) for i in [0, n) from c goroutines and returns the
// first error.
func parallel(n, c int, f func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range c {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n)) // stop the others
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// enrollAll creates n handles and enrolls them through gRPC with c
// concurrent callers. Building the requests (VRF index, keys, signature)
// is not timed; the returned duration covers the Enroll calls only.
func (s *server) enrollAll(prefix string, n, c int) ([]*handle, time.Duration, error) {
	hs := make([]*handle, n)
	reqs := make([]*ktpb.EnrollRequest, n)
	err := parallel(n, runtime.GOMAXPROCS(0), func(i int) error {
		h, err := newHandle(s.vrf, fmt.Sprintf("%s%d@loadtest.example", prefix, i))
		if err != nil {
			return err
		}
		hc, err := h.next()
		if err != nil {
			return err
		}
		hs[i], reqs[i] = h, &ktpb.EnrollRequest{Change: hc, Credential: s.token.IssueToken(h.name)}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	err = parallel(n, c, func(i int) error {
		if _, err := s.client(i).Enroll(context.Background(), reqs[i]); err != nil {
			return fmt.Errorf("Enroll %s: %w", hs[i].name, err)
		}
		return nil
	})
	return hs, time.Since(start), err
}

// remoteHandles prepares the first n bulk-loaded handles of a directory
// served by another process (BenchmarkServe) for updates, with c
// concurrent callers: it looks each handle up, verifies the answer, and
// takes the version, leaf hash and account ID from it. The handle's
// signing device is its pool device (poolDevice), whose key this process
// derives as the server did. The handles must not change meanwhile, and
// their latest changes must be in the served epoch.
func (s *server) remoteHandles(off, n, c int) ([]*handle, error) {
	hs := make([]*handle, n)
	err := parallel(n, c, func(k int) error {
		i := off + k
		name := bulkName(i)
		lr, err := s.client(i).Lookup(context.Background(), &ktpb.LookupRequest{Handle: name})
		if err != nil {
			return fmt.Errorf("Lookup %s: %w", name, err)
		}
		res, err := client.VerifyLookup(s.params, nil, name, lr, time.Now(), nil)
		if err != nil {
			return fmt.Errorf("VerifyLookup %s: %w", name, err)
		}
		main := poolDevice(i % poolSize)
		pub := [32]byte(main.Sign.Public().(ed25519.PublicKey))
		if !res.Registered || !slices.ContainsFunc(res.DeviceSet.Devices, func(d api.Device) bool { return d.SigningKey == pub }) {
			return fmt.Errorf("%s is not registered with its pool device: was the server bulk-loaded by this version of the benchmark?", name)
		}
		h := &handle{name: res.Handle, index: res.Index, account: res.DeviceSet.AccountID, version: res.Version, leaf: res.LeafHash, main: main}
		h.spare = testkit.NewDevice()
		hs[k] = h
		return nil
	})
	return hs, err
}

// bulkName is the name of the i-th bulk-loaded handle.
func bulkName(i int) string { return fmt.Sprintf("b%d@loadtest.example", i) }

// bulkLoad enrolls n handles named bulkName(i) through the directory's
// bulk-load path (real VRF outputs, commitments, signatures and epochs; no
// API calls). The handles share a pool of poolSize devices (poolDevice), so the load does
// not generate 10M key pairs; each record is still signed by its device.
func (s *server) bulkLoad(n int, logf func(string, ...any)) (time.Duration, error) {
	pool := make([]*device, poolSize)
	for i := range pool {
		pool[i] = poolDevice(i)
	}
	start := time.Now()
	lastLog := start
	err := s.d.BulkEnroll(context.Background(), n, func(i int) directory.BulkHandle {
		d := pool[i%len(pool)]
		var account [16]byte
		binary.BigEndian.PutUint64(account[8:], uint64(i))
		return directory.BulkHandle{
			Handle: bulkName(i),
			Set:    &api.DeviceSet{AccountID: account, Devices: []api.Device{d.API()}},
			Signer: d.Sign,
		}
	}, func(done int) {
		if time.Since(lastLog) > 30*time.Second || done == n {
			lastLog = time.Now()
			logf("bulk load: %d of %d handles in %v (%.0f/s), RSS %.0f MiB", done, n, time.Since(start).Round(time.Second), float64(done)/time.Since(start).Seconds(), rssMiB())
		}
	})
	return time.Since(start), err
}

// checkpointSize returns the tree size line of a checkpoint note.
func checkpointSize(ckpt []byte) (uint64, error) {
	lines := strings.SplitN(string(ckpt), "\n", 3)
	if len(lines) < 3 {
		return 0, errors.New("checkpoint: too few lines")
	}
	return strconv.ParseUint(lines[1], 10, 64)
}

// watcher polls GetEpoch and tells waiters when the served epoch grows.
type watcher struct {
	mu      sync.Mutex
	size    uint64        // guarded by mu
	changed chan struct{} // guarded by mu; closed and replaced when size grows
	err     error         // guarded by mu
	stop    chan struct{}
	done    chan struct{}
}

func (s *server) watch(every time.Duration) *watcher {
	w := &watcher{changed: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			ep, err := s.client(0).GetEpoch(context.Background(), &ktpb.GetEpochRequest{})
			var n uint64
			if err == nil {
				n, err = checkpointSize(ep.GetCheckpoint())
			}
			w.mu.Lock()
			if err != nil {
				w.err = err
				close(w.changed)
				w.mu.Unlock()
				return
			}
			if n > w.size {
				w.size = n
				close(w.changed)
				w.changed = make(chan struct{})
			}
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// waitBeyond blocks until the served epoch's checkpoint size is above
// than min (so it covers log index min).
func (w *watcher) waitBeyond(ctx context.Context, min uint64) error {
	for {
		w.mu.Lock()
		size, ch, err := w.size, w.changed, w.err
		w.mu.Unlock()
		switch {
		case err != nil:
			return err
		case size > min:
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (w *watcher) close() {
	close(w.stop)
	<-w.done
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(float64(len(ds))*p/100+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// rssMiB returns VmRSS from /proc/self/status, in MiB (0 if unavailable).
func rssMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				kb, _ := strconv.ParseFloat(f[0], 64)
				return kb / 1024
			}
		}
	}
	return 0
}
