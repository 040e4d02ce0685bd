package trillian

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	tpb "github.com/google/trillian"
	"github.com/google/trillian/types"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/tlogtiles"
	"github.com/keytrans/kt/log/witness"
)

// Defaults for the optional Config fields.
const (
	DefaultCheckpointInterval = time.Second
	DefaultMaxPollInterval    = 50 * time.Millisecond
	DefaultQueueParallelism   = 32
)

// Config configures a Log. Conn, Origin, Signer and either TreeID or
// CreateTree are required; everything else has a documented default.
type Config struct {
	// Conn is a gRPC connection to trillian_log_server (required). It must
	// serve both the TrillianLog and the TrillianAdmin services, as
	// trillian_log_server does. The caller owns it: Close does not close it.
	Conn grpc.ClientConnInterface

	// TreeID is the Trillian tree holding the log: an existing, initialised,
	// ACTIVE tree of type LOG (see CreateTree, or Trillian's createtree with
	// --tree_type=LOG). Leave it 0 and set CreateTree to create one; the new
	// ID is then available from Log.TreeID and must be configured for every
	// later start, or the log starts empty again.
	TreeID int64

	// CreateTree, with TreeID 0, creates and initialises a new tree in New.
	CreateTree bool

	// DisplayName names a tree that New creates, at most 20 bytes, the
	// limit of Trillian's MySQL schema (default Origin, truncated).
	DisplayName string

	// Origin is the checkpoint origin line (required), for example
	// "localhost/kt".
	Origin string

	// Signer is the log's checkpoint key (required), an Ed25519 note signer
	// such as log.LoadOrCreateSigner returns. Its name should equal Origin,
	// as C2SP tlog-checkpoint recommends and witnesses expect. Trillian's
	// own SignedLogRoot is not a checkpoint (and is unsigned since Trillian
	// v1.4): this Log signs the checkpoints itself.
	Signer note.Signer

	// WitnessPolicy, when set, is a witness policy in Sigsum policy format
	// ("witness NAME VKEY URL", "group NAME K|any|all MEMBERS...",
	// "quorum NAME"; see package log/witness). A checkpoint is then
	// published only once the quorum's cosignatures are gathered over C2SP
	// tlog-witness, and it is published with them. Until then the previous
	// checkpoint stays published (or none, for a log that never published:
	// Checkpoint returns log.ErrNoCheckpoint). "quorum none" publishes
	// without witnesses.
	WitnessPolicy []byte

	// HTTPClient is used to reach witnesses (default: a client with Go's
	// default transport).
	HTTPClient *http.Client

	// WitnessTimeout bounds the requests to one witness for one checkpoint
	// (default witness.DefaultTimeout).
	WitnessTimeout time.Duration

	// CheckpointInterval is how often the latest Trillian root is turned
	// into a signed checkpoint when the tree has grown, at least 10ms
	// (default DefaultCheckpointInterval). Await waits for it.
	CheckpointInterval time.Duration

	// MaxPollInterval bounds the backoff between polls of Trillian while an
	// Append waits for its entries to be sequenced (default
	// DefaultMaxPollInterval, half of the signer's default
	// --sequencer_interval of 100ms). Polling starts at 10ms after each
	// batch of newly sequenced leaves and doubles up to this bound. An
	// Append learns of its sequenced entries up to this much late (on
	// average half of it), so choose at most half the signer's
	// --sequencer_interval; but each poll costs trillian_log_server two
	// database transactions, and one Log polls whenever any Append waits,
	// so very short bounds spend CPU that QueueLeaf calls need.
	MaxPollInterval time.Duration

	// QueueParallelism is the most QueueLeaf calls the Log has in flight at
	// once, over all running Appends (default DefaultQueueParallelism).
	// Trillian v1.8.0 queues one leaf per call, in a database transaction
	// of its own, so concurrent calls are what lets the database commit
	// many entries per log flush (group commit). The gain flattens once
	// trillian_log_server or the database runs out of CPU (on a 2-core
	// test machine, beyond about 16); more calls then only contend, and
	// slow the signer's passes down. Each call holds a database
	// connection in trillian_log_server: keep this below its
	// --mysql_max_conns, and set its --mysql_max_idle_conns to about this
	// value, or the server reconnects to the database for most calls (Go's
	// database/sql keeps only 2 idle connections by default).
	QueueParallelism int

	// TileCacheTiles bounds the memory of the tlog-tiles the Log serves
	// (TilesHandler): it keeps up to this many full hash tiles of level 0,
	// and as many of the levels above, 8 KiB each (default
	// tlogtiles.DefaultCacheTiles, 32 MiB in all).
	TileCacheTiles int

	// Logger receives operational messages (default slog.Default()).
	Logger *slog.Logger
}

