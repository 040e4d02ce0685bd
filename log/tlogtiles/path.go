// Package tlogtiles serves a log as a C2SP tlog-tiles log over HTTP, for
// every backend: the path grammar ([ParsePath]), which tiles a tree size
// implies ([Resource.Within]), the HTTP answers ([Handler]), and hash tiles
// and entry bundles computed from a log's entries ([Builder]) for backends
// that do not store tiles (log/trillian). The embedded backend (log/posix)
// stores Tessera's tiles on disk and serves those files, parsed with the
// same [ParsePath].
//
// SPEC(design.md 10)
package tlogtiles

import (
	"errors"
	"fmt"
	"strings"

	"github.com/transparency-dev/tessera/api/layout"
)

// ErrBadPath is matched (errors.Is) by the error of [ParsePath] for a path
// that is not a canonical tlog-tiles tile or entry bundle path.
var ErrBadPath = errors.New("not a canonical tlog-tiles path")

// ErrBeyondTree is returned for a tile or entry bundle that the latest
// published checkpoint does not imply.
var ErrBeyondTree = errors.New("beyond the published tree")

// CheckpointPath is the checkpoint's path (without leading slash).
const CheckpointPath = layout.CheckpointPath

// Resource is a parsed hash tile or entry bundle path.
type Resource struct {
	Entries bool   // an entry bundle, not a hash tile
	Level   uint64 // tile level, 0 for entry bundles
	Index   uint64 // tile index at Level
	Width   uint8  // 1 to 255 for a partial tile, 0 for a full one
}

// Path is the canonical path of r, without leading slash.
func (r Resource) Path() string {
	if r.Entries {
		return layout.EntriesPath(r.Index, r.Width)
	}
	return layout.TilePath(r.Level, r.Index, r.Width)
}

// Hashes is the number of hashes (or entries) r holds: 256 for a full
// tile, its width for a partial one.
func (r Resource) Hashes() int {
	if r.Width == 0 {
		return layout.TileWidth
	}
	return int(r.Width)
}

// ParsePath parses a tlog-tiles tile or bundle path (without leading
// slash), "tile/<L>/<N>[.p/<W>]" or "tile/entries/<N>[.p/<W>]", and accepts
// it only in canonical form: the path rebuilt from the parsed numbers must
// equal p, so no leading zeroes, no "..", no trailing slash, a width from 1
// to 255, a level below 64.
//
// SPEC(tlog-tiles): <N> in zero-padded 3-digit path elements, all but the
// last prefixed with "x"; a partial width <W> from 1 to 255.
//
// SPEC(design.md 10)
func ParsePath(p string) (Resource, error) {
	bad := func(why string) (Resource, error) {
		return Resource{}, fmt.Errorf("%w: %q: %s", ErrBadPath, truncate(p), why)
	}
	rest, ok := strings.CutPrefix(p, "tile/")
	if !ok {
		return bad("does not start with tile/")
	}
	levelStr, indexStr, ok := strings.Cut(rest, "/")
	if !ok {
		return bad("no tile index")
	}
	var r Resource
	if levelStr == "entries" {
		idx, w, err := layout.ParseTileIndexPartial(indexStr)
		if err != nil {
			return bad(err.Error())
		}
		r = Resource{Entries: true, Index: idx, Width: w}
	} else {
		lvl, idx, w, err := layout.ParseTileLevelIndexPartial(levelStr, indexStr)
		if err != nil {
			return bad(err.Error())
		}
		r = Resource{Level: lvl, Index: idx, Width: w}
	}
	if r.Path() != p {
		return bad("not in canonical form")
	}
	return r, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// Within reports whether a tree of the given size implies r: a full tile
// needs its 256 hashes at its level, a partial tile of width W needs at
// least Index*256+W hashes there (it is then the partial tile of some size
// up to size, and its W hashes never change). An entry bundle is the
// level-0 tile's entries.
func (r Resource) Within(size uint64) bool {
	if r.Level > 7 {
		// 256^8 = 2^64 leaves: no tile at level 8 or above can be complete,
		// and tlog-tiles limits levels to 63 anyway.
		return false
	}
	nodes := size >> (8 * r.Level) // hashes at this tile level
	if r.Index > (^uint64(0)-255)>>8 {
		return false
	}
	end := r.Index*layout.TileWidth + uint64(r.Width)
	if r.Width == 0 {
		end = (r.Index + 1) * layout.TileWidth
	}
	return end <= nodes
}
