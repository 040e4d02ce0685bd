package trillian

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keytrans/kt/internal/testing/trilliantest"
)

// BenchmarkAppendDurable measures durable appends through real
// trillian_log_server and trillian_log_signer processes on MariaDB: an
// Append returns once its entries are committed and sequenced. Entries are
// 230 bytes, about the size of a change record. batch is the entries per
// Append call, callers the concurrent callers; quota is Trillian's
// --quota_system. entries/s is the throughput, ms/call the mean latency of
// an Append. Skipped without MariaDB.
//
//	go test -run '^$' -bench AppendDurable -benchtime 2000x ./log/trillian/
//
// On a small machine, QueueLeaf's CPU cost (in trillian_log_server and the
// database) bounds the throughput; the signer's interval bounds the latency.
func BenchmarkAppendDurable(b *testing.B) {
	for _, quota := range []string{"mysql", "noop"} {
		b.Run("quota="+quota, func(b *testing.B) { benchmarkAppendDurable(b, quota) })
	}
}

func benchmarkAppendDurable(b *testing.B, quota string) {
	// trilliantest's signer settings and testConfig's polling are the
	// tuned ones (see trilliantest.Options and Config.MaxPollInterval).
	env := trilliantest.Start(b, trilliantest.Options{QuotaSystem: quota})
	for _, bc := range []struct {
		batch, callers int
	}{
		{batch: 1, callers: 1},
		{batch: 100, callers: 1},
		{batch: 1, callers: 64},
		{batch: 100, callers: 8},
	} {
		b.Run(fmt.Sprintf("batch=%d/callers=%d", bc.batch, bc.callers), func(b *testing.B) {
			l := openLog(b, testConfig(b, env.Conn, 0))
			ctx := context.Background()
			var (
				mu    sync.Mutex
				next  int
				calls int
				spent time.Duration // summed over calls
				wg    sync.WaitGroup
			)
			// take hands out the next batch of entry numbers.
			take := func() (int, int) {
				mu.Lock()
				defer mu.Unlock()
				start := next
				next = min(next+bc.batch, b.N)
				return start, next
			}
			b.ResetTimer()
			start := time.Now()
			for range bc.callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						lo, hi := take()
						if lo == hi {
							return
						}
						es := make([][]byte, hi-lo)
						for i := range es {
							es[i] = make([]byte, 230)
							_, _ = rand.Read(es[i])
							binary.BigEndian.PutUint64(es[i], uint64(lo+i))
						}
						t0 := time.Now()
						if _, err := l.Append(ctx, es); err != nil {
							b.Error(err)
							return
						}
						d := time.Since(t0)
						mu.Lock()
						calls++
						spent += d
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "entries/s")
			if calls > 0 {
				b.ReportMetric(float64(spent.Milliseconds())/float64(calls), "ms/call")
			}
		})
	}
}
