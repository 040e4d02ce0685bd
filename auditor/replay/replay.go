// Package replay is the audit of a key transparency log (docs/design.md
// section 14) as a pure library: an [Engine] is fed the log's entries in
// order and the log's checkpoints, and returns typed [Violation] values
// naming the entry index and the rule that failed. It does no I/O; the
// caller reads the log (the ktauditor daemon over the read API, ktctl from a
// file or a tlog-tiles directory) and persists the engine with
// [Engine.MarshalBinary] and [Restore].
//
// # What is checked
//
// For every entry j, in order:
//
//   - it parses (api.ParseEntry); entry 0 is epoch record 0 with the empty
//     map (api.CheckEpoch);
//   - a change record satisfies R1 to R6 against the state of its index
//     (api.CheckChangeUnsigned, and the signature verified in batches);
//   - an epoch record has the next epoch number, log size j, a timestamp
//     not before the previous one, and the map root and size that the map
//     recomputed (smt) over every change record before j yields
//     (api.CheckEpoch, which the directory's own replay also runs).
//   - after a rotation of the VRF key, the re-indexing rules M1 to M5 of
//     design.md 11.2 (api.Moves): each index live at the rotation is moved
//     once, by a move entry whose leaf is its latest, to an unused index;
//     no change record at a pending or moved index; no VRF rotation while
//     indices are pending. A move gives the new index the old one's state
//     and a map leaf with the old one's value.
//
// For every checkpoint: the log's signature, and that its root equals the
// RFC 6962 root of every entry fed so far (a compact range), so that a read
// API cannot substitute entries. Consistency between checkpoints follows,
// since both roots are computed from the same entries; the follower also
// checks the log's consistency proofs, to produce standard evidence
// (log/evidence).
//
// # After a violation
//
// A change record that breaks a rule is still applied to its index's state
// and to the map: the log says it is the latest record, and a dishonest
// directory's map commits to it, so applying it reports the fault once
// instead of again at every later epoch. An epoch record with a wrong number
// or an early timestamp resynchronises the expected values to its own.
//
// # Signatures
//
// Change-record signatures are verified in batches with
// github.com/oasisprotocol/curve25519-voi on all CPUs. A batch that fails is
// re-verified signature by signature with crypto/ed25519, whose rules
// api.CheckChange applies (api.VerifyEd25519), so a reported R1 violation
// is exactly one that api.CheckChange reports. The batch equation is the cofactored one: a
// signature crafted by the holder of a key so that it verifies only under
// the cofactored equation would pass; Config.ExactSignatures verifies every
// signature with crypto/ed25519 instead, at about half the speed.
package replay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	voied "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
	fmtlog "github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/smt"
)

// Rule names the check that a [Violation] failed: an [api.Rule], whose
// constants name the authorization rules ("R1 signature", "R2 version",
// ...) and the log's rules.
type Rule = api.Rule

// Rules of the replay other than the authorization rules (the constants of
// package api, under the names this package has always used).
const (
	RuleParse          = api.RuleParse
	RuleFirstEntry     = api.RuleFirstEntry
	RuleEpochNumber    = api.RuleEpochNumber
	RuleEpochLogSize   = api.RuleEpochLogSize
	RuleEpochTimestamp = api.RuleEpochTimestamp
	RuleMapRoot        = api.RuleMapRoot
	RuleMapSize        = api.RuleMapSize
	RuleCheckpointRoot = api.RuleCheckpointRoot
)

// A Violation is a rule the log broke. Anyone can reproduce it by replaying
// the log up to Index.
type Violation struct {
	// Index is the entry that broke the rule; for RuleCheckpointRoot it is
	// the checkpoint's size.
	Index uint64
	Rule  Rule
	// Detail says what was found, for people.
	Detail string
	// Err is the underlying typed error, if any: *api.AuthError for the
	// authorization rules, *api.FormatError or api.ErrMalformed for
	// RuleParse, *api.EpochError for the rules api.CheckEpoch checks.
	Err error
	// Checkpoint is the signed checkpoint note, for RuleCheckpointRoot.
	Checkpoint []byte `json:",omitempty"`
	// Prev is, for the authorization rules, the log index of the previous
	// change record of the same VRF index, when there is one and the
	// engine knows it (a state restored from the kt-replay-state/v1
	// encoding does not know where the records before it are). With it
	// the violation can be shown by the two records alone (a
	// kt-evidence/v2 records bundle, design.md 15.1).
	Prev *uint64 `json:",omitempty"`
}

func (v *Violation) Error() string {
	return fmt.Sprintf("entry %d: %s: %s", v.Index, v.Rule, v.Detail)
}

