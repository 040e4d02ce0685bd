package trillian

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/keytrans/kt/internal/testing/trilliantest"
	"github.com/keytrans/kt/log"
)

// TestCrashMariaDB kills trillian_log_server and trillian_log_signer
// (SIGKILL) while appends are running, restarts them on the same database
// and checks that every acknowledged entry is at its index, under a
// checkpoint consistent with the one published before the crash.
func TestCrashMariaDB(t *testing.T) {
	env := trilliantest.Start(t, trilliantest.Options{SequencerInterval: 20 * time.Millisecond})
	_, v := testKey(t)
	l, err := New(ctxT(t), testConfig(t, env.Conn, 0))
	if err != nil {
		t.Fatal(err)
	}
	treeID := l.TreeID()

	var (
		mu    sync.Mutex
		acked = map[uint64][]byte{}
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				es := [][]byte{fmt.Appendf(nil, "writer %d entry %d a", w, i), fmt.Appendf(nil, "writer %d entry %d b", w, i)}
				idx, err := l.Append(context.Background(), es)
				if err != nil {
					return // the crash
				}
				mu.Lock()
				for j := range es {
					acked[idx[j]] = es[j]
				}
				mu.Unlock()
			}
		}()
	}
	// Let some appends through, and keep a published checkpoint.
	var before []byte
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 40 {
			if before, err = l.Checkpoint(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	env.Kill()
	close(stop)
	closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = l.Close(closeCtx) // appends waiting for their index end with ErrClosed
	wg.Wait()
	beforeCP, _, err := log.ParseCheckpoint(before, testOrigin, v)
	if err != nil {
		t.Fatal(err)
	}

	env.Restart()
	l2 := openLog(t, testConfig(t, env.Conn, treeID))
	ctx := ctxT(t)
	var last uint64
	for i := range acked {
		last = max(last, i)
	}
	raw, err := l2.Await(ctx, last)
	if err != nil {
		t.Fatal(err)
	}
	cp, _, err := log.ParseCheckpoint(raw, testOrigin, v)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d entries acknowledged before the crash; %d in the log after it", len(acked), cp.Size)
	var got [][]byte
	for uint64(len(got)) < cp.Size {
		es, err := l2.Entries(ctx, uint64(len(got)), cp.Size)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, es...)
	}
	for i, e := range acked {
		if !bytes.Equal(got[i], e) {
			t.Errorf("acknowledged entry %d: log has %q, want %q", i, got[i], e)
		}
		p, err := l2.InclusionProof(ctx, i, cp.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, cp.Size, rfc6962.DefaultHasher.HashLeaf(e), p, cp.Hash); err != nil {
			t.Errorf("acknowledged entry %d: %v", i, err)
		}
	}
	p, err := l2.ConsistencyProof(ctx, beforeCP.Size, cp.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, beforeCP.Size, cp.Size, p, beforeCP.Hash, cp.Hash); err != nil {
		t.Fatalf("checkpoint after the crash is inconsistent with the one before: %v", err)
	}
}
