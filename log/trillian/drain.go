package trillian

import (
	"context"
	"database/sql"
	"fmt"
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
func Unsequenced(ctx context.Context, db *sql.DB, treeID int64) (int64, error) {
	var n int64
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM Unsequenced WHERE TreeId = ?", treeID).Scan(&n); err != nil {
		return 0, fmt.Errorf("trillian: counting unsequenced leaves of tree %d: %w", treeID, err)
	}
	return n, nil
}
