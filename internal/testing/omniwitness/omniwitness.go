// Package omniwitness runs transparency-dev's omniwitness, unmodified, for
// tests: an independent implementation of C2SP tlog-witness and
// tlog-cosignature that must accept and cosign this project's checkpoints.
//
// # Building
//
// The omniwitness builds here only from an older commit of
// github.com/transparency-dev/witness, with formats pinned to v0.1.1, in a
// module of its own: its dependencies must not leak into this module's
// go.mod. [Binary] therefore writes a throwaway module (build/go.mod.txt and
// build/go.sum.txt, pinned, with every checksum) into a temporary directory
// outside this repository and runs "go build" there, once; the binary is
// cached in $(go env GOCACHE)/../kt-omniwitness-<commit>/omniwitness. The
// environment variable KT_OMNIWITNESS_BIN names a prebuilt binary instead.
//
// The first build downloads the witness's dependencies through the module
// proxy and compiles them (about a minute on two cores with a warm module
// cache); later runs reuse the binary.
//
// When the binary cannot be built, tests fail if the environment variable CI
// is "true", and skip with the reason otherwise.
package omniwitness

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// The witness module version that builds, and its commit.
const (
	Module  = "github.com/transparency-dev/witness"
	Version = "v0.0.0-20260701145555-54dbcdd14f82"
	Commit  = "54dbcdd14f82"
	command = Module + "/cmd/omniwitness"
)

//go:embed build/go.mod.txt
var goMod []byte

//go:embed build/go.sum.txt
var goSum []byte

// toolsGo keeps the throwaway module's requirements tidy.
const toolsGo = `//go:build tools

package tools

import _ "` + command + `"
`

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary returns the path of the omniwitness binary, building it on first
// use. Failing to build fails the test when CI=true and skips it otherwise.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		start := time.Now()
		buildPath, buildErr = build()
		if buildErr == nil {
			t.Logf("omniwitness binary %s ready after %v", buildPath, time.Since(start).Round(time.Millisecond))
		}
	})
	if buildErr != nil {
		unavailable(t, "cannot build the omniwitness (%s@%s): %v", Module, Version, buildErr)
	}
	return buildPath
}

// unavailable fails the test on CI and skips it elsewhere.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s\n(the independent witness test is required on CI)", msg)
	}
	t.Skipf("%s\n(skipped outside CI; set CI=true to make this a failure)", msg)
}

func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		return "", errors.New("no go command in PATH or GOROOT")
	}
	return p, nil
}

func build() (string, error) {
	if p := os.Getenv("KT_OMNIWITNESS_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("KT_OMNIWITNESS_BIN: %w", err)
		}
		return p, nil
	}
	gobin, err := goTool()
	if err != nil {
		return "", err
	}
	out, err := exec.Command(gobin, "env", "GOCACHE").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOCACHE: %w", err)
	}
	gocache := strings.TrimSpace(string(out))
	if gocache == "" || gocache == "off" {
		return "", errors.New("GOCACHE is off; set KT_OMNIWITNESS_BIN")
	}
	dir := filepath.Join(filepath.Dir(gocache), "kt-omniwitness-"+Commit)
	bin := filepath.Join(dir, "omniwitness")
	if st, err := os.Stat(bin); err == nil && st.Mode().IsRegular() {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}

	// The throwaway module lives in the system's temporary directory, never
	// inside this repository.
	src, err := os.MkdirTemp("", "kt-omniwitness-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(src)
	for name, data := range map[string][]byte{
		"go.mod":   goMod,
		"go.sum":   goSum,
		"tools.go": []byte(toolsGo),
	} {
		if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
			return "", err
		}
	}
	// Build to a temporary name and rename: concurrent test processes may
	// build at the same time, and a cached binary is always complete.
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", tmp, command)
	cmd.Dir = src
	cmd.Env = append(os.Environ(),
		"GOWORK=off",
		"GOFLAGS=-mod=readonly -buildvcs=false",
		"GOTOOLCHAIN=local",
		"CGO_ENABLED=0",
	)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("go build %s in %s: %v\n%s", command, src, err, log.Bytes())
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// A Log is a log the omniwitness accepts checkpoints for.
type Log struct {
	Origin string
	// VerifierKey is the log's Ed25519 signed-note verifier key.
	VerifierKey string
}

// Start runs an omniwitness on a free loopback port that knows the given
// logs, and stops it when the test ends. It returns the witness's URL (its
// submission prefix) and its cosignature/v1 verifier key (type 0x04).
func Start(t testing.TB, logs ...Log) (url, vkey string) {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()

	skey, plainVKey, err := note.GenerateKey(rand.Reader, "omniwitness.kt.test")
	if err != nil {
		t.Fatal(err)
	}
	vkey, err = fnote.VKeyToCosignatureV1(plainVKey)
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "witness.sec")
	if err := os.WriteFile(keyPath, []byte(skey), 0o600); err != nil {
		t.Fatal(err)
	}
	var yaml strings.Builder
	yaml.WriteString("Logs:\n")
	for _, l := range logs {
		// YAML double-quoted scalars take JSON-style escapes.
		fmt.Fprintf(&yaml, "  - Origin: %s\n    PublicKey: %s\n    URL: %s\n",
			strconv.Quote(l.Origin), strconv.Quote(l.VerifierKey), strconv.Quote("https://"+l.Origin))
	}
	logsPath := filepath.Join(dir, "logs.yaml")
	if err := os.WriteFile(logsPath, []byte(yaml.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	// Pick a free port, then let the witness bind it; retry if another
	// process took it in between.
	for attempt := 1; ; attempt++ {
		addr := freeAddr(t)
		logPath := filepath.Join(dir, fmt.Sprintf("omniwitness-%d.log", attempt))
		err := run(t, bin, addr, keyPath, filepath.Join(dir, "witness.db"), logsPath, logPath)
		if err == nil {
			return "http://" + addr, vkey
		}
		if attempt == 3 {
			logs, _ := os.ReadFile(logPath)
			t.Fatalf("omniwitness did not start: %v\n%s", err, logs)
		}
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// run starts the omniwitness and waits until it accepts connections.
func run(t testing.TB, bin, addr, keyPath, dbPath, logsPath, logPath string) error {
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin,
		"--listen="+addr,
		"--metrics_listen=", // no metrics server
		"--private_key_path="+keyPath,
		"--db_file="+dbPath,
		"--additional_logs="+logsPath,
		"--logtostderr",
		"--v=1",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
		logFile.Close()
	}

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for stop
			stop()
			return fmt.Errorf("omniwitness exited: %v", err)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("omniwitness not listening on %s after 60s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			logs, _ := os.ReadFile(logPath)
			t.Logf("omniwitness output:\n%s", logs)
		}
	})
	return nil
}
