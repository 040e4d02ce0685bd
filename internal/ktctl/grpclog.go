package ktctl

import (
	"context"

	"github.com/keytrans/kt/api/ktpb"
	klog "github.com/keytrans/kt/log"
)

// GRPCLog is a [klog.Reader] over the directory's gRPC Log service. Like
// the HTTP client, it does not verify what it returns.
type GRPCLog struct{ C ktpb.LogClient }

var _ klog.Reader = GRPCLog{}

// Checkpoint implements [klog.Reader].
func (r GRPCLog) Checkpoint(ctx context.Context) ([]byte, error) {
	cp, err := r.C.GetCheckpoint(ctx, &ktpb.GetCheckpointRequest{})
	if err != nil {
		return nil, err
	}
	return cp.GetNote(), nil
}

// Entries implements [klog.Reader].
func (r GRPCLog) Entries(ctx context.Context, start, end uint64) ([][]byte, error) {
	es, err := r.C.GetEntries(ctx, &ktpb.GetEntriesRequest{Start: start, End: end})
	if err != nil {
		return nil, err
	}
	return es.GetEntries(), nil
}

// InclusionProof implements [klog.Reader].
func (r GRPCLog) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	p, err := r.C.GetInclusionProof(ctx, &ktpb.GetInclusionProofRequest{Index: index, Size: size})
	if err != nil {
		return nil, err
	}
	return p.GetHashes(), nil
}

// ConsistencyProof implements [klog.Reader].
func (r GRPCLog) ConsistencyProof(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
	p, err := r.C.GetConsistencyProof(ctx, &ktpb.GetConsistencyProofRequest{OldSize: oldSize, NewSize: newSize})
	if err != nil {
		return nil, err
	}
	return p.GetHashes(), nil
}
