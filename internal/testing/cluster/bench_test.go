package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/internal/testing/trilliantest"
	"github.com/keytrans/kt/log/trillian"
)

// BenchmarkClusterAppend measures durable appends through the scale-out
// topology: two trillian_log_server processes (calls balanced over both by
// trillian.Dial) and two trillian_log_signer processes electing a master
// through etcd, on MariaDB. Compare with log/trillian's
// BenchmarkAppendDurable (one server, one signer with --force_master) and
// log/posix's (the embedded default). Entries are 230 bytes, about a
// change record. Reported: entries/s, the mean ms/call, and p50/p99 of an
// Append's latency in ms.
//
//	go test -run '^$' -bench ClusterAppend -benchtime 4000x ./internal/testing/cluster/
func BenchmarkClusterAppend(b *testing.B) {
	c := trilliantest.StartCluster(b, trilliantest.ClusterOptions{
		Options: trilliantest.Options{SequencerInterval: 20 * time.Millisecond},
	})
	conn, err := trillian.Dial(c.ServerAddrs())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	_, _, signer, _ := testkit.NoteKey(b, origin)
	for _, bc := range []struct{ batch, callers int }{
		{batch: 1, callers: 1},
		{batch: 1, callers: 64},
		{batch: 100, callers: 8},
	} {
		b.Run(fmt.Sprintf("batch=%d/callers=%d", bc.batch, bc.callers), func(b *testing.B) {
			ctx := context.Background()
			l, err := trillian.New(ctx, trillian.Config{
				Conn: conn, CreateTree: true, Origin: origin, Signer: signer,
				CheckpointInterval: 50 * time.Millisecond,
				MaxPollInterval:    10 * time.Millisecond,
				Logger:             slog.New(slog.DiscardHandler),
			})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close(ctx)
			if _, err := c.Master(ctx, l.TreeID()); err != nil {
				b.Fatal(err)
			}
			latencies, elapsed := testkit.AppendLoad(b, bc.batch, bc.callers, func(es [][]byte) error {
				_, err := l.Append(ctx, es)
				return err
			})
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "entries/s")
			if n := len(latencies); n > 0 {
				sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
				var sum time.Duration
				for _, d := range latencies {
					sum += d
				}
				ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
				b.ReportMetric(ms(sum/time.Duration(n)), "ms/call")
				b.ReportMetric(ms(latencies[n/2]), "p50-ms")
				b.ReportMetric(ms(latencies[n*99/100]), "p99-ms")
			}
		})
	}
}
