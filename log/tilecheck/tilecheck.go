// Package tilecheck checks a C2SP tlog-tiles log's stored hash tiles and
// entry bundles against the tree heads signed for them. It is the one
// implementation of those checks, used by the embedded backend
// ([github.com/keytrans/kt/log/posix]) at start-up and before every
// checkpoint signature, and by `ktctl verify --tiles` (an fsck).
//
// Three checks, from cheap to complete:
//
//   - [CheckRoot]: the right edge. The tiles on the right edge of the tree
//     of a size (O(log n) tiles) reproduce its root, and the entries of its
//     last entry bundle hash to the leaf hashes of its last level-0 tile.
//     This is what a new tree head is built on: Tessera integrates new
//     entries into the right edge it reads from the tiles, so a corrupted
//     right edge produces a root that does not extend the signed one.
//   - [CheckConsistent]: a consistency proof built from the tiles between
//     two tree heads verifies. A tree head it accepts extends the other,
//     whatever the tiles hold: the proof is checked against both roots.
//   - [CheckAll]: every tile recomputed from the entries, compared with the
//     stored one, and the root with the signed root.
//
// Every failure caused by what is stored is a [*CorruptError] naming the
// files (paths relative to the log's root, as tlog-tiles names them) and
// matching [ErrCorrupt] with errors.Is.
package tilecheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
)

// ErrCorrupt is matched (errors.Is) by every [*CorruptError].
var ErrCorrupt = errors.New("corrupt log storage")

// CorruptError is a stored file that does not hold what the signed tree
// heads say it must.
type CorruptError struct {
	// Files are the suspect files, relative to the log's root (for example
	// "tile/0/001.p/5"). When the check cannot tell which of several files
	// is wrong it names them all.
	Files []string
	// Detail says what does not match.
	Detail string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("corrupt log storage: %s: %s", strings.Join(e.Files, ", "), e.Detail)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

func corrupt(detail string, files ...string) error {
	return &CorruptError{Files: files, Detail: detail}
}

// Fetcher reads tiles and entry bundles by their tlog-tiles coordinates
// (p is the partial width, 0 for a full tile); a missing one is an error
// matching fs.ErrNotExist. Tessera's client.FileFetcher and
// client.HTTPFetcher and its LogReader implement it.
type Fetcher interface {
	ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error)
	ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error)
}

// Tiles reads a log whose tiles exist up to tree size Latest: a partial
// tile of a smaller size that is missing (garbage-collected once a wider
// or full one was written, or never written because one batch grew the
// tree past it) is read as the tile at Latest, cut to the width wanted.
// Tiles only grow, so that is the same tile.
type Tiles struct {
	F      Fetcher
	Latest uint64
}

// ReadTile implements [Fetcher].
func (t Tiles) ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error) {
	raw, err := t.F.ReadTile(ctx, level, index, p)
	if err == nil || p == 0 || !errors.Is(err, fs.ErrNotExist) {
		return raw, err
	}
	wide := layout.PartialTileSize(level, index, t.Latest)
	if wide != 0 && wide <= p {
		return nil, err
	}
	if raw, err = t.F.ReadTile(ctx, level, index, wide); err != nil {
		return nil, err
	}
	if len(raw) < int(p)*32 {
		return nil, corrupt(fmt.Sprintf("%d bytes, want at least %d", len(raw), int(p)*32), layout.TilePath(level, index, wide))
	}
	return raw[:int(p)*32], nil
}

// ReadEntryBundle implements [Fetcher].
func (t Tiles) ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error) {
	raw, err := t.F.ReadEntryBundle(ctx, index, p)
	if err == nil || p == 0 || !errors.Is(err, fs.ErrNotExist) {
		return raw, err
	}
	wide := layout.PartialTileSize(0, index, t.Latest)
	if wide != 0 && wide <= p {
		return nil, err
	}
	if raw, err = t.F.ReadEntryBundle(ctx, index, wide); err != nil {
		return nil, err
	}
	var b api.EntryBundle
	if err := b.UnmarshalText(raw); err != nil || len(b.Entries) < int(p) {
		return nil, corrupt(fmt.Sprintf("unparsable or short entry bundle (%v)", err), layout.EntriesPath(index, wide))
	}
	var out bytes.Buffer
	for _, e := range b.Entries[:p] {
		out.Write([]byte{byte(len(e) >> 8), byte(len(e))})
		out.Write(e)
	}
	return out.Bytes(), nil
}

// edgeFiles names the tiles that hold the right edge of the tree of size.
func edgeFiles(size uint64) []string {
	var files []string
	seen := map[string]bool{}
	for _, id := range compact.RangeNodes(0, size, nil) {
		tl, ti, _, _ := layout.NodeCoordsToTileAddress(uint64(id.Level), id.Index)
		p := layout.TilePath(tl, ti, layout.PartialTileSize(tl, ti, size))
		if !seen[p] {
			seen[p] = true
			files = append(files, p)
		}
	}
	return files
}

