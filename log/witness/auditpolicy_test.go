package witness_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keytrans/kt/log/witness"
)

func TestParseAuditPolicy(t *testing.T) {
	a1, a2 := testVKey(t, "auditor1.example/audit"), testVKey(t, "auditor2.example/audit")
	text := "auditor a1 " + a1 + " https://a1.example/\nauditor a2 " + a2 + "\ngroup auditors 2 a1 a2\nquorum auditors\n"
	p, err := witness.ParseAuditPolicy([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if ws := p.Witnesses(); len(ws) != 2 || ws[0].URL != "https://a1.example/" || ws[1].Name != "a2" {
		t.Fatalf("auditors = %+v", ws)
	}
	// The two kinds of file cannot be swapped.
	if _, err := witness.ParsePolicy([]byte(text)); err == nil || !strings.Contains(err.Error(), `"auditor" line in a witness policy`) {
		t.Errorf("ParsePolicy of an audit policy: %v", err)
	}
	wtext := strings.ReplaceAll(text, "auditor ", "witness ")
	if _, err := witness.ParseAuditPolicy([]byte(wtext)); err == nil || !strings.Contains(err.Error(), `"witness" line in an audit policy`) {
		t.Errorf("ParseAuditPolicy of a witness policy: %v", err)
	}
	// "auditor" is a keyword, not a name.
	if _, err := witness.ParseAuditPolicy([]byte("auditor auditor " + a1 + "\nquorum auditor\n")); err == nil {
		t.Error("a member named auditor was accepted")
	}
	w, err := witness.ParsePolicy([]byte(wtext))
	if err != nil {
		t.Fatal(err)
	}
	if err := witness.CheckDisjoint(w, p); err == nil || !strings.Contains(err.Error(), "must not be a witness key") {
		t.Errorf("CheckDisjoint with shared keys: %v", err)
	}
	other, err := witness.ParsePolicy([]byte("witness w " + testVKey(t, "w.example") + "\nquorum w\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := witness.CheckDisjoint(other, p); err != nil {
		t.Errorf("CheckDisjoint with distinct keys: %v", err)
	}
}

func testVKey(t *testing.T, name string) string { return newCosigner(t, name).VKey() }

// TestAuditPolicyGolden parses the audit policy of testdata (the shape
// ktlocal writes, with real keys) and checks what each line gave.
func TestAuditPolicyGolden(t *testing.T) {
	p, err := witness.ReadAuditPolicyFile("testdata/audit-policy.txt")
	if err != nil {
		t.Fatal(err)
	}
	ws := p.Witnesses()
	if len(ws) != 2 || ws[0].Name != "auditor-1" || ws[1].URL != "http://127.0.0.1:8482" ||
		ws[0].Verifier().Name() != "localhost/auditor-1/audit" || ws[1].Verifier().KeyHash() != 0x2604110a {
		t.Fatalf("auditors %+v", ws)
	}
	if got, want := p.Quorum(), "auditors = 2 of {auditor-1, auditor-2}"; got != want {
		t.Errorf("quorum %q, want %q", got, want)
	}
	if _, err := witness.ReadPolicyFile("testdata/audit-policy.txt"); err == nil {
		t.Error("the audit policy parsed as a witness policy")
	}
}

// TestCheckStatementTime: the two bounds of a statement's date, the lower
// one on the epoch's second.
func TestCheckStatementTime(t *testing.T) {
	epoch := time.Date(2026, 1, 1, 12, 0, 1, 900e6, time.UTC) // 12:00:01.900
	now := epoch.Add(time.Second)
	skew := 100 * time.Millisecond
	for _, c := range []struct {
		at   time.Time
		want string // "" when counted
	}{
		{epoch.Truncate(time.Second), ""},
		{now.Truncate(time.Second), ""},
		{now.Add(time.Second), "after now + skew"},
		{epoch.Truncate(time.Second).Add(-time.Second), "before the epoch's timestamp"},
	} {
		err := witness.CheckStatementTime(c.at, epoch, now, skew)
		if (c.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("statement at %v: %v, want %q", c.at, err, c.want)
		}
	}
}
