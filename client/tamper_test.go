package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
)

// tamperDir is a Directory client that changes every Lookup answer of the
// real directory with tamper before the client sees it.
type tamperDir struct {
	ktpb.DirectoryClient
	tamper  func(*ktpb.LookupResponse) *ktpb.LookupResponse
	monitor func(*ktpb.MonitorResponse)
}

func (d *tamperDir) Monitor(ctx context.Context, req *ktpb.MonitorRequest, opts ...grpc.CallOption) (*ktpb.MonitorResponse, error) {
	resp, err := d.DirectoryClient.Monitor(ctx, req, opts...)
	if err != nil || d.monitor == nil {
		return resp, err
	}
	resp = proto.Clone(resp).(*ktpb.MonitorResponse)
	d.monitor(resp)
	return resp, nil
}

func (d *tamperDir) Lookup(ctx context.Context, req *ktpb.LookupRequest, opts ...grpc.CallOption) (*ktpb.LookupResponse, error) {
	resp, err := d.DirectoryClient.Lookup(ctx, req, opts...)
	if err != nil || d.tamper == nil {
		return resp, err
	}
	return d.tamper(proto.Clone(resp).(*ktpb.LookupResponse)), nil
}

// rewriteSig replaces the signature line of key name in a signed note with
// f's result (nil removes the line).
func rewriteSig(t *testing.T, n []byte, name string, f func(sig []byte) []byte) []byte {
	t.Helper()
	lines := strings.SplitAfter(string(n), "\n")
	var out strings.Builder
	found := false
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(l, "— "+name+" "); ok {
			found = true
			sig, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(rest, "\n"))
			if err != nil {
				t.Fatal(err)
			}
			if sig = f(sig); sig == nil {
				continue
			}
			l = "— " + name + " " + base64.StdEncoding.EncodeToString(sig) + "\n"
		}
		out.WriteString(l)
	}
	if !found {
		t.Fatalf("no signature by %s in %q", name, n)
	}
	return []byte(out.String())
}

func flipLast(b []byte) []byte {
	b = bytes.Clone(b)
	b[len(b)-1] ^= 1
	return b
}

