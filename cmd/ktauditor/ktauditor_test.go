package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/log/logapi"
	"github.com/keytrans/kt/log/witness"
)

const origin = "example.com/kt"

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testLog serves a key transparency log over the read API on 127.0.0.1.
type testLog struct {
	url, vkey string
	signer    note.Signer
	mem       *conformance.MemoryLog
	b         *ktlog.Builder
}

func newTestLog(t *testing.T) *testLog {
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	l := &testLog{vkey: vkey, signer: s, mem: conformance.NewMemoryLog(origin, s), b: ktlog.New(origin)}
	if _, err := l.mem.Append(context.Background(), l.b.Entries()); err != nil { // epoch 0
		t.Fatal(err)
	}
	srv := httptest.NewServer(logapi.NewHandler(l.mem, logapi.WithLogger(quiet())))
	t.Cleanup(srv.Close)
	l.url = srv.URL
	return l
}

func (l *testLog) grow(t *testing.T, edit func(b *ktlog.Builder)) {
	t.Helper()
	n := l.b.Len()
	edit(l.b)
	if _, err := l.mem.Append(context.Background(), l.b.Entries()[n:]); err != nil {
		t.Fatal(err)
	}
}

func writeConfig(t *testing.T, dir string, l *testLog, extra string) string {
	t.Helper()
	rk := l.b.RecoveryKey()
	cfg := fmt.Sprintf(`data_dir: %s
listen: 127.0.0.1:0
metrics_listen: 127.0.0.1:0
name: auditor.test
poll_interval: 50ms
logs:
  - origin: %s
    vkey: %s
    url: %s
    recovery_key: kt-recovery-public:%s
%s`, dir, origin, l.vkey, l.url, base64.StdEncoding.EncodeToString(rk[:]), extra)
	p := filepath.Join(dir, "ktauditor.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type daemon struct {
	addrs  addrs
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfgFile string, args ...string) *daemon {
	t.Helper()
	cfg, _, err := loadConfig(append([]string{"--config", cfgFile}, args...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan addrs, 1)
	d := &daemon{cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- run(ctx, cfg, quiet(), ready) }()
	select {
	case d.addrs = <-ready:
	case err := <-d.done:
		cancel()
		t.Fatalf("daemon did not start: %v", err)
	}
	t.Cleanup(func() { d.stop(t) })
	return d
}

func (d *daemon) stop(t *testing.T) {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("shutdown hangs")
	}
}

func fetch(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls f until it is true (bounded; no wall-clock assertion on
// speed, only a generous limit so a broken daemon fails the test).
func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	for range 1000 {
		if f() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestDaemon runs ktauditor's run path on a test log: it audits, serves
// the audited checkpoint, exports metrics, keeps its key across restarts,
// and resumes from its store.
func TestDaemon(t *testing.T) {
	l := newTestLog(t)
	l.grow(t, func(b *ktlog.Builder) { b.Honest(20, 5) })
	dir := t.TempDir()
	cfgFile := writeConfig(t, dir, l, "")
	d := start(t, cfgFile)
	base := "http://" + d.addrs.HTTP
	want, _ := l.mem.Checkpoint(context.Background())
	waitFor(t, "the audit", func() bool {
		code, body := fetch(t, base+"/kt/v1/checkpoint")
		return code == 200 && body == string(want)
	})
	var m string
	waitFor(t, "the metrics", func() bool {
		_, m = fetch(t, "http://"+d.addrs.Metrics+"/metrics")
		return strings.Contains(m, "ktauditor_audited_size{")
	})
	for _, s := range []string{"ktauditor_build_info", `ktauditor_audited_size{origin="example.com/kt"} ` + fmt.Sprint(l.b.Len()), "ktauditor_entries_replayed_total"} {
		if !strings.Contains(m, s) {
			t.Errorf("metrics lack %q:\n%s", s, grepLines(m, "ktauditor_"))
		}
	}
	if code, page := fetch(t, base+"/"); code != 200 || !strings.Contains(page, origin) {
		t.Fatalf("status page: %d", code)
	}
	key1, _ := os.ReadFile(filepath.Join(dir, "auditor.key"))
	d.stop(t)

	// A violation appears while it is down; after the restart it resumes
	// and finds it.
	l.grow(t, func(b *ktlog.Builder) {
		b.Honest(3, 2)
		b.EpochWith(func(r *api.EpochRecord) { r.MapRoot[0] ^= 1 })
	})
	d2 := start(t, cfgFile)
	base = "http://" + d2.addrs.HTTP
	waitFor(t, "the violation", func() bool {
		_, page := fetch(t, base+"/")
		return strings.Contains(page, "map root")
	})
	key2, _ := os.ReadFile(filepath.Join(dir, "auditor.key"))
	if string(key1) != string(key2) || len(key1) == 0 {
		t.Fatal("cosigning key changed across restarts")
	}
}

func TestConfig(t *testing.T) {
	l := newTestLog(t)
	dir := t.TempDir()
	cfgFile := writeConfig(t, dir, l, "peers:\n  - name: p1\n    url: http://127.0.0.1:1\n")
	t.Setenv("KTAUDITOR_POLL_INTERVAL", "7s")
	t.Setenv("KTAUDITOR_GOSSIP_INTERVAL", "9s")
	cfg, _, err := loadConfig([]string{"--config", cfgFile, "--gossip-interval=11s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// file < env < flag
	if cfg.PollInterval != 7*time.Second || cfg.GossipInterval != 11*time.Second || len(cfg.Peers) != 1 || len(cfg.Logs) != 1 {
		t.Fatalf("%+v", cfg)
	}
	if cfg.KeyFile != filepath.Join(dir, "auditor.key") || cfg.EvidenceDir != filepath.Join(dir, "evidence") {
		t.Fatalf("defaults: %q %q", cfg.KeyFile, cfg.EvidenceDir)
	}
	for name, body := range map[string]string{
		"unknown key":    "bogus: 1\n",
		"no logs":        "data_dir: x\n",
		"bad vkey":       "logs:\n  - origin: a\n    vkey: nope\n",
		"vkey for other": "logs:\n  - origin: other.example\n    vkey: " + l.vkey + "\n",
		"no recovery":    "logs:\n  - origin: " + origin + "\n    vkey: " + l.vkey + "\n    url: http://127.0.0.1:1\n",
		"bad peer url":   "logs:\n  - origin: " + origin + "\n    vkey: " + l.vkey + "\npeers:\n  - name: p\n    url: ftp://x\n",
	} {
		p := filepath.Join(dir, "bad.yaml")
		os.WriteFile(p, []byte(body), 0o600)
		if _, _, err := loadConfig([]string{"--config", p}, io.Discard); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, _, err := loadConfig([]string{"--config", cfgFile, "--poll-interval=0s"}, io.Discard); err == nil {
		t.Error("zero poll interval accepted")
	}
}

// TestAdmin: vkey prints a stable cosignature key; unfreeze needs a
// configured origin.
func TestAdmin(t *testing.T) {
	l := newTestLog(t)
	dir := t.TempDir()
	cfgFile := writeConfig(t, dir, l, "")
	if code := cli([]string{"vkey", "--config", cfgFile}, quiet()); code != 0 {
		t.Fatalf("vkey: exit %d", code)
	}
	if code := cli([]string{"unfreeze", "--config", cfgFile, "nope.example"}, quiet()); code != 1 {
		t.Fatalf("unfreeze of an unknown origin: exit %d", code)
	}
	if code := cli([]string{"unfreeze", "--config", cfgFile, origin}, quiet()); code != 1 {
		t.Fatalf("unfreeze of a log that is not frozen: exit %d", code)
	}
	if code := cli([]string{"reset-witness", "--config", cfgFile, origin}, quiet()); code != 0 {
		t.Fatalf("reset-witness: exit %d", code)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestRemovedCosignAudited: a configuration that still sets
// cosign_audited, in the file (to any value) or the environment, does not
// start, and the message says to use audit_key; so does an audit_key that
// is the cosigning key file.
func TestRemovedCosignAudited(t *testing.T) {
	l := newTestLog(t)
	dir := t.TempDir()
	for _, v := range []string{"true", "false"} {
		cfgFile := writeConfig(t, dir, l, "cosign_audited: "+v+"\n")
		_, _, err := loadConfig([]string{"--config", cfgFile}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "cosign_audited was removed") || !strings.Contains(err.Error(), "audit_key") {
			t.Fatalf("cosign_audited: %s: %v", v, err)
		}
	}
	cfgFile := writeConfig(t, dir, l, "")
	if _, _, err := loadConfig([]string{"--config", cfgFile}, io.Discard); err != nil {
		t.Fatalf("control: %v", err)
	}
	if _, _, err := loadConfig([]string{"--config", cfgFile, "--audit-key", filepath.Join(dir, "auditor.key")}, io.Discard); err == nil || !strings.Contains(err.Error(), "must not be a witness key") {
		t.Fatalf("audit_key = key_file: %v", err)
	}
	t.Setenv("KTAUDITOR_COSIGN_AUDITED", "true")
	if _, _, err := loadConfig([]string{"--config", cfgFile}, io.Discard); err == nil || !strings.Contains(err.Error(), "audit_key") {
		t.Fatalf("KTAUDITOR_COSIGN_AUDITED: %v", err)
	}
}

// TestAuditKey: with audit_key, ktauditor makes the key (named after the
// cosigning key, NAME/audit) on first use, audit-vkey prints its verifier
// key, and the daemon answers POST /kt/v1/audit with a statement that
// satisfies an audit policy naming that key; GET /kt/v1/checkpoint carries
// its statement, and both are counted. The cosigning key itself is
// refused as audit key.
func TestAuditKey(t *testing.T) {
	l := newTestLog(t)
	l.grow(t, func(b *ktlog.Builder) { b.Honest(8, 3) })
	dir := t.TempDir()
	cfgFile := writeConfig(t, dir, l, "audit_key: "+filepath.Join(dir, "audit.key")+"\n")
	cfg, _, err := loadConfig([]string{"--config", cfgFile}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	out := captureStdout(t, func() {
		if code := cli([]string{"audit-vkey", "--config", cfgFile}, quiet()); code != 0 {
			t.Fatalf("audit-vkey: exit %d", code)
		}
	})
	avk := strings.TrimSpace(out)
	if !strings.HasPrefix(avk, "auditor.test/audit+") {
		t.Fatalf("audit vkey %q", avk)
	}
	_, wvk, err := loadKey(cfg)
	if err != nil || wvk == avk {
		t.Fatalf("witness vkey %q, %v", wvk, err)
	}
	d := start(t, cfgFile)
	base := "http://" + d.addrs.HTTP
	cp, _ := l.mem.Checkpoint(context.Background())
	policy, err := witness.ParseAuditPolicy([]byte("auditor a " + avk + " " + base + "\nquorum a\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(base+"/kt/v1/audit", "text/plain", strings.NewReader(string(cp)))
	if err != nil {
		t.Fatal(err)
	}
	line, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("audit: %d %s", resp.StatusCode, line)
	}
	if _, err := policy.Check(append(cp, line...)); err != nil {
		t.Fatalf("statement: %v", err)
	}
	var served string
	waitFor(t, "the stated checkpoint", func() bool {
		var code int
		code, served = fetch(t, base+"/kt/v1/checkpoint")
		return code == 200 && strings.HasPrefix(served, string(cp))
	})
	if _, err := policy.Check([]byte(served)); err != nil {
		t.Fatalf("GET checkpoint: %v", err)
	}
	_, m := fetch(t, "http://"+d.addrs.Metrics+"/metrics")
	for _, s := range []string{`ktauditor_audit_requests_total{code="200",origin="example.com/kt"} 1`, `ktauditor_audit_statements_total{origin="example.com/kt"} 2`} {
		if !strings.Contains(m, s) {
			t.Errorf("metrics lack %q:\n%s", s, grepLines(m, "ktauditor_audit"))
		}
	}
	d.stop(t)

	// The cosigning key as audit key: refused at start.
	key, _ := os.ReadFile(filepath.Join(dir, "auditor.key"))
	os.WriteFile(filepath.Join(dir, "audit.key"), key, 0o600)
	err = run(context.Background(), cfg, quiet(), nil)
	if err == nil || !strings.Contains(err.Error(), "must not be a witness key") {
		t.Fatalf("same key: %v", err)
	}
	if code := cli([]string{"audit-vkey", "--config", cfgFile}, quiet()); code != 1 {
		t.Fatalf("audit-vkey with the cosigning key: exit %d", code)
	}
}

// captureStdout returns what f writes to os.Stdout.
func captureStdout(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	f()
	os.Stdout = old
	w.Close()
	return <-done
}

// TestConfigKeyFiles: vkey_file and recovery_key_file stand for vkey and
// recovery_key, the origin defaults to the vkey's name, and a log that
// sets a key both ways, or names a missing file, is refused.
func TestConfigKeyFiles(t *testing.T) {
	l := newTestLog(t)
	dir := t.TempDir()
	rk := l.b.RecoveryKey()
	vkeyFile, recFile := filepath.Join(dir, "log.vkey"), filepath.Join(dir, "recovery.pub")
	os.WriteFile(vkeyFile, []byte(l.vkey+"\n"), 0o644)
	os.WriteFile(recFile, []byte("kt-recovery-public:"+base64.StdEncoding.EncodeToString(rk[:])+"\n"), 0o644)
	write := func(log string) string {
		p := filepath.Join(dir, "ktauditor.yaml")
		os.WriteFile(p, []byte("data_dir: "+dir+"\nlogs:\n  - "+log), 0o600)
		return p
	}
	good := "vkey_file: " + vkeyFile + "\n    url: " + l.url + "\n    recovery_key_file: " + recFile + "\n"
	cfg, _, err := loadConfig([]string{"--config", write(good)}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Logs[0]; got.Origin != origin || got.VKey != l.vkey || !strings.HasSuffix(got.RecoveryKey, base64.StdEncoding.EncodeToString(rk[:])) {
		t.Fatalf("log: %+v", got)
	}
	for name, log := range map[string]string{
		"vkey twice":     "vkey: " + l.vkey + "\n    " + good,
		"recovery twice": "recovery_key: kt-recovery-public:" + base64.StdEncoding.EncodeToString(rk[:]) + "\n    " + good,
		"missing vkey":   "vkey_file: " + filepath.Join(dir, "nope") + "\n",
		"missing rec":    "vkey_file: " + vkeyFile + "\n    url: " + l.url + "\n    recovery_key_file: " + filepath.Join(dir, "nope") + "\n",
		"other origin":   "origin: other.example\n    " + good,
	} {
		if _, _, err := loadConfig([]string{"--config", write(log)}, io.Discard); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
