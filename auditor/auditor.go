// Package auditor is the key transparency auditor behind ktauditor: it
// follows directories' logs through their read API and replays them
// (docs/design.md section 14, with [github.com/keytrans/kt/auditor/replay]),
// serves the C2SP tlog-witness add-checkpoint call and cosigns
// (tlog-cosignature/v1) only checkpoints consistent with everything it has
// seen, makes audit statements with a separate audit key on the
// checkpoints it audited ([Auditor.Audit], POST /kt/v1/audit, section
// 14.2), gossips checkpoints with peer auditors and clients (section 15),
// and turns a split view into a kt-evidence/v1 bundle and each rule
// violation its replay finds into a kt-evidence/v2 bundle (section 15.1,
// [github.com/keytrans/kt/log/evidence]) that it stores, serves, logs,
// counts, gossips and posts to a webhook. After split-view evidence for a
// log it stops cosigning that log until an operator acts
// ([Store.Unfreeze]); after any evidence it answers every gossiped
// checkpoint of the log with a bundle.
//
// # Goroutines and locks
//
// [Auditor.Run] owns every background goroutine: one follower per audited
// log (poll and replay), one gossip loop per log with peers, and webhook
// posts; it returns when they have ended. Each log's state is guarded by
// two mutexes: logState.audit serialises audit steps (the replay engine is
// touched only under it, and it is held across the log reads of one step),
// and logState.mu guards the small fields that HTTP handlers read and the
// witness state (held only for memory and store operations, never for
// network I/O, so witnessing never waits for a long catch-up).
package auditor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	fmtlog "github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/auditor/replay"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/evidence"
	"github.com/keytrans/kt/log/witness"
	"github.com/keytrans/kt/vrf"
)

// Defaults of the optional [Config] and [LogConfig] fields.
const (
	// DefaultPollInterval is the default Config.PollInterval.
	DefaultPollInterval = 2 * time.Second
	// DefaultGossipInterval is the default Config.GossipInterval.
	DefaultGossipInterval = 30 * time.Second
	// DefaultProgressInterval is the default Config.ProgressInterval.
	DefaultProgressInterval = 10 * time.Second
	// DefaultSaveInterval is the default Config.SaveInterval.
	DefaultSaveInterval = 5 * time.Minute
	// DefaultAuditWait is the default Config.AuditWait.
	DefaultAuditWait = 5 * time.Second
	// DefaultMaxBodyBytes is the default Config.MaxBodyBytes.
	DefaultMaxBodyBytes = 64 << 10
	// DefaultSkew is the default LogConfig.Skew: the client's default
	// tolerance (client.DefaultSkew; a test keeps them equal).
	DefaultSkew = 10 * time.Second
	// DefaultHeartbeat is the heartbeat interval of a directory on its
	// defaults (directory.DefaultHeartbeatInterval; a test keeps them
	// equal), for callers such as ktauditor that assume it when none is
	// configured. LogConfig.Heartbeat itself has no default: zero turns
	// the late-epoch warning off.
	DefaultHeartbeat = 10 * time.Second
)

// LogConfig describes one log the auditor knows.
type LogConfig struct {
	// Origin is the log's origin (the first line of its checkpoints).
	Origin string
	// VKey is the log's Ed25519 signed-note verifier key, named Origin.
	VKey string
	// RecoveryKey is the directory's recovery public key (rule R6). Only
	// used when the log is audited.
	RecoveryKey [32]byte
	// Heartbeat is the directory's heartbeat interval, for the late-epoch
	// warning of design.md 14 step 4 (zero: no warning).
	Heartbeat time.Duration
	// WitnessPolicy is the log's witness policy, for the future-epoch
	// warning of design.md 14 step 4: an epoch timestamp later than the
	// latest valid cosignature on the checkpoint covering it, by more than
	// Skew. nil: no check.
	WitnessPolicy *witness.Policy
	// Skew is the clock skew tolerated by the future-epoch warning
	// (default DefaultSkew, the client's default).
	Skew time.Duration
	// Reader reads the log, usually logapi.NewClient over the directory's
	// read API. nil means the log is witnessed (and gossiped) but not
	// audited: for logs that are not key transparency logs, such as a plain
	// Tessera log.
	Reader log.Reader
}

// Peer is another auditor to gossip with.
type Peer struct {
	// Name identifies the peer in logs, metrics and the status page.
	Name string
	// URL is the peer's base URL; the auditor posts to URL/kt/v1/gossip.
	URL string
}

