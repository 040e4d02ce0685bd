package directory

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/log"
)

// faultLog wraps a log with break hooks for the next Append.
type faultLog struct {
	log.Log
	mu sync.Mutex
	// mode of the next change-record Append: "" passes through, "drop"
	// fails without appending, "lose-ack" appends and then fails,
	// "interleave" lets another writer append an entry first.
	mode string
}

func (f *faultLog) set(mode string) {
	f.mu.Lock()
	f.mode = mode
	f.mu.Unlock()
}

func (f *faultLog) Append(ctx context.Context, es [][]byte) ([]uint64, error) {
	f.mu.Lock()
	mode := f.mode
	if mode != "" && (mode == "interleave" || es[0][1] == byte(api.TypeChange)) {
		f.mode = ""
	} else {
		mode = ""
	}
	f.mu.Unlock()
	switch mode {
	case "drop":
		return nil, errors.New("injected: append failed")
	case "lose-ack":
		if _, err := f.Log.Append(ctx, es); err != nil {
			return nil, err
		}
		return nil, errors.New("injected: acknowledgement lost")
	case "interleave":
		if _, err := f.Log.Append(ctx, [][]byte{[]byte("another writer")}); err != nil {
			return nil, err
		}
	}
	return f.Log.Append(ctx, es)
}

// lifeOf sets up alice with one device and returns what the tests need.
func lifeOf(t *testing.T, e *env) (*handleState, *testkit.Device, [16]byte, uint64) {
	t.Helper()
	var account [16]byte
	rand.Read(account[:])
	a := testkit.NewDevice()
	alice := newHandle(t, e.k, "alice@example.com")
	i := e.enroll(alice, a.Sign, testkit.Set(account, a))
	return alice, a, account, i
}

// TestRebuildMap checks that the map rebuilt from the log alone equals the
// served one, on every backend, across a restart.
func TestRebuildMap(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := newEnv(t, b)
			var i uint64
			for n := range 20 {
				h := newHandle(t, e.k, "+1415555"+string(rune('0'+n/10))+string(rune('0'+n%10))+"00")
				d := testkit.NewDevice()
				var acct [16]byte
				i = e.enroll(h, d.Sign, testkit.Set(acct, d))
				if n%3 == 0 {
					d2 := testkit.NewDevice()
					i = e.apply(h, h.change(api.AuthDevice, d.Sign, testkit.Set(acct, d, d2), nil))
				}
			}
			e.waitEpoch(i)
			e.stop()
			// The directory is down; read the log alone.
			l := e.b.open(t, e.k, e.logDir)
			root, err := rebuildMap(ctxT(t), l)
			if err != nil {
				t.Fatalf("rebuildMap: %v", err)
			}
			cp, err := l.Checkpoint(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			size := mustSize(t, e, cp)
			last, err := l.Entries(ctxT(t), size-1, size)
			if err != nil {
				t.Fatal(err)
			}
			rec, err := api.ParseEpochRecord(last[0])
			if err != nil {
				t.Fatalf("the log's last entry after a clean stop is not an epoch record: %v", err)
			}
			if rec.MapRoot != root || root == ([32]byte{}) {
				t.Fatalf("rebuilt root %x, last epoch record's root %x", root, rec.MapRoot)
			}
			if err := l.Close(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			e.start()
			ep := e.waitEpoch(0)
			served, _ := api.ParseEpochRecord(ep.EpochRecord)
			if served.MapRoot != root {
				t.Fatalf("served root after restart %x, rebuilt %x", served.MapRoot, root)
			}
		})
	}
}

func mustSize(t *testing.T, e *env, cp []byte) uint64 {
	t.Helper()
	c, _, err := log.ParseCheckpoint(cp, testOrigin, e.k.verifier)
	if err != nil {
		t.Fatal(err)
	}
	return c.Size
}

// TestStoreLost deletes the store: the map and the handle state come back
// from the log alone; openings cannot, so lookups of the affected handles
// fail with ErrUnavailable rather than answer without a device set, and
// new handles work.
func TestStoreLost(t *testing.T) {
	e := newEnv(t, backends[1])
	alice, _, _, i := lifeOf(t, e)
	ep := e.waitEpoch(i)
	want, _ := api.ParseEpochRecord(ep.EpochRecord)
	e.stop()
	if err := os.RemoveAll(e.stateDir); err != nil {
		t.Fatal(err)
	}
	e.start()
	ep = e.waitEpoch(0)
	got, _ := api.ParseEpochRecord(ep.EpochRecord)
	if got.MapRoot != want.MapRoot || got.MapSize != want.MapSize {
		t.Fatalf("rebuilt map %x (%d), before %x (%d)", got.MapRoot, got.MapSize, want.MapRoot, want.MapSize)
	}
	if _, err := e.d.Lookup(ctxT(t), &ktpb.LookupRequest{Handle: alice.handle}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("lookup of a handle whose opening was lost: %v, want ErrUnavailable", err)
	}
	bob := newHandle(t, e.k, "bob@example.com")
	d := testkit.NewDevice()
	i = e.enroll(bob, d.Sign, testkit.Set([16]byte{1}, d))
	if res := e.lookup(bob.handle, i); !res.Registered {
		t.Fatal("new handle not registered after the store was rebuilt")
	}
}

