package cluster

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/internal/testing/trilliantest"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/posix"
	"github.com/keytrans/kt/log/trillian"
	"github.com/keytrans/kt/vrf"
)

// BenchmarkDirectory compares the directory on the embedded default with
// the directory on the Trillian cluster (two servers, two signers with etcd
// election), in-process (no gRPC; internal/testing/loadtest measures through gRPC,
// on the embedded default only). b.N enrollments, each a durable change,
// from 256 concurrent callers; reported:
//
//   - updates/s: acknowledged enrollments per second;
//
//   - ack-p50-ms, ack-p99-ms: from submitting an enrollment to its
//     acknowledgement (durable in the log);
//
//   - visible-p50-ms, visible-p99-ms: from submitting an enrollment until
//     a lookup returns it (every 20th enrollment is sampled; lookups poll
//     every 10 ms after the acknowledgement), with the directory's
//     default 1 s epoch interval;
//
//   - lookups/s: lookups of enrolled handles with the full proof bundle, 8
//     concurrent callers, after the enrollments.
//
//     go test -run '^$' -bench Directory -benchtime 3000x ./internal/testing/cluster/
//
// Request building (VRF, signatures) happens before the timer starts.
func BenchmarkDirectory(b *testing.B) {
	b.Run("backend=posix", func(b *testing.B) {
		benchmarkDirectory(b, func(b *testing.B, signer note.Signer) log.Log {
			l, err := posix.New(context.Background(), posix.Config{
				Dir: filepath.Join(b.TempDir(), "log"), Origin: origin, Signer: signer,
			})
			if err != nil {
				b.Fatal(err)
			}
			return l
		})
	})
	b.Run("backend=trillian-cluster", func(b *testing.B) {
		benchmarkDirectory(b, func(b *testing.B, signer note.Signer) log.Log {
			c := trilliantest.StartCluster(b, trilliantest.ClusterOptions{
				Options: trilliantest.Options{SequencerInterval: 20 * time.Millisecond},
			})
			conn, err := trillian.Dial(c.ServerAddrs())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { conn.Close() })
			l, err := trillian.New(context.Background(), trillian.Config{
				Conn: conn, CreateTree: true, Origin: origin, Signer: signer,
				CheckpointInterval: 100 * time.Millisecond,
				MaxPollInterval:    10 * time.Millisecond,
				Logger:             slog.New(slog.DiscardHandler),
			})
			if err != nil {
				b.Fatal(err)
			}
			return l
		})
	})
}

func benchmarkDirectory(b *testing.B, open func(*testing.B, note.Signer) log.Log) {
	ctx := context.Background()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		b.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	vk, err := vrf.GenerateKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	recovery, _, _ := ed25519.GenerateKey(nil)
	l := open(b, signer)
	d, err := directory.New(ctx, directory.Config{
		Log: l, Origin: origin, LogVerifierKey: vkey, VRFKey: vk,
		RecoveryKey: recovery, Credentials: directory.OpenEnrollment{},
		StateDir: filepath.Join(b.TempDir(), "state"),
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = d.Close(ctx)
		_ = l.Close(ctx)
	}()

	// Requests, built before the timer.
	names := make([]string, b.N)
	reqs := make([]*ktpb.EnrollRequest, b.N)
	for i := range reqs {
		names[i] = fmt.Sprintf("user%d@bench.example", i)
		reqs[i] = enrollment(b, vk, names[i])
	}

	const callers, sampleEvery = 256, 20
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		mu      sync.Mutex
		visible []time.Duration // submission to visible in a lookup
		ackLat  []time.Duration // submission to acknowledgement
		samples sync.WaitGroup
	)
	b.ResetTimer()
	start := time.Now()
	for range callers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				submitted := time.Now()
				if _, err := d.Enroll(ctx, reqs[i]); err != nil {
					b.Errorf("Enroll %s: %v", names[i], err)
					return
				}
				acked := time.Now()
				mu.Lock()
				ackLat = append(ackLat, acked.Sub(submitted))
				mu.Unlock()
				if i%sampleEvery != 0 {
					continue
				}
				samples.Go(func() {
					for time.Since(acked) < time.Minute {
						r, err := d.Lookup(ctx, &ktpb.LookupRequest{Handle: names[i]})
						if err == nil && len(r.ChangeRecord) > 0 {
							mu.Lock()
							visible = append(visible, time.Since(submitted))
							mu.Unlock()
							return
						}
						time.Sleep(10 * time.Millisecond)
					}
					b.Errorf("%s not visible a minute after its enrollment", names[i])
				})
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	samples.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "updates/s")
	report := func(ds []time.Duration, name string) {
		if n := len(ds); n > 0 {
			sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
			b.ReportMetric(float64(ds[n/2].Microseconds())/1000, name+"-p50-ms")
			b.ReportMetric(float64(ds[n*99/100].Microseconds())/1000, name+"-p99-ms")
		}
	}
	report(ackLat, "ack")
	report(visible, "visible")

	// Lookups of enrolled handles, once an epoch covers all of them.
	for deadline := time.Now().Add(time.Minute); ; {
		ep, err := d.GetEpoch(ctx, &ktpb.GetEpochRequest{})
		if err == nil {
			if rec, err := api.ParseEpochRecord(ep.EpochRecord); err == nil && rec.MapSize >= uint64(b.N) {
				break
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("no epoch covers the %d enrollments a minute after the last", b.N)
		}
		time.Sleep(20 * time.Millisecond)
	}
	const lookups, lookupCallers = 20000, 8
	next.Store(0)
	lstart := time.Now()
	for range lookupCallers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= lookups {
					return
				}
				r, err := d.Lookup(ctx, &ktpb.LookupRequest{Handle: names[i%b.N]})
				if err != nil || len(r.ChangeRecord) == 0 {
					b.Errorf("Lookup %s: %v", names[i%b.N], err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(lookups/time.Since(lstart).Seconds(), "lookups/s")
	b.ReportMetric(0, "ns/op") // ns/op of the enrollments alone would mislead
}

// enrollment builds an enrollment of a handle with one device.
func enrollment(b *testing.B, vk *vrf.PrivateKey, name string) *ktpb.EnrollRequest {
	b.Helper()
	h, err := api.NormalizeHandle(name)
	if err != nil {
		b.Fatal(err)
	}
	index, _ := vk.Prove(api.VRFInput(h))
	d := testkit.NewDevice()
	var account [16]byte
	rand.Read(account[:])
	hc, err := client.NewChange(origin, &client.LookupResult{Handle: h, Index: index}, testkit.Set(account, d), api.AuthEnroll, d.Sign)
	if err != nil {
		b.Fatal(err)
	}
	return &ktpb.EnrollRequest{Change: hc}
}
