package directory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/sync/errgroup"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/directory/lease"
	"github.com/keytrans/kt/directory/payloadstore"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/smt"
)

// The replicated mode (docs/design.md section 17.1). Every instance keeps
// its own materialised view of the log in its own store, as a standalone
// directory does; only what the log does not hold is shared, in MariaDB:
// the payloads (record, opening, device set) and the epoch checkpoints.
// One instance, the holder of a database lease, is the writer and runs
// the sequencer; the others are readers that follow the log.
//
//   - A reader polls the log (Replication.PollInterval) and replays new
//     entries into its view with the same replayer as startup recovery
//     (every epoch record is checked against the recomputed map), taking
//     the payloads it does not have from the shared table, which checks
//     them. It serves an epoch once it has applied its epoch record and
//     verified its epoch checkpoint (signature, size, inclusion of the
//     record, consistency with the log it serves), so its answers verify
//     exactly like the writer's. Change requests are refused with
//     ErrUnavailable naming the writer's advertised address.
//   - Every reader campaigns for the lease. The one that gets it takes
//     over (section 17.1 steps 1 to 5): it waits out the margin, drains
//     the log's queue (Replication.Drain), catches its view up with the
//     log, closes an epoch if the log does not end with a served epoch,
//     and only then starts the sequencer.
//   - The writer stores each group's payloads in the shared table under
//     the lease (fenced) before its Append, and each epoch checkpoint
//     after publishing it; it starts an Append only before the lease's
//     deadline, and the log queues nothing after it. It renews the lease
//     every third of its duration. When the lease is lost (or the
//     sequencer stops for any reason) the instance stops writing for good:
//     requests fail with ErrUnavailable and Stopped is closed, on which
//     ktd exits so that its supervisor restarts it, as a reader.

// Replication configures the replicated mode; see [Config.Replication].
type Replication struct {
	// Lease is the writer lease (directory/lease): its database, name (one
	// per log), duration and margin. Holder must be unique to this
	// process, and start with the address clients reach this instance at,
	// followed by a space (e.g. "kt-1.example.com:8443 5f2c..."): readers
	// name the holder's address when they refuse changes.
	Lease lease.Config
	// Payloads is the shared payload and epoch checkpoint table (required),
	// over the same database as the lease (it fences its writes with it).
	Payloads *payloadstore.Store
	// Drain is takeover step 2 (required): it returns once nothing the
	// previous writer queued can still be sequenced, and the log's
	// published checkpoint covers every sequenced entry. For log/trillian:
	// trillian.Log.Drain.
	Drain func(ctx context.Context) error
	// PollInterval is how often a reader reads the log's checkpoint for new
	// entries. Default DefaultPollInterval.
	PollInterval time.Duration
}

// DefaultPollInterval is the default Replication.PollInterval.
const DefaultPollInterval = 250 * time.Millisecond

// Roles of a Directory, as Role reports them.
const (
	RoleStandalone = "standalone" // not replicated: the only writer
	RoleReader     = "reader"     // follows the log, serves lookups
	RoleTakeover   = "takeover"   // holds the lease, not yet writing
	RoleWriter     = "writer"     // holds the lease and sequences changes
	RoleStopped    = "stopped"    // no longer writes or follows; restart it
)

func (r *Replication) validate() error {
	switch {
	case r.Lease.DB == nil:
		return errors.New("directory: Replication.Lease.DB is required")
	case r.Payloads == nil:
		return errors.New("directory: Replication.Payloads is required")
	case r.Drain == nil:
		return errors.New("directory: Replication.Drain is required")
	case r.PollInterval < 0:
		return fmt.Errorf("directory: Replication.PollInterval %v is negative", r.PollInterval)
	}
	if r.PollInterval == 0 {
		r.PollInterval = DefaultPollInterval
	}
	if r.Lease.Duration == 0 {
		r.Lease.Duration = lease.DefaultDuration
	}
	if r.Lease.Margin == 0 {
		r.Lease.Margin = lease.DefaultMargin(r.Lease.Duration)
	}
	if r.Lease.Margin < 0 || r.Lease.Margin >= r.Lease.Duration {
		return fmt.Errorf("directory: lease margin %v: want in [0, duration %v)", r.Lease.Margin, r.Lease.Duration)
	}
	return nil
}

