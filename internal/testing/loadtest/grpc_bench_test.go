package loadtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/testkit"
)

// Benchmarks through gRPC on loopback; see the package documentation for
// how to run them. Client and server share the machine (and its cores):
// every number includes the client's gRPC and protobuf work, but not the
// building and signing of requests, which happens before the timer starts.

func envInt(name string, def int) int {
	if s := os.Getenv(name); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return n
		}
	}
	return def
}

var (
	// KT_BENCH_UPDATE_RATE: BenchmarkGRPCUpdates offers its changes at
	// this rate (changes/s over all callers) instead of as fast as the
	// callers go; 0: unpaced.
	benchUpdateRate = envInt("KT_BENCH_UPDATE_RATE", 0)
	benchHandles    = envInt("KT_BENCH_HANDLES", 100_000)
	benchCallers    = envInt("KT_BENCH_CALLERS", 256)
	lookupCallers   = envInt("KT_LOOKUP_CALLERS", 32)
	benchConns      = envInt("KT_BENCH_CONNS", 4)
	// KT_BENCH_CACHE_MB: the state store's block cache (ktd's cache_size);
	// 0 keeps directory.DefaultCacheSize.
	benchCacheMB = envInt("KT_BENCH_CACHE_MB", 0)
	// KT_BENCH_CHECKPOINT_MS: the log's checkpoint interval (default the
	// posix log's, 250ms).
	benchCkpt      = time.Duration(envInt("KT_BENCH_CHECKPOINT_MS", 0)) * time.Millisecond
	lastLookupRate atomic.Uint64 // lookups/s reached by BenchmarkGRPCLookups
)

// Where the handles come from (see doc.go):
//   - default: KT_BENCH_HANDLES handles enrolled through gRPC, with their
//     keys kept by the client side (Updates and Visibility need them);
//   - KT_BENCH_BULK=1: bulk-loaded into the in-process directory
//     (directory.BulkEnroll), named bulkName(i); lookups only;
//   - KT_BENCH_ADDR=host:port: a directory served by another process
//     (BenchmarkServe there, with the same KT_BENCH_HANDLES); lookups only.
var (
	benchBulk = os.Getenv("KT_BENCH_BULK") != ""
	benchAddr = os.Getenv("KT_BENCH_ADDR")
)

// shared is the one directory the benchmarks of this process use: built
// on first use and closed by TestMain.
var shared struct {
	sync.Mutex
	s    *server
	hs   []*handle          // nil unless enrolled through the API
	n    int                // handles
	name func(i int) string // name of handle i < n
	err  error
}

func sharedSetup(b *testing.B) {
	b.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.s == nil && shared.err == nil {
		shared.err = func() error {
			s, err := startServer(envConfig{conns: benchConns, remote: benchAddr, ckptInterval: benchCkpt})
			if err != nil {
				return err
			}
			shared.s, shared.n = s, benchHandles
			switch {
			case benchAddr != "":
				shared.name = bulkName
				return nil
			case benchBulk:
				shared.name = bulkName
				took, err := s.bulkLoad(benchHandles, b.Logf)
				b.Logf("bulk-loaded %d handles in %v (%.0f/s)", benchHandles, took.Round(time.Millisecond), float64(benchHandles)/took.Seconds())
				return err
			}
			t0 := time.Now()
			hs, took, err := s.enrollAll("u", benchHandles, benchCallers)
			if err != nil {
				return err
			}
			shared.hs = hs
			shared.name = func(i int) string { return hs[i].name }
			b.Logf("enrolled %d handles through gRPC in %v (%.0f enrollments/s; %v with request building)",
				len(hs), took.Round(time.Millisecond), float64(len(hs))/took.Seconds(), time.Since(t0).Round(time.Millisecond))
			return nil
		}()
	}
	if shared.err != nil {
		b.Fatal(shared.err)
	}
}

