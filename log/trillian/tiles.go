package trillian

import (
	"context"
	"net/http"

	"github.com/keytrans/kt/log/tlogtiles"
)

// TilesHandler serves the log read-only as a C2SP tlog-tiles log, as the
// embedded backend does: GET (or HEAD) /checkpoint (the latest published
// checkpoint, with its cosignatures: the one Checkpoint returns),
// /tile/<L>/<N>[.p/<W>] and /tile/entries/<N>[.p/<W>], relative to
// wherever it is mounted. See [tlogtiles.Handler] for the answers.
//
// Trillian stores no tiles: entry bundles are read from Trillian
// (GetLeavesByRange) and hash tiles computed from the entries
// ([tlogtiles.Builder]), with full tiles cached in memory (at most
// 2*Config.TileCacheTiles tiles of 8 KiB). Only what the latest published
// checkpoint implies is served, so a tile never covers leaves Trillian
// sequenced but this Log has not checked and signed.
//
// SPEC(design.md 10)
// SPEC(design.md 17)
func (l *Log) TilesHandler() http.Handler {
	return tlogtiles.Handler(tileSource{l}, l.logger)
}

// tileSource is the Log as a tlogtiles.Source.
type tileSource struct{ l *Log }

func (s tileSource) Checkpoint(ctx context.Context) ([]byte, error) { return s.l.Checkpoint(ctx) }

func (s tileSource) Size(context.Context) (uint64, error) {
	cp, err := s.l.latest()
	if err != nil {
		return 0, err
	}
	return cp.size, nil
}

func (s tileSource) ReadTile(ctx context.Context, level, index uint64, w uint8) ([]byte, error) {
	return s.l.tiles.ReadTile(ctx, level, index, w)
}

func (s tileSource) ReadEntryBundle(ctx context.Context, index uint64, w uint8) ([]byte, error) {
	return s.l.tiles.ReadEntryBundle(ctx, index, w)
}
