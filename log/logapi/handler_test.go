package logapi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/logapi"
)

const origin = "example.com/logapi-test"

func newKey(t testing.TB) (note.Signer, note.Verifier) {
	t.Helper()
	_, _, s, v := testkit.NoteKey(t, origin)
	return s, v
}

// memLog returns the in-memory reference log with n entries.
func memLog(t testing.TB, n int) (*conformance.MemoryLog, [][]byte, note.Verifier) {
	t.Helper()
	s, v := newKey(t)
	ml := conformance.NewMemoryLog(origin, s)
	var entries [][]byte
	for i := range n {
		entries = append(entries, fmt.Appendf(nil, "entry %d %s", i, strings.Repeat("x", i%40)))
	}
	if n > 0 {
		if _, err := ml.Append(context.Background(), entries); err != nil {
			t.Fatal(err)
		}
	}
	return ml, entries, v
}

// stub is a log.Reader whose methods are given by the test; it counts
// calls, so tests can check that bad requests never reach the backend.
type stub struct {
	mu          sync.Mutex
	calls       int
	lastEnd     uint64
	checkpoint  func() ([]byte, error)
	entries     func(start, end uint64) ([][]byte, error)
	inclusion   func(index, size uint64) ([][]byte, error)
	consistency func(oldSize, newSize uint64) ([][]byte, error)
}

func (s *stub) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *stub) called() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
}

var errNotStubbed = errors.New("not stubbed")

func (s *stub) Checkpoint(ctx context.Context) ([]byte, error) {
	s.called()
	if s.checkpoint == nil {
		return nil, errNotStubbed
	}
	return s.checkpoint()
}

func (s *stub) Entries(ctx context.Context, start, end uint64) ([][]byte, error) {
	s.called()
	s.mu.Lock()
	s.lastEnd = end
	s.mu.Unlock()
	if s.entries == nil {
		return nil, errNotStubbed
	}
	return s.entries(start, end)
}

func (s *stub) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	s.called()
	if s.inclusion == nil {
		return nil, errNotStubbed
	}
	return s.inclusion(index, size)
}

func (s *stub) ConsistencyProof(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
	s.called()
	if s.consistency == nil {
		return nil, errNotStubbed
	}
	return s.consistency(oldSize, newSize)
}

// serve runs one request through h.
func serve(h http.Handler, method, target string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, target, nil))
	return w
}

func concat(hashes [][]byte) []byte { return bytes.Join(hashes, nil) }

func TestEndpoints(t *testing.T) {
	ml, entries, _ := memLog(t, 50)
	h := logapi.NewHandler(ml, logapi.WithCheckpointMaxAge(0))
	ctx := context.Background()
	cp, _ := ml.Checkpoint(ctx)
	incl, _ := ml.InclusionProof(ctx, 7, 40)
	cons, _ := ml.ConsistencyProof(ctx, 13, 50)
	framed, err := logapi.AppendEntries(nil, entries[3:10])
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		target      string
		contentType string
		cache       string
		body        []byte
	}{
		{"/log/v1/checkpoint", "text/plain; charset=utf-8", "no-cache", cp},
		{"/log/v1/entries?start=3&end=10", "application/octet-stream", "public, max-age=31536000, immutable", framed},
		{"/log/v1/entries?end=10&start=3", "application/octet-stream", "public, max-age=31536000, immutable", framed},
		{"/log/v1/proof/inclusion?index=7&size=40", "application/octet-stream", "public, max-age=31536000, immutable", concat(incl)},
		{"/log/v1/proof/consistency?old=13&new=50", "application/octet-stream", "public, max-age=31536000, immutable", concat(cons)},
		{"/log/v1/proof/consistency?old=50&new=50", "application/octet-stream", "public, max-age=31536000, immutable", []byte{}},
		{"/log/v1/proof/inclusion?index=0&size=1", "application/octet-stream", "public, max-age=31536000, immutable", []byte{}},
	}
	for _, tc := range tests {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			t.Run(method+" "+tc.target, func(t *testing.T) {
				w := serve(h, method, tc.target)
				if w.Code != http.StatusOK {
					t.Fatalf("status %d, body %q", w.Code, w.Body)
				}
				for k, want := range map[string]string{
					"Content-Type":           tc.contentType,
					"Cache-Control":          tc.cache,
					"Content-Length":         fmt.Sprint(len(tc.body)),
					"X-Content-Type-Options": "nosniff",
				} {
					if got := w.Header().Get(k); got != want {
						t.Errorf("%s: %q, want %q", k, got, want)
					}
				}
				// httptest.ResponseRecorder keeps a HEAD body; a real
				// server drops it (see TestClientAgainstHandler).
				if !bytes.Equal(w.Body.Bytes(), tc.body) {
					t.Errorf("body %x, want %x", w.Body.Bytes(), tc.body)
				}
			})
		}
	}
	t.Run("checkpoint max-age", func(t *testing.T) {
		w := serve(logapi.NewHandler(ml), http.MethodGet, "/log/v1/checkpoint")
		if got := w.Header().Get("Cache-Control"); got != "public, max-age=1" {
			t.Errorf("Cache-Control %q", got)
		}
	})
}

