package trillian

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	tpb "github.com/google/trillian"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/keytrans/kt/log"
)

// runCheckpointer publishes a checkpoint every CheckpointInterval when the
// tree has grown. It stops when ctx ends or a fork is seen.
func (l *Log) runCheckpointer(ctx context.Context) {
	defer l.workers.Done()
	t := time.NewTicker(l.cfg.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := l.checkpointOnce(ctx)
		var fork *ForkError
		switch {
		case err == nil || ctx.Err() != nil:
		case errors.As(err, &fork):
			l.logger.Error("Trillian forked; publishing stopped, appends refused", "error", err)
			return
		default:
			l.logger.Warn("publishing checkpoint failed; retrying at the next interval", "error", err)
		}
	}
}

// checkpointOnce reads Trillian's latest root and, if the tree grew (or
// nothing was published yet), checks it extends the published checkpoint,
// signs a checkpoint for it and publishes it. A fork is sticky: it is
// recorded in l.failed and returned from then on.
//
// SPEC(design.md 9)
// SPEC(design.md 17)
func (l *Log) checkpointOnce(ctx context.Context) error {
	root, err := l.latestRoot(ctx)
	if err != nil {
		return err
	}

	l.mu.Lock()
	prev, failed := l.published, l.failed
	l.mu.Unlock()
	if failed != nil {
		return failed
	}
	if prev != nil {
		if err := l.checkExtends(ctx, prev, root.TreeSize, root.RootHash); err != nil {
			var fork *ForkError
			if errors.As(err, &fork) {
				l.mu.Lock()
				l.failed = err
				close(l.pubCh) // wake Await calls: they return the fork
				l.pubCh = make(chan struct{})
				l.mu.Unlock()
			}
			return err
		}
		if root.TreeSize == prev.size {
			return nil // nothing new
		}
	} else if root.TreeSize == 0 && !bytes.Equal(root.RootHash, rfc6962.DefaultHasher.EmptyRoot()) {
		return fmt.Errorf("trillian: empty tree has root %x, not the RFC 6962 empty root", root.RootHash)
	}

	signed, err := log.SignCheckpoint(l.cfg.Signer, l.cfg.Origin, root.TreeSize, root.RootHash)
	if err != nil {
		return fmt.Errorf("trillian: signing checkpoint: %w", err)
	}
	if l.witnesser != nil {
		// Publication waits for the quorum: a checkpoint the policy does
		// not accept is never published.
		cosigned, err := l.witnesser.Witness(ctx, signed, l.trillianConsistencyProof)
		if err != nil {
			return &witnessingError{size: root.TreeSize, err: err}
		}
		signed = cosigned
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.published != prev {
		// Only the checkpointer publishes after New, and New publishes
		// before starting it; two publishers would be a bug.
		return errors.New("trillian: concurrent checkpoint publication")
	}
	l.published = &checkpoint{size: root.TreeSize, root: root.RootHash, note: signed}
	close(l.pubCh)
	l.pubCh = make(chan struct{})
	return nil
}

// checkExtends verifies that the tree (size, root) Trillian reports extends
// the published checkpoint prev. It returns a *ForkError when it provably
// does not, and another error when the question cannot be decided now.
func (l *Log) checkExtends(ctx context.Context, prev *checkpoint, size uint64, root []byte) error {
	fork := func(reason string, p [][]byte) error {
		return &ForkError{OldSize: prev.size, OldRoot: prev.root, NewSize: size, NewRoot: root, Proof: p, Reason: reason}
	}
	switch {
	case size < prev.size:
		return fork("the tree shrank", nil)
	case size == prev.size:
		if !bytes.Equal(root, prev.root) {
			return fork("same size, different root", nil)
		}
		return nil
	case prev.size == 0:
		return nil // everything extends the empty tree
	}
	// A missing proof (the answering server is behind the one that
	// reported size) is an error but not evidence of a fork.
	p, err := l.trillianConsistencyProof(ctx, prev.size, size)
	if err != nil {
		return err
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, prev.size, size, p, prev.root, root); err != nil {
		return fork(fmt.Sprintf("consistency proof does not verify: %v", err), p)
	}
	return nil
}

// witnessingError reports that the witness policy was not met for a
// checkpoint, which therefore stays unpublished.
type witnessingError struct {
	size uint64
	err  error
}

func (e *witnessingError) Error() string {
	return fmt.Sprintf("trillian: checkpoint of size %d not published: witness policy not met: %v", e.size, e.err)
}

func (e *witnessingError) Unwrap() error { return e.err }

// trillianConsistencyProof is the consistency proof witnesses ask for: from
// the size they last cosigned to the size of the checkpoint being
// witnessed, which is not published yet.
func (l *Log) trillianConsistencyProof(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
	if oldSize == 0 || oldSize > newSize {
		return nil, log.Errorf(log.ErrOutOfRange, "consistency proof %d -> %d", oldSize, newSize)
	}
	if oldSize == newSize {
		return [][]byte{}, nil
	}
	resp, err := l.client.GetConsistencyProof(ctx, &tpb.GetConsistencyProofRequest{
		LogId: l.treeID, FirstTreeSize: int64(oldSize), SecondTreeSize: int64(newSize),
	})
	if err != nil {
		return nil, grpcError("GetConsistencyProof", err)
	}
	if resp.Proof == nil {
		return nil, fmt.Errorf("trillian: server has no tree of size %d yet: %w", newSize, log.ErrPushback)
	}
	return checkHashes(resp.Proof.Hashes)
}

// Checkpoint returns the latest published checkpoint.
func (l *Log) Checkpoint(ctx context.Context) ([]byte, error) {
	cp, err := l.latest()
	if err != nil {
		return nil, err
	}
	return bytes.Clone(cp.note), nil
}

// latest returns the latest published checkpoint.
func (l *Log) latest() (*checkpoint, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, log.ErrClosed
	}
	if l.published == nil {
		return nil, log.ErrNoCheckpoint
	}
	return l.published, nil
}

// Await blocks until a published checkpoint has a size greater than index,
// and returns it.
//
// Close does not wait for Await calls: they return log.ErrClosed. After a
// fork, Await returns the *ForkError unless the checkpoint published before
// the fork already covers index.
//
// SPEC(design.md 7)
func (l *Log) Await(ctx context.Context, index uint64) ([]byte, error) {
	for {
		l.mu.Lock()
		cp, failed, closed, ch := l.published, l.failed, l.closed, l.pubCh
		l.mu.Unlock()
		if closed {
			return nil, log.ErrClosed
		}
		if cp != nil && cp.size > index {
			return bytes.Clone(cp.note), nil
		}
		if failed != nil {
			return nil, failed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("trillian: waiting for a checkpoint covering index %d: %w", index, ctx.Err())
		case <-l.done:
			return nil, log.ErrClosed
		}
	}
}
