// Package tilestest checks a C2SP tlog-tiles log served over HTTP with
// outside verifiers: golang.org/x/mod/sumdb/tlog (TileHashReader,
// ProveRecord, ProveTree), Tessera's fsck and this repository's
// log/tilecheck.
package tilestest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
	"github.com/transparency-dev/tessera/fsck"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keytrans/kt/log/logapi"
	"github.com/keytrans/kt/log/tilecheck"
)

// Get fetches base+path and returns the status and body.
func Get(tb testing.TB, hc *http.Client, base, path string) (int, []byte) {
	tb.Helper()
	resp, err := hc.Get(base + path)
	if err != nil {
		tb.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("GET %s: reading body: %v", path, err)
	}
	return resp.StatusCode, body
}

// tileReader is an x/mod tlog.TileReader over HTTP: x/mod's tiles of
// height 8 are tlog-tiles' hash tiles, under another path.
type tileReader struct {
	tb   testing.TB
	hc   *http.Client
	base string
}

func (r tileReader) Height() int { return 8 }

func (r tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		if t.H != 8 || t.L < 0 {
			return nil, fmt.Errorf("unexpected tile %+v", t)
		}
		w := uint8(0)
		if t.W < 256 {
			w = uint8(t.W)
		}
		path := "/" + layout.TilePath(uint64(t.L), uint64(t.N), w)
		code, body := Get(r.tb, r.hc, r.base, path)
		if code != http.StatusOK {
			return nil, fmt.Errorf("GET %s: status %d: %s", path, code, body)
		}
		out[i] = body
	}
	return out, nil
}

func (tileReader) SaveTiles([]tlog.Tile, [][]byte) {}

// Verify checks the tiles served at base (an http URL without trailing
// slash) for the tree of size with root, whose entries are entries:
//
//   - x/mod's TileHashReader, which checks every tile it reads against the
//     tree's root, serves an inclusion proof (ProveRecord) of every entry
//     that CheckRecord accepts, and consistency proofs (ProveTree) from
//     every size in older to size that CheckTree accepts against the roots
//     in older;
//   - tilecheck.CheckRoot and CheckAll accept the tiles and bundles;
//   - the entry bundles hold exactly entries, in order.
func Verify(tb testing.TB, hc *http.Client, base string, size uint64, root []byte, entries [][]byte, older map[uint64][]byte) {
	tb.Helper()
	ctx := context.Background()
	if uint64(len(entries)) != size {
		tb.Fatalf("Verify: %d entries for size %d", len(entries), size)
	}
	var th tlog.Hash
	copy(th[:], root)
	tree := tlog.Tree{N: int64(size), Hash: th}
	hr := tlog.TileHashReader(tree, tileReader{tb, hc, base})
	if got, err := tlog.TreeHash(int64(size), hr); err != nil || got != th {
		tb.Fatalf("x/mod tlog: tree hash of the tiles %x (%v), checkpoint root %x", got, err, root)
	}
	for i, e := range entries {
		p, err := tlog.ProveRecord(int64(size), int64(i), hr)
		if err != nil {
			tb.Fatalf("x/mod tlog: ProveRecord(%d, %d): %v", size, i, err)
		}
		if err := tlog.CheckRecord(p, int64(size), th, int64(i), tlog.RecordHash(e)); err != nil {
			tb.Fatalf("x/mod tlog: CheckRecord(%d, %d): %v", size, i, err)
		}
	}
	for n, r := range older {
		var oh tlog.Hash
		copy(oh[:], r)
		p, err := tlog.ProveTree(int64(size), int64(n), hr)
		if err != nil {
			tb.Fatalf("x/mod tlog: ProveTree(%d, %d): %v", size, n, err)
		}
		if err := tlog.CheckTree(p, int64(size), th, int64(n), oh); err != nil {
			tb.Fatalf("x/mod tlog: CheckTree(%d, %d): %v", size, n, err)
		}
	}

	u, err := url.Parse(base + "/")
	if err != nil {
		tb.Fatal(err)
	}
	f, err := client.NewHTTPFetcher(u, hc)
	if err != nil {
		tb.Fatal(err)
	}
	if err := tilecheck.CheckRoot(ctx, f, size, root); err != nil {
		tb.Fatalf("tilecheck.CheckRoot: %v", err)
	}
	if err := tilecheck.CheckAll(ctx, f, size, root, nil); err != nil {
		tb.Fatalf("tilecheck.CheckAll: %v", err)
	}

	for b := uint64(0); b*layout.EntryBundleWidth < size; b++ {
		path := "/" + layout.EntriesPath(b, layout.PartialTileSize(0, b, size))
		code, body := Get(tb, hc, base, path)
		if code != http.StatusOK {
			tb.Fatalf("GET %s: status %d: %s", path, code, body)
		}
		got, err := logapi.ParseEntries(body)
		if err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		want := entries[b*layout.EntryBundleWidth : min(size, (b+1)*layout.EntryBundleWidth)]
		if len(got) != len(want) {
			tb.Fatalf("%s: %d entries, want %d", path, len(got), len(want))
		}
		for i := range got {
			if string(got[i]) != string(want[i]) {
				tb.Fatalf("%s: entry %d is %q, appended %q", path, i, got[i], want[i])
			}
		}
	}
}

// Paths lists every tile and entry bundle path the tree of size implies
// at its own size: the full tiles and the partial tiles of its right edge.
func Paths(size uint64) []string {
	var out []string
	for level := uint64(0); level < 8; level++ {
		nodes := size >> (8 * level)
		if nodes == 0 {
			break
		}
		for n := uint64(0); n*256 < nodes; n++ {
			w := layout.PartialTileSize(level, n, size)
			out = append(out, "/"+layout.TilePath(level, n, w))
			if level == 0 {
				out = append(out, "/"+layout.EntriesPath(n, w))
			}
		}
	}
	return out
}

// Fsck runs Tessera's fsck over the log at base: it reads the log's
// checkpoint (verified with v, whose name is the origin), recomputes every
// tile from the entry bundles and compares them, and the root with the
// checkpoint's.
func Fsck(tb testing.TB, hc *http.Client, base string, v note.Verifier) {
	tb.Helper()
	if err := FsckErr(hc, base, v); err != nil {
		tb.Fatalf("Tessera fsck of %s: %v", base, err)
	}
}

// FsckErr is Fsck returning the error.
func FsckErr(hc *http.Client, base string, v note.Verifier) error {
	u, err := url.Parse(base + "/")
	if err != nil {
		return err
	}
	f, err := client.NewHTTPFetcher(u, hc)
	if err != nil {
		return err
	}
	hasher := func(bundle []byte) ([][]byte, error) {
		es, err := logapi.ParseEntries(bundle)
		if err != nil {
			return nil, err
		}
		out := make([][]byte, len(es))
		for i, e := range es {
			out[i] = rfc6962.DefaultHasher.HashLeaf(e)
		}
		return out, nil
	}
	// Tessera's fsck (v1.0.4) stops its workers at the first mismatch
	// and can then block forever handing them the tiles still to check,
	// unless they fit its channel (capacity N): use a wide channel, and a
	// deadline so that a hang fails the test instead of the test binary.
	done := make(chan error, 1)
	go func() {
		done <- fsck.New(v.Name(), v, f, hasher, fsck.Opts{N: 16}).Check(context.Background())
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		return errors.New("Tessera fsck did not finish within a minute (hung)")
	}
}
