package testkit

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"testing"
	"time"
)

// AppendLoad drives a log's Append in a benchmark: it appends b.N entries
// of 230 random bytes (about a change record; each begins with its
// big-endian number, so no two are equal) in calls of batch entries from
// callers concurrent goroutines, through appendFn. It resets b's timer as
// the load starts and returns every call's latency, in the order the
// calls ended, and the wall time of the whole load. A call that fails is
// reported with b.Error and stops its goroutine.
func AppendLoad(b *testing.B, batch, callers int, appendFn func(entries [][]byte) error) (latencies []time.Duration, elapsed time.Duration) {
	var (
		mu   sync.Mutex
		next int
		wg   sync.WaitGroup
	)
	// take hands out the next batch of entry numbers.
	take := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		start := next
		next = min(next+batch, b.N)
		return start, next
	}
	b.ResetTimer()
	start := time.Now()
	for range callers {
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
				if err := appendFn(es); err != nil {
					b.Error(err)
					return
				}
				d := time.Since(t0)
				mu.Lock()
				latencies = append(latencies, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return latencies, time.Since(start)
}
