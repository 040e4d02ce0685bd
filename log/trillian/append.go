package trillian

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	tpb "github.com/google/trillian"
	"github.com/transparency-dev/merkle/rfc6962"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/keytrans/kt/log"
)

const (
	// minPoll is the first delay between polls for sequenced leaves.
	minPoll = 10 * time.Millisecond
	// scanChunk is how many leaves one GetLeavesByRange asks for: at most
	// 256 * 64 KiB = 16 MiB of entries, within maxRecvMsgSize.
	scanChunk = 256
	// maxRecvMsgSize raises gRPC's default 4 MiB receive limit for the
	// calls that return leaves.
	maxRecvMsgSize = 32 << 20
)

// waiter is an Append's entry waiting to learn its index.
type waiter struct {
	hash [32]byte // RFC 6962 leaf hash
	// from is a tree size that Trillian reported before the entry was
	// queued: the entry's index is at least from.
	from  uint64
	index uint64        // set before done is closed
	done  chan struct{} // closed once index is known
}

// Append queues entries in Trillian and returns their indices once Trillian
// has sequenced them: then they are durable (committed in Trillian's
// database) and their indices are final.
//
// Queueing: Trillian v1.8.0 queues one leaf per QueueLeaf call, each its own
// database transaction, so Append issues the calls concurrently, at most
// Config.QueueParallelism of them in flight for the whole Log (all Append
// calls share the bound). The database then commits many of them with one
// log flush.
//
// Order: Trillian sequences queued leaves by queue timestamp, and concurrent
// QueueLeaf calls commit in any order, so the indices of one call are
// distinct but neither consecutive nor in the order of entries, and
// concurrent calls interleave. Append returns only once every entry of the
// call is sequenced, so an entry appended after an earlier call returned
// gets a larger index, as [log.Appender] promises.
//
// Duplicates: identical entries within one call are queued once and share
// an index. Trillian's MySQL storage deduplicates by leaf identity hash,
// which this backend leaves at Trillian's default, the RFC 6962 leaf hash:
// an entry identical to one already queued or logged is not logged again,
// and Append returns the earlier entry's index, which can be smaller than
// indices the Log returned before. (Trillian's in-memory test storage does
// not deduplicate across calls: there such an entry gets a new index.)
//
// On error, some of the entries may have been queued and will be logged
// anyway; the caller cannot tell which. The protocol's entries are unique, so
// appending them again is harmless: duplicates return the logged indices.
//
// SPEC(design.md 17)
func (l *Log) Append(ctx context.Context, entries [][]byte) ([]uint64, error) {
	if err := log.CheckEntries(entries); err != nil {
		return nil, err
	}
	if err := l.enter(); err != nil {
		return nil, err
	}
	defer l.inflight.Done()
	if len(entries) == 0 {
		return []uint64{}, nil
	}

	// Queue each distinct entry once: slot[i] is entry i's position among
	// the distinct ones.
	slot := make([]int, len(entries))
	first := make(map[[32]byte]int, len(entries))
	var distinct [][]byte
	var hashes [][32]byte
	for i, e := range entries {
		var h [32]byte
		copy(h[:], rfc6962.DefaultHasher.HashLeaf(e))
		j, ok := first[h]
		if !ok {
			j = len(distinct)
			first[h] = j
			distinct = append(distinct, e)
			hashes = append(hashes, h)
		}
		slot[i] = j
	}

	ws, err := l.queue(ctx, distinct, hashes)
	if err != nil {
		return nil, err
	}
	idx := make([]uint64, len(distinct))
	for j, w := range ws {
		if w == nil {
			continue // a duplicate: looked up below
		}
		select {
		case <-w.done:
			idx[j] = w.index
		case <-ctx.Done():
			l.unregister(ws[j:]...)
			return nil, fmt.Errorf("trillian: waiting for entries to be sequenced: %w", ctx.Err())
		case <-l.done:
			l.unregister(ws[j:]...)
			return nil, log.ErrClosed
		}
	}
	for j, w := range ws {
		if w != nil {
			continue
		}
		i, err := l.indexOfHash(ctx, hashes[j][:])
		if err != nil {
			return nil, fmt.Errorf("trillian: finding the index of duplicate entry %d: %w", slices.Index(slot, j), err)
		}
		idx[j] = i
	}
	indices := make([]uint64, len(entries))
	for i, j := range slot {
		indices[i] = idx[j]
	}
	return indices, nil
}