// TestCrashBeforeAppend: the payload is stored, then the append fails (as
// if the process died in between). The change is not logged; the sequencer
// stops (writes refused, lookups served); after a restart the change is
// invisible, its orphaned payload harmless, and it can be sent again.
func TestCrashBeforeAppend(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := newEnv(t, b)
			fl := &faultLog{}
			e.wrap = func(l log.Log) log.Log { fl.Log = l; return fl }
			e.restart()
			alice, a, account, i := lifeOf(t, e)
			e.waitEpoch(i)
			d2 := testkit.NewDevice()
			hc := alice.change(api.AuthDevice, a.Sign, testkit.Set(account, a, d2), nil)
			fl.set("drop")
			if _, err := e.d.Change(ctxT(t), &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}}); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("change with a failing append: %v, want ErrUnavailable", err)
			}
			if _, err := e.d.Change(ctxT(t), &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}}); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("change after the sequencer stopped: %v, want ErrUnavailable", err)
			}
			if res := e.lookup(alice.handle, i); res.Version != 1 {
				t.Fatalf("lookup while stopped: version %d", res.Version)
			}
			e.wrap = nil
			e.restart()
			if res := e.lookup(alice.handle, 0); res.Version != 1 {
				t.Fatalf("after restart: version %d, want 1", res.Version)
			}
			i = e.apply(alice, hc)
			if res := e.lookup(alice.handle, i); res.Version != 2 || len(res.DeviceSet.Devices) != 2 {
				t.Fatalf("resent change: version %d, %d devices", res.Version, len(res.DeviceSet.Devices))
			}
		})
	}
}

// TestCrashAfterAppend: the record is appended but the acknowledgement is
// lost (as if the process died after the log made it durable). After a
// restart, replay finds the record and its stored payload: the change is
// visible, and sending it again is a replay.
func TestCrashAfterAppend(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := newEnv(t, b)
			fl := &faultLog{}
			e.wrap = func(l log.Log) log.Log { fl.Log = l; return fl }
			e.restart()
			alice, a, account, i := lifeOf(t, e)
			e.waitEpoch(i)
			d2 := testkit.NewDevice()
			hc := alice.change(api.AuthDevice, a.Sign, testkit.Set(account, a, d2), nil)
			fl.set("lose-ack")
			if _, err := e.d.Change(ctxT(t), &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}}); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("change with a lost acknowledgement: %v, want ErrUnavailable", err)
			}
			e.wrap = nil
			e.restart()
			res := e.lookup(alice.handle, 0)
			for res.Version != 2 {
				// The replayed change is pending until the next epoch.
				time.Sleep(10 * time.Millisecond)
				res = e.lookup(alice.handle, 0)
			}
			if len(res.DeviceSet.Devices) != 2 {
				t.Fatalf("replayed change: %d devices", len(res.DeviceSet.Devices))
			}
			if _, err := e.d.Change(ctxT(t), &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}}); !errors.Is(err, ErrStaleVersion) {
				t.Fatalf("resending a logged change: %v, want ErrStaleVersion", err)
			}
		})
	}
}

// TestAnotherWriter: an entry appended by someone else puts the epoch
// record at an index other than its log size field. The sequencer stops
// (nothing more is appended, writes are refused), and a restart refuses
// the log.
func TestAnotherWriter(t *testing.T) {
	e := newEnv(t, backends[0])
	fl := &faultLog{}
	e.wrap = func(l log.Log) log.Log { fl.Log = l; return fl }
	e.restart()
	e.waitEpoch(0)
	select {
	case <-e.d.Stopped():
		t.Fatal("Stopped closed while the sequencer runs")
	default:
	}
	fl.set("interleave")
	deadline := time.Now().Add(30 * time.Second)
	for e.d.fatal.Load() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the sequencer did not stop")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Standalone too, Stopped is closed and StopError says why, for ktd to
	// fail health and exit (issue 17 item 2).
	select {
	case <-e.d.Stopped():
	case <-time.After(5 * time.Second):
		t.Fatal("Stopped not closed after the sequencer stopped")
	}
	if e.d.StopError() == nil || e.d.Role() != RoleStopped {
		t.Fatalf("StopError %v, role %s", e.d.StopError(), e.d.Role())
	}
	cp, _ := e.log.Checkpoint(ctxT(t))
	size := mustSize(t, e, cp)
	time.Sleep(100 * time.Millisecond) // several heartbeats' worth of epochs
	cp, _ = e.log.Checkpoint(ctxT(t))
	if s := mustSize(t, e, cp); s != size {
		t.Fatalf("the log grew from %d to %d after the sequencer stopped", size, s)
	}
	alice := newHandle(t, e.k, "alice@example.com")
	d := testkit.NewDevice()
	hc := alice.change(api.AuthEnroll, d.Sign, testkit.Set([16]byte{}, d), nil)
	if _, err := e.d.Enroll(ctxT(t), &ktpb.EnrollRequest{Change: hc, Credential: e.k.token.IssueToken(alice.handle)}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("enroll after the sequencer stopped: %v, want ErrUnavailable", err)
	}
	e.stop()
	e.wrap = nil
	e.log = e.b.open(t, e.k, e.logDir)
	defer e.log.Close(context.Background())
	if _, err := New(context.Background(), e.config(e.log)); err == nil {
		t.Fatal("New accepted a log with a foreign entry")
	}
}
