package cluster

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/keytrans/kt/internal/testing/tilestest"
	"github.com/keytrans/kt/internal/testing/trilliantest"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/logapi"
)

// TestKtdTilesOnTrillian: the ktd binary with log.backend trillian serves
// C2SP tlog-tiles on its public HTTP listener, and x/mod's sumdb/tlog,
// Tessera's fsck and log/tilecheck accept them for the tree of ktd's signed /checkpoint, with
// entry bundles equal to the entries of ktd's read API.
func TestKtdTilesOnTrillian(t *testing.T) {
	env := trilliantest.Start(t, trilliantest.Options{SequencerInterval: 50 * time.Millisecond})
	kd := startKtd(t, env.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Heartbeats grow the log; wait for a few epochs.
	var cp []byte
	var size uint64
	var root []byte
	for size < 5 {
		if ctx.Err() != nil {
			t.Fatalf("ktd's log did not grow to 5 entries (size %d)", size)
		}
		time.Sleep(100 * time.Millisecond)
		code, body := tilestest.Get(t, http.DefaultClient, kd.http, "/checkpoint")
		if code != http.StatusOK {
			continue
		}
		c, _, err := log.ParseCheckpoint(body, kd.origin, kd.verifier)
		if err != nil {
			t.Fatalf("ktd's /checkpoint: %v\n%s", err, body)
		}
		cp, size, root = body, c.Size, c.Hash
	}
	t.Logf("verifying the tiles of ktd's checkpoint:\n%s", cp)
	var entries [][]byte
	rc := logapi.NewClient(kd.http, nil)
	for uint64(len(entries)) < size {
		es, err := rc.Entries(ctx, uint64(len(entries)), size)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, es...)
	}
	tilestest.Verify(t, http.DefaultClient, kd.http, size, root, entries, nil)
	tilestest.Fsck(t, http.DefaultClient, kd.http, kd.verifier)
	if code, body := tilestest.Get(t, http.DefaultClient, kd.http, "/tile/0/000.p/0"); code != http.StatusNotFound {
		t.Errorf("/tile/0/000.p/0: status %d, %q", code, body)
	}
}
