package posix

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	fmtlog "github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
	tposix "github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/witness"
)

// Defaults for the optional [Config] fields.
const (
	// DefaultCheckpointInterval bounds how long an integrated entry waits for
	// a checkpoint. It is Tessera's minimum, because the directory appends
	// nothing between an epoch record and its checkpoint (design.md 7), and
	// that wait is about one interval: Tessera's publisher, woken by the
	// epoch record's batch less than an interval after the previous
	// checkpoint, skips it and sleeps a whole interval before it publishes
	// (storage/posix/files.go, newAppender). At 250ms the directory spent
	// about 27% of the time of a sustained write load waiting so; at 100ms
	// 16% (docs/benchmarks.md). The cost: while changes arrive the log grows
	// continuously, so a checkpoint (a signature, two synced file writes and
	// one request per witness) is published up to 10 times a second, and
	// each witness sees that many requests; operators whose witnesses want
	// fewer raise it, trading write throughput.
	DefaultCheckpointInterval = minCheckpointInterval
	// DefaultRepublishInterval: an unchanged checkpoint is re-signed and
	// re-witnessed this often, refreshing the cosignature timestamps of an
	// idle log.
	DefaultRepublishInterval = 10 * time.Minute
	// DefaultBatchMaxSize and DefaultBatchMaxAge: Tessera's single sequencer
	// writes each batch with about two durable file writes per 256 entries
	// (bundle, level-0 tile) plus a fixed few (partial bundle and tiles,
	// upper tiles, tree state), each an O_SYNC write and a directory fsync.
	// Throughput is bound by that latency, so batches should be as large as
	// the load allows; Log.feed groups Append calls while the previous batch
	// is written (group commit). BatchMaxAge then only needs to cover
	// handing a group to Tessera: it is what a lone Append waits before its
	// batch is written. See BenchmarkAppendDurable.
	DefaultBatchMaxSize = 8192
	DefaultBatchMaxAge  = 5 * time.Millisecond
	// DefaultWitnessTimeout bounds one attempt to gather the cosignatures the
	// witness policy needs; a failed attempt is retried at the next
	// checkpoint interval. It is witness.DefaultTimeout, the one default of
	// both backends and of ktd's witness.timeout (see there why 10s and not
	// Tessera's 5s).
	DefaultWitnessTimeout = witness.DefaultTimeout

	// minCheckpointInterval is the smallest interval Tessera's POSIX driver
	// accepts.
	minCheckpointInterval = 100 * time.Millisecond
	// awaitPollInterval is how often the checkpoint file is read while some
	// Await call is waiting (the directory waits so for every epoch
	// checkpoint, and appends nothing meanwhile); nothing polls when nobody
	// waits.
	awaitPollInterval = 5 * time.Millisecond
	// pollInterval is how stale a checkpoint Checkpoint may serve, so that
	// a busy read path does not read the file on every call.
	pollInterval = 20 * time.Millisecond
	// lockFile, in the data directory, is held (flock) while a Log is open,
	// so that two processes never run sequencers over one directory by
	// mistake. The kernel drops it when the process dies, even by SIGKILL.
	lockFile = ".kt.lock"
)