// replState is the replicated mode's state.
type replState struct {
	cfg  Replication
	role atomic.Pointer[string]

	writerAddr atomic.Pointer[string] // as the lease row names it
	lease      atomic.Pointer[lease.Lease]
	leaseCtx   context.Context // cancelled when the lease is lost
	loseLease  context.CancelFunc

	stopOnce sync.Once
	stopped  chan struct{} // closed when the instance stops writing or following
	stopErr  error         // set before stopped is closed
	wg       sync.WaitGroup

	applied atomic.Uint64 // log entries in the view
	logSize atomic.Uint64 // the log's size at the last poll

	// Owned by the replicate goroutine (then by the sequencer).
	lastEpochIndex uint64
	haveEpoch      bool
	pendingEpoch   *epochMeta    // applied, checkpoint not known yet
	pendingSnap    *smt.Snapshot // the map as of pendingEpoch
}

func newRepl(cfg *Config, bg context.Context) *replState {
	if cfg.Replication == nil {
		return nil
	}
	r := &replState{cfg: *cfg.Replication, stopped: make(chan struct{})}
	r.leaseCtx, r.loseLease = context.WithCancel(context.WithoutCancel(bg))
	r.setRole(RoleReader)
	return r
}

func (r *replState) setRole(s string) { r.role.Store(&s) }

// stop records why the instance stopped and closes stopped, once.
func (r *replState) stop(err error) {
	r.stopOnce.Do(func() {
		r.stopErr = err
		r.setRole(RoleStopped)
		close(r.stopped)
	})
}

// Role is the instance's role: RoleStandalone without replication,
// otherwise RoleReader, RoleTakeover, RoleWriter or RoleStopped.
func (d *Directory) Role() string {
	if d.repl == nil {
		if d.fatal.Load() != nil {
			return RoleStopped
		}
		return RoleStandalone
	}
	return *d.repl.role.Load()
}

// Stopped is closed when a replicated directory stops writing (it lost
// its lease, or its sequencer stopped) or following the log (the log
// diverged from its view). Only a restart brings it back, as a reader;
// StopError says why. Without replication it is closed when the
// sequencer stops on a fatal error (the log refused a write: a full or
// read-only disk, see docs/operations.md, Faults): only a restart brings
// writes back, so a server should fail health and exit.
func (d *Directory) Stopped() <-chan struct{} {
	if d.repl == nil {
		return d.halted
	}
	return d.repl.stopped
}

// StopError is why Stopped was closed (nil before).
func (d *Directory) StopError() error {
	if d.repl == nil {
		if f := d.fatal.Load(); f != nil {
			return *f
		}
		return nil
	}
	select {
	case <-d.repl.stopped:
		return d.repl.stopErr
	default:
		return nil
	}
}

// Lag returns the number of log entries this instance has applied to its
// view and the log's size when it last looked (equal on the writer).
func (d *Directory) Lag() (applied, logSize uint64) {
	if d.repl == nil {
		return 0, 0
	}
	return d.repl.applied.Load(), d.repl.logSize.Load()
}

// WriterAddress is the advertised address of the writer as the lease row
// last named it ("" if unknown).
func (d *Directory) WriterAddress() string {
	if d.repl == nil {
		return ""
	}
	if p := d.repl.writerAddr.Load(); p != nil {
		return *p
	}
	return ""
}

// refuseWrite returns the error a change request gets on an instance that
// does not sequence changes, nil on the writer and without replication.
//
// SPEC(design.md 17.1)
func (d *Directory) refuseWrite() error {
	if d.repl == nil {
		return nil
	}
	switch role := d.Role(); role {
	case RoleWriter:
		return nil
	default:
		return &NotWriterError{Role: role, Writer: d.WriterAddress()}
	}
}

// NotWriterError is the answer to a change sent to an instance of a
// replicated directory that is not the writer. It wraps ErrUnavailable
// (the client retries, at the writer); unlike other ErrUnavailable
// details its message is meant for the client: it names the writer's
// advertised address, as the lease row holds it.
type NotWriterError struct {
	Role   string // this instance's role
	Writer string // the writer's advertised address, "" if not known
}

