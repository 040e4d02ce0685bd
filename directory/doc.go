// Package directory is the key transparency directory's core: it checks
// and logs signed changes to device sets, closes epochs, maintains the map,
// and answers lookups and monitoring queries with proof bundles, following
// docs/design.md (sections 6, 7, 8, 12, 13, 16). The gRPC server in
// directory/grpcserver maps this package's domain errors to status codes.
//
// # Write path
//
// A request handler parses and checks each change (handle normalisation,
// VRF index, commitment and R7, account signature, R1 to R6 and the
// account-ID rule against the latest stored state) and queues it. The
// sequencer goroutine re-checks the state-dependent rules when the state
// moved meanwhile (compare and swap on the previous record's leaf hash,
// against the store overlaid with the groups still in the pipeline), then
// commits a group in two stages (commit.go): the openings and device sets
// are written and synced to the embedded store, keyed by leaf hash; then
// the records are appended in one Append call. While one group is being
// appended, the next is checked and its payloads synced, so the payload
// store's fsync overlaps the log's writes; at most one Append is in
// flight, and a group is appended only after its payloads are durable.
// The handle state is stored after Append returns, and only then do the
// callers get their log indices: a caller is answered only once both its
// payload and its record are durable. A group never holds two changes to
// one handle, so a handle's records are in log order whatever order a
// backend gives the entries of one call.
//
// BulkEnroll (bulk.go) feeds the same sequencer with enrollments it builds
// itself, for benchmarks at millions of handles and for seeding.
//
// # Epochs
//
// Every EpochInterval while changes are pending (HeartbeatInterval when
// idle) the sequencer applies the pending changes to the map, appends the
// epoch record whose log size is its own predicted index (a different
// returned index stops the sequencer), waits for the checkpoint of exactly
// that size plus one, and then switches lookups to the new epoch. Nothing
// is appended in between (design.md 7). An epoch falling due while a
// group is in flight waits for it (and for the group prepared meanwhile,
// after which nothing more is prepared), so the epoch covers every change
// already acknowledged or synced.
//
// # Audit mode
//
// With Config.AuditPolicy (audit.go, design.md 14.3) the directory keeps
// two epochs: the published one, which the sequencer (or a replicated
// reader's replay) produces as above, and the served one, which lookups,
// monitoring and GetEpoch answer from. An audit collector posts each
// published epoch checkpoint to the auditors of the policy (POST
// URL/kt/v1/audit), verifies their audit statements with the policy, and
// once a quorum vouched for an epoch serves it, with the statement lines
// appended to its checkpoint note. The served epoch only moves forward;
// until the first one, lookups fail with ErrUnavailable naming the
// auditors waited for. Up to MaxUnservedEpochs published epochs wait for
// statements with their map snapshots. Without an audit policy every
// published epoch is served at once.
//
// # Replicated mode
//
// With Config.Replication (replicated.go, design.md 17.1) several
// instances run on one shared log: each keeps its own store, built by the
// same replay, and only the payloads and epoch checkpoints are shared, in
// MariaDB. The holder of a database lease runs the sequencer above, with
// its payloads also stored, fenced by the lease, before each Append; the
// others follow the log and serve lookups, and one of them takes over when
// the lease expires.
//
// # Decisions where design.md is silent
//
//   - Two changes to one handle in one request are refused
//     (ErrInvalidArgument); across requests they chain, in separate groups.
//   - Enroll accepts only kind 1, Change kinds 2 and 3, Recover kind 4.
//   - The account ID of a new account is chosen by the enrolling client; the
//     directory does not check that an enrollment joining an existing
//     account ID is signed by one of that account's keys.
//   - A Monitor request with a known version above the epoch's latest, or a
//     known size above the epoch checkpoint's, gets ErrOutOfRange (a
//     known size above a replicated reader's epoch: ErrUnavailable); more than
//     MaxMonitorChanges versions at once get ErrResourceExhausted.
//   - Any Append error stops the sequencer (the records' fate is unknown);
//     a restart re-reads the log. The group prepared behind a failed
//     append is not appended; its callers get ErrUnavailable.
//   - The "inflight" mark, synced with each group's payloads, is the log
//     size once every group in the pipeline is appended. A crash after a
//     group's payloads were synced and before it was launched leaves the
//     mark above what the log will ever reach: the next start waits
//     StartupWait for those entries, then proceeds from the log's size
//     (never below it, which could make the directory mispredict indices). A crash between storing payloads and
//     appending leaves orphaned payloads, keyed by leaf hashes no entry has;
//     they are harmless and the change can be sent again. A crash after the
//     append is found by replay at startup.
//   - Lookups of a handle whose opening was lost (store deleted) fail with
//     ErrUnavailable until its next change.
package directory
