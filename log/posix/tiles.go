package posix

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/transparency-dev/tessera/api/layout"
)

// TilesHandler serves the log read-only as a C2SP tlog-tiles log: GET (or
// HEAD) /checkpoint, /tile/<L>/<N>[.p/<W>] and /tile/entries/<N>[.p/<W>],
// relative to wherever it is mounted (use http.StripPrefix for a prefix).
//
// Every other path is 404: the request path is parsed into numbers and must
// equal the canonical path rebuilt from them, and only that rebuilt path is
// opened, so no request can name another file (no "..", no leading zeroes,
// no private state).
//
// Tiles and bundles are served only when the latest published checkpoint
// implies them. Files beyond it may be leftovers of a batch that crashed
// before it was acknowledged, and are rewritten later with other contents;
// they must never reach a cache. What is served is immutable, so it is
// served with long-lived caching.
//
// SPEC(tlog-tiles): the checkpoint is served with "Content-Type: text/plain;
// charset=utf-8" and headers that "prevent caching beyond a few seconds";
// tiles and entry bundles with "Content-Type: application/octet-stream" and
// long-lived caching; entry bundles "SHOULD be compressed at the HTTP layer".
//
// SPEC(design.md 10)
func (l *Log) TilesHandler() http.Handler {
	return http.HandlerFunc(l.serveTiles)
}

const (
	cacheImmutable  = "public, max-age=31536000, immutable"
	cacheCheckpoint = "no-cache" // revalidate every time; it changes every CheckpointInterval
)

func (l *Log) serveTiles(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/")
	if p == layout.CheckpointPath {
		raw, err := l.Checkpoint(r.Context())
		if err != nil {
			http.Error(w, "no checkpoint", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", cacheCheckpoint)
		_, _ = w.Write(raw)
		return
	}
	res, ok := parseTilePath(p)
	if !ok {
		http.NotFound(w, r)
		return
	}
	size, err := l.publishedSize(0)
	if err == nil && !res.within(size) {
		// The cached size may lag the checkpoint file; look again.
		size, err = l.refresh()
	}
	if err != nil || !res.within(size) {
		http.NotFound(w, r)
		return
	}
	data, err := os.ReadFile(filepath.Join(l.cfg.Dir, filepath.FromSlash(p)))
	if errors.Is(err, fs.ErrNotExist) {
		// A partial tile removed by garbage collection once the full one
		// exists; clients fall back to the full tile.
		http.NotFound(w, r)
		return
	}
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Cache-Control", cacheImmutable)
	if res.entries {
		h.Set("Vary", "Accept-Encoding")
		if acceptsGzip(r) {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			_, _ = zw.Write(data)
			_ = zw.Close()
			data = buf.Bytes()
			h.Set("Content-Encoding", "gzip")
		}
	}
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(data)
}

func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for _, c := range strings.Split(v, ",") {
			c, q, _ := strings.Cut(strings.TrimSpace(c), ";")
			if strings.EqualFold(strings.TrimSpace(c), "gzip") && strings.TrimSpace(q) != "q=0" {
				return true
			}
		}
	}
	return false
}

// tileResource is a parsed tile or entry bundle path.
type tileResource struct {
	entries bool
	level   uint64 // 0 for entry bundles
	index   uint64
	width   uint8 // 0 for a full tile
}

// parseTilePath parses a tlog-tiles tile or bundle path (without leading
// slash) and accepts it only in canonical form.
//
// SPEC(design.md 10)
func parseTilePath(p string) (tileResource, bool) {
	rest, ok := strings.CutPrefix(p, "tile/")
	if !ok {
		return tileResource{}, false
	}
	levelStr, indexStr, ok := strings.Cut(rest, "/")
	if !ok {
		return tileResource{}, false
	}
	var res tileResource
	if levelStr == "entries" {
		res.entries = true
		idx, w, err := layout.ParseTileIndexPartial(indexStr)
		if err != nil {
			return tileResource{}, false
		}
		res.index, res.width = idx, w
		if layout.EntriesPath(idx, w) != p {
			return tileResource{}, false
		}
		return res, true
	}
	lvl, idx, w, err := layout.ParseTileLevelIndexPartial(levelStr, indexStr)
	if err != nil {
		return tileResource{}, false
	}
	res.level, res.index, res.width = lvl, idx, w
	if layout.TilePath(lvl, idx, w) != p {
		return tileResource{}, false
	}
	return res, true
}

// within reports whether a tree of the given size implies the resource: a
// full tile needs its 256 hashes at its level, a partial tile of width W
// needs at least index*256+W hashes there (it is then the partial tile of
// some size up to size).
func (t tileResource) within(size uint64) bool {
	if t.level > 7 {
		// 256^8 = 2^64 leaves: no tile at level 8 or above can be complete,
		// and tlog-tiles limits levels to 63 anyway.
		return false
	}
	nodes := size >> (8 * t.level) // hashes at this tile level
	if t.index > (^uint64(0)-255)>>8 {
		return false
	}
	end := t.index*layout.TileWidth + uint64(t.width)
	if t.width == 0 {
		end = (t.index + 1) * layout.TileWidth
	}
	return end <= nodes
}