// Config configures an Auditor. Required: Logs and Store.
type Config struct {
	// Logs are the logs the auditor audits or witnesses. Origins must be
	// distinct.
	Logs []LogConfig
	// Store is the durable state.
	Store *Store
	// Cosigner signs tlog-cosignature/v1 cosignatures
	// (formats/note.NewSignerForCosignatureV1). nil disables the witness
	// endpoint (404).
	Cosigner note.Signer
	// AuditSigner signs audit statements (design.md 14.1): a
	// tlog-cosignature/v1 signer (formats/note.NewSignerForCosignatureV1)
	// of the auditor's audit key, which must not be its witness key
	// (Cosigner). Its statements answer POST /kt/v1/audit ([Auditor.Audit])
	// and are added to the latest audited checkpoint served at GET
	// /kt/v1/checkpoint. nil disables them (404).
	AuditSigner note.Signer
	// AuditWait bounds how long POST /kt/v1/audit waits for the audit of
	// a checkpoint beyond the audited size (default DefaultAuditWait;
	// the request's context bounds it too) before answering 503.
	AuditWait time.Duration
	// Peers are the auditors to gossip with every GossipInterval.
	Peers []Peer
	// PollInterval is how often each audited log's checkpoint is polled
	// (default DefaultPollInterval).
	PollInterval time.Duration
	// GossipInterval is how often checkpoints are exchanged with each peer
	// (default DefaultGossipInterval).
	GossipInterval time.Duration
	// ProgressInterval is how often a long catch-up logs its progress and,
	// unless Run follows the log (SaveInterval), saves the replay state
	// (default DefaultProgressInterval).
	ProgressInterval time.Duration
	// SaveInterval is how often the whole replay state is saved while Run
	// follows the logs (default DefaultSaveInterval), besides when
	// violations are found and when Run stops. A restart after a crash
	// replays at most this much of the log again. Saving rewrites about
	// 110 bytes per handle and holds up the audit steps (and so the
	// audit statements that epochs wait for) while it runs.
	SaveInterval time.Duration
	// HTTPClient is used for peers and the webhook (default: a client with
	// a 10s timeout).
	HTTPClient *http.Client
	// EvidenceDir, when set, receives each evidence bundle as a file.
	EvidenceDir string
	// WebhookURL, when set, receives each evidence bundle in a POST
	// (Content-Type text/plain; header Kt-Origin).
	WebhookURL string
	// MaxBodyBytes bounds request bodies (default DefaultMaxBodyBytes);
	// larger ones get 413.
	MaxBodyBytes int64
	// Metrics receives measurements (default: none).
	Metrics Metrics
	// Logger receives the auditor's logs (default slog.Default()).
	Logger *slog.Logger
}

// Auditor audits, witnesses and gossips. Create it with New and start its
// background work with Run; Handler serves its HTTP endpoints.
type Auditor struct {
	cfg      Config
	logs     map[string]*logState
	order    []string
	log      *slog.Logger
	m        Metrics
	bgMu     sync.Mutex // guards bgCtx and bgClosed, and orders bg.Add before bg.Wait
	bg       sync.WaitGroup
	bgCtx    context.Context
	bgClosed bool
	peerMu   sync.Mutex // guards peers
	peers    map[string]*PeerStatus
	// gossiped holds origin, peer and evidence id (NUL-separated) of each
	// bundle a peer took (gossipBundles).
	gossiped sync.Map
}

type logState struct {
	cfg LogConfig
	// configured verifies the configured log key; keys are the log's
	// current keys, which the replay follows across rotations (design.md
	// 11.1; see followKeys).
	configured note.Verifier
	keys       atomic.Pointer[logKeys]

	audit      sync.Mutex // serialises audit steps; guards engine and stateSaved
	engine     *replay.Engine
	stateSaved time.Time // when the replay state was last written
	following  bool      // the follower drives the steps (saveState may defer)
	// kick asks the follower (Run) for an audit step now; its buffer of
	// one coalesces requests that arrive during a step.
	kick chan struct{}

	mu         sync.Mutex // guards the fields below
	latest     *replay.Checkpoint
	clean      *replay.Checkpoint
	target     uint64 // size of the latest checkpoint read from the log
	replayed   uint64 // entries replayed and saved
	rate       float64
	violations uint64
	firstBad   uint64 // index of the first violation, if violations > 0
	warnings   uint64 // since the start of the process
	frozen     string
	evidence   []string // ids, in arrival order
	lastErr    string
	cosigned   []byte // latest note cosigned as a witness
	cosSize    uint64
	cosRoot    []byte
	stated     []byte        // latest plus our audit statement, nil without one
	changed    chan struct{} // closed (and replaced) when the audited view changes
}

// notify wakes the requests waiting for the audited view to change. The
// caller holds ls.mu.
func (ls *logState) notify() {
	close(ls.changed)
	ls.changed = make(chan struct{})
}

// violationBelow reports whether the replay found a violation at an index
// below n. The caller holds ls.mu.
func (ls *logState) violationBelow(n uint64) bool {
	return ls.violations > 0 && ls.firstBad < n
}