// Root computes the root of the tree of the given size from the tiles on
// its right edge.
func Root(ctx context.Context, f Fetcher, size uint64) ([]byte, error) {
	if size == 0 {
		return rfc6962.DefaultHasher.EmptyRoot(), nil
	}
	nodes, err := client.FetchRangeNodes(ctx, size, f.ReadTile)
	if err != nil {
		return nil, fmt.Errorf("reading the right edge of tree %d (%s): %w", size, strings.Join(edgeFiles(size), ", "), err)
	}
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	r, err := rf.NewRange(0, size, nodes)
	if err != nil {
		return nil, corrupt(err.Error(), edgeFiles(size)...)
	}
	return r.GetRootHash(nil)
}

// CheckRoot checks that the stored right edge of the tree of the given size
// reproduces root, and that the entries of the last entry bundle hash to
// the leaves of the last level-0 tile. It names the files it suspects:
// the last bundle if its entries disagree with the tile whose leaves give
// the right root, the level-0 tile if the entries give the right root and
// the tile does not, else every tile of the right edge.
func CheckRoot(ctx context.Context, f Fetcher, size uint64, root []byte) error {
	got, err := Root(ctx, f, size)
	if err != nil {
		return err
	}
	rootOK := bytes.Equal(got, root)
	if size == 0 {
		if !rootOK {
			return corrupt(fmt.Sprintf("the empty tree's root is %x, not %x", got, root))
		}
		return nil
	}
	// The last bundle's entries against the last level-0 tile.
	last := (size - 1) / layout.EntryBundleWidth
	w := layout.PartialTileSize(0, last, size)
	bundlePath, tilePath := layout.EntriesPath(last, w), layout.TilePath(0, last, w)
	leaves, err := bundleLeaves(ctx, f, last, w)
	if err != nil {
		return err
	}
	tileRaw, err := f.ReadTile(ctx, 0, last, w)
	if err != nil {
		return fmt.Errorf("reading %s: %w", tilePath, err)
	}
	var tile api.HashTile
	if err := tile.UnmarshalText(tileRaw); err != nil {
		return corrupt(err.Error(), tilePath)
	}
	bundleOK := len(tile.Nodes) >= len(leaves)
	for i := 0; bundleOK && i < len(leaves); i++ {
		bundleOK = bytes.Equal(tile.Nodes[i], leaves[i])
	}
	switch {
	case rootOK && bundleOK:
		return nil
	case rootOK:
		return corrupt(fmt.Sprintf("the entries of the last bundle of tree %d do not hash to the leaves of %s, which reproduce the signed root", size, tilePath), bundlePath)
	case !bundleOK:
		// The root is wrong and the bundle disagrees with the tile: if the
		// bundle's leaves give the signed root, the tile is corrupt.
		alt := Tiles{F: overlay{f, 0, last, w, leaves}, Latest: size}
		if got2, err := Root(ctx, alt, size); err == nil && bytes.Equal(got2, root) {
			return corrupt(fmt.Sprintf("its leaves do not hash the entries of %s, which reproduce the signed root of tree %d", bundlePath, size), tilePath)
		}
	}
	return corrupt(fmt.Sprintf("the right edge of tree %d gives root %x, the signed root is %x", size, got, root), edgeFiles(size)...)
}

// overlay serves leaves in place of one stored tile.
type overlay struct {
	Fetcher
	level, index uint64
	p            uint8
	leaves       [][]byte
}

func (o overlay) ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error) {
	if level == o.level && index == o.index && p == o.p {
		return bytes.Join(o.leaves, nil), nil
	}
	return o.Fetcher.ReadTile(ctx, level, index, p)
}

// bundleLeaves reads an entry bundle and returns its entries' leaf hashes.
func bundleLeaves(ctx context.Context, f Fetcher, index uint64, p uint8) ([][]byte, error) {
	path := layout.EntriesPath(index, p)
	raw, err := f.ReadEntryBundle(ctx, index, p)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	var b api.EntryBundle
	if err := b.UnmarshalText(raw); err != nil {
		return nil, corrupt(err.Error(), path)
	}
	want := int(p)
	if p == 0 {
		want = layout.EntryBundleWidth
	}
	if len(b.Entries) < want {
		return nil, corrupt(fmt.Sprintf("%d entries, want %d", len(b.Entries), want), path)
	}
	leaves := make([][]byte, want)
	for i, e := range b.Entries[:want] {
		leaves[i] = rfc6962.DefaultHasher.HashLeaf(e)
	}
	return leaves, nil
}

