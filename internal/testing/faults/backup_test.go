package faults

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/internal/testing/testwitness"
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

// TestRestoreBehindWitnesses is issue 17 item 7's hazard: a data directory
// restored from a backup older than what its witness cosigned. ktd must
// detect it at start (the witness answers 409 with its larger size) and
// refuse to start, telling the operator what to do, without signing any
// checkpoint: the restored checkpoint file is unchanged and the witness
// never sees another checkpoint. The control: the up-to-date data
// directory starts with the same witness.
func TestRestoreBehindWitnesses(t *testing.T) {
	dataDir := t.TempDir()
	skey, vkey, err := note.GenerateKey(rand.Reader, "localhost/kt")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "log.key"), []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wit, err := testwitness.New("witness.faults.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := wit.AddLog("localhost/kt", vkey); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(wit)
	t.Cleanup(srv.Close)
	policy := filepath.Join(t.TempDir(), "witness.policy")
	if err := os.WriteFile(policy, fmt.Appendf(nil, "witness w0 %s %s\nquorum w0\n", wit.VerifierKey(), srv.URL), 0o644); err != nil {
		t.Fatal(err)
	}

	op := freeAddr(t)
	args := flags(dataDir, "--operator-listen", op, "--witness-policy-file", policy)
	p := startKtd(t, args)
	healthy(t, p, time.Minute)
	k := loadKeys(t, dataDir)
	cc := dial(t, p.grpc)
	dc := ktpb.NewDirectoryClient(cc)
	enrollMany(t, k, dc, "old", 10, 2)
	backup := filepath.Join(t.TempDir(), "b1")
	if out, err := exec.Command(ktdBin, "backup", "--data-dir", dataDir, "--operator-listen", op, backup).CombinedOutput(); err != nil {
		t.Fatalf("ktd backup: %v\n%s", err, out)
	}
	backupSize, _ := k.fileCheckpoint(t, backup)
	enrollMany(t, k, dc, "new", 10, 2)
	_, size, _ := k.checkpoint(t, ktpb.NewLogClient(cc))
	k.waitSize(t, ktpb.NewLogClient(cc), size)
	p.stop(t)
	witSize, _ := wit.Size("localhost/kt")
	if witSize <= backupSize {
		t.Fatalf("witness at size %d, not beyond the backup's %d", witSize, backupSize)
	}

	restored := t.TempDir()
	restore(t, backup, restored)
	before, err := os.ReadFile(filepath.Join(restored, "log", "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	requests := wit.Requests()
	p, serving, exitErr := launch(t, flags(restored, "--witness-policy-file", policy))
	if serving {
		t.Fatalf("ktd served a data directory restored at size %d, behind its witness's %d", backupSize, witSize)
	}
	var ee *exec.ExitError
	if !errors.As(exitErr, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("ktd exited with %v, want status 1\n%s", exitErr, p.logs)
	}
	logs := p.logs.String()
	for _, want := range []string{"behind what its witnesses cosigned", "restore a backup", "start a new log"} {
		if !strings.Contains(logs, want) {
			t.Errorf("ktd's error lacks %q:\n%s", want, logs)
		}
	}
	for line := range strings.Lines(logs) {
		if strings.Contains(line, "behind what its witnesses") {
			t.Logf("ktd said: %s", strings.TrimSpace(line))
			break
		}
	}
	after, _ := os.ReadFile(filepath.Join(restored, "log", "checkpoint"))
	if !bytes.Equal(before, after) {
		t.Errorf("the restored directory's checkpoint changed: a checkpoint was signed\nbefore %s\nafter %s", before, after)
	}
	if s, _ := wit.Size("localhost/kt"); s != witSize {
		t.Errorf("the witness moved from size %d to %d", witSize, s)
	}
	t.Logf("restored at %d behind the witness's %d: refused (%d requests to the witness)", backupSize, witSize, wit.Requests()-requests)

	// Control: the data directory that is not behind starts.
	p = startKtd(t, args)
	healthy(t, p, time.Minute)
	p.stop(t)
}
