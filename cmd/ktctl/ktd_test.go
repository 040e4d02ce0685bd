package main

import (
	"context"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/vrf"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestRealKTD builds and runs the ktd daemon, and points ktctl at its data
// directory: the key files ktd writes are the ones ktctl reads, and the
// VRF index ktctl computes for a handle is the one ktd proves.
func TestRealKTD(t *testing.T) {
	if testing.Short() {
		t.Skip("builds ktd")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "ktd")
	build := exec.Command("go", "build", "-o", bin, "github.com/keytrans/kt/cmd/ktd")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/ktd: %v\n%s", err, out)
	}
	data := filepath.Join(dir, "data")
	httpAddr, grpcAddr, opAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	cmd := exec.Command(bin, "--data-dir", data, "--http-listen", httpAddr, "--grpc-listen", grpcAddr,
		"--operator-listen", opAddr, "--metrics-listen", "", "--directory-heartbeat-interval", "200ms",
		"--directory-epoch-interval", "100ms")
	logFile, err := os.Create(filepath.Join(dir, "ktd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr, cmd.Stdout = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("ktd's log:\n%s", b)
		}
	})
	logURL := "http://" + httpAddr
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(logURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ktd not healthy: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	flags := []string{"--log-url", logURL, "--data-dir", data}
	// Heartbeats grow the log; wait for a few epochs.
	for {
		var cp struct{ Size uint64 }
		runCLI(t, append([]string{"checkpoint", "--json"}, flags...)...).decode(t, &cp)
		if cp.Size >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log of size %d", cp.Size)
		}
		time.Sleep(100 * time.Millisecond)
	}
	runCLI(t, append([]string{"checkpoint"}, flags...)...).want(t, exitOK, []string{"origin         localhost/kt", "log signature  valid"})
	runCLI(t, append([]string{"entries", "0"}, flags...)...).want(t, exitOK, []string{"epoch=0"})
	runCLI(t, append([]string{"proof", "consistency", "1", "2"}, flags...)...).want(t, exitOK, []string{"verified"})
	r := runCLI(t, append([]string{"history", "--handle", "+14155550100", "--json"}, flags...)...)
	var res struct{ Index string }
	r.decode(t, &res)
	runCLI(t, "diff", "+14155550100", "0", "latest", "--grpc", grpcAddr, "--operator", opAddr, "--data-dir", data).
		want(t, exitOK, []string{"no version (not registered)"})

	// The index ktctl computed is the one ktd's VRF proof gives.
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dc := ktpb.NewDirectoryClient(conn)
	params, err := dc.GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	pk, err := vrf.ParsePublicKey(params.GetVrfPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	lr, err := dc.Lookup(ctx, &ktpb.LookupRequest{Handle: "+14155550100"})
	if err != nil {
		t.Fatal(err)
	}
	index, err := pk.Verify(api.VRFInput(lr.GetHandle()), lr.GetVrfProof())
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(index[:]) != res.Index {
		t.Errorf("ktctl computed index %s, ktd proves %x", res.Index, index)
	}
}