func (e *NotWriterError) Error() string {
	w := e.Writer
	if w == "" {
		w = "not known yet"
	}
	switch e.Role {
	case RoleTakeover:
		return "directory: unavailable: this instance is taking over as the writer; retry shortly"
	case RoleStopped:
		return "directory: unavailable: this instance stopped writing; the writer is " + w
	}
	return "directory: unavailable: this instance is a reader of the replicated directory; send changes to the writer, " + w
}

// Unwrap returns ErrUnavailable.
func (e *NotWriterError) Unwrap() error { return ErrUnavailable }

// behind is the error for a client whose trusted checkpoint is beyond the
// served epoch: a lagging reader answers ErrUnavailable (ask another
// instance, or retry once it caught up), a writer ErrOutOfRange.
//
// SPEC(design.md 17.1)
func (d *Directory) behind(known, size uint64) error {
	if d.repl != nil && d.Role() != RoleWriter {
		return errorf(ErrUnavailable, "this replica serves the epoch checkpoint of size %d, behind the known size %d; retry", size, known)
	}
	// SPEC(design.md 14.3): the served epoch is audited; a published one
	// beyond it is served once audited.
	if pub := d.pub.Load(); d.audit != nil && pub != nil && known <= pub.size {
		return errorf(ErrUnavailable, "the audited epoch checkpoint served has size %d, behind the known size %d (published, not yet audited); retry", size, known)
	}
	return errorf(ErrOutOfRange, "known size %d is beyond the current epoch checkpoint's size %d", known, size)
}

// startReplicated starts following the log and campaigning (New, after
// recover).
func (d *Directory) startReplicated() error {
	r := d.repl
	raw, ok, err := d.st.get(keyEpoch)
	if err != nil {
		return err
	}
	if ok {
		meta, err := decodeEpochMeta(raw)
		if err != nil {
			return err
		}
		r.lastEpochIndex, r.haveEpoch = meta.logIndex, true
		if cur := d.pub.Load(); cur == nil || cur.logIndex < meta.logIndex {
			r.pendingEpoch, r.pendingSnap = meta, d.m.Snapshot()
		}
	}
	r.applied.Store(d.size)
	r.logSize.Store(d.size)
	go d.replicate()
	return nil
}

// replicate follows the log until this instance gets the lease, then
// takes over and runs the sequencer.
//
// SPEC(design.md 17.1)
// SPEC(design.md 17.1 step 5)
func (d *Directory) replicate() {
	r := d.repl
	acquired := make(chan *lease.Lease, 1)
	r.wg.Add(1)
	go func() { defer r.wg.Done(); d.campaign(acquired) }()
	t := time.NewTicker(r.cfg.PollInterval)
	defer t.Stop()
	for {
		if fatal, err := d.tail(d.ctx); err != nil && d.ctx.Err() == nil {
			if fatal {
				d.logger.Error("directory: FOLLOWING THE LOG STOPPED; restart this instance", "err", err)
				r.stop(err)
				close(d.done)
				return
			}
			d.logger.Warn("directory: following the log; retrying", "err", err)
		}
		select {
		case <-d.ctx.Done():
			close(d.done)
			return
		case l := <-acquired:
			if err := d.takeover(l); err != nil {
				if d.ctx.Err() == nil {
					d.logger.Error("directory: TAKEOVER FAILED; this instance stops writing, restart it", "err", err)
					d.fatal.Store(&err)
				}
				r.loseLease()
				r.stop(err)
				close(d.done)
				return
			}
			d.run() // closes d.done
			err := errors.New("the sequencer stopped")
			if f := d.fatal.Load(); f != nil {
				err = *f
			}
			r.stop(err)
			return
		case <-t.C:
		}
	}
}

