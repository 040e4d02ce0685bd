package directory

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/internal/testing/testkit"
)

// signedMonitor sets req's owner authorization (design.md 13.4), signed
// by key at time at for this test directory's origin.
func signedMonitor(req *ktpb.MonitorRequest, key ed25519.PrivateKey, at time.Time) *ktpb.MonitorRequest {
	return signedMonitorFor(testOrigin, [32]byte(req.Index), req.KnownVersion, req.KnownSize, req, key, at)
}

// signedMonitorFor signs a statement with the given fields, which a test
// may make differ from req's.
func signedMonitorFor(origin string, index [32]byte, known, size uint64, req *ktpb.MonitorRequest, key ed25519.PrivateKey, at time.Time) *ktpb.MonitorRequest {
	ts := uint64(at.UnixMilli())
	signer, sig := api.SignMonitor(origin, key, index, known, size, ts)
	req.Auth = &ktpb.MonitorAuth{Signer: signer[:], TimestampMs: ts, Signature: sig[:]}
	return req
}

// TestMonitorAuth breaks each check of the owner's authorization of a full
// Monitor request (design.md 13.4) and expects its typed error and no
// answer; the controls are the owner's own requests, signed by a current
// device key and by the account key, which get the openings and device
// sets, and the operator's History, which needs none. After a recovery
// that replaced the owner's keys, the owner is refused the full answer
// and still gets the records, the recovery among them.
func TestMonitorAuth(t *testing.T) {
	e := newEnv(t, backends[0])
	var account [16]byte
	rand.Read(account[:])
	alice := newHandle(t, e.k, "alice@example.com")
	bob := newHandle(t, e.k, "bob@example.com")
	a1, a2, b1 := testkit.NewDevice(), testkit.NewDevice(), testkit.NewDevice()
	_, acct, _ := ed25519.GenerateKey(nil)
	_, stranger, _ := ed25519.GenerateKey(nil)

	e.enroll(alice, a1.Sign, testkit.Set(account, a1))
	e.apply(alice, alice.change(api.AuthDevice, a1.Sign, testkit.Set(account, a1, a2), nil))
	e.apply(alice, alice.change(api.AuthDevice, a1.Sign, testkit.Set(account, a1), acct)) // a2 removed, account key added
	e.enroll(bob, b1.Sign, testkit.Set(account, b1))
	ep := e.waitEpoch(e.apply(bob, bob.change(api.AuthDevice, b1.Sign, testkit.Set(account, b1), nil)))
	rec, err := api.ParseEpochRecord(ep.GetEpochRecord())
	if err != nil {
		t.Fatal(err)
	}
	size := rec.LogSize + 1 // the trusted epoch checkpoint's size

	req := func() *ktpb.MonitorRequest {
		return &ktpb.MonitorRequest{Index: alice.index[:], KnownVersion: 1, KnownSize: size}
	}
	now := time.Now()
	window := api.MonitorAuthWindow
	for _, tc := range []struct {
		name string
		req  *ktpb.MonitorRequest
		want error // nil: the full answer
	}{
		{"control: current device key", signedMonitor(req(), a1.Sign, now), nil},
		{"control: account key", signedMonitor(req(), acct, now), nil},
		{"control: timestamp at the edge of the window", signedMonitor(req(), a1.Sign, now.Add(-window+10*time.Second)), nil},
		{"no authorization", req(), ErrUnauthenticated},
		{"wrong origin", signedMonitorFor("other.test/kt", alice.index, 1, size, req(), a1.Sign, now), ErrUnauthenticated},
		{"stale timestamp", signedMonitor(req(), a1.Sign, now.Add(-window-time.Minute)), ErrUnauthenticated},
		{"future timestamp", signedMonitor(req(), a1.Sign, now.Add(window+time.Minute)), ErrUnauthenticated},
		{"timestamp far in the future", func() *ktpb.MonitorRequest {
			r := signedMonitor(req(), a1.Sign, now)
			r.Auth.TimestampMs = ^uint64(0)
			return r
		}(), ErrUnauthenticated},
		{"signer not an authorizer", signedMonitor(req(), stranger, now), ErrUnauthorized},
		{"removed device's key", signedMonitor(req(), a2.Sign, now), ErrUnauthorized},
		{"another handle's owner", signedMonitor(req(), b1.Sign, now), ErrUnauthorized},
		{"bad signature", func() *ktpb.MonitorRequest {
			r := signedMonitor(req(), a1.Sign, now)
			r.Auth.Signature[5] ^= 1
			return r
		}(), ErrUnauthenticated},
		{"timestamp changed after signing", func() *ktpb.MonitorRequest {
			r := signedMonitor(req(), a1.Sign, now)
			r.Auth.TimestampMs++
			return r
		}(), ErrUnauthenticated},
		{"statement for another index", signedMonitorFor(testOrigin, bob.index, 1, size, req(), a1.Sign, now), ErrUnauthenticated},
		{"statement for another known version", signedMonitorFor(testOrigin, alice.index, 0, size, req(), a1.Sign, now), ErrUnauthenticated},
		{"statement for another known size", signedMonitorFor(testOrigin, alice.index, 1, size+1, req(), a1.Sign, now), ErrUnauthenticated},
		{"signer of 31 bytes", func() *ktpb.MonitorRequest {
			r := signedMonitor(req(), a1.Sign, now)
			r.Auth.Signer = r.Auth.Signer[:31]
			return r
		}(), ErrUnauthenticated},
		{"empty signature", func() *ktpb.MonitorRequest {
			r := signedMonitor(req(), a1.Sign, now)
			r.Auth.Signature = nil
			return r
		}(), ErrUnauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.d.Monitor(ctxT(t), tc.req)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("owner's request refused: %v", err)
				}
				if len(resp.GetChanges()) != 2 {
					t.Fatalf("%d changes, want 2", len(resp.GetChanges()))
				}
				for i, c := range resp.GetChanges() {
					if len(c.GetOpening()) != 32 || len(c.GetDeviceSet()) == 0 {
						t.Errorf("change %d without its opening or device set", i)
					}
				}
				return
			}
			if !errors.Is(err, tc.want) || resp != nil {
				t.Fatalf("Monitor = %v, %v; want no answer and %v", resp, err, tc.want)
			}
			// Without the authorization, records_only still answers.
			tc.req.Auth, tc.req.RecordsOnly = nil, true
			ro, err := e.d.Monitor(ctxT(t), tc.req)
			if err != nil || len(ro.GetChanges()) != 2 || len(ro.GetChanges()[0].GetOpening()) != 0 {
				t.Fatalf("records_only: %v, %v", ro, err)
			}
		})
	}

	// The operator's History: the full answer, no authorization.
	h, err := e.d.History(ctxT(t), req())
	if err != nil || len(h.GetChanges()) != 2 || len(h.GetChanges()[1].GetDeviceSet()) == 0 {
		t.Fatalf("History: %v, %v", h, err)
	}

	// A recovery replaces alice's keys: her old device is refused the full
	// answer, and the records show the kind-4 record, which is her alert.
	r := testkit.NewDevice()
	hc := alice.change(api.AuthRecovery, e.k.recovery, testkit.Set(account, r), nil)
	rr, err := e.d.Recover(ctxT(t), &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}})
	if err != nil {
		t.Fatal(err)
	}
	alice.accepted(hc)
	e.waitEpoch(rr.LogIndices[0])
	old := &ktpb.MonitorRequest{Index: alice.index[:], KnownVersion: 3}
	if _, err := e.d.Monitor(ctxT(t), signedMonitor(old, a1.Sign, time.Now())); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("the replaced device's full Monitor: %v, want ErrUnauthorized", err)
	}
	if _, err := e.d.Monitor(ctxT(t), signedMonitor(&ktpb.MonitorRequest{Index: alice.index[:], KnownVersion: 3}, acct, time.Now())); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("the replaced account key's full Monitor: %v, want ErrUnauthorized", err)
	}
	ro, err := e.d.Monitor(ctxT(t), &ktpb.MonitorRequest{Index: alice.index[:], KnownVersion: 3, RecordsOnly: true})
	if err != nil || len(ro.GetChanges()) != 1 {
		t.Fatalf("records_only after the recovery: %v, %v", ro, err)
	}
	if rec, err := api.ParseChangeRecord(ro.GetChanges()[0].GetChangeRecord()); err != nil || rec.Kind != api.AuthRecovery {
		t.Fatalf("the record after the recovery: %+v, %v; want kind 4", rec, err)
	}
	// The recovered device is the owner now.
	if resp, err := e.d.Monitor(ctxT(t), signedMonitor(&ktpb.MonitorRequest{Index: alice.index[:], KnownVersion: 3}, r.Sign, time.Now())); err != nil || len(resp.GetChanges()[0].GetDeviceSet()) == 0 {
		t.Fatalf("the recovered device's Monitor: %v, %v", resp, err)
	}
}
