package directory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	fmtlog "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/smt"
)

// Directory is the key transparency directory: it validates and logs
// changes, closes epochs, and answers lookups and monitoring queries with
// proof bundles (design.md 6, 7, 12, 13). It implements
// [ktpb.DirectoryServer], [ktpb.LogServer] and [ktpb.OperatorServer]; its
// methods return the domain errors of this package and never gRPC status
// codes.
//
// # Goroutines and ownership
//
// One goroutine, the sequencer (run), owns every write: it is the only
// caller of Log.Append and Log.Await, the only writer of the map (m) and of
// the store's handle state, and it owns the fields in the "sequencer"
// block below. Request handlers have their changes validated (parsing,
// commitment, VRF, signature) by a fixed pool of checker goroutines
// (checks; update.go), concurrently, and hand them to the sequencer
// through queue; lookups read the current epoch (cur), an immutable value swapped
// atomically, plus the store, and never wait for the sequencer.
type Directory struct {
	ktpb.UnimplementedDirectoryServer
	ktpb.UnimplementedLogServer
	ktpb.UnimplementedOperatorServer

	cfg      Config
	log      log.Log
	verifier note.Verifier
	recovery [32]byte                 // the configured recovery key; see recoveryKey
	rot      rotations                // rotation.go
	vrfs     atomic.Pointer[vrfState] // reindex.go
	st       *store
	logger   *slog.Logger
	repl     *replState // nil unless Config.Replication is set (replicated.go)

	// pub is the latest published epoch (closeEpoch, recover, a
	// replicated reader's servePending); nil until the first epoch
	// checkpoint is known. The sequencer and the replication use it.
	pub atomic.Pointer[epoch]
	// cur is the epoch that lookups are served from: pub without an audit
	// policy, the latest audited epoch with one (audit.go); nil until
	// there is one.
	cur atomic.Pointer[epoch]
	// audit is the audit collector; nil without Config.AuditPolicy.
	audit *auditState

	// queueMu guards queue, queued, closing and closed.
	queueMu sync.Mutex
	queue   []*request
	queued  int           // changes in queue
	closing bool          // no more requests are queued
	closed  bool          // Close was called
	wake    chan struct{} // cap 1: wakes the sequencer

	// fatal is set once the sequencer stops on an error that needs an
	// operator (the log and the directory's view of it may disagree).
	fatal atomic.Pointer[error]
	// halted is closed when fatal is first set by the sequencer
	// (Stopped without replication).
	halted   chan struct{}
	haltOnce sync.Once

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	done   chan struct{} // closed when the sequencer returns

	// sequencer: owned by the sequencer goroutine (and New before it
	// starts).
	m           *smt.Map
	size        uint64       // log size: the index the next entry gets
	nextEpoch   uint64       // number of the next epoch record
	lastTS      uint64       // timestamp of the last epoch record, ms
	lastEpochAt time.Time    // when the last epoch record was appended
	pending     []smt.Update // changes appended since the last epoch record
	flying      *batch       // the group being appended (commit.go)
	next        *batch       // groups prepared while it is
	draining    bool         // the flight is the last group before an epoch
	jobs        chan func()  // closures run by the sequencer (tests)

	// checks feeds the checkers (update.go), a fixed pool of goroutines
	// that run the checks of incoming changes, started by the first change
	// (checkersOnce) and stopped by Close.
	checks       chan *checkJob
	checkersOnce sync.Once
}

