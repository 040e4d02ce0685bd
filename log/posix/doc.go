// Package posix is the embedded [log.Log] backend: Tessera's POSIX driver
// (github.com/transparency-dev/tessera/storage/posix, v1.0.4) storing the
// log in one data directory, with no external service.
//
// # On-disk layout
//
// The data directory is a C2SP tlog-tiles log, which [Log.TilesHandler]
// serves as is:
//
//	checkpoint                      published checkpoint (signed note, with cosignatures)
//	tile/<L>/<N>[.p/<W>]            hash tiles, 256 hashes of 32 bytes when full
//	tile/entries/<N>[.p/<W>]        entry bundles: uint16 big-endian length + entry, repeated
//	.state/treeState                integrated tree size and root (JSON), Tessera-private
//	.state/version, .state/*.lock   Tessera's format version and fcntl locks
//	.kt.lock                        flock held by the open Log (one process per directory)
//
// <N> is the tile index in 3-digit groups (x001/x234/067), .p/<W> marks a
// partial tile of width W. Tessera writes every file atomically (temporary
// file, rename) and durably (O_SYNC data, fsync of the directory). Partial
// tiles of old sizes are garbage-collected once the full tile exists.
// Crashed writes can leave temporary files (a target name followed by
// digits) and tiles beyond the durable tree size; both are ignored, and the
// latter are overwritten when the log grows over them.
//
// # Durability
//
// [Log.Append] returns only when Tessera has resolved the entries' index
// futures, and Tessera's POSIX driver resolves them only after the batch's
// entry bundles, hash tiles and tree state are written and synced (the
// argument, with references into Tessera's code, is on [Log.Append]). A
// process crash or power loss after Append returns therefore never loses
// the entries or changes their indices; on restart Tessera resumes
// sequencing at the durable tree size. The crash test in this package
// kills a writer with SIGKILL under load and checks every acknowledged
// entry, the checkpoint signature, an independently recomputed root and
// consistency with the checkpoints seen before the crash. SIGKILL exercises
// the ordering of writes, not the fsyncs themselves (the page cache
// survives a process crash); surviving power loss rests on the fsync
// argument above and on the file system honouring fsync.
//
// # Publication
//
// Tessera publishes a checkpoint for the durable tree state at most every
// CheckpointInterval. With a witness policy, a checkpoint is published only
// after the policy's quorum cosigned it (C2SP tlog-witness), and it is
// published with those cosignatures; until then readers keep seeing the
// previous one. All reads ([Log.Entries], proofs, tiles) are bounded by the
// latest published checkpoint, so readers never see entries that no
// published checkpoint commits to.
package posix
