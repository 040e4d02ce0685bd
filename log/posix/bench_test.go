package posix

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppendDurable appends b.N entries of 200 bytes from 256
// concurrent callers, each appending batches of 64 entries, with the
// default batching, and reports durable entries per second (each Append
// returned, so each entry is synced to disk). Enough entries are in flight
// (16,384) for two full Tessera batches to overlap: one being written while
// the next fills up.
func BenchmarkAppendDurable(b *testing.B) {
	const callers, batch, entrySize = 256, 64, 200
	_, s, _ := newKey(b, testOrigin)
	l := openLog(b, testConfig(b.TempDir(), s))
	defer closeLog(b, l)
	ctx := context.Background()

	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	b.ResetTimer()
	start := time.Now()
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := int(next.Add(batch))
				k := batch
				if n > b.N {
					k = b.N - (n - batch)
				}
				if k <= 0 {
					return
				}
				es := make([][]byte, k)
				for i := range es {
					e := make([]byte, entrySize)
					rand.Read(e[16:])
					binary.BigEndian.PutUint64(e, uint64(c))
					binary.BigEndian.PutUint64(e[8:], uint64(n+i))
					es[i] = e
				}
				if _, err := l.Append(ctx, es); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "entries/s")
}

// BenchmarkInclusionProof builds inclusion proofs for random entries in a
// published tree of 100,000 entries.
func BenchmarkInclusionProof(b *testing.B) {
	const size = 100_000
	_, s, _ := newKey(b, testOrigin)
	l := openLog(b, testConfig(b.TempDir(), s))
	defer closeLog(b, l)
	ctx := context.Background()
	es := make([][]byte, size)
	for i := range es {
		es[i] = binary.BigEndian.AppendUint64(make([]byte, 0, 64), uint64(i))
		es[i] = append(es[i], make([]byte, 56)...)
	}
	idx, err := l.Append(ctx, es)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := l.Await(ctx, idx[len(idx)-1]); err != nil {
		b.Fatal(err)
	}
	var seed [8]byte
	rand.Read(seed[:])
	x := binary.BigEndian.Uint64(seed[:]) | 1
	b.ResetTimer()
	for b.Loop() {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		if _, err := l.InclusionProof(ctx, x%size, size); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFsync measures what one durable small write costs on this
// machine, the unit cost of Tessera's sequencing: a write with O_SYNC to a
// new file, a rename and a directory fsync, as storage/posix/file_ops.go
// does for every bundle, tile and the tree state.
func BenchmarkFsync(b *testing.B) {
	dir := b.TempDir()
	data := make([]byte, 8192)
	for b.Loop() {
		tmp := filepath.Join(dir, "tmp")
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_SYNC, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			b.Fatal(err)
		}
		f.Close()
		if err := os.Rename(tmp, filepath.Join(dir, "file")); err != nil {
			b.Fatal(err)
		}
		d, err := os.Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		if err := d.Sync(); err != nil {
			b.Fatal(err)
		}
		d.Close()
	}
}
