package smt

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Benchmarks at directory scale. The big maps are built once per benchmark
// process and shared; building 10M keys takes a few seconds and about 1 GiB.
//
//	go test -run '^$' -bench . -benchtime 2s ./smt

var sizes = []struct {
	name string
	n    int
}{{"1M", 1 << 20}, {"10M", 10_000_000}}

var (
	bigMu   sync.Mutex
	bigMaps = map[int]*Snapshot{}
)

// fastLeaves makes n random leaves quickly (ChaCha8, no per-key calls into
// crypto/rand).
func fastLeaves(n int, seed byte) []Leaf {
	r := rand.NewChaCha8([32]byte{seed})
	ls := make([]Leaf, n)
	for i := range ls {
		for j := 0; j < HashSize; j += 8 {
			x := r.Uint64()
			for k := range 8 {
				ls[i].Key[j+k] = byte(x >> (8 * k))
			}
		}
		ls[i].Value = ls[i].Key // any value will do; saves generating another
		ls[i].Value[0] ^= 0xff
	}
	return ls
}

func bigMap(b *testing.B, n int) (*Snapshot, [][HashSize]byte) {
	b.Helper()
	bigMu.Lock()
	defer bigMu.Unlock()
	s, ok := bigMaps[n]
	if !ok {
		start := time.Now()
		m, err := New(fastLeaves(n, 1))
		if err != nil {
			b.Fatal(err)
		}
		s = m.Snapshot()
		bigMaps[n] = s
		b.Logf("built %d leaves in %v", n, time.Since(start))
	}
	// Present keys to probe: regenerate the first few.
	probe := fastLeaves(4096, 1)
	keys := make([][HashSize]byte, len(probe))
	for i := range probe {
		keys[i] = probe[i].Key
	}
	return s, keys
}

func BenchmarkProve(b *testing.B) {
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			s, keys := bigMap(b, sz.n)
			bytes := 0
			i := 0
			for b.Loop() {
				p, v := s.Prove(keys[i%len(keys)])
				if v == nil {
					b.Fatal("present key proved absent")
				}
				bytes += p.Size()
				i++
			}
			b.ReportMetric(float64(bytes)/float64(i), "proof-bytes")
		})
	}
}

func BenchmarkProveAbsent(b *testing.B) {
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			s, _ := bigMap(b, sz.n)
			absent := fastLeaves(4096, 2)
			bytes := 0
			i := 0
			for b.Loop() {
				p, v := s.Prove(absent[i%len(absent)].Key)
				if v != nil {
					b.Fatal("absent key proved present")
				}
				bytes += p.Size()
				i++
			}
			b.ReportMetric(float64(bytes)/float64(i), "proof-bytes")
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	s, keys := bigMap(b, 10_000_000)
	root := s.Root()
	type item struct {
		key [HashSize]byte
		val *[HashSize]byte
		enc []byte
	}
	items := make([]item, 256)
	for i := range items {
		p, v := s.Prove(keys[i])
		enc, err := p.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		items[i] = item{keys[i], v, enc}
	}
	i := 0
	for b.Loop() {
		it := &items[i%len(items)]
		p, err := ParseProof(it.enc)
		if err != nil {
			b.Fatal(err)
		}
		if err := Verify(root, it.key, it.val, p); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkApply5000At10M applies one epoch of 5,000 updates to the same
// 10M-leaf version each iteration (the map is persistent, so the base is
// never modified).
func BenchmarkApply5000At10M(b *testing.B) {
	s, keys := bigMap(b, 10_000_000)
	for _, mix := range []struct {
		name      string
		overwrite int // out of 5000
	}{{"inserts", 0}, {"half-overwrites", 2500}} {
		b.Run(mix.name, func(b *testing.B) {
			fresh := fastLeaves(5000, 3)
			u := make([]Update, 5000)
			for i := range u {
				u[i] = Update(fresh[i])
				if i < mix.overwrite {
					u[i].Key = keys[i]
				}
			}
			for b.Loop() {
				m := &Map{}
				m.cur.Store(s)
				if _, err := m.Apply(u); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBuild builds a map from unsorted leaves (a rebuild from the log
// or from storage) and reports the rate and, for the largest size, the heap
// the map holds once built.
func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{100_000, 1 << 20, 10_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			ls := fastLeaves(n, 4)
			var keep *Map
			for b.Loop() {
				m, err := New(ls) // ls stays a valid set: New only reorders it
				if err != nil {
					b.Fatal(err)
				}
				keep = m
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "keys/s")
			ls = nil
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			runtime.KeepAlive(keep)
			// HeapInuse also holds whatever else the process keeps (the
			// shared big maps of other benchmarks, if any ran before).
			b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
		})
	}
}

// BenchmarkHeap10M reports the heap held by a 10M-leaf map alone: the heap
// in use after building it, minus the heap in use before generating its
// input.
func BenchmarkHeap10M(b *testing.B) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var m *Map
	for b.Loop() {
		var err error
		m, err = New(fastLeaves(10_000_000, 5))
		if err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(m)
	b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/(1<<20), "map-heap-MiB")
	b.ReportMetric(float64(m.Len()), "leaves")
}
