package logapi_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/logapi"
)

func newServer(t testing.TB, h http.Handler) (*httptest.Server, *logapi.Client) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, logapi.NewClient(srv.URL+"/", srv.Client())
}

func TestClientAgainstHandler(t *testing.T) {
	ml, entries, v := memLog(t, 2500)
	_, c := newServer(t, logapi.NewHandler(ml))
	ctx := context.Background()

	t.Run("conformance", func(t *testing.T) {
		got := conformance.CheckReader(t, c, origin, v)
		if len(got) != len(entries) {
			t.Fatalf("%d entries, want %d", len(got), len(entries))
		}
	})
	t.Run("checkpoint", func(t *testing.T) {
		got, err := c.Checkpoint(ctx)
		want, _ := ml.Checkpoint(ctx)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("Checkpoint = %q, %v; want %q", got, err, want)
		}
	})
	t.Run("entries page", func(t *testing.T) {
		// The memory log pages at 100; the client never asks for more
		// than MaxEntriesPerRequest.
		got, err := c.Entries(ctx, 10, 2500)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != conformance.MaxPage {
			t.Fatalf("%d entries, want %d", len(got), conformance.MaxPage)
		}
		for i, e := range got {
			if !bytes.Equal(e, entries[10+i]) {
				t.Fatalf("entry %d differs", 10+i)
			}
		}
	})
	t.Run("HEAD has no body", func(t *testing.T) {
		srv := httptest.NewServer(logapi.NewHandler(ml))
		defer srv.Close()
		resp, err := srv.Client().Head(srv.URL + "/log/v1/proof/inclusion?index=3&size=2000")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || len(b) != 0 || resp.ContentLength != 11*32 {
			t.Errorf("HEAD: status %d, %d-byte body, Content-Length %d", resp.StatusCode, len(b), resp.ContentLength)
		}
	})
}

func TestClientErrors(t *testing.T) {
	ml, _, _ := memLog(t, 10)
	_, c := newServer(t, logapi.NewHandler(ml))
	ctx := context.Background()

	t.Run("out of range", func(t *testing.T) {
		for name, f := range map[string]func() error{
			"entries":     func() error { _, err := c.Entries(ctx, 5, 11); return err },
			"inclusion":   func() error { _, err := c.InclusionProof(ctx, 0, 11); return err },
			"consistency": func() error { _, err := c.ConsistencyProof(ctx, 3, 11); return err },
		} {
			err := f()
			if !errors.Is(err, log.ErrOutOfRange) {
				t.Errorf("%s: %v, want log.ErrOutOfRange", name, err)
			}
			var he *logapi.HTTPError
			if !errors.As(err, &he) || he.Status != http.StatusNotFound || !strings.Contains(he.Message, "beyond") {
				t.Errorf("%s: %#v, want a 404 with the server's message", name, he)
			}
		}
	})

	t.Run("nothing published", func(t *testing.T) {
		s, _ := newKey(t)
		_, c := newServer(t, logapi.NewHandler(conformance.NewMemoryLog(origin, s)))
		if _, err := c.Checkpoint(ctx); !errors.Is(err, log.ErrNoCheckpoint) {
			t.Errorf("%v, want log.ErrNoCheckpoint", err)
		}
		if _, err := c.InclusionProof(ctx, 0, 1); !errors.Is(err, log.ErrNoCheckpoint) {
			t.Errorf("%v, want log.ErrNoCheckpoint", err)
		}
	})

	t.Run("checked locally", func(t *testing.T) {
		s := &stub{}
		_, c := newServer(t, logapi.NewHandler(s))
		for name, f := range map[string]func() error{
			"empty range":       func() error { _, err := c.Entries(ctx, 5, 5); return err },
			"inverted range":    func() error { _, err := c.Entries(ctx, 6, 5); return err },
			"index = size":      func() error { _, err := c.InclusionProof(ctx, 5, 5); return err },
			"index > size":      func() error { _, err := c.InclusionProof(ctx, 6, 5); return err },
			"old = 0":           func() error { _, err := c.ConsistencyProof(ctx, 0, 5); return err },
			"old > new":         func() error { _, err := c.ConsistencyProof(ctx, 6, 5); return err },
			"max index, size 0": func() error { _, err := c.InclusionProof(ctx, 1<<64-1, 0); return err },
		} {
			if err := f(); !errors.Is(err, log.ErrOutOfRange) {
				t.Errorf("%s: %v, want log.ErrOutOfRange", name, err)
			}
		}
		if s.count() != 0 {
			t.Errorf("%d requests reached the server", s.count())
		}
	})

	for _, sentinel := range []error{log.ErrNoCheckpoint, log.ErrPushback} {
		t.Run(sentinel.Error(), func(t *testing.T) {
			fail := func() ([][]byte, error) { return nil, fmt.Errorf("the backend says: %w", sentinel) }
			s := &stub{
				checkpoint:  func() ([]byte, error) { _, err := fail(); return nil, err },
				entries:     func(uint64, uint64) ([][]byte, error) { return fail() },
				inclusion:   func(uint64, uint64) ([][]byte, error) { return fail() },
				consistency: func(uint64, uint64) ([][]byte, error) { return fail() },
			}
			_, c := newServer(t, logapi.NewHandler(s, logapi.WithRetryAfter(7*time.Second)))
			for name, f := range map[string]func() error{
				"checkpoint":  func() error { _, err := c.Checkpoint(ctx); return err },
				"entries":     func() error { _, err := c.Entries(ctx, 0, 1); return err },
				"inclusion":   func() error { _, err := c.InclusionProof(ctx, 0, 1); return err },
				"consistency": func() error { _, err := c.ConsistencyProof(ctx, 1, 1); return err },
			} {
				err := f()
				if !errors.Is(err, sentinel) {
					t.Errorf("%s: %v, want %v", name, err, sentinel)
				}
				var he *logapi.HTTPError
				if !errors.As(err, &he) || he.RetryAfter != 7*time.Second || !strings.Contains(he.Message, "the backend says") {
					t.Errorf("%s: %#v", name, he)
				}
			}
		})
	}

	t.Run("internal error", func(t *testing.T) {
		s := &stub{checkpoint: func() ([]byte, error) { return nil, errors.New("secret") }}
		_, c := newServer(t, logapi.NewHandler(s, logapi.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))))
		_, err := c.Checkpoint(ctx)
		for _, sentinel := range []error{log.ErrOutOfRange, log.ErrNoCheckpoint, log.ErrPushback} {
			if errors.Is(err, sentinel) {
				t.Errorf("500 became %v", sentinel)
			}
		}
		var he *logapi.HTTPError
		if !errors.As(err, &he) || he.Status != 500 || strings.Contains(err.Error(), "secret") {
			t.Errorf("%v", err)
		}
	})

	t.Run("context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := c.Checkpoint(cctx); !errors.Is(err, context.Canceled) {
			t.Errorf("%v, want context.Canceled", err)
		}
	})

	t.Run("bad base URL", func(t *testing.T) {
		c := logapi.NewClient("://nope", nil)
		if _, err := c.Checkpoint(ctx); err == nil {
			t.Error("no error")
		}
	})
}

