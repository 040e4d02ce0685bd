package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tpb "github.com/google/trillian"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/auditor/replay"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/fixture"
	"github.com/keytrans/kt/internal/testing/trilliantest"
	"github.com/keytrans/kt/log/logapi"
	"github.com/keytrans/kt/log/trillian"
)

// TestReplicatedFailover is the failover test of the replicated directory
// (issue 7, design.md 17.1): MariaDB, etcd, two Trillian log servers, two
// signers, and two ktd binaries in the replicated mode on one tree,
// sharing the lease and payload tables. Clients built on the client
// library enroll handles and change them (adding and removing devices)
// against both instances, moving to the other on Unavailable, and
// lookups against each instance are verified throughout by the client
// library. Under load the master signer is killed (SIGKILL), then the
// writing ktd. The other ktd must take over; afterwards every
// acknowledged change is in the log exactly once, at the index it was
// acknowledged with, no log entry repeats, the surviving instance serves
// every handle at the latest version the log holds (at least the
// acknowledged one), lookups verified after the failover and never
// failed to verify, and a fresh replay of the whole log
// (the auditor's replay engine) gives the last epoch's map root.
func TestReplicatedFailover(t *testing.T) {
	c := trilliantest.StartCluster(t, trilliantest.ClusterOptions{
		Options: trilliantest.Options{SequencerInterval: 50 * time.Millisecond},
		Servers: 2,
		Signers: 1,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	// One tree for both instances, created once.
	conn, err := trillian.Dial(c.ServerAddrs())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	treeID, err := trillian.CreateTree(ctx, tpb.NewTrillianAdminClient(conn), tpb.NewTrillianLogClient(conn), "kt-replicated")
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "ktd")
	if out, err := exec.Command("go", "build", "-o", bin, "../../../cmd/ktd").CombinedOutput(); err != nil {
		t.Fatalf("building ktd: %v\n%s", err, out)
	}
	keys := filepath.Join(dir, "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	const ktdOrigin = "example.com/kt-replicated"
	common := []string{
		"--grpc-listen=127.0.0.1:0",
		"--http-listen=127.0.0.1:0",
		"--operator-listen=",
		"--metrics-listen=",
		"--log-origin=" + ktdOrigin,
		"--log-backend=trillian",
		"--log-trillian-address=" + strings.Join(c.ServerAddrs(), ","),
		fmt.Sprintf("--log-trillian-tree-id=%d", treeID),
		"--log-checkpoint-interval=100ms",
		"--log-key-file=" + filepath.Join(keys, "log.key"),
		"--directory-vrf-key-file=" + filepath.Join(keys, "vrf.key"),
		"--directory-recovery-key-file=" + filepath.Join(keys, "recovery.key"),
		"--directory-epoch-interval=200ms",
		"--directory-heartbeat-interval=500ms",
		"--directory-cache-size=8388608",
		"--enrollment-mode=open",
		"--limits-requests-per-second=-1",
		"--cluster-dsn=" + c.DSN,
		"--cluster-lease-duration=3s",
		"--cluster-margin=1s",
		"--cluster-poll-interval=100ms",
	}
	// ktd-1 first: it creates the keys and becomes the writer.
	k1 := startReplicaKtd(t, bin, "ktd-1", filepath.Join(dir, "data-1"), common)
	k1.awaitRole(t, "writer", time.Minute)
	k2 := startReplicaKtd(t, bin, "ktd-2", filepath.Join(dir, "data-2"), common)
	k2.awaitRole(t, "reader", time.Minute)
	ktds := []*replicaKtd{k1, k2}

	if m, err := c.Master(ctx, treeID); err != nil || m != c.Signers[0] {
		t.Fatalf("master of the tree: %v, %v; want signer-1", m, err)
	}
	standby := c.StartSigner()

	conns := make([]*grpc.ClientConn, len(ktds))
	for i, k := range ktds {
		if conns[i], err = grpc.NewClient(k.grpc, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
	}
	pb, err := ktpb.NewDirectoryClient(conns[0]).GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	params, err := client.NewParams(pb, client.Options{InsecureNoWitnesses: true, MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// A reader refuses changes with Unavailable, naming the writer.
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		_, err := ktpb.NewDirectoryClient(conns[1]).Change(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{{}}})
		if status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "writer, ktd-1") {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("Change at the reader: %v, want Unavailable naming ktd-1", err)
		}
	}

	ld := &load{t: t, params: params, failover: &failoverConn{conns: conns}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	const workers = 6
	for w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); ld.worker(ctx, stop, fmt.Sprintf("user%d@example.com", w)) }()
	}
	lookers := make([]*looker, len(ktds))
	for i := range ktds {
		lookers[i] = &looker{name: ktds[i].name}
		cl, err := client.New(ktpb.NewDirectoryClient(conns[i]), params, &client.MemStore{}, client.Config{})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); lookers[i].run(ctx, stop, cl, workers) }()
	}

	waitFor := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > d || ld.failed() != nil {
				t.Fatalf("waiting for %s (%v): load %s; lookups %s, %s", what, time.Since(start).Round(time.Millisecond), ld.summary(), lookers[0].summary(), lookers[1].summary())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("load before the kills", 2*time.Minute, func() bool {
		return ld.nacked() >= 30 && lookers[0].verified.Load() >= 10 && lookers[1].verified.Load() >= 10
	})

	// Kill the master signer: the standby takes over within etcd's TTL.
	atSignerKill := ld.nacked()
	c.Signers[0].Kill()
	signerKilled := time.Now()
	t.Logf("killed the master signer with %d changes acknowledged", atSignerKill)
	waitFor("the standby signer to take over and changes to continue", 2*time.Minute, func() bool {
		m, err := c.Master(ctx, treeID)
		return err == nil && m == standby && ld.nacked() >= atSignerKill+10
	})
	t.Logf("%s is master and %d changes are acknowledged %v after the kill", standby.Name, ld.nacked(), time.Since(signerKilled).Round(time.Millisecond))

	// Kill the writing ktd.
	writer, survivor := k1, k2
	if k2.role() == "writer" {
		writer, survivor = k2, k1
	}
	si := slices.Index(ktds, survivor)
	atKill, lookupsAtKill := ld.nacked(), lookers[si].verified.Load()
	writer.kill()
	killed := time.Now()
	t.Logf("killed the writer %s with %d changes acknowledged", writer.name, atKill)
	waitFor("the survivor to take over", time.Minute, func() bool { return survivor.role() == "writer" })
	t.Logf("%s took over as the writer %v after the kill", survivor.name, time.Since(killed).Round(time.Millisecond))
	waitFor("changes after the takeover", time.Minute, func() bool {
		return ld.nacked() >= atKill+20 && lookers[si].verified.Load() >= lookupsAtKill+10
	})
	close(stop)
	wg.Wait()
	if err := ld.failed(); err != nil {
		t.Fatalf("load: %v", err)
	}
	for _, lk := range lookers {
		if err := lk.failed(); err != nil {
			t.Fatalf("lookups at %s: %v", lk.name, err)
		}
	}
	t.Logf("load: %s; lookups: %s; %s", ld.summary(), lookers[0].summary(), lookers[1].summary())

	// The log as the survivor serves it, once it ends with an epoch
	// record covering every acknowledged change.
	reader := logapi.NewClient(survivor.http, nil)
	var lastAcked uint64
	for _, s := range ld.ackedChanges() {
		lastAcked = max(lastAcked, s.LogIndex)
	}
	var entries [][]byte
	waitFor("an epoch record after every acknowledged change", time.Minute, func() bool {
		kcp, err := reader.Checkpoint(ctx)
		if err != nil {
			return false
		}
		cp, _ := parseCheckpointSize(kcp)
		if cp <= lastAcked {
			return false
		}
		_, entries = readAll(t, ctx, reader, cp)
		e, err := api.ParseEntry(entries[len(entries)-1])
		_, isEpoch := e.(*api.EpochRecord)
		return err == nil && isEpoch
	})
	seen := map[[32]byte]int{}
	latest := map[[32]byte]uint64{} // VRF index → latest version in the log
	var lastEpoch *api.EpochRecord
	for i, e := range entries {
		h := api.LeafHash(e)
		if j, dup := seen[h]; dup {
			t.Errorf("log entry %d repeats entry %d", i, j)
		}
		seen[h] = i
		ent, err := api.ParseEntry(e)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		switch r := ent.(type) {
		case *api.ChangeRecord:
			latest[r.Index] = max(latest[r.Index], r.Version)
		case *api.EpochRecord:
			lastEpoch = r
		}
	}
	acked := ld.ackedChanges()
	maxAcked := map[string]uint64{}
	for _, s := range acked {
		if s.LogIndex >= uint64(len(entries)) || !bytes.Equal(entries[s.LogIndex], s.Record) {
			t.Errorf("acknowledged change of %s v%d at index %d is not in the log there", s.Handle, s.Version, s.LogIndex)
		}
		maxAcked[s.Handle] = max(maxAcked[s.Handle], s.Version)
	}
	// The survivor serves every handle at the log's latest version.
	sc, err := client.New(ktpb.NewDirectoryClient(conns[si]), params, &client.MemStore{}, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// The log's last epoch record may be a moment ahead of the epoch an
	// instance serves (it serves an epoch once it has seen the checkpoint
	// that covers it): servesLatest looks again until cl serves h at the
	// log's latest version, within a bound, and returns what it served.
	servesLatest := func(cl *client.Client, where, h string) *client.LookupResult {
		t.Helper()
		var res *client.LookupResult
		waitFor(h+" at "+where, time.Minute, func() bool {
			var err error
			res, err = cl.Lookup(ctx, h)
			if verifyFailure(err) {
				t.Fatalf("lookup of %s at %s: %v", h, where, err)
			}
			return err == nil && res.Version >= latest[res.Index]
		})
		return res
	}
	for h, v := range maxAcked {
		res := servesLatest(sc, survivor.name, h)
		if res.Version < v || res.Version != latest[res.Index] {
			t.Errorf("%s: %s serves version %d; acknowledged %d, the log's latest %d", h, survivor.name, res.Version, v, latest[res.Index])
		}
	}
	root, err := fixture.ReplayMap(ctx, replay.Config{Origin: params.Origin, Verifier: params.LogVerifier, RecoveryKey: params.RecoveryKey}, reader)
	if err != nil {
		t.Fatalf("replaying the whole log: %v", err)
	}
	if root != lastEpoch.MapRoot {
		t.Fatalf("replayed map root %x, the last epoch (%d) says %x", root, lastEpoch.Epoch, lastEpoch.MapRoot)
	}
	if got := lookers[si].verified.Load(); got <= lookupsAtKill {
		t.Errorf("no lookup verified at %s after the writer was killed", survivor.name)
	}
	if !survivor.alive() {
		t.Fatalf("%s exited", survivor.name)
	}

	// The killed writer, restarted on its data directory as a supervisor
	// would, follows the log as a reader and serves the latest versions.
	restarted := startReplicaKtd(t, bin, writer.name+"-restarted", writer.dataDir, common)
	restarted.awaitRole(t, "reader", time.Minute)
	rconn, err := grpc.NewClient(restarted.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer rconn.Close()
	rcl, err := client.New(ktpb.NewDirectoryClient(rconn), params, &client.MemStore{}, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for h := range maxAcked {
		res := servesLatest(rcl, "the restarted "+writer.name, h)
		if res.Version != latest[res.Index] {
			t.Errorf("%s: the restarted %s serves version %d, the log's latest %d", h, writer.name, res.Version, latest[res.Index])
		}
	}
	t.Logf("the killed writer, restarted, follows as a reader and serves every handle at the log's latest version")
	t.Logf("%d changes acknowledged (%d handles), all in the log once; log of %d entries ends with epoch %d; replay matches its root",
		len(acked), len(maxAcked), len(entries), lastEpoch.Epoch)
}

// parseCheckpointSize reads a checkpoint note's size (unverified: the
// clients verify).
func parseCheckpointSize(raw []byte) (uint64, error) {
	lines := strings.SplitN(string(raw), "\n", 3)
	if len(lines) < 3 {
		return 0, errors.New("short checkpoint")
	}
	var n uint64
	_, err := fmt.Sscanf(lines[1], "%d", &n)
	return n, err
}

// failoverConn is a gRPC connection over several ktd instances: a call
// that fails with Unavailable is tried on the next instance.
type failoverConn struct {
	conns    []*grpc.ClientConn
	cur      atomic.Int32
	switches atomic.Int64
}

func (f *failoverConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	var err error
	for attempt := range 2 * len(f.conns) {
		i := int(f.cur.Load())
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err = f.conns[i].Invoke(cctx, method, args, reply, opts...)
		cancel()
		if status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
			return err
		}
		if f.cur.CompareAndSwap(int32(i), int32((i+1)%len(f.conns))) {
			f.switches.Add(1)
		}
		if attempt%len(f.conns) == len(f.conns)-1 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	return err
}

func (f *failoverConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return f.conns[f.cur.Load()].NewStream(ctx, desc, method, opts...)
}

// load runs clients that enroll and change handles.
type load struct {
	t        *testing.T
	params   *client.Params
	failover *failoverConn

	mu       sync.Mutex
	acked    []*client.Submitted
	retries  int
	err      error
	visible  time.Duration // total update-to-visible time of acked changes
	nvisible int
}

func (l *load) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = err
	}
}

func (l *load) failed() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *load) nacked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func (l *load) ackedChanges() []*client.Submitted {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.acked)
}

