package auditor_test

import (
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/internal/testing/omniwitness"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/logapi"
	"github.com/keytrans/kt/log/posix"
	"github.com/keytrans/kt/log/witness"
	"github.com/keytrans/kt/vrf"
)

const dirOrigin = "example.test/kt"

// lateHandler serves a handler set after the server started (the log's
// read API exists only once the log does, and the log needs the
// auditors' URLs first).
type lateHandler struct{ h atomic.Pointer[http.Handler] }

func (l *lateHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := l.h.Load()
	if h == nil {
		http.Error(w, "not yet", http.StatusServiceUnavailable)
		return
	}
	(*h).ServeHTTP(w, r)
}

// witnessedDirectory runs directory.New over log/posix with the given
// witness policy, and returns the directory, its log and the client
// parameters it publishes (which carry the policy).
func witnessedDirectory(t *testing.T, skey string, rk ed25519.PrivateKey, policy []byte, readAPI *lateHandler) (*directory.Directory, *client.Params) {
	t.Helper()
	ctx := context.Background()
	signer, _ := note.NewSigner(skey)
	vkey, _ := log.VerifierKey(skey)
	dir := t.TempDir()
	l, err := posix.New(ctx, posix.Config{Dir: filepath.Join(dir, "log"), Origin: dirOrigin, Signer: signer,
		CheckpointInterval: 100 * time.Millisecond, WitnessPolicy: policy, WitnessTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	h := logapi.NewHandler(l, logapi.WithLogger(quiet()))
	readAPI.h.Store(&h)
	vk, err := vrf.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := directory.New(ctx, directory.Config{
		Log: l, Origin: dirOrigin, LogVerifierKey: vkey, VRFKey: vk,
		RecoveryKey: rk.Public().(ed25519.PublicKey), Credentials: directory.OpenEnrollment{},
		StateDir: filepath.Join(dir, "state"), WitnessPolicy: string(policy),
		EpochInterval: 50 * time.Millisecond, HeartbeatInterval: 500 * time.Millisecond,
		StartupWait: 10 * time.Second, Logger: quiet(),
	})
	if err != nil {
		l.Close(ctx)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d.Close(cctx)
		l.Close(cctx)
	})
	pb, err := d.GetParameters(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	params, err := client.NewParams(pb, client.Options{MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if params.Witnesses == nil || params.Witnesses.QuorumNone() {
		t.Fatal("the published parameters carry no witness policy")
	}
	return d, params
}

// enrollAndLookup enrolls a handle, waits until a lookup finds it, and
// verifies the lookup and the epoch with the client's verification core,
// which checks the witness policy's cosignatures.
func enrollAndLookup(t *testing.T, d *directory.Directory, params *client.Params, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	handle, err := api.NormalizeHandle("mailto:" + name + "@example.com")
	if err != nil {
		t.Fatal(err)
	}
	var resp *ktpb.LookupResponse
	for {
		resp, err = d.Lookup(ctx, &ktpb.LookupRequest{Handle: handle})
		if !errors.Is(err, directory.ErrUnavailable) || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond) // the first epoch is being witnessed
	}
	if err != nil {
		t.Fatal(err)
	}
	res, err := client.VerifyLookup(params, nil, handle, resp, time.Now(), nil)
	if err != nil {
		t.Fatalf("VerifyLookup of an absent handle: %v", err)
	}
	idx := res.Index
	_, sk, _ := ed25519.GenerateKey(nil)
	xk, _ := ecdh.X25519().GenerateKey(rand.Reader)
	dev := api.Device{Suite: api.SuiteX25519, HPKEKey: xk.PublicKey().Bytes(), SigningKey: [32]byte(sk.Public().(ed25519.PublicKey)), Created: 1700000000}
	rand.Read(dev.ID[:])
	set := &api.DeviceSet{Devices: []api.Device{dev}}
	rand.Read(set.AccountID[:])
	ds, _ := set.MarshalBinary()
	var opening [32]byte
	rand.Read(opening[:])
	rec := &api.ChangeRecord{Index: idx, Version: 1, Commitment: api.Commit(opening, idx, 1, ds), Kind: api.AuthEnroll, Authorizers: set.Authorizers()}
	rec.Sign(dirOrigin, sk)
	rb, _ := rec.MarshalBinary()
	if _, err := d.Enroll(ctx, &ktpb.EnrollRequest{Change: &ktpb.HandleChange{Handle: handle, ChangeRecord: rb, Opening: opening[:], DeviceSet: ds}}); err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	for {
		resp, err := d.Lookup(ctx, &ktpb.LookupRequest{Handle: handle})
		if err != nil {
			t.Fatal(err)
		}
		res, err := client.VerifyLookup(params, nil, handle, resp, time.Now(), nil)
		if err != nil {
			t.Fatalf("VerifyLookup: %v", err)
		}
		if res.Registered {
			ep, err := d.GetEpoch(ctx, &ktpb.GetEpochRequest{})
			if err != nil {
				t.Fatal(err)
			}
			e, err := client.VerifyEpoch(params, res.Trusted, ep, time.Now())
			if err != nil {
				t.Fatalf("VerifyEpoch: %v", err)
			}
			if e.Trusted().QuorumTime.IsZero() {
				t.Fatal("epoch accepted without a witness quorum time")
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("the enrollment never became visible")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// dirKeys returns a log key and a recovery key for a directory.
func dirKeys(t *testing.T) (skey, vkey string, rk ed25519.PrivateKey) {
	skey, vkey, err := note.GenerateKey(rand.Reader, dirOrigin)
	if err != nil {
		t.Fatal(err)
	}
	_, rk, _ = ed25519.GenerateKey(nil)
	return
}

func dirLogConfig(vkey string, rk ed25519.PrivateKey, url string) auditor.LogConfig {
	return auditor.LogConfig{Origin: dirOrigin, VKey: vkey, RecoveryKey: [32]byte(rk.Public().(ed25519.PublicKey)), Reader: logapi.NewClient(url, nil)}
}

// TestDirectoryWithTwoAuditorWitnesses: the directory on log/posix with a
// 2-of-2 policy of two of our auditors publishes checkpoints that the
// client accepts; both auditors also audit the directory's log through
// its read API and find no violation.
func TestDirectoryWithTwoAuditorWitnesses(t *testing.T) {
	skey, vkey, rk := dirKeys(t)
	readAPI := &lateHandler{}
	ra := httptest.NewServer(readAPI)
	defer ra.Close()
	var nodes []*node
	var policy string
	for i := range 2 {
		n := newNode(t, fmt.Sprintf("auditor%d.example", i), nodeOpts{logs: []auditor.LogConfig{dirLogConfig(vkey, rk, ra.URL)}})
		nodes = append(nodes, n)
		policy += fmt.Sprintf("witness a%d %s %s\n", i, n.vkey, n.url)
	}
	policy += "group both 2 a0 a1\nquorum both\n"
	d, params := witnessedDirectory(t, skey, rk, []byte(policy), readAPI)
	enrollAndLookup(t, d, params, "alice")
	enrollAndLookup(t, d, params, "bob")
	for i, n := range nodes {
		if err := n.a.AuditOnce(context.Background(), dirOrigin); err != nil {
			t.Fatal(err)
		}
		st := n.a.Status()[0]
		if st.Latest == nil || st.Violations != 0 || !st.HasCosigned || st.Cosigned < st.Latest.Size {
			t.Fatalf("auditor %d: %+v", i, st)
		}
	}
}

// TestDirectoryWithAuditorAndOmniwitness: the same with one of our
// auditors and an unmodified omniwitness, 2 of 2.
func TestDirectoryWithAuditorAndOmniwitness(t *testing.T) {
	skey, vkey, rk := dirKeys(t)
	owURL, owVKey := omniwitness.Start(t, omniwitness.Log{Origin: dirOrigin, VerifierKey: vkey})
	readAPI := &lateHandler{}
	ra := httptest.NewServer(readAPI)
	defer ra.Close()
	n := newNode(t, "auditor.example", nodeOpts{logs: []auditor.LogConfig{dirLogConfig(vkey, rk, ra.URL)}})
	policy := fmt.Sprintf("witness ours %s %s\nwitness omni %s %s\ngroup both 2 ours omni\nquorum both\n", n.vkey, n.url, owVKey, owURL)
	d, params := witnessedDirectory(t, skey, rk, []byte(policy), readAPI)
	enrollAndLookup(t, d, params, "carol")
	if err := n.a.AuditOnce(context.Background(), dirOrigin); err != nil {
		t.Fatal(err)
	}
	if st := n.a.Status()[0]; st.Latest == nil || st.Violations != 0 || !st.HasCosigned {
		t.Fatalf("%+v", st)
	}
}

// TestDefaultsMatchTheirOwners: the auditor's defaults that mirror another
// package's stay equal to it (the auditor does not import the client or
// the directory for a constant).
func TestDefaultsMatchTheirOwners(t *testing.T) {
	if auditor.DefaultSkew != client.DefaultSkew {
		t.Errorf("auditor.DefaultSkew %v != client.DefaultSkew %v", auditor.DefaultSkew, client.DefaultSkew)
	}
	if auditor.DefaultHeartbeat != directory.DefaultHeartbeatInterval {
		t.Errorf("auditor.DefaultHeartbeat %v != directory.DefaultHeartbeatInterval %v", auditor.DefaultHeartbeat, directory.DefaultHeartbeatInterval)
	}
}

// TestWitnessAndAuditorNoDeadlock: one auditor is the only witness of a
// directory's publication policy and, with its separate audit key, the
// auditor of its audit policy. The directory publishes (the witness
// cosigns without waiting for the audit), and the auditor then audits the
// published checkpoint on request (POST /kt/v1/audit) with a statement
// that satisfies the audit policy. Publication needs witnesses only and
// serving needs auditors: nothing waits for itself (design.md 14.2).
func TestWitnessAndAuditorNoDeadlock(t *testing.T) {
	ctx := context.Background()
	skey, vkey, rk := dirKeys(t)
	readAPI := &lateHandler{}
	ra := httptest.NewServer(readAPI)
	defer ra.Close()
	n := newNode(t, "auditor.example", nodeOpts{logs: []auditor.LogConfig{dirLogConfig(vkey, rk, ra.URL)},
		auditKey: auditKey(t, "auditor.example"), run: true})
	policy := fmt.Sprintf("witness ours %s %s\nquorum ours\n", n.vkey, n.url)
	d, params := witnessedDirectory(t, skey, rk, []byte(policy), readAPI)
	enrollAndLookup(t, d, params, "alice")
	ap, err := witness.ParseAuditPolicy([]byte(fmt.Sprintf("log %s\nauditor ours %s %s\nquorum ours\n", vkey, n.auditVKey, n.url)))
	if err != nil {
		t.Fatal(err)
	}
	if err := witness.CheckDisjoint(params.Witnesses, ap); err != nil {
		t.Fatal(err)
	}
	cp, err := logapi.NewClient(ra.URL, nil).Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := params.Witnesses.Check(cp); err != nil {
		t.Fatalf("the published checkpoint: %v", err)
	}
	a := postAudit(t, n, cp)
	if a.code != http.StatusOK {
		t.Fatalf("audit: %+v", a)
	}
	cs, err := ap.Check(append(cp, a.body...))
	if err != nil || len(cs) != 1 || cs[0].Witness != "ours" {
		t.Fatalf("the statement under the audit policy: %v %+v", err, cs)
	}
	// The statement is not a cosignature: the publication policy ignores it
	// and still counts the witness's.
	if _, err := params.Witnesses.Check(append(cp, a.body...)); err != nil {
		t.Fatal(err)
	}
}