// New returns an auditor, restoring each log's state from the store.
func New(cfg Config) (*Auditor, error) {
	if cfg.Store == nil {
		return nil, errors.New("auditor: no store")
	}
	if len(cfg.Logs) == 0 {
		return nil, errors.New("auditor: no logs")
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.GossipInterval == 0 {
		cfg.GossipInterval = DefaultGossipInterval
	}
	if cfg.SaveInterval == 0 {
		cfg.SaveInterval = DefaultSaveInterval
	}
	if cfg.ProgressInterval == 0 {
		cfg.ProgressInterval = DefaultProgressInterval
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.AuditWait == 0 {
		cfg.AuditWait = DefaultAuditWait
	}
	if cfg.PollInterval < 0 || cfg.GossipInterval < 0 || cfg.ProgressInterval < 0 || cfg.MaxBodyBytes < 0 || cfg.AuditWait < 0 {
		return nil, errors.New("auditor: negative interval or size")
	}
	if cfg.Metrics == nil {
		cfg.Metrics = nopMetrics{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Auditor{cfg: cfg, logs: map[string]*logState{}, log: cfg.Logger, m: cfg.Metrics, peers: map[string]*PeerStatus{}, bgCtx: context.Background()}
	for _, p := range cfg.Peers {
		if p.Name == "" || p.URL == "" {
			return nil, errors.New("auditor: peer without name or URL")
		}
		if _, dup := a.peers[p.Name]; dup {
			return nil, fmt.Errorf("auditor: peer %q listed twice", p.Name)
		}
		a.peers[p.Name] = &PeerStatus{Name: p.Name, URL: p.URL}
	}
	for _, lc := range cfg.Logs {
		ls, err := a.openLog(lc)
		if err != nil {
			return nil, err
		}
		if _, dup := a.logs[lc.Origin]; dup {
			return nil, fmt.Errorf("auditor: log %q listed twice", lc.Origin)
		}
		a.logs[lc.Origin] = ls
		a.order = append(a.order, lc.Origin)
	}
	return a, nil
}

func (a *Auditor) openLog(lc LogConfig) (*logState, error) {
	v, err := note.NewVerifier(lc.VKey)
	if err != nil {
		return nil, fmt.Errorf("auditor: log %q: verifier key: %w", lc.Origin, err)
	}
	if v.Name() != lc.Origin {
		return nil, fmt.Errorf("auditor: log %q: verifier key is named %q", lc.Origin, v.Name())
	}
	ls := &logState{cfg: lc, configured: v, kick: make(chan struct{}, 1), changed: make(chan struct{})}
	ls.keys.Store(&logKeys{verifier: v, recovery: lc.RecoveryKey})
	st := a.cfg.Store
	rcfg := replay.Config{Origin: lc.Origin, Verifier: v, RecoveryKey: lc.RecoveryKey, Heartbeat: lc.Heartbeat, VerifyVRFProof: vrf.VerifyRotationProof}
	if lc.Reader != nil {
		b, err := st.get(key(kindReplay, lc.Origin))
		if err != nil {
			return nil, err
		}
		if b == nil {
			ls.engine, err = replay.New(rcfg)
		} else {
			ls.engine, err = replay.Restore(rcfg, b)
		}
		if err != nil {
			return nil, fmt.Errorf("auditor: log %q: %w", lc.Origin, err)
		}
		ls.followKeys()
		ls.latest, ls.clean = ls.engine.Last(), ls.engine.Clean()
		ls.violations, ls.firstBad, _ = ls.engine.Violations()
		ls.target = ls.engine.Size()
		ls.replayed = ls.engine.Size()
	}
	if w, err := st.get(key(kindWitness, lc.Origin)); err != nil {
		return nil, err
	} else if w != nil {
		cp, _, err := log.ParseCheckpoint(w, lc.Origin, ls.logVerifier())
		if err != nil {
			// Cosigned before a rotation the replay followed since.
			cp, _, err = log.ParseCheckpoint(w, lc.Origin, v)
		}
		if err != nil {
			return nil, fmt.Errorf("auditor: log %q: stored witness checkpoint: %w", lc.Origin, err)
		}
		ls.cosigned, ls.cosSize, ls.cosRoot = w, cp.Size, cp.Hash
	}
	f, err := st.get(key(kindFrozen, lc.Origin))
	if err != nil {
		return nil, err
	}
	ls.frozen = string(f)
	evs, err := st.list(key(kindEvidence, lc.Origin))
	if err != nil {
		return nil, err
	}
	for _, e := range evs {
		ls.evidence = append(ls.evidence, evidenceID(e))
	}
	if ls.frozen == "" {
		ls.stated = a.stateLatest(ls, ls.latest, ls.violations, ls.firstBad)
	}
	return ls, nil
}

func evidenceID(bundle []byte) string {
	h := sha256.Sum256(bundle)
	return hex.EncodeToString(h[:])
}

// Run follows every audited log and gossips with the peers until ctx is
// done. It returns nil after ctx is cancelled, once its goroutines ended.
func (a *Auditor) Run(ctx context.Context) error {
	a.bgMu.Lock()
	a.bgCtx = ctx
	a.bgMu.Unlock()
	var wg sync.WaitGroup
	for _, o := range a.order {
		ls := a.logs[o]
		if ls.cfg.Reader != nil {
			wg.Go(func() { a.follow(ctx, ls) })
		}
		if len(a.cfg.Peers) > 0 {
			wg.Go(func() { a.gossipLoop(ctx, ls) })
		}
	}
	wg.Wait()
	a.bgMu.Lock()
	a.bgClosed = true
	a.bgMu.Unlock()
	a.bg.Wait()
	return nil
}

// background runs f in a goroutine that Run waits for before it returns;
// after Run ended, f is dropped (logged).
func (a *Auditor) background(what string, f func(ctx context.Context)) {
	a.bgMu.Lock()
	defer a.bgMu.Unlock()
	if a.bgClosed {
		a.log.Error("shutting down: dropped", "what", what)
		return
	}
	ctx := a.bgCtx
	a.bg.Go(func() { f(ctx) })
}

func (a *Auditor) follow(ctx context.Context, ls *logState) {
	ls.audit.Lock()
	ls.following = true
	ls.audit.Unlock()
	t := time.NewTicker(a.cfg.PollInterval)
	defer t.Stop()
	for {
		if err := a.AuditOnce(ctx, ls.cfg.Origin); err != nil && ctx.Err() == nil {
			a.log.Warn("audit step failed", "origin", ls.cfg.Origin, "err", err)
		}
		select {
		case <-ctx.Done():
			a.flushState(ls)
			return
		case <-t.C:
		case <-ls.kick: // SPEC(design.md 14.2): an audit request triggers a step
		}
	}
}

// flushState writes ls's replay state if steps since the last write left
// it unsaved (saveState writes it at most every ProgressInterval).
func (a *Auditor) flushState(ls *logState) {
	ls.audit.Lock()
	defer ls.audit.Unlock()
	ls.following = false
	if err := a.saveState(ls, nil, nil); err != nil {
		a.log.Error("saving the replay state", "origin", ls.cfg.Origin, "err", err)
	}
}

// ErrUnknownLog reports an origin the auditor is not configured for.
var ErrUnknownLog = errors.New("auditor: unknown log")

// ErrNotAudited reports a log that the auditor witnesses but does not
// audit.
var ErrNotAudited = errors.New("auditor: log is not audited")

// AuditOnce reads the log's latest checkpoint and audits up to it: the
// signature, consistency with the last audited checkpoint (evidence if
// not), the new entries replayed, and the root. Violations and the replay
// state are stored as it goes, so a restart resumes where it stopped.
func (a *Auditor) AuditOnce(ctx context.Context, origin string) error {
	ls, ok := a.logs[origin]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownLog, origin)
	}
	if ls.cfg.Reader == nil {
		return fmt.Errorf("%w: %q", ErrNotAudited, origin)
	}
	ls.audit.Lock()
	defer ls.audit.Unlock()
	err := a.auditLocked(ctx, ls)
	ls.mu.Lock()
	ls.lastErr = ""
	if err != nil {
		ls.lastErr = err.Error()
	}
	ls.mu.Unlock()
	return err
}

// SPEC(design.md 14)
func (a *Auditor) auditLocked(ctx context.Context, ls *logState) error {
	r := ls.cfg.Reader
	raw, err := r.Checkpoint(ctx)
	if err != nil {
		return fmt.Errorf("reading the checkpoint: %w", err)
	}
	// A checkpoint signed by a key that a rotation in the entries still to
	// replay introduces is verified after the replay (finishCheckpoint).
	cp, err := ls.engine.ParseTarget(raw)
	if err != nil {
		return fmt.Errorf("the log serves an invalid checkpoint: %w", err)
	}
	e := ls.engine
	last := e.Last()
	ls.mu.Lock()
	ls.target = max(ls.target, cp.Size)
	frozen := ls.frozen != ""
	ls.mu.Unlock()
	a.m.Target(ls.cfg.Origin, cp.Size)
	if frozen {
		// Evidence exists: our view and the log's diverged; replaying the
		// other view on top of ours would be meaningless.
		return nil
	}
	if last != nil {
		if bundle, err := a.compare(ctx, ls, raw, cp, last); err != nil {
			return err
		} else if bundle != nil {
			return nil
		}
	}
	if cp.Size <= e.Size() {
		if cp.Size == e.Size() && (last == nil || last.Size < cp.Size) {
			return a.finishCheckpoint(ls, raw)
		}
		return nil
	}
	// Catch up: replay [e.Size(), cp.Size).
	start := time.Now()
	startSize := e.Size()
	lastReport := start
	var pending []replay.Violation
	pages, stop := prefetch(ctx, r, e.Size(), cp.Size)
	defer stop()
	for e.Size() < cp.Size {
		pg, ok := <-pages
		if !ok {
			pg.err = fmt.Errorf("reading stopped: %w", context.Cause(ctx))
		}
		if pg.err != nil {
			err := fmt.Errorf("reading entries from %d: %w", e.Size(), pg.err)
			return errors.Join(err, a.saveAndProve(ctx, ls, pending, raw))
		}
		ents := pg.entries
		vs := e.Append(ents)
		ls.followKeys()
		a.m.Entries(ls.cfg.Origin, len(ents))
		for _, w := range e.Warnings() {
			a.warn(ls, w)
		}
		pending = append(pending, vs...)
		if time.Since(lastReport) >= a.cfg.ProgressInterval {
			done := e.Size() - startSize
			rate := float64(done) / time.Since(start).Seconds()
			left := cp.Size - e.Size()
			a.log.Info("catching up", "origin", ls.cfg.Origin, "size", e.Size(), "target", cp.Size,
				"entries_per_s", int(rate), "eta", (time.Duration(float64(left)/rate) * time.Second).Round(time.Second))
			ls.mu.Lock()
			ls.rate = rate
			ls.mu.Unlock()
			if err := a.saveAndProve(ctx, ls, pending, raw); err != nil {
				return err
			}
			pending = nil
			lastReport = time.Now()
		}
	}
	if d := time.Since(start).Seconds(); d > 0 {
		ls.mu.Lock()
		ls.rate = float64(e.Size()-startSize) / d
		ls.mu.Unlock()
	}
	if err := a.saveAndProve(ctx, ls, pending, raw); err != nil {
		return err
	}
	return a.finishCheckpoint(ls, raw)
}

// page is a run of entries read ahead of the replay, or the error that
// stopped the reading.
type page struct {
	entries [][]byte
	err     error
}

// prefetch reads entries [from, to) from r in a goroutine, a few pages
// ahead of the replay, so that reading and replaying overlap. The
// goroutine is owned by the caller, which must call stop (it cancels the
// reads and waits for the goroutine). After an error page, or when ctx is
// done, the channel is closed.
func prefetch(ctx context.Context, r log.Reader, from, to uint64) (<-chan page, func()) {
	ctx, cancel := context.WithCancel(ctx)
	out := make(chan page, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(out)
		for next := from; next < to; {
			ents, err := r.Entries(ctx, next, to)
			if err == nil && (len(ents) == 0 || uint64(len(ents)) > to-next) {
				err = fmt.Errorf("the log returned %d entries from %d for a tree of %d", len(ents), next, to)
			}
			select {
			case out <- page{ents, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
			next += uint64(len(ents))
		}
	}()
	return out, func() { cancel(); <-done }
}

// finishCheckpoint checks raw against the replayed entries and saves.
func (a *Auditor) finishCheckpoint(ls *logState, raw []byte) error {
	_, vs, err := ls.engine.Checkpoint(raw)
	if err != nil {
		return err
	}
	if p := ls.cfg.WitnessPolicy; p != nil && len(vs) == 0 {
		a.checkFuture(ls, p, raw)
	}
	return a.saveState(ls, vs, raw)
}

// checkFuture warns when the latest epoch replayed is stamped later than
// every valid cosignature on raw, by more than the skew (design.md 14
// step 4).
//
// SPEC(design.md 14 step 4)
func (a *Auditor) checkFuture(ls *logState, p *witness.Policy, raw []byte) {
	cs, _ := p.Check(raw) // the quorum is the log's business; any valid cosignature is a clock
	var latest time.Time
	for _, c := range cs {
		if c.Time.After(latest) {
			latest = c.Time
		}
	}
	ts := ls.engine.EpochTime()
	if latest.IsZero() || ts == 0 {
		return
	}
	skew := ls.cfg.Skew
	if skew == 0 {
		skew = DefaultSkew
	}
	if et := time.UnixMilli(int64(ts)); et.After(latest.Add(skew)) {
		a.warn(ls, replay.Warning{Index: ls.engine.Size() - 1, Kind: replay.WarnFutureEpoch,
			Detail: fmt.Sprintf("epoch time %s is %v after the latest cosignature (%s)", et.UTC().Format(time.RFC3339), et.Sub(latest).Round(time.Second), latest.UTC().Format(time.RFC3339))})
	}
}

func (a *Auditor) warn(ls *logState, w replay.Warning) {
	a.log.Warn("log anomaly", "origin", ls.cfg.Origin, "index", w.Index, "kind", w.Kind, "detail", w.Detail)
	a.m.Warning(ls.cfg.Origin, w.Kind)
	ls.mu.Lock()
	ls.warnings++
	ls.mu.Unlock()
}

// saveState stores the engine's state and new violations in one batch and
// updates what the handlers show.
//
// target is the checkpoint being audited, stored with each violation as
// the checkpoint that covers it.
//
// SPEC(design.md 14)
// SPEC(design.md 16)
func (a *Auditor) saveState(ls *logState, vs []replay.Violation, target []byte) error {
	e := ls.engine
	var kvs [][]byte
	// The whole replay state (about 110 bytes per handle) is rewritten at
	// most every SaveInterval, when violations are found, and when the
	// follower stops, while the follower (Run) drives the steps (a caller
	// of AuditOnce alone gets it saved at every step). With audit
	// statements in the path of every epoch (design.md 14.3), rewriting it
	// at each step put its cost (up to a second at 100,000 handles on a
	// loaded machine) into the time each epoch waits to be served. A
	// restart resumes from the last save and replays the rest again, which
	// finds the same.
	due := !ls.following || len(vs) > 0 || ls.stateSaved.IsZero() || time.Since(ls.stateSaved) >= a.cfg.SaveInterval
	if len(vs) > 0 {
		st, err := e.MarshalBinary()
		if err != nil {
			return err
		}
		kvs = append(kvs, key(kindReplay, ls.cfg.Origin), st)
		ls.stateSaved = time.Now()
	}
	covering := target
	for _, v := range vs {
		rec := violationRecord{Index: v.Index, Rule: v.Rule, Detail: v.Detail, Checkpoint: v.Checkpoint}
		if rec.Checkpoint == nil {
			rec.Checkpoint = covering
		}
		b, _ := json.Marshal(rec)
		// Keyed by index and rule: a violation found again after a
		// restart (replayed from the last save) overwrites itself.
		idx := make([]byte, 8)
		putU64(idx, v.Index)
		kvs = append(kvs, key(kindViolation, ls.cfg.Origin, idx, []byte(v.Rule)), b)
	}
	// Violations are durable before anything is said about the checkpoint;
	// the replay state alone is written after the waiting audit requests
	// are answered (below), as it only spares a restart some replay.
	if len(vs) > 0 {
		if err := a.cfg.Store.write(kvs...); err != nil {
			return err
		}
		kvs = nil
	}
	for _, v := range vs {
		a.log.Error("log violates the protocol", "origin", ls.cfg.Origin, "index", v.Index, "rule", v.Rule, "detail", v.Detail)
		a.m.Violation(ls.cfg.Origin, string(v.Rule))
	}
	// Only the holder of ls.audit (us) moves ls.latest.
	nv, first, _ := e.Violations()
	ls.mu.Lock()
	moved, frozen := ls.latest != e.Last(), ls.frozen != ""
	ls.mu.Unlock()
	var stated []byte
	if moved && !frozen {
		stated = a.stateLatest(ls, e.Last(), nv, first)
	}
	ls.mu.Lock()
	if moved {
		ls.stated = stated
	}
	ls.latest, ls.clean = e.Last(), e.Clean()
	ls.replayed = e.Size()
	ls.violations, ls.firstBad = nv, first
	ls.notify()
	ls.mu.Unlock()
	if l := e.Last(); l != nil {
		a.m.Audited(ls.cfg.Origin, l.Size)
	}
	if due && len(vs) == 0 {
		st, err := e.MarshalBinary()
		if err != nil {
			return err
		}
		if err := a.cfg.Store.write(key(kindReplay, ls.cfg.Origin), st); err != nil {
			return err
		}
		ls.stateSaved = time.Now()
	}
	return nil
}

type violationRecord struct {
	Index      uint64
	Rule       api.Rule
	Detail     string
	Checkpoint []byte `json:",omitempty"` // the checkpoint audited when found
}

func putU64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}

// compare checks checkpoint raw (cp, already verified) of ls against the
// audited checkpoint last, using the log's reader for proofs. It returns
// the evidence bundle (already recorded) if the two are a fork, nil if
// they are consistent or if consistency cannot be decided now.
//
// SPEC(design.md 14)
// SPEC(design.md 15)
func (a *Auditor) compare(ctx context.Context, ls *logState, raw []byte, cp *fmtlog.Checkpoint, last *replay.Checkpoint) ([]byte, error) {
	r := ls.cfg.Reader
	switch {
	case cp.Size == last.Size:
		if bytes.Equal(cp.Hash, last.Root[:]) {
			return nil, nil
		}
		return a.buildEvidence(ctx, ls, raw, last.Note, nil)
	case cp.Size == 0 || last.Size == 0:
		return nil, nil // every tree extends the empty tree
	case cp.Size < last.Size:
		if r == nil {
			return nil, nil
		}
		p, err := r.ConsistencyProof(ctx, cp.Size, last.Size)
		if err == nil && proof.VerifyConsistency(rfc6962.DefaultHasher, cp.Size, last.Size, p, cp.Hash, last.Root[:]) == nil {
			return nil, nil
		}
		return a.buildEvidence(ctx, ls, raw, last.Note, r)
	default: // cp.Size > last.Size
		if r == nil {
			return nil, nil
		}
		p, err := r.ConsistencyProof(ctx, last.Size, cp.Size)
		if errors.Is(err, log.ErrOutOfRange) {
			return nil, nil // the log has not shown us that size yet
		}
		if err == nil && proof.VerifyConsistency(rfc6962.DefaultHasher, last.Size, cp.Size, p, last.Root[:], cp.Hash) == nil {
			return nil, nil
		}
		// Either cp's tree is the reader's (then last is the odd one), or
		// the reader's current tree contains another tree at cp's size.
		if b, err := a.buildEvidence(ctx, ls, last.Note, raw, r); b != nil || err != nil {
			return b, err
		}
		cur, err := r.Checkpoint(ctx)
		if err != nil {
			return nil, nil
		}
		return a.buildEvidence(ctx, ls, raw, cur, r)
	}
}

// buildEvidence builds and records the bundle for x and y, or returns nil
// if src cannot prove a fork (logging why).
//
// SPEC(design.md 15)
func (a *Auditor) buildEvidence(ctx context.Context, ls *logState, x, y []byte, src evidence.ProofSource) ([]byte, error) {
	if src == nil {
		src = noProofs{}
	}
	b, err := evidence.Build(ctx, ls.logVerifier(), x, y, src)
	if err != nil {
		if !errors.Is(err, evidence.ErrNoFork) {
			a.log.Warn("checkpoints look inconsistent but the proofs at hand do not show a fork", "origin", ls.cfg.Origin, "err", err)
		}
		return nil, nil
	}
	raw := b.Marshal()
	return raw, a.recordEvidence(ls, raw)
}

type noProofs struct{}

var errNoProofs = errors.New("no proof source")

func (noProofs) Entries(context.Context, uint64, uint64) ([][]byte, error) { return nil, errNoProofs }
func (noProofs) InclusionProof(context.Context, uint64, uint64) ([][]byte, error) {
	return nil, errNoProofs
}
func (noProofs) ConsistencyProof(context.Context, uint64, uint64) ([][]byte, error) {
	return nil, errNoProofs
}

// recordEvidence stores a verified bundle for ls (once), writes it to
// EvidenceDir, logs it, counts it and posts it to the webhook. A fork
// (kt-evidence/v1) bundle also freezes the log; a kt-evidence/v2 bundle
// (a rule violation) does not: the replay goes on.
//
// SPEC(design.md 15)
// SPEC(design.md 15.1)
func (a *Auditor) recordEvidence(ls *logState, bundle []byte) error {
	id := evidenceID(bundle)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, e := range ls.evidence {
		if e == id {
			return nil
		}
	}
	if isFork(bundle) {
		reason := "split-view evidence " + id
		if err := a.cfg.Store.write(key(kindEvidence, ls.cfg.Origin, []byte(id)), bundle, key(kindFrozen, ls.cfg.Origin), []byte(reason)); err != nil {
			return err
		}
		ls.frozen = reason
		ls.stated = nil // SPEC(design.md 14.2): no statement for a frozen log
		ls.notify()
		a.log.Error("split view: the log signed two inconsistent checkpoints; cosigning stopped", "origin", ls.cfg.Origin, "evidence", id, "bundle", string(bundle))
	} else {
		if err := a.cfg.Store.write(key(kindEvidence, ls.cfg.Origin, []byte(id)), bundle); err != nil {
			return err
		}
		a.log.Error("evidence of a rule violation", "origin", ls.cfg.Origin, "evidence", id, "bundle", string(bundle))
	}
	ls.evidence = append(ls.evidence, id)
	a.m.Evidence(ls.cfg.Origin)
	if d := a.cfg.EvidenceDir; d != "" {
		name := filepath.Join(d, safeName(ls.cfg.Origin)+"-"+id[:16]+".txt")
		if err := os.MkdirAll(d, 0o755); err != nil {
			a.log.Error("writing evidence file", "err", err)
		} else if err := os.WriteFile(name, bundle, 0o644); err != nil {
			a.log.Error("writing evidence file", "err", err)
		}
	}
	if u := a.cfg.WebhookURL; u != "" {
		a.background("evidence webhook", func(ctx context.Context) { a.postWebhook(ctx, u, ls.cfg.Origin, bundle) })
	}
	return nil
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, s)
}

func (a *Auditor) postWebhook(ctx context.Context, u, origin string, bundle []byte) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(bundle))
	if err != nil {
		a.log.Error("evidence webhook", "err", err)
		return
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	req.Header.Set("Kt-Origin", origin)
	resp, err := a.cfg.HTTPClient.Do(req)
	if err != nil {
		a.log.Error("evidence webhook", "err", err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		a.log.Error("evidence webhook", "status", resp.StatusCode)
	}
}

// Evidence returns the stored evidence bundles of origin.
func (a *Auditor) Evidence(origin string) ([][]byte, error) {
	if _, ok := a.logs[origin]; !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownLog, origin)
	}
	return a.cfg.Store.list(key(kindEvidence, origin))
}

