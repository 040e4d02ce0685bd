package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/trilliantest"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/logapi"
	"github.com/keytrans/kt/log/trillian"
)

const origin = "example.com/kt-cluster-test"

// TestSignerFailover is the scale-out failover test (issue 7); see the
// package documentation.
//
// Timeline: signer-1 alone becomes master of both trees (the library's
// and ktd's), signer-2 joins as standby; writers append through both log
// servers while a client verifies over HTTP; signer-1 is killed, signer-2
// must take over (within etcd's 60-second session TTL) and the log must
// grow again; then server-1 is killed and appends must continue through
// server-2; then a replacement signer joins and must stay standby; then
// the writers stop and everything is checked.
func TestSignerFailover(t *testing.T) {
	c := trilliantest.StartCluster(t, trilliantest.ClusterOptions{
		Options: trilliantest.Options{SequencerInterval: 50 * time.Millisecond},
		Servers: 2,
		Signers: 1, // the second joins once the first is master
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// The backend, through both log servers.
	conn, err := trillian.Dial(c.ServerAddrs())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	l, err := trillian.New(ctx, trillian.Config{
		Conn:               conn,
		CreateTree:         true,
		Origin:             origin,
		Signer:             signer,
		CheckpointInterval: 50 * time.Millisecond,
		MaxPollInterval:    20 * time.Millisecond,
		Logger:             slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background())
	treeID := l.TreeID()
	// Clients read it as they would in production: over the HTTP read API.
	srv := httptest.NewServer(logapi.NewHandler(l))
	defer srv.Close()

	// ktd, unmodified, on the Trillian backend, through server-2 (ktd
	// takes one address; server-1 is the one killed later).
	kd := startKtd(t, c.Servers[1].RPC)

	for name, id := range map[string]int64{"library": treeID, "ktd": kd.treeID} {
		m, err := c.Master(ctx, id)
		if err != nil {
			t.Fatalf("%s tree: %v", name, err)
		}
		if m != c.Signers[0] {
			t.Fatalf("%s tree: master is %s, want signer-1", name, m.Name)
		}
	}
	standby := c.StartSigner()

	// Load: writers append two entries per call.
	var (
		mu      sync.Mutex
		acked   = map[uint64][]byte{}
		ackErrs []error
	)
	nacked := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	stop := make(chan struct{})
	var writers sync.WaitGroup
	for w := range 6 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				es := [][]byte{fmt.Appendf(nil, "writer %d call %d a", w, i), fmt.Appendf(nil, "writer %d call %d b", w, i)}
				actx, acancel := context.WithTimeout(ctx, 2*time.Minute)
				idx, err := l.Append(actx, es)
				acancel()
				mu.Lock()
				if err != nil {
					ackErrs = append(ackErrs, err)
				}
				for j, i := range idx {
					if prev, ok := acked[i]; ok && !bytes.Equal(prev, es[j]) {
						t.Errorf("index %d acknowledged for %q and for %q", i, prev, es[j])
					}
					acked[i] = es[j]
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}

	// Clients: one verifies the library's log over HTTP, one ktd's.
	libClient := newVerifyingClient(logapi.NewClient(srv.URL, srv.Client()), origin, verifier)
	ktdClient := newVerifyingClient(logapi.NewClient(kd.http, nil), kd.origin, kd.verifier)
	clientsDone := make(chan struct{})
	var clients sync.WaitGroup
	for _, vc := range []*verifyingClient{libClient, ktdClient} {
		clients.Add(1)
		go func() { defer clients.Done(); vc.run(ctx, clientsDone) }()
	}

	waitFor := func(what string, d time.Duration, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > d {
				t.Fatalf("timed out after %v waiting for %s (acknowledged %d; library client %s; ktd client %s)",
					d, what, nacked(), libClient.summary(), ktdClient.summary())
			}
			time.Sleep(20 * time.Millisecond)
		}
		return time.Since(start)
	}
	waitFor("load before the kill", time.Minute, func() bool {
		return nacked() >= 300 && libClient.rounds() >= 3 && ktdClient.rounds() >= 3
	})

	// Kill the master signer under load.
	master := c.Signers[0]
	atKill, libAtKill, ktdAtKill := nacked(), libClient.size(), ktdClient.size()
	master.Kill()
	killed := time.Now()
	t.Logf("killed %s (pid %d) with %d entries acknowledged; library log at %d, ktd log at %d", master.Name, master.PID, atKill, libAtKill, ktdAtKill)
	// While no signer is master, queued leaves wait in Trillian's queue:
	// the drain check of design.md 17.1 sees them.
	db, err := sql.Open("mysql", c.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var queuedDuringOutage int64
	waitFor("queued leaves while no signer is master", 30*time.Second, func() bool {
		n, err := trillian.Unsequenced(ctx, db, treeID)
		if err != nil {
			t.Fatal(err)
		}
		queuedDuringOutage = n
		return n > 0
	})
	for name, id := range map[string]int64{"library": treeID, "ktd": kd.treeID} {
		m, err := c.Master(ctx, id)
		if err != nil {
			t.Fatalf("%s tree after the kill: %v", name, err)
		}
		if m != standby {
			t.Fatalf("%s tree after the kill: master is %s, want %s", name, m.Name, standby.Name)
		}
	}
	takeover := time.Since(killed)
	t.Logf("during the outage, Trillian's queue held at least %d unsequenced leaves", queuedDuringOutage)
	libRoundsAtTakeover := libClient.rounds()
	waitFor("appends after the takeover", time.Minute, func() bool { return nacked() >= atKill+300 })
	waitFor("ktd's log to grow after the takeover", time.Minute, func() bool { return ktdClient.size() > ktdAtKill+3 })
	t.Logf("%s took over after %v; %d entries acknowledged %v after the kill", standby.Name, takeover.Round(time.Millisecond), nacked(), time.Since(killed).Round(time.Millisecond))

	// Kill a log server under load: appends continue through the other.
	atServerKill := nacked()
	c.Servers[0].Kill()
	d := waitFor("appends after killing server-1", time.Minute, func() bool { return nacked() >= atServerKill+300 })
	t.Logf("killed server-1; 300 more entries acknowledged within %v", d.Round(time.Millisecond))

	// A replacement signer joins under load as a standby: it must not
	// take mastership from the live master, and never make two masters.
	c.StartSigner()
	for range 20 {
		for name, id := range map[string]int64{"library": treeID, "ktd": kd.treeID} {
			m, err := c.Master(ctx, id)
			if err != nil {
				t.Fatalf("%s tree after a signer joined: %v", name, err)
			}
			if m != standby {
				t.Fatalf("%s tree: the joining signer %s took mastership from %s", name, m.Name, standby.Name)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}

	close(stop)
	writers.Wait()
	close(clientsDone)
	clients.Wait()
	mu.Lock()
	t.Logf("%d entries acknowledged, %d Append calls failed", len(acked), len(ackErrs))
	for i, err := range ackErrs {
		if i < 5 {
			t.Logf("failed Append: %v", err)
		}
	}
	mu.Unlock()

	// Every acknowledged entry, with identical bytes, under a checkpoint
	// consistent with every checkpoint the client saw.
	var last uint64
	for i := range acked {
		last = max(last, i)
	}
	raw, err := l.Await(ctx, last)
	if err != nil {
		t.Fatal(err)
	}
	final, _, err := log.ParseCheckpoint(raw, origin, verifier)
	if err != nil {
		t.Fatal(err)
	}
	reader := logapi.NewClient(srv.URL, srv.Client())
	// The log no longer grows: the full conformance check (root
	// recomputed with sumdb/tlog, sampled proofs checked against
	// sumdb/tlog and transparency-dev/merkle).
	entries := conformance.CheckReader(t, reader, origin, verifier)
	if uint64(len(entries)) != final.Size {
		t.Fatalf("read %d entries, checkpoint has %d", len(entries), final.Size)
	}
	for i, e := range acked {
		if !bytes.Equal(entries[i], e) {
			t.Errorf("acknowledged entry %d: log has %q, want %q", i, entries[i], e)
		}
	}
	if libClient.rounds() <= libRoundsAtTakeover {
		t.Errorf("the library's client verified no new checkpoint after the takeover (%s)", libClient.summary())
	}
	libClient.checkFinal(t, ctx, "library", final.Size, tlog.Hash(final.Hash))
	if libClient.err() != nil || ktdClient.err() != nil {
		t.Fatalf("a client failed to verify: library: %v; ktd: %v", libClient.err(), ktdClient.err())
	}

	if n, err := trillian.Unsequenced(ctx, db, treeID); err != nil || n != 0 {
		t.Errorf("after the load: %d unsequenced leaves (%v), want 0 (%d during the outage)", n, err, queuedDuringOutage)
	}

	// ktd's log: every entry is an epoch record, numbered without gaps or
	// repeats and each at the index it names, and every checkpoint the
	// client saw is consistent with the last.
	kraw, err := ktdClient.r.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kcp, _, err := log.ParseCheckpoint(kraw, kd.origin, kd.verifier)
	if err != nil {
		t.Fatal(err)
	}
	kstore, kentries := readAll(t, ctx, ktdClient.r, kcp.Size)
	root, err := tlog.TreeHash(int64(kcp.Size), kstore)
	if err != nil {
		t.Fatal(err)
	}
	if root != tlog.Hash(kcp.Hash) {
		t.Fatalf("ktd's log: root of its %d entries (sumdb/tlog) %x, checkpoint %x", kcp.Size, root, kcp.Hash)
	}
	var epochs uint64
	for i, b := range kentries {
		e, err := api.ParseEntry(b)
		if err != nil {
			t.Fatalf("ktd's entry %d: %v", i, err)
		}
		if rec, ok := e.(*api.EpochRecord); ok {
			if rec.Epoch != epochs || rec.LogSize != uint64(i) {
				t.Fatalf("ktd's entry %d: epoch %d at log size %d, want epoch %d at %d", i, rec.Epoch, rec.LogSize, epochs, i)
			}
			epochs++
		}
	}
	ktdClient.checkFinal(t, ctx, "ktd", kcp.Size, root)
	if !kd.alive() {
		t.Fatal("ktd exited during the failover")
	}
	t.Logf("library log: %d entries, client verified %s; ktd log: %d entries (%d epochs), client verified %s",
		final.Size, libClient.summary(), kcp.Size, epochs, ktdClient.summary())
}

// readAll reads entries [0, size) and returns sumdb/tlog's stored hashes
// for them, and the entries.
func readAll(t *testing.T, ctx context.Context, r log.Reader, size uint64) (tlog.HashReaderFunc, [][]byte) {
	t.Helper()
	var store []tlog.Hash
	var entries [][]byte
	reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			if x < 0 || x >= int64(len(store)) {
				return nil, fmt.Errorf("hash %d not stored", x)
			}
			out[i] = store[x]
		}
		return out, nil
	})
	for uint64(len(entries)) < size {
		es, err := r.Entries(ctx, uint64(len(entries)), size)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			hs, err := tlog.StoredHashes(int64(len(entries)), e, reader)
			if err != nil {
				t.Fatal(err)
			}
			store = append(store, hs...)
			entries = append(entries, e)
		}
	}
	return reader, entries
}

// verifyingClient polls a log's read API like a client: it verifies each
// new checkpoint's signature and its consistency with the previous one
// (sumdb/tlog), and the inclusion of the newest entry.
type verifyingClient struct {
	r      log.Reader
	origin string
	v      note.Verifier

	mu       sync.Mutex
	seen     []seenCheckpoint // every distinct checkpoint verified
	verified int              // consistency and inclusion proofs checked
	polls    int
	fails    error // the first verification failure
	outages  int   // polls that could not fetch anything (not a failure)
}

type seenCheckpoint struct {
	size uint64
	root tlog.Hash
}

func newVerifyingClient(r log.Reader, origin string, v note.Verifier) *verifyingClient {
	return &verifyingClient{r: r, origin: origin, v: v}
}

func (c *verifyingClient) run(ctx context.Context, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		if err := c.poll(ctx); err != nil {
			c.mu.Lock()
			if c.fails == nil {
				c.fails = err
			}
			c.mu.Unlock()
		}
	}
}

