package directory

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
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

// benchHandles is the map size KT_BENCH_HANDLES asks for (default 100k).
func benchHandles(b *testing.B) int {
	n := 100_000
	if s := os.Getenv("KT_BENCH_HANDLES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	return n
}

// enrollParallel sends the enrollments from 64 callers and returns the
// largest log index they were given.
func enrollParallel(b *testing.B, e *env, reqs []*ktpb.EnrollRequest) uint64 {
	var last uint64
	var mu sync.Mutex
	parallel(len(reqs), 64, func(i int) {
		r, err := e.d.Enroll(context.Background(), reqs[i])
		if err != nil {
			b.Fatal(err)
		}
		mu.Lock()
		last = max(last, r.LogIndices[0])
		mu.Unlock()
	})
	return last
}

// BenchmarkLookup: lookups with the full proof bundle (first contact:
// epoch part included) against a map of KT_BENCH_HANDLES handles, from
// parallel callers. Reports lookups/s, the response size and the heap in
// use after a GC.
func BenchmarkLookup(b *testing.B) {
	n := benchHandles(b)
	e := benchEnv(b)
	const real = 1000
	reqs, hs, _ := enrollments(b, e, real, "l")
	last := enrollParallel(b, e, reqs)
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

// BenchmarkMonitor: the directory's CPU per owner monitoring poll
// (design.md 13, 13.4), in-process, no gRPC, against a map of
// KT_BENCH_HANDLES handles (default 100k; bulk-loaded as in
// BenchmarkLookup). Sub-benchmarks, all on one directory:
//
//   - poll-quiet: an authorized poll whose known version is the latest and
//     whose known size is the served epoch's, so the answer is the map
//     proof alone (the poll of a device that holds the current epoch);
//   - poll-new-epoch: the same with an older known size, so the answer
//     also carries the epoch part and a consistency proof (the poll of a
//     device whose last poll was several epochs ago);
//   - lookup-known-epoch: a lookup within the epoch the caller holds, for
//     comparison in the same process.
//
// Each reports the process's CPU time per operation (cpu-us/op, user plus
// system, from getrusage) and the response size. The Monitor requests are
// signed before the timer (signing is the device's cost, not the
// directory's); the directory verifies each one's Ed25519 signature.
func BenchmarkMonitor(b *testing.B) {
	n := benchHandles(b)
	e := benchEnv(b)
	const real = 1000
	reqs, hs, ds := enrollments(b, e, real, "m")
	last := enrollParallel(b, e, reqs)
	first := e.waitEpoch(last)
	rec, err := api.ParseEpochRecord(first.GetEpochRecord())
	if err != nil {
		b.Fatal(err)
	}
	oldSize := rec.LogSize + 1
	bulkLoad(b, e.d, n-real)
	for e.d.cur.Load().snap.Len() < uint64(n) {
		time.Sleep(10 * time.Millisecond)
	}
	served := e.d.cur.Load().size
	if served <= oldSize {
		b.Fatalf("no epoch after the bulk load (served size %d, first %d)", served, oldSize)
	}
	sign := func(size uint64) []*ktpb.MonitorRequest {
		out := make([]*ktpb.MonitorRequest, real)
		now := time.Now()
		for i := range out {
			req := &ktpb.MonitorRequest{Index: hs[i].index[:], KnownVersion: 1, KnownSize: size}
			ts := uint64(now.UnixMilli())
			signer, sig := api.SignMonitor(testOrigin, ds[i].Sign, hs[i].index, 1, size, ts)
			req.Auth = &ktpb.MonitorAuth{Signer: signer[:], TimestampMs: ts, Signature: sig[:]}
			out[i] = req
		}
		return out
	}
	measure := func(b *testing.B, call func(i int) (proto.Message, error)) {
		var size atomic.Int64
		var ctr atomic.Int64
		b.ResetTimer()
		cpu0 := testkit.CPUTime()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := int(ctr.Add(1)) % real
				resp, err := call(i)
				if err != nil {
					b.Error(err)
					return
				}
				size.CompareAndSwap(0, int64(proto.Size(resp)))
			}
		})
		cpu := testkit.CPUTime() - cpu0
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/op")
		b.ReportMetric(float64(size.Load()), "resp-bytes")
	}
	b.Run("poll-quiet", func(b *testing.B) {
		polls := sign(served)
		measure(b, func(i int) (proto.Message, error) {
			resp, err := e.d.Monitor(context.Background(), polls[i])
			if err == nil && resp.GetEpoch() != nil {
				err = fmt.Errorf("quiet poll answered with an epoch part")
			}
			return resp, err
		})
	})
	b.Run("poll-new-epoch", func(b *testing.B) {
		polls := sign(oldSize)
		measure(b, func(i int) (proto.Message, error) {
			resp, err := e.d.Monitor(context.Background(), polls[i])
			if err == nil && resp.GetEpoch() == nil {
				err = fmt.Errorf("poll from an older epoch answered without the epoch part")
			}
			return resp, err
		})
	})
	b.Run("lookup-known-epoch", func(b *testing.B) {
		measure(b, func(i int) (proto.Message, error) {
			return e.d.Lookup(context.Background(), &ktpb.LookupRequest{Handle: hs[i].handle, KnownSize: served})
		})
	})
}

