package posix

import (
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/keytrans/kt/log/tlogtiles"
)

// TilesHandler serves the log read-only as a C2SP tlog-tiles log: GET (or
// HEAD) /checkpoint, /tile/<L>/<N>[.p/<W>] and /tile/entries/<N>[.p/<W>],
// relative to wherever it is mounted (use http.StripPrefix for a prefix).
//
// Every other path is 404: the request path is parsed into numbers and must
// equal the canonical path rebuilt from them (tlogtiles.ParsePath, shared
// with the Trillian backend), and only that rebuilt path is opened, so no request can name another file (no "..", no leading zeroes,
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

func (l *Log) serveTiles(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/")
	if p == tlogtiles.CheckpointPath {
		raw, err := l.Checkpoint(r.Context())
		if err != nil {
			http.Error(w, "no checkpoint", http.StatusNotFound)
			return
		}
		tlogtiles.WriteCheckpoint(w, r, raw)
		return
	}
	res, err := tlogtiles.ParsePath(p)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	size, err := l.publishedSize(0)
	if err == nil && !res.Within(size) {
		// The cached size may lag the checkpoint file; look again.
		size, err = l.refresh()
	}
	if err != nil || !res.Within(size) {
		http.Error(w, tlogtiles.ErrBeyondTree.Error()+": "+res.Path(), http.StatusNotFound)
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
	tlogtiles.WriteTile(w, r, res, data)
}
