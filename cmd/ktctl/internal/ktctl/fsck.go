package ktctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/keytrans/kt/auditor/replay"
	klog "github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/evidence"
	"github.com/keytrans/kt/vrf"
)

// Violation is a rule the log broke, found by the replay engine
// (auditor/replay).
type Violation struct {
	Index  uint64 `json:"index"`
	Rule   string `json:"rule"`
	Detail string `json:"detail"`
}

// FsckResult is the outcome of a whole-log verification.
type FsckResult struct {
	Checkpoint *Checkpoint `json:"checkpoint"`
	// From is the size the run started at: 0, or the size saved in the
	// position file.
	From uint64 `json:"from"`
	// Size is the number of entries verified in total.
	Size uint64 `json:"size"`
	// Handles is the number of VRF indices with a change record, and
	// NextEpoch the number of epoch records.
	Handles   int    `json:"handles"`
	NextEpoch uint64 `json:"epochs"`
	// MapRoot and MapSize are the recomputed map after every change
	// record.
	MapRoot Hex    `json:"map_root"`
	MapSize uint64 `json:"map_size"`
	// Violations are those found by this run; TotalViolations counts
	// those of earlier runs too (from the position file), the first at
	// FirstViolation.
	Violations      []Violation `json:"violations"`
	TotalViolations uint64      `json:"total_violations"`
	FirstViolation  *uint64     `json:"first_violation,omitempty"`
	// Evidence is a kt-evidence/v1 bundle, when the checkpoint is not
	// consistent with the one the position file recorded.
	Evidence string `json:"evidence,omitempty"`
	// Tiles is the outcome of the hash tile check (verify --tiles only):
	// "ok" or the damage found.
	Tiles string `json:"tiles,omitempty"`
	// Elapsed is how long the run took and Rate its entries per second.
	Elapsed string  `json:"elapsed"`
	Rate    float64 `json:"entries_per_second"`
}

// FsckOptions configures [Fsck].
type FsckOptions struct {
	// RecoveryKey is the directory's recovery key (rule R6; required).
	RecoveryKey [32]byte
	// Position is a file that holds the replay state between runs: read
	// at the start when it exists, written during the run (every
	// SaveEvery) and at the end. Empty: no state is kept.
	Position string
	// SaveEvery is how often the position is saved during a run (default
	// 10s).
	SaveEvery time.Duration
	// Progress, if set, receives progress.
	Progress Progress
	// ExactSignatures verifies each signature with crypto/ed25519 instead
	// of in batches (see auditor/replay).
	ExactSignatures bool
}

