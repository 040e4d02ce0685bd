package posix

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/client"

	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/tlogtiles"
)

// TestTilesHandlerWithTesseraClient reads the log over HTTP with Tessera's
// own tlog-tiles client: checkpoint, entry bundles, inclusion proofs, and
// consistency as the log grows.
func TestTilesHandlerWithTesseraClient(t *testing.T) {
	_, s, v := newKey(t, testOrigin)
	l := openLog(t, testConfig(t.TempDir(), s))
	defer closeLog(t, l)
	ctx := testCtx(t)
	srv := httptest.NewServer(l.TilesHandler())
	defer srv.Close()
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	f, err := client.NewHTTPFetcher(u, srv.Client())
	if err != nil {
		t.Fatal(err)
	}

	var all [][]byte
	appendN := func(n int) uint64 {
		t.Helper()
		es := make([][]byte, n)
		for i := range es {
			es[i] = fmt.Appendf(nil, "tiles entry %d", len(all)+i)
		}
		idx, err := l.Append(ctx, es)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, es...)
		if _, err := l.Await(ctx, idx[n-1]); err != nil {
			t.Fatal(err)
		}
		return idx[n-1] + 1
	}

	// 600 entries: two full bundles and level-0 tiles, a partial one, and a
	// partial level-1 tile.
	appendN(600)
	tracker, err := client.NewLogStateTracker(ctx, f.ReadTile, nil, v, testOrigin, client.UnilateralConsensus(f.ReadCheckpoint))
	if err != nil {
		t.Fatalf("Tessera client cannot follow the log: %v", err)
	}
	cp := tracker.Latest()
	if cp.Size < 600 {
		t.Fatalf("checkpoint over HTTP has size %d, want at least 600", cp.Size)
	}
	// Entry bundles, compared with what was appended.
	for n := uint64(0); n*256 < cp.Size; n++ {
		b, err := client.GetEntryBundle(ctx, f.ReadEntryBundle, n, cp.Size)
		if err != nil {
			t.Fatalf("bundle %d: %v", n, err)
		}
		for i, e := range b.Entries {
			if want := all[n*256+uint64(i)]; !bytes.Equal(e, want) {
				t.Fatalf("bundle %d entry %d: got %q, want %q", n, i, e, want)
			}
		}
	}
	// Inclusion proofs built from the served tiles verify and equal the
	// Log's own.
	pb, err := client.NewProofBuilder(ctx, cp.Size, f.ReadTile)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []uint64{0, 1, 255, 256, 511, 512, cp.Size - 1} {
		p, err := pb.InclusionProof(ctx, i)
		if err != nil {
			t.Fatalf("inclusion proof for %d from tiles: %v", i, err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, cp.Size, rfc6962.DefaultHasher.HashLeaf(all[i]), p, cp.Hash); err != nil {
			t.Fatalf("inclusion proof for %d from tiles does not verify: %v", i, err)
		}
		own, err := l.InclusionProof(ctx, i, cp.Size)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(own) != fmt.Sprint(p) {
			t.Fatalf("proof for %d over HTTP differs from the Log's", i)
		}
	}
	// Grow past a level-1 tile boundary (65,536 entries) so that a full
	// level-1 tile and a partial level-2 tile are served too; the tracker
	// verifies consistency from tiles.
	appendN(65_536)
	if _, _, _, err := tracker.Update(ctx); err != nil {
		t.Fatalf("Tessera client: update after growth: %v", err)
	}
	cp2 := tracker.Latest()
	if cp2.Size <= cp.Size {
		t.Fatalf("tracker did not move: %d -> %d", cp.Size, cp2.Size)
	}
	pb, err = client.NewProofBuilder(ctx, cp2.Size, f.ReadTile)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []uint64{3, 65_535, 65_536, cp2.Size - 1} {
		p, err := pb.InclusionProof(ctx, i)
		if err != nil {
			t.Fatalf("inclusion proof for %d from tiles: %v", i, err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, cp2.Size, rfc6962.DefaultHasher.HashLeaf(all[i]), p, cp2.Hash); err != nil {
			t.Fatalf("inclusion proof for %d from tiles does not verify: %v", i, err)
		}
	}
}

func TestTilesHandlerHeadersAndPaths(t *testing.T) {
	_, s, _ := newKey(t, testOrigin)
	l := openLog(t, testConfig(t.TempDir(), s))
	defer closeLog(t, l)
	ctx := testCtx(t)
	es := make([][]byte, 300)
	for i := range es {
		es[i] = fmt.Appendf(nil, "entry %d", i)
	}
	idx, err := l.Append(ctx, es)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := l.Await(ctx, idx[len(idx)-1])
	if err != nil {
		t.Fatal(err)
	}
	if size, _ := checkpointSize(raw, testOrigin); size != 300 {
		t.Fatalf("expected one checkpoint of size 300, got %d", size)
	}
	h := l.TilesHandler()
	get := func(method, target string, hdr ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "/", nil)
		// Set the path raw, exactly as a hostile client could send it.
		req.URL = &url.URL{Path: target}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}

	t.Run("served", func(t *testing.T) {
		for _, tc := range []struct {
			path, ctype, cache string
			size               int
		}{
			{"/checkpoint", "text/plain; charset=utf-8", "no-cache", len(raw)},
			{"/tile/0/000", "application/octet-stream", tlogtiles.CacheImmutable, 256 * 32},
			{"/tile/0/001.p/44", "application/octet-stream", tlogtiles.CacheImmutable, 44 * 32},
			{"/tile/1/000.p/1", "application/octet-stream", tlogtiles.CacheImmutable, 32},
			{"/tile/entries/001.p/44", "application/octet-stream", tlogtiles.CacheImmutable, -1},
			{"/tile/entries/000", "application/octet-stream", tlogtiles.CacheImmutable, -1},
		} {
			rec := get(http.MethodGet, tc.path)
			if rec.Code != http.StatusOK {
				t.Errorf("GET %s: status %d", tc.path, rec.Code)
				continue
			}
			if got := rec.Header().Get("Content-Type"); got != tc.ctype {
				t.Errorf("GET %s: Content-Type %q, want %q", tc.path, got, tc.ctype)
			}
			if got := rec.Header().Get("Cache-Control"); got != tc.cache {
				t.Errorf("GET %s: Cache-Control %q, want %q", tc.path, got, tc.cache)
			}
			if tc.size >= 0 && rec.Body.Len() != tc.size {
				t.Errorf("GET %s: %d bytes, want %d", tc.path, rec.Body.Len(), tc.size)
			}
		}
		if rec := get(http.MethodHead, "/tile/0/000"); rec.Code != http.StatusOK || rec.Body.Len() != 0 {
			t.Errorf("HEAD: status %d, %d bytes", rec.Code, rec.Body.Len())
		}
	})

	t.Run("gzip bundles", func(t *testing.T) {
		plain := get(http.MethodGet, "/tile/entries/000")
		rec := get(http.MethodGet, "/tile/entries/000", "Accept-Encoding", "gzip")
		if rec.Header().Get("Content-Encoding") != "gzip" {
			t.Fatalf("bundle not compressed for a gzip client")
		}
		zr, err := gzip.NewReader(rec.Body)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(got, plain.Body.Bytes()) {
			t.Fatalf("gzip bundle differs from plain one (%v)", err)
		}
		if plain.Header().Get("Content-Encoding") != "" {
			t.Fatalf("bundle compressed for a client that did not ask")
		}
	})

	t.Run("rejected", func(t *testing.T) {
		for _, p := range []string{
			"/",
			"/checkpoint/",
			"/.kt.lock",
			"/.state/treeState",
			"/tile/../.state/treeState",
			"/tile/0/../../.state/treeState",
			"/tile/entries/../../.kt.lock",
			"/tile/0/000/../../../.state/version",
			"/tile/entries/%2e%2e/000",
			"//tile/0/000",
			"/tile/0/000/",
			"/tile/00/000",
			"/tile/+0/000",
			"/tile/0/0000",
			"/tile/0/00",
			"/tile/0/x000/000",
			"/tile/0/001.p/044",
			"/tile/0/000.p/0",
			"/tile/0/000.p/256",
			"/tile/64/000",
			"/tile/entries",
			"/tile/entries/",
			"/tile/entries/abc",
			// Beyond the published size of 300:
			"/tile/0/001",
			"/tile/entries/001",
			"/tile/entries/001.p/45",
			"/tile/0/002",
			"/tile/1/000",
			"/tile/1/000.p/2",
			"/tile/2/000.p/1",
		} {
			if rec := get(http.MethodGet, p); rec.Code != http.StatusNotFound {
				t.Errorf("GET %q: status %d, want 404; body %q", p, rec.Code, truncate(rec.Body.String()))
			}
		}
		if rec := get(http.MethodPost, "/checkpoint"); rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("POST: status %d, want 405", rec.Code)
		}
	})
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return strings.TrimSpace(s)
}