func TestBadRequests(t *testing.T) {
	const maxUint64 = "18446744073709551615"
	tests := []struct {
		target string
		want   string // substring of the message
	}{
		{"/log/v1/entries", `missing query parameter "start"`},
		{"/log/v1/entries?", `missing query parameter "start"`},
		{"/log/v1/entries?start=1", `missing query parameter "end"`},
		{"/log/v1/entries?end=1", `missing query parameter "start"`},
		{"/log/v1/entries?start=1&end=2&start=1", `duplicate query parameter "start"`},
		{"/log/v1/entries?start=1&end=2&end=3", `duplicate query parameter "end"`},
		{"/log/v1/entries?start=1&end=2&limit=3", `unknown query parameter "limit"`},
		{"/log/v1/entries?start=1&end=2&", `malformed query parameter`},
		{"/log/v1/entries?start=1&&end=2", `malformed query parameter`},
		{"/log/v1/entries?start&end=2", `malformed query parameter "start"`},
		{"/log/v1/entries?start=&end=2", `is empty`},
		{"/log/v1/entries?start=-1&end=2", `not a decimal number`},
		{"/log/v1/entries?start=%2B1&end=2", `not a decimal number`},
		{"/log/v1/entries?start=+1&end=2", `not a decimal number`},
		{"/log/v1/entries?start=%201&end=2", `not a decimal number`},
		{"/log/v1/entries?start=1%20&end=2", `not a decimal number`},
		{"/log/v1/entries?start=%31&end=2", `not a decimal number`},
		{"/log/v1/entries?start=0x1&end=2", `not a decimal number`},
		{"/log/v1/entries?start=1e3&end=2000", `not a decimal number`},
		{"/log/v1/entries?start=1.0&end=2", `not a decimal number`},
		{"/log/v1/entries?start=abc&end=2", `not a decimal number`},
		{"/log/v1/entries?start=01&end=2", `leading zero`},
		{"/log/v1/entries?start=00&end=2", `leading zero`},
		{"/log/v1/entries?start=1&end=18446744073709551616", `does not fit in 64 bits`},
		{"/log/v1/entries?start=1&end=99999999999999999999999", `does not fit in 64 bits`},
		{"/log/v1/entries?START=1&end=2", `unknown query parameter "START"`},
		{"/log/v1/entries?start=5&end=3", `start 5 must be below end 3`},
		{"/log/v1/entries?start=3&end=3", `start 3 must be below end 3`},
		{"/log/v1/entries?start=" + maxUint64 + "&end=" + maxUint64, `must be below end`},
		{"/log/v1/proof/inclusion?index=3", `missing query parameter "size"`},
		{"/log/v1/proof/inclusion?index=3&size=3", `index 3 must be below size 3`},
		{"/log/v1/proof/inclusion?index=4&size=3", `index 4 must be below size 3`},
		{"/log/v1/proof/inclusion?index=-1&size=3", `not a decimal number`},
		{"/log/v1/proof/inclusion?index=0&size=0", `index 0 must be below size 0`},
		{"/log/v1/proof/inclusion?leaf=0&size=3", `unknown query parameter "leaf"`},
		{"/log/v1/proof/consistency?old=0&new=3", `old size 0 must be positive`},
		{"/log/v1/proof/consistency?old=4&new=3", `at most new size 3`},
		{"/log/v1/proof/consistency?old=1", `missing query parameter "new"`},
		{"/log/v1/proof/consistency?old=1&new=2;x=1", `not a decimal number`},
		{"/log/v1/checkpoint?x=1", `unknown query parameter "x"; want no parameters`},
		{"/log/v1/checkpoint?0", `malformed query parameter`},
	}
	for _, tc := range tests {
		t.Run(tc.target, func(t *testing.T) {
			s := &stub{}
			w := serve(logapi.NewHandler(s), http.MethodGet, tc.target)
			if w.Code != http.StatusBadRequest {
				t.Errorf("status %d, want 400", w.Code)
			}
			if got := w.Header().Get(logapi.HeaderError); got != "bad-request" {
				t.Errorf("%s: %q", logapi.HeaderError, got)
			}
			if got := w.Header().Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control: %q", got)
			}
			if !strings.Contains(w.Body.String(), tc.want) {
				t.Errorf("body %q does not mention %q", w.Body, tc.want)
			}
			if s.count() != 0 {
				t.Errorf("the backend was called %d times", s.count())
			}
		})
	}
	t.Run("long junk is not echoed", func(t *testing.T) {
		junk := strings.Repeat("A", 10000)
		w := serve(logapi.NewHandler(&stub{}), http.MethodGet, "/log/v1/entries?start="+junk+"&end=2")
		if w.Code != http.StatusBadRequest || w.Body.Len() > 200 {
			t.Errorf("status %d, %d-byte body", w.Code, w.Body.Len())
		}
	})
}

