package trillian

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/log"
)

// ForkError reports that Trillian served a tree that is not an extension of
// the tree this Log already published a checkpoint for: a smaller tree, a
// different root at the same size, or a consistency proof that does not
// verify. It carries the evidence. Once a Log has seen a fork it publishes
// nothing more and refuses appends; an operator must investigate (a restored
// database backup, two trees mixed up, or a compromised Trillian).
type ForkError struct {
	// The checkpoint this Log published last.
	OldSize uint64
	OldRoot []byte
	// The tree Trillian reported afterwards.
	NewSize uint64
	NewRoot []byte
	// The consistency proof Trillian served from OldSize to NewSize, if any.
	Proof [][]byte
	// Why the new tree was rejected.
	Reason string
}

func (e *ForkError) Error() string {
	return fmt.Sprintf("trillian: tree forked: published size %d root %s, then Trillian reported size %d root %s: %s",
		e.OldSize, hex.EncodeToString(e.OldRoot), e.NewSize, hex.EncodeToString(e.NewRoot), e.Reason)
}

// grpcError turns an error from a Trillian RPC into this package's errors:
// the single place where gRPC status codes meet the log package's sentinel
// errors. The gRPC status stays in the chain for diagnosis.
func grpcError(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("trillian %s: %w", op, err)
	}
	switch status.Code(err) {
	case codes.OutOfRange:
		return fmt.Errorf("trillian %s: %w (%w)", op, log.ErrOutOfRange, err)
	case codes.ResourceExhausted, codes.Unavailable, codes.Aborted:
		// Quota exhausted, server down or restarting, transaction
		// conflict: all transient, all worth a retry by the caller.
		return fmt.Errorf("trillian %s: %w (%w)", op, log.ErrPushback, err)
	case codes.Canceled:
		return fmt.Errorf("trillian %s: %w (%w)", op, context.Canceled, err)
	case codes.DeadlineExceeded:
		return fmt.Errorf("trillian %s: %w (%w)", op, context.DeadlineExceeded, err)
	default:
		return fmt.Errorf("trillian %s: %w", op, err)
	}
}

// grpcCode is the gRPC status code of err, looking through wrapping.
func grpcCode(err error) codes.Code { return status.Code(err) }