// BenchmarkDiskPerHandle: bytes on disk per handle and per further change,
// embedded default (Tessera POSIX log, Pebble state), with 3 devices per
// handle: b.N handles are enrolled through the API (each device set holds
// three devices, so each record has three authorizers), then each handle
// gets one more change (a device re-keyed). After each phase the state
// store is flushed and fully compacted, and both data directories are
// measured. Reports state and log bytes per handle after the enrollments,
// and per change for the second phase.
//
//	go test ./directory -run '^$' -bench DiskPerHandle -benchtime 10000x
func BenchmarkDiskPerHandle(b *testing.B) {
	e := benchEnv(b)
	n := b.N
	hs := make([]*handleState, n)
	devs := make([][3]*testkit.Device, n)
	accts := make([][16]byte, n)
	enrolls := make([]*ktpb.EnrollRequest, n)
	parallel(n, runtime.GOMAXPROCS(0), func(i int) {
		h := newHandle(b, e.k, fmt.Sprintf("d%d@bench.example", i))
		d := [3]*testkit.Device{testkit.NewDevice(), testkit.NewDevice(), testkit.NewDevice()}
		rand.Read(accts[i][:])
		hc := h.change(api.AuthEnroll, d[0].Sign, testkit.Set(accts[i], d[0], d[1], d[2]), nil)
		h.accepted(hc)
		enrolls[i] = &ktpb.EnrollRequest{Change: hc, Credential: e.k.token.IssueToken(h.handle)}
		hs[i], devs[i] = h, d
	})
	b.ResetTimer()
	var last atomic.Uint64
	apply := func(f func(i int) (uint64, error)) {
		parallel(n, benchCallers, func(i int) {
			li, err := f(i)
			if err != nil {
				b.Error(err)
				return
			}
			for {
				old := last.Load()
				if li <= old || last.CompareAndSwap(old, li) {
					break
				}
			}
		})
		e.waitEpoch(last.Load())
	}
	measure := func() (state, sst, logBytes, partial int64, entries uint64) {
		b.StopTimer()
		defer b.StartTimer()
		db := e.d.st.db
		if err := db.Flush(); err != nil {
			b.Fatal(err)
		}
		if err := db.Compact(context.Background(), []byte{0}, []byte{0xff, 0xff}, false); err != nil {
			b.Fatal(err)
		}
		// The live tables, from Pebble's own accounting: files of a
		// compaction's inputs may still be on disk, awaiting deletion.
		return dirBytes(b, e.stateDir), db.Metrics().Total().TablesSize, dirBytes(b, e.logDir), partialBytes(b, e.logDir), e.d.cur.Load().size
	}
	apply(func(i int) (uint64, error) {
		r, err := e.d.Enroll(context.Background(), enrolls[i])
		if err != nil {
			return 0, err
		}
		return r.LogIndices[0], nil
	})
	s1, t1, l1, p1, n1 := measure()
	changes := make([]*ktpb.ChangeRequest, n)
	parallel(n, runtime.GOMAXPROCS(0), func(i int) {
		d := devs[i]
		d2 := d[2].Rekeyed()
		changes[i] = &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hs[i].change(api.AuthDevice, d[0].Sign, testkit.Set(accts[i], d[0], d[1], d2), nil)}}
	})
	apply(func(i int) (uint64, error) {
		r, err := e.d.Change(context.Background(), changes[i])
		if err != nil {
			return 0, err
		}
		return r.LogIndices[0], nil
	})
	s2, t2, l2, p2, n2 := measure()
	b.ReportMetric(float64(l2-p2)/float64(n2), "log-full-B/entry")
	b.ReportMetric(float64(t1)/float64(n), "sst-B/handle")
	b.ReportMetric(float64(t2-t1)/float64(n), "sst-B/change")
	b.ReportMetric(float64(s1)/float64(n), "state-B/handle")
	b.ReportMetric(float64(l1)/float64(n), "log-B/handle")
	b.ReportMetric(float64(l1)/float64(n1), "log-B/entry")
	b.ReportMetric(float64(s2-s1)/float64(n), "state-B/change")
	b.ReportMetric(float64(l2-l1)/float64(n), "log-B/change")
	b.Logf("%d handles: state %d B (tables %d B), log %d B (%d entries, %d B in partial tiles and bundles); after %d changes: state %d B (tables %d B), log %d B (%d entries, %d B partial)", n, s1, t1, l1, n1, p1, n, s2, t2, l2, n2, p2)
}

// partialBytes is the size of the partial tiles and entry bundles of the
// tlog-tiles layout under dir (files below a directory ending in ".p"):
// Tessera keeps one per published size that ended inside a tile, so at a
// small log they are a large share of the directory and at a large one a
// small one.
func partialBytes(b *testing.B, dir string) int64 {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || !strings.HasSuffix(d.Name(), ".p") {
			return err
		}
		total += dirBytes(b, path)
		return filepath.SkipDir
	})
	if err != nil {
		b.Fatal(err)
	}
	return total
}

// dirBytes is the total size of the regular files under dir (with
// suffix, only those whose names end with it).
func dirBytes(b *testing.B, dir string, suffix ...string) int64 {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		if len(suffix) > 0 && !strings.HasSuffix(d.Name(), suffix[0]) {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // an obsolete file Pebble deleted meanwhile
		}
		if err != nil {
			return err
		}
		total += fi.Size()
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return total
}
