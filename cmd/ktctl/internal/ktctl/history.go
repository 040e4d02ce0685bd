package ktctl

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	klog "github.com/keytrans/kt/log"
	"github.com/keytrans/kt/vrf"
)

// Progress receives how many of the total entries were processed.
type Progress func(done, total uint64)

// Scan reads every entry of the log under the verified checkpoint cp, in
// order, calls fn for each, and checks that the entries' leaf hashes yield
// cp's root (RFC 6962), so that the reader cannot have substituted, added
// or dropped an entry. A root mismatch is a [*VerifyError], reported after
// fn saw every entry: fn's findings are only trustworthy when Scan returns
// nil.
func Scan(ctx context.Context, r klog.Reader, cp *Checkpoint, progress Progress, fn func(i uint64, raw []byte) error) error {
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	cr := rf.NewEmptyRange(0)
	for pos := uint64(0); pos < cp.Size; {
		es, err := r.Entries(ctx, pos, cp.Size)
		if err != nil {
			return fmt.Errorf("fetching entries [%d, %d): %w", pos, cp.Size, err)
		}
		if len(es) == 0 || uint64(len(es)) > cp.Size-pos {
			return fmt.Errorf("fetching entries [%d, %d): got %d entries", pos, cp.Size, len(es))
		}
		for _, e := range es {
			lh := api.LeafHash(e)
			if err := cr.Append(lh[:], nil); err != nil {
				return err
			}
			if err := fn(pos, e); err != nil {
				return err
			}
			pos++
		}
		if progress != nil {
			progress(pos, cp.Size)
		}
	}
	root, err := cr.GetRootHash(nil)
	if err != nil {
		return err
	}
	if !bytes.Equal(root, cp.Root) {
		return verifyErr("log root", nil, "the %d entries served hash to root %x, but the checkpoint's root is %x", cp.Size, root, cp.Root)
	}
	return nil
}

// HistoryRecord is one change record of an index's history.
type HistoryRecord struct {
	LogIndex uint64 `json:"log_index"`
	// Epoch is the epoch whose record follows the change (the epoch that
	// published it), nil when no epoch record follows it yet.
	Epoch    *uint64 `json:"epoch"`
	LeafHash Hex     `json:"leaf_hash"`
	Change   *Change `json:"change"`
	// Problem names the rule the record breaks against its predecessor in
	// the chain (api.CheckChange: R1 to R6), "" when none.
	Problem string `json:"problem,omitempty"`
	// R6Unchecked is set for a recovery change when no recovery key was
	// given: its signer could not be compared with the directory's.
	R6Unchecked bool `json:"r6_unchecked,omitempty"`
}

// HistoryResult is the verified history of one VRF index.
type HistoryResult struct {
	Index Hex `json:"index"`
	// Handle is the canonical handle, when the index was computed from one.
	Handle         string           `json:"handle,omitempty"`
	CheckpointSize uint64           `json:"checkpoint_size"`
	CheckpointRoot Hex              `json:"checkpoint_root"`
	Records        []*HistoryRecord `json:"records"`
}

// HandleIndex normalises handle and computes its VRF index with the
// directory's VRF private key.
func HandleIndex(k *vrf.PrivateKey, handle string) (string, [32]byte, error) {
	h, err := api.NormalizeHandle(handle)
	if err != nil {
		return "", [32]byte{}, fmt.Errorf("%w: handle %q: %w", ErrArgument, handle, err)
	}
	index, _ := k.Prove(api.VRFInput(h))
	return h, index, nil
}

// ParseIndex parses a VRF index given as 64 hexadecimal digits.
func ParseIndex(s string) ([32]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return [32]byte{}, fmt.Errorf("%w: VRF index %q: want 64 hexadecimal digits", ErrArgument, s)
	}
	return [32]byte(b), nil
}

// History scans the whole log under cp for the change records of index and
// checks them as a chain: versions 1, 2, ... in log order, each record's
// prev the leaf hash of the one before, and each change authorized by its
// predecessor's authorizers (api.CheckChange, rules R1 to R6). Broken rules
// are reported per record and, together, as a [*VerifyError] returned with
// the result. The scan also recomputes cp's root from all entries.
func History(ctx context.Context, r klog.Reader, cp *Checkpoint, k *Keys, index [32]byte, progress Progress) (*HistoryResult, error) {
	res := &HistoryResult{Index: index[:], CheckpointSize: cp.Size, CheckpointRoot: cp.Root, Records: []*HistoryRecord{}}
	var (
		state   *api.HandleState
		pending []*HistoryRecord // records not yet followed by an epoch record
		errs    []error
	)
	err := Scan(ctx, r, cp, progress, func(i uint64, raw []byte) error {
		// Only the records of this index and epoch records matter; a
		// cheap prefix test skips the rest before parsing.
		if len(raw) < 2 || raw[0] != api.FormatVersion {
			return nil
		}
		switch api.EntryType(raw[1]) {
		case api.TypeEpoch:
			e, err := api.ParseEpochRecord(raw)
			if err != nil {
				return nil
			}
			for _, p := range pending {
				p.Epoch = &e.Epoch
			}
			pending = pending[:0]
			return nil
		case api.TypeChange:
			if len(raw) < 34 || !bytes.Equal(raw[2:34], index[:]) {
				return nil
			}
		default:
			return nil
		}
		c, err := api.ParseChangeRecord(raw)
		if err != nil {
			errs = append(errs, verifyErr("history", err, "entry %d has the index but does not parse", i))
			return nil
		}
		lh := api.LeafHash(raw)
		hr := &HistoryRecord{LogIndex: i, LeafHash: lh[:], Change: DecodeChange(c, cp.Origin)}
		recovery := [32]byte{}
		switch {
		case k.RecoveryKey != nil:
			recovery = *k.RecoveryKey
		case c.Kind == api.AuthRecovery:
			recovery, hr.R6Unchecked = c.Signer, true
		}
		if err := api.CheckChange(cp.Origin, state, c, recovery); err != nil {
			hr.Problem = err.Error()
			errs = append(errs, verifyErr("history", err, "change record at %d (version %d)", i, c.Version))
		}
		// Continue the chain from this record either way, so that one
		// bad record is reported once, not again for every successor.
		state = c.State(raw)
		res.Records = append(res.Records, hr)
		pending = append(pending, hr)
		return nil
	})
	if err != nil {
		return res, err
	}
	return res, errors.Join(errs...)
}

// LookupIndex learns the VRF index of a handle without the VRF private
// key: it looks the handle up and verifies the VRF proof of the answer
// with the directory's pinned VRF public key. A proof that does not verify
// is a [*VerifyError].
func LookupIndex(ctx context.Context, dc ktpb.DirectoryClient, pub *vrf.PublicKey, handle string) (string, [32]byte, error) {
	h, err := api.NormalizeHandle(handle)
	if err != nil {
		return "", [32]byte{}, fmt.Errorf("%w: handle %q: %w", ErrArgument, handle, err)
	}
	resp, err := dc.Lookup(ctx, &ktpb.LookupRequest{Handle: h})
	if err != nil {
		return "", [32]byte{}, fmt.Errorf("Lookup: %w", err)
	}
	if resp.GetHandle() != h {
		return "", [32]byte{}, verifyErr("lookup", nil, "the answer is for %q, not %q", resp.GetHandle(), h)
	}
	index, err := pub.Verify(api.VRFInput(h), resp.GetVrfProof())
	if err != nil {
		return "", [32]byte{}, verifyErr("VRF proof", err, "for %q under the pinned VRF key", h)
	}
	return h, index, nil
}
