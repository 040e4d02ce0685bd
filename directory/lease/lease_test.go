package lease

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/keytrans/kt/internal/testing/trilliantest"
)

// newDB opens a fresh database on the machine's MariaDB (dropped when the
// test ends) with the lease table.
func newDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", trilliantest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := CreateTable(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	return db
}

func cfg(db *sql.DB, holder string, d time.Duration) Config {
	return Config{DB: db, Name: "directory-writer/test", Holder: holder, Duration: d}
}

func TestConfigRejected(t *testing.T) {
	for _, c := range []Config{
		{Name: "n", Holder: "h"},
		{DB: &sql.DB{}, Holder: "h"},
		{DB: &sql.DB{}, Name: "n"},
		{DB: &sql.DB{}, Name: "n", Holder: "h", Duration: time.Millisecond},
		{DB: &sql.DB{}, Name: "n", Holder: "h", Duration: time.Second, Margin: time.Second},
		{DB: &sql.DB{}, Name: "n", Holder: "h", Duration: time.Second, Margin: -1},
	} {
		if _, err := Acquire(context.Background(), c); err == nil {
			t.Errorf("Acquire(%+v) accepted the configuration", c)
		}
	}
}

func TestExclusive(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	a, err := Acquire(ctx, cfg(db, "a", 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if a.Token() != 1 {
		t.Errorf("first token %d, want 1", a.Token())
	}
	_, err = Acquire(ctx, cfg(db, "b", 10*time.Second))
	var held *HeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrHeld) || held.Holder != "a" || held.Token != 1 || held.Remaining <= 0 {
		t.Fatalf("second Acquire: %v, want a HeldError naming a, token 1", err)
	}
	// The holder itself cannot start a second term over a live one.
	if _, err := Acquire(ctx, cfg(db, "a", 10*time.Second)); !errors.Is(err, ErrHeld) {
		t.Fatalf("re-Acquire by the holder: %v, want ErrHeld", err)
	}
	if err := a.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if !a.Valid() || time.Until(a.Deadline()) > 8*time.Second {
		t.Errorf("deadline %v from now, want at most Duration - Margin (8s)", time.Until(a.Deadline()))
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Fence(ctx, tx); err != nil {
		t.Fatalf("Fence of the current term: %v", err)
	}
	tx.Rollback()
}

// TestConcurrentAcquire: of many instances racing for a free lease,
// exactly one wins.
func TestConcurrentAcquire(t *testing.T) {
	db := newDB(t)
	db.SetMaxOpenConns(20)
	ctx := t.Context()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins []string
	)
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			holder := fmt.Sprintf("i%d", i)
			_, err := Acquire(ctx, cfg(db, holder, 10*time.Second))
			switch {
			case err == nil:
				mu.Lock()
				wins = append(wins, holder)
				mu.Unlock()
			case !errors.Is(err, ErrHeld):
				t.Errorf("%s: %v", holder, err)
			}
		}()
	}
	wg.Wait()
	if len(wins) != 1 {
		t.Fatalf("%d winners: %v", len(wins), wins)
	}
}

// TestTakeover: a term that is not renewed expires; the successor gets a
// larger token, and the old holder can neither renew nor pass the fence.
func TestTakeover(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	a, err := Acquire(ctx, cfg(db, "a", 300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b, err := Campaign(ctx, cfg(db, "b", 300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Errorf("b acquired after %v, before a's term could expire", waited)
	}
	if b.Token() <= a.Token() {
		t.Fatalf("successor token %d, not above %d", b.Token(), a.Token())
	}
	if a.Valid() {
		t.Error("a's deadline has not passed although its term expired")
	}
	if err := a.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("old holder's Renew: %v, want ErrLost", err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := a.Fence(ctx, tx); !errors.Is(err, ErrFenced) {
		t.Fatalf("old holder's Fence: %v, want ErrFenced", err)
	}
	if err := b.Fence(ctx, tx); err != nil {
		t.Fatalf("new holder's Fence: %v", err)
	}
}

// TestExpiredNotRenewable: a term that expired cannot be renewed even when
// nobody took the lease: the holder must acquire a new term (and token).
func TestExpiredNotRenewable(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	a, err := Acquire(ctx, cfg(db, "a", 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := a.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("Renew after expiry: %v, want ErrLost", err)
	}
	tx, _ := db.BeginTx(ctx, nil)
	if err := a.Fence(ctx, tx); !errors.Is(err, ErrFenced) {
		t.Fatalf("Fence after expiry: %v, want ErrFenced", err)
	}
	tx.Rollback() // the fence's shared lock would block Acquire
	a2, err := Acquire(ctx, cfg(db, "a", time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if a2.Token() != a.Token()+1 {
		t.Errorf("new term token %d, want %d", a2.Token(), a.Token()+1)
	}
}

// TestRelease hands over at once.
func TestRelease(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	a, err := Acquire(ctx, cfg(db, "a", time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if a.Valid() {
		t.Error("released lease still valid")
	}
	b, err := Acquire(ctx, cfg(db, "b", time.Minute))
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	// Releasing the old term again must not end the new one.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Renew(ctx); err != nil {
		t.Fatalf("new term ended by the old holder's Release: %v", err)
	}
}

// TestFenceBlocksSuccessor: while a fenced transaction is open, no
// successor can acquire the lease, so the transaction's writes land
// before any successor's term begins.
func TestFenceBlocksSuccessor(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	a, err := Acquire(ctx, cfg(db, "a", 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Fence(ctx, tx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a's term expires while tx is open
	acquired := make(chan error, 1)
	var b *Lease
	go func() {
		var err error
		b, err = Acquire(ctx, cfg(db, "b", time.Second))
		acquired <- err
	}()
	select {
	case err := <-acquired:
		t.Fatalf("successor acquired (%v) while the fenced transaction was open", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-acquired; err != nil {
		t.Fatalf("successor after commit: %v", err)
	}
	if b.Token() != a.Token()+1 {
		t.Errorf("successor token %d", b.Token())
	}
}

// TestTamperedRow: a lease row changed behind the holder's back (another
// writer, an operator) fences the holder.
func TestTamperedRow(t *testing.T) {
	db := newDB(t)
	ctx := t.Context()
	a, err := Acquire(ctx, cfg(db, "a", time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		"UPDATE kt_lease SET token = token + 1",
		"UPDATE kt_lease SET token = token - 1, holder = 'x'",
		"DELETE FROM kt_lease",
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			t.Fatal(err)
		}
		tx, _ := db.BeginTx(ctx, nil)
		if err := a.Fence(ctx, tx); !errors.Is(err, ErrFenced) {
			t.Errorf("after %q: Fence %v, want ErrFenced", stmt, err)
		}
		tx.Rollback()
		if err := a.Renew(ctx); !errors.Is(err, ErrLost) {
			t.Errorf("after %q: Renew %v, want ErrLost", stmt, err)
		}
	}
}