// Config configures a [Log]. Zero values of optional fields select the
// defaults above. New validates it.
type Config struct {
	// Dir is the data directory (required). It is created if missing. It
	// holds the log in C2SP tlog-tiles layout plus Tessera's private state;
	// see the package documentation.
	Dir string

	// Origin is the checkpoint origin line (required), for example
	// "localhost/kt". It must equal Signer.Name(): Tessera signs checkpoints
	// with the signer's name as their origin.
	Origin string

	// Signer is the log's checkpoint key (required), an Ed25519 note signer
	// such as log.LoadOrCreateSigner returns.
	Signer note.Signer

	// AdditionalSigners sign every checkpoint after Signer, with the same
	// name (the origin): during a rotation of the log key (design.md
	// 11.1) the new key, so that verifiers that know either key accept
	// the checkpoints.
	AdditionalSigners []note.Signer

	// WitnessPolicy, when set, is a witness policy in Sigsum policy format
	// ("witness NAME VKEY URL", "group NAME K|any|all MEMBERS...",
	// "quorum NAME") with C2SP signed-note verifier keys. A checkpoint is
	// then published only once the quorum's cosignatures are gathered over
	// C2SP tlog-witness, and it is published with them. Until then the
	// previous checkpoint stays published (or none, for a new log). New
	// rejects a policy that witness.ParsePolicy, the clients' parser,
	// rejects.
	WitnessPolicy []byte

	// WitnessTimeout bounds one attempt to satisfy the witness policy
	// (default DefaultWitnessTimeout).
	WitnessTimeout time.Duration

	// CheckpointInterval is the minimum time between two published
	// checkpoints, at least 100ms (default DefaultCheckpointInterval).
	CheckpointInterval time.Duration

	// RepublishInterval is how often an unchanged checkpoint is published
	// again, at least CheckpointInterval (default DefaultRepublishInterval).
	RepublishInterval time.Duration

	// BatchMaxSize is the most entries sequenced as one batch (default
	// DefaultBatchMaxSize). Entries that arrive while a batch is written
	// form the next one; a larger Append is written as several batches, in
	// order.
	BatchMaxSize uint

	// BatchMaxAge is how long a batch smaller than BatchMaxSize waits
	// before it is written, once handed to Tessera (default
	// DefaultBatchMaxAge).
	BatchMaxAge time.Duration

	// HTTPClient is used to reach witnesses (default: a new http.Client;
	// each attempt is bounded by WitnessTimeout).
	HTTPClient *http.Client

	// Verifier, when set, is the log's checkpoint verifier: New then also
	// verifies the signature of the published checkpoint it checks the
	// stored tiles against (see FullCheck).
	Verifier note.Verifier

	// FullCheck makes New recompute every hash tile from the entries and
	// compare it with the stored one (tilecheck.CheckAll), reading the
	// whole log, before it starts. Without it New checks the right edge
	// only: O(log n) tiles and the last entry bundle, which is all that
	// new checkpoints are built on.
	FullCheck bool
}