// New opens the directory's state in cfg.StateDir, brings it up to date
// with the log, and starts the sequencer.
//
// # Startup
//
// The log is the source of truth. New reads the latest checkpoint (size
// N); if the store says an append was in flight (or acknowledged) beyond N,
// it waits up to StartupWait for the log to publish it, since a backend may
// publish durable entries only after a restart. Then it replays entries
// from where the store's view ends: change records rebuild the per-handle
// state and the pending map updates (payloads are read from the store by
// leaf hash); epoch records are checked against the recomputed map (root,
// size, epoch number, log size = index) and stored as the map's leaves. A
// store behind the log, or missing altogether, is therefore rebuilt from
// the log alone; only the openings and device sets, which the log does not
// hold, cannot be recovered.
//
// If the latest epoch record in the log has a stored epoch checkpoint,
// lookups are served at once; otherwise the sequencer closes a new epoch
// first, and lookups fail with ErrUnavailable until it is published.
func New(ctx context.Context, cfg Config) (*Directory, error) {
	v, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	if _, ok := cfg.Credentials.(OpenEnrollment); ok {
		cfg.Logger.Warn("directory: OPEN ENROLLMENT: enrollment credentials are not checked; anyone can enroll any free handle. Use only for demos and tests.")
	}
	st, err := openStore(cfg.StateDir, cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d := &Directory{
		cfg:      cfg,
		log:      cfg.Log,
		verifier: v,
		recovery: [32]byte(cfg.RecoveryKey),
		st:       st,
		logger:   cfg.Logger,
		wake:     make(chan struct{}, 1),
		ctx:      bg,
		cancel:   cancel,
		done:     make(chan struct{}),
		halted:   make(chan struct{}),
		jobs:     make(chan func()),
		checks:   make(chan *checkJob),
	}
	d.repl = newRepl(&cfg, bg)
	if d.audit, err = newAudit(&cfg); err != nil {
		cancel()
		st.close()
		return nil, err
	}
	if err := d.recover(ctx); err != nil {
		cancel()
		st.close()
		return nil, err
	}
	if d.repl != nil {
		// A reader first; the writer once it holds the lease.
		if err := d.startReplicated(); err != nil {
			cancel()
			st.close()
			return nil, err
		}
		d.startAudit()
		return d, nil
	}
	d.startAudit()
	go d.run()
	return d, nil
}

// Close stops the sequencer (requests waiting for it fail with
// ErrUnavailable; an append in progress completes first), and closes the
// store. It does not close the log.
func (d *Directory) Close(ctx context.Context) error {
	d.queueMu.Lock()
	if d.closed {
		d.queueMu.Unlock()
		return errorf(ErrUnavailable, "already closed")
	}
	d.closed, d.closing = true, true
	d.queueMu.Unlock()
	d.cancel()
	select {
	case <-d.done:
	case <-ctx.Done():
		return fmt.Errorf("directory: waiting for the sequencer: %w", ctx.Err())
	}
	d.stopAudit()
	d.releaseLease(ctx)
	return d.st.close()
}

// checkpointSize verifies a checkpoint note and returns it parsed.
func (d *Directory) parseCheckpoint(raw []byte) (*fmtlog.Checkpoint, error) {
	cp, _, err := log.ParseCheckpoint(raw, d.cfg.Origin, d.verifier)
	if err != nil {
		return nil, err
	}
	return cp, nil
}

// logSize returns the size of the latest checkpoint, 0 if none.
func (d *Directory) logSize(ctx context.Context) (uint64, error) {
	raw, err := d.log.Checkpoint(ctx)
	if errors.Is(err, log.ErrNoCheckpoint) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("directory: reading the log's checkpoint: %w", err)
	}
	cp, err := d.parseCheckpoint(raw)
	if err != nil {
		return 0, fmt.Errorf("directory: the log's checkpoint: %w", err)
	}
	return cp.Size, nil
}