var _ log.Reader = (*Log)(nil)

// TestProverMatchesTessera: the Log's cached proofs equal those of
// Tessera's client.ProofBuilder over the same tiles, and verify, for many
// index and size pairs, including sizes whose partial tiles were replaced by
// full ones since.
func TestProverMatchesTessera(t *testing.T) {
	_, s, _ := newKey(t, testOrigin)
	l := openLog(t, testConfig(t.TempDir(), s))
	defer closeLog(t, l)
	ctx := testCtx(t)
	var all [][]byte
	var sizes []uint64
	var roots [][]byte
	for _, n := range []int{1, 2, 5, 250, 10, 300, 1000, 70_000} {
		es := make([][]byte, n)
		for i := range es {
			es[i] = fmt.Appendf(nil, "prover entry %d", len(all)+i)
		}
		idx, err := l.Append(ctx, es)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, es...)
		raw, err := l.Await(ctx, idx[n-1])
		if err != nil {
			t.Fatal(err)
		}
		cp, _, err := log.ParseCheckpoint(raw, testOrigin, verifierOf(t, s))
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, cp.Size)
		roots = append(roots, cp.Hash)
	}
	h := rfc6962.DefaultHasher
	// A prover that finds every partial tile garbage-collected: it gets the
	// full tile whenever one exists.
	gced := newProver(func(ctx context.Context, level, index uint64, p uint8) ([]byte, error) {
		if raw, err := l.reader.ReadTile(ctx, level, index, 0); err == nil {
			return raw, nil
		}
		return l.reader.ReadTile(ctx, level, index, p)
	}, func() (uint64, error) { return l.publishedSize(0) })
	for si, size := range sizes {
		pb, err := client.NewProofBuilder(ctx, size, l.reader.ReadTile)
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range []uint64{0, size / 3, size / 2, size - 1, min(255, size-1), min(256, size-1)} {
			got, err := l.InclusionProof(ctx, i, size)
			if err != nil {
				t.Fatalf("InclusionProof(%d, %d): %v", i, size, err)
			}
			want, err := pb.InclusionProof(ctx, i)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("InclusionProof(%d, %d) differs from Tessera's", i, size)
			}
			if fromFull, err := gced.inclusion(ctx, i, size); err != nil || fmt.Sprint(fromFull) != fmt.Sprint(want) {
				t.Fatalf("InclusionProof(%d, %d) from full tiles differs from Tessera's (%v)", i, size, err)
			}
			if err := proof.VerifyInclusion(h, i, size, h.HashLeaf(all[i]), got, roots[si]); err != nil {
				t.Fatalf("InclusionProof(%d, %d) does not verify: %v", i, size, err)
			}
		}
		for oi, old := range sizes[:si+1] {
			got, err := l.ConsistencyProof(ctx, old, size)
			if err != nil {
				t.Fatalf("ConsistencyProof(%d, %d): %v", old, size, err)
			}
			if old < size {
				want, err := pb.ConsistencyProof(ctx, old, size)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("ConsistencyProof(%d, %d) differs from Tessera's", old, size)
				}
			}
			if err := proof.VerifyConsistency(h, old, size, got, roots[oi], roots[si]); err != nil {
				t.Fatalf("ConsistencyProof(%d, %d) does not verify: %v", old, size, err)
			}
		}
	}
}
