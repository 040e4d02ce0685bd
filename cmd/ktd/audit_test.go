package main

import (
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/internal/testing/testauditor"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/witness"
)

// TestDaemonRefusesAuditPolicy: ktd refuses to start, naming the file and
// the reason and creating nothing, with an audit policy that does not
// parse, an auditor without a URL, "quorum none", or an auditor key that
// is a key of the witness policy (design.md 14.3).
func TestDaemonRefusesAuditPolicy(t *testing.T) {
	a, err := testauditor.New("a1/audit")
	if err != nil {
		t.Fatal(err)
	}
	w, err := testauditor.New("w1") // a key, as a witness's
	if err != nil {
		t.Fatal(err)
	}
	a1 := "auditor a1 " + a.VerifierKey() + " http://127.0.0.1:1\n"
	for _, tc := range []struct{ name, audit, witnesses, reason string }{
		{"does not parse", a1 + "quorum nobody\n", "", "nobody"},
		{"a witness policy", strings.Replace(a1, "auditor", "witness", 1) + "quorum a1\n", "", `"witness" line in an audit policy`},
		{"no URL", "auditor a1 " + a.VerifierKey() + "\nquorum a1\n", "", "auditor a1 has no URL"},
		{"quorum none", a1 + "quorum none\n", "", "quorum none"},
		{"key of a witness", a1 + "quorum a1\n", "witness w1 " + w.VerifierKey() + "\nwitness w2 " + a.VerifierKey() + "\ngroup g any w1 w2\nquorum g\n", "must not be a witness key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			auditFile := filepath.Join(dir, "audit-policy")
			if err := os.WriteFile(auditFile, []byte(tc.audit), 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{"--audit-policy", auditFile}
			if tc.witnesses != "" {
				wf := filepath.Join(dir, "witness-policy")
				if err := os.WriteFile(wf, []byte(tc.witnesses), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--witness-policy-file", wf)
			}
			dataDir := filepath.Join(dir, "data")
			ready := make(chan addrs, 1)
			err := run(t.Context(), testConfig(t, dataDir, args...), slog.New(slog.NewTextHandler(io.Discard, nil)), ready)
			if !errors.Is(err, directory.ErrAuditPolicy) {
				t.Fatalf("run: %v, want directory.ErrAuditPolicy", err)
			}
			if msg := err.Error(); !strings.Contains(msg, "audit_policy "+auditFile) || !strings.Contains(msg, tc.reason) {
				t.Errorf("error %q: want it to name the key, the file %s and %s", msg, auditFile, tc.reason)
			}
			select {
			case <-ready:
				t.Error("ktd bound its listeners")
			default:
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the refused start created the data directory (%v)", err)
			}
		})
	}
	// A missing file.
	err = run(t.Context(), testConfig(t, filepath.Join(t.TempDir(), "data"), "--audit-policy", "/nonexistent/audit-policy"), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err == nil || !strings.Contains(err.Error(), "audit_policy") {
		t.Errorf("run with a missing audit policy file: %v", err)
	}
}

// TestDaemonAuditPolicy is the control: with an audit policy ktd serves
// epochs whose checkpoint carries the auditor's statement, publishes the
// policy in the parameters, and exports the audit metrics.
func TestDaemonAuditPolicy(t *testing.T) {
	dataDir := t.TempDir()
	const origin = "localhost/kt" // the default log.origin
	if _, _, err := log.LoadOrCreateSigner(filepath.Join(dataDir, "log.key"), origin); err != nil {
		t.Fatal(err)
	}
	skey, err := os.ReadFile(filepath.Join(dataDir, "log.key"))
	if err != nil {
		t.Fatal(err)
	}
	vkey, err := log.VerifierKey(string(skey))
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	a, err := testauditor.New("a1/audit")
	if err != nil {
		t.Fatal(err)
	}
	a.SetLog(v)
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	t.Cleanup(a.Close)
	policy := "auditor a1 " + a.VerifierKey() + " " + srv.URL + "\nquorum a1\n"
	p, err := witness.ParseAuditPolicy([]byte(policy))
	if err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(t.TempDir(), "audit-policy")
	if err := os.WriteFile(policyFile, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}

	d := startDaemon(t, testConfig(t, dataDir, "--audit-policy", policyFile))
	c := ktpb.NewDirectoryClient(grpcConn(t, d.addrs.GRPC))
	ep := waitEpoch(t, c, 0)
	if _, err := p.Check(ep.Checkpoint); err != nil {
		t.Fatalf("the served checkpoint does not satisfy the audit policy: %v", err)
	}
	pb, err := c.GetParameters(t.Context(), &ktpb.GetParametersRequest{})
	if err != nil || pb.AuditPolicy != policy {
		t.Fatalf("GetParameters: audit_policy %q, %v", pb.GetAuditPolicy(), err)
	}
	code, body := httpGet(t, "http://"+d.addrs.Metrics+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, s := range []string{`ktd_audit_statements_total{auditor="a1",result="ok"}`, "ktd_audit_lag_seconds "} {
		if !strings.Contains(body, s) {
			t.Errorf("/metrics does not contain %q", s)
		}
	}
}
