package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	fmtlog "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/vrf"
)

// ktdBin and ktctlBin are the binaries the tests run, built once by
// TestMain.
var ktdBin, ktctlBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kt-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ktdBin = filepath.Join(dir, "ktd")
	args := []string{"build"}
	if raceEnabled {
		args = append(args, "-race")
	}
	ktctlBin = filepath.Join(dir, "ktctl")
	for _, b := range []struct{ out, pkg string }{{ktdBin, "ktd"}, {ktctlBin, "ktctl"}} {
		a := append(append([]string(nil), args...), "-o", b.out, "github.com/keytrans/kt/cmd/"+b.pkg)
		if out, err := exec.Command("go", a...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build ./cmd/%s: %v\n%s", b.pkg, err, out)
			os.RemoveAll(dir)
			os.Exit(2)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// flags are ktd's flags for a data directory: loopback listeners on free
// ports, fast epochs, open enrollment (the tests enroll many handles).
func flags(dataDir string, extra ...string) []string {
	return append([]string{
		"--data-dir", dataDir,
		"--grpc-listen", "127.0.0.1:0",
		"--http-listen", "127.0.0.1:0",
		"--operator-listen", "",
		"--metrics-listen", "",
		"--log-checkpoint-interval", "100ms",
		"--directory-epoch-interval", "100ms",
		"--directory-heartbeat-interval", "300ms",
		"--directory-cache-size", "8388608",
		"--enrollment-mode", "open",
		"--limits-requests-per-second=-1",
	}, extra...)
}

// proc is a running ktd.
type proc struct {
	d      *testkit.Daemon
	cmd    *exec.Cmd
	grpc   string
	http   string
	logs   *testkit.SyncBuffer
	exited chan error // receives Wait's result once
	start  time.Time
	ready  time.Time // when the serving line was seen
}

var (
	grpcAddrRE = regexp.MustCompile(`\bgrpc=(\S+)`)
	httpAddrRE = regexp.MustCompile(`\bhttp=http://(\S+)`)
)

// launch starts ktd and returns once it logs "ktd serving" (serving true)
// or exits (serving false, with the exit error in err).
func launch(t *testing.T, args []string) (p *proc, serving bool, err error) {
	t.Helper()
	d, ok, err := testkit.Launch(t, ktdBin, args, `msg="ktd serving"`)
	p = &proc{d: d, cmd: d.Cmd, logs: d.Logs, exited: d.Exited, start: d.Start, ready: d.Ready}
	if !ok {
		return p, false, err
	}
	g, h := grpcAddrRE.FindStringSubmatch(d.Line), httpAddrRE.FindStringSubmatch(d.Line)
	if g == nil || h == nil {
		t.Fatalf("serving line names no gRPC or HTTP address: %s", d.Line)
	}
	p.grpc, p.http = g[1], h[1]
	return p, true, nil
}

// startKtd launches ktd and fails the test unless it serves.
func startKtd(t *testing.T, args []string) *proc {
	t.Helper()
	p, ok, err := launch(t, args)
	if !ok {
		t.Fatalf("ktd exited at start: %v\n%s", err, p.logs)
	}
	return p
}

// stop sends SIGTERM and expects a clean exit.
func (p *proc) stop(t *testing.T) { p.d.Stop(t) }

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// keys are what a test needs of a data directory's keys.
type keys struct {
	origin string
	vrf    *vrf.PrivateKey
	log    note.Verifier
}

func loadKeys(t *testing.T, dataDir string) *keys {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "vrf.key"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := vrf.ParsePrivateKey(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	skey, err := os.ReadFile(filepath.Join(dataDir, "log.key"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := log.VerifierFor(strings.TrimSpace(string(skey)))
	if err != nil {
		t.Fatal(err)
	}
	return &keys{origin: v.Name(), vrf: k, log: v}
}

// enroll enrolls handle name (version 1) and returns the change.
func (k *keys) enrollment(t testing.TB, name string) *ktpb.HandleChange {
	h, err := api.NormalizeHandle(name)
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := k.vrf.Prove(api.VRFInput(h))
	d := testkit.NewDevice()
	var account [16]byte
	copy(account[:], h)
	hc, err := client.NewChange(k.origin, &client.LookupResult{Handle: h, Index: idx}, testkit.Set(account, d), api.AuthEnroll, d.Sign)
	if err != nil {
		t.Fatal(err)
	}
	return hc
}

// enrollMany enrolls n handles prefix0..prefix<n-1> with c callers and
// returns the names acknowledged (Enroll returned OK).
func enrollMany(t *testing.T, k *keys, dc ktpb.DirectoryClient, prefix string, n, c int) []string {
	t.Helper()
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	next := make(chan int)
	for range c {
		wg.Go(func() {
			for i := range next {
				name := fmt.Sprintf("%s%d@faults.example", prefix, i)
				if _, err := dc.Enroll(t.Context(), &ktpb.EnrollRequest{Change: k.enrollment(t, name)}); err != nil {
					t.Errorf("Enroll %s: %v", name, err)
					continue
				}
				mu.Lock()
				acked = append(acked, name)
				mu.Unlock()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return acked
}

// checkpoint returns the served checkpoint, verified.
func (k *keys) checkpoint(t *testing.T, lc ktpb.LogClient) ([]byte, uint64, []byte) {
	t.Helper()
	cp, err := lc.GetCheckpoint(t.Context(), &ktpb.GetCheckpointRequest{})
	if err != nil {
		t.Fatalf("GetCheckpoint: %v", err)
	}
	c, _, err := log.ParseCheckpoint(cp.GetNote(), k.origin, k.log)
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	return cp.GetNote(), c.Size, c.Hash
}

// fileCheckpoint reads the data directory's checkpoint file, verified.
func (k *keys) fileCheckpoint(t *testing.T, dataDir string) (uint64, []byte) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dataDir, "log", "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := log.ParseCheckpoint(raw, k.origin, k.log)
	if err != nil {
		t.Fatalf("checkpoint file: %v", err)
	}
	return c.Size, c.Hash
}

// waitSize waits until the served checkpoint reaches size.
func (k *keys) waitSize(t *testing.T, lc ktpb.LogClient, size uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		cp, err := lc.GetCheckpoint(ctx, &ktpb.GetCheckpointRequest{})
		if err == nil {
			if c, _, err := log.ParseCheckpoint(cp.GetNote(), k.origin, k.log); err == nil && c.Size >= size {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the checkpoint did not reach size %d", size)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// lookupRegistered reports whether the directory's served epoch holds the
// handle, verified by the client library.
func lookupRegistered(t *testing.T, params *client.Params, dc ktpb.DirectoryClient, name string) (bool, error) {
	resp, err := dc.Lookup(t.Context(), &ktpb.LookupRequest{Handle: name})
	if err != nil {
		return false, err
	}
	res, err := client.VerifyLookup(params, nil, name, resp, time.Now(), nil)
	if err != nil {
		return false, err
	}
	return res.Registered, nil
}

func clientParams(t *testing.T, dc ktpb.DirectoryClient) *client.Params {
	t.Helper()
	pb, err := dc.GetParameters(t.Context(), &ktpb.GetParametersRequest{})
	if err != nil {
		t.Fatalf("GetParameters: %v", err)
	}
	params, err := client.NewParams(pb, client.Options{InsecureNoWitnesses: true, MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return params
}

func parseCheckpoint(raw []byte, k *keys) (*fmtlog.Checkpoint, *note.Note, error) {
	return log.ParseCheckpoint(raw, k.origin, k.log)
}
