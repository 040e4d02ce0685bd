// Package cluster holds the integration test of the scale-out topology, run
// as processes on loopback: MariaDB (on the machine), etcd (Debian's
// etcd-server), two trillian_log_server and two trillian_log_signer
// processes of the Trillian release go.mod pins, the signers electing a
// master through etcd, the log/trillian backend appending through both
// servers, and an unmodified ktd on the Trillian backend.
//
// Under load it kills the master signer (SIGKILL) and then one log server,
// and checks that the other signer takes over, that every acknowledged
// entry is in the log with identical bytes, that every checkpoint anyone
// saw is consistent with the final one (golang.org/x/mod/sumdb/tlog), and
// that clients reading over the HTTP read API kept verifying throughout.
//
// TestReplicatedFailover runs two ktd binaries in the replicated mode
// (docs/design.md section 17.1) on that cluster, under load from clients
// of the client library, and kills the master signer and then the writing
// ktd: the other ktd must take over without losing or duplicating an
// acknowledged change, and lookups must keep verifying.
//
// TestWriterTakeover exercises the replicated directory's takeover
// protocol with its building blocks (directory/lease, directory/payloadstore,
// the test Follower, trillian.Unsequenced) and two test writers on the same
// cluster. The benchmarks compare the cluster with the embedded default,
// for the log (BenchmarkClusterAppend), for the directory in-process
// (BenchmarkDirectory) and for ktd binaries through gRPC
// (BenchmarkKtdTopologies).
//
// The package has no non-test code; the processes are run by
// [github.com/keytrans/kt/internal/testing/trilliantest].
package cluster
