// Package payloadstore keeps the part of the directory's state that the log
// does not hold, the payload of each change record (the record, its
// commitment opening and its device set), in a MariaDB/MySQL table shared
// by every directory instance (docs/design.md section 17.1).
//
// The writer stores a record's payload before it appends the record to the
// log, in a transaction fenced by its writer lease ([lease.Lease.Fence]), so
// that a deposed writer cannot store payloads after its successor took
// over. Readers (every instance, while following the log) fetch the
// payloads of the records they apply.
//
// Nothing read from the table is trusted: [Store.Get] checks that the
// record hashes to the requested leaf hash (RFC 6962), that it parses as a
// change record, and that the opening and device set open its commitment
// ([api.OpenCommitment], which also checks rule R7). A tampered or
// corrupted row yields a *CorruptError, never a payload.
package payloadstore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/directory/lease"
)

// Errors; test with errors.Is.
var (
	// ErrNotFound: no payload for the leaf hash.
	ErrNotFound = errors.New("payloadstore: no payload for this record")
	// ErrConflict: a different payload is already stored for the record.
	ErrConflict = errors.New("payloadstore: a different payload is stored for this record")
	// ErrInvalid: a payload offered to Put does not check out.
	ErrInvalid = errors.New("payloadstore: invalid payload")
)

// CorruptError reports a stored row that does not check out.
type CorruptError struct {
	Leaf   [32]byte
	Reason error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("payloadstore: stored payload of record %x is corrupt: %v", e.Leaf[:8], e.Reason)
}

func (e *CorruptError) Unwrap() error { return e.Reason }

// Schema creates the payload table if it does not exist.
const Schema = `CREATE TABLE IF NOT EXISTS kt_payload (
  leaf_hash  BINARY(32) NOT NULL PRIMARY KEY,
  record     MEDIUMBLOB NOT NULL,
  opening    BINARY(32) NOT NULL,
  device_set MEDIUMBLOB NOT NULL,
  token      BIGINT UNSIGNED NOT NULL
) ENGINE=InnoDB`

// EpochSchema creates the epoch checkpoint table if it does not exist: for
// each epoch record (by log index), the epoch checkpoint the writer
// published for it and the record's inclusion proof, which readers serve
// lookups with (see [Store.PutEpoch]).
const EpochSchema = `CREATE TABLE IF NOT EXISTS kt_epoch (
  log_index  BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  checkpoint MEDIUMBLOB NOT NULL,
  inclusion  BLOB NOT NULL,
  token      BIGINT UNSIGNED NOT NULL
) ENGINE=InnoDB`

// CreateTable creates the payload and epoch checkpoint tables if they do
// not exist.
func CreateTable(ctx context.Context, db *sql.DB) error {
	for _, q := range []string{Schema, EpochSchema} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("payloadstore: creating table: %w", err)
		}
	}
	return nil
}

// Payload is what the log does not hold about one change record.
type Payload struct {
	// Record is the change record's encoding, as appended to the log.
	Record []byte
	// Opening and DeviceSet open the record's commitment.
	Opening   [32]byte
	DeviceSet []byte
}

// Leaf is the record's RFC 6962 leaf hash, the payload's key.
func (p *Payload) Leaf() [32]byte { return api.LeafHash(p.Record) }

// check parses the record and opens its commitment.
//
// SPEC(design.md 17.1)
func (p *Payload) check() error {
	r, err := api.ParseChangeRecord(p.Record)
	if err != nil {
		return err
	}
	_, err = api.OpenCommitment(r, p.Opening, p.DeviceSet)
	return err
}

// Store is the payload table. Its methods are safe for concurrent use.
type Store struct {
	db *sql.DB
}

// New returns the store over db, which must hold the kt_payload table
// (CreateTable) and, for Put, kt_lease.
func New(db *sql.DB) *Store { return &Store{db: db} }

// begin starts a transaction fenced by the writer's lease l
// ([lease.Lease.Fence]): it fails with lease.ErrFenced unless l's term is
// current. The caller commits the transaction or rolls it back.
func (s *Store) begin(ctx context.Context, l *lease.Lease) (*sql.Tx, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("payloadstore: %w", err)
	}
	if err := l.Fence(ctx, tx); err != nil {
		tx.Rollback()
		return nil, err
	}
	return tx, nil
}

