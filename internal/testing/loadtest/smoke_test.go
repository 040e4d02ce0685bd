package loadtest

import (
	"context"
	"testing"
	"time"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
)

// TestSmoke runs the benchmarks' machinery once at a tiny size, so that
// `go test` without -bench checks it still works: enroll through gRPC, a
// chained update per handle, then a lookup, verified by the client library,
// that shows the new version once the watcher sees an epoch covering it.
func TestSmoke(t *testing.T) {
	s, err := startServer(envConfig{conns: 2, epochInterval: 20 * time.Millisecond, ckptInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	hs, _, err := s.enrollAll("smoke", 4, 4)
	if err != nil {
		t.Fatal(err)
	}
	queues, err := buildUpdates(hs, 8, 2) // two chained updates per handle
	if err != nil {
		t.Fatal(err)
	}
	if len(queues) != 2 || len(queues[0])+len(queues[1]) != 8 {
		t.Fatalf("queues: got %d queues, want 2 holding 8 updates", len(queues))
	}
	w := s.watch(5 * time.Millisecond)
	defer w.close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last uint64
	for g, q := range queues {
		for _, u := range q {
			resp, err := s.client(g).Change(ctx, u.req)
			if err != nil {
				t.Fatalf("Change %s to version %d: %v", u.h.name, u.version, err)
			}
			last = max(last, resp.GetLogIndices()[0])
		}
	}
	if err := w.waitBeyond(ctx, last); err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		resp, err := s.client(0).Lookup(ctx, &ktpb.LookupRequest{Handle: h.name})
		if err != nil {
			t.Fatalf("Lookup %s: %v", h.name, err)
		}
		res, err := client.VerifyLookup(s.params, nil, h.name, resp, time.Now(), nil)
		if err != nil {
			t.Fatalf("VerifyLookup %s: %v", h.name, err)
		}
		if got, want := res.Record.Version, uint64(3); got != want {
			t.Errorf("%s: version %d, want %d", h.name, got, want)
		}
	}
	// A replayed change is refused: the chain is real.
	if _, err := s.client(0).Change(ctx, queues[0][0].req); err == nil {
		t.Error("a replayed change was accepted")
	}

	// The bulk path the large benchmarks use: its handles look up with
	// verified proofs, like the enrolled ones.
	if _, err := s.bulkLoad(50, t.Logf); err != nil {
		t.Fatalf("bulk load: %v", err)
	}
	if err := w.waitBeyond(ctx, last+50); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 49} {
		resp, err := s.client(0).Lookup(ctx, &ktpb.LookupRequest{Handle: bulkName(i)})
		if err != nil {
			t.Fatalf("Lookup %s: %v", bulkName(i), err)
		}
		res, err := client.VerifyLookup(s.params, nil, bulkName(i), resp, time.Now(), nil)
		if err != nil {
			t.Fatalf("VerifyLookup %s: %v", bulkName(i), err)
		}
		if !res.Registered || res.Record.Version != 1 {
			t.Errorf("%s: registered %v, version %d", bulkName(i), res.Registered, res.Record.Version)
		}
	}
}

func TestPercentile(t *testing.T) {
	ds := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 5}, {99, 10}, {10, 1}, {100, 10}} {
		if got := percentile(ds, tc.p); got != tc.want {
			t.Errorf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
		}
	}
}