// sharedEnv is the shared directory with handles whose keys the client
// side holds (enrolled through the API).
//
// With KT_BENCH_ADDR the handles are KT_BENCH_UPDATE_HANDLES (default
// min(KT_BENCH_HANDLES, 100000)) of the remote server's bulk-loaded ones
// from KT_BENCH_UPDATE_OFFSET (default 0) on, prepared by remoteHandles.
func sharedEnv(b *testing.B) (*server, []*handle) {
	b.Helper()
	sharedSetup(b)
	shared.Lock()
	defer shared.Unlock()
	if shared.hs == nil && benchAddr != "" {
		t0 := time.Now()
		n := envInt("KT_BENCH_UPDATE_HANDLES", min(benchHandles, 100_000))
		// KT_BENCH_UPDATE_OFFSET: start at that bulk-loaded handle, so
		// that two load generators (updates, and a visibility probe)
		// change disjoint handles of one server.
		off := envInt("KT_BENCH_UPDATE_OFFSET", 0)
		if off+n > benchHandles {
			b.Fatalf("KT_BENCH_UPDATE_OFFSET %d + KT_BENCH_UPDATE_HANDLES %d is beyond KT_BENCH_HANDLES %d", off, n, benchHandles)
		}
		hs, err := shared.s.remoteHandles(off, n, lookupCallers)
		if err != nil {
			b.Fatal(err)
		}
		shared.hs = hs
		b.Logf("looked up %d bulk-loaded handles of %s in %v", n, benchAddr, time.Since(t0).Round(time.Millisecond))
	}
	if shared.hs == nil {
		b.Fatal("this benchmark changes handles, so it needs them enrolled through the API (default) or bulk-loaded by a BenchmarkServe process (KT_BENCH_ADDR): unset KT_BENCH_BULK")
	}
	return shared.s, shared.hs
}

// lookupEnv is the shared directory, its number of handles and their
// names.
func lookupEnv(b *testing.B) (*server, int, func(int) string) {
	b.Helper()
	sharedSetup(b)
	return shared.s, shared.n, shared.name
}

