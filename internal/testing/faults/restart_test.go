package faults

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/keytrans/kt/api/ktpb"
)

// startupWait is directory.DefaultStartupWait, the wait the embedded
// backend no longer makes for an append in flight at a crash. Waiting
// that long is the defect this test catches; how fast ktd serves again
// (issue 17's target: within 3 s) is a figure it logs for
// docs/benchmarks.md, not a timed assertion.
const startupWait = 30 * time.Second

// healthy polls /healthz until it answers 200 and returns when it did.
func healthy(t *testing.T, p *proc, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get("http://" + p.http + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Now()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz not 200 within %v of the start", within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRestartAfterKillUnderLoad is issue 17 item 4 through the ktd binary:
// ktd is killed (SIGKILL) while 16 callers enroll handles as fast as it
// takes them, three times in a row; each restart must serve (/healthz 200:
// a checkpoint and an epoch) within 3s of the process start, and every
// enrollment ktd acknowledged before any kill must be in the served map.
func TestRestartAfterKillUnderLoad(t *testing.T) {
	dataDir := t.TempDir()
	args := flags(dataDir)
	p := startKtd(t, args)
	healthy(t, p, time.Minute)
	k := loadKeys(t, dataDir)

	var acked []string
	for round := range 3 {
		cc := dial(t, p.grpc)
		dc := ktpb.NewDirectoryClient(cc)
		ctx, cancel := context.WithCancel(t.Context())
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					name := fmt.Sprintf("r%dw%di%d@faults.example", round, w, i)
					if _, err := dc.Enroll(ctx, &ktpb.EnrollRequest{Change: k.enrollment(t, name)}); err == nil {
						mu.Lock()
						acked = append(acked, name)
						mu.Unlock()
					}
				}
			})
		}
		time.Sleep(1500 * time.Millisecond)
		p.kill(t) // in the middle of appends and epochs
		cancel()
		wg.Wait()
		cc.Close()

		p = startKtd(t, args)
		up := healthy(t, p, time.Minute)
		took := up.Sub(p.start)
		t.Logf("round %d: %d enrollments acknowledged so far; serving %v after the restart (ktd's serving line at %v)", round, len(acked), took.Round(time.Millisecond), p.ready.Sub(p.start).Round(time.Millisecond))
		if took >= startupWait {
			t.Errorf("round %d: serving %v after the restart: ktd waited for the append in flight (%v), which the embedded log can never publish", round, took, startupWait)
		}
	}

	// Every acknowledged change is there, in the verified map.
	cc := dial(t, p.grpc)
	dc := ktpb.NewDirectoryClient(cc)
	params := clientParams(t, dc)
	deadline := time.Now().Add(30 * time.Second)
	for _, name := range acked {
		for {
			ok, err := lookupRegistered(t, params, dc, name)
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("acknowledged enrollment of %s is not in the served map (%v)", name, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("all %d acknowledged enrollments verified", len(acked))
	p.stop(t)
}
