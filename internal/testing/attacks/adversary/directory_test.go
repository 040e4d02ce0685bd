package adversary

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/log/witness"
	"github.com/keytrans/kt/smt"
	"github.com/keytrans/kt/vrf"
)

const testOrigin = "adversary.example/kt"

// testDir is a dishonest directory on an in-memory log, served over gRPC
// on loopback, with clients pinned to its parameters.
type testDir struct {
	*Directory
	log    *conformance.MemoryLog
	dir    ktpb.DirectoryClient
	logc   ktpb.LogClient
	params *client.Params
}

func newTestDir(t *testing.T, auditPolicy string) *testDir {
	t.Helper()
	ctx := t.Context()
	skey, vkey, err := note.GenerateKey(rand.Reader, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	vk, _ := vrf.GenerateKey(nil)
	_, rk, _ := ed25519.GenerateKey(nil)
	ml := conformance.NewMemoryLog(testOrigin, signer)
	d, err := NewDirectory(ctx, DirectoryConfig{Origin: testOrigin, Log: ml, LogVKey: vkey, VRF: vk, Recovery: rk, AuditPolicy: auditPolicy})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	ktpb.RegisterDirectoryServer(srv, d)
	ktpb.RegisterLogServer(srv, d)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	td := &testDir{Directory: d, log: ml, dir: ktpb.NewDirectoryClient(cc), logc: ktpb.NewLogClient(cc)}
	pb, err := td.dir.GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if pb.AuditPolicy != auditPolicy {
		t.Fatalf("parameters carry audit policy %q", pb.AuditPolicy)
	}
	if td.params, err = client.NewParams(pb, client.Options{InsecureNoWitnesses: true}); err != nil {
		t.Fatal(err)
	}
	return td
}

func (td *testDir) device(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.New(td.dir, td.params, &client.MemStore{}, client.Config{Log: td.logc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Init(t.Context(), api.HPKESuite{}); err != nil {
		t.Fatal(err)
	}
	return c
}

func (td *testDir) closeEpoch(t *testing.T, o ...smt.Update) *Epoch {
	t.Helper()
	ep, err := td.CloseEpoch(t.Context(), o...)
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

// ghostChange is version res.Version+1 of res's handle adding a ghost
// device, signed by the ghost's own key: not an authorizer of the
// previous version (R5).
func ghostChange(t *testing.T, res *client.LookupResult) *ktpb.HandleChange {
	t.Helper()
	g, err := client.GenerateDevice(api.SuiteX25519, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	set := &api.DeviceSet{AccountID: res.DeviceSet.AccountID, Devices: slices.Clone(res.DeviceSet.Devices)}
	AddDevice(set, g.Device())
	hc, err := client.NewChange(testOrigin, res, set, api.AuthDevice, g.Signing)
	if err != nil {
		t.Fatal(err)
	}
	return hc
}

// TestDirectory: real clients over gRPC enroll and look up through the
// dishonest directory as through an honest one; then it logs a change
// that breaks R5 and maps it (the sender sees the ghost), and in the
// next epoch points the index back at the honest record (the sender sees
// the honest set; the owner's monitor finds an intact chain). A change
// the rules refuse is refused by Submit.
func TestDirectory(t *testing.T) {
	ctx := t.Context()
	td := newTestDir(t, "")
	bob, sender := td.device(t), td.device(t)
	if _, err := bob.Enroll(ctx, "bob@example.com", "any", false); err != nil {
		t.Fatal(err)
	}
	td.closeEpoch(t)
	honest, err := sender.Lookup(ctx, "bob@example.com")
	if err != nil || honest.Version != 1 || len(honest.Recipients) != 1 {
		t.Fatalf("control lookup: %+v, %v", honest, err)
	}
	if _, err := bob.Monitor(ctx); err != nil {
		t.Fatalf("control monitor: %v", err)
	}

	hc := ghostChange(t, honest)
	if _, err := td.Submit(ctx, hc); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Submit of an R5 violation: %v, want PermissionDenied", err)
	}
	forged, err := td.AppendForged(ctx, hc, true)
	if err != nil {
		t.Fatal(err)
	}
	bobV1, err := td.Record(honest.LeafHash)
	if err != nil {
		t.Fatal(err)
	}
	var ae *api.AuthError
	if err := api.CheckChange(testOrigin, bobV1.Change.State(bobV1.Entry), forged.Change, td.recovery); !errors.As(err, &ae) || ae.Rule != api.RuleDevice {
		t.Fatalf("the forged change breaks %v, want R5 device", err)
	}
	epN := td.closeEpoch(t)
	ghost, err := sender.Lookup(ctx, "bob@example.com")
	if err != nil || ghost.Version != 2 || len(ghost.Recipients) != 2 {
		t.Fatalf("lookup in epoch N: %+v, %v (want the ghost)", ghost, err)
	}
	entries, err := td.log.Entries(ctx, forged.LogIndex, forged.LogIndex+1)
	if err != nil || !bytes.Equal(entries[0], forged.Entry) {
		t.Fatalf("the forged record is not logged at %d", forged.LogIndex)
	}

	td.closeEpoch(t, Point(bobV1))
	back, err := sender.Lookup(ctx, "bob@example.com")
	if err != nil || back.Version != 1 || back.LeafHash != honest.LeafHash {
		t.Fatalf("lookup in epoch N+1: %+v, %v (want Bob's honest record)", back, err)
	}
	reps, err := bob.Monitor(ctx)
	if err != nil || len(reps) != 1 || len(reps[0].Alerts) != 0 {
		t.Fatalf("Bob's monitor in N+1: %v %+v (want an intact chain, no alert)", err, reps)
	}

	// Monitor as of N+1 from version 0, records only: the honest record,
	// without opening or set.
	mr, err := td.dir.Monitor(ctx, &ktpb.MonitorRequest{Index: honest.Index[:], RecordsOnly: true})
	if err != nil || len(mr.Changes) != 1 || mr.Changes[0].Opening != nil || mr.Changes[0].DeviceSet != nil || !bytes.Equal(mr.Changes[0].ChangeRecord, bobV1.Entry) {
		t.Fatalf("records-only monitor: %v %+v", err, mr)
	}
	// An observer of epoch N sees the forged chain (versions 1 and 2).
	td.Serve(epN)
	mr, err = td.dir.Monitor(ctx, &ktpb.MonitorRequest{Index: honest.Index[:]})
	if err != nil || len(mr.Changes) != 2 || mr.Changes[1].LogIndex != forged.LogIndex || len(mr.Changes[1].DeviceSet) == 0 {
		t.Fatalf("monitor of epoch N: %v %+v", err, mr)
	}
	if _, err := client.VerifyObserved(td.params, honest.Index, mr, time.Now()); err != nil {
		t.Fatalf("the forged chain of epoch N does not verify for an observer: %v", err)
	}
}

// TestDirectoryUnloggedRecord: a map override pointing Bob's index at a
// record the log never saw (A11 variant 2): lookups verify, the log does
// not hold the record, and Monitor cannot prove it.
func TestDirectoryUnloggedRecord(t *testing.T) {
	ctx := t.Context()
	td := newTestDir(t, "")
	bob, sender := td.device(t), td.device(t)
	if _, err := bob.Enroll(ctx, "bob@example.com", "any", false); err != nil {
		t.Fatal(err)
	}
	td.closeEpoch(t)
	honest, err := sender.Lookup(ctx, "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	r, err := td.Keep(ghostChange(t, honest))
	if err != nil {
		t.Fatal(err)
	}
	ep := td.closeEpoch(t, Point(r))
	res, err := sender.Lookup(ctx, "bob@example.com")
	if err != nil || res.Version != 2 || len(res.Recipients) != 2 {
		t.Fatalf("lookup: %+v, %v (want the unlogged record)", res, err)
	}
	all, err := td.log.Entries(ctx, 0, ep.Size())
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(all, func(e []byte) bool { return bytes.Equal(e, r.Entry) }) || r.Logged {
		t.Fatal("the record is in the log")
	}
	if _, err := td.dir.Monitor(ctx, &ktpb.MonitorRequest{Index: honest.Index[:]}); status.Code(err) != codes.Unavailable {
		t.Fatalf("monitor of an unlogged record: %v, want Unavailable", err)
	}
}

// fakeAuditor answers POST /kt/v1/audit with a statement by its audit key
// while allow is set, 403 otherwise, and 503 (Retry-After: 0) to the first
// busy requests.
type fakeAuditor struct {
	name, vkey, url string
	signer          atomic.Pointer[note.Signer]
	allow           atomic.Bool
	busy            atomic.Int32
	requests        atomic.Int32
}

func newFakeAuditor(t *testing.T, name string) *fakeAuditor {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name+"/audit")
	if err != nil {
		t.Fatal(err)
	}
	a := &fakeAuditor{name: name}
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	var ns note.Signer = s
	a.signer.Store(&ns)
	if a.vkey, err = fnote.VKeyToCosignatureV1(vkey); err != nil {
		t.Fatal(err)
	}
	a.allow.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.requests.Add(1)
		if r.Method != http.MethodPost || r.URL.Path != "/kt/v1/audit" {
			http.NotFound(w, r)
			return
		}
		if a.busy.Add(-1) >= 0 {
			w.Header().Set("Retry-After", "0")
			http.Error(w, "auditing", http.StatusServiceUnavailable)
			return
		}
		if !a.allow.Load() {
			http.Error(w, "R5 device at index 3", http.StatusForbidden)
			return
		}
		var body bytes.Buffer
		body.ReadFrom(r.Body)
		text, _, _ := strings.Cut(body.String(), "\n\n")
		signed, err := note.Sign(&note.Note{Text: text + "\n"}, *a.signer.Load())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write(signed[len(text)+2:])
	}))
	t.Cleanup(srv.Close)
	a.url = srv.URL
	return a
}

// TestDirectoryAudit: with an audit policy the directory serves only
// epochs its auditors vouch for (retrying 503), keeps serving the last
// audited one when an auditor refuses, and serves an unaudited one only
// when forced; the served note carries the statements.
func TestDirectoryAudit(t *testing.T) {
	ctx := t.Context()
	a1, a2 := newFakeAuditor(t, "auditor-1"), newFakeAuditor(t, "auditor-2")
	policy := fmt.Sprintf("auditor auditor-1 %s %s\nauditor auditor-2 %s %s\ngroup auditors 2 auditor-1 auditor-2\nquorum auditors\n", a1.vkey, a1.url, a2.vkey, a2.url)
	pol, err := witness.ParseAuditPolicy([]byte(policy))
	if err != nil {
		t.Fatal(err)
	}
	td := newTestDir(t, policy)
	if _, err := td.dir.GetEpoch(ctx, &ktpb.GetEpochRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("GetEpoch before any audit: %v, want Unavailable", err)
	}
	a1.busy.Store(2)
	ep0 := td.Epochs()[0]
	if err := td.Audit(ctx, ep0); err != nil {
		t.Fatalf("audit of epoch 0: %v (answers %+v)", err, ep0.Audit)
	}
	if n := a1.requests.Load(); n != 3 {
		t.Errorf("auditor-1 got %d requests, want 2 answered 503 and 1", n)
	}
	part, err := td.dir.GetEpoch(ctx, &ktpb.GetEpochRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if cs, err := pol.Check(part.Checkpoint); err != nil || len(cs) != 2 {
		t.Fatalf("served note: %d statements, %v", len(cs), err)
	}
	sender := td.device(t)
	if res, err := sender.Lookup(ctx, "bob@example.com"); err != nil || len(res.Epoch.AuditStatements) != 2 {
		t.Fatalf("a client of the audit policy: %v (%+v)", err, res)
	}

	a2.allow.Store(false)
	ep1 := td.closeEpoch(t)
	var pe *witness.PolicyError
	if ep1.Audited || td.Served() != ep0 {
		t.Fatalf("an epoch auditor-2 refused is served")
	}
	if ep1.Audit[1].Status != http.StatusForbidden || !ep1.Audit[0].Valid || ep1.Audit[1].Valid {
		t.Fatalf("answers %+v", ep1.Audit)
	}
	if err := td.Audit(ctx, ep1); !errors.As(err, &pe) || !slices.Equal(pe.Cosigned, []string{"auditor-1"}) {
		t.Fatalf("verdict %v, want a PolicyError with auditor-1 only", err)
	}
	td.Serve(ep1)
	part, err = td.dir.GetEpoch(ctx, &ktpb.GetEpochRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pol.Check(part.Checkpoint); !errors.As(err, &pe) {
		t.Fatalf("forced epoch: %v, want the policy not satisfied", err)
	}
	if size, _ := checkpointSize(part.Checkpoint); size != ep1.Size() {
		t.Fatalf("forced epoch of size %d, want %d", size, ep1.Size())
	}
	if _, err := sender.Lookup(ctx, "bob@example.com"); !errors.Is(err, client.ErrAuditQuorum) {
		t.Fatalf("a client of the audit policy on the forced epoch: %v, want ErrAuditQuorum", err)
	}

	// A bad statement line is ignored.
	a2.allow.Store(true)
	a2.signer.Store(a1.signer.Load())
	ep2 := td.closeEpoch(t)
	if ep2.Audited || ep2.Audit[1].Status != http.StatusOK || ep2.Audit[1].Valid {
		t.Fatalf("a statement by the wrong key was counted: %+v", ep2.Audit)
	}
}