// Violation is a stored replay finding.
type Violation struct {
	Index  uint64
	Rule   api.Rule
	Detail string
	// Checkpoint is the checkpoint being audited when it was found.
	Checkpoint []byte
}

// Violations returns the stored replay violations of origin, in index
// order.
func (a *Auditor) Violations(origin string) ([]Violation, error) {
	if _, ok := a.logs[origin]; !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownLog, origin)
	}
	vals, err := a.cfg.Store.list(key(kindViolation, origin))
	if err != nil {
		return nil, err
	}
	out := make([]Violation, 0, len(vals))
	for _, v := range vals {
		var r violationRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, fmt.Errorf("auditor: stored violation: %w", err)
		}
		out = append(out, Violation(r))
	}
	return out, nil
}

// LogStatus is a snapshot of one log's audit.
type LogStatus struct {
	Origin string
	// Audited is whether the log is replayed (it has a reader).
	Audited bool
	// Latest is the latest checkpoint verified against the replay (nil if
	// none); Clean the latest with no violation up to it.
	Latest, Clean *replay.Checkpoint
	// Target is the size of the latest checkpoint read from the log; Lag
	// is Target minus the latest verified size.
	Target, Lag uint64
	// Replayed is the number of entries replayed and saved.
	Replayed uint64
	// Rate is the replay speed of the last catch-up, in entries per second.
	Rate       float64
	Violations uint64
	// FirstViolation is the index of the first violation (when Violations
	// > 0); no checkpoint beyond it is cosigned.
	FirstViolation uint64
	// Warnings counts the anomalies (design.md 14 step 4) seen since the
	// process started.
	Warnings uint64
	// Frozen says why cosigning stopped ("" if it did not).
	Frozen   string
	Evidence []string
	// Cosigned is the size of the latest checkpoint cosigned as a witness.
	Cosigned    uint64
	HasCosigned bool
	LastError   string
}