// Fsck verifies the whole log under the verified checkpoint cp with the
// auditor's replay engine (auditor/replay, design.md 14): every entry
// parses, every change record satisfies R1 to R6, every epoch record has
// the next number, its own index as log size, a non-decreasing timestamp
// and the map root and size recomputed from the change records before it,
// and cp's root is the root of the entries. With a position file, a run
// resumes where the last one stopped: it first checks that cp is
// consistent with the checkpoint the file recorded (a [*VerifyError] with
// a kt-evidence/v1 bundle in the result if not), then replays only the new
// entries. Violations are a [*VerifyError] returned with the result.
//
// When ctx is cancelled mid-run, the position reached is saved and the
// context's error returned.
//
// SPEC(design.md 14)
func Fsck(ctx context.Context, r klog.Reader, cp *Checkpoint, k *Keys, opts FsckOptions) (*FsckResult, error) {
	start := time.Now()
	cfg := replay.Config{Origin: k.Origin, Verifier: k.LogVerifier, RecoveryKey: opts.RecoveryKey, ExactSignatures: opts.ExactSignatures, VerifyVRFProof: vrf.VerifyRotationProof}
	var e *replay.Engine
	var err error
	if opts.Position != "" {
		b, rerr := os.ReadFile(opts.Position)
		switch {
		case errors.Is(rerr, os.ErrNotExist):
		case rerr != nil:
			return nil, fmt.Errorf("position file: %w", rerr)
		default:
			if e, err = replay.Restore(cfg, b); err != nil {
				return nil, fmt.Errorf("%w: position file %s: %w", ErrArgument, opts.Position, err)
			}
		}
	}
	if e == nil {
		if e, err = replay.New(cfg); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrArgument, err)
		}
	}
	res := &FsckResult{Checkpoint: cp, From: e.Size(), Violations: []Violation{}}
	save := func() error {
		if opts.Position == "" {
			return nil
		}
		b, err := e.MarshalBinary()
		if err != nil {
			return err
		}
		return writeFileAtomic(opts.Position, b)
	}
	finish := func() {
		res.Size = e.Size()
		res.Handles, res.NextEpoch = e.Handles(), e.NextEpoch()
		root, n := e.MapRoot()
		res.MapRoot, res.MapSize = root[:], n
		if n, first, ok := e.Violations(); ok {
			res.TotalViolations, res.FirstViolation = n, &first
		}
		el := time.Since(start)
		res.Elapsed = el.Round(time.Millisecond).String()
		if s := el.Seconds(); s > 0 {
			res.Rate = float64(e.Size()-res.From) / s
		}
	}

	// A resumed run first checks the new checkpoint against the last one.
	if last := e.Last(); last != nil {
		if cp.Size < last.Size {
			finish()
			return res, verifyErr("checkpoint", nil, "the log's checkpoint has size %d, smaller than the size %d already verified (position %s)", cp.Size, last.Size, opts.Position)
		}
		if err := checkExtends(ctx, r, last, cp); err != nil {
			var ve *VerifyError
			if errors.As(err, &ve) {
				if b, berr := evidence.Build(ctx, k.LogVerifier, last.Note, cp.Raw, r); berr == nil {
					res.Evidence = string(b.Marshal())
				}
			}
			finish()
			return res, err
		}
	}
	if e.Size() > cp.Size {
		finish()
		return res, verifyErr("checkpoint", nil, "the position file is at size %d, beyond the checkpoint's size %d", e.Size(), cp.Size)
	}
	every := opts.SaveEvery
	if every <= 0 {
		every = 10 * time.Second
	}
	lastSave := time.Now()
	for e.Size() < cp.Size {
		if err := ctx.Err(); err != nil {
			if serr := save(); serr != nil {
				return nil, serr
			}
			finish()
			return res, fmt.Errorf("interrupted at %d of %d (resume with the same position file): %w", e.Size(), cp.Size, err)
		}
		es, err := r.Entries(ctx, e.Size(), cp.Size)
		if err != nil {
			if ctx.Err() != nil {
				continue // save and report above
			}
			save()
			return nil, fmt.Errorf("fetching entries from %d: %w", e.Size(), err)
		}
		if len(es) == 0 || uint64(len(es)) > cp.Size-e.Size() {
			save()
			return nil, fmt.Errorf("fetching entries from %d: got %d entries", e.Size(), len(es))
		}
		for _, v := range e.Append(es) {
			res.Violations = append(res.Violations, Violation{Index: v.Index, Rule: string(v.Rule), Detail: v.Detail})
		}
		if opts.Progress != nil {
			opts.Progress(e.Size(), cp.Size)
		}
		if time.Since(lastSave) >= every {
			if err := save(); err != nil {
				return nil, fmt.Errorf("saving the position: %w", err)
			}
			lastSave = time.Now()
		}
	}
	if opts.Progress != nil && res.From == cp.Size {
		opts.Progress(cp.Size, cp.Size)
	}
	_, vs, err := e.Checkpoint(cp.Raw)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	for _, v := range vs {
		res.Violations = append(res.Violations, Violation{Index: v.Index, Rule: string(v.Rule), Detail: v.Detail})
	}
	if err := save(); err != nil {
		return nil, fmt.Errorf("saving the position: %w", err)
	}
	finish()
	if res.TotalViolations > 0 {
		return res, verifyErr("replay", nil, "%d violations, the first at entry %d", res.TotalViolations, *res.FirstViolation)
	}
	return res, nil
}

// checkExtends checks with the log's consistency proof that cp extends
// last.
//
// SPEC(design.md 14)
func checkExtends(ctx context.Context, r klog.Reader, last *replay.Checkpoint, cp *Checkpoint) error {
	if cp.Size == last.Size {
		if !bytes.Equal(cp.Root, last.Root[:]) {
			return verifyErr("consistency", nil, "the checkpoint of size %d has root %x, but the one verified before has %x", cp.Size, cp.Root, last.Root)
		}
		return nil
	}
	p, err := r.ConsistencyProof(ctx, last.Size, cp.Size)
	if err != nil {
		return fmt.Errorf("fetching the consistency proof from %d to %d: %w", last.Size, cp.Size, err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, last.Size, cp.Size, p, last.Root[:], cp.Root); err != nil {
		return verifyErr("consistency", err, "the checkpoint of size %d does not extend the one of size %d verified before", cp.Size, last.Size)
	}
	return nil
}

// writeFileAtomic replaces path with b: written to a temporary file in the
// same directory, synced, then renamed over path.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
