package tlogtiles

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api/layout"
	"golang.org/x/sync/singleflight"

	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/logapi"
)

// DefaultCacheTiles is the default number of full hash tiles a [Builder]
// keeps per cache (it has two: level 0, and the levels above), 8 KiB each:
// 32 MiB in all.
const DefaultCacheTiles = 2048

// EntriesFunc returns entries [start, end) of a log, or a prefix of them
// (at least one), as log.Reader.Entries does.
type EntriesFunc func(ctx context.Context, start, end uint64) ([][]byte, error)

// Builder computes hash tiles and entry bundles from a log's entries, for
// backends that store no tiles. Hash tiles depend only on the entries, so
// they are byte for byte those of any other tlog-tiles log of the same
// entries (the embedded backend's).
//
// A level-0 tile is the RFC 6962 leaf hashes of its bundle's entries; hash
// i of a level-L tile (L > 0) is the root of the full level-(L-1) tile
// 256*N+i, a perfect subtree of 256 hashes. Partial tiles hold only the
// hashes of complete subtrees, so every tile, full or partial, is computed
// from full tiles one level down (or entries): full tiles never change and
// are cached, in two LRU caches of a bounded number of tiles, one for level
// 0 and one for the levels above (which are 256 times fewer and each stands
// for 256 times more entries).
//
// Cost: a level-0 tile reads its 256 entries once; a level-L tile cold
// reads 256^L entries, and then at most 256 tiles of the level below while
// they stay cached. Following the log as it grows, each entry is read about
// once; a cold cache (a restart) makes the first right-edge request read
// the whole log once.
//
// The Builder does not check that a tile is implied by a published
// checkpoint: its caller ([Handler]) does, and the EntriesFunc refuses
// entries beyond it.
//
// SPEC(design.md 17): tlog-tiles on Trillian.
type Builder struct {
	entries EntriesFunc
	low     *lru.Cache[tileKey, []byte] // full level-0 tiles
	high    *lru.Cache[tileKey, []byte] // full tiles of levels above 0
	group   singleflight.Group
}

type tileKey struct{ level, index uint64 }

// computeTimeout bounds the computation of one full tile, which goes on
// when the request that started it goes away (others may wait for it).
const computeTimeout = 10 * time.Minute

// NewBuilder returns a Builder reading entries with entries, caching up to
// cacheTiles full tiles per cache (0 means DefaultCacheTiles).
func NewBuilder(entries EntriesFunc, cacheTiles int) (*Builder, error) {
	if cacheTiles < 0 {
		return nil, fmt.Errorf("tlogtiles: tile cache size %d is negative", cacheTiles)
	}
	if cacheTiles == 0 {
		cacheTiles = DefaultCacheTiles
	}
	low, err := lru.New[tileKey, []byte](cacheTiles)
	if err != nil {
		return nil, err
	}
	high, err := lru.New[tileKey, []byte](cacheTiles)
	if err != nil {
		return nil, err
	}
	return &Builder{entries: entries, low: low, high: high}, nil
}

// ReadEntryBundle returns entry bundle index of width w (0 for 256
// entries): each entry as uint16 length || entry.
//
// SPEC(design.md 10)
func (b *Builder) ReadEntryBundle(ctx context.Context, index uint64, w uint8) ([]byte, error) {
	es, err := b.read(ctx, index*layout.EntryBundleWidth, width(w))
	if err != nil {
		return nil, err
	}
	return logapi.AppendEntries(nil, es)
}

// ReadTile returns hash tile (level, index) of width w (0 for 256 hashes).
// The caller may modify the returned bytes.
//
// SPEC(design.md 10)
func (b *Builder) ReadTile(ctx context.Context, level, index uint64, w uint8) ([]byte, error) {
	if level > 7 {
		return nil, fmt.Errorf("%w: tile level %d", ErrBeyondTree, level)
	}
	if w == 0 {
		t, err := b.full(ctx, level, index)
		return bytes.Clone(t), err
	}
	if t, ok := b.cache(level).Get(tileKey{level, index}); ok {
		return bytes.Clone(t[:int(w)*rfc6962.DefaultHasher.Size()]), nil
	}
	return b.compute(ctx, level, index, int(w))
}

func (b *Builder) cache(level uint64) *lru.Cache[tileKey, []byte] {
	if level == 0 {
		return b.low
	}
	return b.high
}

// full returns the full tile (level, index), from the cache or computed
// once however many callers want it at the same time. The result is shared:
// callers must not modify it.
func (b *Builder) full(ctx context.Context, level, index uint64) ([]byte, error) {
	key := tileKey{level, index}
	c := b.cache(level)
	if t, ok := c.Get(key); ok {
		return t, nil
	}
	v, err, _ := b.group.Do(strconv.FormatUint(level, 10)+"/"+strconv.FormatUint(index, 10), func() (any, error) {
		if t, ok := c.Get(key); ok {
			return t, nil
		}
		// Shared by every caller waiting for this tile: one caller
		// going away must not fail the others.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), computeTimeout)
		defer cancel()
		t, err := b.compute(cctx, level, index, layout.TileWidth)
		if err != nil {
			return nil, err
		}
		c.Add(key, t)
		return t, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

// compute builds the first n hashes of tile (level, index).
func (b *Builder) compute(ctx context.Context, level, index uint64, n int) ([]byte, error) {
	h := rfc6962.DefaultHasher
	out := make([]byte, 0, n*h.Size())
	if level == 0 {
		es, err := b.read(ctx, index*layout.TileWidth, n)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			out = append(out, h.HashLeaf(e)...)
		}
		return out, nil
	}
	for i := range n {
		child, err := b.full(ctx, level-1, index*layout.TileWidth+uint64(i))
		if err != nil {
			return nil, err
		}
		out = append(out, subtreeRoot(child)...)
	}
	return out, nil
}

// subtreeRoot returns the root of the perfect tree over the 256 hashes of
// a full tile.
func subtreeRoot(tile []byte) []byte {
	h := rfc6962.DefaultHasher
	sz := h.Size()
	row := make([][]byte, len(tile)/sz)
	for i := range row {
		row[i] = tile[i*sz : (i+1)*sz]
	}
	for len(row) > 1 {
		next := row[:len(row)/2]
		for i := range next {
			next[i] = h.HashChildren(row[2*i], row[2*i+1])
		}
		row = next
	}
	return row[0]
}

// read returns exactly n entries from start.
func (b *Builder) read(ctx context.Context, start uint64, n int) ([][]byte, error) {
	out := make([][]byte, 0, n)
	for len(out) < n {
		pos := start + uint64(len(out))
		es, err := b.entries(ctx, pos, start+uint64(n))
		if err != nil {
			return nil, err
		}
		if len(es) == 0 {
			return nil, fmt.Errorf("tlogtiles: no entries at %d: %w", pos, log.ErrPushback)
		}
		if len(es) > n-len(out) {
			return nil, fmt.Errorf("tlogtiles: asked for %d entries at %d, got %d", n-len(out), pos, len(es))
		}
		out = append(out, es...)
	}
	return out, nil
}

func width(w uint8) int {
	if w == 0 {
		return layout.TileWidth
	}
	return int(w)
}
