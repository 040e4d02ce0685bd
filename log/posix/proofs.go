package posix

import (
	"context"
	"fmt"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api"
	"github.com/transparency-dev/tessera/api/layout"
)

// tileCacheSize is the number of hashed tiles kept in memory, about 16 KiB
// each when full: 16 MiB, enough for every tile on the proof paths of a
// recent stretch of a 10M-entry log.
const tileCacheSize = 1024

// prover builds RFC 6962 proofs from the hash tiles, like Tessera's
// client.ProofBuilder, but keeps every tile it read with all the interior
// hashes of its 8-level subtree computed once. Tessera's builder recomputes
// each proof node from the tile's leaves on every call, which made a proof
// cost about 0.5 ms of CPU in a 100,000-entry tree; here a cached proof costs
// map look-ups.
//
// Caching is sound because a tile (level, index, width) read for a tree
// size at most the published size has final contents: Tessera writes the
// tiles of a tree size before the tree state that the publisher signs, and
// never rewrites a tile below the durable tree size. The tests compare its
// proofs with Tessera's builder.
//
// A proof for an older tree size may need a partial tile that was never
// written (the tree grew past that width within one batch) or was
// garbage-collected. Tiles only grow, so the tile at the latest published
// size, cut to the width wanted, is that partial tile.
type prover struct {
	readTile func(ctx context.Context, level, index uint64, p uint8) ([]byte, error)
	// latest returns the latest published tree size.
	latest func() (uint64, error)
	cache  *lru.Cache[tileKey, *hashedTile]
}

type tileKey struct {
	level, index uint64
	width        uint8 // 0 for a full tile
}

// hashedTile holds the hashes of a tile's subtree: levels[0] are the tile's
// hashes, levels[k][i] the root of levels[k-1][2i] and levels[k-1][2i+1]
// (only complete pairs).
type hashedTile struct {
	levels [layout.TileHeight + 1][][]byte
}

func newProver(readTile func(ctx context.Context, level, index uint64, p uint8) ([]byte, error), latest func() (uint64, error)) *prover {
	c, err := lru.New[tileKey, *hashedTile](tileCacheSize)
	if err != nil {
		panic(err) // only for a non-positive size
	}
	return &prover{readTile: readTile, latest: latest, cache: c}
}

func (pr *prover) inclusion(ctx context.Context, index, size uint64) ([][]byte, error) {
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, err
	}
	return pr.fetch(ctx, nodes, size)
}

func (pr *prover) consistency(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
	nodes, err := proof.Consistency(oldSize, newSize)
	if err != nil {
		return nil, err
	}
	return pr.fetch(ctx, nodes, newSize)
}

func (pr *prover) fetch(ctx context.Context, nodes proof.Nodes, size uint64) ([][]byte, error) {
	hashes := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, err := pr.node(ctx, id, size)
		if err != nil {
			return nil, err
		}
		hashes[i] = h
	}
	return nodes.Rehash(hashes, rfc6962.DefaultHasher.HashChildren)
}

// node returns the hash of a perfect subtree of the tree of the given size.
func (pr *prover) node(ctx context.Context, id compact.NodeID, size uint64) ([]byte, error) {
	tl, ti, nl, ni := layout.NodeCoordsToTileAddress(uint64(id.Level), id.Index)
	key := tileKey{tl, ti, layout.PartialTileSize(tl, ti, size)}
	t, ok := pr.cache.Get(key)
	if !ok {
		raw, err := pr.readTile(ctx, tl, ti, key.width)
		if err != nil && key.width != 0 {
			// The partial tile of that width may never have existed: read
			// the tile as it is now and cut it (hashTile keeps the prefix).
			raw, err = pr.readCurrent(ctx, tl, ti)
		}
		if err != nil {
			return nil, fmt.Errorf("reading tile %d/%d.p/%d: %w", tl, ti, key.width, err)
		}
		t, err = hashTile(raw, key.width)
		if err != nil {
			return nil, fmt.Errorf("tile %d/%d.p/%d: %w", tl, ti, key.width, err)
		}
		pr.cache.Add(key, t)
	}
	if row := t.levels[nl]; ni < uint64(len(row)) {
		return row[ni], nil
	}
	return nil, fmt.Errorf("tile %d/%d.p/%d has no node %d at level %d", tl, ti, key.width, ni, nl)
}

// hashTile parses a tile of the given width (0 for full) and computes its
// interior hashes. A full tile read in place of a partial one (the partial
// one was garbage-collected) is cut to the width: its prefix is the partial
// tile.
func hashTile(raw []byte, width uint8) (*hashedTile, error) {
	var tile api.HashTile
	if err := tile.UnmarshalText(raw); err != nil {
		return nil, err
	}
	want := int(width)
	if width == 0 {
		want = layout.TileWidth
	}
	if len(tile.Nodes) < want {
		return nil, fmt.Errorf("%d hashes, want %d", len(tile.Nodes), want)
	}
	t := &hashedTile{}
	t.levels[0] = tile.Nodes[:want]
	for k := 1; k <= layout.TileHeight; k++ {
		below := t.levels[k-1]
		row := make([][]byte, len(below)/2)
		for i := range row {
			row[i] = rfc6962.DefaultHasher.HashChildren(below[2*i], below[2*i+1])
		}
		t.levels[k] = row
	}
	return t, nil
}

// readCurrent reads a tile as the latest published tree has it.
func (pr *prover) readCurrent(ctx context.Context, level, index uint64) ([]byte, error) {
	size, err := pr.latest()
	if err != nil {
		return nil, err
	}
	return pr.readTile(ctx, level, index, layout.PartialTileSize(level, index, size))
}
