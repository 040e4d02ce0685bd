package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/client"
)

var codeRE = regexp.MustCompile(`[0-9]{5}( [0-9]{5}){5}`)

// TestVerifyCommands: kt verify prints the same code on both sides with
// what it is derived from; a wrong code is refused and pins nothing; the
// right one pins the contact, which kt contacts lists; a ghost the
// recovery path writes to the verified contact fails kt encrypt and is an
// alert in kt contacts check and kt monitor naming the contact, until kt
// verify --forget and a new code.
func TestVerifyCommands(t *testing.T) {
	td := startDirectory(t)
	alice, bob := td.device(t), td.device(t)
	alice.ok("init")
	bob.ok("init")
	alice.ok("register", "alice@example.com", "--account-key", "--token", td.token.IssueToken("mailto:alice@example.com"))
	bob.ok("register", "bob@example.com", "--account-key", "--token", td.token.IssueToken("mailto:bob@example.com"))
	alice.awaitVersion("bob@example.com", 1)
	bob.awaitVersion("alice@example.com", 1)

	out := alice.ok("verify", "bob@example.com")
	code := codeRE.FindString(out)
	if code == "" || !strings.Contains(out, "mailto:bob@example.com  account key") || !strings.Contains(out, "mailto:alice@example.com  account key") ||
		!strings.Contains(out, "kt verify mailto:bob@example.com "+strings.ReplaceAll(code, " ", "-")) {
		t.Fatalf("kt verify:\n%s", out)
	}
	var bj struct {
		Code     string `json:"code"`
		Handle   string `json:"handle"`
		Verified bool   `json:"verified"`
	}
	if err := json.Unmarshal([]byte(bob.ok("--json", "verify", "alice@example.com")), &bj); err != nil || bj.Code != code || bj.Handle != "mailto:alice@example.com" || bj.Verified {
		t.Fatalf("Bob's code %+v (%v), Alice's %q", bj, err, code)
	}

	// A wrong code: refused, nothing pinned.
	wrong := []byte(code)
	wrong[len(wrong)-1] = '0' + (wrong[len(wrong)-1]-'0'+1)%10
	if out, errs, st := alice.kt("", "verify", "bob@example.com", string(wrong)); st != 1 || !strings.Contains(errs, "does not match") || !strings.Contains(errs, "mailto:bob@example.com") {
		t.Fatalf("wrong code: exit %d\n%s%s", st, out, errs)
	}
	if out := alice.ok("contacts"); !strings.Contains(out, "no contacts") {
		t.Fatalf("contacts after a wrong code: %q", out)
	}

	// The right code, as six arguments.
	out = alice.ok(append([]string{"verify", "bob@example.com"}, strings.Fields(code)...)...)
	if !strings.Contains(out, "mailto:bob@example.com verified") {
		t.Fatalf("kt verify CODE: %q", out)
	}
	if out := alice.ok("contacts"); !strings.Contains(out, "mailto:bob@example.com  VERIFIED account key") {
		t.Fatalf("contacts: %q", out)
	}
	if out := alice.ok("verify", "bob@example.com"); !strings.Contains(out, "is verified (since") || !strings.Contains(out, code) {
		t.Fatalf("kt verify of a verified contact: %q", out)
	}
	if out := alice.ok("contacts", "check"); !strings.Contains(out, "contact mailto:bob@example.com: version 1, verified identity unchanged") {
		t.Fatalf("contacts check: %q", out)
	}

	// The recovery path writes a ghost (and no account key) to Bob.
	lc, err := client.New(td.dir, mustParams(t, td), &client.MemStore{}, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	g, _ := client.GenerateDevice(api.SuiteX25519, time.Now())
	if _, err := td.dep.Recover(t.Context(), lc, "bob@example.com", func(s *api.DeviceSet) {
		s.Devices = append(s.Devices, g.Device())
		if string(s.Devices[1].ID[:]) < string(s.Devices[0].ID[:]) {
			s.Devices[0], s.Devices[1] = s.Devices[1], s.Devices[0]
		}
	}); err != nil {
		t.Fatal(err)
	}
	if out, errs, st := alice.kt("hi", "encrypt", "bob@example.com"); st != 1 || !strings.Contains(errs, "verified contact's identity changed: mailto:bob@example.com") || out != "" {
		t.Fatalf("encrypt to the changed contact: exit %d\n%s%s", st, out, errs)
	}
	for _, args := range [][]string{{"contacts", "check"}, {"monitor", "--once"}} {
		if out, errs, st := alice.kt("", args...); st != 3 || !strings.Contains(out, "contact mailto:bob@example.com ALERT") || !strings.Contains(out, "verified contact") {
			t.Fatalf("kt %s: exit %d\n%s%s", strings.Join(args, " "), st, out, errs)
		}
	}

	// Verify again: forget, then a new code (Bob's own device now refuses
	// to give one: its handle no longer carries its account key).
	if out := alice.ok("verify", "--forget", "bob@example.com"); !strings.Contains(out, "verification removed") {
		t.Fatalf("forget: %q", out)
	}
	if out := alice.ok("verify", "--forget", "bob@example.com"); !strings.Contains(out, "was not verified") {
		t.Fatalf("forget again: %q", out)
	}
	if out := alice.ok("verify", "bob@example.com"); codeRE.FindString(out) == code || !strings.Contains(out, "no account key: the code changes whenever a device") {
		t.Fatalf("code after the recovery: %q", out)
	}
	if _, errs, st := bob.kt("", "verify", "alice@example.com"); st != 1 || !strings.Contains(errs, "own handle's logged identity is not this device's") {
		t.Fatalf("Bob's code with his handle recovered: exit %d %s", st, errs)
	}

	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"verify"}, "usage: kt verify"},
		{[]string{"verify", "--forget", "a@example.com", "1"}, "usage: kt verify"},
		{[]string{"lookup", "a@example.com", "--forget"}, "--forget not valid"},
	} {
		if _, errs, st := alice.kt("", c.args...); st != 2 || !strings.Contains(errs, c.msg) {
			t.Errorf("kt %v: exit %d %q", c.args, st, errs)
		}
	}
	if _, errs, st := alice.kt("", "verify", "bob@example.com", "12345"); st != 1 || !strings.Contains(errs, "invalid verification code") {
		t.Errorf("short code: exit %d %q", st, errs)
	}
}
