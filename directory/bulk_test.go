package directory

import (
	"errors"
	"fmt"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/internal/testing/testkit"
)

// TestBulkEnroll: handles enrolled by the bulk path are ordinary
// enrollments: looked up with verified proofs, changed afterwards through
// Change like any other, and the map rebuilt from the log alone has the
// served root. A handle already enrolled, or a signer outside the set,
// fails the load.
func TestBulkEnroll(t *testing.T) {
	old := bulkChunk
	bulkChunk = 64 // several groups
	t.Cleanup(func() { bulkChunk = old })
	e := newEnv(t, backends[0])
	pool := []*testkit.Device{testkit.NewDevice(), testkit.NewDevice(), testkit.NewDevice()}
	var account [16]byte
	gen := func(i int) BulkHandle {
		d := pool[i%len(pool)]
		return BulkHandle{Handle: fmt.Sprintf("bulk%d@example.com", i), Set: testkit.Set(account, d), Signer: d.Sign}
	}
	const n = 300
	var last int
	if err := e.d.BulkEnroll(ctxT(t), n, gen, func(done int) { last = max(last, done) }); err != nil {
		t.Fatalf("BulkEnroll: %v", err)
	}
	if last != n {
		t.Fatalf("progress reached %d, want %d", last, n)
	}
	// An enrollment through the API after the load: its index is beyond
	// every bulk record.
	bob := newHandle(t, e.k, "bob@example.com")
	i := e.enroll(bob, pool[0].Sign, testkit.Set(account, pool[0]))
	for _, k := range []int{0, 1, 150, n - 1} {
		res := e.lookup(fmt.Sprintf("bulk%d@example.com", k), i)
		if !res.Registered || res.Version != 1 || res.Kind != api.AuthEnroll || len(res.DeviceSet.Devices) != 1 ||
			res.DeviceSet.Devices[0].SigningKey != pool[k%len(pool)].Pub() {
			t.Fatalf("bulk handle %d: registered %v, version %d, kind %v, set %+v", k, res.Registered, res.Version, res.Kind, res.DeviceSet)
		}
	}
	// A bulk-enrolled handle changes through the API like any other.
	res := e.lookup("bulk4@example.com", i)
	h := newHandle(t, e.k, "bulk4@example.com")
	h.version, h.leaf = res.Version, res.LeafHash
	d1, d2 := pool[1], testkit.NewDevice()
	i = e.apply(h, h.change(api.AuthDevice, d1.Sign, testkit.Set(account, d1, d2), nil))
	if res := e.lookup(h.handle, i); res.Version != 2 || len(res.DeviceSet.Devices) != 2 {
		t.Fatalf("after a change: version %d, %d devices", res.Version, len(res.DeviceSet.Devices))
	}

	// Refused loads.
	size := e.d.size
	err := e.d.BulkEnroll(ctxT(t), 1, func(int) BulkHandle {
		return BulkHandle{Handle: "new@example.com", Set: testkit.Set(account, pool[0]), Signer: pool[1].Sign}
	}, nil)
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("bulk enrollment signed outside its set: %v, want ErrUnauthorized", err)
	}
	err = e.d.BulkEnroll(ctxT(t), 1, func(int) BulkHandle { return gen(7) }, nil)
	if !errors.Is(err, ErrStaleVersion) {
		t.Fatalf("bulk enrollment of an enrolled handle: %v, want ErrStaleVersion", err)
	}
	err = e.d.BulkEnroll(ctxT(t), 2, func(int) BulkHandle { return gen(1000) }, nil)
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("one handle twice in a load: %v, want ErrInvalidArgument", err)
	}
	err = e.d.BulkEnroll(ctxT(t), 1, func(int) BulkHandle {
		return BulkHandle{Handle: "not a handle", Set: testkit.Set(account, pool[0]), Signer: pool[0].Sign}
	}, nil)
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("malformed handle: %v, want ErrInvalidArgument", err)
	}
	if e.d.inSequencer(func() {}); e.d.size != size {
		t.Fatalf("refused loads appended %d entries", e.d.size-size)
	}

	// The map rebuilt from the log alone is the served one.
	served := e.waitEpoch(i)
	e.stop()
	root, err := rebuildMap(ctxT(t), e.b.open(t, e.k, e.logDir))
	if err != nil {
		t.Fatalf("rebuildMap: %v", err)
	}
	rec, _ := api.ParseEpochRecord(served.EpochRecord)
	if root != rec.MapRoot {
		t.Fatalf("rebuilt root %x, served %x", root, rec.MapRoot)
	}
}