func TestMethodsAndPaths(t *testing.T) {
	ml, _, _ := memLog(t, 3)
	h := logapi.NewHandler(ml)
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions, "BREW"} {
		for _, path := range []string{"/log/v1/checkpoint", "/log/v1/entries?start=0&end=1", "/log/v1/proof/inclusion?index=0&size=1", "/log/v1/proof/consistency?old=1&new=1"} {
			t.Run(method+" "+path, func(t *testing.T) {
				w := serve(h, method, path)
				if w.Code != http.StatusMethodNotAllowed {
					t.Errorf("status %d, want 405", w.Code)
				}
				if got := w.Header().Get("Allow"); got != "GET, HEAD" {
					t.Errorf("Allow: %q", got)
				}
			})
		}
	}
	for _, path := range []string{"/", "/log/v1", "/log/v1/", "/log/v1/checkpoint/", "/log/v1//checkpoint", "/log/v1/proof", "/checkpoint", "/log/v2/checkpoint", "/LOG/v1/checkpoint"} {
		t.Run("GET "+path, func(t *testing.T) {
			w := serve(h, http.MethodGet, path)
			if w.Code != http.StatusNotFound {
				t.Errorf("status %d, want 404", w.Code)
			}
			if got := w.Header().Get(logapi.HeaderError); got != "" {
				t.Errorf("%s: %q on an unknown path", logapi.HeaderError, got)
			}
		})
	}
}