// Unwrap returns Err.
func (v *Violation) Unwrap() error { return v.Err }

// Config is what the engine needs to know about the log.
type Config struct {
	// Origin is the log's origin (checkpoint origin line and the origin
	// bound into change statements).
	Origin string
	// Verifier verifies the log's checkpoint signatures (the log vkey).
	Verifier note.Verifier
	// RecoveryKey is the directory's recovery key (rule R6) before any
	// rotation; the engine follows rotations of it (design.md 11.1).
	RecoveryKey [32]byte
	// LogKey, if set, is the raw Ed25519 key of Verifier: the start of the
	// chain of log key rotations. Unset, the first log key rotation must
	// start from a key with Verifier's key hash.
	LogKey [32]byte
	// VRFKey, if set, is the VRF public key before any rotation; unset,
	// the first VRF key rotation names it.
	VRFKey [32]byte
	// VerifyVRFProof verifies the proofs of VRF key rotations; nil: a VRF
	// key rotation is a RuleRotationKind violation.
	VerifyVRFProof api.VRFProofVerifier
	// ExactSignatures verifies every change signature with crypto/ed25519
	// rather than in batches (see the package documentation).
	ExactSignatures bool
	// Workers is the number of goroutines verifying signatures; 0 means
	// GOMAXPROCS.
	Workers int
	// Heartbeat is the directory's heartbeat interval (design.md 7). When
	// set, two consecutive epoch records further apart than twice this
	// with change records between them give a WarnLateEpoch warning
	// (design.md 14 step 4). Zero disables the check.
	Heartbeat time.Duration
}

// Warning is an anomaly that is not a rule violation (design.md 14 step 4).
type Warning struct {
	Index  uint64 // the entry it is about
	Kind   string
	Detail string
}

// Warning kinds.
const (
	// WarnLateEpoch: changes waited longer than twice the heartbeat for
	// their epoch.
	WarnLateEpoch = "late epoch"
	// WarnFutureEpoch: an epoch's timestamp is later than the witnesses'
	// cosignatures on the checkpoint that covers it, by more than the
	// skew (reported by the auditor, which knows the witness policy).
	WarnFutureEpoch = "future epoch"
)

func (c *Config) validate() error {
	if c.Origin == "" {
		return errors.New("replay: empty origin")
	}
	if c.Verifier == nil {
		return errors.New("replay: no log verifier")
	}
	if c.Verifier.Name() != c.Origin {
		return fmt.Errorf("replay: log key is named %q, not the origin %q", c.Verifier.Name(), c.Origin)
	}
	if c.Workers < 0 {
		return errors.New("replay: negative Workers")
	}
	return nil
}

// Checkpoint is a checkpoint the engine verified against its entries.
type Checkpoint struct {
	Size uint64
	Root [32]byte
	// Note is the signed note as given, with any cosignatures.
	Note []byte
}

// ErrCheckpointSize reports a checkpoint whose size is not the number of
// entries fed so far.
var ErrCheckpointSize = errors.New("replay: checkpoint size is not the number of entries replayed")

var rangeFactory = &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// Engine replays one log. It is not safe for concurrent use.
type Engine struct {
	cfg Config

	size    uint64
	rng     *compact.Range
	handles map[[32]byte]*api.HandleState
	// at is the log index of the latest change record of each index
	// (unknownAt when restored from a state that did not record it).
	at      map[[32]byte]uint64
	m       *smt.Map
	pending []smt.Update

	// moves is the re-indexing state after VRF key rotations (design.md
	// 11.2, move.go).
	moves api.Moves

	// chain is the epoch sequence so far (api.CheckEpoch).
	chain api.EpochChain
	// changesSinceEpoch counts change records since the last epoch record
	// (not saved: after a restore the first late-epoch check may miss).
	changesSinceEpoch int
	warnings          []Warning

	// last is the latest checkpoint verified; clean is the latest one
	// verified with no violation at or before it.
	last, clean *Checkpoint
	// violations counts every violation found so far; firstBad is the
	// index of the first (valid only if violations > 0).
	violations uint64
	firstBad   uint64

	// rot are the key rotations replayed (rotation.go); configured is
	// the log verifier of the configuration (cfg.Verifier follows the
	// rotations).
	rot        rotations
	configured note.Verifier
}

// New returns an engine at the start of the log.
func New(cfg Config) (*Engine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := smt.New(nil)
	if err != nil {
		return nil, err
	}
	return &Engine{cfg: cfg, rng: rangeFactory.NewEmptyRange(0), handles: map[[32]byte]*api.HandleState{}, at: map[[32]byte]uint64{}, m: m, configured: cfg.Verifier}, nil
}