// poll checks one round. Transport errors are outages; anything that
// fetched but did not verify is a failure.
func (c *verifyingClient) poll(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	raw, err := c.r.Checkpoint(pctx)
	if err != nil {
		c.mu.Lock()
		c.outages++
		c.mu.Unlock()
		return nil
	}
	cp, _, err := log.ParseCheckpoint(raw, c.origin, c.v)
	if err != nil {
		return fmt.Errorf("checkpoint does not verify: %w", err)
	}
	cur := seenCheckpoint{cp.Size, tlog.Hash(cp.Hash)}
	c.mu.Lock()
	c.polls++
	var prev *seenCheckpoint
	if n := len(c.seen); n > 0 {
		prev = &c.seen[n-1]
	}
	c.mu.Unlock()
	if prev != nil && (cur.size < prev.size || (cur.size == prev.size && cur.root != prev.root)) {
		return fmt.Errorf("checkpoint %d %x after %d %x", cur.size, cur.root, prev.size, prev.root)
	}
	if prev != nil && cur.size > prev.size && prev.size > 0 {
		p, err := c.r.ConsistencyProof(pctx, prev.size, cur.size)
		if err != nil {
			return fmt.Errorf("consistency proof %d→%d: %w", prev.size, cur.size, err)
		}
		if err := tlog.CheckTree(toTlog(p), int64(cur.size), cur.root, int64(prev.size), prev.root); err != nil {
			return fmt.Errorf("consistency %d→%d (sumdb/tlog): %w", prev.size, cur.size, err)
		}
	}
	if cur.size > 0 && (prev == nil || cur.size > prev.size) {
		i := cur.size - 1
		es, err := c.r.Entries(pctx, i, cur.size)
		if err != nil || len(es) != 1 {
			return fmt.Errorf("entry %d: %d entries, %v", i, len(es), err)
		}
		p, err := c.r.InclusionProof(pctx, i, cur.size)
		if err != nil {
			return fmt.Errorf("inclusion proof %d in %d: %w", i, cur.size, err)
		}
		if err := tlog.CheckRecord(toTlog(p), int64(cur.size), cur.root, int64(i), tlog.RecordHash(es[0])); err != nil {
			return fmt.Errorf("inclusion of %d in %d (sumdb/tlog): %w", i, cur.size, err)
		}
	}
	c.mu.Lock()
	if prev == nil || cur.size > prev.size {
		c.seen = append(c.seen, cur)
		c.verified++
	}
	c.mu.Unlock()
	return nil
}