// Log is a log.Log over a Trillian tree. Its methods are safe for concurrent
// use.
//
// Goroutines: New starts two, both owned by the Log and stopped by Close:
// the checkpointer (publishes checkpoints) and the follower (reads newly
// sequenced leaves to tell waiting Appends their indices; idle while no
// Append waits).
type Log struct {
	cfg       Config
	treeID    int64
	client    tpb.TrillianLogClient
	logger    *slog.Logger
	witnesser *witness.Witnesser // nil without a witness policy
	tiles     *tlogtiles.Builder // hash tiles and entry bundles, from Entries

	// queueSem (capacity Config.QueueParallelism) bounds the QueueLeaf
	// calls in flight, over all Appends.
	queueSem chan struct{}

	// inflight counts Append calls, which Close waits for.
	inflight sync.WaitGroup

	stop    context.CancelFunc // stops the goroutines
	done    chan struct{}      // closed by Close, wakes waiters
	workers sync.WaitGroup

	wake chan struct{} // buffered(1): a waiter was registered

	mu sync.Mutex
	// Fields below are guarded by mu.
	closed    bool
	failed    error                  // sticky: a fork was seen
	published *checkpoint            // latest published checkpoint, nil before the first
	pubCh     chan struct{}          // closed and replaced at every publication
	knownSize uint64                 // largest tree size Trillian reported
	scanned   uint64                 // leaves below were matched against waiters
	pending   map[[32]byte][]*waiter // waiters by RFC 6962 leaf hash
	npending  int
}

// checkpoint is a published checkpoint.
type checkpoint struct {
	size uint64
	root []byte
	note []byte // the signed note, with cosignatures
}

