package auditor

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Store is the auditor's durable state, in Pebble. Every write is synced
// before it returns. Keys, per log origin O (a 0x00 separates the parts):
//
//	r O          replay state (replay.Engine.MarshalBinary)
//	w O          latest checkpoint cosigned as a witness (the note)
//	f O          frozen: why the auditor stopped cosigning O (text)
//	e O id       an evidence bundle (kt-evidence/v1); id = hex SHA-256
//	v O index r  a violation found by the replay (JSON): index as 8 bytes,
//	             then the rule
//
// The store is not shared: Pebble locks its directory, so one process
// opens it at a time.
type Store struct {
	db *pebble.DB
}

// OpenStore opens or creates the store in dir.
func OpenStore(dir string) (*Store, error) {
	db, err := pebble.Open(dir, &pebble.Options{
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             quietLogger{},
	})
	if err != nil {
		return nil, fmt.Errorf("auditor: opening store in %s: %w", dir, err)
	}
	return &Store{db: db}, nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)      {}
func (quietLogger) Errorf(f string, a ...any) { slog.Error("pebble: " + fmt.Sprintf(f, a...)) }
func (quietLogger) Fatalf(f string, a ...any) { panic(fmt.Sprintf("pebble: "+f, a...)) }

const (
	kindReplay    = 'r'
	kindWitness   = 'w'
	kindFrozen    = 'f'
	kindEvidence  = 'e'
	kindViolation = 'v'
)

func key(kind byte, origin string, rest ...[]byte) []byte {
	k := append([]byte{kind, 0}, origin...)
	k = append(k, 0)
	for _, r := range rest {
		k = append(k, r...)
	}
	return k
}

func (s *Store) get(k []byte) ([]byte, error) {
	v, c, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("auditor: store: %w", err)
	}
	out := slices.Clone(v)
	c.Close()
	return out, nil
}

// write applies the sets (key, value pairs; a nil value deletes) in one
// synced batch.
func (s *Store) write(kvs ...[]byte) error {
	b := s.db.NewBatch()
	defer b.Close()
	for i := 0; i+1 < len(kvs); i += 2 {
		var err error
		if kvs[i+1] == nil {
			err = b.Delete(kvs[i], nil)
		} else {
			err = b.Set(kvs[i], kvs[i+1], nil)
		}
		if err != nil {
			return fmt.Errorf("auditor: store: %w", err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("auditor: store: %w", err)
	}
	return nil
}

// list returns the values of every key with the given prefix, in key order.
func (s *Store) list(prefix []byte) ([][]byte, error) {
	upper := slices.Clone(prefix)
	upper = append(upper, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("auditor: store: %w", err)
	}
	defer it.Close()
	var out [][]byte
	for it.First(); it.Valid(); it.Next() {
		out = append(out, slices.Clone(it.Value()))
	}
	return out, it.Error()
}

// Count returns the number of keys in the store, for tests that check that
// bad input stored nothing.
func (s *Store) Count() (int, error) {
	it, err := s.db.NewIter(nil)
	if err != nil {
		return 0, err
	}
	defer it.Close()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		n++
	}
	return n, it.Error()
}

// Unfreeze clears the frozen mark of origin: the operator's action after
// evidence (see auditor/README.md). The evidence stays. The daemon must not
// be running (the store is locked while it runs).
//
// SPEC(design.md 15)
func (s *Store) Unfreeze(origin string) (bool, error) {
	v, err := s.get(key(kindFrozen, origin))
	if err != nil || v == nil {
		return false, err
	}
	return true, s.write(key(kindFrozen, origin), nil)
}

// ResetWitness forgets the latest checkpoint cosigned for origin, so that
// the witness cosigns the log again from whatever it submits next (with
// old size 0). Part of the operator's action after a fork was resolved.
//
// SPEC(design.md 15)
func (s *Store) ResetWitness(origin string) error {
	return s.write(key(kindWitness, origin), nil)
}
