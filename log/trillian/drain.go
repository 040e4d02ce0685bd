package trillian

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Unsequenced returns how many leaves are queued in the tree and not yet
// sequenced, read from Trillian's own MySQL table (Unsequenced, in the
// schema of Trillian v1.8.0, storage/mysql/schema/storage.sql). Trillian's
// gRPC API has no such call; db must be a connection to Trillian's
// database, with read access.
//
// A directory writer taking over from a deposed one uses it as a barrier
// (docs/design.md section 17.1, step 2): once the deposed writer can no
// longer queue leaves, zero unsequenced leaves means that nothing it queued
// can still be sequenced after the new writer's first entry.
//
// SPEC(design.md 17.1 step 2)
func Unsequenced(ctx context.Context, db *sql.DB, treeID int64) (int64, error) {
	var n int64
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM Unsequenced WHERE TreeId = ?", treeID).Scan(&n); err != nil {
		return 0, fmt.Errorf("trillian: counting unsequenced leaves of tree %d: %w", treeID, err)
	}
	return n, nil
}

// ErrQueueDeadline: an Append under [log.WithQueueDeadline] reached the
// deadline before it had queued every entry. Some entries may be queued.
var ErrQueueDeadline = errors.New("trillian: queue deadline reached")

// Sequenced returns the size of the tree as Trillian reports it now,
// which may be ahead of the published checkpoint. A new writer waits, once
// the queue is drained, for a checkpoint of this size (Await(size-1))
// before it replays the log's tail.
func (l *Log) Sequenced(ctx context.Context) (uint64, error) {
	root, err := l.latestRoot(ctx)
	if err != nil {
		return 0, err
	}
	return root.TreeSize, nil
}

// Drain is step 2 of a directory writer's takeover (docs/design.md section
// 17.1): it waits, polling every poll, until the tree has no unsequenced
// leaves (db is Trillian's database, see [Unsequenced]), then until this
// Log has published a checkpoint covering every leaf Trillian has
// sequenced. Call it only once the previous writer can no longer queue
// leaves (its lease deadline has passed). While no signer is master the
// queue does not drain: Drain waits (up to the signers' election TTL).
//
// SPEC(design.md 17.1 step 2)
func (l *Log) Drain(ctx context.Context, db *sql.DB, poll time.Duration) error {
	for {
		n, err := Unsequenced(ctx, db, l.treeID)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		if err := sleep(ctx, poll); err != nil {
			return fmt.Errorf("trillian: draining the queue (%d leaves left): %w", n, err)
		}
	}
	size, err := l.Sequenced(ctx)
	if err != nil {
		return err
	}
	if size == 0 {
		return nil
	}
	if _, err := l.Await(ctx, size-1); err != nil {
		return fmt.Errorf("trillian: waiting for a checkpoint of size %d: %w", size, err)
	}
	return nil
}