// recover brings the store and the map up to date with the log (see New).
//
// SPEC(design.md 16)
func (d *Directory) recover(ctx context.Context) error {
	applied, _, err := d.st.getU64(keyApplied)
	if err != nil {
		return err
	}
	inflight, _, err := d.st.getU64(keyInflight)
	if err != nil {
		return err
	}
	metaRaw, haveMeta, err := d.st.get(keyEpoch)
	if err != nil {
		return err
	}
	n, err := d.logSize(ctx)
	if err != nil {
		return err
	}
	want := max(applied, inflight)
	if ig, ok := d.log.(log.Integrator); ok && n < want {
		// The embedded backend: what the killed process had not
		// integrated (its in-flight Append) can never appear, so waiting
		// for it would only keep the directory down for StartupWait
		// (issue 17). Wait for what the backend will publish: its
		// integrated tree, which covers every acknowledged entry
		// (applied). A replicated (Trillian) log does not implement
		// Integrator: there, entries queued before the stop may still be
		// integrated, and the wait below is for them.
		if s, err := ig.IntegratedSize(ctx); err == nil {
			want = max(min(want, s), applied)
		} else {
			d.logger.Warn("directory: reading the log's integrated size", "err", err)
		}
	}
	if n < want {
		wctx, cancel := context.WithTimeout(ctx, d.cfg.StartupWait)
		_, err := d.log.Await(wctx, want-1)
		cancel()
		if err != nil {
			d.logger.Warn("directory: the log did not publish the entries of the append in flight at the last stop", "published", n, "want", want, "err", err)
		}
		if n, err = d.logSize(ctx); err != nil {
			return err
		}
	}
	if n < applied {
		return fmt.Errorf("directory: the store has applied %d log entries but the log's checkpoint has only %d: wrong log, or the log lost acknowledged entries", applied, n)
	}

	// The map as of the stored epoch.
	rp := &replayer{origin: d.cfg.Origin}
	var meta *epochMeta
	start := uint64(0)
	if haveMeta {
		if meta, err = decodeEpochMeta(metaRaw); err != nil {
			return err
		}
		rec, err := api.ParseEpochRecord(meta.record)
		if err != nil {
			return fmt.Errorf("directory: stored epoch record: %w", err)
		}
		if meta.logIndex >= n {
			return fmt.Errorf("directory: stored epoch at log index %d is beyond the log's size %d", meta.logIndex, n)
		}
		es, err := d.log.Entries(ctx, meta.logIndex, meta.logIndex+1)
		if err != nil {
			return fmt.Errorf("directory: reading the stored epoch's record from the log: %w", err)
		}
		if string(es[0]) != string(meta.record) {
			return fmt.Errorf("directory: the log's entry %d is not the stored epoch record: the state in %s belongs to another log", meta.logIndex, d.cfg.StateDir)
		}
		ls, err := d.st.leaves()
		if err != nil {
			return err
		}
		leaves := make([]smt.Leaf, len(ls))
		for i, l := range ls {
			leaves[i] = smt.Leaf{Key: l[0], Value: l[1]}
		}
		if rp.m, err = smt.New(leaves); err != nil {
			return fmt.Errorf("directory: stored map: %w", err)
		}
		if rp.m.Root() != rec.MapRoot || rp.m.Len() != rec.MapSize {
			return fmt.Errorf("directory: stored map (root %x, %d leaves) does not match stored epoch %d (root %x, %d leaves)", rp.m.Root(), rp.m.Len(), rec.Epoch, rec.MapRoot, rec.MapSize)
		}
		rp.chain, rp.lastEpochIndex = api.EpochChain{Next: rec.Epoch + 1, Time: rec.Timestamp}, meta.logIndex
		start = meta.logIndex + 1
	} else {
		rp.m, _ = smt.New(nil)
	}
	// Change records in [min(applied, start), start) only need their handle
	// state; from start on they also feed the map.
	from := min(applied, start)
	b := d.st.db.NewBatch()
	flush := func(upto uint64) error {
		b.Set(keyApplied, u64(upto), nil)
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("directory: store: %w", err)
		}
		b = d.st.db.NewBatch()
		return nil
	}
	if err := d.loadRotations(); err != nil {
		return err
	}
	missing := 0
	var lastEpoch *api.EpochRecord
	var lastEpochRaw []byte
	for j := from; j < n; {
		es, err := d.log.Entries(ctx, j, n)
		if err != nil {
			return fmt.Errorf("directory: replaying the log at %d: %w", j, err)
		}
		for _, e := range es {
			ent, err := rp.entry(j, e, j >= start)
			if err != nil {
				return err
			}
			switch r := ent.(type) {
			case *api.ChangeRecord:
				if j >= applied {
					leaf := api.LeafHash(e)
					var ds []byte
					if p, ok, err := d.st.payload(leaf); err != nil {
						return err
					} else if ok {
						ds = p.deviceSet
					} else if ds, err = d.fetchPayload(ctx, leaf, b); err != nil { // replicated: from the shared table
						return err
					} else if ds == nil {
						missing++
					}
					b.Set(stateKey(r.Index), encodeHead(replayedHead(r, leaf, j, ds)), nil)
					b.Set(historyKey(r.Index, r.Version), encodeHistory(historyEntry{leaf: leaf, logIndex: j}), nil)
				}
			case *api.RotationRecord:
				if err := d.addRotation(j, e, b); err != nil {
					return err
				}
			case *api.MoveEntry:
				if j >= applied {
					// The old index's state must be readable.
					if err := flush(j); err != nil {
						return err
					}
					if err := d.replayMove(b, r); err != nil {
						return err
					}
				}
			case *api.EpochRecord:
				if j >= start {
					// rp.entry applied the pending updates: store the map's
					// leaves as of this epoch, with the epoch (whose
					// checkpoint is filled in below if it is the last).
					for _, u := range rp.applied {
						b.Set(leafKey(u.Key), u.Value[:], nil)
					}
					b.Set(keyEpoch, encodeEpochMeta(&epochMeta{record: e, logIndex: j}), nil)
					lastEpoch, lastEpochRaw = r, e
				}
			}
			j++
			if b.Len() > 8<<20 {
				if err := flush(j); err != nil {
					return err
				}
			}
		}
	}
	if err := flush(n); err != nil {
		return err
	}
	if missing > 0 {
		d.logger.Warn("directory: change records whose opening and device set are not in the store; lookups of these handles fail until their next change", "count", missing)
	}
	if !rp.chain.Started() && n > 0 {
		return fmt.Errorf("directory: the log has %d entries but no epoch record", n)
	}
	if err := d.checkConfiguredKeys(); err != nil {
		return err
	}
	if lastEpoch != nil {
		meta = &epochMeta{record: lastEpochRaw, logIndex: rp.lastEpochIndex}
	}

	d.m = rp.m
	d.size = n
	d.nextEpoch = rp.chain.Next
	d.lastTS = rp.chain.Time
	d.pending = rp.pending
	d.lastEpochAt = time.UnixMilli(int64(rp.chain.Time))
	if err := d.setupVRF(); err != nil {
		return err
	}
	if meta == nil {
		return nil // a new log: the sequencer appends epoch record 0
	}
	// Serve the last epoch if its checkpoint is known: stored, or the
	// log's current checkpoint if nothing follows the epoch record.
	if len(meta.checkpoint) == 0 && meta.logIndex+1 == n {
		if raw, err := d.log.Checkpoint(ctx); err == nil {
			if cp, err := d.parseCheckpoint(raw); err == nil && cp.Size == n {
				incl, err := d.log.InclusionProof(ctx, meta.logIndex, n)
				if err == nil {
					meta.checkpoint, meta.inclusion = raw, incl
				}
			}
		}
	}
	if len(meta.checkpoint) == 0 {
		d.logger.Info("directory: the last epoch's checkpoint is not known; closing a new epoch before serving lookups", "epoch", rp.chain.Next-1)
		return nil
	}
	ep, err := d.newEpoch(meta, d.m.Snapshot())
	if err != nil {
		return err
	}
	hb := d.st.db.NewBatch()
	hb.Set(keyEpoch, encodeEpochMeta(meta), nil)
	d.handOver(meta, hb)
	if err := hb.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("directory: store: %w", err)
	}
	d.publish(ep)
	d.logger.Info("directory: serving", "epoch", ep.record.Epoch, "log_size", n, "handles", ep.snap.Len(), "pending_changes", len(d.pending))
	return nil
}