// campaign tries to acquire the lease until it succeeds or the directory
// closes, recording the current holder's address; once acquired it keeps
// renewing it.
//
// SPEC(design.md 17.1)
func (d *Directory) campaign(acquired chan<- *lease.Lease) {
	r := d.repl
	for d.ctx.Err() == nil {
		l, err := lease.Acquire(d.ctx, r.cfg.Lease)
		var held *lease.HeldError
		wait := r.cfg.Lease.Duration / 3
		switch {
		case err == nil:
			addr, _, _ := strings.Cut(l.Holder(), " ")
			r.writerAddr.Store(&addr)
			acquired <- l
			d.renew(l)
			return
		case errors.As(err, &held):
			addr, _, _ := strings.Cut(held.Holder, " ")
			r.writerAddr.Store(&addr)
			wait = min(max(held.Remaining, 10*time.Millisecond), wait)
		case d.ctx.Err() == nil:
			d.logger.Warn("directory: campaigning for the writer lease", "err", err)
		}
		select {
		case <-d.ctx.Done():
		case <-time.After(wait):
		}
	}
}

// renew renews l every third of its duration until the directory closes
// or the lease is lost: renewal fails with lease.ErrLost, or no renewal
// succeeds before the deadline.
//
// SPEC(design.md 17.1)
func (d *Directory) renew(l *lease.Lease) {
	r := d.repl
	every := r.cfg.Lease.Duration / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-r.leaseCtx.Done(): // given up (a failed takeover)
			return
		case <-t.C:
		}
		err := l.Renew(d.ctx)
		if err == nil || d.ctx.Err() != nil {
			continue
		}
		if !errors.Is(err, lease.ErrLost) && l.Valid() {
			d.logger.Warn("directory: renewing the writer lease; retrying", "err", err, "deadline_in", time.Until(l.Deadline()))
			continue
		}
		d.leaseLost(fmt.Errorf("directory: the writer lease (token %d) is lost: %w", l.Token(), err))
		return
	}
}

