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

	"github.com/transparency-dev/tessera"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/internal/testing/testwitness"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/witness"
)

// TestDaemonRefusesPolicyClientsReject: ktd refuses to start with a witness
// policy that Tessera's parser (the embedded backend's) accepts but
// witness.ParsePolicy (the clients', auditors' and ktctl's) rejects, names
// the file and the reason, and creates nothing.
func TestDaemonRefusesPolicyClientsReject(t *testing.T) {
	wit, err := testwitness.New("witness.example")
	if err != nil {
		t.Fatal(err)
	}
	w1 := "witness w1 " + wit.VerifierKey() + " http://127.0.0.1:1\n"
	w2 := "witness w2 " + wit.VerifierKey() + " http://127.0.0.1:2\n"
	for _, tc := range []struct{ name, policy, reason string }{
		{"threshold 0", w1 + "group g 0 w1\nquorum g\n", "line 2"},
		{"two quorum lines", w1 + "quorum w1\nquorum none\n", "line 3"},
		{"two witnesses with one key", w1 + w2 + "group g any w1 w2\nquorum g\n", "line 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tessera.NewWitnessGroupFromPolicy([]byte(tc.policy)); err != nil {
				t.Fatalf("Tessera rejects the policy (%v): the case tests nothing", err)
			}
			dir := t.TempDir()
			policyFile := filepath.Join(dir, "policy")
			if err := os.WriteFile(policyFile, []byte(tc.policy), 0o600); err != nil {
				t.Fatal(err)
			}
			dataDir := filepath.Join(dir, "data")
			cfg := testConfig(t, dataDir, "--witness-policy-file", policyFile)
			ready := make(chan addrs, 1)
			err := run(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ready)
			if err == nil {
				t.Fatal("ktd started with a policy witness.ParsePolicy rejects")
			}
			if _, ok := errors.AsType[*witness.ParseError](err); !ok {
				t.Errorf("error %v: want a *witness.ParseError", err)
			}
			if msg := err.Error(); !strings.Contains(msg, "witness.policy_file "+policyFile) || !strings.Contains(msg, tc.reason) {
				t.Errorf("error %q: want it to name the key, the file %s and %s", msg, policyFile, tc.reason)
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
}

// TestDaemonWitnessPolicy is the control: with a valid policy, ktd starts
// and publishes checkpoints cosigned by the policy's witness.
func TestDaemonWitnessPolicy(t *testing.T) {
	dataDir := t.TempDir()
	const origin = "localhost/kt" // the default log.origin
	// The log key, created before ktd starts so that the witness knows it.
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
	wit, err := testwitness.New("witness.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := wit.AddLog(origin, vkey); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(wit)
	t.Cleanup(srv.Close)
	policy := []byte("witness w1 " + wit.VerifierKey() + " " + srv.URL + "\nquorum w1\n")
	p, err := witness.ParsePolicy(policy)
	if err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(t.TempDir(), "policy")
	if err := os.WriteFile(policyFile, policy, 0o600); err != nil {
		t.Fatal(err)
	}

	d := startDaemon(t, testConfig(t, dataDir, "--witness-policy-file", policyFile))
	ep := waitEpoch(t, ktpb.NewDirectoryClient(grpcConn(t, d.addrs.GRPC)), 0)
	if _, err := p.Check(ep.Checkpoint); err != nil {
		t.Fatalf("the published checkpoint does not satisfy the policy: %v", err)
	}
	if _, ok := wit.Size(origin); !ok {
		t.Fatal("the witness cosigned nothing")
	}
}
