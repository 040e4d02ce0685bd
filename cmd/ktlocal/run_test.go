package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/log/witness"
)

// TestAuditSetup: by default ktlocal gives each auditor an audit key
// distinct from its cosigning key, writes an audit policy both must
// satisfy (which ktd accepts next to the witness policy) and passes the
// key to ktauditor as audit_key; the keys survive a restart. With
// --audit=false there is none of it.
func TestAuditSetup(t *testing.T) {
	dir := t.TempDir()
	setup := func(args ...string) *deployment {
		t.Helper()
		cfg, err := loadConfig(append([]string{"--data-dir", dir}, args...), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		d := &deployment{cfg: cfg, ktdDir: filepath.Join(dir, "ktd"), policy: filepath.Join(dir, "witness-policy")}
		if cfg.Audit {
			d.auditPolicy = filepath.Join(dir, "audit-policy")
		}
		if err := os.MkdirAll(d.ktdDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := d.keys(); err != nil {
			t.Fatal(err)
		}
		if err := d.writeConfigs(); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d := setup()
	wp, err := os.ReadFile(d.policy)
	if err != nil {
		t.Fatal(err)
	}
	ap, err := os.ReadFile(filepath.Join(dir, "audit-policy"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := directory.CheckAuditPolicy(ap, wp)
	if err != nil {
		t.Fatalf("ktd would refuse the audit policy: %v", err)
	}
	if !strings.Contains(string(ap), "group auditors 2 auditor-1 auditor-2\nquorum auditors\n") {
		t.Errorf("audit policy:\n%s", ap)
	}
	for i, a := range p.Witnesses() {
		au := d.auditors[i]
		if a.Name != au.name || a.URL != "http://"+au.listen || a.Verifier().Name() != "localhost/"+au.name+"/audit" || au.auditVKey == au.vkey {
			t.Errorf("auditor %d: %+v (ktlocal's %+v)", i, a, au)
		}
		var c map[string]any
		b, err := os.ReadFile(au.config)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		if c["audit_key"] != filepath.Join(au.dir, "audit.key") {
			t.Errorf("%s: audit_key %v", au.config, c["audit_key"])
		}
	}
	if _, err := witness.ParsePolicy(wp); err != nil {
		t.Fatal(err)
	}
	// A restart keeps the keys.
	if again := setup(); again.auditors[0].auditVKey != d.auditors[0].auditVKey {
		t.Error("the audit key changed at a restart")
	}
	// Without audit mode.
	off := setup("--audit=false")
	if off.auditPolicy != "" || off.auditors[0].auditKey != "" {
		t.Errorf("--audit=false: %+v", off.auditors[0])
	}
	b, _ := os.ReadFile(off.auditors[0].config)
	if strings.Contains(string(b), "audit_key") {
		t.Errorf("--audit=false: audit_key in %s", b)
	}
}