// leaseLost stops writing: appends are cancelled, requests refused.
//
// SPEC(design.md 17.1)
func (d *Directory) leaseLost(err error) {
	r := d.repl
	r.loseLease()
	e := wrapf(ErrUnavailable, err, "this instance lost the writer lease")
	d.fatal.Store(&e)
	d.logger.Error("directory: WRITER LEASE LOST; this instance stops writing (restart it to follow the log as a reader)", "err", err)
	r.stop(err)
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// takeover runs steps 1 to 4 of design.md 17.1 with the lease just
// acquired; the caller then starts the sequencer (step 5).
//
// SPEC(design.md 17.1 step 1)
// SPEC(design.md 17.1 step 2)
// SPEC(design.md 17.1 step 3)
// SPEC(design.md 17.1 step 4)
func (d *Directory) takeover(l *lease.Lease) error {
	r := d.repl
	r.setRole(RoleTakeover)
	start := time.Now()
	// Until the sequencer runs, Close also ends the takeover.
	ctx, cancel := context.WithCancel(r.leaseCtx)
	defer cancel()
	defer context.AfterFunc(d.ctx, cancel)()
	d.logger.Info("directory: acquired the writer lease; taking over", "token", l.Token(), "holder", l.Holder())
	// 1. The previous term ended before this one began, by the
	// database's clock; after the margin its holder starts no append.
	select {
	case <-time.After(r.cfg.Lease.Margin):
	case <-ctx.Done():
		return errors.New("directory: the takeover was interrupted (lease lost, or Close)")
	}
	// 2. Nothing the previous writer queued is sequenced after us.
	if err := r.cfg.Drain(ctx); err != nil {
		return fmt.Errorf("directory: draining the log's queue: %w", err)
	}
	drained := time.Since(start)
	// 3. Every acknowledged change is in the log: apply the tail.
	for {
		fatal, err := d.tail(ctx)
		if err == nil {
			break
		}
		if fatal || ctx.Err() != nil {
			return err
		}
		d.logger.Warn("directory: catching up with the log during the takeover; retrying", "err", err)
		select {
		case <-time.After(r.cfg.PollInterval):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if !r.haveEpoch && d.size > 0 {
		return fmt.Errorf("directory: the log has %d entries but no epoch record", d.size)
	}
	r.lease.Store(l)
	r.setRole(RoleWriter)
	// 4. An epoch record, with its checkpoint served, ends the log.
	cur := d.pub.Load()
	if cur == nil || !r.haveEpoch || d.size != r.lastEpochIndex+1 || cur.logIndex != r.lastEpochIndex {
		if err := d.closeEpoch(); err != nil {
			return err
		}
	}
	r.pendingEpoch, r.pendingSnap = nil, nil
	d.logger.Info("directory: took over as the writer", "token", l.Token(), "log_size", d.size, "epoch", d.pub.Load().record.Epoch,
		"drained_after", drained.Round(time.Millisecond), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// appendContext is the context of an Append: in the replicated mode it is
// cancelled when the lease is lost and carries the lease's deadline as
// the log's queue deadline, and it is refused past that deadline.
//
// SPEC(design.md 17.1)
func (d *Directory) appendContext() (context.Context, error) {
	if d.repl == nil {
		return context.WithoutCancel(d.ctx), nil
	}
	l := d.repl.lease.Load()
	if l == nil || d.repl.leaseCtx.Err() != nil {
		return nil, errorf(ErrUnavailable, "this instance does not hold the writer lease")
	}
	if dl := l.Deadline(); !time.Now().Before(dl) {
		return nil, wrapf(ErrUnavailable, lease.ErrLost, "the writer lease's deadline has passed (%v ago)", time.Since(dl).Round(time.Millisecond))
	} else {
		return log.WithQueueDeadline(d.repl.leaseCtx, dl), nil
	}
}

// sharePayloads stores the payloads of group in the shared table, fenced
// by the lease (replicated mode only). reqErr is what the requests are
// answered with when it fails; fatal is non-nil when the lease is gone,
// which stops the sequencer.
//
// SPEC(design.md 17.1)
func (d *Directory) sharePayloads(group []*request) (reqErr, fatal error) {
	if d.repl == nil {
		return nil, nil
	}
	l := d.repl.lease.Load()
	if l == nil {
		err := errorf(ErrUnavailable, "this instance does not hold the writer lease")
		return err, err
	}
	var ps []payloadstore.Payload
	for _, r := range group {
		for _, c := range r.changes {
			ps = append(ps, payloadstore.Payload{Record: c.recBytes, Opening: c.opening, DeviceSet: c.ds})
		}
	}
	err := d.repl.cfg.Payloads.Put(d.repl.leaseCtx, l, ps)
	switch {
	case err == nil:
		return nil, nil
	case errors.Is(err, lease.ErrFenced) || d.repl.leaseCtx.Err() != nil:
		return wrapf(ErrUnavailable, err, "this instance lost the writer lease"), err
	default:
		return wrapf(ErrUnavailable, err, "storing the change in the shared payload table"), nil
	}
}

// shareEpoch stores a published epoch's checkpoint in the shared table
// for the readers (replicated mode only). Only a fenced write is an error
// (it stops the sequencer); otherwise readers serve the epoch when the
// log's checkpoint has exactly its size, or the next epoch.
//
// SPEC(design.md 17.1)
func (d *Directory) shareEpoch(m *epochMeta) error {
	if d.repl == nil {
		return nil
	}
	d.repl.lastEpochIndex, d.repl.haveEpoch = m.logIndex, true
	d.repl.applied.Store(d.size)
	d.repl.logSize.Store(d.size)
	l := d.repl.lease.Load()
	err := d.repl.cfg.Payloads.PutEpoch(d.repl.leaseCtx, l, m.logIndex, m.checkpoint, m.inclusion)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, lease.ErrFenced):
		return err
	default:
		d.logger.Warn("directory: storing the epoch checkpoint in the shared table failed; readers wait for the next epoch", "log_index", m.logIndex, "err", err)
		return nil
	}
}

// releaseLease ends a writer's term at Close, once nothing is appending,
// so that a reader takes over at once; it waits for the lease goroutines.
//
// SPEC(design.md 17.1)
func (d *Directory) releaseLease(ctx context.Context) {
	if d.repl == nil {
		return
	}
	if l := d.repl.lease.Load(); l != nil && d.repl.leaseCtx.Err() == nil {
		if err := l.Release(ctx); err != nil {
			d.logger.Warn("directory: releasing the writer lease", "err", err)
		} else {
			d.logger.Info("directory: released the writer lease", "token", l.Token())
		}
	}
	d.repl.loseLease()
	d.repl.wg.Wait()
}

// cacheVRF stores, on a replicated reader, the VRF evaluation of a
// registered handle that a lookup computed: the writer caches it when the
// handle changes, but readers see only VRF indices in the log. Only
// registered handles are cached, so the cache is bounded by the map. A
// failure only costs the next lookup the evaluation again.
func (d *Directory) cacheVRF(handle string, v *vrfEntry) {
	if d.repl == nil || d.Role() == RoleWriter {
		return
	}
	if err := d.st.db.Set(handleKey(handle), encodeVRF(v), pebble.NoSync); err != nil {
		d.logger.Warn("directory: caching a VRF evaluation", "err", err)
	}
}

// fetchPayload copies the payload of leaf from the shared table into b
// (replicated mode only): true if it did. A missing or corrupt payload is
// logged and reported as false; a database error is returned.
//
// SPEC(design.md 17.1)
func (d *Directory) fetchPayload(ctx context.Context, leaf [32]byte, b *pebble.Batch) ([]byte, error) {
	if d.repl == nil {
		return nil, nil
	}
	p, err := d.repl.cfg.Payloads.Get(ctx, leaf)
	return d.storeFetched(leaf, p, err, b)
}

// storeFetched stores a payload fetched from the shared table into b and
// returns its device set; nil if it was missing or corrupt (logged).
func (d *Directory) storeFetched(leaf [32]byte, p *payloadstore.Payload, err error, b *pebble.Batch) ([]byte, error) {
	var corrupt *payloadstore.CorruptError
	switch {
	case err == nil:
		b.Set(payloadKey(leaf), encodePayload(&payload{record: p.Record, opening: p.Opening, deviceSet: p.DeviceSet}), nil)
		return p.DeviceSet, nil
	case errors.Is(err, payloadstore.ErrNotFound):
		d.logger.Warn("directory: a change record's payload is not in the shared table; lookups of its handle fail until its next change", "leaf", fmt.Sprintf("%x", leaf[:8]))
		return nil, nil
	case errors.As(err, &corrupt):
		d.logger.Error("directory: a change record's payload in the shared table is corrupt; lookups of its handle fail until its next change", "err", err)
		return nil, nil
	default:
		return nil, err
	}
}

// tail applies the log's entries beyond the view (d.size) and serves the
// last applied epoch once its checkpoint is known. fatal reports that the
// log does not follow from the view (a divergence, or a store failure):
// following cannot continue.
//
// SPEC(design.md 17.1)
func (d *Directory) tail(ctx context.Context) (fatal bool, err error) {
	r := d.repl
	n, err := d.logSize(ctx)
	if err != nil {
		return false, err
	}
	r.logSize.Store(n)
	if n < d.size {
		return true, fmt.Errorf("directory: the log's checkpoint has size %d, below the %d entries applied", n, d.size)
	}
	if n > d.size {
		if fatal, err := d.applyTail(ctx, n); err != nil {
			return fatal, err
		}
	}
	return false, d.servePending(ctx)
}

// fetchParallelism bounds the concurrent payload reads of a reader.
const fetchParallelism = 8

// applyTail applies entries [d.size, n). On a transient error the entries
// applied so far are committed and the view stays consistent.
//
// SPEC(design.md 17.1)
func (d *Directory) applyTail(ctx context.Context, n uint64) (fatal bool, err error) {
	r := d.repl
	rp := &replayer{origin: d.cfg.Origin, m: d.m, pending: d.pending, chain: api.EpochChain{Next: d.nextEpoch, Time: d.lastTS},
		lastEpochIndex: r.lastEpochIndex}
	b := d.st.db.NewBatch()
	j := d.size
	commit := func() error {
		b.Set(keyApplied, u64(j), nil)
		if err := b.Commit(pebble.NoSync); err != nil {
			return fmt.Errorf("directory: store: %w", err)
		}
		b = d.st.db.NewBatch()
		d.m, d.pending, d.nextEpoch, d.lastTS = rp.m, rp.pending, rp.chain.Next, rp.chain.Time
		d.lastEpochAt = time.UnixMilli(int64(rp.chain.Time))
		r.lastEpochIndex, r.haveEpoch = rp.lastEpochIndex, r.haveEpoch || rp.chain.Started()
		d.size = j
		r.applied.Store(j)
		return nil
	}
	// transient commits the progress and returns err.
	transient := func(err error) (bool, error) {
		if cerr := commit(); cerr != nil {
			return true, cerr
		}
		return false, err
	}
	for j < n {
		es, err := d.log.Entries(ctx, j, n)
		if err != nil {
			return transient(fmt.Errorf("directory: reading the log at %d: %w", j, err))
		}
		if len(es) == 0 {
			return transient(fmt.Errorf("directory: the log returned no entries at %d", j))
		}
		fetched, err := d.prefetch(ctx, es)
		if err != nil {
			return transient(err)
		}
		for _, e := range es {
			ent, err := rp.entry(j, e, true)
			if err != nil {
				return true, err
			}
			switch rec := ent.(type) {
			case *api.ChangeRecord:
				leaf := api.LeafHash(e)
				var ds []byte
				if f, ok := fetched[leaf]; ok {
					if ds, err = d.storeFetched(leaf, f.p, f.err, b); err != nil {
						return true, err // prefetch returned database errors already
					}
				}
				b.Set(stateKey(rec.Index), encodeHead(replayedHead(rec, leaf, j, ds)), nil)
				b.Set(historyKey(rec.Index, rec.Version), encodeHistory(historyEntry{leaf: leaf, logIndex: j}), nil)
			case *api.RotationRecord:
				if err := d.addRotation(j, e, b); err != nil {
					return true, err
				}
				if rec.Kind == api.KeyVRF {
					// SPEC(design.md 11.2): a reader answers under the new
					// key from here on; its VRF cache holds old indices.
					j++
					if err := commit(); err != nil {
						return true, err
					}
					j--
					if err := d.setupVRF(); err != nil {
						return true, err
					}
					if err := d.st.db.DeleteRange([]byte{pfxHandle}, []byte{pfxHandle + 1}, pebble.Sync); err != nil {
						return true, fmt.Errorf("directory: store: %w", err)
					}
				}
			case *api.MoveEntry:
				// The old index's state must be readable.
				if err := commit(); err != nil {
					return true, err
				}
				if err := d.replayMove(b, rec); err != nil {
					return true, err
				}
			case *api.EpochRecord:
				for _, u := range rp.applied {
					b.Set(leafKey(u.Key), u.Value[:], nil)
				}
				meta := &epochMeta{record: e, logIndex: j}
				b.Set(keyEpoch, encodeEpochMeta(meta), nil)
				r.pendingEpoch, r.pendingSnap = meta, rp.m.Snapshot()
			}
			j++
		}
		if err := commit(); err != nil {
			return true, err
		}
	}
	return false, nil
}

type fetchResult struct {
	p   *payloadstore.Payload
	err error // nil, or ErrNotFound / *CorruptError
}

// prefetch reads, concurrently, the shared payloads of the change records
// in es that the store does not have. A database error fails it.
func (d *Directory) prefetch(ctx context.Context, es [][]byte) (map[[32]byte]fetchResult, error) {
	var leaves [][32]byte
	for _, e := range es {
		if len(e) < 2 || api.EntryType(e[1]) != api.TypeChange {
			continue
		}
		leaf := api.LeafHash(e)
		if _, ok, err := d.st.payload(leaf); err != nil {
			return nil, err
		} else if !ok {
			leaves = append(leaves, leaf)
		}
	}
	out := make(map[[32]byte]fetchResult, len(leaves))
	if len(leaves) == 0 {
		return out, nil
	}
	res := make([]fetchResult, len(leaves))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fetchParallelism)
	for i, leaf := range leaves {
		g.Go(func() error {
			p, err := d.repl.cfg.Payloads.Get(gctx, leaf)
			var corrupt *payloadstore.CorruptError
			if err != nil && !errors.Is(err, payloadstore.ErrNotFound) && !errors.As(err, &corrupt) {
				return fmt.Errorf("directory: reading a payload from the shared table: %w", err)
			}
			res[i] = fetchResult{p: p, err: err}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for i, leaf := range leaves {
		out[leaf] = res[i]
	}
	return out, nil
}

// servePending serves the last applied epoch once its checkpoint is
// known and verifies: from the shared table, or the log's own checkpoint
// when the epoch record is the log's last entry.
//
// SPEC(design.md 17.1)
func (d *Directory) servePending(ctx context.Context) error {
	r := d.repl
	meta := r.pendingEpoch
	if meta == nil {
		return nil
	}
	if cur := d.pub.Load(); cur != nil && cur.logIndex >= meta.logIndex {
		r.pendingEpoch, r.pendingSnap = nil, nil
		return nil
	}
	cpRaw, incl, err := r.cfg.Payloads.GetEpoch(ctx, meta.logIndex)
	switch {
	case errors.Is(err, payloadstore.ErrNotFound):
		if d.size != meta.logIndex+1 {
			return nil // a later epoch will be served
		}
		raw, err := d.log.Checkpoint(ctx)
		if err != nil {
			return err
		}
		cp, err := d.parseCheckpoint(raw)
		if err != nil || cp.Size != d.size {
			return err
		}
		if incl, err = d.log.InclusionProof(ctx, meta.logIndex, d.size); err != nil {
			return err
		}
		cpRaw = raw
	case err != nil:
		return err
	}
	if err := d.checkEpochCheckpoint(ctx, meta, cpRaw, incl); err != nil {
		return err
	}
	full := &epochMeta{record: meta.record, logIndex: meta.logIndex, checkpoint: cpRaw, inclusion: incl}
	ep, err := d.newEpoch(full, r.pendingSnap)
	if err != nil {
		return err
	}
	b := d.st.db.NewBatch()
	b.Set(keyEpoch, encodeEpochMeta(full), nil)
	d.handOver(full, b) // rotation.go: the rotations before it, for GetRotations
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("directory: store: %w", err)
	}
	d.publish(ep)
	r.pendingEpoch, r.pendingSnap = nil, nil
	d.logger.Debug("directory: serving epoch", "epoch", ep.record.Epoch, "log_size", ep.size)
	return nil
}

// checkEpochCheckpoint verifies an epoch checkpoint read from the shared
// table as closeEpoch does its own: signed for this log, of size exactly
// logIndex+1, including the epoch record, and consistent with the
// checkpoint this instance's log serves.
//
// SPEC(design.md 17.1)
func (d *Directory) checkEpochCheckpoint(ctx context.Context, m *epochMeta, raw []byte, incl [][]byte) error {
	cp, err := d.parseCheckpoint(raw)
	if err != nil {
		return fmt.Errorf("directory: shared epoch checkpoint at %d: %w", m.logIndex, err)
	}
	if cp.Size != m.logIndex+1 {
		return fmt.Errorf("directory: shared epoch checkpoint at %d has size %d", m.logIndex, cp.Size)
	}
	h := rfc6962.DefaultHasher
	if err := proof.VerifyInclusion(h, m.logIndex, cp.Size, h.HashLeaf(m.record), incl, cp.Hash); err != nil {
		return fmt.Errorf("directory: shared epoch checkpoint at %d: inclusion of the epoch record: %w", m.logIndex, err)
	}
	latestRaw, err := d.log.Checkpoint(ctx)
	if err != nil {
		return err
	}
	latest, err := d.parseCheckpoint(latestRaw)
	if err != nil {
		return err
	}
	switch {
	case latest.Size < cp.Size:
		return fmt.Errorf("directory: shared epoch checkpoint of size %d is beyond the log's %d", cp.Size, latest.Size)
	case latest.Size == cp.Size:
		if !bytes.Equal(latest.Hash, cp.Hash) {
			return fmt.Errorf("directory: shared epoch checkpoint of size %d has root %x, the log %x", cp.Size, cp.Hash, latest.Hash)
		}
	default:
		p, err := d.log.ConsistencyProof(ctx, cp.Size, latest.Size)
		if err != nil {
			return err
		}
		if err := proof.VerifyConsistency(h, cp.Size, latest.Size, p, cp.Hash, latest.Hash); err != nil {
			return fmt.Errorf("directory: shared epoch checkpoint of size %d is not consistent with the log's %d: %w", cp.Size, latest.Size, err)
		}
	}
	return nil
}
