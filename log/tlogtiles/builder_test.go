package tlogtiles_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api/layout"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keytrans/kt/internal/testing/tilestest"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/tlogtiles"
)

// memLog is a log of entries in memory, served through a Builder.
type memLog struct {
	entries [][]byte
	reads   atomic.Int64 // entries read through the EntriesFunc
	fail    error        // when set, every read fails with it
	b       *tlogtiles.Builder
}

func newMemLog(t testing.TB, n, cacheTiles int) *memLog {
	t.Helper()
	m := &memLog{}
	for i := range n {
		m.entries = append(m.entries, fmt.Appendf(nil, "entry %d", i))
	}
	b, err := tlogtiles.NewBuilder(m.read, cacheTiles)
	if err != nil {
		t.Fatal(err)
	}
	m.b = b
	return m
}

// read returns at most 100 entries per call, as a paging backend would.
func (m *memLog) read(_ context.Context, start, end uint64) ([][]byte, error) {
	if m.fail != nil {
		return nil, m.fail
	}
	if start >= end || end > uint64(len(m.entries)) {
		return nil, log.Errorf(log.ErrOutOfRange, "entries [%d, %d) of %d", start, end, len(m.entries))
	}
	end = min(end, start+100)
	m.reads.Add(int64(end - start))
	return m.entries[start:end], nil
}

func (m *memLog) Checkpoint(context.Context) ([]byte, error) { return []byte("checkpoint\n"), nil }
func (m *memLog) Size(context.Context) (uint64, error)       { return uint64(len(m.entries)), nil }
func (m *memLog) ReadTile(ctx context.Context, l, i uint64, w uint8) ([]byte, error) {
	return m.b.ReadTile(ctx, l, i, w)
}
func (m *memLog) ReadEntryBundle(ctx context.Context, i uint64, w uint8) ([]byte, error) {
	return m.b.ReadEntryBundle(ctx, i, w)
}

// xmodHashes computes the stored hashes of the entries with x/mod's tlog,
// independently of the Builder.
func xmodHashes(t testing.TB, entries [][]byte) tlog.HashReaderFunc {
	t.Helper()
	var hashes []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = hashes[x]
		}
		return out, nil
	})
	for i, e := range entries {
		hs, err := tlog.StoredHashes(int64(i), e, r)
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, hs...)
	}
	return r
}

// TestBuilderMatchesXMod: every tile of a tree with a full level-1 tile and
// a partial level-2 tile equals x/mod's tlog.ReadTileData of the same tree,
// for the tree's own size and for smaller ones (partial tiles of every
// width), with a cache of 3 tiles (evicting all the time) and the default.
func TestBuilderMatchesXMod(t *testing.T) {
	const n = 65_536 + 3*256 + 7
	for _, cache := range []int{3, 0} {
		t.Run(fmt.Sprint("cache ", cache), func(t *testing.T) {
			m := newMemLog(t, n, cache)
			hr := xmodHashes(t, m.entries)
			ctx := context.Background()
			for _, size := range []int64{1, 255, 256, 257, 511, 65_535, 65_536, n} {
				for _, tile := range tlog.NewTiles(8, 0, size) {
					want, err := tlog.ReadTileData(tile, hr)
					if err != nil {
						t.Fatal(err)
					}
					w := uint8(0)
					if tile.W < 256 {
						w = uint8(tile.W)
					}
					got, err := m.b.ReadTile(ctx, uint64(tile.L), uint64(tile.N), w)
					if err != nil {
						t.Fatalf("tile %+v: %v", tile, err)
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("tile %+v of size %d differs from x/mod's", tile, size)
					}
				}
			}
		})
	}
}