// New connects to the tree described by cfg, publishes a checkpoint of its
// current root, and starts the background goroutines. It fails when the tree
// does not exist, is not an initialised, ACTIVE tree of type LOG, or Trillian
// cannot be reached.
//
// SPEC(design.md 9.1)
// SPEC(design.md 17)
func New(ctx context.Context, cfg Config) (*Log, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = DefaultCheckpointInterval
	}
	if cfg.MaxPollInterval == 0 {
		cfg.MaxPollInterval = DefaultMaxPollInterval
	}
	if cfg.QueueParallelism == 0 {
		cfg.QueueParallelism = DefaultQueueParallelism
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DisplayName == "" {
		cfg.DisplayName = truncate(cfg.Origin, maxDisplayName)
	}
	var witnesser *witness.Witnesser
	if len(cfg.WitnessPolicy) > 0 {
		p, err := witness.ParsePolicy(cfg.WitnessPolicy)
		if err != nil {
			return nil, fmt.Errorf("trillian: witness policy: %w", err)
		}
		if logs := p.Logs(); len(logs) > 0 && !slices.ContainsFunc(logs, func(pl *witness.Log) bool {
			v := pl.Verifier()
			return v.Name() == cfg.Signer.Name() && v.KeyHash() == cfg.Signer.KeyHash()
		}) {
			return nil, fmt.Errorf("trillian: the witness policy lists logs, but not this log's key %s+%08x", cfg.Signer.Name(), cfg.Signer.KeyHash())
		}
		if !p.QuorumNone() {
			witnesser, err = witness.NewWitnesser(p, witness.WitnesserOpts{
				Client:  cfg.HTTPClient,
				Timeout: cfg.WitnessTimeout,
				Logger:  cfg.Logger,
			})
			if err != nil {
				return nil, fmt.Errorf("trillian: witness policy: %w", err)
			}
		}
	}
	admin := tpb.NewTrillianAdminClient(cfg.Conn)
	client := tpb.NewTrillianLogClient(cfg.Conn)
	treeID := cfg.TreeID
	if cfg.CreateTree {
		id, err := CreateTree(ctx, admin, client, cfg.DisplayName)
		if err != nil {
			return nil, err
		}
		treeID = id
		cfg.Logger.InfoContext(ctx, "created Trillian tree", "tree_id", treeID, "origin", cfg.Origin)
	}
	tree, err := admin.GetTree(ctx, &tpb.GetTreeRequest{TreeId: treeID})
	if err != nil {
		return nil, fmt.Errorf("tree %d: %w", treeID, grpcError("GetTree", err))
	}
	if tree.TreeType != tpb.TreeType_LOG {
		return nil, fmt.Errorf("tree %d has type %v; this backend needs a tree of type LOG", treeID, tree.TreeType)
	}
	if tree.TreeState != tpb.TreeState_ACTIVE {
		return nil, fmt.Errorf("tree %d is %v, not ACTIVE", treeID, tree.TreeState)
	}

	bg, stop := context.WithCancel(context.Background())
	l := &Log{
		cfg:       cfg,
		treeID:    treeID,
		client:    client,
		logger:    cfg.Logger.With("tree_id", treeID),
		witnesser: witnesser,
		stop:      stop,
		done:      make(chan struct{}),
		wake:      make(chan struct{}, 1),
		queueSem:  make(chan struct{}, cfg.QueueParallelism),
		pubCh:     make(chan struct{}),
		pending:   map[[32]byte][]*waiter{},
	}
	if l.tiles, err = tlogtiles.NewBuilder(l.Entries, cfg.TileCacheTiles); err != nil {
		stop()
		return nil, fmt.Errorf("trillian: %w", err)
	}
	// Publish the current root before New returns, so that a fresh Log
	// serves reads at once. On a restart this recomputes the checkpoint
	// from Trillian's current root: nothing of the Log's own is persisted.
	// Witnesses that do not answer do not stop New: the checkpointer
	// tries again at every interval.
	err = l.checkpointOnce(ctx)
	var werr *witnessingError
	switch {
	case errors.As(err, &werr):
		l.logger.WarnContext(ctx, "first checkpoint not witnessed yet; retrying in the background", "error", err)
	case status.Code(err) == codes.FailedPrecondition:
		stop()
		return nil, fmt.Errorf("tree %d is not initialised (InitLog was never called; use CreateTree): %w", treeID, err)
	case err != nil:
		stop()
		return nil, err
	}
	l.workers.Add(2)
	go l.runCheckpointer(bg)
	go l.runFollower(bg)
	return l, nil
}

func (c *Config) validate() error {
	switch {
	case c.Conn == nil:
		return errors.New("trillian: Config.Conn is required")
	case c.Origin == "":
		return errors.New("trillian: Config.Origin is required")
	case c.Signer == nil:
		return errors.New("trillian: Config.Signer is required")
	case c.TreeID == 0 && !c.CreateTree:
		return errors.New("trillian: Config.TreeID is required (or set CreateTree to create a tree)")
	case c.TreeID != 0 && c.CreateTree:
		return fmt.Errorf("trillian: Config.CreateTree is set together with TreeID %d; set only one", c.TreeID)
	case c.TreeID < 0:
		return fmt.Errorf("trillian: Config.TreeID %d is negative", c.TreeID)
	case c.CheckpointInterval < 0 || (c.CheckpointInterval > 0 && c.CheckpointInterval < 10*time.Millisecond):
		return fmt.Errorf("trillian: Config.CheckpointInterval %v is below 10ms", c.CheckpointInterval)
	case len(c.DisplayName) > maxDisplayName:
		return fmt.Errorf("trillian: Config.DisplayName %q is longer than %d bytes", c.DisplayName, maxDisplayName)
	case c.MaxPollInterval < 0:
		return fmt.Errorf("trillian: Config.MaxPollInterval %v is negative", c.MaxPollInterval)
	case c.QueueParallelism < 0:
		return fmt.Errorf("trillian: Config.QueueParallelism %d is negative", c.QueueParallelism)
	case c.TileCacheTiles < 0:
		return fmt.Errorf("trillian: Config.TileCacheTiles %d is negative", c.TileCacheTiles)
	case c.WitnessTimeout < 0:
		return fmt.Errorf("trillian: Config.WitnessTimeout %v is negative", c.WitnessTimeout)
	}
	return nil
}