// checkFinal checks every checkpoint the client saw against the final
// tree, with consistency proofs verified by sumdb/tlog.
func (c *verifyingClient) checkFinal(t *testing.T, ctx context.Context, name string, size uint64, root tlog.Hash) {
	t.Helper()
	c.mu.Lock()
	seen := append([]seenCheckpoint(nil), c.seen...)
	c.mu.Unlock()
	if len(seen) < 5 {
		t.Errorf("%s: the client verified only %d checkpoints", name, len(seen))
	}
	for _, s := range seen {
		if s.size == 0 || s.size > size {
			continue
		}
		p, err := c.r.ConsistencyProof(ctx, s.size, size)
		if err != nil {
			t.Fatalf("%s: consistency proof %d→%d: %v", name, s.size, size, err)
		}
		if err := tlog.CheckTree(toTlog(p), int64(size), root, int64(s.size), s.root); err != nil {
			t.Errorf("%s: checkpoint at %d, seen during the test, is inconsistent with the final one at %d: %v", name, s.size, size, err)
		}
	}
}

func (c *verifyingClient) rounds() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.verified
}

func (c *verifyingClient) size() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.seen) == 0 {
		return 0
	}
	return c.seen[len(c.seen)-1].size
}

func (c *verifyingClient) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fails
}