// TestBuilderCachesFullTiles: once the tiles of a tree are built, serving
// them again reads no entry (hash tiles), and bundles always read theirs.
func TestBuilderCachesFullTiles(t *testing.T) {
	m := newMemLog(t, 3*256+5, 0)
	ctx := context.Background()
	read := func() {
		for _, tile := range tlog.NewTiles(8, 0, int64(len(m.entries))) {
			w := uint8(0)
			if tile.W < 256 {
				w = uint8(tile.W)
			}
			if _, err := m.b.ReadTile(ctx, uint64(tile.L), uint64(tile.N), w); err != nil {
				t.Fatal(err)
			}
		}
	}
	read()
	first := m.reads.Load()
	if first != int64(len(m.entries)) {
		t.Fatalf("first pass read %d entries, want each of the %d once", first, len(m.entries))
	}
	read()
	// Only the partial level-0 tile at the right edge is read again.
	if again := m.reads.Load() - first; again != 5 {
		t.Fatalf("second pass read %d entries, want 5 (the partial tile's)", again)
	}
	// A returned tile can be modified without touching the cache.
	t1, _ := m.b.ReadTile(ctx, 0, 0, 0)
	t1[0] ^= 1
	t2, _ := m.b.ReadTile(ctx, 0, 0, 0)
	if !bytes.Equal(t2[:32], rfc6962.DefaultHasher.HashLeaf(m.entries[0])) {
		t.Fatal("modifying a returned tile changed the cached one")
	}
}

func TestNewBuilderRejectsNegativeCache(t *testing.T) {
	if _, err := tlogtiles.NewBuilder(nil, -1); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Fatalf("NewBuilder(-1): %v", err)
	}
}

