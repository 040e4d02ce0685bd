package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keytrans/kt/api/ktpb"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// restore copies a backup into an empty data directory the way
// docs/operations.md (Backups) says: log/, state/ and the key files.
func restore(t *testing.T, backup, dataDir string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", backup+"/.", dataDir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
}

// TestBackupWhileRunning is issue 17 item 7 through the ktd binary: `ktd
// backup` while 8 callers enroll handles; the backup, restored into a new
// data directory, starts (the log's start-up checks pass: it is
// consistent), serves every enrollment acknowledged before the backup
// began, and takes new changes.
func TestBackupWhileRunning(t *testing.T) {
	dataDir := t.TempDir()
	op := freeAddr(t)
	args := flags(dataDir, "--operator-listen", op)
	p := startKtd(t, args)
	healthy(t, p, time.Minute)
	k := loadKeys(t, dataDir)
	dc := ktpb.NewDirectoryClient(dial(t, p.grpc))
	before := enrollMany(t, k, dc, "before", 30, 4)

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				dc.Enroll(ctx, &ktpb.EnrollRequest{Change: k.enrollment(t, fmt.Sprintf("load%dx%d@faults.example", w, i))})
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	backup := filepath.Join(t.TempDir(), "b1")
	out, err := exec.Command(ktdBin, "backup", "--data-dir", dataDir, "--operator-listen", op, backup).CombinedOutput()
	cancel()
	wg.Wait()
	if err != nil {
		t.Fatalf("ktd backup: %v\n%s", err, out)
	}
	t.Logf("ktd backup: %s", strings.TrimSpace(string(out)))
	for _, f := range []string{"log/checkpoint", "state", "log.key", "vrf.key"} {
		if _, err := os.Stat(filepath.Join(backup, f)); err != nil {
			t.Errorf("backup lacks %s: %v", f, err)
		}
	}
	p.stop(t)

	restored := t.TempDir()
	restore(t, backup, restored)
	p = startKtd(t, flags(restored))
	healthy(t, p, time.Minute)
	dc = ktpb.NewDirectoryClient(dial(t, p.grpc))
	params := clientParams(t, dc)
	for _, name := range before {
		if ok, err := lookupRegistered(t, params, dc, name); !ok {
			t.Fatalf("%s, enrolled before the backup, is not in the restored directory (%v)", name, err)
		}
	}
	enrollMany(t, k, dc, "afterrestore", 5, 2)
	p.stop(t)
}