func (c *Config) validate() error {
	switch {
	case c.Dir == "":
		return errors.New("posix log: Config.Dir is required")
	case c.Origin == "":
		return errors.New("posix log: Config.Origin is required")
	case c.Signer == nil:
		return errors.New("posix log: Config.Signer is required")
	case c.Signer.Name() != c.Origin:
		return fmt.Errorf("posix log: signer name %q differs from origin %q", c.Signer.Name(), c.Origin)
	}
	for _, a := range c.AdditionalSigners {
		if a == nil || a.Name() != c.Origin || a.KeyHash() == c.Signer.KeyHash() {
			return errors.New("posix log: each additional signer must be another key named by the origin")
		}
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = DefaultCheckpointInterval
	}
	if c.CheckpointInterval < minCheckpointInterval {
		return fmt.Errorf("posix log: CheckpointInterval %v is below the minimum %v", c.CheckpointInterval, minCheckpointInterval)
	}
	if c.RepublishInterval == 0 {
		c.RepublishInterval = DefaultRepublishInterval
	}
	if c.RepublishInterval < c.CheckpointInterval {
		return fmt.Errorf("posix log: RepublishInterval %v is below CheckpointInterval %v", c.RepublishInterval, c.CheckpointInterval)
	}
	if c.BatchMaxSize == 0 {
		c.BatchMaxSize = DefaultBatchMaxSize
	}
	if c.BatchMaxAge == 0 {
		c.BatchMaxAge = DefaultBatchMaxAge
	}
	if c.BatchMaxAge < 0 {
		return fmt.Errorf("posix log: negative BatchMaxAge %v", c.BatchMaxAge)
	}
	if c.WitnessTimeout == 0 {
		c.WitnessTimeout = DefaultWitnessTimeout
	}
	if c.WitnessTimeout < 0 {
		return fmt.Errorf("posix log: negative WitnessTimeout %v", c.WitnessTimeout)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	return nil
}

// Log is a [log.Log] stored by Tessera's POSIX driver in a data directory.
// Its methods are safe for concurrent use.
//
// Goroutines: Tessera runs the sequencer, the checkpoint publisher and the
// garbage collector under l.ctx until Close; l.feed hands Append calls to
// Tessera; l.watch polls the checkpoint file while Await calls wait.
type Log struct {
	cfg      Config
	appender *tessera.Appender
	shutdown func(context.Context) error
	reader   tessera.LogReader
	prover   *prover
	ctx      context.Context
	cancel   context.CancelFunc // stops Tessera's goroutines and l.watch
	lock     *os.File           // flock on Dir/.kt.lock

	// feedMu guards feedQueue, the Append calls waiting for l.feed, the
	// goroutine that hands them to Tessera; feedWake (cap 1) wakes it.
	feedMu    sync.Mutex
	feedQueue []*appendReq
	feedWake  chan struct{}

	// refreshMu serialises reads of the checkpoint file, so that a slow
	// reader never replaces a newer checkpoint with the older one it read.
	refreshMu sync.Mutex

	// mu guards closed and pub; inflight counts Append calls that passed the
	// closed check.
	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup
	pub      published
	wake     chan struct{} // cap 1: tells l.watch that someone waits
	done     chan struct{} // closed when Close stops the log

	// faultOnce sets fault and closes faulted when the guard refused to
	// sign (guard.go).
	faultOnce sync.Once
	fault     error
	faulted   chan struct{}

	// pause is read-locked by every batch from before Tessera gets it
	// until it is resolved; Backup write-locks it.
	pause sync.RWMutex
}

// setFault records that the log refused to sign a checkpoint.
func (l *Log) setFault(err error) {
	l.faultOnce.Do(func() {
		l.fault = err
		close(l.faulted)
	})
}

// Faulted is closed when the log refused to sign a checkpoint that does
// not extend the last one it signed (its storage is damaged: the fault
// matches ErrCorrupt), or found its storage unwritable (ErrUnwritable,
// writable.go): it then publishes nothing more and refuses Appends. A server should report it
// (health, exit) so that an operator repairs the data directory; see
// docs/operations.md, Faults.
func (l *Log) Faulted() <-chan struct{} { return l.faulted }

// Fault returns the error that stopped the log (matching ErrCorrupt or
// ErrUnwritable), or nil.
func (l *Log) Fault() error {
	select {
	case <-l.faulted:
		return l.fault
	default:
		return nil
	}
}

// published is the latest checkpoint read from Dir/checkpoint.
type published struct {
	raw     []byte // nil when none is published yet
	size    uint64
	readAt  time.Time     // when the file was last read
	changed chan struct{} // closed (and replaced) whenever raw changes
	waiters int           // Await calls waiting for a larger size
}

// New opens the log in cfg.Dir, creating it if needed, and starts
// sequencing and publishing.
//
// Before it starts Tessera, New checks that the directory reproduces the
// last signed checkpoint (checkStorage): the stored right edge of the tree
// gives its root, and Tessera's tree state extends it. Otherwise it fails
// with an error matching ErrCorrupt that names the damaged files, and
// signs nothing. The signer Tessera gets checks every later checkpoint the
// same way before signing it (guardSigner).
//
// A new log publishes its first (empty) checkpoint like any other: only
// once the witness policy is met. If the witnesses cannot be reached, New
// on an empty directory takes up to WitnessTimeout longer and the log starts
// without a checkpoint (see initTessera).
//
// SPEC(design.md 9)
// SPEC(design.md 9.1)
// SPEC(design.md 17)
func New(ctx context.Context, cfg Config) (*Log, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	guard := &guardSigner{Signer: cfg.Signer, origin: cfg.Origin, tiles: client.FileFetcher{Root: cfg.Dir}}
	opts := tessera.NewAppendOptions().
		WithCheckpointSigner(guard, cfg.AdditionalSigners...).
		WithCheckpointInterval(cfg.CheckpointInterval).
		WithCheckpointRepublishInterval(cfg.RepublishInterval).
		WithBatching(cfg.BatchMaxSize, cfg.BatchMaxAge).
		// Close bounds the wait with its own context.
		WithShutdownTimeout(24 * time.Hour)
	if len(cfg.WitnessPolicy) > 0 {
		// SPEC(design.md 9.1): "both log backends check the policy with
		// ParsePolicy first".
		//
		// The policy is parsed twice: first by witness.ParsePolicy, the
		// parser of the clients, auditors and the Trillian backend, so that
		// the log never publishes under a policy its clients would reject
		// (Tessera's parser accepts, for example, a threshold of zero, two
		// witnesses with one key, or two quorum lines); then by Tessera's,
		// which builds what its publisher uses.
		if _, err := witness.ParsePolicy(cfg.WitnessPolicy); err != nil {
			return nil, fmt.Errorf("posix log: witness policy: %w", err)
		}
		wg, err := tessera.NewWitnessGroupFromPolicy(cfg.WitnessPolicy)
		if err != nil {
			return nil, fmt.Errorf("posix log: witness policy: %w", err)
		}
		// FailOpen stays false: a checkpoint that misses the policy is not
		// published.
		opts = opts.WithWitnesses(wg, &tessera.WitnessOptions{Timeout: cfg.WitnessTimeout})
	}

	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("posix log: %w", err)
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if guard.last, err = checkStorage(ctx, &cfg); err != nil {
		_ = lock.Close()
		return nil, err
	}

	// Tessera's background work must outlive the caller's ctx: it runs
	// until Close.
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l := &Log{
		cfg:      cfg,
		ctx:      bg,
		cancel:   cancel,
		lock:     lock,
		wake:     make(chan struct{}, 1),
		feedWake: make(chan struct{}, 1),
		done:     make(chan struct{}),
		faulted:  make(chan struct{}),
	}
	guard.fault = l.setFault
	// A restored data directory may be behind what the witnesses
	// cosigned: sign nothing until they confirm the last checkpoint.
	startRaw, _ := os.ReadFile(filepath.Join(cfg.Dir, "checkpoint"))
	witnessCheck := len(cfg.WitnessPolicy) > 0 && guard.last != nil && len(startRaw) > 0
	if witnessCheck {
		guard.hold = errWitnessCheckPending
	}
	l.pub.changed = make(chan struct{})
	if err := l.initTessera(opts); err != nil {
		cancel()
		_ = lock.Close()
		return nil, err
	}
	l.prover = newProver(l.reader.ReadTile, func() (uint64, error) { return l.publishedSize(0) })
	if _, err := l.refresh(); err != nil && !errors.Is(err, log.ErrNoCheckpoint) {
		cancel()
		_ = lock.Close()
		return nil, err
	}
	if witnessCheck {
		cctx, ccancel := context.WithTimeout(ctx, cfg.WitnessTimeout+time.Second)
		err := l.checkWitnesses(cctx, startRaw)
		ccancel()
		switch {
		case err == nil:
			guard.release()
		case errors.Is(err, ErrBehindWitnesses):
			cancel()
			_ = lock.Close()
			return nil, err
		default:
			// Witnesses unreachable: retry in the background; appends are
			// durable meanwhile, and nothing is signed.
			go l.confirmWitnesses(startRaw, guard)
		}
	}
	go l.watch()
	go l.feed()
	go l.watchWritable()
	return l, nil
}

// initTessera starts Tessera's appender.
//
// When Tessera initialises an empty directory it writes an empty tree state
// and then publishes the first checkpoint synchronously, failing
// NewAppender if the witness policy cannot be met
// (storage/posix/files.go, appender.initialise). A log whose witnesses are
// down must still start and accept durable appends, so in that one case we
// open a second time: the tree state now exists, Tessera skips the
// synchronous publication, and its publisher keeps retrying in the
// background. No checkpoint is ever published without the policy. If the
// second attempt fails too, New fails: nothing is papered over.
func (l *Log) initTessera(opts *tessera.AppendOptions) error {
	fresh := !exists(filepath.Join(l.cfg.Dir, layout.CheckpointPath))
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var driver tessera.Driver
		driver, err = tposix.New(l.ctx, tposix.Config{Path: l.cfg.Dir, HTTPClient: l.cfg.HTTPClient})
		if err != nil {
			return fmt.Errorf("posix log: %w", err)
		}
		l.appender, l.shutdown, l.reader, err = tessera.NewAppender(l.ctx, driver, opts)
		if err == nil {
			return nil
		}
		if !fresh || len(l.cfg.WitnessPolicy) == 0 {
			break
		}
	}
	return fmt.Errorf("posix log: starting Tessera in %s: %w", l.cfg.Dir, err)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("posix log: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("posix log: %s is in use by another log instance: %w", dir, err)
	}
	return f, nil
}

