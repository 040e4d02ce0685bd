package replay_test

import (
	"crypto/ed25519"
	"sync"
	"testing"

	"github.com/keytrans/kt/auditor/replay"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/internal/testing/testkit"
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
			cpu0 := testkit.CPUTime()
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
			// Entries per second of CPU time used by the process: what the
			// replay costs, whatever else shares the cores. On 2 idle
			// cores the wall-clock rate approaches twice this.
			b.ReportMetric(float64(len(ents))*float64(b.N)/(testkit.CPUTime()-cpu0).Seconds(), "entries/cpu-s")
		})
	}
}

// BenchmarkEd25519Verify is the calibration baseline: one crypto/ed25519
// verification of a change statement, on one core.
func BenchmarkEd25519Verify(b *testing.B) {
	k := ktlog.Key("bench")
	msg := make([]byte, 250)
	sig := ed25519.Sign(k, msg)
	pub := k.Public().(ed25519.PublicKey)
	for b.Loop() {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("bad signature")
		}
	}
}
