package conformance

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/log"
)

// MemoryLog is an in-memory reference [log.Log] for tests: every Append is
// published at once under a checkpoint signed by the given signer. It keeps
// every entry and every perfect-subtree hash (through a
// [compact.Range]), and builds proofs with [proof.Inclusion] and
// [proof.Consistency]; it shares no code with golang.org/x/mod/sumdb/tlog,
// which [CheckReader] uses to check it.
type MemoryLog struct {
	origin string
	signer note.Signer

	mu         sync.Mutex // guards the fields below
	entries    [][]byte
	nodes      map[compact.NodeID][]byte // every perfect subtree of the tree
	rng        *compact.Range            // [0, len(entries))
	checkpoint []byte                    // nil until the first Append
	published  chan struct{}             // closed, then replaced, on each publication
	closed     bool
}

var _ log.Log = (*MemoryLog)(nil)

var factory = &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// NewMemoryLog returns an empty log for origin. It publishes no checkpoint
// until the first Append, as a real backend before its first integration.
func NewMemoryLog(origin string, signer note.Signer) *MemoryLog {
	return &MemoryLog{
		origin:    origin,
		signer:    signer,
		nodes:     make(map[compact.NodeID][]byte),
		rng:       factory.NewEmptyRange(0),
		published: make(chan struct{}),
	}
}

// PublishEmpty publishes a checkpoint for the empty tree, if nothing was
// published yet.
func (l *MemoryLog) PublishEmpty() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.checkpoint != nil {
		return nil
	}
	return l.publishLocked()
}

// Append implements [log.Appender]. It never deduplicates.
func (l *MemoryLog) Append(ctx context.Context, entries [][]byte) ([]uint64, error) {
	if err := log.CheckEntries(entries); err != nil {
		return nil, err
	}
	return l.AppendUnchecked(entries)
}

// AppendUnchecked is Append without [log.CheckEntries], for known-answer
// tests over the RFC 6962 reference tree, whose first leaf is empty. A
// reader that serves such an entry violates the read API's framing, so
// Entries over it must fail.
func (l *MemoryLog) AppendUnchecked(entries [][]byte) ([]uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, log.ErrClosed
	}
	idx := make([]uint64, len(entries))
	for i, e := range entries {
		idx[i] = uint64(len(l.entries))
		l.entries = append(l.entries, append([]byte(nil), e...))
		if err := l.rng.Append(rfc6962.DefaultHasher.HashLeaf(e), l.visit); err != nil {
			return nil, err
		}
	}
	if err := l.publishLocked(); err != nil {
		return nil, err
	}
	return idx, nil
}

func (l *MemoryLog) visit(id compact.NodeID, hash []byte) { l.nodes[id] = hash }

func (l *MemoryLog) publishLocked() error {
	root, err := l.rootLocked(uint64(len(l.entries)))
	if err != nil {
		return err
	}
	cp, err := log.SignCheckpoint(l.signer, l.origin, uint64(len(l.entries)), root)
	if err != nil {
		return err
	}
	l.checkpoint = cp
	close(l.published)
	l.published = make(chan struct{})
	return nil
}

// rootLocked computes the root of the tree of the given size from the
// stored perfect subtrees.
func (l *MemoryLog) rootLocked(size uint64) ([]byte, error) {
	if size == 0 {
		h := sha256.Sum256(nil)
		return h[:], nil
	}
	ids := compact.RangeNodes(0, size, nil)
	hashes := make([][]byte, len(ids))
	for i, id := range ids {
		hashes[i] = l.nodes[id]
	}
	r, err := factory.NewRange(0, size, hashes)
	if err != nil {
		return nil, err
	}
	return r.GetRootHash(nil)
}

// Await implements [log.Appender].
func (l *MemoryLog) Await(ctx context.Context, index uint64) ([]byte, error) {
	for {
		l.mu.Lock()
		cp, size, ch, closed := l.checkpoint, uint64(len(l.entries)), l.published, l.closed
		l.mu.Unlock()
		if closed {
			return nil, log.ErrClosed
		}
		if cp != nil && index < size {
			return cp, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close implements [log.Log].
func (l *MemoryLog) Close(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		close(l.published)
	}
	return nil
}

// Checkpoint implements [log.Reader].
func (l *MemoryLog) Checkpoint(ctx context.Context) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, log.ErrClosed
	}
	if l.checkpoint == nil {
		return nil, log.ErrNoCheckpoint
	}
	return l.checkpoint, nil
}

// MaxPage is the most entries one MemoryLog.Entries call returns, small so
// that readers' paging gets exercised.
const MaxPage = 100

// Entries implements [log.Reader].
func (l *MemoryLog) Entries(ctx context.Context, start, end uint64) ([][]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkLocked(end); err != nil {
		return nil, err
	}
	if start >= end {
		return nil, log.Errorf(log.ErrOutOfRange, "empty or inverted range [%d, %d)", start, end)
	}
	end = min(end, start+MaxPage)
	out := make([][]byte, 0, end-start)
	for _, e := range l.entries[start:end] {
		out = append(out, append([]byte(nil), e...))
	}
	return out, nil
}

// InclusionProof implements [log.Reader].
func (l *MemoryLog) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkLocked(size); err != nil {
		return nil, err
	}
	if index >= size {
		return nil, log.Errorf(log.ErrOutOfRange, "index %d not below size %d", index, size)
	}
	n, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, err
	}
	return l.rehashLocked(n)
}

// ConsistencyProof implements [log.Reader].
func (l *MemoryLog) ConsistencyProof(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.checkLocked(newSize); err != nil {
		return nil, err
	}
	if oldSize == 0 || oldSize > newSize {
		return nil, log.Errorf(log.ErrOutOfRange, "consistency from size %d to %d", oldSize, newSize)
	}
	n, err := proof.Consistency(oldSize, newSize)
	if err != nil {
		return nil, err
	}
	return l.rehashLocked(n)
}

func (l *MemoryLog) checkLocked(size uint64) error {
	switch {
	case l.closed:
		return log.ErrClosed
	case l.checkpoint == nil:
		return log.ErrNoCheckpoint
	case size > uint64(len(l.entries)):
		return log.Errorf(log.ErrOutOfRange, "size %d beyond the checkpoint's %d", size, len(l.entries))
	}
	return nil
}

func (l *MemoryLog) rehashLocked(n proof.Nodes) ([][]byte, error) {
	hashes := make([][]byte, len(n.IDs))
	for i, id := range n.IDs {
		h, ok := l.nodes[id]
		if !ok {
			return nil, fmt.Errorf("memory log: missing node %+v", id)
		}
		hashes[i] = h
	}
	return n.Rehash(hashes, rfc6962.DefaultHasher.HashChildren)
}
