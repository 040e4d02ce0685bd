package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/auditor/replay"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/log/logapi"
)

const crashEnv = "KTAUDITOR_CRASH_CONFIG"

// TestMain runs the daemon when started as the crash test's child.
func TestMain(m *testing.M) {
	if cfg := os.Getenv(crashEnv); cfg != "" {
		os.Exit(cli([]string{"--config", cfg}, quiet()))
	}
	os.Exit(m.Run())
}

var replayedRE = regexp.MustCompile(`<td class="replayed">(\d+)</td>`)

// TestCrashResume kills the daemon (SIGKILL) twice in the middle of a
// catch-up, restarts it on the same data directory, and checks that it
// resumes (never restarting from zero) and ends with exactly the
// violations and checkpoint that a replay without crashes finds.
func TestCrashResume(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	l := newTestLog(t)
	var bad uint64
	l.grow(t, func(b *ktlog.Builder) {
		b.Honest(1500, 100)
		d := ktlog.Key("intruder")
		b.Change(ktlog.Index("h7"), api.AuthDevice, d, ktlog.Devices(d))  // R5
		bad = b.EpochWith(func(r *api.EpochRecord) { r.MapRoot[1] ^= 1 }) // map root
		b.Honest(1000, 100)
	})
	total := l.b.Len()
	// Slow the read API down (a long catch-up in a short test): each page
	// of at most 100 entries takes 10 ms more.
	api := logapi.NewHandler(l.mem, logapi.WithLogger(quiet()))
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/log/v1/entries") {
			time.Sleep(10 * time.Millisecond)
		}
		api.ServeHTTP(w, r)
	}))
	defer slow.Close()
	l.url = slow.URL

	dir := t.TempDir()
	port := freePort(t)
	cfgFile := writeConfig(t, dir, l, "")
	cfgText, _ := os.ReadFile(cfgFile)
	cfgText = []byte(strings.Replace(string(cfgText), "listen: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:0",
		fmt.Sprintf("listen: 127.0.0.1:%d\nmetrics_listen: \"\"\nprogress_interval: 30ms", port), 1))
	os.WriteFile(cfgFile, cfgText, 0o600)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	replayed := func() (uint64, bool) {
		resp, err := http.Get(base + "/")
		if err != nil {
			return 0, false
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		m := replayedRE.FindStringSubmatch(b.String())
		if m == nil {
			return 0, false
		}
		n, _ := strconv.ParseUint(m[1], 10, 64)
		return n, true
	}
	// Kill once early, and once after the violations were found and
	// saved, so that the last run re-finds nothing twice.
	var last uint64
	for round, past := range []uint64{0, bad + 1} {
		cmd := child(t, cfgFile)
		var at uint64
		waitFor(t, "the catch-up to make progress", func() bool {
			n, ok := replayed()
			at = n
			return ok && n > last && n > past
		})
		if at >= total {
			t.Fatalf("round %d: the catch-up finished before the kill (%d entries)", round, at)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		t.Logf("round %d: killed at %d of %d replayed", round, at, total)
		last = at
	}
	// The last run: it resumes (never from zero) and finishes.
	cmd := child(t, cfgFile)
	waitFor(t, "the restarted daemon", func() bool { _, ok := replayed(); return ok })
	if n, _ := replayed(); n < last {
		t.Fatalf("restarted at %d entries, below the %d saved before the kill", n, last)
	}
	want, _ := l.mem.Checkpoint(context.Background())
	waitFor(t, "the end of the audit", func() bool {
		code, body := fetch(t, base+"/kt/v1/checkpoint")
		return code == 200 && body == string(want)
	})
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}

	// Compare with a replay that never crashed.
	v, _ := note.NewVerifier(l.vkey)
	e, _ := replay.New(replay.Config{Origin: origin, Verifier: v, RecoveryKey: l.b.RecoveryKey()})
	var ref []string
	for _, x := range e.Append(l.b.Entries()) {
		ref = append(ref, fmt.Sprintf("%d %s", x.Index, x.Rule))
	}
	st, err := auditor.OpenStore(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := auditor.New(auditor.Config{Store: st, Logs: []auditor.LogConfig{{Origin: origin, VKey: l.vkey, RecoveryKey: l.b.RecoveryKey(), Reader: l.mem}}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	vs, _ := a.Violations(origin)
	var got []string
	for _, x := range vs {
		got = append(got, fmt.Sprintf("%d %s", x.Index, x.Rule))
	}
	if diff := cmp.Diff(ref, got); diff != "" || len(ref) != 2 {
		t.Fatalf("violations after crashes differ from a clean replay (-clean +crashed):\n%s", diff)
	}
	if s := a.Status()[0]; s.Latest == nil || s.Latest.Size != total || s.Replayed != total {
		t.Fatalf("final state %+v", s)
	}
}

func child(t *testing.T, cfgFile string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+cfgFile)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