// unknownAt marks an index whose latest record's position is not known.
const unknownAt = ^uint64(0)

// HandleEntry returns the log index of the latest change record of index,
// and false if there is none or its position is unknown (a state restored
// from the kt-replay-state/v1 encoding).
func (e *Engine) HandleEntry(index [32]byte) (uint64, bool) {
	j, ok := e.at[index]
	return j, ok && j != unknownAt
}

// prevOf returns the log index of the latest record of index, if known.
func (e *Engine) prevOf(index [32]byte) *uint64 {
	if j, ok := e.HandleEntry(index); ok {
		return &j
	}
	return nil
}

// Size returns the number of entries replayed.
func (e *Engine) Size() uint64 { return e.size }

// Root returns the RFC 6962 root of the entries replayed.
func (e *Engine) Root() [32]byte {
	var r [32]byte
	if e.size == 0 {
		copy(r[:], rfc6962.DefaultHasher.EmptyRoot())
		return r
	}
	h, err := e.rng.GetRootHash(nil)
	if err != nil {
		panic(err) // a range from 0 always has a root
	}
	copy(r[:], h)
	return r
}

// MapRoot returns the root of the map over every change record replayed,
// and its number of leaves.
func (e *Engine) MapRoot() ([32]byte, uint64) {
	e.flushMap()
	return e.m.Root(), e.m.Len()
}

// Handle returns the state of an index after the entries replayed, or nil.
func (e *Engine) Handle(index [32]byte) *api.HandleState { return e.handles[index] }

// Handles returns the number of indices with a change record.
func (e *Engine) Handles() int { return len(e.handles) }

// EpochTime returns the largest epoch timestamp replayed (Unix
// milliseconds), 0 before any epoch record.
func (e *Engine) EpochTime() uint64 { return e.chain.Time }

// NextEpoch returns the epoch number the next epoch record must have.
func (e *Engine) NextEpoch() uint64 { return e.chain.Next }

// Last returns the latest checkpoint verified, or nil.
func (e *Engine) Last() *Checkpoint { return e.last }

// Clean returns the latest checkpoint verified with no violation in the log
// up to its size, or nil. An auditor cosigns at most this.
func (e *Engine) Clean() *Checkpoint { return e.clean }

// Warnings returns the warnings found since the previous call, in index
// order, and forgets them.
func (e *Engine) Warnings() []Warning {
	w := e.warnings
	e.warnings = nil
	return w
}

// Violations returns the number of violations found so far and the index
// of the first; ok is false if there were none.
func (e *Engine) Violations() (n, first uint64, ok bool) {
	return e.violations, e.firstBad, e.violations > 0
}

func (e *Engine) flushMap() {
	if len(e.pending) == 0 {
		return
	}
	if _, err := e.m.Apply(e.pending); err != nil {
		panic(err) // Apply fails only on internal errors
	}
	e.pending = e.pending[:0]
}

type sigJob struct {
	index uint64
	prev  *uint64
	pub   [32]byte
	sig   [64]byte
	msg   []byte
}

// Append replays entries, which are the log's entries from index Size() on,
// and returns the violations they contain, in index order. Entries are
// applied whatever the violations (see the package documentation).
//
// SPEC(design.md 14)
// SPEC(design.md 14 step 1)
// SPEC(design.md 14 step 2)
func (e *Engine) Append(entries [][]byte) []Violation {
	var out []Violation
	jobs, results := e.startVerifiers()
	var batch []sigJob
	for _, b := range entries {
		j := e.size
		lh := api.LeafHash(b)
		if err := e.rng.Append(lh[:], nil); err != nil {
			panic(err)
		}
		e.size++
		ent, err := api.ParseEntry(b)
		if err != nil {
			out = append(out, Violation{Index: j, Rule: RuleParse, Detail: err.Error(), Err: err})
			out = e.checkEpoch(j, nil, out)
			continue
		}
		switch r := ent.(type) {
		case *api.ChangeRecord:
			out = e.checkEpoch(j, r, out)
			prev := e.handles[r.Index]
			prevAt := e.prevOf(r.Index)
			if err := e.moves.CheckChange(r.Index); err != nil {
				out = append(out, moveViolation(j, err))
			}
			if err := api.CheckChangeUnsigned(prev, r, e.cfg.RecoveryKey); err != nil {
				v := authViolation(j, err)
				v.Prev = prevAt
				out = append(out, v)
			}
			e.handles[r.Index] = &api.HandleState{Version: r.Version, LeafHash: lh, Authorizers: r.Authorizers}
			e.at[r.Index] = j
			e.pending = append(e.pending, smt.Update{Key: r.Index, Value: lh})
			e.changesSinceEpoch++
			batch = append(batch, sigJob{index: j, prev: prevAt, pub: r.Signer, sig: r.Signature, msg: api.ChangeStatement(e.cfg.Origin, r)})
			if len(batch) == sigBatch {
				jobs <- batch
				batch = make([]sigJob, 0, sigBatch)
			}
		case *api.EpochRecord:
			out = e.epoch(j, r, out)
		case *api.RotationRecord:
			out = e.checkEpoch(j, r, out)
			out = e.rotation(j, b, r, out)
			out = e.vrfRotated(j, r, out)
		case *api.MoveEntry:
			out = e.checkEpoch(j, r, out)
			out = e.move(j, r, out)
		}
	}
	if len(batch) > 0 {
		jobs <- batch
	}
	close(jobs)
	for vs := range results {
		out = append(out, vs...)
	}
	slices.SortStableFunc(out, func(a, b Violation) int {
		switch {
		case a.Index < b.Index:
			return -1
		case a.Index > b.Index:
			return 1
		}
		return 0
	})
	e.count(out)
	return out
}

