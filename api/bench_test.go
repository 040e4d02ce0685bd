package api

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"syscall"
	"testing"
	"time"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

func BenchmarkParseChangeRecord(b *testing.B) {
	entry := goldenCases()[1].data // change-device, 2 authorizers
	b.SetBytes(int64(len(entry)))
	for b.Loop() {
		if _, err := ParseEntry(entry); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckChange(b *testing.B) {
	cs := goldenCases()
	r1, _ := ParseChangeRecord(cs[0].data)
	r2, _ := ParseChangeRecord(cs[1].data)
	st := r1.State(cs[0].data)
	_, rec := testKey("recovery")
	for b.Loop() {
		if err := CheckChange(testOrigin, st, r2, rec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNormalizeHandle(b *testing.B) {
	for _, in := range []string{"+1 (415) 555-0100", "Alice.Smith@Example.com", "jörg@bücher.example"} {
		b.Run(in, func(b *testing.B) {
			for b.Loop() {
				if _, err := NormalizeHandle(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyEd25519 compares the Ed25519 verifiers available here on
// one change statement: crypto/ed25519, VerifyEd25519 (curve25519-voi with
// crypto/ed25519's rules), voi with the key expanded beforehand (what a
// cache of expanded keys would give), and voi's batch verification per
// signature (cofactored, so not the rules the directory must apply; see
// docs/benchmarks.md).
//
// Besides the wall time, each reports the process's CPU time per
// operation (cpu-ns/op), which other jobs on a shared machine disturb much
// less; run with -cpu 1.
func BenchmarkVerifyEd25519(b *testing.B) {
	dev, k := testDevice("bench", false)
	r, _, _ := testRecord(testSet(dev), 1, [32]byte{}, AuthEnroll, k)
	msg := ChangeStatement(testOrigin, r)
	b.Run("crypto-ed25519", func(b *testing.B) {
		defer reportCPU(b)()
		for b.Loop() {
			if !ed25519.Verify(r.Signer[:], msg, r.Signature[:]) {
				b.Fatal("bad signature")
			}
		}
	})
	b.Run("VerifyEd25519", func(b *testing.B) {
		defer reportCPU(b)()
		for b.Loop() {
			if !VerifyEd25519(r.Signer, msg, r.Signature) {
				b.Fatal("bad signature")
			}
		}
	})
	b.Run("voi-expanded-key", func(b *testing.B) {
		ek, err := voi.NewExpandedPublicKey(voi.PublicKey(r.Signer[:]))
		if err != nil {
			b.Fatal(err)
		}
		defer reportCPU(b)()
		for b.Loop() {
			if !voi.VerifyExpandedWithOptions(ek, msg, r.Signature[:], stdLibRules) {
				b.Fatal("bad signature")
			}
		}
	})
	b.Run("voi-expand-key", func(b *testing.B) {
		defer reportCPU(b)()
		for b.Loop() {
			if _, err := voi.NewExpandedPublicKey(voi.PublicKey(r.Signer[:])); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, n := range []int{64, 256} {
		// Distinct keys, as in a commit group of distinct handles.
		keys := make([][32]byte, n)
		sigs := make([][64]byte, n)
		for i := range n {
			d, k := testDevice(fmt.Sprint("batch ", i), false)
			keys[i] = d.SigningKey
			sigs[i] = [64]byte(ed25519.Sign(k, msg))
		}
		b.Run(fmt.Sprintf("voi-batch-%d", n), func(b *testing.B) {
			cpu0 := processCPU()
			for b.Loop() {
				bv := voi.NewBatchVerifierWithCapacity(n)
				for i := range n {
					bv.Add(voi.PublicKey(keys[i][:]), msg, sigs[i][:])
				}
				if !bv.VerifyBatchOnly(rand.Reader) {
					b.Fatal("bad batch")
				}
			}
			b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N*n), "cpu-ns/signature")
		})
	}
}

// processCPU returns the user and system time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU starts measuring; the function it returns reports the CPU time
// per operation.
func reportCPU(b *testing.B) func() {
	cpu0 := processCPU()
	return func() { b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op") }
}