// Put stores payloads in one transaction fenced by the writer's lease: it
// fails with lease.ErrFenced, storing nothing, unless l's term is current.
// Each payload must check out (ErrInvalid otherwise). Storing a payload
// that is already stored, byte for byte, is a no-op (retries are
// idempotent); a different payload for the same record fails with
// ErrConflict and stores nothing.
//
// SPEC(design.md 17.1)
func (s *Store) Put(ctx context.Context, l *lease.Lease, ps []Payload) error {
	for i := range ps {
		if err := ps[i].check(); err != nil {
			return fmt.Errorf("%w: payload %d: %w", ErrInvalid, i, err)
		}
	}
	if len(ps) == 0 {
		return nil
	}
	tx, err := s.begin(ctx, l)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var (
		q    strings.Builder
		args []any
	)
	q.WriteString("INSERT IGNORE INTO kt_payload (leaf_hash, record, opening, device_set, token) VALUES ")
	for i := range ps {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?, ?, ?, ?)")
		leaf := ps[i].Leaf()
		args = append(args, leaf[:], ps[i].Record, ps[i].Opening[:], ps[i].DeviceSet, l.Token())
	}
	res, err := tx.ExecContext(ctx, q.String(), args...)
	if err != nil {
		return fmt.Errorf("payloadstore: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("payloadstore: %w", err)
	} else if n != int64(len(ps)) {
		// Some rows existed: they must be the same payloads.
		for i := range ps {
			leaf := ps[i].Leaf()
			var rec, opening, ds []byte
			err := tx.QueryRowContext(ctx, "SELECT record, opening, device_set FROM kt_payload WHERE leaf_hash = ?", leaf[:]).Scan(&rec, &opening, &ds)
			if err != nil {
				return fmt.Errorf("payloadstore: reading back record %x: %w", leaf, err)
			}
			if !bytes.Equal(rec, ps[i].Record) || !bytes.Equal(opening, ps[i].Opening[:]) || !bytes.Equal(ds, ps[i].DeviceSet) {
				return fmt.Errorf("%w: record %x", ErrConflict, leaf)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("payloadstore: %w", err)
	}
	return nil
}

// Get returns the payload of the record with this leaf hash, checked: the
// stored record must hash to leaf, parse, and be opened by the stored
// opening and device set. It fails with ErrNotFound, or a *CorruptError.
func (s *Store) Get(ctx context.Context, leaf [32]byte) (*Payload, error) {
	return get(ctx, s.db, leaf)
}

// SPEC(design.md 17.1)
func get(ctx context.Context, q *sql.DB, leaf [32]byte) (*Payload, error) {
	var (
		p       Payload
		opening []byte
	)
	err := q.QueryRowContext(ctx, "SELECT record, opening, device_set FROM kt_payload WHERE leaf_hash = ?", leaf[:]).Scan(&p.Record, &opening, &p.DeviceSet)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %x", ErrNotFound, leaf)
	}
	if err != nil {
		return nil, fmt.Errorf("payloadstore: %w", err)
	}
	if len(opening) != len(p.Opening) {
		return nil, &CorruptError{Leaf: leaf, Reason: fmt.Errorf("opening has %d bytes", len(opening))}
	}
	copy(p.Opening[:], opening)
	if p.Leaf() != leaf {
		return nil, &CorruptError{Leaf: leaf, Reason: errors.New("the stored record does not hash to its key")}
	}
	if err := p.check(); err != nil {
		return nil, &CorruptError{Leaf: leaf, Reason: err}
	}
	return &p, nil
}

// PutEpoch stores, fenced by the writer's lease, the epoch checkpoint of
// the epoch record at logIndex (a signed checkpoint of size logIndex+1)
// and the record's inclusion proof in it. Readers cannot recreate it: the
// log's checkpoint of exactly that size is published only until the
// writer's next append, and a witnessed checkpoint carries cosignatures.
// Storing the same again is a no-op; a different one fails with
// ErrConflict. Nothing is checked here: readers check what they read
// (signature, size, inclusion), see [Store.GetEpoch].
//
// SPEC(design.md 17.1)
func (s *Store) PutEpoch(ctx context.Context, l *lease.Lease, logIndex uint64, checkpoint []byte, inclusion [][]byte) error {
	incl := bytes.Join(inclusion, nil)
	for _, h := range inclusion {
		if len(h) != 32 {
			return fmt.Errorf("%w: inclusion proof hash of %d bytes", ErrInvalid, len(h))
		}
	}
	tx, err := s.begin(ctx, l)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, "INSERT IGNORE INTO kt_epoch (log_index, checkpoint, inclusion, token) VALUES (?, ?, ?, ?)", logIndex, checkpoint, incl, l.Token())
	if err != nil {
		return fmt.Errorf("payloadstore: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("payloadstore: %w", err)
	} else if n != 1 {
		var cp, in []byte
		if err := tx.QueryRowContext(ctx, "SELECT checkpoint, inclusion FROM kt_epoch WHERE log_index = ?", logIndex).Scan(&cp, &in); err != nil {
			return fmt.Errorf("payloadstore: reading back epoch at %d: %w", logIndex, err)
		}
		if !bytes.Equal(cp, checkpoint) || !bytes.Equal(in, incl) {
			return fmt.Errorf("%w: epoch checkpoint at log index %d", ErrConflict, logIndex)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("payloadstore: %w", err)
	}
	return nil
}

// GetEpoch returns the stored epoch checkpoint of the epoch record at
// logIndex and its inclusion proof, unchecked: the caller verifies the
// checkpoint's signature, that its size is logIndex+1 and that the proof
// includes the record. It fails with ErrNotFound, or a *CorruptError when
// the proof is not a list of 32-byte hashes.
//
// SPEC(design.md 17.1)
func (s *Store) GetEpoch(ctx context.Context, logIndex uint64) (checkpoint []byte, inclusion [][]byte, err error) {
	var in []byte
	err = s.db.QueryRowContext(ctx, "SELECT checkpoint, inclusion FROM kt_epoch WHERE log_index = ?", logIndex).Scan(&checkpoint, &in)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("%w: epoch at log index %d", ErrNotFound, logIndex)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("payloadstore: %w", err)
	}
	if len(in)%32 != 0 {
		return nil, nil, &CorruptError{Reason: fmt.Errorf("the inclusion proof of the epoch at log index %d has %d bytes", logIndex, len(in))}
	}
	inclusion = [][]byte{}
	for ; len(in) > 0; in = in[32:] {
		inclusion = append(inclusion, bytes.Clone(in[:32]))
	}
	return checkpoint, inclusion, nil
}