// CheckConsistent checks that a consistency proof built from the tiles
// proves that the tree (newSize, newRoot) extends (oldSize, oldRoot). If
// it does not, the tiles between them are corrupt or the new root was not
// computed from them: either way the new tree head must not be signed.
func CheckConsistent(ctx context.Context, f Fetcher, oldSize uint64, oldRoot []byte, newSize uint64, newRoot []byte) error {
	switch {
	case newSize < oldSize:
		return corrupt(fmt.Sprintf("tree %d is smaller than the signed tree %d", newSize, oldSize))
	case newSize == oldSize:
		if !bytes.Equal(oldRoot, newRoot) {
			return corrupt(fmt.Sprintf("tree %d has root %x, the signed one %x", newSize, newRoot, oldRoot))
		}
		return nil
	case oldSize == 0:
		// Every tree extends the empty one; the new root must still be
		// the tiles'.
		return CheckRoot(ctx, f, newSize, newRoot)
	}
	pb, err := client.NewProofBuilder(ctx, newSize, f.ReadTile)
	if err != nil {
		return err
	}
	p, err := pb.ConsistencyProof(ctx, oldSize, newSize)
	if err != nil {
		return fmt.Errorf("building the consistency proof %d -> %d from %s: %w", oldSize, newSize, strings.Join(edgeFiles(newSize), ", "), err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, oldSize, newSize, p, oldRoot, newRoot); err != nil {
		// The damage is on the right edge of either tree (what the new
		// one was built on, or what it wrote).
		files := edgeFiles(oldSize)
		for _, f := range edgeFiles(newSize) {
			if !slices.Contains(files, f) {
				files = append(files, f)
			}
		}
		return corrupt(fmt.Sprintf("tree %d (root %x) does not extend the signed tree %d (root %x): the consistency proof from the tiles does not verify", newSize, newRoot, oldSize, oldRoot), files...)
	}
	return nil
}

// Progress is told how many entries of how many were checked.
type Progress func(done, total uint64)

// CheckAll recomputes every hash tile of the tree of the given size from
// the entries and compares it with the stored tile (a partial tile only
// as far as the tree reaches), then the root with root. It reports the
// first mismatch: a tile when the entries reproduce the signed root (the
// tile is wrong), an entry bundle when they do not (the entries are
// wrong, or both).
//
// It reads every bundle and tile once and keeps one 256-hash row per
// level in memory.
func CheckAll(ctx context.Context, f Fetcher, size uint64, root []byte, progress Progress) error {
	if size == 0 {
		return CheckRoot(ctx, f, 0, root)
	}
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	cr := rf.NewEmptyRange(0)
	// rows[L] holds the level-L hashes of the current level-L tile.
	var rows [][][]byte
	var firstBad error
	badBundle := "" // the bundle under the first level-0 tile that differs
	// push adds the hash of node index at level (in tile coordinates: a
	// level-L tile row) and, when a row is full, compares it with the
	// stored tile and hands its root to the next tile level.
	var push func(level int, index uint64, h []byte) error
	compare := func(level int, index uint64, row [][]byte, p uint8) error {
		path := layout.TilePath(uint64(level), index, p)
		raw, err := f.ReadTile(ctx, uint64(level), index, p)
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		var t api.HashTile
		if err := t.UnmarshalText(raw); err != nil {
			if firstBad == nil {
				firstBad = corrupt(err.Error(), path)
			}
			return nil
		}
		for i, h := range row {
			if i >= len(t.Nodes) || !bytes.Equal(t.Nodes[i], h) {
				if firstBad == nil {
					firstBad = corrupt(fmt.Sprintf("hash %d (byte %d) differs from the one recomputed from the entries", i, 32*i), path)
					if level == 0 {
						badBundle = layout.EntriesPath(index, p)
					}
				}
				return nil
			}
		}
		return nil
	}
	push = func(level int, index uint64, h []byte) error {
		for len(rows) <= level {
			rows = append(rows, nil)
		}
		rows[level] = append(rows[level], h)
		if len(rows[level]) < layout.TileWidth {
			return nil
		}
		if err := compare(level, index/layout.TileWidth, rows[level], 0); err != nil {
			return err
		}
		r := rf.NewEmptyRange(0)
		for _, x := range rows[level] {
			if err := r.Append(x, nil); err != nil {
				return err
			}
		}
		top, err := r.GetRootHash(nil)
		if err != nil {
			return err
		}
		rows[level] = rows[level][:0]
		return push(level+1, index/layout.TileWidth, top)
	}
	for b := uint64(0); b*layout.EntryBundleWidth < size; b++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := layout.PartialTileSize(0, b, size)
		leaves, err := bundleLeaves(ctx, f, b, p)
		if err != nil {
			return err
		}
		for i, h := range leaves {
			idx := b*layout.EntryBundleWidth + uint64(i)
			if err := cr.Append(h, nil); err != nil {
				return err
			}
			if err := push(0, idx, h); err != nil {
				return err
			}
		}
		if progress != nil {
			progress(min(size, (b+1)*layout.EntryBundleWidth), size)
		}
	}
	// The partial tiles of the right edge.
	n := size
	for level := 0; level < len(rows); level++ {
		if len(rows[level]) > 0 {
			idx := n / layout.TileWidth
			if err := compare(level, idx, rows[level], uint8(len(rows[level]))); err != nil {
				return err
			}
		}
		n /= layout.TileWidth
	}
	got, err := cr.GetRootHash(nil)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, root) {
		if badBundle != "" {
			return corrupt(fmt.Sprintf("its entries hash neither to the stored leaves nor to the signed root of tree %d", size), badBundle)
		}
		return corrupt(fmt.Sprintf("the entries of tree %d hash to root %x, the signed root is %x", size, got, root), "tile/entries")
	}
	return firstBad
}
