package faults

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keytrans/kt/api/ktpb"
)

// TestDiskFull is issue 17 item 2 through the ktd binary, on a small tmpfs
// (root only; skipped where mounting is not possible): 8 callers enroll
// until the filesystem is full. ktd must not stay up refusing writes: it
// exits with status 1 (no panic), /healthz never answers 200 once a write
// was refused, and after space is freed a restart serves every
// acknowledged change.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dataDir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", dataDir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dataDir).Run() })
	args := flags(dataDir)
	p := startKtd(t, args)
	healthy(t, p, time.Minute)
	k := loadKeys(t, dataDir)
	dc := ktpb.NewDirectoryClient(dial(t, p.grpc))

	var mu sync.Mutex
	var acked []string
	var refused atomic.Bool
	var wrongHealth atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("full%dx%d@faults.example", w, i)
				if _, err := dc.Enroll(t.Context(), &ktpb.EnrollRequest{Change: k.enrollment(t, name)}); err != nil {
					refused.Store(true)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				mu.Lock()
				acked = append(acked, name)
				mu.Unlock()
			}
		})
	}
	// Once a write was refused, /healthz must never answer 200.
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if refused.Load() {
				if resp, err := http.Get("http://" + p.http + "/healthz"); err == nil {
					if resp.StatusCode == http.StatusOK {
						wrongHealth.Add(1)
					}
					resp.Body.Close()
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	var exitErr error
	var firstRefusal time.Time
	go func() {
		for !refused.Load() {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
		mu.Lock()
		firstRefusal = time.Now()
		mu.Unlock()
	}()
	select {
	case exitErr = <-p.exited:
		p.exited <- exitErr
	case <-time.After(90 * time.Second):
		close(stop)
		wg.Wait()
		t.Fatalf("ktd still running 90s into the disk-full load (%d acknowledged)\n%s", len(acked), p.logs)
	}
	exitAt := time.Now()
	close(stop)
	wg.Wait()
	mu.Lock()
	if !firstRefusal.IsZero() && exitAt.Sub(firstRefusal) > 10*time.Second {
		t.Errorf("ktd exited %v after refusing a write, want within 10s", exitAt.Sub(firstRefusal))
	}
	mu.Unlock()
	logs := p.logs.String()
	if strings.Contains(logs, "panic:") {
		t.Fatalf("ktd panicked on a full disk (%v)\n%s", exitErr, logs)
	}
	var ee *exec.ExitError
	if !errors.As(exitErr, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("ktd exited with %v, want status 1\n%s", exitErr, logs)
	}
	if !strings.Contains(logs, "no space left on device") {
		t.Errorf("ktd's error does not say the disk is full:\n%s", logs)
	}
	// A refused Enroll may precede the exit by a moment; the count is of
	// 200 answers after a refusal, which happen only if health ignores it.
	if n := wrongHealth.Load(); n > 0 {
		t.Errorf("/healthz answered 200 %d times after writes were refused", n)
	}
	for line := range strings.Lines(logs) {
		if strings.Contains(line, `msg="ktd stopped"`) {
			t.Logf("ktd said: %.600s", strings.TrimSpace(line))
		}
	}
	t.Logf("%d enrollments acknowledged before the disk filled", len(acked))

	if out, err := exec.Command("mount", "-o", "remount,size=64m", dataDir).CombinedOutput(); err != nil {
		t.Fatalf("growing the tmpfs: %v: %s", err, out)
	}
	p = startKtd(t, args)
	healthy(t, p, time.Minute)
	dc = ktpb.NewDirectoryClient(dial(t, p.grpc))
	params := clientParams(t, dc)
	deadline := time.Now().Add(30 * time.Second)
	for _, name := range acked {
		for {
			ok, err := lookupRegistered(t, params, dc, name)
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("acknowledged enrollment of %s lost (%v)", name, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	enrollMany(t, k, dc, "afterfree", 5, 2)
	p.stop(t)
}
