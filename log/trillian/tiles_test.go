package trillian

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/tessera/client"
	"google.golang.org/grpc"

	"github.com/keytrans/kt/internal/testing/tilestest"
	"github.com/keytrans/kt/internal/testing/trilliantest"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/posix"
	"github.com/keytrans/kt/log/tilecheck"
)

// TestTilesMariaDB serves the tlog-tiles of a Log on real Trillian
// processes over MariaDB and checks them with outside verifiers, against
// the checkpoint, the appended entries and the embedded backend.
func TestTilesMariaDB(t *testing.T) {
	env := trilliantest.Start(t, trilliantest.Options{SequencerInterval: 20 * time.Millisecond})
	checkTiles(t, env.Conn)
}

// TestTilesMemory is TestTilesMariaDB on in-process Trillian.
func TestTilesMemory(t *testing.T) {
	env := newMemEnv(t)
	checkTiles(t, env.ClientConn)
}

// checkTiles appends 600 entries in three calls (two full tiles and
// bundles, a partial one of 88, a partial level-1 tile of 2) and checks:
//
//   - x/mod's sumdb/tlog (TileHashReader, ProveRecord/CheckRecord for every
//     entry, ProveTree/CheckTree from each earlier checkpoint) and
//     log/tilecheck (CheckRoot, CheckAll) and Tessera's fsck accept the
//     served tiles for the served checkpoint's root;
//   - the entry bundles hold the appended entries at the indices Append
//     returned;
//   - the embedded backend, given the same entries in the same order,
//     serves byte-identical tiles and bundles and the same root;
//   - hostile requests get a 404 naming the reason, and serving goes on.
func checkTiles(t *testing.T, conn grpc.ClientConnInterface) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := testConfig(t, conn, 0)
	cfg.TileCacheTiles = 1 // evict all the time: correctness must not depend on the cache
	l := openLog(t, cfg)
	_, v := testKey(t)
	srv := httptest.NewServer(l.TilesHandler())
	defer srv.Close()
	hc := srv.Client()

	// The empty log: a checkpoint, and no tile.
	code, body := tilestest.Get(t, hc, srv.URL, "/checkpoint")
	if cp, _, err := log.ParseCheckpoint(body, testOrigin, v); code != http.StatusOK || err != nil || cp.Size != 0 {
		t.Fatalf("empty log: /checkpoint status %d, %v", code, err)
	}
	if code, body := tilestest.Get(t, hc, srv.URL, "/tile/0/000.p/1"); code != http.StatusNotFound || !strings.Contains(string(body), "beyond the published tree") {
		t.Fatalf("empty log: /tile/0/000.p/1 status %d, %q", code, body)
	}

	const n = 600
	byIndex := make([][]byte, n)
	older := map[uint64][]byte{}
	var root []byte
	for b := range 3 {
		batch := make([][]byte, n/3)
		for i := range batch {
			batch[i] = fmt.Appendf(nil, "tiles entry %d", b*len(batch)+i)
		}
		idx, err := l.Append(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		last := uint64(0)
		for i, x := range idx {
			if x >= n || byIndex[x] != nil {
				t.Fatalf("Append returned index %d twice or out of range", x)
			}
			byIndex[x] = batch[i]
			last = max(last, x)
		}
		if _, err := l.Await(ctx, last); err != nil {
			t.Fatal(err)
		}
		// What /checkpoint serves is the published checkpoint.
		code, body := tilestest.Get(t, hc, srv.URL, "/checkpoint")
		want, _ := l.Checkpoint(ctx)
		if code != http.StatusOK || !bytes.Equal(body, want) {
			t.Fatalf("/checkpoint: status %d, %q; the Log's checkpoint is %q", code, body, want)
		}
		cp, _, err := log.ParseCheckpoint(body, testOrigin, v)
		if err != nil {
			t.Fatal(err)
		}
		if cp.Size < n {
			older[cp.Size] = cp.Hash
		} else {
			root = cp.Hash
		}
	}
	if root == nil {
		t.Fatalf("no checkpoint of size %d", n)
	}
	tilestest.Verify(t, hc, srv.URL, n, root, byIndex, older)
	tilestest.Fsck(t, hc, srv.URL, v)

	// Control: one hash of a full tile changed on the way is caught by
	// Tessera's fsck and by tilecheck.
	tampered := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		l.TilesHandler().ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		if r.URL.Path == "/tile/0/001" && len(body) == 256*32 {
			body[100] ^= 1
		}
		for k, vs := range rec.Header() {
			w.Header()[k] = vs
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
	}))
	defer tampered.Close()
	if err := tilestest.FsckErr(tampered.Client(), tampered.URL, v); err == nil || strings.Contains(err.Error(), "hung") {
		t.Errorf("Tessera fsck of a tampered tile: %v", err)
	}
	tu, _ := url.Parse(tampered.URL + "/")
	tf, err := client.NewHTTPFetcher(tu, tampered.Client())
	if err != nil {
		t.Fatal(err)
	}
	if err := tilecheck.CheckAll(ctx, tf, n, root, nil); !errors.Is(err, tilecheck.ErrCorrupt) || !strings.Contains(err.Error(), "tile/0/001") {
		t.Errorf("tilecheck.CheckAll of a tampered tile: %v", err)
	}

	// The embedded backend, given the same entries in the same order.
	s, _ := testKey(t)
	pl, err := posix.New(ctx, posix.Config{Dir: t.TempDir(), Origin: testOrigin, Signer: s, CheckpointInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close(context.Background())
	pidx, err := pl.Append(ctx, byIndex)
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range pidx {
		if x != uint64(i) {
			t.Fatalf("posix put entry %d at %d", i, x)
		}
	}
	praw, err := pl.Await(ctx, n-1)
	if err != nil {
		t.Fatal(err)
	}
	pcp, _, err := log.ParseCheckpoint(praw, testOrigin, v)
	if err != nil || pcp.Size != n || !bytes.Equal(pcp.Hash, root) {
		t.Fatalf("posix checkpoint %+v (%v), want size %d root %x", pcp, err, n, root)
	}
	psrv := httptest.NewServer(pl.TilesHandler())
	defer psrv.Close()
	paths := tilestest.Paths(n)
	if len(paths) != 7 {
		t.Fatalf("paths of tree %d: %v", n, paths)
	}
	for _, p := range paths {
		c1, b1 := tilestest.Get(t, hc, srv.URL, p)
		c2, b2 := tilestest.Get(t, psrv.Client(), psrv.URL, p)
		if c1 != http.StatusOK || c2 != http.StatusOK || !bytes.Equal(b1, b2) {
			t.Errorf("%s: Trillian status %d (%d bytes), embedded status %d (%d bytes), equal %v", p, c1, len(b1), c2, len(b2), bytes.Equal(b1, b2))
		}
	}

	// Hostile requests: a clear 404 each, and serving goes on.
	for _, tc := range []struct{ path, reason string }{
		{"/tile/0/003", "beyond the published tree"},
		{"/tile/0/002", "beyond the published tree"},
		{"/tile/0/002.p/89", "beyond the published tree"},
		{"/tile/entries/002.p/89", "beyond the published tree"},
		{"/tile/1/000", "beyond the published tree"},
		{"/tile/1/000.p/3", "beyond the published tree"},
		{"/tile/2/000.p/1", "beyond the published tree"},
		{"/tile/0/x999/000", "beyond the published tree"},
		{"/tile/0/000.p/0", "not a canonical tlog-tiles path"},
		{"/tile/0/000.p/256", "not a canonical tlog-tiles path"},
		{"/tile/0/002.p/088", "not a canonical tlog-tiles path"},
		{"/tile/64/000", "not a canonical tlog-tiles path"},
		{"/tile/0/00", "not a canonical tlog-tiles path"},
		{"/tile/entries/../000", "not a canonical tlog-tiles path"},
		{"/tile/entries/-1", "not a canonical tlog-tiles path"},
	} {
		code, body := tilestest.Get(t, hc, srv.URL, tc.path)
		if code != http.StatusNotFound || !strings.Contains(string(body), tc.reason) {
			t.Errorf("GET %s: status %d, body %q; want 404 naming %q", tc.path, code, body, tc.reason)
		}
	}
	for _, p := range paths {
		if code, _ := tilestest.Get(t, hc, srv.URL, p); code != http.StatusOK {
			t.Errorf("GET %s after the hostile requests: status %d", p, code)
		}
	}
}