// Append implements [log.Appender].
//
// # Durability
//
// Append returns only after Tessera resolved every entry's IndexFuture, and
// in Tessera v1.0.4's POSIX driver a future resolves only after the whole
// batch is on disk: storage/internal/queue.go (Queue.doFlush) calls the
// flush function, appender.sequenceBatch in storage/posix/files.go, and
// notifies the futures only when it returns. sequenceBatch, under the tree
// state lock, (1) writes the entry bundles, (2) integrates the batch and
// writes the hash tiles, (3) writes the tree state (size and root), each
// file with createOverwrite -> overwrite in storage/posix/file_ops.go: data
// written with O_SYNC to a temporary file, renamed over the target, then
// the directory fsynced (new directories are fsynced in their parent by
// mkdirAll). So when the future resolves, the entries, the tiles and a tree
// state covering them are durable; a crash afterwards cannot lose them.
// After a restart, sequencing resumes at the durable tree state size and
// only ever rewrites files beyond it, and the publisher signs only the
// durable tree state, so acknowledged indices never change. Entries of a
// batch that crashed before step (3) were never acknowledged.
//
// If Append returns an error other than ErrInvalidEntry or ErrClosed, some
// entries may still be added later; the caller may retry (the protocol's
// entries are unique, so a retry adds a second copy at most, never changes
// a first one).
//
// Indices: the entries of one call get consecutive indices, in order, but
// for one narrow race in Tessera's queue described on feed (which batches
// concurrent calls); Append always returns each entry's true index.
//
// SPEC(design.md 17)
func (l *Log) Append(ctx context.Context, entries [][]byte) ([]uint64, error) {
	if err := log.CheckEntries(entries); err != nil {
		return nil, err
	}
	if err := l.Fault(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, log.ErrClosed
	}
	l.inflight.Add(1)
	l.mu.Unlock()
	defer l.inflight.Done()
	if len(entries) == 0 {
		return []uint64{}, nil
	}

	req := &appendReq{entries: make([]*tessera.Entry, len(entries)), done: make(chan struct{})}
	for i, e := range entries {
		// Tessera keeps the slice until it is written; copy so that a caller
		// reusing its buffer cannot change what gets logged. NewEntry hashes
		// the entry, here in the caller's goroutine rather than the feeder's.
		req.entries[i] = tessera.NewEntry(bytes.Clone(e))
	}
	l.feedMu.Lock()
	l.feedQueue = append(l.feedQueue, req)
	l.feedMu.Unlock()
	select {
	case l.feedWake <- struct{}{}:
	default:
	}
	select {
	case <-req.done:
		return req.idx, req.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.done:
		return nil, log.ErrClosed
	}
}

