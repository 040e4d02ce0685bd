package trillian

import (
	"context"
	"fmt"

	tpb "github.com/google/trillian"
	"google.golang.org/grpc"

	"github.com/keytrans/kt/log"
)

// maxEntriesPerCall bounds how many entries one Entries call returns.
const maxEntriesPerCall = scanChunk

// Entries returns entries [start, end), at most maxEntriesPerCall of them;
// end must not exceed the published checkpoint's size.
func (l *Log) Entries(ctx context.Context, start, end uint64) ([][]byte, error) {
	cp, err := l.latest()
	if err != nil {
		return nil, err
	}
	if start >= end || end > cp.size {
		return nil, log.Errorf(log.ErrOutOfRange, "entries [%d, %d) with published size %d", start, end, cp.size)
	}
	count := min(end-start, maxEntriesPerCall)
	resp, err := l.client.GetLeavesByRange(ctx, &tpb.GetLeavesByRangeRequest{
		LogId: l.treeID, StartIndex: int64(start), Count: int64(count),
	}, grpc.MaxCallRecvMsgSize(maxRecvMsgSize))
	if err != nil {
		return nil, grpcError("GetLeavesByRange", err)
	}
	if err := checkLeaves(resp.Leaves, start, int(count)); err != nil {
		return nil, err
	}
	if len(resp.Leaves) == 0 {
		// The published checkpoint covers these leaves, so a Trillian
		// server that has none is behind (skew between servers).
		return nil, fmt.Errorf("trillian: server returned no leaves at %d below the published size %d: %w", start, cp.size, log.ErrPushback)
	}
	out := make([][]byte, len(resp.Leaves))
	for i, leaf := range resp.Leaves {
		out[i] = leaf.LeafValue
	}
	return out, nil
}

// InclusionProof returns the RFC 6962 inclusion proof for index in the tree
// of the given size, which must not exceed the published checkpoint's size.
func (l *Log) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	cp, err := l.latest()
	if err != nil {
		return nil, err
	}
	if index >= size || size > cp.size {
		return nil, log.Errorf(log.ErrOutOfRange, "inclusion proof for index %d in size %d with published size %d", index, size, cp.size)
	}
	resp, err := l.client.GetInclusionProof(ctx, &tpb.GetInclusionProofRequest{
		LogId: l.treeID, LeafIndex: int64(index), TreeSize: int64(size),
	})
	if err != nil {
		return nil, grpcError("GetInclusionProof", err)
	}
	if resp.Proof == nil {
		return nil, fmt.Errorf("trillian: server has no tree of size %d yet: %w", size, log.ErrPushback)
	}
	if resp.Proof.LeafIndex != int64(index) {
		return nil, fmt.Errorf("trillian: asked for an inclusion proof for index %d, got one for %d", index, resp.Proof.LeafIndex)
	}
	return checkHashes(resp.Proof.Hashes)
}

// ConsistencyProof returns the RFC 6962 consistency proof between sizes
// oldSize and newSize, 0 < oldSize <= newSize <= the published size.
func (l *Log) ConsistencyProof(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
	cp, err := l.latest()
	if err != nil {
		return nil, err
	}
	if oldSize == 0 || oldSize > newSize || newSize > cp.size {
		return nil, log.Errorf(log.ErrOutOfRange, "consistency proof %d -> %d with published size %d", oldSize, newSize, cp.size)
	}
	return l.trillianConsistencyProof(ctx, oldSize, newSize)
}

// checkHashes checks that every proof element is a SHA-256 hash.
func checkHashes(hs [][]byte) ([][]byte, error) {
	for i, h := range hs {
		if len(h) != 32 {
			return nil, fmt.Errorf("trillian: proof hash %d has %d bytes, want 32", i, len(h))
		}
	}
	if hs == nil {
		hs = [][]byte{}
	}
	return hs, nil
}

var _ log.Log = (*Log)(nil)