// replayer recomputes the map from log entries and checks every entry
// against the log's epoch rules (api.CheckEpoch), stopping at the first
// broken rule.
type replayer struct {
	origin         string
	m              *smt.Map
	pending        []smt.Update
	applied        []smt.Update // the updates of the last epoch record
	chain          api.EpochChain
	lastEpochIndex uint64
}

// entry processes entry j. With apply false it only parses (the entry is
// already reflected in the map and the chain).
//
// SPEC(design.md 7)
// SPEC(design.md 14 step 1)
// SPEC(design.md 14 step 3): the directory replays its log with the
// auditor's epoch rules (api.CheckEpoch) and stops at the first violation.
func (rp *replayer) entry(j uint64, e []byte, apply bool) (api.Entry, error) {
	ent, err := api.ParseEntry(e)
	if err != nil {
		return nil, fmt.Errorf("directory: log entry %d: %w", j, err)
	}
	if !apply {
		return ent, nil
	}
	var root [32]byte
	_, isEpoch := ent.(*api.EpochRecord)
	if isEpoch {
		if root, err = rp.m.Apply(rp.pending); err != nil {
			return nil, err
		}
		rp.applied, rp.pending = rp.pending, nil
	}
	chain, errs := api.CheckEpoch(rp.chain, j, ent, root, rp.m.Len())
	if len(errs) > 0 {
		return nil, fmt.Errorf("directory: the log does not follow from its entries before: %w", errs[0])
	}
	rp.chain = chain
	if isEpoch {
		rp.lastEpochIndex = j
	} else if cr, ok := ent.(*api.ChangeRecord); ok {
		rp.pending = append(rp.pending, smt.Update{Key: cr.Index, Value: api.LeafHash(e)})
	} else if mv, ok := ent.(*api.MoveEntry); ok {
		// SPEC(design.md 11.2): a move gives the new index a leaf with
		// the old index's value.
		rp.pending = append(rp.pending, smt.Update{Key: mv.NewIndex, Value: mv.Leaf})
	}
	return ent, nil
}