// appendReq is one Append call waiting for the feeder.
type appendReq struct {
	entries []*tessera.Entry
	idx     []uint64      // set by the feeder before done is closed
	err     error         // set by the feeder before done is closed
	done    chan struct{} // closed by the feeder
}

// feed hands queued Append calls to Tessera in groups: it takes every call
// queued (up to BatchMaxSize entries) and adds their entries to Tessera in
// order, with at most two groups unresolved: one being written, the next
// waiting in Tessera's queue. This is group commit: a group grows while the
// previous ones are written, so under load every Tessera batch is as large
// as the load allows (the fsyncs of a batch are amortised over it), and at
// low load an entry waits only BatchMaxAge. One goroutine adds all entries,
// and a full group is flushed synchronously by the Add of its last entry,
// so the entries of one Append get consecutive indices, in order (short of
// Tessera's age timer firing in the middle of a group and its goroutine
// then stalling for BatchMaxAge before handing its part over; Append
// returns the true indices regardless).
func (l *Log) feed() {
	slots := make(chan struct{}, 2)
	for {
		select {
		case <-l.feedWake:
		case <-l.ctx.Done():
			return
		}
		for {
			select {
			case slots <- struct{}{}:
			case <-l.ctx.Done():
				return
			}
			l.pause.RLock()
			group := l.takeGroup()
			if len(group) == 0 {
				l.pause.RUnlock()
				<-slots
				break
			}
			// Never hand Tessera a batch it would panic on (writable.go).
			if err := l.checkWritable(); err != nil {
				l.setFault(err)
			}
			if err := l.Fault(); err != nil {
				for _, r := range group {
					r.err = fmt.Errorf("posix log: %w", err)
					close(r.done)
				}
				l.pause.RUnlock()
				<-slots
				continue
			}
			futures := l.add(group)
			go func() {
				if !resolve(group, futures) {
					// A write failed: if the storage turned unwritable,
					// stop now rather than at the next batch.
					if err := l.checkWritable(); err != nil {
						l.setFault(err)
					}
				}
				l.pause.RUnlock()
				<-slots
			}()
		}
	}
}