func TestEntriesPaging(t *testing.T) {
	// A backend of 5000 one-byte entries that returns everything it is
	// asked for.
	const size = 5000
	s := &stub{entries: func(start, end uint64) ([][]byte, error) {
		if end > size {
			return nil, log.ErrOutOfRange
		}
		var out [][]byte
		for i := start; i < end; i++ {
			out = append(out, []byte{byte(i)})
		}
		return out, nil
	}}
	tests := []struct {
		opts       []logapi.HandlerOption
		start, end uint64
		want       int
	}{
		{nil, 0, size, logapi.MaxEntriesPerRequest},
		{nil, 100, 200, 100},
		{nil, 4999, 5000, 1},
		{[]logapi.HandlerOption{logapi.WithMaxEntries(10)}, 0, size, 10},
		{[]logapi.HandlerOption{logapi.WithMaxEntries(10)}, 3, 8, 5},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d-%d/%d", tc.start, tc.end, tc.want), func(t *testing.T) {
			w := serve(logapi.NewHandler(s, tc.opts...), http.MethodGet, fmt.Sprintf("/log/v1/entries?start=%d&end=%d", tc.start, tc.end))
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			es, err := logapi.ParseEntries(w.Body.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if len(es) != tc.want {
				t.Fatalf("%d entries, want %d", len(es), tc.want)
			}
			for i, e := range es {
				if e[0] != byte(tc.start+uint64(i)) {
					t.Fatalf("entry %d is %x", i, e)
				}
			}
			if s.lastEnd != tc.end {
				t.Errorf("the backend was asked for end %d, want the request's %d", s.lastEnd, tc.end)
			}
		})
	}
	t.Run("end beyond the checkpoint", func(t *testing.T) {
		w := serve(logapi.NewHandler(s), http.MethodGet, "/log/v1/entries?start=0&end=5001")
		if w.Code != http.StatusNotFound {
			t.Errorf("status %d, want 404", w.Code)
		}
	})
}

