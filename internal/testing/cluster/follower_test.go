package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"

	fmtlog "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/directory/payloadstore"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/smt"
)

// ErrNoEpoch: the Follower has not applied epoch record 0 yet.
var ErrNoEpoch = errors.New("replica: no epoch applied yet")

// ErrNotRegistered: the VRF index has no change record as of the applied
// epoch.
var ErrNotRegistered = errors.New("replica: not registered as of the applied epoch")

// DivergenceError reports a log entry that does not follow from the entries
// before it: it does not parse, or it breaks an epoch rule (an epoch record
// out of sequence, or whose map root or size is not the map the change
// records before it give).
type DivergenceError struct {
	// Index is the log index of the offending entry, Entry its bytes.
	Index uint64
	Entry []byte
	// Reason says what the entry claims and what the Follower computed.
	Reason string
	// Err is the *api.EpochError of the rule broken, or the parse error.
	Err error
}

func (e *DivergenceError) Error() string {
	return fmt.Sprintf("replica: log entry %d does not follow from the log before it: %s", e.Index, e.Reason)
}

// Unwrap returns Err.
func (e *DivergenceError) Unwrap() error { return e.Err }

// A Follower is the reader side of the replicated directory (docs/design.md
// section 17.1) as the takeover test (TestWriterTakeover) needs it: it
// rebuilds, from the log alone, the views a directory instance serves
// lookups from (the map and each VRF index's latest change record), and
// fetches the payloads the log does not hold (opening and device set) from
// the shared [payloadstore].
//
// It advances in whole epochs: the state it exposes is always that of the
// latest epoch record it has applied, whose map root it has recomputed and
// compared with the log's epoch rules (api.CheckEpoch, which the directory
// and the auditor also use), so it never serves a map the log's epoch
// records do not commit to. A broken rule is a *DivergenceError carrying
// the evidence, and the Follower stops.
//
// The directory's own replicated mode (directory.Config.Replication) does
// not use a Follower: it follows the log with the directory's replay code,
// into the same local store a standalone directory serves from.
//
// Its methods are safe for concurrent use; Sync calls are serialised.
type Follower struct {
	r        log.Reader
	origin   string
	verifier note.Verifier
	payloads *payloadstore.Store

	syncMu sync.Mutex // serialises Sync
	// Fields below are written by Sync only (under syncMu) and read by
	// the state accessors under mu.
	m       *smt.Map
	pending []smt.Update
	chain   api.EpochChain // the epoch sequence read so far
	next    uint64         // next log index to read
	failed  error          // sticky divergence

	mu        sync.RWMutex
	snap      *smt.Snapshot // map as of the applied epoch
	epoch     *api.EpochRecord
	epochSize uint64 // log size including the epoch record
}

// NewFollower returns a Follower of the log r, whose checkpoints it
// verifies for origin with v, fetching payloads from ps.
func NewFollower(r log.Reader, origin string, v note.Verifier, ps *payloadstore.Store) *Follower {
	m, _ := smt.New(nil)
	return &Follower{r: r, origin: origin, verifier: v, payloads: ps, m: m}
}

// Sync reads the log up to its current checkpoint (verified) and applies
// every entry, advancing the exposed state at each epoch record. It returns
// the log size it has read. After a *DivergenceError every call returns
// it again.
func (f *Follower) Sync(ctx context.Context) (uint64, error) {
	f.syncMu.Lock()
	defer f.syncMu.Unlock()
	if f.failed != nil {
		return f.next, f.failed
	}
	raw, err := f.r.Checkpoint(ctx)
	if err != nil {
		return f.next, fmt.Errorf("replica: checkpoint: %w", err)
	}
	var cp *fmtlog.Checkpoint
	if cp, _, err = log.ParseCheckpoint(raw, f.origin, f.verifier); err != nil {
		return f.next, fmt.Errorf("replica: %w", err)
	}
	if cp.Size < f.next {
		return f.next, fmt.Errorf("replica: the log's checkpoint has size %d, below the %d entries already read", cp.Size, f.next)
	}
	for f.next < cp.Size {
		es, err := f.r.Entries(ctx, f.next, cp.Size)
		if err != nil {
			return f.next, fmt.Errorf("replica: entries from %d: %w", f.next, err)
		}
		if len(es) == 0 {
			return f.next, fmt.Errorf("replica: no entries returned from %d", f.next)
		}
		for _, e := range es {
			if err := f.apply(f.next, e); err != nil {
				f.failed = err
				return f.next, err
			}
			f.next++
		}
	}
	// The map reflects every entry read (Head); the exposed snapshot stays
	// at the last epoch.
	if _, err := f.m.Apply(f.pending); err != nil {
		return f.next, fmt.Errorf("replica: applying %d changes: %w", len(f.pending), err)
	}
	f.pending = nil
	return f.next, nil
}

