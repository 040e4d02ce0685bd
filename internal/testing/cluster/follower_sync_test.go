package cluster

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/auditor/replay"
	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/directory/lease"
	"github.com/keytrans/kt/directory/payloadstore"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/fixture"
	"github.com/keytrans/kt/internal/testing/trilliantest"
	"github.com/keytrans/kt/smt"
	"github.com/keytrans/kt/vrf"
)

const replicaOrigin = "example.com/kt-replica-test"

func keys(t *testing.T) (note.Signer, note.Verifier, string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, replicaOrigin)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	return s, v, vkey
}

func newStore(t *testing.T) (*sql.DB, *payloadstore.Store, *lease.Lease) {
	t.Helper()
	db, err := sql.Open("mysql", trilliantest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := t.Context()
	if err := lease.CreateTable(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := payloadstore.CreateTable(ctx, db); err != nil {
		t.Fatal(err)
	}
	l, err := lease.Acquire(ctx, lease.Config{DB: db, Name: "writer", Holder: "writer-1", Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return db, payloadstore.New(db), l
}

// change builds a signed change of a handle with one fresh device.
func change(t *testing.T, vk *vrf.PrivateKey, name string, version uint64, prev [32]byte, prevKey ed25519.PrivateKey) (*ktpb.HandleChange, [32]byte, ed25519.PrivateKey, *api.DeviceSet) {
	t.Helper()
	h, err := api.NormalizeHandle(name)
	if err != nil {
		t.Fatal(err)
	}
	index, _ := vk.Prove(api.VRFInput(h))
	_, sk, _ := ed25519.GenerateKey(nil)
	hk, _ := ecdh.X25519().GenerateKey(rand.Reader)
	dev := api.Device{Suite: api.SuiteX25519, HPKEKey: hk.PublicKey().Bytes(),
		SigningKey: [32]byte(sk.Public().(ed25519.PublicKey)), Created: 1700000000}
	rand.Read(dev.ID[:])
	set := &api.DeviceSet{Devices: []api.Device{dev}}
	ds, err := set.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var opening [32]byte
	rand.Read(opening[:])
	kind, signer := api.AuthEnroll, sk
	if version > 1 {
		// Signed by the previous device, which hands over to the new one.
		kind, signer = api.AuthDevice, prevKey
		set.Devices = nil
		set.Devices = append(set.Devices, dev)
	}
	rec := &api.ChangeRecord{Index: index, Version: version, Kind: kind, Prev: prev,
		Commitment: api.Commit(opening, index, version, ds), Authorizers: set.Authorizers()}
	rec.Sign(replicaOrigin, signer)
	b, err := rec.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return &ktpb.HandleChange{Handle: h, ChangeRecord: b, Opening: opening[:], DeviceSet: ds}, api.LeafHash(b), sk, set
}

// TestFollowerRebuildsDirectory: a directory (the writer) enrolls handles
// on a log and stores each payload in the shared store as the replicated
// writer would; a Follower that has nothing but the log and the store
// reaches the same map root as every epoch record and serves each
// handle's enrolled device set.
func TestFollowerRebuildsDirectory(t *testing.T) {
	ctx := t.Context()
	signer, verifier, vkey := keys(t)
	vk, err := vrf.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	recovery, _, _ := ed25519.GenerateKey(nil)
	mlog := conformance.NewMemoryLog(replicaOrigin, signer)
	d, err := directory.New(ctx, directory.Config{
		Log: mlog, Origin: replicaOrigin, LogVerifierKey: vkey, VRFKey: vk,
		RecoveryKey: recovery, Credentials: directory.OpenEnrollment{},
		StateDir:      filepath.Join(t.TempDir(), "state"),
		EpochInterval: 20 * time.Millisecond, HeartbeatInterval: time.Second,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	_, store, wl := newStore(t)

	type want struct {
		index [32]byte
		set   *api.DeviceSet
	}
	var wants []want
	for i := range 30 {
		name := fmt.Sprintf("user%d@replica.example", i)
		hc, leaf, sk, set := change(t, vk, name, 1, [32]byte{}, nil)
		// The writer stores the payload first, then appends.
		if err := store.Put(ctx, wl, []payloadstore.Payload{{Record: hc.ChangeRecord, Opening: [32]byte(hc.Opening), DeviceSet: hc.DeviceSet}}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Enroll(ctx, &ktpb.EnrollRequest{Change: hc}); err != nil {
			t.Fatalf("Enroll %s: %v", name, err)
		}
		rec, _ := api.ParseChangeRecord(hc.ChangeRecord)
		if i%3 == 0 { // and a second version for some
			hc2, _, _, set2 := change(t, vk, name, 2, leaf, sk)
			if err := store.Put(ctx, wl, []payloadstore.Payload{{Record: hc2.ChangeRecord, Opening: [32]byte(hc2.Opening), DeviceSet: hc2.DeviceSet}}); err != nil {
				t.Fatal(err)
			}
			if _, err := d.Change(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc2}}); err != nil {
				t.Fatalf("Change %s: %v", name, err)
			}
			set = set2
		}
		wants = append(wants, want{rec.Index, set})
	}
	// Wait for an epoch that covers everything.
	var size uint64
	for deadline := time.Now().Add(10 * time.Second); ; {
		ep, err := d.GetEpoch(ctx, &ktpb.GetEpochRequest{})
		if err == nil {
			rec, err := api.ParseEpochRecord(ep.EpochRecord)
			if err == nil && rec.MapSize == uint64(len(wants)) {
				size = rec.LogSize + 1
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no epoch covering every change")
		}
		time.Sleep(20 * time.Millisecond)
	}

	f := NewFollower(mlog, replicaOrigin, verifier, store)
	n, err := f.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n < size {
		t.Fatalf("synced %d entries, want at least %d", n, size)
	}
	ep, _, err := f.Epoch()
	if err != nil {
		t.Fatal(err)
	}
	root, _ := f.Root()
	if root != ep.MapRoot {
		t.Fatalf("follower's root %x, epoch's %x", root, ep.MapRoot)
	}
	// The follower agrees with the auditor's replay.
	rebuilt, err := fixture.ReplayMap(ctx, replay.Config{Origin: replicaOrigin, Verifier: verifier, RecoveryKey: [32]byte(recovery)}, mlog)
	if err != nil {
		t.Fatal(err)
	}
	if ep.LogSize+1 == n && rebuilt != root {
		t.Fatalf("follower's root %x, the auditor's replay %x", root, rebuilt)
	}
	for i, w := range wants {
		_, set, _, err := f.Latest(ctx, w.index)
		if err != nil {
			t.Fatalf("handle %d: %v", i, err)
		}
		got, _ := set.MarshalBinary()
		wantB, _ := w.set.MarshalBinary()
		if !bytes.Equal(got, wantB) {
			t.Errorf("handle %d: follower serves another device set than the latest enrolled", i)
		}
	}
	var unknown [32]byte
	if _, _, _, err := f.Latest(ctx, unknown); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("unregistered index: %v, want ErrNotRegistered", err)
	}

	// A payload missing from the store (a writer that did not store it)
	// makes exactly that handle unavailable, with a typed error.
	if _, err := d.Enroll(ctx, &ktpb.EnrollRequest{Change: func() *ktpb.HandleChange {
		hc, _, _, _ := change(t, vk, "nopayload@replica.example", 1, [32]byte{}, nil)
		return hc
	}()}); err != nil {
		t.Fatal(err)
	}
	h, _ := api.NormalizeHandle("nopayload@replica.example")
	idx, _ := vk.Prove(api.VRFInput(h))
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := f.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		_, _, _, err := f.Latest(ctx, idx)
		if errors.Is(err, payloadstore.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handle without payload: %v, want payloadstore.ErrNotFound", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// epochRecord encodes an epoch record.
func epochRecord(t *testing.T, e *api.EpochRecord) []byte {
	t.Helper()
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFollowerDivergence: entries that do not follow from the log before
// them stop the Follower with a DivergenceError naming the entry.
func TestFollowerDivergence(t *testing.T) {
	ctx := t.Context()
	_, _, store := func() (*sql.DB, *lease.Lease, *payloadstore.Store) {
		db, s, l := newStore(t)
		return db, l, s
	}()
	empty, _ := smt.New(nil)
	vk, _ := vrf.GenerateKey(nil)
	hc, _, _, _ := change(t, vk, "a@replica.example", 1, [32]byte{}, nil)
	for _, tc := range []struct {
		name    string
		entries func() [][]byte
		bad     uint64
		rule    api.Rule // "" for an entry that does not parse
	}{
		{"change before epoch 0", func() [][]byte { return [][]byte{hc.ChangeRecord} }, 0, api.RuleFirstEntry},
		{"wrong map root", func() [][]byte {
			return [][]byte{
				epochRecord(t, &api.EpochRecord{Epoch: 0, LogSize: 0, MapRoot: empty.Root()}),
				hc.ChangeRecord,
				epochRecord(t, &api.EpochRecord{Epoch: 1, LogSize: 2, MapRoot: empty.Root(), MapSize: 1}),
			}
		}, 2, api.RuleMapRoot},
		{"wrong map size", func() [][]byte {
			m, _ := smt.New(nil)
			rec, _ := api.ParseChangeRecord(hc.ChangeRecord)
			root, _ := m.Apply([]smt.Update{{Key: rec.Index, Value: api.LeafHash(hc.ChangeRecord)}})
			return [][]byte{
				epochRecord(t, &api.EpochRecord{Epoch: 0, LogSize: 0, MapRoot: empty.Root()}),
				hc.ChangeRecord,
				epochRecord(t, &api.EpochRecord{Epoch: 1, LogSize: 2, MapRoot: root, MapSize: 2}),
			}
		}, 2, api.RuleMapSize},
		{"epoch skipped", func() [][]byte {
			return [][]byte{
				epochRecord(t, &api.EpochRecord{Epoch: 0, LogSize: 0, MapRoot: empty.Root()}),
				epochRecord(t, &api.EpochRecord{Epoch: 2, LogSize: 1, MapRoot: empty.Root()}),
			}
		}, 1, api.RuleEpochNumber},
		{"wrong log size", func() [][]byte {
			return [][]byte{epochRecord(t, &api.EpochRecord{Epoch: 0, LogSize: 5, MapRoot: empty.Root()})}
		}, 0, api.RuleEpochLogSize},
		{"time going back", func() [][]byte {
			return [][]byte{
				epochRecord(t, &api.EpochRecord{Epoch: 0, Timestamp: 100, LogSize: 0, MapRoot: empty.Root()}),
				epochRecord(t, &api.EpochRecord{Epoch: 1, Timestamp: 99, LogSize: 1, MapRoot: empty.Root()}),
			}
		}, 1, api.RuleEpochTimestamp},
		{"garbage entry", func() [][]byte {
			return [][]byte{epochRecord(t, &api.EpochRecord{Epoch: 0, LogSize: 0, MapRoot: empty.Root()}), {0x01, 0xff, 0x00}}
		}, 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			signer, verifier, _ := keys(t)
			l := conformance.NewMemoryLog(replicaOrigin, signer)
			if _, err := l.AppendUnchecked(tc.entries()); err != nil {
				t.Fatal(err)
			}
			f := NewFollower(l, replicaOrigin, verifier, store)
			_, err := f.Sync(ctx)
			var de *DivergenceError
			if !errors.As(err, &de) || de.Index != tc.bad {
				t.Fatalf("Sync: %v, want a DivergenceError at entry %d", err, tc.bad)
			}
			var ee *api.EpochError
			if tc.rule == "" && !errors.Is(err, api.ErrMalformed) || tc.rule != "" && (!errors.As(err, &ee) || ee.Rule != tc.rule) {
				t.Fatalf("Sync: %v, want rule %q", err, tc.rule)
			}
			if _, err2 := f.Sync(ctx); !errors.As(err2, &de) {
				t.Fatalf("second Sync after divergence: %v", err2)
			}
		})
	}

	// A checkpoint signed by another key is refused.
	signer, _, _ := keys(t)
	_, otherV, _ := keys(t)
	l := conformance.NewMemoryLog(replicaOrigin, signer)
	if _, err := l.AppendUnchecked([][]byte{epochRecord(t, &api.EpochRecord{MapRoot: empty.Root()})}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFollower(l, replicaOrigin, otherV, store).Sync(ctx); err == nil {
		t.Fatal("Sync accepted a checkpoint signed by another key")
	}
}
