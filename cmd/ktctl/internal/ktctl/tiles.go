package ktctl

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/transparency-dev/tessera/client"

	klog "github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/tilecheck"
)

// TilesReader reads a C2SP tlog-tiles log, such as the directory of ktd's
// embedded backend (DATA_DIR/log) or ktd's HTTP root, with Tessera's
// client. It implements [klog.Reader] for a fixed tree size: set Size to
// the verified checkpoint's size before reading entries or proofs, which
// are served in that tree only.
type TilesReader struct {
	// Size is the tree size entries and proofs are read in.
	Size uint64

	f interface {
		ReadCheckpoint(context.Context) ([]byte, error)
		ReadTile(context.Context, uint64, uint64, uint8) ([]byte, error)
		ReadEntryBundle(context.Context, uint64, uint8) ([]byte, error)
	}
	mu sync.Mutex
	pb *client.ProofBuilder
}

var _ klog.Reader = (*TilesReader)(nil)

// NewTilesReader reads the tlog-tiles log at loc: an http:// or https://
// URL (the prefix of /checkpoint and /tile/), or a directory.
func NewTilesReader(loc string, hc *http.Client) (*TilesReader, error) {
	if strings.HasPrefix(loc, "http://") || strings.HasPrefix(loc, "https://") {
		u, err := url.Parse(strings.TrimRight(loc, "/") + "/")
		if err != nil {
			return nil, fmt.Errorf("%w: tiles URL %q: %w", ErrArgument, loc, err)
		}
		f, err := client.NewHTTPFetcher(u, hc)
		if err != nil {
			return nil, fmt.Errorf("%w: tiles URL %q: %w", ErrArgument, loc, err)
		}
		return &TilesReader{f: f}, nil
	}
	return &TilesReader{f: client.FileFetcher{Root: loc}}, nil
}

// Checkpoint implements [klog.Reader].
func (t *TilesReader) Checkpoint(ctx context.Context) ([]byte, error) {
	return t.f.ReadCheckpoint(ctx)
}

// Entries implements [klog.Reader]: it returns the entries of [start, end)
// in the bundle that holds start.
//
// SPEC(design.md 10)
func (t *TilesReader) Entries(ctx context.Context, start, end uint64) ([][]byte, error) {
	if start >= end || end > t.Size {
		return nil, klog.Errorf(klog.ErrOutOfRange, "entries [%d, %d) in a tree of size %d", start, end, t.Size)
	}
	b, err := client.GetEntryBundle(ctx, t.f.ReadEntryBundle, start/256, t.Size)
	if err != nil {
		return nil, err
	}
	first := start % 256
	if uint64(len(b.Entries)) <= first {
		return nil, fmt.Errorf("entry bundle %d has %d entries, want more than %d", start/256, len(b.Entries), first)
	}
	es := b.Entries[first:]
	if n := end - start; uint64(len(es)) > n {
		es = es[:n]
	}
	return es, nil
}

func (t *TilesReader) proofs(ctx context.Context, size uint64) (*client.ProofBuilder, error) {
	if size != t.Size {
		return nil, klog.Errorf(klog.ErrOutOfRange, "proofs are served in the tree of size %d, not %d", t.Size, size)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pb == nil {
		pb, err := client.NewProofBuilder(ctx, t.Size, t.f.ReadTile)
		if err != nil {
			return nil, err
		}
		t.pb = pb
	}
	return t.pb, nil
}

// InclusionProof implements [klog.Reader], for size = Size only.
func (t *TilesReader) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	pb, err := t.proofs(ctx, size)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return pb.InclusionProof(ctx, index)
}

// ConsistencyProof implements [klog.Reader], for newSize = Size only.
func (t *TilesReader) ConsistencyProof(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
	pb, err := t.proofs(ctx, newSize)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return pb.ConsistencyProof(ctx, oldSize, newSize)
}

// CheckTiles recomputes every hash tile of the tree of cp's size from the
// entry bundles and compares it with the stored tile, and the root with
// cp's (tilecheck.CheckAll, the check ktd's embedded backend runs at start
// with log.full_check). A replay checks the entries against the root, but
// proofs are served from the stored tiles: a damaged tile passes a replay
// while clients reject the proofs built from it. A mismatch is a
// [*VerifyError] "hash tiles" wrapping a *tilecheck.CorruptError that
// names the file.
func (t *TilesReader) CheckTiles(ctx context.Context, cp *Checkpoint, progress Progress) error {
	f := tilecheck.Tiles{F: t.f, Latest: cp.Size}
	err := tilecheck.CheckAll(ctx, f, cp.Size, cp.Root, tilecheck.Progress(progress))
	if errors.Is(err, tilecheck.ErrCorrupt) {
		return verifyErr("hash tiles", err, "the stored tiles do not match the entries")
	}
	return err
}