// awaitEpochAfter waits until the directory's epoch checkpoint is larger
// than size.
func (e *netEnv) awaitEpochAfter(size uint64) {
	e.t.Helper()
	deadline := time.Now().Add(netWait)
	for {
		p, err := e.dir.GetEpoch(e.t.Context(), &ktpb.GetEpochRequest{})
		if err != nil {
			e.t.Fatal(err)
		}
		r, err := api.ParseEpochRecord(p.GetEpochRecord())
		if err != nil {
			e.t.Fatal(err)
		}
		if r.LogSize+1 > size {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no epoch after size %d", size)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTamperedLookups takes real answers of a real directory over gRPC,
// changes exactly one verified part of each, and checks that Encrypt fails
// with the step's typed error, returns no envelope and stores nothing.
//
// Step 6's R7 check (ErrAuthorizers) and step 5's record index check
// cannot be reached through a real directory, which refuses such records
// before logging them and whose map holds only records of their own index;
// the simulator tests of verify_lookup_test.go cover them.
func TestTamperedLookups(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	bob := e.device(client.Config{})
	e.enroll(bob, "bob@example.com", true)
	bobRes, err := bob.Lookup(ctx, "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	witnessName := e.params.Witnesses.Witnesses()[0].Verifier().Name()

	// Eve's device publishes a P-256 HPKE key that does not deserialize.
	eve := e.device(client.Config{})
	eres, err := eve.Lookup(ctx, "eve@example.com")
	if err != nil {
		t.Fatal(err)
	}
	est, _ := eve.State(ctx)
	bad := est.Device.Device()
	bad.Suite = api.HPKESuite{KEM: api.KEMP256HKDFSHA256, KDF: api.KDFHKDFSHA256, AEAD: api.AEADAES128GCM}
	bad.HPKEKey = make([]byte, 65) // not a point: the 0x00 prefix is invalid
	var acct [16]byte
	rand.Read(acct[:])
	hc, err := client.NewChange(netOrigin, eres, &api.DeviceSet{AccountID: acct, Devices: []api.Device{bad}}, api.AuthEnroll, est.Device.Signing)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.dir.Enroll(ctx, &ktpb.EnrollRequest{Change: hc, Credential: e.token.IssueToken(eres.Handle)}); err != nil {
		t.Fatalf("enrolling Eve's unusable key: %v", err)
	}
	for deadline := time.Now().Add(netWait); ; {
		r, err := e.dir.Lookup(ctx, &ktpb.LookupRequest{Handle: eres.Handle})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.ChangeRecord) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Eve's enrollment not visible")
		}
		time.Sleep(10 * time.Millisecond)
	}

	type tc struct {
		name   string
		handle string
		// warm: the client has a trusted checkpoint from an earlier
		// epoch; old is the answer it got then.
		warm   bool
		cfg    client.Config
		pin    bool
		tamper func(resp, old *ktpb.LookupResponse) *ktpb.LookupResponse
		want   error
		step   string
	}
	cases := []tc{
		{name: "malformed VRF proof", tamper: func(r, _ *ktpb.LookupResponse) *ktpb.LookupResponse {
			r.VrfProof = r.VrfProof[:79]
			return r
		}, want: client.ErrMalformed, step: client.StepParse},
		{name: "checkpoint signature", tamper: func(r, _ *ktpb.LookupResponse) *ktpb.LookupResponse {
			r.Epoch.Checkpoint = rewriteSig(t, r.Epoch.Checkpoint, netOrigin, flipLast)
			return r
		}, want: client.ErrCheckpointSignature, step: client.StepCheckpoint},
		{name: "witness cosignature removed", tamper: func(r, _ *ktpb.LookupResponse) *ktpb.LookupResponse {
			r.Epoch.Checkpoint = rewriteSig(t, r.Epoch.Checkpoint, witnessName, func([]byte) []byte { return nil })
			return r
		}, want: client.ErrWitnessQuorum, step: client.StepWitnesses},
		{name: "witness cosignature invalid", tamper: func(r, _ *ktpb.LookupResponse) *ktpb.LookupResponse {
			r.Epoch.Checkpoint = rewriteSig(t, r.Epoch.Checkpoint, witnessName, flipLast)
			return r
		}, want: client.ErrWitnessQuorum, step: client.StepWitnesses},
		{name: "rollback to an older epoch", warm: true, tamper: func(_, old *ktpb.LookupResponse) *ktpb.LookupResponse {
			return old
		}, want: client.ErrRollback, step: client.StepConsistency},
		{name: "consistency proof", warm: true, tamper: func(r, _ *ktpb.LookupResponse) *ktpb.LookupResponse {
			if len(r.Epoch.ConsistencyProof) == 0 {
				t.Fatal("no consistency proof to tamper with")
			}
			r.Epoch.ConsistencyProof[0] = flipLast(r.Epoch.ConsistencyProof[0])
			return r
		}, want: client.ErrInconsistent, step: client.StepConsistency},
		{name: "epoch record not the last entry", tamper: func(r, _ *ktpb.LookupResponse) *ktpb.LookupResponse {
			rec, err := api.ParseEpochRecord(r.Epoch.EpochRecord)
			if err != nil {
				t.Fatal(err)
			}
			rec.LogSize--
			r.Epoch.EpochRecord, _ = rec.MarshalBinary()
			return r
		}, want: client.ErrNotLatestEpoch, step: client.StepEpochRecord},
		{name: "epoch inclusion proof", tamper: func(r, _ *ktpb.LookupResponse) *ktpb.LookupResponse {
			r.Epoch.InclusionProof[0] = flipLast(r.Epoch.InclusionProof[0])
			return r
		}, want: client.ErrEpochInclusion, step: client.StepEpochRecord},
		{name: "stale epoch (frozen directory, clock 5 minutes on)", cfg: client.Config{Now: func() time.Time { return time.Now().Add(5 * time.Minute) }},
			want: client.ErrStale, step: client.StepFreshness},
		{name: "VRF proof", tamper: func(r, _ *ktpb.LookupResponse) *ktpb.LookupResponse {
			r.VrfProof = flipLast(r.VrfProof)
			return r
		}, want: client.ErrVRF, step: client.StepVRF},
		{name: "map proof", tamper: func(r, _ *ktpb.LookupResponse) *ktpb.LookupResponse {
			r.MapProof = flipLast(r.MapProof)
			return r
		}, want: client.ErrMapProof, step: client.StepMap},
		{name: "device set hidden (absence claimed)", tamper: func(r, _ *ktpb.LookupResponse) *ktpb.LookupResponse {
			r.ChangeRecord, r.Opening, r.DeviceSet = nil, nil, nil
			return r
		}, want: client.ErrMapProof, step: client.StepMap},
		{name: "answer for another handle", tamper: func(r, _ *ktpb.LookupResponse) *ktpb.LookupResponse {
			r.Handle = "mailto:carol@example.com"
			return r
		}, want: client.ErrRecordMismatch, step: client.StepHandle},
		{name: "commitment opening", tamper: func(r, _ *ktpb.LookupResponse) *ktpb.LookupResponse {
			r.Opening = flipLast(r.Opening)
			return r
		}, want: client.ErrCommitment, step: client.StepCommitment},
		{name: "ghost device injected (A1)", tamper: func(r, _ *ktpb.LookupResponse) *ktpb.LookupResponse {
			s, err := api.ParseDeviceSet(r.DeviceSet)
			if err != nil {
				t.Fatal(err)
			}
			s.Devices = append(s.Devices, ghost(t))
			if s.Devices[0].ID[0] > s.Devices[1].ID[0] {
				s.Devices[0], s.Devices[1] = s.Devices[1], s.Devices[0]
			}
			s.Account = nil
			r.DeviceSet, err = s.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			return r
		}, want: client.ErrCommitment, step: client.StepCommitment},
		{name: "strict mode, another account key pinned", cfg: client.Config{Strict: true}, pin: true,
			want: client.ErrStrict, step: client.StepStrict},
		{name: "unusable HPKE key", handle: "eve@example.com", want: client.ErrUnusableKey, step: client.StepHPKE},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			handle := c.handle
			if handle == "" {
				handle = "bob@example.com"
			}
			td := &tamperDir{DirectoryClient: e.dir}
			alice, store := e.newClient(td, c.cfg)
			if _, err := alice.Init(ctx, api.HPKESuite{}); err != nil {
				t.Fatal(err)
			}
			var old *ktpb.LookupResponse
			if c.warm {
				var err error
				old, err = e.dir.Lookup(ctx, &ktpb.LookupRequest{Handle: "mailto:bob@example.com"})
				if err != nil {
					t.Fatal(err)
				}
				rec, err := api.ParseEpochRecord(old.Epoch.EpochRecord)
				if err != nil {
					t.Fatal(err)
				}
				e.awaitEpochAfter(rec.LogSize + 1)
				res, err := alice.Lookup(ctx, handle)
				if err != nil {
					t.Fatal(err)
				}
				e.awaitEpochAfter(res.Trusted.Size)
			}
			if c.pin {
				k := [32]byte{1}
				if k == bobRes.DeviceSet.Account.Key {
					t.Fatal("unlucky key")
				}
				if err := alice.Repin(ctx, handle, &k); err != nil {
					t.Fatal(err)
				}
			}
			if c.tamper != nil {
				td.tamper = func(r *ktpb.LookupResponse) *ktpb.LookupResponse { return c.tamper(r, old) }
			}
			before, _ := store.Load(ctx)
			envs, err := alice.Encrypt(ctx, handle, []byte("secret"))
			if envs != nil {
				t.Errorf("%d envelopes produced", len(envs))
			}
			var ve *client.VerifyError
			if !errors.Is(err, c.want) || !errors.As(err, &ve) || ve.Step != c.step {
				t.Fatalf("Encrypt: %v, want %v at step %q", err, c.want, c.step)
			}
			if c.want == client.ErrInconsistent {
				var ie *client.InconsistencyError
				if !errors.As(err, &ie) || len(ie.Trusted) == 0 || len(ie.New) == 0 || ie.TrustedSize >= ie.NewSize {
					t.Errorf("no evidence: %+v", ie)
				}
			}
			after, _ := store.Load(ctx)
			if !bytes.Equal(before, after) {
				t.Errorf("the failed lookup changed the stored state")
			}
			// The same client, untampered, verifies the lookup; having no
			// handle of its own, it then cannot sign (design.md 12.3).
			td.tamper = nil
			if c.cfg.Now == nil && !c.pin && c.handle == "" {
				if res, err := alice.Lookup(ctx, handle); err != nil || len(res.Recipients) != 1 {
					t.Fatalf("untampered Lookup: %v", err)
				}
				if envs, err := alice.Encrypt(ctx, handle, []byte("secret")); !errors.Is(err, client.ErrCannotSign) || envs != nil {
					t.Fatalf("untampered Encrypt without a handle: %v, %d envelopes; want ErrCannotSign", err, len(envs))
				}
			}
		})
	}
}

