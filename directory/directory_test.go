package directory

import (
	"crypto/ed25519"
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/testkit"
)

// TestLifecycle runs a handle through its life on every backend: enroll,
// add a device, remove one, re-key, strict mode with an account key, a
// second handle of the account, a tombstone and a re-enrollment, a
// recovery; every lookup is verified with the client library, the owner's
// monitoring chain too, and everything survives a restart.
func TestLifecycle(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := newEnv(t, b)
			alice := newHandle(t, e.k, "Alice@Example.com")
			var account [16]byte
			rand.Read(account[:])
			a, bDev := testkit.NewDevice(), testkit.NewDevice()

			// Not registered: a verified absence.
			e.waitEpoch(0)
			if res := e.lookup(alice.handle, 0); res.Registered {
				t.Fatalf("unregistered handle looked up as registered")
			}

			check := func(i uint64, want [][32]byte) *client.LookupResult {
				t.Helper()
				res := e.lookup(alice.handle, i)
				if !res.Registered || res.Version != alice.version {
					t.Fatalf("lookup: registered %v version %d, want version %d", res.Registered, res.Version, alice.version)
				}
				if diff := cmp.Diff(want, signingKeys(res.DeviceSet)); diff != "" {
					t.Fatalf("device keys (-want +got):\n%s", diff)
				}
				return res
			}

			i := e.enroll(alice, a.Sign, testkit.Set(account, a))
			check(i, testkit.Pubs(a))

			// Add device B, signed by A.
			i = e.apply(alice, alice.change(api.AuthDevice, a.Sign, testkit.Set(account, a, bDev), nil))
			check(i, testkit.Pubs(a, bDev))

			// Remove A, signed by B.
			i = e.apply(alice, alice.change(api.AuthDevice, bDev.Sign, testkit.Set(account, bDev), nil))
			check(i, testkit.Pubs(bDev))

			// Re-key B: new signing and HPKE keys, same device ID, signed by
			// the old key.
			b2 := bDev.Rekeyed()
			i = e.apply(alice, alice.change(api.AuthDevice, bDev.Sign, testkit.Set(account, b2), nil))
			check(i, testkit.Pubs(b2))

			// Strict mode: add an account key (signed by the device), then a
			// change signed by the account key alone.
			_, acct, _ := ed25519.GenerateKey(nil)
			i = e.apply(alice, alice.change(api.AuthDevice, b2.Sign, testkit.Set(account, b2), acct))
			c := testkit.NewDevice()
			i = e.apply(alice, alice.change(api.AuthAccount, acct, testkit.Set(account, b2, c), acct))
			res := check(i, testkit.Pubs(b2, c))
			resp, err := e.d.Lookup(ctxT(t), &ktpb.LookupRequest{Handle: alice.handle})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := client.VerifyLookup(e.params, nil, alice.handle, resp, time.Now(), acct.Public().(ed25519.PublicKey)); err != nil {
				t.Fatalf("strict-mode lookup with the pinned account key: %v", err)
			}
			_ = res

			// A second handle of the account, enrolled by device C.
			bob := newHandle(t, e.k, "+1 (415) 555-0100")
			i = e.enroll(bob, c.Sign, testkit.Set(account, c))
			if res := e.lookup(bob.handle, i); !res.Registered || res.DeviceSet.AccountID != account {
				t.Fatalf("second handle: registered %v, account %x", res.Registered, res.DeviceSet.AccountID)
			}

			// Tombstone the second handle, then enroll it again.
			i = e.apply(bob, bob.change(api.AuthDevice, c.Sign, testkit.Set(account), nil))
			if res := e.lookup(bob.handle, i); !res.Registered || !res.DeviceSet.IsTombstone() {
				t.Fatalf("tombstone: registered %v, %d devices", res.Registered, len(res.DeviceSet.Devices))
			}
			d2 := testkit.NewDevice()
			var account2 [16]byte
			rand.Read(account2[:])
			i = e.enroll(bob, d2.Sign, testkit.Set(account2, d2))
			if res := e.lookup(bob.handle, i); res.Version != 3 || res.DeviceSet.AccountID != account2 {
				t.Fatalf("re-enrollment: version %d, account %x", res.Version, res.DeviceSet.AccountID)
			}

			// Recovery through the operator endpoint.
			r := testkit.NewDevice()
			hc := alice.change(api.AuthRecovery, e.k.recovery, testkit.Set(account, r), nil)
			rr, err := e.d.Recover(ctxT(t), &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}})
			if err != nil {
				t.Fatalf("Recover: %v", err)
			}
			alice.accepted(hc)
			if res := check(rr.LogIndices[0], testkit.Pubs(r)); res.Kind != api.AuthRecovery {
				t.Fatalf("kind %v after recovery", res.Kind)
			}

			// The owner's device A verifies the history from scratch (the
			// recovery replaced its key, so the full answer comes from the
			// operator's History, design.md 13.4) and sees every change,
			// the recovery as an alert.
			mon := func() *client.MonitorResult {
				t.Helper()
				mresp, err := e.d.History(ctxT(t), &ktpb.MonitorRequest{Index: alice.index[:]})
				if err != nil {
					t.Fatalf("Monitor: %v", err)
				}
				mres, err := client.VerifyMonitor(e.params, nil, &client.MonitorState{Index: alice.index}, mresp, client.OwnKeys{Device: a.Pub()}, time.Now())
				if err != nil {
					t.Fatalf("VerifyMonitor: %v", err)
				}
				return mres
			}
			mres := mon()
			if len(mres.Changes) != int(alice.version) {
				t.Fatalf("monitor: %d changes, want %d", len(mres.Changes), alice.version)
			}
			if !slices.ContainsFunc(mres.Alerts, func(a client.Alert) bool { return a.Kind == client.AlertRecovery }) {
				t.Fatalf("monitor: no recovery alert in %v", mres.Alerts)
			}

			// Restart: everything is still there, and changes continue.
			e.restart()
			check(0, testkit.Pubs(r))
			if res := e.lookup(bob.handle, 0); res.Version != 3 {
				t.Fatalf("after restart: bob at version %d", res.Version)
			}
			if got := mon(); len(got.Changes) != int(alice.version) {
				t.Fatalf("monitor after restart: %d changes", len(got.Changes))
			}
			i = e.apply(alice, alice.change(api.AuthDevice, r.Sign, testkit.Set(account, r, a), nil))
			check(i, testkit.Pubs(r, a))
		})
	}
}