func (l *Log) takeGroup() []*appendReq {
	l.feedMu.Lock()
	defer l.feedMu.Unlock()
	n, i := 0, 0
	for ; i < len(l.feedQueue); i++ {
		k := len(l.feedQueue[i].entries)
		if i > 0 && uint(n+k) > l.cfg.BatchMaxSize {
			break
		}
		n += k
	}
	group := make([]*appendReq, i)
	copy(group, l.feedQueue)
	l.feedQueue = append(l.feedQueue[:0:0], l.feedQueue[i:]...)
	return group
}

// add hands a group's entries to Tessera, in order.
func (l *Log) add(group []*appendReq) [][]tessera.IndexFuture {
	futures := make([][]tessera.IndexFuture, len(group))
	for gi, r := range group {
		futures[gi] = make([]tessera.IndexFuture, len(r.entries))
		for i, e := range r.entries {
			futures[gi][i] = l.appender.Add(l.ctx, e)
		}
	}
	return futures
}

// resolve waits until a group is sequenced (durable) and completes its
// Append calls. It reports whether every entry was sequenced.
func resolve(group []*appendReq, futures [][]tessera.IndexFuture) (ok bool) {
	ok = true
	for gi, r := range group {
		idx := make([]uint64, len(futures[gi]))
		for i, f := range futures[gi] {
			in, err := f()
			if err != nil {
				if errors.Is(err, tessera.ErrPushback) {
					err = fmt.Errorf("%w: %w", log.ErrPushback, err)
				}
				r.err = fmt.Errorf("posix log: entry %d: %w", i, err)
				ok = false
				break
			}
			idx[i] = in.Index
		}
		if r.err == nil {
			r.idx = idx
		}
		close(r.done)
	}
	return ok
}

// Await implements [log.Appender]. It waits without spinning: a single
// goroutine reads the checkpoint file every 5ms while any Await waits, and
// wakes the waiters when it changes.
//
// SPEC(design.md 7)
func (l *Log) Await(ctx context.Context, index uint64) ([]byte, error) {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, log.ErrClosed
		}
		if l.pub.raw != nil && l.pub.size > index {
			raw := l.pub.raw
			l.mu.Unlock()
			return raw, nil
		}
		changed := l.pub.changed
		l.pub.waiters++
		l.mu.Unlock()
		select {
		case l.wake <- struct{}{}:
		default:
		}
		var err error
		select {
		case <-changed:
		case <-ctx.Done():
			err = ctx.Err()
		case <-l.done:
			err = log.ErrClosed
		case <-l.faulted:
			// Nothing more will be published.
			err = fmt.Errorf("posix log: %w", l.Fault())
		}
		l.mu.Lock()
		l.pub.waiters--
		l.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
}