// queue queues entries, whose leaf hashes are hashes, concurrently: at most
// cap(queueSem) QueueLeaf calls of the whole Log are in flight. For each
// entry it returns the waiter that learns its index, or nil when Trillian
// already had the entry (a duplicate, whose index must be looked up). On
// error no waiter stays registered.
//
// SPEC(design.md 17.1)
func (l *Log) queue(ctx context.Context, entries [][]byte, hashes [][32]byte) ([]*waiter, error) {
	// Register before queueing: the follower only matches leaves sequenced
	// after registration (see runFollower).
	ws := l.register(hashes)

	parent := ctx
	if t, ok := log.QueueDeadline(ctx); ok {
		var stop context.CancelFunc
		ctx, stop = context.WithDeadlineCause(ctx, t, ErrQueueDeadline)
		defer stop()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Close ends the queueing of running calls (once its own context
	// expires): the caller may close the connection afterwards.
	go func() {
		select {
		case <-l.done:
			cancel(log.ErrClosed)
		case <-ctx.Done():
		}
	}()

	var wg sync.WaitGroup
	dup := make([]bool, len(entries)) // element i written by goroutine i only
loop:
	for i, e := range entries {
		if ctx.Err() != nil {
			break // select below would pick at random between ready cases
		}
		select {
		case l.queueSem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-l.queueSem }()
			exists, err := l.queueLeaf(ctx, e)
			if err != nil {
				// The first cause sticks; later ones are mostly
				// the cancellation it caused.
				cancel(fmt.Errorf("queueing entry %d of %d: %w", i, len(entries), err))
				return
			}
			dup[i] = exists
		}()
	}
	wg.Wait()

	if ctx.Err() != nil {
		l.unregister(ws...)
		cause := context.Cause(ctx)
		switch {
		case parent.Err() != nil:
			return nil, fmt.Errorf("trillian: queueing entries: %w", parent.Err())
		case errors.Is(cause, log.ErrClosed):
			return nil, log.ErrClosed
		default: // the first failed QueueLeaf
			return nil, cause
		}
	}
	for i, d := range dup {
		if d {
			l.unregister(ws[i])
			ws[i] = nil
		}
	}
	return ws, nil
}

// maxAbortRetries is how often queueLeaf retries a QueueLeaf that Trillian
// aborted. Trillian's MySQL storage reports a deadlock between concurrent
// transactions as Aborted, and the aborted transaction was rolled back, so
// the retry cannot log the entry twice.
const maxAbortRetries = 3

// queueLeaf queues one entry, reporting whether Trillian already had it
// (queued or logged).
func (l *Log) queueLeaf(ctx context.Context, e []byte) (exists bool, err error) {
	req := &tpb.QueueLeafRequest{LogId: l.treeID, Leaf: &tpb.LogLeaf{LeafValue: e}}
	for attempt := 0; ; attempt++ {
		resp, err := l.client.QueueLeaf(ctx, req)
		if grpcCode(err) == codes.Aborted && attempt < maxAbortRetries {
			if err := sleep(ctx, minPoll); err != nil {
				return false, err
			}
			continue
		}
		if err != nil {
			return false, grpcError("QueueLeaf", err)
		}
		if resp.QueuedLeaf == nil {
			return false, errors.New("trillian QueueLeaf: response has no queued leaf")
		}
		switch c := codes.Code(resp.QueuedLeaf.GetStatus().GetCode()); c {
		case codes.OK:
			return false, nil
		case codes.AlreadyExists:
			return true, nil
		default:
			return false, fmt.Errorf("trillian QueueLeaf: leaf status %v: %s", c, resp.QueuedLeaf.GetStatus().GetMessage())
		}
	}
}

// register adds a waiter for each leaf hash, in one step: all get the same
// lower bound from.
func (l *Log) register(hashes [][32]byte) []*waiter {
	ws := make([]*waiter, len(hashes))
	l.mu.Lock()
	for i, h := range hashes {
		w := &waiter{hash: h, from: l.knownSize, done: make(chan struct{})}
		l.pending[h] = append(l.pending[h], w)
		ws[i] = w
	}
	l.npending += len(ws)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return ws
}

// unregister removes waiters that are still pending; nil ones are skipped.
func (l *Log) unregister(ws ...*waiter) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range ws {
		if w == nil {
			continue
		}
		list := l.pending[w.hash]
		if i := slices.Index(list, w); i >= 0 {
			list = slices.Delete(list, i, i+1)
			l.npending--
			if len(list) == 0 {
				delete(l.pending, w.hash)
			} else {
				l.pending[w.hash] = list
			}
		}
	}
}

