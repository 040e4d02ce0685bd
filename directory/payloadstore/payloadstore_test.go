package payloadstore

import (
	"bytes"
	"crypto/rand"
	"database/sql"
	"errors"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/directory/lease"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/internal/testing/trilliantest"
)

const origin = "example.com/kt-payloadstore-test"

func newDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", trilliantest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := lease.CreateTable(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	if err := CreateTable(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	return db
}

func acquire(t *testing.T, db *sql.DB, holder string, d time.Duration) *lease.Lease {
	t.Helper()
	l, err := lease.Campaign(t.Context(), lease.Config{DB: db, Name: "writer", Holder: holder, Duration: d})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// payload builds a valid enrollment payload for a random index.
func payload(t *testing.T) Payload {
	t.Helper()
	d := testkit.NewDevice()
	var account [16]byte
	rand.Read(account[:])
	var index [32]byte
	rand.Read(index[:])
	hc, err := client.NewChange(origin, &client.LookupResult{Index: index}, testkit.Set(account, d), api.AuthEnroll, d.Sign)
	if err != nil {
		t.Fatal(err)
	}
	return Payload{Record: hc.ChangeRecord, Opening: [32]byte(hc.Opening), DeviceSet: hc.DeviceSet}
}

func count(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM kt_payload").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPutGet(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	s := New(db)
	l := acquire(t, db, "w1", time.Minute)
	ps := []Payload{payload(t), payload(t), payload(t)}
	if err := s.Put(ctx, l, ps); err != nil {
		t.Fatal(err)
	}
	// A retry of the same payloads is a no-op.
	if err := s.Put(ctx, l, ps[1:]); err != nil {
		t.Fatalf("idempotent retry: %v", err)
	}
	if n := count(t, db); n != 3 {
		t.Fatalf("%d rows, want 3", n)
	}
	for i, p := range ps {
		got, err := s.Get(ctx, p.Leaf())
		if err != nil {
			t.Fatalf("Get %d: %v", i, err)
		}
		if string(got.Record) != string(p.Record) || got.Opening != p.Opening || string(got.DeviceSet) != string(p.DeviceSet) {
			t.Errorf("payload %d changed in the store", i)
		}
	}
	if _, err := s.Get(ctx, [32]byte{1}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of an unknown record: %v, want ErrNotFound", err)
	}
}

// TestPutInvalid: a payload that does not open its record's commitment is
// refused, and nothing of the batch is stored.
func TestPutInvalid(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	s := New(db)
	l := acquire(t, db, "w1", time.Minute)
	for name, tamper := range map[string]func(p *Payload){
		"opening":          func(p *Payload) { p.Opening[0] ^= 1 },
		"device set":       func(p *Payload) { p.DeviceSet[len(p.DeviceSet)-1] ^= 1 },
		"record signature": func(p *Payload) { p.Record[len(p.Record)-1] ^= 1 },
		"record truncated": func(p *Payload) { p.Record = p.Record[:10] },
		"empty device set": func(p *Payload) { p.DeviceSet = nil },
	} {
		t.Run(name, func(t *testing.T) {
			before := count(t, db)
			good, bad := payload(t), payload(t)
			tamper(&bad)
			err := s.Put(ctx, l, []Payload{good, bad})
			if !errors.Is(err, ErrInvalid) {
				// A flipped signature byte still opens the commitment:
				// the signature is the directory's to check (R1), not
				// the store's.
				if name == "record signature" && err == nil {
					return
				}
				t.Fatalf("Put: %v, want ErrInvalid", err)
			}
			if n := count(t, db) - before; n != 0 {
				t.Fatalf("%d rows stored from a refused batch", n)
			}
		})
	}
}

// TestPutFenced: once a successor holds the lease, the old writer's Put
// stores nothing.
func TestPutFenced(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	s := New(db)
	old := acquire(t, db, "w1", 200*time.Millisecond)
	if err := s.Put(ctx, old, []Payload{payload(t)}); err != nil {
		t.Fatal(err)
	}
	successor := acquire(t, db, "w2", time.Minute) // waits for old's expiry
	if err := s.Put(ctx, old, []Payload{payload(t)}); !errors.Is(err, lease.ErrFenced) {
		t.Fatalf("deposed writer's Put: %v, want lease.ErrFenced", err)
	}
	if n := count(t, db); n != 1 {
		t.Fatalf("%d rows, want only the one stored before the takeover", n)
	}
	if err := s.Put(ctx, successor, []Payload{payload(t)}); err != nil {
		t.Fatalf("successor's Put: %v", err)
	}
}

// TestConflict: a different stored payload for the same record is never
// overwritten.
func TestConflict(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	s := New(db)
	l := acquire(t, db, "w1", time.Minute)
	p := payload(t)
	leaf := p.Leaf()
	if _, err := db.ExecContext(ctx, "INSERT INTO kt_payload VALUES (?, ?, ?, ?, 0)", leaf[:], p.Record, make([]byte, 32), p.DeviceSet); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, l, []Payload{p}); !errors.Is(err, ErrConflict) {
		t.Fatalf("Put over a different stored payload: %v, want ErrConflict", err)
	}
}