// Status returns a snapshot of every log, in configuration order.
func (a *Auditor) Status() []LogStatus {
	var out []LogStatus
	for _, o := range a.order {
		ls := a.logs[o]
		ls.mu.Lock()
		s := LogStatus{Origin: o, Audited: ls.cfg.Reader != nil, Latest: ls.latest, Clean: ls.clean, Target: ls.target, Replayed: ls.replayed,
			Rate: ls.rate, Violations: ls.violations, FirstViolation: ls.firstBad, Warnings: ls.warnings, Frozen: ls.frozen, Evidence: append([]string(nil), ls.evidence...),
			Cosigned: ls.cosSize, HasCosigned: ls.cosigned != nil, LastError: ls.lastErr}
		ls.mu.Unlock()
		if s.Latest != nil && s.Target > s.Latest.Size {
			s.Lag = s.Target - s.Latest.Size
		} else if s.Latest == nil {
			s.Lag = s.Target
		}
		out = append(out, s)
	}
	return out
}

// Metrics receives the auditor's measurements; the daemon implements it
// with Prometheus. Implementations must be safe for concurrent use.
type Metrics interface {
	// Target: size of the latest checkpoint read from the log.
	Target(origin string, size uint64)
	// Audited: size of the latest checkpoint verified by replay.
	Audited(origin string, size uint64)
	// Entries: n more entries replayed.
	Entries(origin string, n int)
	// Violation: a replay violation of the named rule.
	Violation(origin, rule string)
	// Warning: an anomaly that is not a violation.
	Warning(origin, kind string)
	// Evidence: a new evidence bundle.
	Evidence(origin string)
	// WitnessRequest: an add-checkpoint answered with status.
	WitnessRequest(origin string, status int)
	// AuditRequest: a POST /kt/v1/audit answered with status.
	AuditRequest(origin string, status int)
	// AuditStatement: an audit statement signed (an answer to POST
	// /kt/v1/audit, or the one on the latest audited checkpoint).
	AuditStatement(origin string)
	// Gossip: one exchange with a peer and its result ("ok", "evidence",
	// "error").
	Gossip(peer, result string)
}

