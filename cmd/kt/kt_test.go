package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/internal/testing/attacks/adversary"
	"github.com/keytrans/kt/internal/testing/fixture"
	"github.com/keytrans/kt/internal/testing/testonly"
	"github.com/keytrans/kt/log/evidence"
	"github.com/keytrans/kt/log/witness"
)

const origin = "kt-cmd-test.example/kt"

// testDir is a real directory on loopback (package
// internal/testing/fixture): posix log, 1-of-1 witness.
type testDir struct {
	dep      *fixture.Deployment
	addr     string
	vkey     string
	readURL  string // the log's HTTP read API, for auditors
	token    *directory.TokenCredentials
	recovery ed25519.PrivateKey
	dir      ktpb.DirectoryClient
	op       ktpb.OperatorClient
}

func startDirectory(t *testing.T) *testDir {
	t.Helper()
	d := fixture.New(t, fixture.Options{Origin: origin})
	return &testDir{dep: d, addr: d.Addr, vkey: d.Keys.LogVKey, readURL: d.LogURL, token: d.Keys.Token,
		recovery: d.Keys.Recovery, dir: d.Dir, op: d.Operator}
}

// device is one kt installation: a state directory.
type device struct {
	t    *testing.T
	dir  string
	addr string
}

func (td *testDir) device(t *testing.T) *device {
	return &device{t: t, dir: t.TempDir(), addr: td.addr}
}

