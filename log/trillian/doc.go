// Package trillian is the scale-out backend of [log.Log]: the log's entries
// live in a Trillian tree, served by trillian_log_server and integrated by
// trillian_log_signer over MariaDB/MySQL (Trillian v1.8.0's gRPC API).
//
// Trillian stores, orders and hashes the entries and serves proofs. This
// package adds what Trillian does not do: it signs C2SP tlog-checkpoints
// (Trillian's own SignedLogRoot is not one, and is unsigned since v1.4),
// gathers witness cosignatures, checks that every tree it publishes extends
// the previous one, and bounds all reads by the published checkpoint.
//
// # Durability
//
// [Log.Append] returns once every entry is durable and its index final:
//
//  1. QueueLeaf has committed the entry to Trillian's queue (one database
//     transaction writing the LeafData and Unsequenced rows), and
//  2. trillian_log_signer has sequenced it: the transaction that assigns
//     its index (SequencedLeafData) and stores the new tree head has
//     committed. Append learns the index by reading the newly sequenced
//     leaves back (GetLeavesByRange) and matching their RFC 6962 leaf
//     hashes; one reader serves all waiting Appends.
//
// "Committed" means what the database promises: with InnoDB's default
// innodb_flush_log_at_trx_commit=1 a committed transaction survives a
// crash of the database server. With replicas, only failover to a replica
// that has the transaction (semi-synchronous replication) keeps this
// guarantee.
//
// # Throughput, order and duplicates
//
// Trillian v1.8.0 has no batch QueueLeaves call: every entry costs one
// QueueLeaf round trip and one database transaction. Append therefore
// queues the entries of a call concurrently, with at most
// Config.QueueParallelism QueueLeaf calls in flight over all Appends, so
// that the database commits many of them per log flush, and then waits for
// the signer to sequence them all. Throughput comes from that concurrency
// and from large signer batches; an Append's latency is mostly the signer's
// --sequencer_interval.
//
// Trillian sequences queued entries by their queue timestamp, and
// concurrent transactions commit in any order, so the indices of one call
// are distinct but neither consecutive nor in the order of the entries, and
// concurrent calls interleave, as [log.Appender] allows. Because Append
// returns only once every entry is sequenced, an entry appended after an
// earlier call returned gets a larger index, whatever the clocks of
// Trillian's servers do.
//
// Identical entries within one call are queued once and get the same index.
// Trillian's MySQL storage deduplicates by leaf identity hash, which this
// package leaves at Trillian's default, the RFC 6962 leaf hash: appending an
// entry that is already queued or logged returns the index of the earlier
// copy. (Trillian's in-memory test storage does not deduplicate.) The
// protocol's entries are unique by construction, so this only matters for
// retries, which it makes idempotent.
//
// # Checkpoints
//
// New publishes a checkpoint of Trillian's current root before it returns;
// afterwards a background goroutine turns Trillian's latest root into a
// signed checkpoint every Config.CheckpointInterval when the tree has grown.
// Before publishing, it checks the new root against the published one with
// a consistency proof. A tree that shrank, a different root at the same
// size, or a proof that does not verify is a fork: the Log returns a
// [*ForkError] carrying the evidence from Append and Await, publishes
// nothing more, and keeps serving reads under its last good checkpoint. The
// Log persists nothing itself: after a restart it starts from Trillian's
// current root, and the continuity across restarts is checked by the
// witnesses, which remember the size they last cosigned and demand a
// consistency proof from it.
//
// With Config.WitnessPolicy, a checkpoint is published only once the
// policy's quorum has cosigned it (package [github.com/keytrans/kt/log/witness]);
// until then the previous checkpoint stays published.
//
// # tlog-tiles
//
// [Log.TilesHandler] serves the log as a C2SP tlog-tiles log, as the
// embedded backend does: the published checkpoint, and the entry bundles
// and hash tiles of its tree, computed from the entries Trillian returns
// (package [github.com/keytrans/kt/log/tlogtiles]), full tiles cached in
// memory bounded by Config.TileCacheTiles. Tiles depend only on the
// entries: they are byte for byte those of the embedded backend for the
// same entries. After a restart the cache is empty, and the first request
// on the right edge of the tree reads the whole log once.
//
// # Tree lifecycle
//
// A log is one Trillian tree of type LOG. Create it once, with [CreateTree]
// (ktctl, or Config.CreateTree for tests and first starts) or with
// Trillian's createtree (--tree_type=LOG --max_root_duration=0), then
// configure its ID for every start: another ID is another, empty log. New
// refuses trees that are not ACTIVE, not of type LOG, or not initialised.
// Trillian's updatetree freezes a tree (appends then fail) and deletetree
// soft-deletes it; trillian_log_server garbage-collects deleted trees after
// --tree_delete_threshold, so keep backups of the database.
//
// # What to configure
//
// On the Trillian side: trillian_log_server and trillian_log_signer with
// --storage_system=mysql --quota_system=mysql --mysql_uri=...; one signer
// with --force_master, or several with etcd election. Load Trillian's
// schema (storage/mysql/schema/storage.sql of the pinned module) into the
// database first. The settings that matter for appends:
//
//   - the signer's --sequencer_interval is most of an Append's latency: an
//     entry waits on average half an interval for the next pass, then for
//     the pass itself. Shorter intervals cost CPU even when idle (each pass
//     lists the trees and reads each tree's head). Trillian's default is
//     100ms; the tests run 20ms.
//   - the signer's --batch_size bounds the throughput to batch_size entries
//     per interval; Trillian's default of 1000 is far above what QueueLeaf
//     sustains, so it only matters when catching up on a backlog.
//   - --num_sequencers parallelises over trees, not within one: it does not
//     help a single log.
//   - trillian_log_server's --mysql_max_idle_conns should be about
//     Config.QueueParallelism times the number of Logs writing through it
//     (Go's default keeps 2 idle connections, so the server reconnects for
//     most concurrent calls), and --mysql_max_conns must leave room for
//     them within the database's max_connections.
//   - --quota_system=mysql costs each QueueLeaf two more queries, to count
//     the queue; --mysql_quota_min_batch_size amortises them.
//
// Every QueueLeaf is a gRPC call and two database transactions (the tree's
// configuration, then the entry), so on small machines the CPU of
// trillian_log_server and the database bounds the throughput, not this
// package.
//
// On this side: [Config] documents every field. Set Config.MaxPollInterval
// to at most half the signer's --sequencer_interval, and
// Config.CheckpointInterval to how stale a published checkpoint may be
// (each publication costs a signature and, with witnesses, a round of
// requests to them).
package trillian
