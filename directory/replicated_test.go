package directory

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/directory/lease"
	"github.com/keytrans/kt/directory/payloadstore"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/internal/testing/trilliantest"
)

// replicatedPair starts two replicated instances, a (which becomes the
// writer) and b (a reader), over one in-memory log, sharing the lease and
// payload tables in a fresh MariaDB database.
func replicatedPair(t *testing.T) (a, b *env, db *sql.DB) {
	t.Helper()
	return replicatedPairTuned(t, nil)
}

// replicatedPairTuned is replicatedPair with tune applied to both
// instances' configurations.
func replicatedPairTuned(t *testing.T, tune func(*Config)) (a, b *env, db *sql.DB) {
	t.Helper()
	db, err := sql.Open("mysql", trilliantest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := ctxT(t)
	if err := lease.CreateTable(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := payloadstore.CreateTable(ctx, db); err != nil {
		t.Fatal(err)
	}
	k := newKeys(t)
	dir := t.TempDir()
	mk := func(name string) *env {
		e := &env{t: t, k: k, b: backends[0], logDir: filepath.Join(dir, "log"), stateDir: filepath.Join(dir, name)}
		e.tune = func(c *Config) {
			c.Replication = &Replication{
				Lease: lease.Config{DB: db, Name: "directory-writer/test", Holder: name + ":8443 " + e.stateDir,
					Duration: time.Second, Margin: 200 * time.Millisecond},
				Payloads:     payloadstore.New(db),
				Drain:        func(context.Context) error { return nil }, // the memory log has no queue
				PollInterval: 20 * time.Millisecond,
			}
			if tune != nil {
				tune(c)
			}
		}
		e.start()
		t.Cleanup(e.stop)
		return e
	}
	a = mk("a")
	awaitRole(t, a.d, RoleWriter)
	b = mk("b")
	awaitRole(t, b.d, RoleReader)
	return a, b, db
}

func awaitRole(t *testing.T, d *Directory, role string) {
	t.Helper()
	for start := time.Now(); d.Role() != role; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("role %s, want %s", d.Role(), role)
		}
	}
}

// TestReplicated: a reader serves what the writer logged, verified by the
// client library, with payloads from the shared table; it refuses changes
// naming the writer; when the writer closes (releasing its lease) the
// reader takes over, and the handle keeps changing there. The deposed
// writer's lease term is fenced.
func TestReplicated(t *testing.T) {
	a, b, _ := replicatedPair(t)
	ctx := ctxT(t)

	alice := newHandle(t, a.k, "alice@example.com")
	d1, d2 := testkit.NewDevice(), testkit.NewDevice()
	var account [16]byte
	i := a.enroll(alice, d1.Sign, testkit.Set(account, d1))
	res := b.lookup(alice.handle, i) // waits for b's epoch, verifies
	if !res.Registered || res.Version != 1 {
		t.Fatalf("reader: %+v", res)
	}
	// The reader refuses changes, naming the writer.
	hc := alice.change(api.AuthDevice, d1.Sign, testkit.Set(account, d1, d2), nil)
	_, err := b.d.Change(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "a:8443") {
		t.Fatalf("Change at the reader: %v, want ErrUnavailable naming a:8443", err)
	}
	i = a.apply(alice, hc)
	if res := b.lookup(alice.handle, i); res.Version != 2 {
		t.Fatalf("reader serves version %d, want 2", res.Version)
	}
	// Monitoring at the reader: the whole history.
	mresp, err := b.d.Monitor(ctx, signedMonitor(&ktpb.MonitorRequest{Index: alice.index[:]}, d1.Sign, time.Now()))
	if err != nil || len(mresp.GetChanges()) != 2 {
		t.Fatalf("Monitor at the reader: %d changes, %v", len(mresp.GetChanges()), err)
	}
	if applied, size := b.d.Lag(); applied == 0 || applied > size {
		t.Fatalf("reader lag: applied %d, log %d", applied, size)
	}

	// The writer leaves; the reader takes over.
	a.stop()
	awaitRole(t, b.d, RoleWriter)
	hc = alice.change(api.AuthDevice, d2.Sign, testkit.Set(account, d2), nil)
	i = b.apply(alice, hc)
	res = b.lookup(alice.handle, i)
	if res.Version != 3 || len(res.DeviceSet.Devices) != 1 || res.DeviceSet.Devices[0].SigningKey != d2.Pub() {
		t.Fatalf("after the takeover: version %d, %d devices", res.Version, len(res.DeviceSet.Devices))
	}

	// a restarts: it follows the log as a reader, and serves version 3.
	a.start()
	awaitRole(t, a.d, RoleReader)
	if res := a.lookup(alice.handle, i); res.Version != 3 {
		t.Fatalf("restarted a serves version %d, want 3", res.Version)
	}
}

// TestReplicatedLeaseLost: a writer whose lease is taken over stops
// writing, refuses changes with ErrUnavailable and closes Stopped.
func TestReplicatedLeaseLost(t *testing.T) {
	a, b, db := replicatedPair(t)
	// Steal the lease: expire it in the database, as if a's renewals had
	// stopped reaching it.
	if _, err := db.Exec("UPDATE kt_lease SET expires_at = NOW(6) - INTERVAL 1 SECOND"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.d.Stopped():
	case <-time.After(30 * time.Second):
		t.Fatalf("the deposed writer did not stop (role %s)", a.d.Role())
	}
	if !errors.Is(a.d.StopError(), lease.ErrLost) {
		t.Errorf("StopError %v, want lease.ErrLost", a.d.StopError())
	}
	alice := newHandle(t, a.k, "alice@example.com")
	d1 := testkit.NewDevice()
	hc := alice.change(api.AuthEnroll, d1.Sign, testkit.Set([16]byte{}, d1), nil)
	if _, err := a.d.Enroll(ctxT(t), &ktpb.EnrollRequest{Change: hc, Credential: a.k.token.IssueToken(alice.handle)}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Enroll at the deposed writer: %v, want ErrUnavailable", err)
	}
	awaitRole(t, b.d, RoleWriter)
	i := b.enroll(alice, d1.Sign, testkit.Set([16]byte{}, d1))
	if res := b.lookup(alice.handle, i); res.Version != 1 {
		t.Fatalf("new writer serves version %d", res.Version)
	}
}