// kt runs the command with this device's state and returns stdout,
// stderr and the exit status.
func (d *device) kt(stdin string, args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	full := append([]string{"--state-file", filepath.Join(d.dir, "state.json"), "--directory", d.addr}, args...)
	code := run(d.t.Context(), full, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

// ok runs kt and fails the test unless it succeeds.
func (d *device) ok(args ...string) string {
	d.t.Helper()
	out, errs, code := d.kt("", args...)
	if code != 0 {
		d.t.Fatalf("kt %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

type lookupJSON struct {
	Handle     string `json:"handle"`
	Registered bool   `json:"registered"`
	Version    uint64 `json:"version"`
	Devices    []struct {
		ID string `json:"id"`
	} `json:"devices"`
	Verified []string `json:"verified"`
}

func (d *device) lookup(handle string) lookupJSON {
	d.t.Helper()
	var l lookupJSON
	if err := json.Unmarshal([]byte(d.ok("--json", "lookup", handle)), &l); err != nil {
		d.t.Fatal(err)
	}
	return l
}

func (d *device) awaitVersion(handle string, v uint64) lookupJSON {
	d.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		l := d.lookup(handle)
		if l.Version >= v {
			return l
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s: version %d not seen", handle, v)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *device) id() string {
	d.t.Helper()
	var s struct {
		DeviceID string `json:"device_id"`
	}
	json.Unmarshal([]byte(d.ok("--json", "status")), &s)
	return s.DeviceID
}

// TestWorkflow drives every command against a real directory: two
// devices for Bob (export, add, join), lookup, encrypt to a file, decrypt
// on each device, monitoring with and without alerts, removal.
func TestWorkflow(t *testing.T) {
	td := startDirectory(t)
	alice, bob1, bob2 := td.device(t), td.device(t), td.device(t)
	for _, d := range []*device{alice, bob1} {
		d.ok("init")
	}
	if out := bob2.ok("init", "--suite", "hybrid"); !strings.Contains(out, "hybrid") {
		t.Fatalf("init output: %q", out)
	}
	// Init twice fails; the keys stay.
	if _, _, code := bob2.kt("", "init"); code != 1 {
		t.Fatalf("second init: exit %d", code)
	}
	alice.ok("register", "alice@example.com", "--token", td.token.IssueToken("mailto:alice@example.com"))
	out := bob1.ok("register", "bob@example.com", "--token", td.token.IssueToken("mailto:bob@example.com"), "--account-key")
	if !strings.Contains(out, "version 1") {
		t.Fatalf("register output: %q", out)
	}
	bob1.awaitVersion("bob@example.com", 1)
	// A wrong token is refused.
	if _, errs, code := alice.kt("", "register", "alice2@example.com", "--token", "nope"); code != 1 || errs == "" {
		t.Fatalf("bad token: exit %d, %q", code, errs)
	}

	desc := strings.TrimSpace(bob2.ok("device", "export"))
	bob1.ok("device", "add", desc)
	bob1.awaitVersion("bob@example.com", 2)
	bob2.ok("join", "bob@example.com")

	l := alice.awaitVersion("bob@example.com", 2)
	if len(l.Devices) != 2 || !l.Registered || len(l.Verified) < 5 {
		t.Fatalf("lookup: %+v", l)
	}
	human := alice.ok("lookup", "bob@example.com")
	for _, want := range []string{"2 devices", "VRF proof", "witness quorum", "commitment opens"} {
		if !strings.Contains(human, want) {
			t.Errorf("human lookup output lacks %q:\n%s", want, human)
		}
	}
	if l := alice.lookup("nobody@example.com"); l.Registered {
		t.Fatal("nobody is registered")
	}

	msgFile := filepath.Join(t.TempDir(), "msg.env")
	if _, errs, code := alice.kt("hello bob", "encrypt", "bob@example.com", "--out", msgFile); code != 0 {
		t.Fatalf("encrypt: %d %s", code, errs)
	}
	for i, d := range []*device{bob1, bob2} {
		out, errs, code := d.kt("", "decrypt", "--in", msgFile)
		if code != 0 || out != "hello bob" {
			t.Fatalf("bob%d decrypted %q: exit %d %s", i+1, out, code, errs)
		}
		// design.md 12.3: the sender is authenticated.
		if !strings.Contains(errs, "kt: from mailto:alice@example.com, device ") || !strings.Contains(errs, "(authenticated: signed by a device of its verified, logged device set)") {
			t.Fatalf("bob%d: no authenticated sender line: %q", i+1, errs)
		}
	}
	// Alice's set already holds her message key: nothing to upgrade.
	if out := alice.ok("device", "upgrade"); !strings.Contains(out, "already") {
		t.Fatalf("device upgrade: %q", out)
	}
	// The same envelope again is a replay: refused, no plaintext.
	if out, errs, code := bob1.kt("", "decrypt", "--in", msgFile); code != 1 || out != "" || !strings.Contains(errs, "replay") {
		t.Fatalf("replayed decrypt: exit %d, %q, %q", code, out, errs)
	}
	// Alice has no envelope for herself (her only device sent it).
	if _, _, code := alice.kt("", "decrypt", "--in", msgFile); code != 1 {
		t.Fatalf("sender decrypt: exit %d", code)
	}

	// Monitoring: Bob's own changes raise nothing.
	out, errs, code := bob1.kt("", "monitor", "--once")
	if code != 0 || strings.Contains(out, "ALERT") {
		t.Fatalf("monitor: exit %d\n%s%s", code, out, errs)
	}
	// The operator adds a ghost through the recovery path.
	lc, err := client.New(td.dir, mustParams(t, td), &client.MemStore{}, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := lc.Lookup(t.Context(), "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	g, _ := client.GenerateDevice(api.SuiteX25519, time.Now())
	set := &api.DeviceSet{AccountID: res.DeviceSet.AccountID, Devices: append(res.DeviceSet.Devices, g.Device())}
	if string(set.Devices[2].ID[:]) < string(set.Devices[1].ID[:]) {
		set.Devices[1], set.Devices[2] = set.Devices[2], set.Devices[1]
	}
	if string(set.Devices[1].ID[:]) < string(set.Devices[0].ID[:]) {
		set.Devices[0], set.Devices[1] = set.Devices[1], set.Devices[0]
	}
	hc, err := client.NewChange(origin, res, set, api.AuthRecovery, td.recovery)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := td.op.Recover(t.Context(), &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}}); err != nil {
		t.Fatal(err)
	}
	bob1.awaitVersion("bob@example.com", 3)
	out, _, code = bob1.kt("", "monitor", "--once")
	if code != 3 || !strings.Contains(out, "ALERT recovery") {
		t.Fatalf("monitor after recovery: exit %d\n%s", code, out)
	}
	out, _, code = bob2.kt("", "--json", "monitor", "--once")
	if code != 3 || !strings.Contains(out, `"alerts"`) {
		t.Fatalf("bob2 monitor after recovery: exit %d\n%s", code, out)
	}

	// Bob removes his second device; it cannot read later messages.
	bob1.ok("device", "remove", bob2.id())
	alice.awaitVersion("bob@example.com", 4)
	if _, errs, code := alice.kt("later", "encrypt", "bob@example.com", "--out", msgFile); code != 0 {
		t.Fatalf("encrypt: %s", errs)
	}
	if _, _, code := bob2.kt("", "decrypt", "--in", msgFile); code != 1 {
		t.Fatalf("removed device decrypt: exit %d", code)
	}
	// The removed device may no longer read Bob's device sets (design.md
	// 13.4): its monitor shows the public record of its removal, by
	// another of Bob's devices, and alerts that it is locked out.
	out, errs, code = bob2.kt("", "monitor", "--once")
	if code != 3 || !strings.Contains(out, "version 4 by another of your devices (records only)") || !strings.Contains(out, "ALERT locked out") {
		t.Fatalf("removed device's monitor: exit %d\n%s%s", code, out, errs)
	}
	if out := bob1.ok("decrypt", "--in", msgFile); out != "later" {
		t.Fatalf("bob1: %q", out)
	}
	// JSON encryption output names each device.
	var enc struct {
		Envelopes []struct{ Device, Owner string } `json:"envelopes"`
	}
	if err := json.Unmarshal([]byte(alice.ok("--json", "encrypt", "bob@example.com", "--in", msgFile)), &enc); err != nil || len(enc.Envelopes) != 2 {
		t.Fatalf("json encrypt: %v %+v", err, enc)
	}
	// Re-key and account key.
	bob1.ok("device", "rekey")
	alice.awaitVersion("bob@example.com", 5)
	bob1.ok("account-key")
	alice.awaitVersion("bob@example.com", 6)

	// Continuous monitoring polls until cancelled and reports the
	// changes once.
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	var mout, merr bytes.Buffer
	code = run(ctx, []string{"--state-file", filepath.Join(bob1.dir, "state.json"), "--directory", td.addr, "--monitor-interval", "100ms", "monitor"}, strings.NewReader(""), &mout, &merr)
	if code != 0 || strings.Count(mout.String(), "by this device") != 3 || !strings.Contains(mout.String(), "re-keyed") || strings.Contains(mout.String(), "ALERT") {
		t.Fatalf("kt monitor: exit %d\n%s%s", code, mout.String(), merr.String())
	}
}

// TestMonitorGossipRealAuditor: kt monitor --once gossips with a real
// auditor (package auditor) that follows the directory's log through its
// HTTP read API, and reports the consistent answer; an auditor with no
// view yet is reported, and is not an alert.
func TestMonitorGossipRealAuditor(t *testing.T) {
	td := startDirectory(t)
	bob := td.device(t)
	bob.ok("init")
	bob.ok("register", "bob@example.com", "--token", td.token.IssueToken("mailto:bob@example.com"))
	bob.awaitVersion("bob@example.com", 1)
	ao := td.dep.AuditorOptions("auditor")
	ao.Dir = t.TempDir()
	a, err := fixture.StartAuditor(t.Context(), ao)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	out, errs, code := bob.kt("", "--auditors", a.URL, "monitor", "--once")
	if code != 0 || !strings.Contains(out, "gossip "+a.URL+": client: gossip failed") || strings.Contains(out, "ALERT") {
		t.Fatalf("monitor with an auditor that has no view yet: exit %d\n%s%s", code, out, errs)
	}
	if err := a.AuditOnce(t.Context(), origin); err != nil {
		t.Fatal(err)
	}
	size := a.Status()[0].Latest.Size
	out, errs, code = bob.kt("", "--auditors", a.URL, "--json", "monitor", "--once")
	if code != 0 || !strings.Contains(out, fmt.Sprintf(`"size": %d`, size)) || strings.Contains(out, "alert") {
		t.Fatalf("monitor gossiping with the auditor: exit %d\n%s%s", code, out, errs)
	}
	// Lookup-triggered gossip with the auditor: the lookup succeeds.
	alice := td.device(t)
	alice.ok("init")
	if out, errs, code := alice.kt("", "--auditors", a.URL, "--gossip-on-lookup", "lookup", "bob@example.com"); code != 0 || !strings.Contains(out, "bob@example.com") {
		t.Fatalf("lookup with gossip: exit %d\n%s%s", code, out, errs)
	}
	if evs, _ := a.Evidence(origin); len(evs) != 0 {
		t.Fatal("evidence from an honest directory")
	}
}

// TestAccountKeyCommands: kt account-key export and import carry the
// account key to a new device (a wrong passphrase is refused), kt recover
// makes it the handle's only device by an account-key-signed change, and
// both devices' monitors report the change as the account key's, without
// alert; the new device then rotates the account key.
func TestAccountKeyCommands(t *testing.T) {
	td := startDirectory(t)
	bob1, bob2 := td.device(t), td.device(t)
	bob1.ok("init")
	bob2.ok("init")
	bob1.ok("register", "bob@example.com", "--token", td.token.IssueToken("mailto:bob@example.com"), "--account-key")
	bob1.awaitVersion("bob@example.com", 1)
	exp := filepath.Join(t.TempDir(), "account-key")
	if _, errs, code := bob1.kt("s3cret passphrase\n", "account-key", "export", "--out", exp); code != 0 {
		t.Fatalf("export: exit %d: %s", code, errs)
	}
	if fi, err := os.Stat(exp); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("export file: %v %v", fi, err)
	}
	if _, errs, code := bob2.kt("wrong\n", "account-key", "import", "--in", exp); code != 1 || !strings.Contains(errs, "invalid account key export") {
		t.Fatalf("import with a wrong passphrase: exit %d: %s", code, errs)
	}
	if _, _, code := bob2.kt("", "recover", "bob@example.com"); code != 1 {
		t.Fatalf("recover without the account key: exit %d", code)
	}
	out, errs, code := bob2.kt("s3cret passphrase\n", "account-key", "import", "--in", exp)
	if code != 0 || !strings.Contains(out, "mailto:bob@example.com") {
		t.Fatalf("import: exit %d: %s%s", code, out, errs)
	}
	bob2.ok("recover", "bob@example.com", "--replace")
	l := bob1.awaitVersion("bob@example.com", 2)
	if len(l.Devices) != 1 || l.Devices[0].ID != bob2.id() {
		t.Fatalf("after recovery: %+v", l)
	}
	for name, d := range map[string]*device{"new device": bob2, "old device": bob1} {
		out, errs, code := d.kt("", "monitor", "--once")
		if code != 0 || !strings.Contains(out, "version 2 by your account key") || strings.Contains(out, "ALERT") {
			t.Fatalf("%s: monitor: exit %d\n%s%s", name, code, out, errs)
		}
	}
	bob2.ok("account-key", "rotate")
	bob1.awaitVersion("bob@example.com", 3)
	if out := bob2.ok("monitor", "--once"); !strings.Contains(out, "version 3 by your account key") || strings.Contains(out, "ALERT") {
		t.Fatalf("monitor after rotation: %s", out)
	}
}

func mustParams(t *testing.T, td *testDir) *client.Params {
	pb, err := td.dir.GetParameters(t.Context(), &ktpb.GetParametersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := client.NewParams(pb, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBadArguments: every bad invocation exits with status 2 (or 1 for a
// valid invocation that cannot proceed) and a message, and changes nothing.
func TestBadArguments(t *testing.T) {
	d := &device{t: t, dir: t.TempDir(), addr: "127.0.0.1:1"}
	cfgFile := filepath.Join(t.TempDir(), "kt.yaml")
	os.WriteFile(cfgFile, []byte("directory: 127.0.0.1:1\nbogus_key: 1\n"), 0o600)
	for _, c := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no command", nil, 2, "no command"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
		{"unknown flag", []string{"--frob", "lookup", "x"}, 2, "unknown flag"},
		{"lookup without handle", []string{"lookup"}, 2, "usage: kt lookup HANDLE"},
		{"lookup with two handles", []string{"lookup", "a", "b"}, 2, "usage"},
		{"register without token", []string{"register", "a@example.com"}, 2, "--token"},
		{"token on lookup", []string{"lookup", "a@example.com", "--token", "x"}, 2, "--token not valid"},
		{"once on lookup", []string{"lookup", "a@example.com", "--once"}, 2, "--once not valid"},
		{"bad suite", []string{"init", "--suite", "rsa"}, 2, "--suite"},
		{"device without subcommand", []string{"device"}, 2, "usage: kt device"},
		{"unknown device subcommand", []string{"device", "paint"}, 2, "unknown command"},
		{"bad device ID", []string{"device", "remove", "xyz"}, 2, "32 hex digits"},
		{"bad descriptor", []string{"device", "add", "kt-device:AAAA"}, 2, "descriptor"},
		{"bad duration", []string{"--timeout", "soon", "status"}, 2, "invalid argument"},
		{"negative timeout", []string{"--timeout", "-1s", "status"}, 2, "positive"},
		{"negative max audit lag", []string{"--max-audit-lag", "-1s", "status"}, 2, "max_audit_lag"},
		{"unknown config key", []string{"--config", cfgFile, "status"}, 2, "bogus_key"},
		{"missing config file", []string{"--config", "/nonexistent/kt.yaml", "status"}, 2, "configuration file"},
		{"lookup before init", []string{"lookup", "a@example.com"}, 1, "kt init"},
		{"export before init", []string{"device", "export"}, 1, "kt init"},
		{"init with no directory", []string{"--timeout", "1s", "init"}, 1, "parameters"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, errs, code := d.kt("", c.args...)
			if code != c.code || !strings.Contains(errs, c.msg) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q), stdout %q", code, c.code, errs, c.msg, out)
			}
		})
	}
	if es, _ := os.ReadDir(d.dir); len(es) != 0 {
		t.Fatalf("bad invocations wrote %v", es)
	}
	// The environment sets keys too.
	t.Setenv("KT_TIMEOUT", "never")
	if _, errs, code := d.kt("", "status"); code != 2 || !strings.Contains(errs, "timeout") {
		t.Fatalf("bad KT_TIMEOUT: %d %q", code, errs)
	}
}

// TestAuditedBy: kt lookup prints one line per audit statement, the
// verified ones or, for an epoch reused from the trusted state, those on
// its note; --max-audit-lag reaches the client's parameters.
func TestAuditedBy(t *testing.T) {
	aud := testonly.NewCosigner(t, "localhost/auditor-1/audit")
	pol, err := witness.ParseAuditPolicy([]byte("auditor auditor-1 " + aud.VKey() + "\nquorum auditor-1\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := &client.Params{Audit: pol}
	at := time.Date(2026, 12, 7, 23, 59, 30, 0, time.UTC)
	text := "example.com/kt\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
	cp := []byte(text + "\n" + aud.Sign(text, uint64(at.Unix())))
	cs, err := pol.Check(cp)
	if err != nil {
		t.Fatal(err)
	}
	want := "audited by  auditor-1 (localhost/auditor-1/audit) at 2026-12-07T23:59:30Z\n"
	for name, e := range map[string]*client.Epoch{
		"verified": {Checkpoint: cp, AuditStatements: cs},
		"reused":   {Checkpoint: cp, Reused: true},
	} {
		var b bytes.Buffer
		printAudited(&b, auditedBy(p, e))
		if b.String() != want {
			t.Errorf("%s: printed %q, want %q", name, b.String(), want)
		}
	}
	if got := auditedBy(&client.Params{}, &client.Epoch{Checkpoint: cp}); got != nil {
		t.Errorf("statements listed without an audit policy: %v", got)
	}
	cfg, _, _, err := loadConfig([]string{"--max-audit-lag", "45s", "--state-file", filepath.Join(t.TempDir(), "s.json"), "status"}, io.Discard)
	if err != nil || cfg.MaxAuditLag != 45*time.Second {
		t.Fatalf("--max-audit-lag: %v, %v", err, cfg)
	}
}

// refuseChain is a directory front that refuses records-only monitoring
// (contact monitoring's chain request) and forwards everything else.
type refuseChain struct{ *adversary.Proxy }

func (r refuseChain) Monitor(ctx context.Context, req *ktpb.MonitorRequest) (*ktpb.MonitorResponse, error) {
	if req.GetRecordsOnly() {
		return nil, status.Error(codes.Unavailable, "the chain is not available")
	}
	return r.Proxy.Monitor(ctx, req)
}

// TestContactsCommands: kt encrypt remembers its recipient, kt contacts
// lists it; after Bob's change, kt contacts check through a directory
// front that refuses the chain exits with status 3 and an alert, and
// through the real directory verifies the chain (records-only Monitor) and
// advances the contact; kt monitor --once checks contacts too.
func TestContactsCommands(t *testing.T) {
	td := startDirectory(t)
	alice, bob := td.device(t), td.device(t)
	alice.ok("init")
	bob.ok("init")
	if out := alice.ok("contacts"); !strings.Contains(out, "no contacts") {
		t.Fatalf("contacts before any: %q", out)
	}
	bob.ok("register", "bob@example.com", "--token", td.token.IssueToken("mailto:bob@example.com"))
	// A sender signs with a device of its own handle (design.md 12.3).
	alice.ok("register", "alice@example.com", "--token", td.token.IssueToken("mailto:alice@example.com"))
	alice.awaitVersion("bob@example.com", 1)
	alice.awaitVersion("alice@example.com", 1)
	if _, errs, code := alice.kt("hi", "encrypt", "bob@example.com", "--out", filepath.Join(t.TempDir(), "m")); code != 0 {
		t.Fatalf("encrypt: %d %s", code, errs)
	}
	if out := alice.ok("contacts"); !strings.Contains(out, "mailto:bob@example.com  version 1") {
		t.Fatalf("contacts: %q", out)
	}
	bob.ok("device", "rekey")
	bob.awaitVersion("bob@example.com", 2)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	front := grpc.NewServer()
	ktpb.RegisterDirectoryServer(front, refuseChain{adversary.NewProxy(td.dir)})
	go front.Serve(lis)
	t.Cleanup(front.Stop)
	out, errs, code := alice.kt("", "--directory", lis.Addr().String(), "contacts", "check")
	if code != 3 || !strings.Contains(out, "contact mailto:bob@example.com ALERT") || !strings.Contains(out, "change chain does not verify") {
		t.Fatalf("contacts check, chain refused: exit %d\n%s%s", code, out, errs)
	}
	if out := alice.ok("contacts"); !strings.Contains(out, "version 1") {
		t.Fatalf("the alert advanced the contact: %q", out)
	}
	if out := alice.ok("contacts", "check"); !strings.Contains(out, "version 1 to 2, chain verified") {
		t.Fatalf("contacts check: %q", out)
	}
	var list struct {
		Contacts []struct {
			Handle  string `json:"handle"`
			Version uint64 `json:"version"`
		} `json:"contacts"`
	}
	if err := json.Unmarshal([]byte(alice.ok("--json", "contacts")), &list); err != nil || len(list.Contacts) != 1 || list.Contacts[0].Version != 2 {
		t.Fatalf("contacts --json: %v %+v", err, list)
	}
	if out := alice.ok("monitor", "--once"); !strings.Contains(out, "contact mailto:bob@example.com: version 2, unchanged") {
		t.Fatalf("monitor: %q", out)
	}
	if _, errs, code := alice.kt("", "contacts", "frob"); code != 2 || !strings.Contains(errs, "unknown command") {
		t.Fatalf("contacts frob: %d %q", code, errs)
	}
}

// TestContactAlertEvidenceFile: an alert with evidence is written to the
// evidence directory next to the state file (mode 0600) and its path
// printed; alerts are counted, other failures are not.
func TestContactAlertEvidenceFile(t *testing.T) {
	dir := t.TempDir()
	for _, js := range []bool{false, true} {
		var out bytes.Buffer
		a := &app{cfg: &Config{StateFile: filepath.Join(dir, "state.json"), JSON: js}, stdout: &out}
		bundle := []byte("kt-evidence/v2\nkind map-regression\n")
		reps := []client.ContactReport{
			{Handle: "mailto:bob@example.com", Remembered: 2, Current: 1, Err: &client.ContactChangedError{
				Handle: "mailto:bob@example.com", Remembered: 2, Current: 1, Kind: evidence.KindMapRegression, Reason: "older", Evidence: bundle}},
			{Handle: "mailto:carol@example.com", Remembered: 1, Err: fmt.Errorf("%w: carol", client.ErrContactChain)},
			{Handle: "mailto:dave@example.com", Remembered: 1, Err: errors.New("unreachable")},
			{Handle: "mailto:erin@example.com", Remembered: 1, Current: 1},
		}
		n, err := a.printContactReports(reps)
		if err != nil || n != 2 {
			t.Fatalf("json %v: %d alerts, %v", js, n, err)
		}
		es, _ := filepath.Glob(filepath.Join(dir, "evidence", "map-regression-*.txt"))
		if len(es) != 1 {
			t.Fatalf("evidence files %v", es)
		}
		if b, err := os.ReadFile(es[0]); err != nil || !bytes.Equal(b, bundle) {
			t.Fatalf("evidence file: %q %v", b, err)
		}
		if fi, _ := os.Stat(es[0]); fi.Mode().Perm() != 0o600 {
			t.Fatalf("evidence file mode %v", fi.Mode())
		}
		if !strings.Contains(out.String(), es[0]) || !strings.Contains(out.String(), "dave") {
			t.Fatalf("json %v output:\n%s", js, out.String())
		}
	}
}

// TestSkewFlag: --skew is read, and --help says that the freshness bound
// is max age plus skew.
func TestSkewFlag(t *testing.T) {
	cfg, _, _, err := loadConfig([]string{"--skew", "30s", "--max-age", "2m", "lookup", "x@example.com"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Skew != 30*time.Second || cfg.MaxAge != 2*time.Minute {
		t.Errorf("skew %v, max age %v", cfg.Skew, cfg.MaxAge)
	}
	var help bytes.Buffer
	loadConfig([]string{"--help"}, &help)
	if !strings.Contains(help.String(), "max_age + skew") || !strings.Contains(help.String(), "--skew") {
		t.Errorf("--help does not explain the freshness bound:\n%s", help.String())
	}
}
