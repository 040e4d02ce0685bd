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
//	go test ./directory/loadtest -run '^$' -bench GRPC -benchtime 100000x -timeout 30m
//
// KT_BENCH_HANDLES sets the number of handles enrolled through the API
// before the benchmarks run (default 100000); KT_BENCH_CALLERS the number
// of concurrent update callers (default 256); KT_PACED_RATE the request
// rate of BenchmarkGRPCLookupsPaced (default: half the rate
// BenchmarkGRPCLookups reached in the same process, else 5000/s).
package loadtest
