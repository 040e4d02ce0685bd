// Package log is the transparency log under the key transparency directory:
// an append-only sequence of opaque entries, committed to by an RFC 6962
// Merkle tree, whose state is published as C2SP tlog-checkpoint signed notes
// with C2SP tlog-cosignature/v1 cosignatures from witnesses.
//
// # Shape
//
// A backend implements [Log]. Two backends exist:
//
//   - [github.com/keytrans/kt/log/posix]: the embedded default, Tessera's
//     POSIX driver in a data directory, also readable as C2SP tlog-tiles;
//   - [github.com/keytrans/kt/log/trillian]: Trillian log servers and signers
//     over MariaDB/MySQL, for scale-out.
//
// Readers (auditors, tools, clients) only ever see [Reader], whichever backend
// runs, and whether they hold the backend itself or an HTTP client for it
// ([github.com/keytrans/kt/log/logapi]).
//
// # Guarantees
//
// Append returns only once the entries are durable: a crash after Append
// returns never loses them, and their indices never change. An entry is
// visible to readers once a published checkpoint covers it; [Log.Await]
// waits for that. A published checkpoint always satisfies the configured
// witness policy.
package log

import (
	"context"
	"errors"
)

// Reader is the public, read-only view of a log. It is the one read API for
// the log: it behaves the same for every backend and over the network.
//
// Hashes and proofs are raw 32-byte SHA-256 values, as RFC 6962 and
// golang.org/x/mod/sumdb/tlog use them.
type Reader interface {
	// Checkpoint returns the latest published checkpoint: a C2SP
	// tlog-checkpoint signed note, signed by the log's key and carrying the
	// witness cosignatures it was published with.
	Checkpoint(ctx context.Context) ([]byte, error)

	// Entries returns the entries with indices in [start, end). It may return
	// fewer entries than asked for (but at least one) so that callers page
	// through long ranges. end must not exceed the size of the latest
	// published checkpoint; ErrOutOfRange reports otherwise.
	Entries(ctx context.Context, start, end uint64) ([][]byte, error)

	// InclusionProof returns the RFC 6962 inclusion proof for the entry at
	// index in the tree of the given size. size must not exceed the latest
	// published checkpoint.
	InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error)

	// ConsistencyProof returns the RFC 6962 consistency proof between the
	// trees of sizes oldSize and newSize, 0 < oldSize <= newSize. newSize must
	// not exceed the latest published checkpoint. The proof is empty when
	// oldSize == newSize.
	ConsistencyProof(ctx context.Context, oldSize, newSize uint64) ([][]byte, error)
}

// Appender adds entries to a log.
type Appender interface {
	// Append adds entries and returns the index of each once all of them are
	// durable. Indices are distinct, but not necessarily consecutive or in
	// the order of entries: a backend may sequence the entries of one call
	// concurrently. Every entry of a call is sequenced before the call
	// returns, so an entry appended by a later call, once an earlier call has
	// returned, gets a larger index. A single writer therefore knows the next
	// index (the size after the previous call), which epoch records rely on.
	//
	// Entries must be non-empty and at most MaxEntrySize bytes. Backends may
	// deduplicate: appending an entry identical to one already in the log may
	// return that entry's index. The protocol's entries are unique by
	// construction, so callers never depend on either behaviour.
	Append(ctx context.Context, entries [][]byte) ([]uint64, error)

	// Await blocks until a published checkpoint has a size greater than index,
	// and returns that checkpoint.
	Await(ctx context.Context, index uint64) ([]byte, error)
}

// Log is a transparency log backend.
type Log interface {
	Reader
	Appender

	// Close stops background work, flushes what was acknowledged, and
	// releases the backend's resources.
	Close(ctx context.Context) error
}

// Integrator is implemented by a backend that knows, after a restart,
// every entry it will ever publish without another Append: the embedded
// backend integrates entries into its tree state before acknowledging
// them, and entries of an Append that a killed process had not integrated
// are gone (nothing else holds them). A caller that recorded an Append in
// flight at the last stop then waits only for IntegratedSize, not for the
// entries that can never appear. (The Trillian backend does not implement
// it: Trillian's signer integrates queued leaves after a restart, so
// entries in flight may still appear there, and waiting for them is
// useful.)
type Integrator interface {
	// IntegratedSize returns the size of the durable tree the backend
	// publishes next: at least the published size, and covering every
	// acknowledged entry.
	IntegratedSize(ctx context.Context) (uint64, error)
}

// MaxEntrySize is the largest entry a log accepts: what a C2SP tlog-tiles
// entry bundle can frame (a 16-bit length). Directory entries are far
// smaller; the bound also keeps hostile input from exhausting memory.
const MaxEntrySize = 1<<16 - 1

// Errors returned by every backend; wrap them with %w and test with
// errors.Is.
var (
	// ErrOutOfRange: an index or tree size beyond the latest published
	// checkpoint, or an inverted range.
	ErrOutOfRange = errors.New("log: index or size out of range")
	// ErrInvalidEntry: an empty or oversized entry.
	ErrInvalidEntry = errors.New("log: invalid entry")
	// ErrNoCheckpoint: nothing has been published yet.
	ErrNoCheckpoint = errors.New("log: no checkpoint published yet")
	// ErrPushback: the backend is overloaded; retry later.
	ErrPushback = errors.New("log: pushback, retry later")
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("log: closed")
)

// CheckEntries validates entries before any backend stores them.
//
// SPEC(design.md 5.1)
func CheckEntries(entries [][]byte) error {
	for i, e := range entries {
		if len(e) == 0 {
			return errorf(ErrInvalidEntry, "entry %d is empty", i)
		}
		if len(e) > MaxEntrySize {
			return errorf(ErrInvalidEntry, "entry %d has %d bytes, more than the limit of %d", i, len(e), MaxEntrySize)
		}
	}
	return nil
}