func TestErrorMapping(t *testing.T) {
	secret := errors.New("secret detail: disk /dev/sdb1 on fire")
	tests := []struct {
		name       string
		err        error
		status     int
		code       string
		retryAfter string
	}{
		{"out of range", log.Errorf(log.ErrOutOfRange, "size 10 beyond 5"), http.StatusNotFound, "out-of-range", ""},
		{"no checkpoint", log.ErrNoCheckpoint, http.StatusServiceUnavailable, "no-checkpoint", "1"},
		{"pushback", fmt.Errorf("reading tiles: %w", log.ErrPushback), http.StatusServiceUnavailable, "pushback", "1"},
		{"closed", log.ErrClosed, http.StatusServiceUnavailable, "pushback", "1"},
		{"invalid entry", log.ErrInvalidEntry, http.StatusInternalServerError, "internal", ""},
		{"other", secret, http.StatusInternalServerError, "internal", ""},
		{"canceled", context.Canceled, http.StatusInternalServerError, "internal", ""},
	}
	for _, tc := range tests {
		s := &stub{
			checkpoint:  func() ([]byte, error) { return nil, tc.err },
			entries:     func(uint64, uint64) ([][]byte, error) { return nil, tc.err },
			inclusion:   func(uint64, uint64) ([][]byte, error) { return nil, tc.err },
			consistency: func(uint64, uint64) ([][]byte, error) { return nil, tc.err },
		}
		for _, target := range []string{"/log/v1/checkpoint", "/log/v1/entries?start=0&end=1", "/log/v1/proof/inclusion?index=0&size=1", "/log/v1/proof/consistency?old=1&new=2"} {
			t.Run(tc.name+" "+target, func(t *testing.T) {
				var logs testkit.SyncBuffer
				h := logapi.NewHandler(s, logapi.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
				w := serve(h, http.MethodGet, target)
				if w.Code != tc.status {
					t.Errorf("status %d, want %d", w.Code, tc.status)
				}
				if got := w.Header().Get(logapi.HeaderError); got != tc.code {
					t.Errorf("%s: %q, want %q", logapi.HeaderError, got, tc.code)
				}
				if got := w.Header().Get("Retry-After"); got != tc.retryAfter {
					t.Errorf("Retry-After: %q, want %q", got, tc.retryAfter)
				}
				if got := w.Header().Get("Cache-Control"); got != "no-store" {
					t.Errorf("Cache-Control: %q", got)
				}
				if tc.status == http.StatusInternalServerError {
					if w.Body.String() != "internal error\n" {
						t.Errorf("500 body %q, want the generic message", w.Body)
					}
					if !strings.Contains(logs.String(), tc.err.Error()) {
						t.Errorf("the detail was not logged: %q", logs.String())
					}
				} else if !strings.Contains(w.Body.String(), tc.err.Error()) {
					t.Errorf("body %q does not carry the error %q", w.Body, tc.err)
				}
			})
		}
	}
}

// TestBackendMisbehaving checks that the handler does not pass a broken
// backend's output on, to be cached for a year.
func TestBackendMisbehaving(t *testing.T) {
	hash := bytes.Repeat([]byte{1}, 32)
	tests := []struct {
		name   string
		s      *stub
		target string
	}{
		{"empty checkpoint", &stub{checkpoint: func() ([]byte, error) { return nil, nil }}, "/log/v1/checkpoint"},
		{"huge checkpoint", &stub{checkpoint: func() ([]byte, error) { return make([]byte, logapi.MaxCheckpointSize+1), nil }}, "/log/v1/checkpoint"},
		{"no entries", &stub{entries: func(uint64, uint64) ([][]byte, error) { return nil, nil }}, "/log/v1/entries?start=0&end=2"},
		{"too many entries", &stub{entries: func(uint64, uint64) ([][]byte, error) { return [][]byte{{1}, {2}, {3}}, nil }}, "/log/v1/entries?start=0&end=2"},
		{"empty entry", &stub{entries: func(uint64, uint64) ([][]byte, error) { return [][]byte{{}}, nil }}, "/log/v1/entries?start=0&end=2"},
		{"oversized entry", &stub{entries: func(uint64, uint64) ([][]byte, error) { return [][]byte{make([]byte, 1<<16)}, nil }}, "/log/v1/entries?start=0&end=2"},
		{"short inclusion proof", &stub{inclusion: func(uint64, uint64) ([][]byte, error) { return [][]byte{hash}, nil }}, "/log/v1/proof/inclusion?index=0&size=4"},
		{"long inclusion proof", &stub{inclusion: func(uint64, uint64) ([][]byte, error) { return [][]byte{hash}, nil }}, "/log/v1/proof/inclusion?index=0&size=1"},
		{"31-byte hash", &stub{inclusion: func(uint64, uint64) ([][]byte, error) { return [][]byte{hash, hash[:31]}, nil }}, "/log/v1/proof/inclusion?index=0&size=4"},
		{"short consistency proof", &stub{consistency: func(uint64, uint64) ([][]byte, error) { return nil, nil }}, "/log/v1/proof/consistency?old=3&new=4"},
		{"non-empty proof for equal sizes", &stub{consistency: func(uint64, uint64) ([][]byte, error) { return [][]byte{hash}, nil }}, "/log/v1/proof/consistency?old=4&new=4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := logapi.NewHandler(tc.s, logapi.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
			w := serve(h, http.MethodGet, tc.target)
			if w.Code != http.StatusInternalServerError {
				t.Errorf("status %d, want 500", w.Code)
			}
		})
	}
}

func TestNewHandlerRejectsBadOptions(t *testing.T) {
	for name, opt := range map[string]logapi.HandlerOption{
		"max entries 0":       logapi.WithMaxEntries(0),
		"max entries 1025":    logapi.WithMaxEntries(logapi.MaxEntriesPerRequest + 1),
		"negative max-age":    logapi.WithCheckpointMaxAge(-1),
		"retry after 0":       logapi.WithRetryAfter(0),
		"nil logger":          logapi.WithLogger(nil),
		"retry after 999ms":   logapi.WithRetryAfter(999_000_000),
		"max entries -1":      logapi.WithMaxEntries(-1),
		"max entries minimum": nil,
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if r := recover(); (r == nil) != (opt == nil) {
					t.Errorf("panic %v", r)
				}
			}()
			if opt == nil {
				logapi.NewHandler(&stub{}, logapi.WithMaxEntries(1))
				return
			}
			logapi.NewHandler(&stub{}, opt)
		})
	}
}
