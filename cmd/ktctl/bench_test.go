package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net/http/httptest"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/log/logapi"
	"github.com/keytrans/kt/smt"
)

// benchLog is a valid log of n change records (one per index, enrollments,
// signed), with an epoch record after every 1000, served over the read API
// by an in-memory log.
type benchLog struct {
	url, vkey, recovery string
	size                uint64
	index               [32]byte // an index with a record
}

func newBenchLog(b *testing.B, n int) *benchLog {
	b.Helper()
	const origin = "bench.example/kt"
	skey, vkey, _ := note.GenerateKey(rand.Reader, origin)
	s, _ := note.NewSigner(skey)
	rpub, _, _ := ed25519.GenerateKey(nil)
	_, dk, _ := ed25519.GenerateKey(nil)
	auth := []api.Authorizer{{Role: api.RoleDevice, Digest: api.KeyDigest([32]byte(dk.Public().(ed25519.PublicKey)))}}
	m, _ := smt.New(nil)
	entries := [][]byte{epochRec(0, 0, [32]byte{}, 0)}
	var epoch uint64 = 1
	var pending []smt.Update
	bl := &benchLog{vkey: vkey, recovery: base64.StdEncoding.EncodeToString(rpub)}
	for i := range n {
		r := &api.ChangeRecord{Version: 1, Kind: api.AuthEnroll, Authorizers: auth}
		binary.BigEndian.PutUint64(r.Index[:], uint64(i)*0x9e3779b97f4a7c15)
		r.Index[31] = byte(i)
		r.Sign(origin, dk)
		e, _ := r.MarshalBinary()
		entries = append(entries, e)
		pending = append(pending, smt.Update{Key: r.Index, Value: api.LeafHash(e)})
		if i == n/2 {
			bl.index = r.Index
		}
		if len(pending) == 1000 || i == n-1 {
			root, err := m.Apply(pending)
			if err != nil {
				b.Fatal(err)
			}
			pending = pending[:0]
			entries = append(entries, epochRec(epoch, uint64(len(entries)), root, m.Len()))
			epoch++
		}
	}
	l := conformance.NewMemoryLog(origin, s)
	if _, err := l.Append(context.Background(), entries); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(logapi.NewHandler(l))
	b.Cleanup(srv.Close)
	bl.url, bl.size = srv.URL, uint64(len(entries))
	return bl
}

// BenchmarkHistoryScan measures `ktctl history --index` over the read API
// on loopback: the whole log fetched and re-hashed to the checkpoint's
// root, the index's records checked. Reported as entries/s.
func BenchmarkHistoryScan(b *testing.B) {
	bl := newBenchLog(b, 100_000)
	idx := make([]byte, 64)
	const hexdigits = "0123456789abcdef"
	for i, c := range bl.index {
		idx[2*i], idx[2*i+1] = hexdigits[c>>4], hexdigits[c&15]
	}
	b.ResetTimer()
	for b.Loop() {
		code := run(context.Background(), []string{"history", "--index", string(idx), "--log-url", bl.url, "--log-key", bl.vkey, "--recovery-key", bl.recovery}, io.Discard, io.Discard)
		if code != exitOK {
			b.Fatalf("exit %d", code)
		}
	}
	b.ReportMetric(float64(bl.size)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// epochRec is an epoch record.
func epochRec(epoch, logSize uint64, root [32]byte, mapSize uint64) []byte {
	b, _ := (&api.EpochRecord{Epoch: epoch, Timestamp: 1e12 + epoch, LogSize: logSize, MapRoot: root, MapSize: mapSize}).MarshalBinary()
	return b
}

// BenchmarkVerify measures `ktctl verify` over the read API on loopback:
// every entry fetched and replayed by the auditor's engine (signatures in
// batches, map roots recomputed at each epoch), the checkpoint's root
// checked. Reported as entries/s.
func BenchmarkVerify(b *testing.B) {
	bl := newBenchLog(b, 100_000)
	b.ResetTimer()
	for b.Loop() {
		code := run(context.Background(), []string{"verify", "--quiet", "--log-url", bl.url, "--log-key", bl.vkey, "--recovery-key", bl.recovery}, io.Discard, io.Discard)
		if code != exitOK {
			b.Fatalf("exit %d", code)
		}
	}
	b.ReportMetric(float64(bl.size)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}
