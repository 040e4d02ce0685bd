package auditor_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/transparency-dev/tessera"
	tposix "github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/log/witness"
)

// TestTesseraLogWitnessed: a plain Tessera POSIX log, written by Tessera's
// own appender (not by this project's log packages), with our auditor as
// its only witness through Tessera's WithWitnesses: every checkpoint it
// publishes carries our cosignature, which proves that the auditor speaks
// C2SP tlog-witness as another implementation does.
func TestTesseraLogWitnessed(t *testing.T) {
	const torigin = "tessera.example/plain"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	skey, vkey, err := note.GenerateKey(rand.Reader, torigin)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	// Witness only: no reader, this is not a key transparency log.
	n := newNode(t, "auditor.example", nodeOpts{logs: []auditor.LogConfig{{Origin: torigin, VKey: vkey}}})
	policy := fmt.Sprintf("witness ours %s %s\nquorum ours\n", n.vkey, n.url)
	wg, err := tessera.NewWitnessGroupFromPolicy([]byte(policy))
	if err != nil {
		t.Fatal(err)
	}
	driver, err := tposix.New(ctx, tposix.Config{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	app, shutdown, reader, err := tessera.NewAppender(ctx, driver, tessera.NewAppendOptions().
		WithCheckpointSigner(signer).
		WithCheckpointInterval(100*time.Millisecond).
		WithBatching(64, 50*time.Millisecond).
		WithWitnesses(wg, &tessera.WitnessOptions{Timeout: 5 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		shutdown(sctx)
	}()
	aw := tessera.NewPublicationAwaiter(ctx, reader.ReadCheckpoint, 50*time.Millisecond)
	p, err := witness.ParsePolicy([]byte(fmt.Sprintf("log %s\n%s", vkey, policy)))
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for round := range 3 {
		var futures []tessera.IndexFuture
		for i := range 5 {
			futures = append(futures, app.Add(ctx, tessera.NewEntry(fmt.Appendf(nil, "round %d entry %d", round, i))))
		}
		for _, f := range futures {
			actx, c := context.WithTimeout(ctx, 30*time.Second)
			idx, cp, err := aw.Await(actx, f)
			c()
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if _, err := p.Check(cp); err != nil {
				t.Fatalf("published checkpoint of index %d lacks our cosignature: %v", idx.Index, err)
			}
		}
		st := n.a.Status()[0]
		if !st.HasCosigned || st.Cosigned < last || st.Cosigned < uint64(5*(round+1)) {
			t.Fatalf("round %d: cosigned size %d", round, st.Cosigned)
		}
		last = st.Cosigned
	}
}