// BenchmarkServe is the server side of a two-process run: with
// KT_BENCH_SERVE=host:port it starts the benchmark directory listening
// there, bulk-loads KT_BENCH_HANDLES handles, reports its heap and
// resident memory, and serves (reporting memory and CPU time every 10s)
// until SIGINT or SIGTERM, or KT_BENCH_SERVE_FOR seconds (default 1800).
// With KT_BENCH_DIR the state is kept in that directory, and a later run
// on it serves the handles loaded before instead of loading again; with
// KT_BENCH_CPUPROFILE a CPU profile of the serving phase is written
// there. It measures nothing itself and is skipped without
// KT_BENCH_SERVE.
func BenchmarkServe(b *testing.B) {
	addr := os.Getenv("KT_BENCH_SERVE")
	if addr == "" {
		b.Skip("the server side of a two-process run; set KT_BENCH_SERVE=host:port")
	}
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, time.Now().UTC().Format("15:04:05 ")+f+"\n", a...) }
	t0 := time.Now()
	s, err := startServer(envConfig{conns: 1, addr: addr, dir: os.Getenv("KT_BENCH_DIR"), ckptInterval: benchCkpt})
	if err != nil {
		b.Fatal(err)
	}
	defer s.close()
	logf("directory open in %v", time.Since(t0).Round(time.Millisecond))
	marker := filepath.Join(s.dir, "bench-loaded")
	if m, err := os.ReadFile(marker); s.keep && err == nil {
		if n, _ := strconv.Atoi(strings.TrimSpace(string(m))); n != benchHandles {
			b.Fatalf("%s holds %d bulk-loaded handles, KT_BENCH_HANDLES is %d", s.dir, n, benchHandles)
		}
		logf("reusing the %d handles loaded before in %s", benchHandles, s.dir)
	} else {
		took, err := s.bulkLoad(benchHandles, logf)
		if err != nil {
			b.Fatal(err)
		}
		logf("bulk-loaded %d handles in %v (%.0f/s)", benchHandles, took.Round(time.Second), float64(benchHandles)/took.Seconds())
		if s.keep {
			if err := os.WriteFile(marker, []byte(strconv.Itoa(benchHandles)), 0o600); err != nil {
				b.Fatal(err)
			}
		}
	}
	lastCPU, lastChanges := testkit.CPUTime(), s.epochs.accepted()
	report := func(when string) {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		// CPU per change over the interval: the server's cost of a durable
		// update while a load generator elsewhere sends only changes.
		cpu, changes := testkit.CPUTime(), s.epochs.accepted()
		perChange := ""
		if n := changes - lastChanges; n > 0 {
			perChange = fmt.Sprintf(", %d changes accepted (%.1f CPU-us per change since the last report)", n, float64((cpu-lastCPU).Microseconds())/float64(n))
		}
		lastCPU, lastChanges = cpu, changes
		// Audit mode: how long each epoch served since the last report
		// waited for its audit statements after publication.
		audit := ""
		if w := s.epochs.auditWaits(); len(w) > 0 {
			audit = fmt.Sprintf(", %d epochs served after audit (wait p50 %.0f ms, p99 %.0f ms, max %.0f ms)",
				len(w), ms(percentile(w, 50)), ms(percentile(w, 99)), ms(w[len(w)-1]))
		}
		logf("%s: %d handles, heap in use %.0f MiB, Go total from OS %.0f MiB, RSS %.0f MiB, GC cycles %d, CPU %.1fs%s%s",
			when, benchHandles, float64(m.HeapInuse)/(1<<20), float64(m.Sys)/(1<<20), rssMiB(), m.NumGC, cpu.Seconds(), perChange, audit)
	}
	report("loaded")
	runtime.GC()
	report("loaded, after GC")
	if path := os.Getenv("KT_BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	logf("serving on %s", s.addr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, time.Duration(envInt("KT_BENCH_SERVE_FOR", 1800))*time.Second)
	defer cancel()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			report("stopping")
			return
		case <-t.C:
			report("serving")
		}
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.s != nil {
		if err := shared.s.close(); err != nil {
			fmt.Fprintln(os.Stderr, "closing the shared directory:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// update is one pre-built change and the version it gives its handle.
type update struct {
	h       *handle
	req     *ktpb.ChangeRequest
	version uint64
}

// buildUpdates builds n changes spread round-robin over hs, and splits
// them over callers queues so that each handle belongs to one queue: one
// change per handle in flight, each chaining on the previous one.
func buildUpdates(hs []*handle, n, callers int) ([][]update, error) {
	nh := min(len(hs), n)
	perHandle := make([][]update, nh)
	err := parallel(nh, runtime.GOMAXPROCS(0), func(i int) error {
		for j := i; j < n; j += nh {
			hc, err := hs[i].next()
			if err != nil {
				return err
			}
			perHandle[i] = append(perHandle[i], update{hs[i], &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}}, hs[i].version})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	queues := make([][]update, min(callers, nh))
	for g := range queues {
		for round := 0; ; round++ {
			more := false
			for i := g; i < nh; i += len(queues) {
				if round < len(perHandle[i]) {
					queues[g] = append(queues[g], perHandle[i][round])
					more = true
				}
			}
			if !more {
				break
			}
		}
	}
	return queues, nil
}

// runQueues runs f over every queue, one goroutine per queue, and returns
// the latencies f returns, sorted.
func runQueues(queues [][]update, f func(g int, u update) (time.Duration, error)) ([]time.Duration, error) {
	lats := make([][]time.Duration, len(queues))
	errs := make([]error, len(queues))
	var wg sync.WaitGroup
	for g, q := range queues {
		wg.Go(func() {
			for _, u := range q {
				d, err := f(g, u)
				if err != nil {
					errs[g] = err
					return
				}
				lats[g] = append(lats[g], d)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	all := slices.Concat(lats...)
	slices.Sort(all)
	return all, nil
}

// startProfile writes a CPU profile to KT_BENCH_CPUPROFILE, if set, until
// the returned function is called: unlike -cpuprofile, it leaves out the
// setup (enrollment and building the requests).
func startProfile(b *testing.B) func() {
	path := os.Getenv("KT_BENCH_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Error(err)
		}
	}
}

// BenchmarkGRPCUpdates: durable, authenticated device changes per second
// through gRPC (each adds or removes a device of a registered handle,
// signed by a device of the previous version), from KT_BENCH_CALLERS
// concurrent callers over KT_BENCH_CONNS connections, each caller owning
// its handles and chaining their versions.
func BenchmarkGRPCUpdates(b *testing.B) {
	s, hs := sharedEnv(b)
	queues, err := buildUpdates(hs, b.N, benchCallers)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	stopProfile := startProfile(b)
	b.ResetTimer()
	start, cpu0 := time.Now(), testkit.CPUTime()
	ep0, epTook0 := s.epochs.total()
	var lim *rate.Limiter
	if benchUpdateRate > 0 {
		lim = rate.NewLimiter(rate.Limit(benchUpdateRate), max(1, benchUpdateRate/100))
	}
	lats, err := runQueues(queues, func(g int, u update) (time.Duration, error) {
		if lim != nil {
			if err := lim.Wait(context.Background()); err != nil {
				return 0, err
			}
		}
		t0 := time.Now()
		resp, err := s.client(g).Change(context.Background(), u.req)
		if err != nil {
			return 0, fmt.Errorf("Change %s to version %d: %w", u.h.name, u.version, err)
		}
		if len(resp.GetLogIndices()) != 1 {
			return 0, fmt.Errorf("Change %s: %d log indices, want 1", u.h.name, len(resp.GetLogIndices()))
		}
		return time.Since(t0), nil
	})
	elapsed, cpu := time.Since(start), testkit.CPUTime()-cpu0
	ep1, epTook1 := s.epochs.total()
	b.StopTimer()
	stopProfile()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "updates/s")
	// Closing an epoch stops appends (design.md 7: nothing follows the
	// epoch record until its checkpoint is published); with a remote
	// server the recorder sees nothing.
	if n := ep1 - ep0; n > 0 {
		b.ReportMetric(100*float64(epTook1-epTook0)/float64(elapsed), "epoch-%")
		b.ReportMetric(ms((epTook1-epTook0)/time.Duration(n)), "epoch-ms")
	}
	// CPU time of the process (client and server) per update: what the
	// rate would be if the process had the cores to itself is about
	// GOMAXPROCS/cpu-us-per-update, unless it waits on the disk.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/update")
	b.ReportMetric(ms(percentile(lats, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(lats, 99)), "p99-ms")
}

// BenchmarkGRPCVisibility: the time from a Change call returning to a
// Lookup showing the new version (verified by the client library), for
// b.N updates from KT_BENCH_CALLERS concurrent callers. A watcher polls
// GetEpoch every 5ms; once the served epoch covers the change's log index
// the caller looks the handle up (and again at the next epoch if the
// version is not there yet). The resolution is the 5ms poll plus one
// Lookup round trip; epoch interval and checkpoint interval are the
// defaults (1s and 250ms).
func BenchmarkGRPCVisibility(b *testing.B) {
	s, hs := sharedEnv(b)
	queues, err := buildUpdates(hs, b.N, benchCallers)
	if err != nil {
		b.Fatal(err)
	}
	w := s.watch(5 * time.Millisecond)
	defer w.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b.ResetTimer()
	start := time.Now()
	lats, err := runQueues(queues, func(g int, u update) (time.Duration, error) {
		resp, err := s.client(g).Change(ctx, u.req)
		if err != nil {
			return 0, fmt.Errorf("Change %s to version %d: %w", u.h.name, u.version, err)
		}
		t0 := time.Now()
		idx := resp.GetLogIndices()[0]
		for {
			if err := w.waitBeyond(ctx, idx); err != nil {
				return 0, fmt.Errorf("waiting for log index %d: %w", idx, err)
			}
			lr, err := s.client(g).Lookup(ctx, &ktpb.LookupRequest{Handle: u.h.name})
			seen := time.Since(t0)
			if err != nil {
				return 0, fmt.Errorf("Lookup %s: %w", u.h.name, err)
			}
			res, err := client.VerifyLookup(s.params, nil, u.h.name, lr, time.Now(), nil)
			if err != nil {
				return 0, fmt.Errorf("VerifyLookup %s: %w", u.h.name, err)
			}
			switch v := res.Record.Version; {
			case v == u.version:
				return seen, nil
			case v > u.version:
				return 0, fmt.Errorf("Lookup %s: version %d, want %d", u.h.name, v, u.version)
			}
			time.Sleep(5 * time.Millisecond) // epoch served but older: look again
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "updates/s")
	b.ReportMetric(ms(percentile(lats, 50)), "p50-visible-ms")
	b.ReportMetric(ms(percentile(lats, 99)), "p99-visible-ms")
	b.ReportMetric(ms(lats[len(lats)-1]), "max-visible-ms")
}

// BenchmarkGRPCLookups: lookups with the full proof bundle (known_size 0:
// VRF proof, map proof, record, opening, device set, and the epoch part
// with checkpoint and inclusion proof) of random registered handles among
// KT_BENCH_HANDLES, from KT_LOOKUP_CALLERS concurrent callers. Also
// reports the response size and the process's heap and RSS (client and
// server together in one process, the client side holding the handles'
// keys; the load generator alone with KT_BENCH_ADDR).
func BenchmarkGRPCLookups(b *testing.B) {
	s, nh, name := lookupEnv(b)
	runtime.GC()
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	rss := rssMiB()
	var next atomic.Int64
	lats := make([][]time.Duration, lookupCallers)
	last := make([]*ktpb.LookupResponse, lookupCallers)
	lastHandle := make([]string, lookupCallers)
	var bytesTotal, bytesMax atomic.Int64
	errs := make([]error, lookupCallers)
	b.ResetTimer()
	start, cpu0 := time.Now(), testkit.CPUTime()
	var wg sync.WaitGroup
	for g := range lookupCallers {
		wg.Go(func() {
			c := s.client(g)
			for next.Add(1) <= int64(b.N) {
				h := name(rand.IntN(nh))
				t0 := time.Now()
				resp, err := c.Lookup(context.Background(), &ktpb.LookupRequest{Handle: h})
				if err != nil {
					errs[g] = fmt.Errorf("Lookup %s: %w", h, err)
					return
				}
				lats[g] = append(lats[g], time.Since(t0))
				n := int64(proto.Size(resp))
				bytesTotal.Add(n)
				for m := bytesMax.Load(); n > m && !bytesMax.CompareAndSwap(m, n); m = bytesMax.Load() {
				}
				last[g], lastHandle[g] = resp, h
			}
		})
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), testkit.CPUTime()-cpu0
	b.StopTimer()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	// The answers are real: verify the last one of each caller.
	for g, resp := range last {
		if resp == nil {
			continue
		}
		res, err := client.VerifyLookup(s.params, nil, lastHandle[g], resp, time.Now(), nil)
		if err != nil {
			b.Fatalf("VerifyLookup %s: %v", lastHandle[g], err)
		}
		if !res.Registered {
			b.Fatalf("VerifyLookup %s: not registered", lastHandle[g])
		}
	}
	all := slices.Concat(lats...)
	slices.Sort(all)
	rate := float64(b.N) / elapsed.Seconds()
	lastLookupRate.Store(uint64(rate))
	b.ReportMetric(rate, "lookups/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/lookup") // this process only
	b.ReportMetric(ms(percentile(all, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(all, 99)), "p99-ms")
	b.ReportMetric(float64(bytesTotal.Load())/float64(b.N), "resp-bytes")
	b.ReportMetric(float64(bytesMax.Load()), "max-resp-bytes")
	b.ReportMetric(float64(nh), "handles")
	b.ReportMetric(float64(mem.HeapInuse)/(1<<20), "heap-MiB")
	b.ReportMetric(rss, "rss-MiB")
}

// BenchmarkGRPCLookupsPaced: the latency of full-bundle lookups offered at
// a fixed rate (KT_PACED_RATE, default half of what BenchmarkGRPCLookups
// reached in this process, else 5000/s), open loop: request i is due at
// start + i/rate, and its latency is counted from when it was due, so a
// server that falls behind shows it (no coordinated omission).
func BenchmarkGRPCLookupsPaced(b *testing.B) {
	s, nh, name := lookupEnv(b)
	rate := float64(envInt("KT_PACED_RATE", 0))
	if rate == 0 {
		rate = float64(lastLookupRate.Load()) / 2
	}
	if rate == 0 {
		rate = 5000
	}
	const workers = 256
	interval := time.Duration(float64(time.Second) / rate)
	var next atomic.Int64
	lats := make([][]time.Duration, workers)
	errs := make([]error, workers)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			c := s.client(g)
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				due := start.Add(time.Duration(i) * interval)
				time.Sleep(time.Until(due))
				h := name(rand.IntN(nh))
				if _, err := c.Lookup(context.Background(), &ktpb.LookupRequest{Handle: h}); err != nil {
					errs[g] = fmt.Errorf("Lookup %s: %w", h, err)
					return
				}
				lats[g] = append(lats[g], time.Since(due))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	all := slices.Concat(lats...)
	slices.Sort(all)
	b.ReportMetric(rate, "offered/s")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "lookups/s")
	b.ReportMetric(ms(percentile(all, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(all, 99)), "p99-ms")
	b.ReportMetric(ms(all[len(all)-1]), "max-ms")
}
