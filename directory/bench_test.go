package directory

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/smt"
)

// Benchmarks run in-process, without gRPC, on the posix backend:
//
//	go test ./directory -run '^$' -bench . -benchtime 20000x
//	KT_BENCH_HANDLES=1000000 go test ./directory -run '^$' -bench Lookup -benchtime 200000x
//
// KT_BENCH_HANDLES sets the map size of BenchmarkLookup (default 100k):
// that many random leaves are bulk-loaded straight into the map and the
// store (a benchmark-only path; they have no log entries, so the log is not
// auditable), plus 1000 handles enrolled through the API, which are the
// ones looked up.

// benchCallers is the number of concurrent callers of the write
// benchmarks: a directory serves many clients at once, and group commit
// turns their number into the size of each durable batch.
var benchCallers = 256

func init() {
	if s := os.Getenv("KT_BENCH_CALLERS"); s != "" {
		benchCallers, _ = strconv.Atoi(s)
	}
}

func benchEnv(b *testing.B) *env {
	e := newEnv(b, backends[1])
	e.stop()
	e.start2(func(c *Config) { c.EpochInterval, c.HeartbeatInterval = time.Second, 10*time.Second })
	return e
}

// start2 is start with a config hook.
func (e *env) start2(f func(*Config)) {
	e.t.Helper()
	e.log = e.b.open(e.t, e.k, e.logDir)
	cfg := e.config(e.log)
	f(&cfg)
	d, err := New(context.Background(), cfg)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	e.d = d
}

// enrollments builds n signed enrollments of fresh handles.
func enrollments(b *testing.B, e *env, n int, prefix string) ([]*ktpb.EnrollRequest, []*handleState, []*testkit.Device) {
	reqs := make([]*ktpb.EnrollRequest, n)
	hs := make([]*handleState, n)
	ds := make([]*testkit.Device, n)
	var wg sync.WaitGroup
	per := (n + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0)
	for w := 0; w*per < n; w++ {
		wg.Go(func() {
			for i := w * per; i < min(n, (w+1)*per); i++ {
				h := newHandle(b, e.k, fmt.Sprintf("%s%d@bench.example", prefix, i))
				d := testkit.NewDevice()
				var acct [16]byte
				rand.Read(acct[:])
				hc := h.change(api.AuthEnroll, d.Sign, testkit.Set(acct, d), nil)
				h.accepted(hc)
				reqs[i] = &ktpb.EnrollRequest{Change: hc, Credential: e.k.token.IssueToken(h.handle)}
				hs[i], ds[i] = h, d
			}
		})
	}
	wg.Wait()
	return reqs, hs, ds
}

// run calls f(i) for i in [0, n) from c goroutines.
func parallel(n, c int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}

// BenchmarkEnroll: durable enrollments of new handles per second (VRF
// proof, signature, commitment, store, log), 256 concurrent callers.
func BenchmarkEnroll(b *testing.B) {
	e := benchEnv(b)
	reqs, _, _ := enrollments(b, e, b.N, "e")
	b.ResetTimer()
	start := time.Now()
	parallel(b.N, benchCallers, func(i int) {
		if _, err := e.d.Enroll(context.Background(), reqs[i]); err != nil {
			b.Error(err)
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "changes/s")
}

// BenchmarkChange: durable device changes (add a device) per second, 256
// concurrent callers, each change to a distinct registered handle.
func BenchmarkChange(b *testing.B) {
	e := benchEnv(b)
	reqs, hs, ds := enrollments(b, e, b.N, "c")
	parallel(b.N, 256, func(i int) {
		if _, err := e.d.Enroll(context.Background(), reqs[i]); err != nil {
			b.Error(err)
		}
	})
	changes := make([]*ktpb.ChangeRequest, b.N)
	parallel(b.N, runtime.GOMAXPROCS(0), func(i int) {
		d2 := testkit.NewDevice()
		acct := [16]byte(mustSet(reqs[i].Change.DeviceSet).AccountID)
		changes[i] = &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hs[i].change(api.AuthDevice, ds[i].Sign, testkit.Set(acct, ds[i], d2), nil)}}
	})
	b.ResetTimer()
	start := time.Now()
	parallel(b.N, benchCallers, func(i int) {
		if _, err := e.d.Change(context.Background(), changes[i]); err != nil {
			b.Error(err)
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "changes/s")
}

func mustSet(b []byte) *api.DeviceSet {
	s, err := api.ParseDeviceSet(b)
	if err != nil {
		panic(err)
	}
	return s
}

// bulkLoad adds n random leaves to the map and the store (benchmarks
// only: they have no change records in the log).
func bulkLoad(b *testing.B, d *Directory, n int) {
	leaves := make([]smt.Leaf, n)
	for i := range leaves {
		rand.Read(leaves[i].Key[:])
		rand.Read(leaves[i].Value[:])
	}
	var err error
	if ierr := d.inSequencer(func() {
		for lo := 0; lo < n && err == nil; lo += 100_000 {
			bt := d.st.db.NewBatch()
			for _, l := range leaves[lo:min(n, lo+100_000)] {
				bt.Set(leafKey(l.Key), l.Value[:], nil)
			}
			err = bt.Commit(pebble.NoSync)
		}
		for k, v := range d.m.Leaves() {
			leaves = append(leaves, smt.Leaf{Key: k, Value: v})
		}
		var m *smt.Map
		if m, err = smt.New(leaves); err == nil {
			d.m = m
			d.lastEpochAt = time.Time{} // close an epoch now
		}
	}); ierr != nil {
		b.Fatal(ierr)
	}
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLookup: lookups with the full proof bundle (first contact:
// epoch part included) against a map of KT_BENCH_HANDLES handles, from
// parallel callers. Reports lookups/s, the response size and the heap in
// use after a GC.
func BenchmarkLookup(b *testing.B) {
	n := 100_000
	if s := os.Getenv("KT_BENCH_HANDLES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	e := benchEnv(b)
	const real = 1000
	reqs, hs, _ := enrollments(b, e, real, "l")
	var last uint64
	var mu sync.Mutex
	parallel(real, 64, func(i int) {
		r, err := e.d.Enroll(context.Background(), reqs[i])
		if err != nil {
			b.Fatal(err)
		}
		mu.Lock()
		last = max(last, r.LogIndices[0])
		mu.Unlock()
	})
	e.waitEpoch(last)
	t0 := time.Now()
	bulkLoad(b, e.d, n-real)
	for e.d.cur.Load().snap.Len() < uint64(n) {
		time.Sleep(10 * time.Millisecond)
	}
	b.Logf("bulk-loaded %d handles in %v", n, time.Since(t0).Round(time.Millisecond))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	var size atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var ctr atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(ctr.Add(1)) % real
			resp, err := e.d.Lookup(context.Background(), &ktpb.LookupRequest{Handle: hs[i].handle})
			if err != nil {
				b.Error(err)
				return
			}
			if i == 0 {
				size.Store(int64(proto.Size(resp)))
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lookups/s")
	b.ReportMetric(float64(size.Load()), "resp-bytes")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
}
