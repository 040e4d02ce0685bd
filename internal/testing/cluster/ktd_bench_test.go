package cluster

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tpb "github.com/google/trillian"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/trilliantest"
	"github.com/keytrans/kt/log/trillian"
)

// BenchmarkKtdTopologies measures ktd binaries through gRPC on loopback,
// on the two topologies:
//
//   - embedded: one ktd on the embedded default (Tessera POSIX), which is
//     both the writer and the instance lookups go to;
//   - replicated: two ktd in the replicated mode on the Trillian cluster
//     (two log servers, two signers with etcd election, MariaDB), changes
//     sent to the writer, lookups and visibility measured at the reader.
//
// Both use ktd's default 1 s epoch interval. b.N enrollments from 64
// concurrent callers (each request built and signed before the timer, from
// a verified absence lookup); reported:
//
//   - updates/s: acknowledged enrollments per second;
//
//   - visible-p50-ms, visible-p99-ms: from submitting an enrollment until
//     a lookup at the lookup instance returns it (every 10th sampled,
//     polled every 10 ms after the acknowledgement);
//
//   - lookups/s: 20,000 lookups of enrolled handles with the full proof
//     bundle from 8 concurrent callers at the lookup instance (not
//     verified by the caller: the server's rate); writer-lookups/s the
//     same at the writer, for the replicated topology.
//
//     go test -run '^$' -bench KtdTopologies -benchtime 2000x ./internal/testing/cluster
//
// Everything (ktd, Trillian, MariaDB, the load) shares the machine.
func BenchmarkKtdTopologies(b *testing.B) {
	dir := b.TempDir()
	bin := filepath.Join(dir, "ktd")
	if out, err := exec.Command("go", "build", "-o", bin, "../../../cmd/ktd").CombinedOutput(); err != nil {
		b.Fatalf("building ktd: %v\n%s", err, out)
	}
	common := []string{
		"--grpc-listen=127.0.0.1:0", "--http-listen=127.0.0.1:0", "--operator-listen=", "--metrics-listen=",
		"--log-origin=example.com/kt-bench", "--enrollment-mode=open", "--limits-requests-per-second=-1",
	}
	b.Run("topology=embedded", func(b *testing.B) {
		k := startKtdBinary(b, bin, "ktd", filepath.Join(b.TempDir(), "data"), common)
		benchmarkKtd(b, k, k)
	})
	b.Run("topology=replicated", func(b *testing.B) {
		c := trilliantest.StartCluster(b, trilliantest.ClusterOptions{
			Options: trilliantest.Options{SequencerInterval: 20 * time.Millisecond},
			Servers: 2,
			Signers: 2,
		})
		conn, err := trillian.Dial(c.ServerAddrs())
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		treeID, err := trillian.CreateTree(context.Background(), tpb.NewTrillianAdminClient(conn), tpb.NewTrillianLogClient(conn), "kt-bench")
		if err != nil {
			b.Fatal(err)
		}
		d := b.TempDir()
		keys := filepath.Join(d, "keys")
		args := append(append([]string{}, common...),
			"--log-backend=trillian",
			"--log-trillian-address="+strings.Join(c.ServerAddrs(), ","),
			fmt.Sprintf("--log-trillian-tree-id=%d", treeID),
			"--log-key-file="+filepath.Join(keys, "log.key"),
			"--directory-vrf-key-file="+filepath.Join(keys, "vrf.key"),
			"--directory-recovery-key-file="+filepath.Join(keys, "recovery.key"),
			"--cluster-dsn="+c.DSN,
		)
		w := startReplicaKtd(b, bin, "ktd-1", filepath.Join(d, "data-1"), args)
		w.awaitRole(b, "writer", time.Minute)
		r := startReplicaKtd(b, bin, "ktd-2", filepath.Join(d, "data-2"), args)
		r.awaitRole(b, "reader", time.Minute)
		benchmarkKtd(b, w, r)
	})
}

func benchmarkKtd(b *testing.B, writer, reader *replicaKtd) {
	ctx := context.Background()
	dial := func(k *replicaKtd) ktpb.DirectoryClient {
		cc, err := grpc.NewClient(k.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		return ktpb.NewDirectoryClient(cc)
	}
	wc, rc := dial(writer), dial(reader)
	pb, err := wc.GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		b.Fatal(err)
	}
	params, err := client.NewParams(pb, client.Options{InsecureNoWitnesses: true, MaxAge: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	// Wait for an epoch at the reader.
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if _, err := rc.GetEpoch(ctx, &ktpb.GetEpochRequest{}); err == nil {
			break
		}
		if time.Since(start) > time.Minute {
			b.Fatal("no epoch at the lookup instance")
		}
	}
	n := b.N
	handles := make([]string, n)
	reqs := make([]*ktpb.EnrollRequest, n)
	run := func(workers int, f func(i int)) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
					f(i)
				}
			}()
		}
		wg.Wait()
	}
	tag := make([]byte, 4)
	rand.Read(tag)
	run(8, func(i int) {
		h := fmt.Sprintf("bench-%x-%d@example.com", tag, i)
		resp, err := wc.Lookup(ctx, &ktpb.LookupRequest{Handle: h})
		if err != nil {
			b.Error(err)
			return
		}
		res, err := client.VerifyLookup(params, nil, h, resp, time.Now(), nil)
		if err != nil {
			b.Error(err)
			return
		}
		dev := newDevice(nil)
		_, sk, _ := ed25519.GenerateKey(nil)
		dev.SigningKey = [32]byte(sk.Public().(ed25519.PublicKey))
		set := &api.DeviceSet{Devices: []api.Device{dev}}
		rand.Read(set.AccountID[:])
		hc, err := client.NewChange(params.Origin, res, set, api.AuthEnroll, sk)
		if err != nil {
			b.Error(err)
			return
		}
		handles[i], reqs[i] = res.Handle, &ktpb.EnrollRequest{Change: hc}
	})
	if b.Failed() {
		return
	}

	var mu sync.Mutex
	var visible []time.Duration
	b.ResetTimer()
	start := time.Now()
	run(64, func(i int) {
		t0 := time.Now()
		if _, err := wc.Enroll(ctx, reqs[i]); err != nil {
			b.Errorf("Enroll %s: %v", handles[i], err)
			return
		}
		if i%10 != 0 {
			return
		}
		for {
			resp, err := rc.Lookup(ctx, &ktpb.LookupRequest{Handle: handles[i]})
			if err == nil && len(resp.GetChangeRecord()) > 0 {
				mu.Lock()
				visible = append(visible, time.Since(t0))
				mu.Unlock()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(n)/elapsed.Seconds(), "updates/s")
	sort.Slice(visible, func(i, j int) bool { return visible[i] < visible[j] })
	if len(visible) > 0 {
		b.ReportMetric(float64(visible[len(visible)/2].Milliseconds()), "visible-p50-ms")
		b.ReportMetric(float64(visible[len(visible)*99/100].Milliseconds()), "visible-p99-ms")
	}
	const lookups = 20000
	lookupRate := func(dc ktpb.DirectoryClient) float64 {
		var done atomic.Int64
		ls := time.Now()
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := w; done.Add(1) <= lookups; j += 8 {
					if _, err := dc.Lookup(ctx, &ktpb.LookupRequest{Handle: handles[j%n]}); err != nil {
						b.Errorf("Lookup: %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		return lookups / time.Since(ls).Seconds()
	}
	b.ReportMetric(lookupRate(rc), "lookups/s")
	if writer != reader {
		b.ReportMetric(lookupRate(wc), "writer-lookups/s")
	}
	b.ReportMetric(0, "ns/op")
}
