package ktctl

import (
	"context"
	"fmt"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/keytrans/kt/api"
	klog "github.com/keytrans/kt/log"
)

// InclusionResult is a verified inclusion proof.
type InclusionResult struct {
	Index uint64 `json:"index"`
	Size  uint64 `json:"size"`
	// LeafHash is recomputed from the entry fetched from the log.
	LeafHash Hex   `json:"leaf_hash"`
	Proof    []Hex `json:"proof"`
	// Root is the root of the tree of Size: the checkpoint's, or, for an
	// older size, the one the proof leads to, itself proven consistent
	// with the checkpoint by ConsistencyProof.
	Root Hex `json:"root"`
	// ConsistencyProof is from Size to the checkpoint's size, empty when
	// Size is the checkpoint's.
	ConsistencyProof []Hex `json:"consistency_proof"`
	// Checkpoint is the verified checkpoint's size and root.
	CheckpointSize uint64 `json:"checkpoint_size"`
	CheckpointRoot Hex    `json:"checkpoint_root"`
	// Entry is the decoded entry.
	Entry *Entry `json:"entry"`
}

// VerifyInclusion proves that the log entry at index is in the tree of the
// given size (0 means cp's size), under the verified checkpoint cp: it
// fetches the entry, recomputes its leaf hash, fetches and verifies the
// inclusion proof, and, for a size below cp's, the consistency proof from
// that size to cp.
func VerifyInclusion(ctx context.Context, r klog.Reader, cp *Checkpoint, index, size uint64) (*InclusionResult, error) {
	if size == 0 {
		size = cp.Size
	}
	switch {
	case size > cp.Size:
		return nil, argErr("size %d is larger than the checkpoint's size %d", size, cp.Size)
	case index >= size:
		return nil, argErr("index %d is not below size %d", index, size)
	}
	raws, err := FetchEntries(ctx, r, index, index+1)
	if err != nil {
		return nil, err
	}
	leaf := api.LeafHash(raws[0])
	p, err := r.InclusionProof(ctx, index, size)
	if err != nil {
		return nil, fmt.Errorf("fetching the inclusion proof: %w", err)
	}
	res := &InclusionResult{
		Index: index, Size: size, LeafHash: leaf[:], Proof: hexes(p), ConsistencyProof: []Hex{},
		CheckpointSize: cp.Size, CheckpointRoot: cp.Root,
		Entry: DecodeEntry(index, raws[0], cp.Origin),
	}
	if size == cp.Size {
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, index, size, leaf[:], p, cp.Root); err != nil {
			return res, verifyErr("inclusion proof", err, "entry %d in the checkpoint of size %d", index, size)
		}
		res.Root = cp.Root
		return res, nil
	}
	root, err := proof.RootFromInclusionProof(rfc6962.DefaultHasher, index, size, leaf[:], p)
	if err != nil {
		return res, verifyErr("inclusion proof", err, "entry %d in the tree of size %d", index, size)
	}
	res.Root = root
	c, err := r.ConsistencyProof(ctx, size, cp.Size)
	if err != nil {
		return res, fmt.Errorf("fetching the consistency proof from %d to %d: %w", size, cp.Size, err)
	}
	res.ConsistencyProof = hexes(c)
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, size, cp.Size, c, root, cp.Root); err != nil {
		return res, verifyErr("inclusion proof", err, "the root of size %d that entry %d's proof leads to is not consistent with the checkpoint of size %d", size, index, cp.Size)
	}
	return res, nil
}

// ConsistencyResult is a verified consistency proof.
type ConsistencyResult struct {
	Old   uint64 `json:"old"`
	New   uint64 `json:"new"`
	Proof []Hex  `json:"proof"`
	// OldRoot and NewRoot are the roots of the trees of sizes Old and New.
	OldRoot Hex `json:"old_root"`
	NewRoot Hex `json:"new_root"`
	// NewToCheckpoint proves NewRoot consistent with the checkpoint when
	// New is below its size (empty otherwise).
	NewToCheckpoint []Hex  `json:"new_to_checkpoint"`
	CheckpointSize  uint64 `json:"checkpoint_size"`
	CheckpointRoot  Hex    `json:"checkpoint_root"`
}

// VerifyConsistency proves that the tree of size old is a prefix of the
// tree of size new, under the verified checkpoint cp (new at most cp's
// size). The roots of sizes old and new are derived from the inclusion
// proofs of their last entries, then bound to cp: new's by a consistency
// proof to cp (unless new is cp's size), old's by the consistency proof
// from old to new, the one the caller asked for.
func VerifyConsistency(ctx context.Context, r klog.Reader, cp *Checkpoint, old, new uint64) (*ConsistencyResult, error) {
	switch {
	case old == 0:
		return nil, argErr("old size must be at least 1")
	case old > new:
		return nil, argErr("old size %d is larger than new size %d", old, new)
	case new > cp.Size:
		return nil, argErr("new size %d is larger than the checkpoint's size %d", new, cp.Size)
	}
	res := &ConsistencyResult{Old: old, New: new, CheckpointSize: cp.Size, CheckpointRoot: cp.Root, NewToCheckpoint: []Hex{}}
	newRoot := cp.Root
	if new < cp.Size {
		var err error
		if newRoot, err = rootOf(ctx, r, new); err != nil {
			return nil, err
		}
		c, err := r.ConsistencyProof(ctx, new, cp.Size)
		if err != nil {
			return nil, fmt.Errorf("fetching the consistency proof from %d to %d: %w", new, cp.Size, err)
		}
		res.NewToCheckpoint = hexes(c)
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, new, cp.Size, c, newRoot, cp.Root); err != nil {
			return res, verifyErr("consistency proof", err, "the tree of size %d is not consistent with the checkpoint of size %d", new, cp.Size)
		}
	}
	res.NewRoot = newRoot
	oldRoot := newRoot
	if old < new {
		var err error
		if oldRoot, err = rootOf(ctx, r, old); err != nil {
			return nil, err
		}
	}
	res.OldRoot = oldRoot
	p, err := r.ConsistencyProof(ctx, old, new)
	if err != nil {
		return res, fmt.Errorf("fetching the consistency proof from %d to %d: %w", old, new, err)
	}
	res.Proof = hexes(p)
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old, new, p, oldRoot, newRoot); err != nil {
		return res, verifyErr("consistency proof", err, "from size %d to %d", old, new)
	}
	return res, nil
}

// rootOf returns the root of the tree of the given size that the inclusion
// proof of its last entry leads to. The result is unverified until bound to
// a verified root by a consistency proof.
func rootOf(ctx context.Context, r klog.Reader, size uint64) ([]byte, error) {
	raws, err := FetchEntries(ctx, r, size-1, size)
	if err != nil {
		return nil, err
	}
	leaf := api.LeafHash(raws[0])
	p, err := r.InclusionProof(ctx, size-1, size)
	if err != nil {
		return nil, fmt.Errorf("fetching the inclusion proof of entry %d at size %d: %w", size-1, size, err)
	}
	root, err := proof.RootFromInclusionProof(rfc6962.DefaultHasher, size-1, size, leaf[:], p)
	if err != nil {
		return nil, verifyErr("inclusion proof", err, "entry %d at size %d", size-1, size)
	}
	return root, nil
}

func hexes(p [][]byte) []Hex {
	out := make([]Hex, len(p))
	for i, h := range p {
		out[i] = h
	}
	return out
}