type nopMetrics struct{}

func (nopMetrics) Target(string, uint64)      {}
func (nopMetrics) Audited(string, uint64)     {}
func (nopMetrics) Entries(string, int)        {}
func (nopMetrics) Violation(string, string)   {}
func (nopMetrics) Evidence(string)            {}
func (nopMetrics) WitnessRequest(string, int) {}
func (nopMetrics) AuditRequest(string, int)   {}
func (nopMetrics) AuditStatement(string)      {}
func (nopMetrics) Gossip(string, string)      {}
func (nopMetrics) Warning(string, string)     {}

// logKeys are a log's current keys.
type logKeys struct {
	verifier note.Verifier
	recovery [32]byte
}

// logVerifier returns the verifier of the log's current key.
func (ls *logState) logVerifier() note.Verifier { return ls.keys.Load().verifier }

// recoveryKey returns the log's current recovery key.
func (ls *logState) recoveryKey() [32]byte { return ls.keys.Load().recovery }

// followKeys takes the log's current keys from the replay, which follows
// the rotation records (design.md 11.1): the witness then accepts
// checkpoints under the new log key once the replay reached the rotation.
// The caller holds ls.audit.
//
// SPEC(design.md 11.1)
func (ls *logState) followKeys() {
	e := ls.engine
	cur := ls.keys.Load()
	if v := e.LogVerifier(); v.KeyHash() != cur.verifier.KeyHash() || e.RecoveryKey() != cur.recovery {
		ls.keys.Store(&logKeys{verifier: v, recovery: e.RecoveryKey()})
	}
}
