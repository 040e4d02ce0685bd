package tlogtiles

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/keytrans/kt/log"
)

// Cache-Control values of the answers.
const (
	// CacheImmutable is for tiles and entry bundles: what a tree size
	// implies never changes.
	CacheImmutable = "public, max-age=31536000, immutable"
	// CacheCheckpoint is for the checkpoint: revalidate every time, it
	// changes every checkpoint interval.
	CacheCheckpoint = "no-cache"
)

// Source is what [Handler] serves: a log's latest published checkpoint and
// the tiles and entry bundles of its tree. ReadTile and ReadEntryBundle are
// asked only for resources that the size returned by Size implies
// ([Resource.Within]); the bytes they return are not modified.
type Source interface {
	// Checkpoint returns the latest published checkpoint, as served (with
	// its cosignatures): log.ErrNoCheckpoint before the first.
	Checkpoint(ctx context.Context) ([]byte, error)
	// Size returns the tree size of the latest published checkpoint.
	Size(ctx context.Context) (uint64, error)
	// ReadTile returns the hash tile at level and index, of width w
	// hashes (0 for a full tile of 256).
	ReadTile(ctx context.Context, level, index uint64, w uint8) ([]byte, error)
	// ReadEntryBundle returns the entry bundle at index, of width w
	// entries (0 for a full bundle of 256).
	ReadEntryBundle(ctx context.Context, index uint64, w uint8) ([]byte, error)
}

// Handler serves src read-only as a C2SP tlog-tiles log: GET (or HEAD)
// /checkpoint, /tile/<L>/<N>[.p/<W>] and /tile/entries/<N>[.p/<W>],
// relative to wherever it is mounted.
//
// Answers: 200 with the resource; 404 for a path that is not a canonical
// tlog-tiles path ([ErrBadPath]: malformed, a width outside 1..255, a level
// of 64 or more) or a resource the latest published checkpoint does not
// imply ([ErrBeyondTree]), each with a one-line text naming the reason (404,
// not 400, because tlog-tiles clients read a missing tile as "not there");
// 405 for other methods; 503 with Retry-After before the first checkpoint
// or when the backend pushes back; 500 otherwise (the detail goes to
// logger, default slog.Default()).
//
// SPEC(tlog-tiles): the checkpoint is served with "Content-Type: text/plain;
// charset=utf-8" and headers that prevent caching beyond a few seconds;
// tiles and entry bundles with "Content-Type: application/octet-stream" and
// long-lived caching; entry bundles are compressed at the HTTP layer for
// clients that accept gzip.
//
// SPEC(design.md 10)
func Handler(src Source, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.Default()
	}
	return &handler{src: src, logger: logger}
}

type handler struct {
	src    Source
	logger *slog.Logger
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ctx := r.Context()
	p := strings.TrimPrefix(r.URL.Path, "/")
	if p == CheckpointPath {
		raw, err := h.src.Checkpoint(ctx)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		WriteCheckpoint(w, r, raw)
		return
	}
	res, err := ParsePath(p)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	size, err := h.src.Size(ctx)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !res.Within(size) {
		http.Error(w, ErrBeyondTree.Error()+": "+res.Path()+" is not implied by the tree of size "+strconv.FormatUint(size, 10), http.StatusNotFound)
		return
	}
	var data []byte
	if res.Entries {
		data, err = h.src.ReadEntryBundle(ctx, res.Index, res.Width)
	} else {
		data, err = h.src.ReadTile(ctx, res.Level, res.Index, res.Width)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	WriteTile(w, r, res, data)
}

func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, log.ErrNoCheckpoint), errors.Is(err, log.ErrPushback), errors.Is(err, log.ErrClosed):
		w.Header().Set("Retry-After", "1")
		http.Error(w, "unavailable: "+err.Error(), http.StatusServiceUnavailable)
	case errors.Is(err, log.ErrOutOfRange), errors.Is(err, ErrBeyondTree):
		http.Error(w, err.Error(), http.StatusNotFound)
	case r.Context().Err() != nil:
		// The client went away: nobody to answer.
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		w.Header().Set("Retry-After", "1")
		http.Error(w, "unavailable: "+err.Error(), http.StatusServiceUnavailable)
	default:
		h.logger.ErrorContext(r.Context(), "tlog-tiles: serving failed", "path", r.URL.Path, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
	}
}

// WriteCheckpoint answers with a checkpoint.
func WriteCheckpoint(w http.ResponseWriter, r *http.Request, raw []byte) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", CacheCheckpoint)
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(raw)
}

// WriteTile answers with the tile or entry bundle res, gzipping bundles
// for clients that accept it.
func WriteTile(w http.ResponseWriter, r *http.Request, res Resource, data []byte) {
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Cache-Control", CacheImmutable)
	if res.Entries {
		hd.Set("Vary", "Accept-Encoding")
		if AcceptsGzip(r) {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			_, _ = zw.Write(data)
			_ = zw.Close()
			data = buf.Bytes()
			hd.Set("Content-Encoding", "gzip")
		}
	}
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(data)
}

// AcceptsGzip reports whether the request's Accept-Encoding allows gzip.
func AcceptsGzip(r *http.Request) bool {
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