// TestGetTampered: every kind of change to a stored row is caught on Get.
func TestGetTampered(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	s := New(db)
	l := acquire(t, db, "w1", time.Minute)
	other := payload(t)
	for name, stmt := range map[string]string{
		"opening":             "UPDATE kt_payload SET opening = UNHEX(REPEAT('00', 32)) WHERE leaf_hash = ?",
		"device set":          "UPDATE kt_payload SET device_set = CONCAT(device_set, 'x') WHERE leaf_hash = ?",
		"record swapped":      "UPDATE kt_payload SET record = ? WHERE leaf_hash = ?",
		"device set replaced": "UPDATE kt_payload SET device_set = ? WHERE leaf_hash = ?",
	} {
		t.Run(name, func(t *testing.T) {
			p := payload(t)
			if err := s.Put(ctx, l, []Payload{p}); err != nil {
				t.Fatal(err)
			}
			leaf := p.Leaf()
			args := []any{leaf[:]}
			switch name {
			case "record swapped":
				args = []any{other.Record, leaf[:]}
			case "device set replaced":
				args = []any{other.DeviceSet, leaf[:]}
			}
			if _, err := db.ExecContext(ctx, stmt, args...); err != nil {
				t.Fatal(err)
			}
			_, err := s.Get(ctx, leaf)
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Leaf != leaf {
				t.Fatalf("Get of a tampered row: %v, want a CorruptError for the record", err)
			}
		})
	}
}

// TestEpochs: PutEpoch is fenced and idempotent, refuses a different
// checkpoint for the same index, and GetEpoch returns what was stored.
func TestEpochs(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	l := acquire(t, db, "a", time.Minute)
	cp := []byte("example.com/log\n8\nroot\n\n— sig\n")
	incl := [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)}
	s := New(db)
	if _, _, err := s.GetEpoch(ctx, 7); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetEpoch before Put: %v, want ErrNotFound", err)
	}
	for range 2 { // the second is a retry
		if err := s.PutEpoch(ctx, l, 7, cp, incl); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutEpoch(ctx, l, 7, append(cp, 'x'), incl); !errors.Is(err, ErrConflict) {
		t.Fatalf("PutEpoch of another checkpoint: %v, want ErrConflict", err)
	}
	gotCP, gotIncl, err := s.GetEpoch(ctx, 7)
	if err != nil || !bytes.Equal(gotCP, cp) || len(gotIncl) != 2 || !bytes.Equal(gotIncl[1], incl[1]) {
		t.Fatalf("GetEpoch: %q %x %v", gotCP, gotIncl, err)
	}
	if err := s.PutEpoch(ctx, l, 8, cp, [][]byte{{1, 2}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("PutEpoch with a short hash: %v, want ErrInvalid", err)
	}
	// Fenced: once the lease is released, nothing is stored.
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.PutEpoch(ctx, l, 9, cp, incl); !errors.Is(err, lease.ErrFenced) {
		t.Fatalf("PutEpoch after release: %v, want lease.ErrFenced", err)
	}
	if _, err := db.ExecContext(ctx, "UPDATE kt_epoch SET inclusion = 'abc' WHERE log_index = 7"); err != nil {
		t.Fatal(err)
	}
	var corrupt *CorruptError
	if _, _, err := s.GetEpoch(ctx, 7); !errors.As(err, &corrupt) {
		t.Fatalf("GetEpoch of a tampered proof: %v, want *CorruptError", err)
	}
}