// TreeID returns the ID of the Trillian tree this Log uses.
func (l *Log) TreeID() int64 { return l.treeID }

// CreateTree creates a Trillian tree of type LOG for a key transparency log
// and initialises it (InitLog), returning its ID. New calls it when
// Config.CreateTree is set; operators call it through ktctl.
//
// The tree's max root duration is 0: Trillian writes a new root only when
// leaves were added. Freshness is the directory's business (epoch records),
// not Trillian's.
func CreateTree(ctx context.Context, admin tpb.TrillianAdminClient, client tpb.TrillianLogClient, displayName string) (int64, error) {
	tree, err := admin.CreateTree(ctx, &tpb.CreateTreeRequest{Tree: &tpb.Tree{
		TreeState:       tpb.TreeState_ACTIVE,
		TreeType:        tpb.TreeType_LOG,
		DisplayName:     displayName,
		Description:     "key transparency log (github.com/keytrans/kt)",
		MaxRootDuration: durationpb.New(0),
	}})
	if err != nil {
		return 0, grpcError("CreateTree", err)
	}
	if _, err := client.InitLog(ctx, &tpb.InitLogRequest{LogId: tree.TreeId}); err != nil {
		return 0, fmt.Errorf("tree %d was created but not initialised: %w", tree.TreeId, grpcError("InitLog", err))
	}
	return tree.TreeId, nil
}

// Close stops the goroutines. It waits, within ctx, for running Append
// calls; those still running when ctx ends fail with log.ErrClosed, as do
// all Await calls.
// Everything an Append acknowledged is already durable in Trillian. Close
// does not close Config.Conn. Closing twice returns log.ErrClosed.
func (l *Log) Close(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return log.ErrClosed
	}
	l.closed = true
	l.mu.Unlock()

	drained := make(chan struct{})
	go func() { l.inflight.Wait(); close(drained) }()
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		err = fmt.Errorf("trillian: Close gave up waiting for running calls: %w", ctx.Err())
	}
	close(l.done)
	l.stop()
	l.workers.Wait()
	return err
}

// enter registers a running call, or fails when the Log is closed or has
// seen a fork.
func (l *Log) enter() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return log.ErrClosed
	}
	if l.failed != nil {
		return l.failed
	}
	l.inflight.Add(1)
	return nil
}

// observeSize records a tree size reported by Trillian.
func (l *Log) observeSize(size uint64) {
	l.mu.Lock()
	l.knownSize = max(l.knownSize, size)
	l.mu.Unlock()
}

// latestRoot returns Trillian's latest log root, which may be ahead of
// the published checkpoint, and records its size (observeSize).
func (l *Log) latestRoot(ctx context.Context) (*types.LogRootV1, error) {
	resp, err := l.client.GetLatestSignedLogRoot(ctx, &tpb.GetLatestSignedLogRootRequest{LogId: l.treeID})
	if err != nil {
		return nil, grpcError("GetLatestSignedLogRoot", err)
	}
	root, err := parseRoot(resp.SignedLogRoot)
	if err != nil {
		return nil, err
	}
	l.observeSize(root.TreeSize)
	return root, nil
}

// parseRoot decodes the root inside a SignedLogRoot.
func parseRoot(slr *tpb.SignedLogRoot) (*types.LogRootV1, error) {
	if slr == nil {
		return nil, errors.New("trillian: response has no log root")
	}
	var root types.LogRootV1
	if err := root.UnmarshalBinary(slr.LogRoot); err != nil {
		return nil, fmt.Errorf("trillian: malformed log root: %w", err)
	}
	if len(root.RootHash) != 32 {
		return nil, fmt.Errorf("trillian: log root hash has %d bytes, want 32", len(root.RootHash))
	}
	return &root, nil
}

// maxDisplayName is the longest tree display name Trillian's MySQL schema
// stores (VARCHAR(20)).
const maxDisplayName = 20

// truncate shortens s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// sleep waits for d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
