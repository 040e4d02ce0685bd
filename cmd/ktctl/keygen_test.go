package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keytrans/kt/log/witness"
)

// TestKeygen: keygen writes every key and both policies, which the
// policies' parsers accept; a second run keeps the keys; bad arguments
// are usage errors that write nothing.
func TestKeygen(t *testing.T) {
	out := filepath.Join(t.TempDir(), "keys")
	args := []string{"keygen", "--out", out, "--origin", "kt.example.com/log", "--auditors", "a1=http://a1:8480,a2=https://a2.example.org/"}
	runCLI(t, args...).want(t, exitOK, []string{"kt.example.com/log+", "a1 cosigning", "a2 audit", "2 of 2"})
	read := func(p string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(out, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, p := range []string{"ktd/log.key", "ktd/vrf.key", "ktd/recovery.key", "ktd/enroll-token.key", "a1/auditor.key", "a1/audit.key", "a2/auditor.key", "a2/audit.key"} {
		st, err := os.Stat(filepath.Join(out, p))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v: want a private file", p, err, st.Mode())
		}
	}
	wp, err := witness.ParsePolicy([]byte(read("public/witness-policy")))
	if err != nil {
		t.Fatal(err)
	}
	ap, err := witness.ParseAuditPolicy([]byte(read("public/audit-policy")))
	if err != nil {
		t.Fatal(err)
	}
	if err := witness.CheckDisjoint(wp, ap); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(read("public/witness-policy"), "witness a2 ") || !strings.Contains(read("public/witness-policy"), " https://a2.example.org\n") {
		t.Errorf("witness policy:\n%s", read("public/witness-policy"))
	}
	if !strings.HasPrefix(read("public/log.vkey"), "kt.example.com/log+") || !strings.HasPrefix(read("public/recovery.pub"), "kt-recovery-public:") || !strings.HasPrefix(read("public/vrf.pub"), "kt-vrf-public:") {
		t.Error("public keys malformed")
	}
	logKey, vkey := read("ktd/log.key"), read("public/log.vkey")
	// Again, with one quorum less: the keys stay, the policies change.
	runCLI(t, append(args, "--quorum", "1")...).want(t, exitOK, []string{"1 of 2"})
	if read("ktd/log.key") != logKey || read("public/log.vkey") != vkey {
		t.Error("a second keygen replaced the log key")
	}
	if !strings.Contains(read("public/audit-policy"), "group auditors 1 a1 a2") {
		t.Errorf("audit policy:\n%s", read("public/audit-policy"))
	}
	// Another origin with the same keys: refused (the log key names the origin).
	runCLI(t, "keygen", "--out", out, "--origin", "other.example/log", "--auditors", "a1=http://a1:8480").want(t, exitIO, nil, "origin")
	for name, bad := range map[string][]string{
		"no out":         {"--origin", "o/log", "--auditors", "a=http://a"},
		"no origin":      {"--out", out + "2", "--auditors", "a=http://a"},
		"no auditors":    {"--out", out + "2", "--origin", "o/log"},
		"no url":         {"--out", out + "2", "--origin", "o/log", "--auditors", "a"},
		"ftp url":        {"--out", out + "2", "--origin", "o/log", "--auditors", "a=ftp://a"},
		"same name":      {"--out", out + "2", "--origin", "o/log", "--auditors", "a=http://a,a=http://b"},
		"quorum too big": {"--out", out + "2", "--origin", "o/log", "--auditors", "a=http://a", "--quorum", "2"},
	} {
		r := runCLI(t, append([]string{"keygen"}, bad...)...)
		if r.code != exitUsage {
			t.Errorf("%s: exit status %d, want %d (%s)", name, r.code, exitUsage, r.stderr)
		}
		if _, err := os.Stat(out + "2"); err == nil {
			t.Errorf("%s: wrote %s", name, out+"2")
		}
	}
}