// runFollower tells waiting Appends the indices of their entries. While
// waiters exist it reads newly sequenced leaves in order with
// GetLeavesByRange, starting at the smallest tree size any waiter was
// registered at, and matches them by leaf hash; with none, it sleeps.
//
// Why nothing is missed: a waiter is registered before its entry is queued,
// so its leaf is sequenced, read and matched after registration, at an index
// of at least the tree size known at registration (w.from): a newly queued
// leaf is not in the tree yet. The scan position only moves past an index by
// reading it, or jumps to the smallest w.from of the waiters present.
func (l *Log) runFollower(ctx context.Context) {
	defer l.workers.Done()
	delay := minPoll
	for {
		l.mu.Lock()
		n := l.npending
		pos := l.scanned
		if n > 0 {
			lowest := uint64(1<<64 - 1)
			for _, list := range l.pending {
				for _, w := range list {
					lowest = min(lowest, w.from)
				}
			}
			pos = max(pos, lowest)
		}
		l.mu.Unlock()
		if n == 0 {
			select {
			case <-l.wake:
				delay = minPoll
				continue
			case <-ctx.Done():
				return
			}
		}
		got, err := l.scan(ctx, pos)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			l.logger.Warn("reading sequenced leaves failed", "start", pos, "error", err)
		case got == scanChunk:
			delay = minPoll
			continue // more may be waiting: read on at once
		case got > 0:
			// Caught up: the signer's next run is some time away.
			delay = minPoll
		}
		if sleep(ctx, delay) != nil {
			return
		}
		delay = min(2*delay, l.cfg.MaxPollInterval)
	}
}

// scan reads sequenced leaves from pos on, resolves the waiters they match
// and returns how many leaves it read.
func (l *Log) scan(ctx context.Context, pos uint64) (int, error) {
	resp, err := l.client.GetLeavesByRange(ctx, &tpb.GetLeavesByRangeRequest{
		LogId: l.treeID, StartIndex: int64(pos), Count: scanChunk,
	}, grpc.MaxCallRecvMsgSize(maxRecvMsgSize))
	if err != nil {
		return 0, grpcError("GetLeavesByRange", err)
	}
	if root, err := parseRoot(resp.SignedLogRoot); err == nil {
		l.observeSize(root.TreeSize)
	}
	if err := checkLeaves(resp.Leaves, pos, scanChunk); err != nil {
		return 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, leaf := range resp.Leaves {
		idx := pos + uint64(i)
		var h [32]byte
		copy(h[:], rfc6962.DefaultHasher.HashLeaf(leaf.LeafValue))
		list := l.pending[h]
		// The oldest waiter that this leaf can belong to.
		j := slices.IndexFunc(list, func(w *waiter) bool { return w.from <= idx })
		if j < 0 {
			continue
		}
		w := list[j]
		list = slices.Delete(list, j, j+1)
		if len(list) == 0 {
			delete(l.pending, h)
		} else {
			l.pending[h] = list
		}
		l.npending--
		w.index = idx
		close(w.done)
	}
	l.scanned = max(l.scanned, pos+uint64(len(resp.Leaves)))
	l.knownSize = max(l.knownSize, l.scanned)
	return len(resp.Leaves), nil
}

// checkLeaves checks that Trillian returned at most count leaves, numbered
// consecutively from start.
func checkLeaves(leaves []*tpb.LogLeaf, start uint64, count int) error {
	if len(leaves) > count {
		return fmt.Errorf("trillian: asked for %d leaves, got %d", count, len(leaves))
	}
	for i, leaf := range leaves {
		if leaf.GetLeafIndex() != int64(start)+int64(i) {
			return fmt.Errorf("trillian: leaf %d of a range starting at %d has index %d", i, start, leaf.GetLeafIndex())
		}
	}
	return nil
}

// indexOfHash finds the index of the leaf with the given hash, waiting until
// it is sequenced. It serves entries Trillian reported as duplicates, which
// may have been logged long ago or may still be queued.
func (l *Log) indexOfHash(ctx context.Context, hash []byte) (uint64, error) {
	delay := minPoll
	for {
		l.mu.Lock()
		size := l.knownSize
		l.mu.Unlock()
		if size > 0 {
			resp, err := l.client.GetInclusionProofByHash(ctx, &tpb.GetInclusionProofByHashRequest{
				LogId: l.treeID, LeafHash: hash, TreeSize: int64(size), OrderBySequence: true,
			})
			switch {
			case err == nil && len(resp.Proof) > 0:
				return uint64(resp.Proof[0].LeafIndex), nil
			case err == nil:
				return 0, errors.New("trillian GetInclusionProofByHash: no proof and no error")
			case codes.NotFound != grpcCode(err):
				return 0, grpcError("GetInclusionProofByHash", err)
			}
		}
		// Not sequenced yet (or not within size): learn a newer size.
		if err := sleep(ctx, delay); err != nil {
			return 0, err
		}
		delay = min(2*delay, l.cfg.MaxPollInterval)
		if _, err := l.latestRoot(ctx); err != nil {
			return 0, err
		}
	}
}