// rawServer serves one canned response to every request.
func rawServer(t *testing.T, status int, header map[string]string, body []byte) *logapi.Client {
	t.Helper()
	_, c := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		w.Write(body)
	}))
	return c
}

func frame(entries ...[]byte) []byte {
	var b []byte
	for _, e := range entries {
		b = binary.BigEndian.AppendUint16(b, uint16(len(e)))
		b = append(b, e...)
	}
	return b
}

func TestClientRejectsMalformedResponses(t *testing.T) {
	ctx := context.Background()
	octet := map[string]string{"Content-Type": "application/octet-stream"}
	text := map[string]string{"Content-Type": "text/plain; charset=utf-8"}
	hashes := func(n int) []byte { return bytes.Repeat([]byte{7}, 32*n) }
	// Inclusion of 5 in 16 and consistency from 3 to 8: 4 hashes each.
	incl := func(c *logapi.Client) error { _, err := c.InclusionProof(ctx, 5, 16); return err }
	cons := func(c *logapi.Client) error { _, err := c.ConsistencyProof(ctx, 3, 8); return err }
	ents := func(c *logapi.Client) error { _, err := c.Entries(ctx, 10, 13); return err }
	cp := func(c *logapi.Client) error { _, err := c.Checkpoint(ctx); return err }

	tests := []struct {
		name   string
		header map[string]string
		body   []byte
		call   func(*logapi.Client) error
	}{
		{"inclusion: one hash short", octet, hashes(3), incl},
		{"inclusion: one hash extra", octet, hashes(5), incl},
		{"inclusion: a byte short", octet, hashes(4)[1:], incl},
		{"inclusion: a byte extra", octet, append(hashes(4), 0), incl},
		{"inclusion: empty", octet, nil, incl},
		{"inclusion: huge", octet, hashes(1000), incl},
		{"inclusion: wrong content type", text, hashes(4), incl},
		{"inclusion: no content type", map[string]string{"Content-Type": ""}, hashes(4), incl},
		{"consistency: one hash short", octet, hashes(3), cons},
		{"consistency: one hash extra", octet, hashes(5), cons},
		{"consistency: 33-byte hash", octet, hashes(4)[:33], cons},
		{"entries: none", octet, nil, ents},
		{"entries: more than asked", octet, frame([]byte{1}, []byte{2}, []byte{3}, []byte{4}), ents},
		{"entries: truncated entry", octet, frame([]byte("hello"))[:5], ents},
		{"entries: truncated length", octet, append(frame([]byte("hello")), 0), ents},
		{"entries: empty entry", octet, frame([]byte("a"), []byte{}), ents},
		{"entries: over the body limit", octet, bytes.Repeat(frame(make([]byte, log.MaxEntrySize)), 4), ents},
		{"entries: wrong content type", text, frame([]byte("a")), ents},
		{"checkpoint: empty", text, nil, cp},
		{"checkpoint: oversized", text, make([]byte, logapi.MaxCheckpointSize+1), cp},
		{"checkpoint: binary content type", octet, []byte("example.com/x\n1\n"), cp},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(rawServer(t, http.StatusOK, tc.header, tc.body))
			if !errors.Is(err, logapi.ErrMalformed) {
				t.Errorf("%v, want logapi.ErrMalformed", err)
			}
		})
	}

	t.Run("oversized body without Content-Length", func(t *testing.T) {
		_, c := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.WriteHeader(http.StatusOK)
			for range 100 { // chunked: the client must stop reading itself
				w.Write(hashes(100))
				w.(http.Flusher).Flush()
			}
		}))
		if err := incl(c); !errors.Is(err, logapi.ErrMalformed) || !strings.Contains(err.Error(), "limit") {
			t.Errorf("%v, want logapi.ErrMalformed over the limit", err)
		}
	})
}

