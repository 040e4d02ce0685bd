package client

import (
	"context"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/log"
)

// LogReader is a [log.Reader] over the directory's gRPC Log service: the
// log as the directory shows it to this client. Like the read API's HTTP
// client (logapi.Client), it verifies nothing it returns. It is also an
// [evidence.ProofSource].
type LogReader struct{ C ktpb.LogClient }

var _ log.Reader = LogReader{}

// Checkpoint implements [log.Reader].
func (r LogReader) Checkpoint(ctx context.Context) ([]byte, error) {
	cp, err := r.C.GetCheckpoint(ctx, &ktpb.GetCheckpointRequest{})
	if err != nil {
		return nil, err
	}
	return cp.GetNote(), nil
}

// Entries implements [log.Reader].
func (r LogReader) Entries(ctx context.Context, start, end uint64) ([][]byte, error) {
	es, err := r.C.GetEntries(ctx, &ktpb.GetEntriesRequest{Start: start, End: end})
	if err != nil {
		return nil, err
	}
	return es.GetEntries(), nil
}

// InclusionProof implements [log.Reader].
func (r LogReader) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	p, err := r.C.GetInclusionProof(ctx, &ktpb.GetInclusionProofRequest{Index: index, Size: size})
	if err != nil {
		return nil, err
	}
	return p.GetHashes(), nil
}

// ConsistencyProof implements [log.Reader].
func (r LogReader) ConsistencyProof(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
	p, err := r.C.GetConsistencyProof(ctx, &ktpb.GetConsistencyProofRequest{OldSize: oldSize, NewSize: newSize})
	if err != nil {
		return nil, err
	}
	return p.GetHashes(), nil
}