func (l *load) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	avg := time.Duration(0)
	if l.nvisible > 0 {
		avg = l.visible / time.Duration(l.nvisible)
	}
	return fmt.Sprintf("%d changes acknowledged, %d retries, %d instance switches, mean update-to-visible %v, error %v",
		len(l.acked), l.retries, l.failover.switches.Load(), avg.Round(time.Millisecond), l.err)
}

// verifyFailure reports whether err is a verification failure (as opposed
// to an outage or a rejected change).
func verifyFailure(err error) bool {
	var ve *client.VerifyError
	return errors.As(err, &ve)
}

// worker enrolls handle, then alternately adds and removes a second
// device, waiting after each acknowledged change until a verified lookup
// shows it.
func (l *load) worker(ctx context.Context, stop <-chan struct{}, handle string) {
	cl, err := client.New(ktpb.NewDirectoryClient(l.failover), l.params, &client.MemStore{}, client.Config{})
	if err != nil {
		l.fail(err)
		return
	}
	if _, err := cl.Init(ctx, api.SuiteX25519); err != nil {
		l.fail(err)
		return
	}
	enrolled := false
	retry := func(err error) {
		if verifyFailure(err) {
			l.fail(fmt.Errorf("%s: %w", handle, err))
		}
		l.mu.Lock()
		l.retries++
		l.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		var subs []*client.Submitted
		if !enrolled {
			s, err := cl.Enroll(ctx, handle, "", false)
			if errors.Is(err, client.ErrAlreadyRegistered) {
				enrolled = true // an unacknowledged enrollment was logged
				continue
			}
			if err != nil {
				retry(err)
				continue
			}
			enrolled, subs = true, []*client.Submitted{s}
		} else {
			res, err := cl.Lookup(ctx, handle)
			if err != nil {
				retry(err)
				continue
			}
			if len(res.DeviceSet.Devices) > 1 {
				st, _ := cl.State(ctx)
				self := st.Device.SigningPublic()
				i := slices.IndexFunc(res.DeviceSet.Devices, func(d api.Device) bool { return d.SigningKey != self })
				subs, err = cl.RemoveDevice(ctx, res.DeviceSet.Devices[i].ID)
			} else {
				subs, err = cl.AddDevice(ctx, newDevice(l.t))
			}
			if err != nil {
				retry(err)
				continue
			}
		}
		acked := time.Now()
		l.mu.Lock()
		l.acked = append(l.acked, subs...)
		l.mu.Unlock()
		// Wait until the change is visible, verified.
		for {
			res, err := cl.Lookup(ctx, handle)
			if err == nil && res.Version >= subs[0].Version {
				l.mu.Lock()
				l.visible += time.Since(acked)
				l.nvisible++
				l.mu.Unlock()
				break
			}
			if err != nil && verifyFailure(err) {
				l.fail(fmt.Errorf("%s: %w", handle, err))
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// newDevice is a fresh device for AddDevice.
func newDevice(t *testing.T) api.Device {
	_, sk, _ := ed25519.GenerateKey(nil)
	hk, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Error(err)
	}
	d := api.Device{Suite: api.SuiteX25519, HPKEKey: hk.PublicKey().Bytes(),
		SigningKey: [32]byte(sk.Public().(ed25519.PublicKey)), Created: uint64(time.Now().Unix())}
	rand.Read(d.ID[:])
	return d
}

// looker looks the workers' handles up at one instance, verifying with
// the client library.
type looker struct {
	name     string
	verified atomic.Int64
	outages  atomic.Int64
	mu       sync.Mutex
	err      error
}

func (lk *looker) run(ctx context.Context, stop <-chan struct{}, cl *client.Client, handles int) {
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
		_, err := cl.Lookup(ctx, fmt.Sprintf("user%d@example.com", mrand.IntN(handles)))
		switch {
		case err == nil:
			lk.verified.Add(1)
		case verifyFailure(err):
			lk.mu.Lock()
			if lk.err == nil {
				lk.err = err
			}
			lk.mu.Unlock()
		default:
			lk.outages.Add(1)
		}
	}
}

func (lk *looker) failed() error {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	return lk.err
}

func (lk *looker) summary() string {
	return fmt.Sprintf("%s: %d verified, %d outages, error %v", lk.name, lk.verified.Load(), lk.outages.Load(), lk.failed())
}

// replicaKtd is a running ktd in the replicated mode.
type replicaKtd struct {
	name       string
	dataDir    string
	grpc, http string
	// startup holds ktd's output up to and including its "ktd serving"
	// line, for callers that read more from it (a created tree's ID).
	startup []string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// startReplicaKtd starts ktd with its own data directory and waits until
// it serves.
func startReplicaKtd(t testing.TB, bin, name, dataDir string, common []string) *replicaKtd {
	t.Helper()
	return startKtdBinary(t, bin, name, dataDir, append([]string{"--cluster-advertise=" + name}, common...))
}

// startKtdBinary starts ktd with args and its own data directory, and
// waits until it serves.
func startKtdBinary(t testing.TB, bin, name, dataDir string, args []string) *replicaKtd {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--data-dir=" + dataDir}, args...)...)
	logPath := filepath.Join(filepath.Dir(dataDir), name+".log")
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	k := &replicaKtd{name: name, dataDir: dataDir, cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(k.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-k.exited
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("%s output (tail):\n%s", name, b)
		}
	})
	ready := make(chan error, 1)
	go func() {
		s := bufio.NewScanner(pr)
		s.Buffer(nil, 1<<20)
		servingRE := regexp.MustCompile(`msg="ktd serving" grpc=(\S+) .* http=(\S+) `)
		sent := false
		for s.Scan() {
			line := s.Text()
			fmt.Fprintln(out, line)
			if !sent {
				k.startup = append(k.startup, line)
			}
			if m := servingRE.FindStringSubmatch(line); m != nil && !sent {
				k.grpc, k.http = m[1], m[2]
				ready <- nil
				sent = true
			}
		}
		out.Close()
		if !sent {
			ready <- fmt.Errorf("%s exited before serving", name)
		}
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not start serving within 60s", name)
	}
	return k
}

// role is the instance's role from /healthz ("" when it does not answer
// 200).
func (k *replicaKtd) role() string {
	resp, err := http.Get(k.http + "/healthz")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	role, _ := strings.CutPrefix(strings.TrimSpace(string(b)), "ok ")
	return role
}

func (k *replicaKtd) awaitRole(t testing.TB, role string, d time.Duration) {
	t.Helper()
	for start := time.Now(); k.role() != role; {
		if time.Since(start) > d || !k.alive() {
			t.Fatalf("%s: role %q after %v, want %q", k.name, k.role(), d, role)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (k *replicaKtd) kill() {
	_ = k.cmd.Process.Kill()
	<-k.exited
}

func (k *replicaKtd) alive() bool {
	select {
	case <-k.exited:
		return false
	default:
		return true
	}
}