// Head returns the map after every entry Sync has read, including change
// records after the last epoch record, and the log size read: what a new
// writer closing an epoch after a takeover commits to (design.md 17.1 step
// 4). Lookups must not use it; they use the applied epoch.
func (f *Follower) Head() (root [32]byte, mapSize, logSize uint64) {
	f.syncMu.Lock()
	defer f.syncMu.Unlock()
	return f.m.Root(), f.m.Len(), f.next
}

// apply processes entry j with the log's epoch rules (api.CheckEpoch), as
// the directory's replay does.
//
// SPEC(design.md 7)
// SPEC(design.md 14 step 1)
// SPEC(design.md 14 step 3)
func (f *Follower) apply(j uint64, e []byte) error {
	ent, err := api.ParseEntry(e)
	if err != nil {
		return &DivergenceError{Index: j, Entry: e, Reason: err.Error(), Err: err}
	}
	var root [32]byte
	r, isEpoch := ent.(*api.EpochRecord)
	if isEpoch {
		if root, err = f.m.Apply(f.pending); err != nil {
			return fmt.Errorf("replica: applying %d changes: %w", len(f.pending), err)
		}
		f.pending = nil
	}
	chain, errs := api.CheckEpoch(f.chain, j, ent, root, f.m.Len())
	if len(errs) > 0 {
		return &DivergenceError{Index: j, Entry: e, Reason: fmt.Sprintf("%s: %s", errs[0].Rule, errs[0].Reason), Err: errs[0]}
	}
	f.chain = chain
	if !isEpoch {
		f.pending = append(f.pending, smt.Update{Key: ent.(*api.ChangeRecord).Index, Value: api.LeafHash(e)})
		return nil
	}
	f.mu.Lock()
	f.snap, f.epoch, f.epochSize = f.m.Snapshot(), r, j+1
	f.mu.Unlock()
	return nil
}

// Epoch returns the latest applied epoch record and the log size that
// ends with it.
func (f *Follower) Epoch() (*api.EpochRecord, uint64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.epoch == nil {
		return nil, 0, ErrNoEpoch
	}
	return f.epoch, f.epochSize, nil
}

// Latest returns, as of the applied epoch, the latest change record of the
// VRF index with its payload from the shared store, checked: the payload's
// record is the one the map holds, and it opens the commitment. Errors:
// ErrNoEpoch, ErrNotRegistered, payloadstore.ErrNotFound (the writer's
// payload is missing: the handle is unavailable until its next change), a
// *payloadstore.CorruptError.
func (f *Follower) Latest(ctx context.Context, index [32]byte) (*api.ChangeRecord, *api.DeviceSet, *payloadstore.Payload, error) {
	f.mu.RLock()
	snap := f.snap
	f.mu.RUnlock()
	if snap == nil {
		return nil, nil, nil, ErrNoEpoch
	}
	leaf, ok := snap.Get(index)
	if !ok {
		return nil, nil, nil, ErrNotRegistered
	}
	p, err := f.payloads.Get(ctx, leaf)
	if err != nil {
		return nil, nil, nil, err
	}
	rec, err := api.ParseChangeRecord(p.Record)
	if err != nil {
		return nil, nil, nil, &payloadstore.CorruptError{Leaf: leaf, Reason: err}
	}
	if rec.Index != index {
		return nil, nil, nil, &payloadstore.CorruptError{Leaf: leaf, Reason: fmt.Errorf("the record is for index %x", rec.Index)}
	}
	set, err := api.OpenCommitment(rec, p.Opening, p.DeviceSet)
	if err != nil {
		return nil, nil, nil, &payloadstore.CorruptError{Leaf: leaf, Reason: err}
	}
	return rec, set, p, nil
}

// Root returns the map root as of the applied epoch.
func (f *Follower) Root() ([32]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.snap == nil {
		return [32]byte{}, ErrNoEpoch
	}
	return f.snap.Root(), nil
}