// watch polls the checkpoint file while Await calls wait.
func (l *Log) watch() {
	t := time.NewTicker(awaitPollInterval)
	defer t.Stop()
	for {
		l.mu.Lock()
		waiting := l.pub.waiters > 0
		l.mu.Unlock()
		if !waiting {
			select {
			case <-l.wake:
			case <-l.ctx.Done():
				return
			}
		}
		select {
		case <-t.C:
		case <-l.ctx.Done():
			return
		}
		// Errors are transient (the file is replaced atomically) or
		// persistent and reported by Checkpoint; waiters keep waiting.
		_, _ = l.refresh()
	}
}

// refresh reads the published checkpoint and updates l.pub if it changed.
// It returns the current size, or ErrNoCheckpoint.
func (l *Log) refresh() (uint64, error) {
	l.refreshMu.Lock()
	defer l.refreshMu.Unlock()
	now := time.Now()
	raw, err := os.ReadFile(filepath.Join(l.cfg.Dir, layout.CheckpointPath))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, log.ErrNoCheckpoint
	}
	if err != nil {
		return 0, fmt.Errorf("posix log: reading checkpoint: %w", err)
	}
	size, err := checkpointSize(raw, l.cfg.Origin)
	if err != nil {
		return 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pub.readAt = now
	switch {
	case l.pub.raw != nil && size < l.pub.size:
		// Never observed: Tessera publishes from the tree state, which only
		// grows. Refuse to go backwards rather than serve a rollback.
		return 0, fmt.Errorf("posix log: published checkpoint shrank from %d to %d", l.pub.size, size)
	case !bytes.Equal(raw, l.pub.raw):
		l.pub.raw, l.pub.size = raw, size
		close(l.pub.changed)
		l.pub.changed = make(chan struct{})
	}
	return l.pub.size, nil
}

// checkpointSize parses the checkpoint body. The signature is the log's own,
// written by Tessera in this directory; readers verify it themselves.
func checkpointSize(raw []byte, origin string) (uint64, error) {
	body, _, ok := bytes.Cut(raw, []byte("\n\n"))
	if !ok {
		return 0, errors.New("posix log: malformed checkpoint file: no signature block")
	}
	var cp fmtlog.Checkpoint
	if _, err := cp.Unmarshal(append(body, '\n')); err != nil {
		return 0, fmt.Errorf("posix log: malformed checkpoint file: %w", err)
	}
	if cp.Origin != origin {
		return 0, fmt.Errorf("posix log: checkpoint file has origin %q, want %q", cp.Origin, origin)
	}
	return cp.Size, nil
}

// publishedSize returns the size of the latest published checkpoint, at
// least want if one that large is published: the cached value is used when
// it suffices, so reads below the cached size cost no file access.
func (l *Log) publishedSize(want uint64) (uint64, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, log.ErrClosed
	}
	size, ok := l.pub.size, l.pub.raw != nil
	l.mu.Unlock()
	if ok && size >= want {
		return size, nil
	}
	size, err := l.refresh()
	if errors.Is(err, log.ErrNoCheckpoint) {
		// Nothing is readable before the first checkpoint.
		return 0, fmt.Errorf("%w: %w", log.ErrOutOfRange, err)
	}
	return size, err
}

// Checkpoint implements [log.Reader]. It serves the checkpoint file as read
// at most 20ms ago, so that a busy read path does not read the file on every
// call; it never returns an older checkpoint than one it returned before.
func (l *Log) Checkpoint(ctx context.Context) ([]byte, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, log.ErrClosed
	}
	if raw := l.pub.raw; raw != nil && time.Since(l.pub.readAt) < pollInterval {
		l.mu.Unlock()
		return raw, nil
	}
	l.mu.Unlock()
	if _, err := l.refresh(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pub.raw, nil
}

