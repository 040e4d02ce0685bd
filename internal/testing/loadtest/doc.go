// Package loadtest holds benchmarks of the directory through its gRPC edge
// on a loopback listener: a real [directory.Directory] on the posix log
// backend in a temporary directory, served by [grpcserver.New] with rate
// limiting disabled, and driven by gRPC clients in the same process.
//
// The package has no code of its own; everything is in its _test.go files.
// Without -bench, `go test` runs one small smoke test. The benchmarks share
// one directory per process (building it is the slow part) and are meant to
// be run with a fixed iteration count, for example:
//
//	go test ./internal/testing/loadtest -run '^$' -bench GRPC -benchtime 100000x -timeout 30m
//
// KT_BENCH_HANDLES sets the number of handles enrolled through the API
// before the benchmarks run (default 100000); KT_BENCH_CALLERS the number
// of concurrent update callers (default 256); KT_PACED_RATE the request
// rate of BenchmarkGRPCLookupsPaced (default: half the rate
// BenchmarkGRPCLookups reached in the same process, else 5000/s).
//
// Lookups at millions of handles: KT_BENCH_BULK=1 bulk-loads the handles
// with directory.BulkEnroll instead of enrolling them through the API
// (genuine records, VRF outputs, commitments and epochs; see its doc), and
// the lookup benchmarks then draw from them. To keep the load generator's
// garbage collection and CPU out of the server's latencies, run the two
// in separate processes:
//
//	KT_BENCH_SERVE=127.0.0.1:7783 KT_BENCH_HANDLES=1000000 KT_BENCH_DIR=/tmp/d1m go test ./internal/testing/loadtest -run '^$' -bench Serve -timeout 60m
//	KT_BENCH_ADDR=127.0.0.1:7783 KT_BENCH_HANDLES=1000000 go test ./internal/testing/loadtest -run '^$' -bench 'GRPCLookups' -benchtime 200000x
//
// BenchmarkServe logs the server's heap, RSS and CPU time (and, while
// changes arrive, its CPU time per accepted change) every 10s;
// KT_BENCH_DIR keeps its state for the next run (which then skips the
// load), and KT_BENCH_CPUPROFILE writes a CPU profile of its serving
// phase.
//
// The update benchmarks need the handles' signing keys: in the default
// mode they enroll their own; against a BenchmarkServe process
// (KT_BENCH_ADDR) they change its bulk-loaded handles, whose device keys
// are derived from the handle number (poolDevice), after looking up the
// first KT_BENCH_UPDATE_HANDLES of them (default min(KT_BENCH_HANDLES,
// 100000)) for their versions; the server then measures its own CPU per
// update, without the load generator's:
//
//	KT_BENCH_SERVE=127.0.0.1:7783 KT_BENCH_HANDLES=100000 KT_BENCH_DIR=/tmp/d100k go test ./internal/testing/loadtest -run '^$' -bench Serve -timeout 60m
//	KT_BENCH_ADDR=127.0.0.1:7783 KT_BENCH_HANDLES=100000 go test ./internal/testing/loadtest -run '^$' -bench 'GRPCUpdates' -benchtime 1000000x -timeout 60m
//
// BenchmarkGRPCUpdates also reports the share of the time the sequencer
// spent closing epochs (epoch-%, epoch-ms: nothing is appended meanwhile)
// when the directory is in the same process, and writes a CPU profile of
// the timed part alone to KT_BENCH_CPUPROFILE. KT_BENCH_CHECKPOINT_MS sets
// the log's checkpoint interval (default: the posix log's).
package loadtest
