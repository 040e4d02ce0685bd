package trillian

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/keytrans/kt/internal/testing/testkit"
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
			latencies, elapsed := testkit.AppendLoad(b, bc.batch, bc.callers, func(es [][]byte) error {
				_, err := l.Append(ctx, es)
				return err
			})
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "entries/s")
			if calls := len(latencies); calls > 0 {
				var spent time.Duration // summed over calls
				for _, d := range latencies {
					spent += d
				}
				b.ReportMetric(float64(spent.Milliseconds())/float64(calls), "ms/call")
			}
		})
	}
}
