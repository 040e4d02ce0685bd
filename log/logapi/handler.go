package logapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keytrans/kt/log"
)

// HandlerOption configures [NewHandler].
type HandlerOption func(*handler)

// WithLogger sets the logger for internal errors. The default is
// [slog.Default].
func WithLogger(l *slog.Logger) HandlerOption {
	return func(h *handler) { h.logger = l }
}

// WithMaxEntries sets the largest number of entries returned per request,
// between 1 and [MaxEntriesPerRequest] (the default).
func WithMaxEntries(n int) HandlerOption {
	return func(h *handler) { h.maxEntries = n }
}

// WithCheckpointMaxAge sets the Cache-Control max-age of the checkpoint, in
// whole seconds, at least 0 (then "no-cache"). The default is one second.
func WithCheckpointMaxAge(d time.Duration) HandlerOption {
	return func(h *handler) { h.checkpointMaxAge = d }
}

// WithRetryAfter sets the Retry-After of 503 responses, in whole seconds, at
// least one second (the default).
func WithRetryAfter(d time.Duration) HandlerOption {
	return func(h *handler) { h.retryAfter = d }
}

type handler struct {
	r                log.Reader
	logger           *slog.Logger
	maxEntries       int
	checkpointMaxAge time.Duration
	retryAfter       time.Duration
}

// NewHandler returns the HTTP handler of the read API (see the package
// documentation) over r. It serves the paths under /log/v1/ and answers 404
// to anything else; mount it at the root of the server.
//
// NewHandler panics on an invalid option: a misconfigured server must not
// start.
//
// SPEC(design.md 10)
func NewHandler(r log.Reader, opts ...HandlerOption) http.Handler {
	h := &handler{
		r:                r,
		logger:           slog.Default(),
		maxEntries:       MaxEntriesPerRequest,
		checkpointMaxAge: time.Second,
		retryAfter:       time.Second,
	}
	for _, o := range opts {
		o(h)
	}
	switch {
	case r == nil:
		panic("logapi: nil log.Reader")
	case h.logger == nil:
		panic("logapi: nil logger")
	case h.maxEntries < 1 || h.maxEntries > MaxEntriesPerRequest:
		panic(fmt.Sprintf("logapi: max entries %d not in [1, %d]", h.maxEntries, MaxEntriesPerRequest))
	case h.checkpointMaxAge < 0:
		panic("logapi: negative checkpoint max-age")
	case h.retryAfter < time.Second:
		panic("logapi: Retry-After below one second")
	}
	return h
}

const immutable = "public, max-age=31536000, immutable"

// SPEC(design.md 10)
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	var serve func(w http.ResponseWriter, r *http.Request) error
	switch r.URL.Path {
	case PathCheckpoint:
		serve = h.checkpoint
	case PathEntries:
		serve = h.entries
	case PathInclusion:
		serve = h.inclusion
	case PathConsistency:
		serve = h.consistency
	default:
		writeText(w, http.StatusNotFound, "", "not found")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeText(w, http.StatusMethodNotAllowed, errCodeBadRequest, "method "+r.Method+" not allowed; use GET or HEAD")
		return
	}
	if err := serve(w, r); err != nil {
		h.writeError(w, r, err)
	}
}

// SPEC(design.md 10)
func (h *handler) checkpoint(w http.ResponseWriter, r *http.Request) error {
	if _, err := parseQuery(r.URL.RawQuery); err != nil {
		return err
	}
	cp, err := h.r.Checkpoint(r.Context())
	if err != nil {
		return err
	}
	if len(cp) == 0 || len(cp) > MaxCheckpointSize {
		return fmt.Errorf("backend returned a checkpoint of %d bytes", len(cp))
	}
	cc := "no-cache"
	if s := int64(h.checkpointMaxAge / time.Second); s > 0 {
		cc = "public, max-age=" + strconv.FormatInt(s, 10)
	}
	writeBody(w, "text/plain; charset=utf-8", cc, cp)
	return nil
}

// SPEC(design.md 10)
func (h *handler) entries(w http.ResponseWriter, r *http.Request) error {
	v, err := parseQuery(r.URL.RawQuery, "start", "end")
	if err != nil {
		return err
	}
	start, end := v[0], v[1]
	if start >= end {
		return badRequest("empty or inverted range: start %d must be below end %d", start, end)
	}
	// The backend sees the whole range, so that it reports an end beyond
	// the checkpoint; it pages as it likes, and the page is cut here.
	entries, err := h.r.Entries(r.Context(), start, end)
	if err != nil {
		return err
	}
	if len(entries) == 0 || uint64(len(entries)) > end-start {
		return fmt.Errorf("backend returned %d entries for [%d, %d)", len(entries), start, end)
	}
	entries = entries[:min(len(entries), h.maxEntries)]
	body, err := AppendEntries(nil, entries)
	if err != nil {
		return fmt.Errorf("backend returned a bad entry in [%d, %d): %w", start, end, err)
	}
	writeBody(w, "application/octet-stream", immutable, body)
	return nil
}

// SPEC(design.md 10)
func (h *handler) inclusion(w http.ResponseWriter, r *http.Request) error {
	v, err := parseQuery(r.URL.RawQuery, "index", "size")
	if err != nil {
		return err
	}
	index, size := v[0], v[1]
	if index >= size {
		return badRequest("index %d must be below size %d", index, size)
	}
	p, err := h.r.InclusionProof(r.Context(), index, size)
	if err != nil {
		return err
	}
	want, err := InclusionProofSize(index, size)
	if err != nil {
		return err
	}
	return writeProof(w, p, want)
}