func (e *Engine) count(vs []Violation) {
	for _, v := range vs {
		if e.violations == 0 || v.Index < e.firstBad {
			e.firstBad = v.Index
		}
		e.violations++
	}
}

func authViolation(j uint64, err error) Violation {
	rule := Rule("authorization")
	if ae, ok := errors.AsType[*api.AuthError](err); ok {
		rule = ae.Rule
	}
	return Violation{Index: j, Rule: rule, Detail: err.Error(), Err: err}
}

// checkEpoch applies api.CheckEpoch to entry j, which is not an epoch
// record (ent is nil if it does not parse).
//
// SPEC(design.md 14 step 1)
func (e *Engine) checkEpoch(j uint64, ent api.Entry, out []Violation) []Violation {
	var errs []*api.EpochError
	e.chain, errs = api.CheckEpoch(e.chain, j, ent, [32]byte{}, 0)
	return appendEpochViolations(out, errs)
}

// epoch checks the epoch record at j against the map recomputed over every
// change record before it, and warns of a late epoch.
//
// SPEC(design.md 14 step 3)
// SPEC(design.md 14 step 4)
func (e *Engine) epoch(j uint64, r *api.EpochRecord, out []Violation) []Violation {
	// Step 4, a warning (auditor policy, not a rule of the log).
	if hb := e.cfg.Heartbeat; hb > 0 && j > 0 && e.changesSinceEpoch > 0 && r.Timestamp > e.chain.Time &&
		time.Duration(r.Timestamp-e.chain.Time)*time.Millisecond > 2*hb {
		e.warnings = append(e.warnings, Warning{Index: j, Kind: WarnLateEpoch,
			Detail: fmt.Sprintf("%d changes waited %v for this epoch, more than twice the heartbeat %v", e.changesSinceEpoch, time.Duration(r.Timestamp-e.chain.Time)*time.Millisecond, hb)})
	}
	e.changesSinceEpoch = 0
	e.flushMap()
	var errs []*api.EpochError
	e.chain, errs = api.CheckEpoch(e.chain, j, r, e.m.Root(), e.m.Len())
	return appendEpochViolations(out, errs)
}

func appendEpochViolations(out []Violation, errs []*api.EpochError) []Violation {
	for _, err := range errs {
		out = append(out, Violation{Index: err.Index, Rule: err.Rule, Detail: err.Reason, Err: err})
	}
	return out
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// sigBatch is the number of signatures verified together. Batches of 64 or
// more get most of the batch speed-up; smaller ones spread work over CPUs.
const sigBatch = 128

// startVerifiers starts the signature workers for one Append. The caller
// sends batches on jobs and closes it; results is closed when every batch
// was verified. The workers are owned by Append and end before it returns.
func (e *Engine) startVerifiers() (chan<- []sigJob, <-chan []Violation) {
	n := e.cfg.Workers
	if n == 0 {
		n = runtime.GOMAXPROCS(0)
	}
	jobs := make(chan []sigJob, 2*n)
	results := make(chan []Violation, 2*n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for b := range jobs {
				if vs := e.verify(b); len(vs) > 0 {
					results <- vs
				}
			}
		})
	}
	go func() { wg.Wait(); close(results) }()
	return jobs, results
}