func TestClientErrorResponses(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		status   int
		header   map[string]string
		body     string
		sentinel error // nil: none of the log's
	}{
		{"404 from a proxy", 404, nil, "page not found", nil},
		{"404 out-of-range", 404, map[string]string{logapi.HeaderError: "out-of-range"}, "beyond", log.ErrOutOfRange},
		{"400 with out-of-range code", 400, map[string]string{logapi.HeaderError: "out-of-range"}, "x", nil},
		{"503 with out-of-range code", 503, map[string]string{logapi.HeaderError: "out-of-range"}, "x", nil},
		{"503 from a proxy", 503, nil, "overloaded", log.ErrPushback},
		{"429 from a proxy", 429, map[string]string{"Retry-After": "3"}, "slow down", log.ErrPushback},
		{"503 no-checkpoint", 503, map[string]string{logapi.HeaderError: "no-checkpoint"}, "nothing yet", log.ErrNoCheckpoint},
		{"404 no-checkpoint", 404, map[string]string{logapi.HeaderError: "no-checkpoint"}, "x", nil},
		{"500", 500, map[string]string{logapi.HeaderError: "internal"}, "internal error", nil},
		{"400", 400, map[string]string{logapi.HeaderError: "bad-request"}, "missing", nil},
		{"204", 204, nil, "", nil},
		{"unknown code", 418, map[string]string{logapi.HeaderError: "teapot"}, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := rawServer(t, tc.status, tc.header, []byte(tc.body))
			_, err := c.InclusionProof(ctx, 0, 2)
			var he *logapi.HTTPError
			if !errors.As(err, &he) {
				t.Fatalf("%v, want an *HTTPError", err)
			}
			if he.Status != tc.status || he.Message != tc.body {
				t.Errorf("status %d message %q, want %d %q", he.Status, he.Message, tc.status, tc.body)
			}
			for _, s := range []error{log.ErrOutOfRange, log.ErrNoCheckpoint, log.ErrPushback} {
				if got, want := errors.Is(err, s), s == tc.sentinel; got != want {
					t.Errorf("errors.Is(%v, %v) = %v", err, s, got)
				}
			}
		})
	}
	t.Run("hostile message", func(t *testing.T) {
		body := "line1\nline2\x1b[31m\x00" + strings.Repeat("z", 5000)
		c := rawServer(t, 500, nil, []byte(body))
		_, err := c.Checkpoint(ctx)
		var he *logapi.HTTPError
		if !errors.As(err, &he) {
			t.Fatal(err)
		}
		if strings.ContainsAny(he.Message, "\n\x1b\x00") || len(he.Message) > 210 {
			t.Errorf("message not sanitized: %q", he.Message)
		}
	})
}
