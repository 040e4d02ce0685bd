package replay_test

import (
	"sync"
	"testing"

	"github.com/keytrans/kt/auditor/ktlog"
	"github.com/keytrans/kt/auditor/replay"
)

var benchLog = sync.OnceValues(func() (*ktlog.Builder, logKey) {
	b := ktlog.New(origin)
	// 20,000 change records (10,000 enrollments, 10,000 device changes),
	// epochs of 1,000 changes: every signature and every map root checked.
	b.Honest(10000, 1000)
	return b, newLogKey(nil)
})

// BenchmarkReplay replays a whole log from entry 0, verifying every
// signature and recomputing every epoch's map root, in pages of 1024
// entries as the read API serves them, then the final checkpoint.
func BenchmarkReplay(b *testing.B) {
	for _, exact := range []bool{false, true} {
		name := "batch"
		if exact {
			name = "exact"
		}
		b.Run(name, func(b *testing.B) {
			l, k := benchLog()
			ents := l.Entries()
			cp := k.checkpoint(b, ents)
			b.ResetTimer()
			for b.Loop() {
				e, err := replay.New(replay.Config{Origin: origin, Verifier: k.v, RecoveryKey: l.RecoveryKey(), ExactSignatures: exact})
				if err != nil {
					b.Fatal(err)
				}
				for i := 0; i < len(ents); i += 1024 {
					if vs := e.Append(ents[i:min(len(ents), i+1024)]); len(vs) != 0 {
						b.Fatal(vs)
					}
				}
				if _, vs, err := e.Checkpoint(cp); err != nil || vs != nil {
					b.Fatal(err, vs)
				}
			}
			b.ReportMetric(float64(len(ents))*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
