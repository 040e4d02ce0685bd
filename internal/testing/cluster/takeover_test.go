package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/directory/lease"
	"github.com/keytrans/kt/directory/payloadstore"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/internal/testing/trilliantest"
	"github.com/keytrans/kt/log/trillian"
	"github.com/keytrans/kt/smt"
)

// TestWriterTakeover exercises the replicated directory's takeover protocol
// (design.md 17.1) with its building blocks on a real Trillian cluster. It
// is not the directory: the two writers here are test writers that
// sequence change records and epoch records the way the directory does
// (payload stored under the lease first, then the append; an epoch record
// after every few changes, with the map root). Writer A is "killed" (its
// context cancelled mid-append, its renewals stopped); writer B campaigns,
// waits out the margin, drains Trillian's queue, replays the log with a
// Follower (follower_test.go), closes an epoch over what A left, and continues. The
// checks: A is fenced; every change either writer acknowledged is in the
// log once, with its payload; a fresh follower replays the whole log
// without divergence.
func TestWriterTakeover(t *testing.T) {
	c := trilliantest.StartCluster(t, trilliantest.ClusterOptions{
		Options: trilliantest.Options{SequencerInterval: 20 * time.Millisecond},
		Signers: 1,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db, err := sql.Open("mysql", c.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := lease.CreateTable(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := payloadstore.CreateTable(ctx, db); err != nil {
		t.Fatal(err)
	}
	store := payloadstore.New(db)
	conn, err := trillian.Dial(c.ServerAddrs())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	skey, vkey, _ := note.GenerateKey(rand.Reader, origin)
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	openLog := func(treeID int64) *trillian.Log {
		l, err := trillian.New(ctx, trillian.Config{
			Conn: conn, TreeID: treeID, CreateTree: treeID == 0, Origin: origin, Signer: signer,
			CheckpointInterval: 50 * time.Millisecond, MaxPollInterval: 10 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	const leaseDuration, margin = 4 * time.Second, time.Second
	leaseCfg := func(holder string) lease.Config {
		return lease.Config{DB: db, Name: "directory-writer/" + origin, Holder: holder, Duration: leaseDuration, Margin: margin}
	}

	var (
		mu    sync.Mutex
		acked = map[uint64][]byte{} // index → entry, acknowledged by a writer
	)

	// Writer A: first writer of a fresh log.
	la := openLog(0)
	treeID := la.TreeID()
	leaseA, err := lease.Acquire(ctx, leaseCfg("writer-a"))
	if err != nil {
		t.Fatal(err)
	}
	wa := &testWriter{t: t, name: "A", l: la, lease: leaseA, store: store, acked: &acked, mu: &mu}
	wa.m, _ = smt.New(nil)
	actx, killA := context.WithCancel(ctx)
	if err := wa.epoch(actx); err != nil { // epoch record 0
		t.Fatal(err)
	}
	aDone := make(chan error, 1)
	go func() { aDone <- wa.run(actx, 1<<30) }()
	go keepRenewing(actx, leaseA, leaseDuration/3) // until A is killed
	// Let A write a while (at least 40 changes), then kill it.
	for deadline := time.Now().Add(time.Minute); ; {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writer A acknowledged only %d entries in a minute", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	killA() // a crash: in-flight Puts and Appends are abandoned
	errA := <-aDone
	_ = la.Close(context.Background())
	mu.Lock()
	ackedByA := len(acked)
	mu.Unlock()
	t.Logf("writer A killed after %d acknowledged entries (%d changes, %d epochs; last error %v)", ackedByA, wa.changes, wa.epochs, errA)

	// Writer B takes over.
	start := time.Now()
	leaseB, err := lease.Campaign(ctx, leaseCfg("writer-b"))
	if err != nil {
		t.Fatal(err)
	}
	go keepRenewing(ctx, leaseB, leaseDuration/3)
	if leaseB.Token() <= leaseA.Token() {
		t.Fatalf("B's token %d is not above A's %d", leaseB.Token(), leaseA.Token())
	}
	// Step 1: the margin, after which A starts nothing more.
	time.Sleep(margin)
	// A is fenced from the payload store.
	if err := store.Put(ctx, leaseA, []payloadstore.Payload{newPayload(t)}); !errors.Is(err, lease.ErrFenced) {
		t.Fatalf("deposed writer's Put: %v, want lease.ErrFenced", err)
	}
	// Step 2: drain Trillian's queue.
	for {
		n, err := trillian.Unsequenced(ctx, db, treeID)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Step 3: replay. (The Log is opened after the drain, so that its
	// first checkpoint covers everything A's queue held.)
	lb := openLog(treeID)
	defer lb.Close(context.Background())
	f := NewFollower(lb, origin, verifier, store)
	if _, err := f.Sync(ctx); err != nil {
		t.Fatalf("replaying A's log: %v", err)
	}
	last, epochSize, err := f.Epoch()
	if err != nil {
		t.Fatal(err)
	}
	root, mapSize, size := f.Head()
	wb := &testWriter{t: t, name: "B", l: lb, lease: leaseB, store: store, acked: &acked, mu: &mu,
		size: size, nextEpoch: last.Epoch + 1, lastTS: last.Timestamp}
	// The writer's map is the follower's head: rebuild it from the log's
	// leaves as of now (a real writer would take the follower's map).
	wb.m, err = mapAt(ctx, lb, store, size)
	if err != nil {
		t.Fatal(err)
	}
	if wb.m.Root() != root || wb.m.Len() != mapSize {
		t.Fatalf("B's map %x/%d, follower's head %x/%d", wb.m.Root(), wb.m.Len(), root, mapSize)
	}
	// Step 4: close an epoch over what A left after its last epoch.
	if size != epochSize {
		if err := wb.epoch(ctx); err != nil {
			t.Fatalf("B's first epoch: %v", err)
		}
	}
	t.Logf("B took over %v after it began campaigning: log size %d, %d entries after A's last epoch", time.Since(start).Round(time.Millisecond), size, size-epochSize)
	// Step 5: B continues.
	if err := wb.run(ctx, 20); err != nil {
		t.Fatal(err)
	}

	// Everything acknowledged, once, with its payload; the whole log
	// replays.
	raw, err := lb.Await(ctx, wb.size-1)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw
	f2 := NewFollower(lb, origin, verifier, store)
	n, err := f2.Sync(ctx)
	if err != nil {
		t.Fatalf("replaying the whole log: %v", err)
	}
	if n != wb.size {
		t.Fatalf("log size %d, B wrote up to %d", n, wb.size)
	}
	entries, err := lb.Entries(ctx, 0, n)
	for uint64(len(entries)) < n && err == nil {
		var more [][]byte
		more, err = lb.Entries(ctx, uint64(len(entries)), n)
		entries = append(entries, more...)
	}
	if err != nil {
		t.Fatal(err)
	}
	seen := map[[32]byte]uint64{}
	for i, e := range entries {
		h := api.LeafHash(e)
		if j, dup := seen[h]; dup {
			t.Errorf("entry %d repeats entry %d", i, j)
		}
		seen[h] = uint64(i)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, e := range acked {
		if !bytes.Equal(entries[i], e) {
			t.Errorf("acknowledged entry %d: log has %x, want %x", i, entries[i][:8], e[:8])
			continue
		}
		if rec, err := api.ParseChangeRecord(e); err == nil {
			if _, _, _, err := f2.Latest(ctx, rec.Index); err != nil {
				t.Errorf("acknowledged change at %d is not served: %v", i, err)
			}
		}
	}
	ep, _, _ := f2.Epoch()
	t.Logf("%d entries acknowledged by A and B, all present; log ends with epoch %d at size %d", len(acked), ep.Epoch, n)
}

// keepRenewing renews l every interval until ctx ends or the lease is lost.
func keepRenewing(ctx context.Context, l *lease.Lease, every time.Duration) {
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			if err := l.Renew(ctx); err != nil {
				return
			}
		}
	}
}

// testWriter sequences changes and epochs like the directory: payloads
// stored under the lease first, then appended; an epoch record after
// every few changes. It is the only writer while it holds the lease.
type testWriter struct {
	t         *testing.T
	name      string
	l         *trillian.Log
	lease     *lease.Lease
	store     *payloadstore.Store
	m         *smt.Map
	size      uint64 // the log's size as this writer knows it
	nextEpoch uint64
	lastTS    uint64
	changes   int
	epochs    int
	acked     *map[uint64][]byte
	mu        *sync.Mutex
}

// run appends rounds of 4 changes and an epoch, until ctx ends, the lease
// is lost or rounds are done.
func (w *testWriter) run(ctx context.Context, rounds int) error {
	for range rounds {
		if err := w.changeBatch(ctx, 4); err != nil {
			return err
		}
		if err := w.epoch(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (w *testWriter) ack(i uint64, e []byte) {
	w.mu.Lock()
	(*w.acked)[i] = e
	w.mu.Unlock()
}

// appendAll appends entries, only before the lease's deadline, with a
// context that ends at it, and checks they got [size, size+len).
func (w *testWriter) appendAll(ctx context.Context, es [][]byte) error {
	if !w.lease.Valid() {
		return fmt.Errorf("writer %s: past its lease deadline", w.name)
	}
	actx, cancel := context.WithDeadline(ctx, w.lease.Deadline())
	defer cancel()
	idx, err := w.l.Append(actx, es)
	if err != nil {
		return fmt.Errorf("writer %s: %w", w.name, err)
	}
	got := slices.Sorted(slices.Values(idx))
	for j, i := range got {
		if i != w.size+uint64(j) {
			w.t.Errorf("writer %s: indices %v, want [%d, %d): another writer interleaved", w.name, idx, w.size, w.size+uint64(len(es)))
			return errors.New("interleaved")
		}
	}
	for j, i := range idx {
		w.ack(i, es[j])
	}
	w.size += uint64(len(es))
	return nil
}

func (w *testWriter) changeBatch(ctx context.Context, k int) error {
	ps := make([]payloadstore.Payload, k)
	es := make([][]byte, k)
	var ups []smt.Update
	for i := range ps {
		ps[i] = newPayload(w.t)
		es[i] = ps[i].Record
		rec, _ := api.ParseChangeRecord(ps[i].Record)
		ups = append(ups, smt.Update{Key: rec.Index, Value: ps[i].Leaf()})
	}
	if err := w.store.Put(ctx, w.lease, ps); err != nil {
		return fmt.Errorf("writer %s: %w", w.name, err)
	}
	if err := w.appendAll(ctx, es); err != nil {
		return err
	}
	if _, err := w.m.Apply(ups); err != nil {
		return err
	}
	w.changes += k
	return nil
}

func (w *testWriter) epoch(ctx context.Context) error {
	ts := max(uint64(time.Now().UnixMilli()), w.lastTS)
	rec := &api.EpochRecord{Epoch: w.nextEpoch, Timestamp: ts, LogSize: w.size, MapRoot: w.m.Root(), MapSize: w.m.Len()}
	b, err := rec.MarshalBinary()
	if err != nil {
		return err
	}
	if err := w.appendAll(ctx, [][]byte{b}); err != nil {
		return err
	}
	w.nextEpoch, w.lastTS = w.nextEpoch+1, ts
	w.epochs++
	return nil
}

// mapAt rebuilds the map of the change records in the log's first size
// entries.
func mapAt(ctx context.Context, l *trillian.Log, _ *payloadstore.Store, size uint64) (*smt.Map, error) {
	m, _ := smt.New(nil)
	var ups []smt.Update
	for i := uint64(0); i < size; {
		es, err := l.Entries(ctx, i, size)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			if rec, err := api.ParseChangeRecord(e); err == nil {
				ups = append(ups, smt.Update{Key: rec.Index, Value: api.LeafHash(e)})
			}
			i++
		}
	}
	_, err := m.Apply(ups)
	return m, err
}

// newPayload builds a valid enrollment payload for a random index.
func newPayload(t *testing.T) payloadstore.Payload {
	t.Helper()
	d := testkit.NewDevice()
	var index [32]byte
	rand.Read(index[:])
	hc, err := client.NewChange(origin, &client.LookupResult{Index: index}, testkit.Set([16]byte{}, d), api.AuthEnroll, d.Sign)
	if err != nil {
		t.Fatal(err)
	}
	return payloadstore.Payload{Record: hc.ChangeRecord, Opening: [32]byte(hc.Opening), DeviceSet: hc.DeviceSet}
}