// Entries implements [log.Reader]. It returns entries from one entry bundle
// at most (256 entries).
func (l *Log) Entries(ctx context.Context, start, end uint64) ([][]byte, error) {
	if start >= end {
		return nil, log.Errorf(log.ErrOutOfRange, "empty or inverted range [%d, %d)", start, end)
	}
	size, err := l.publishedSize(end)
	if err != nil {
		return nil, err
	}
	if end > size {
		return nil, log.Errorf(log.ErrOutOfRange, "range [%d, %d) beyond published size %d", start, end, size)
	}
	n := start / layout.EntryBundleWidth
	b, err := client.GetEntryBundle(ctx, l.reader.ReadEntryBundle, n, size)
	if err != nil {
		return nil, fmt.Errorf("posix log: %w", err)
	}
	first := start % layout.EntryBundleWidth
	last := min(end-n*layout.EntryBundleWidth, uint64(len(b.Entries)))
	if want := min(end, (n+1)*layout.EntryBundleWidth) - n*layout.EntryBundleWidth; uint64(len(b.Entries)) < want {
		return nil, fmt.Errorf("posix log: entry bundle %d has %d entries, want at least %d", n, len(b.Entries), want)
	}
	out := make([][]byte, 0, last-first)
	for _, e := range b.Entries[first:last] {
		out = append(out, bytes.Clone(e))
	}
	return out, nil
}

// InclusionProof implements [log.Reader].
func (l *Log) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	if index >= size {
		return nil, log.Errorf(log.ErrOutOfRange, "index %d not below tree size %d", index, size)
	}
	pub, err := l.publishedSize(size)
	if err != nil {
		return nil, err
	}
	if size > pub {
		return nil, log.Errorf(log.ErrOutOfRange, "tree size %d beyond published size %d", size, pub)
	}
	p, err := l.prover.inclusion(ctx, index, size)
	if err != nil {
		return nil, fmt.Errorf("posix log: inclusion proof for %d in %d: %w", index, size, err)
	}
	return p, nil
}

// ConsistencyProof implements [log.Reader].
func (l *Log) ConsistencyProof(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
	if oldSize == 0 || oldSize > newSize {
		return nil, log.Errorf(log.ErrOutOfRange, "consistency needs 0 < old <= new, got %d, %d", oldSize, newSize)
	}
	pub, err := l.publishedSize(newSize)
	if err != nil {
		return nil, err
	}
	if newSize > pub {
		return nil, log.Errorf(log.ErrOutOfRange, "tree size %d beyond published size %d", newSize, pub)
	}
	if oldSize == newSize {
		return [][]byte{}, nil
	}
	p, err := l.prover.consistency(ctx, oldSize, newSize)
	if err != nil {
		return nil, fmt.Errorf("posix log: consistency proof %d -> %d: %w", oldSize, newSize, err)
	}
	return p, nil
}

// Close implements [log.Log]. It refuses new Appends, waits for those in
// flight, waits (bounded by ctx) until a published checkpoint covers every
// acknowledged entry, then stops Tessera and releases the directory lock.
// Acknowledged entries are durable whether or not that checkpoint was
// published in time: the next New publishes it.
func (l *Log) Close(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return log.ErrClosed
	}
	l.closed = true
	l.mu.Unlock()

	var errs []error
	drained := make(chan struct{})
	go func() { l.inflight.Wait(); close(drained) }()
	select {
	case <-drained:
		if err := l.checkWritable(); err != nil {
			l.setFault(err)
		}
		if err := l.Fault(); err != nil {
			// Nothing will be published: do not wait for it.
			errs = append(errs, err)
			break
		}
		if err := l.shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("posix log: waiting for the final checkpoint: %w", err))
		}
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("posix log: waiting for appends in flight: %w", ctx.Err()))
	}
	close(l.done)
	l.cancel()
	if err := l.lock.Close(); err != nil {
		errs = append(errs, fmt.Errorf("posix log: releasing lock: %w", err))
	}
	return errors.Join(errs...)
}

var _ log.Log = (*Log)(nil)