// SPEC(design.md 10)
func (h *handler) consistency(w http.ResponseWriter, r *http.Request) error {
	v, err := parseQuery(r.URL.RawQuery, "old", "new")
	if err != nil {
		return err
	}
	oldSize, newSize := v[0], v[1]
	if oldSize == 0 || oldSize > newSize {
		return badRequest("old size %d must be positive and at most new size %d", oldSize, newSize)
	}
	p, err := h.r.ConsistencyProof(r.Context(), oldSize, newSize)
	if err != nil {
		return err
	}
	want, err := ConsistencyProofSize(oldSize, newSize)
	if err != nil {
		return err
	}
	return writeProof(w, p, want)
}

// writeProof checks a proof from the backend before serving it: a backend
// bug must not turn into a proof that every client rejects, cached for a
// year.
func writeProof(w http.ResponseWriter, p [][]byte, want int) error {
	if len(p) != want {
		return fmt.Errorf("backend returned a proof of %d hashes, want %d", len(p), want)
	}
	body, err := appendHashes(make([]byte, 0, len(p)*HashSize), p)
	if err != nil {
		return fmt.Errorf("backend returned a bad proof: %w", err)
	}
	writeBody(w, "application/octet-stream", immutable, body)
	return nil
}

// writeError maps an error to its response: the one place where the log
// package's errors meet HTTP.
//
// SPEC(design.md 10)
func (h *handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var bad *badRequestError
	switch {
	case errors.As(err, &bad):
		writeText(w, http.StatusBadRequest, errCodeBadRequest, bad.msg)
	case errors.Is(err, log.ErrOutOfRange):
		writeText(w, http.StatusNotFound, errCodeOutOfRange, err.Error())
	case errors.Is(err, log.ErrNoCheckpoint):
		w.Header().Set("Retry-After", strconv.FormatInt(int64(h.retryAfter/time.Second), 10))
		writeText(w, http.StatusServiceUnavailable, errCodeNoCheckpoint, err.Error())
	case errors.Is(err, log.ErrPushback), errors.Is(err, log.ErrClosed):
		w.Header().Set("Retry-After", strconv.FormatInt(int64(h.retryAfter/time.Second), 10))
		writeText(w, http.StatusServiceUnavailable, errCodePushback, err.Error())
	default:
		level := slog.LevelError
		if r.Context().Err() != nil || errors.Is(err, context.Canceled) {
			// The client went away; nothing is wrong with the log.
			level = slog.LevelDebug
		}
		h.logger.Log(r.Context(), level, "log read API: internal error",
			"method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery, "err", err)
		writeText(w, http.StatusInternalServerError, errCodeInternal, "internal error")
	}
}

func writeBody(w http.ResponseWriter, contentType, cacheControl string, body []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", cacheControl)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body) // An error here means the client went away.
}

func writeText(w http.ResponseWriter, status int, code, msg string) {
	if code != "" {
		w.Header().Set(HeaderError, code)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}

// badRequestError is a request that is wrong whatever the state of the log.
type badRequestError struct{ msg string }

func (e *badRequestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &badRequestError{fmt.Sprintf(format, args...)}
}

// parseQuery parses a raw query that must hold exactly the named
// parameters, each once, each a canonical decimal uint64, in any order. It
// returns the values in the order of names.
//
// SPEC(design.md 10)
func parseQuery(raw string, names ...string) ([]uint64, error) {
	vals := make([]uint64, len(names))
	seen := make([]bool, len(names))
	if raw != "" {
		for part := range strings.SplitSeq(raw, "&") {
			key, val, ok := strings.Cut(part, "=")
			i := indexOf(names, key)
			switch {
			case !ok:
				return nil, badRequest("malformed query parameter %s: want name=value", quote(part))
			case i < 0:
				return nil, badRequest("unknown query parameter %s; want %s", quote(key), wantParams(names))
			case seen[i]:
				return nil, badRequest("duplicate query parameter %q", key)
			}
			v, err := parseDecimal(val)
			if err != nil {
				return nil, badRequest("query parameter %q: %s %v", key, quote(val), err)
			}
			vals[i], seen[i] = v, true
		}
	}
	for i, name := range names {
		if !seen[i] {
			return nil, badRequest("missing query parameter %q; want %s", name, wantParams(names))
		}
	}
	return vals, nil
}

func wantParams(names []string) string {
	if len(names) == 0 {
		return "no parameters"
	}
	return strings.Join(names, " and ")
}

func indexOf(names []string, key string) int {
	for i, n := range names {
		if n == key {
			return i
		}
	}
	return -1
}

// parseDecimal parses a canonical decimal uint64: digits only, no leading
// zero except for "0" itself.
//
// SPEC(design.md 10)
func parseDecimal(s string) (uint64, error) {
	if s == "" {
		return 0, errors.New("is empty; want a decimal number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("is not a decimal number (digits only, no sign)")
		}
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, errors.New("has a leading zero")
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, errors.New("does not fit in 64 bits")
	}
	return v, nil
}

// quote quotes untrusted input for an error message, truncated so that the
// response does not echo a long query back.
func quote(s string) string {
	const max = 32
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}