func (c *verifyingClient) summary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("%d checkpoints in %d polls (%d outages), error %v", c.verified, c.polls, c.outages, c.fails)
}

func toTlog(p [][]byte) []tlog.Hash {
	out := make([]tlog.Hash, len(p))
	for i, h := range p {
		copy(out[i][:], h)
	}
	return out
}

// ktd is a running ktd binary.
type ktdProc struct {
	*replicaKtd
	treeID   int64
	origin   string
	verifier note.Verifier
}

// startKtd builds and starts ktd on the Trillian backend at addr, with a
// new tree, fast epochs and heartbeats, and waits until it serves.
func startKtd(t *testing.T, addr string) *ktdProc {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "ktd")
	if out, err := exec.Command("go", "build", "-o", bin, "../../../cmd/ktd").CombinedOutput(); err != nil {
		t.Fatalf("building ktd: %v\n%s", err, out)
	}
	const ktdOrigin = "example.com/kt-cluster-ktd"
	rk := startKtdBinary(t, bin, "ktd", filepath.Join(dir, "data"), []string{
		"--grpc-listen=127.0.0.1:0",
		"--http-listen=127.0.0.1:0",
		"--operator-listen=",
		"--metrics-listen=",
		"--log-origin=" + ktdOrigin,
		"--log-backend=trillian",
		"--log-trillian-address=" + addr,
		"--log-trillian-create-tree",
		"--log-checkpoint-interval=100ms",
		"--directory-epoch-interval=100ms",
		"--directory-heartbeat-interval=200ms",
	})
	// Pick out the tree ID and the log key from what ktd printed.
	k := &ktdProc{replicaKtd: rk, origin: ktdOrigin}
	treeRE := regexp.MustCompile(`msg="created Trillian tree".* tree_id=(\d+)`)
	keyRE := regexp.MustCompile(`msg="ktd serving".*log_public_key=(\S+)`)
	for _, line := range rk.startup {
		if m := treeRE.FindStringSubmatch(line); m != nil {
			k.treeID, _ = strconv.ParseInt(m[1], 10, 64)
		}
		if m := keyRE.FindStringSubmatch(line); m != nil {
			v, err := note.NewVerifier(m[1])
			if err != nil {
				t.Fatalf("ktd's log key: %v", err)
			}
			k.verifier = v
		}
	}
	if k.treeID == 0 {
		t.Fatal("ktd did not log the tree it created")
	}
	if k.verifier == nil {
		t.Fatal("ktd did not log its log key")
	}
	return k
}
