package auditor_test

import (
	"context"
	"sync"
	"testing"

	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/internal/testing/testkit"
)

var benchLog = sync.OnceValues(func() (*ktlog.Builder, error) {
	b := ktlog.New(origin)
	b.Honest(10000, 1000)
	return b, nil
})

// BenchmarkCatchUp is the daemon's whole catch-up path on a fresh store:
// entries read over the HTTP read API on loopback (pages of at most 100
// entries, conformance.MemoryLog's page size), replayed with every
// signature checked, state and the checkpoint saved to Pebble.
func BenchmarkCatchUp(b *testing.B) {
	kb, _ := benchLog()
	l := newTestLog(b)
	l.appendAll(b, kb)
	ents := kb.Len()
	cpu0 := testkit.CPUTime()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		n := newNode(b, "bench.example", nodeOpts{logs: []auditor.LogConfig{logConfig(l, kb)}})
		b.StartTimer()
		if err := n.a.AuditOnce(context.Background(), origin); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if st := n.a.Status()[0]; st.Latest == nil || st.Latest.Size != ents || st.Violations != 0 {
			b.Fatalf("%+v", st)
		}
		n.close()
		b.StartTimer()
	}
	b.ReportMetric(float64(ents)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(float64(ents)*float64(b.N)/(testkit.CPUTime()-cpu0).Seconds(), "entries/cpu-s")
}