// SPEC(design.md 6.1 R1)
// SPEC(design.md 14 step 2)
func (e *Engine) verify(b []sigJob) []Violation {
	if !e.cfg.ExactSignatures {
		bv := voied.NewBatchVerifierWithCapacity(len(b))
		for i := range b {
			bv.Add(b[i].pub[:], b[i].msg, b[i].sig[:])
		}
		if bv.VerifyBatchOnly(rand.Reader) {
			return nil
		}
	}
	var out []Violation
	for i := range b {
		if !ed25519.Verify(b[i].pub[:], b[i].msg, b[i].sig[:]) {
			err := &api.AuthError{Rule: api.RuleSignature, Reason: "the signature does not verify under the signer key", Err: api.ErrBadSignature}
			v := authViolation(b[i].index, err)
			v.Prev = b[i].prev
			out = append(out, v)
		}
	}
	return out
}

// Checkpoint verifies a signed checkpoint note of the log against the
// entries replayed: the log's signature, a size equal to Size(), and a root
// equal to Root(). A checkpoint that is not the log's (bad signature, other
// origin, malformed) or has another size is an error, not a violation: it
// proves nothing about the log. A root that differs is a violation
// (RuleCheckpointRoot): the log signed a tree that is not its entries. On
// success the checkpoint becomes Last, and Clean if no violation was found
// so far.
//
// SPEC(design.md 14)
func (e *Engine) Checkpoint(raw []byte) (*Checkpoint, []Violation, error) {
	cp, _, err := log.ParseCheckpoint(raw, e.cfg.Origin, e.cfg.Verifier)
	if err != nil {
		return nil, nil, err
	}
	if cp.Size != e.size {
		return nil, nil, fmt.Errorf("%w: checkpoint size %d, %d entries replayed", ErrCheckpointSize, cp.Size, e.size)
	}
	root := e.Root()
	if !bytes.Equal(cp.Hash, root[:]) {
		vs := []Violation{{Index: cp.Size, Rule: RuleCheckpointRoot, Detail: fmt.Sprintf("checkpoint root %s, root of the entries %s", b64(cp.Hash), b64(root[:])), Checkpoint: bytes.Clone(raw)}}
		e.count(vs)
		return nil, vs, nil
	}
	c := &Checkpoint{Size: cp.Size, Root: root, Note: bytes.Clone(raw)}
	e.last = c
	if e.violations == 0 {
		e.clean = c
	}
	return c, nil, nil
}

// ParseCheckpoint parses and verifies a checkpoint of the engine's log
// without checking it against the entries.
func (e *Engine) ParseCheckpoint(raw []byte) (*fmtlog.Checkpoint, error) {
	cp, _, err := parseCP(e.cfg, raw)
	return cp, err
}

func parseCP(cfg Config, raw []byte) (*fmtlog.Checkpoint, *note.Note, error) {
	return log.ParseCheckpoint(raw, cfg.Origin, cfg.Verifier)
}

// Source serves a log's entries; a log.Reader is one.
type Source interface {
	// Entries returns entries [start, end), at least one.
	Entries(ctx context.Context, start, end uint64) ([][]byte, error)
}

// ReplayTo reads the entries from Size() up to the size of checkpoint
// (a signed note of the log) from src, replays them and verifies the
// checkpoint against them. progress, if not nil, is called after each page
// with the size replayed so far. It returns every violation found, in
// order; an error means the replay stopped early (the engine stays usable
// and can resume from Size()).
//
// SPEC(design.md 14)
func (e *Engine) ReplayTo(ctx context.Context, src Source, checkpoint []byte, progress func(size uint64)) ([]Violation, error) {
	cp, err := e.ParseTarget(checkpoint)
	if err != nil {
		return nil, err
	}
	if cp.Size < e.size {
		return nil, fmt.Errorf("%w: checkpoint size %d, %d entries replayed", ErrCheckpointSize, cp.Size, e.size)
	}
	var out []Violation
	for e.size < cp.Size {
		ents, err := src.Entries(ctx, e.size, cp.Size)
		if err != nil {
			return out, fmt.Errorf("replay: entries from %d: %w", e.size, err)
		}
		if len(ents) == 0 || uint64(len(ents)) > cp.Size-e.size {
			return out, fmt.Errorf("replay: the source returned %d entries from %d for a tree of %d", len(ents), e.size, cp.Size)
		}
		out = append(out, e.Append(ents)...)
		if progress != nil {
			progress(e.size)
		}
	}
	_, vs, err := e.Checkpoint(checkpoint)
	return append(out, vs...), err
}