// TestHandlerWithOutsideVerifiers serves a memory log through Handler and
// checks it with x/mod's tlog and log/tilecheck, then sends hostile
// requests and checks that each gets a clear 4xx and the server keeps
// serving.
func TestHandlerWithOutsideVerifiers(t *testing.T) {
	m := newMemLog(t, 600, 0)
	srv := httptest.NewServer(tlogtiles.Handler(m, nil))
	defer srv.Close()
	hr := xmodHashes(t, m.entries)
	root, err := tlog.TreeHash(600, hr)
	if err != nil {
		t.Fatal(err)
	}
	older := map[uint64][]byte{}
	for _, n := range []int64{1, 255, 256, 300} {
		h, err := tlog.TreeHash(n, hr)
		if err != nil {
			t.Fatal(err)
		}
		older[uint64(n)] = h[:]
	}
	tilestest.Verify(t, srv.Client(), srv.URL, 600, root[:], m.entries, older)

	// Control: a wrong root is caught by the verifiers the test uses.
	// (x/mod's TileHashReader refuses tiles that do not hash to the root.)
	bad := root
	bad[0] ^= 1
	badTree := tlog.Tree{N: 600, Hash: bad}
	if _, err := tlog.ProveRecord(600, 0, tlog.TileHashReader(badTree, xmodReader{t, srv})); err == nil {
		t.Fatal("x/mod accepted the tiles for a wrong root")
	}

	hostile(t, srv, 600)

	// Backend failures: pushback is 503 with Retry-After, anything else a
	// 500 without detail; the full tiles already cached are still served.
	m.fail = log.ErrPushback
	resp := get(t, srv, "/tile/entries/000")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("pushback: status %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	m.fail = errors.New("secret detail")
	code, body := tilestest.Get(t, srv.Client(), srv.URL, "/tile/0/002.p/88")
	if code != http.StatusInternalServerError || strings.Contains(string(body), "secret") {
		t.Fatalf("backend error: status %d, body %q", code, body)
	}
	if code, _ := tilestest.Get(t, srv.Client(), srv.URL, "/tile/0/001"); code != http.StatusOK {
		t.Fatalf("cached full tile during a backend failure: status %d", code)
	}
}

type xmodReader struct {
	t   *testing.T
	srv *httptest.Server
}

func (r xmodReader) Height() int { return 8 }
func (r xmodReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tl := range tiles {
		w := uint8(0)
		if tl.W < 256 {
			w = uint8(tl.W)
		}
		_, out[i] = tilestest.Get(r.t, r.srv.Client(), r.srv.URL, "/"+layout.TilePath(uint64(tl.L), uint64(tl.N), w))
	}
	return out, nil
}
func (xmodReader) SaveTiles([]tlog.Tile, [][]byte) {}

func get(t *testing.T, srv *httptest.Server, path string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL = &url.URL{Scheme: "http", Host: req.URL.Host, Opaque: "//" + req.URL.Host + path}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp
}

// hostile sends requests no tree of the given size implies, or that are
// not tlog-tiles paths, and checks each is a 404 naming the reason, then
// that a good request still succeeds.
func hostile(t *testing.T, srv *httptest.Server, size uint64) {
	t.Helper()
	if size != 600 {
		t.Fatalf("hostile is written for size 600")
	}
	for _, tc := range []struct{ path, reason string }{
		{"/tile/0/003", "beyond the published tree"},
		{"/tile/0/002", "beyond the published tree"},
		{"/tile/0/002.p/89", "beyond the published tree"},
		{"/tile/entries/002.p/89", "beyond the published tree"},
		{"/tile/entries/x001/000", "beyond the published tree"},
		{"/tile/1/000", "beyond the published tree"},
		{"/tile/1/000.p/3", "beyond the published tree"},
		{"/tile/2/000.p/1", "beyond the published tree"},
		{"/tile/8/000.p/1", "beyond the published tree"},
		{"/tile/63/000", "beyond the published tree"},
		{"/tile/0/000.p/0", "not a canonical tlog-tiles path"},
		{"/tile/0/000.p/256", "not a canonical tlog-tiles path"},
		{"/tile/0/000.p/999999999999999999999", "not a canonical tlog-tiles path"},
		{"/tile/0/001.p/044", "not a canonical tlog-tiles path"},
		{"/tile/64/000", "not a canonical tlog-tiles path"},
		{"/tile/0/0000", "not a canonical tlog-tiles path"},
		{"/tile/0/x000/000", "not a canonical tlog-tiles path"},
		{"/tile/../checkpoint", "not a canonical tlog-tiles path"},
		{"/tile/entries/abc", "not a canonical tlog-tiles path"},
		{"/tile/", "not a canonical tlog-tiles path"},
		{"/tile/0/000/", "not a canonical tlog-tiles path"},
		{"/checkpoint/", "not a canonical tlog-tiles path"},
		{"/", "not a canonical tlog-tiles path"},
	} {
		code, body := tilestest.Get(t, srv.Client(), srv.URL, tc.path)
		if code != http.StatusNotFound || !strings.Contains(string(body), tc.reason) {
			t.Errorf("GET %s: status %d, body %q; want 404 naming %q", tc.path, code, body, tc.reason)
		}
	}
	resp, err := srv.Client().Post(srv.URL+"/checkpoint", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /checkpoint: status %d, want 405", resp.StatusCode)
	}
	for _, p := range []string{"/checkpoint", "/tile/0/000", "/tile/0/002.p/88", "/tile/1/000.p/2", "/tile/entries/002.p/88"} {
		if code, body := tilestest.Get(t, srv.Client(), srv.URL, p); code != http.StatusOK {
			t.Errorf("GET %s after the hostile requests: status %d, %q", p, code, body)
		}
	}
}

// TestBuilderSharedComputationSurvivesCancel: two requests wait for the
// same full tile; the one that started computing it goes away, and the
// other still gets the tile.
func TestBuilderSharedComputationSurvivesCancel(t *testing.T) {
	m := newMemLog(t, 256, 0)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	b, err := tlogtiles.NewBuilder(func(ctx context.Context, start, end uint64) ([][]byte, error) {
		select {
		case started <- struct{}{}:
		default:
		}
		<-release
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return m.read(ctx, start, end)
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctxA, cancelA := context.WithCancel(context.Background())
	errA := make(chan error, 1)
	go func() { _, err := b.ReadTile(ctxA, 0, 0, 0); errA <- err }()
	<-started
	resB := make(chan error, 1)
	go func() {
		got, err := b.ReadTile(context.Background(), 0, 0, 0)
		if err == nil && !bytes.Equal(got[:32], rfc6962.DefaultHasher.HashLeaf(m.entries[0])) {
			err = errors.New("wrong tile")
		}
		resB <- err
	}()
	// Let B join the computation A started (singleflight); if B came
	// later it would compute the tile itself and the test would pass
	// without checking anything.
	time.Sleep(100 * time.Millisecond)
	cancelA()
	close(release)
	if err := <-resB; err != nil {
		t.Fatalf("the request that stayed: %v", err)
	}
	<-errA
}