// TestTamperedMonitor: the owner's monitor rejects, with the typed error
// and without storing anything, real monitoring answers with a version
// hidden, a change not included in the log, or a map proof that does not
// hold the last change.
func TestTamperedMonitor(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	td := &tamperDir{DirectoryClient: e.dir}
	bob, store := e.newClient(td, client.Config{})
	if _, err := bob.Init(ctx, api.HPKESuite{}); err != nil {
		t.Fatal(err)
	}
	e.enroll(bob, "bob@example.com", false)
	for range 2 {
		subs, err := bob.AddDevice(ctx, ghost(t))
		if err != nil {
			t.Fatal(err)
		}
		awaitVersion(t, bob, "bob@example.com", subs[0].Version)
	}
	for _, c := range []struct {
		name   string
		tamper func(*ktpb.MonitorResponse)
		want   error
	}{
		{"middle version hidden (A7)", func(r *ktpb.MonitorResponse) {
			r.Changes = append(r.Changes[:1], r.Changes[2:]...)
		}, client.ErrMonitorGap},
		{"change inclusion proof", func(r *ktpb.MonitorResponse) {
			r.Changes[1].InclusionProof[0] = flipLast(r.Changes[1].InclusionProof[0])
		}, client.ErrMonitorGap},
		{"last versions hidden", func(r *ktpb.MonitorResponse) { r.Changes = r.Changes[:1] }, client.ErrMapProof},
		{"map proof", func(r *ktpb.MonitorResponse) { r.MapProof = flipLast(r.MapProof) }, client.ErrMapProof},
		{"opening", func(r *ktpb.MonitorResponse) { r.Changes[2].Opening = flipLast(r.Changes[2].Opening) }, client.ErrCommitment},
	} {
		t.Run(c.name, func(t *testing.T) {
			td.monitor = c.tamper
			before, _ := store.Load(ctx)
			_, err := bob.Monitor(ctx)
			if !errors.Is(err, c.want) {
				t.Fatalf("Monitor: %v, want %v", err, c.want)
			}
			if after, _ := store.Load(ctx); !bytes.Equal(before, after) {
				t.Errorf("the failed poll changed the stored state")
			}
		})
	}
	td.monitor = nil
	reps, err := bob.Monitor(ctx)
	if err != nil || len(reps[0].Changes) != 3 || len(reps[0].Alerts) != 0 {
		t.Fatalf("untampered poll: %v %+v", err, reps)
	}
}
