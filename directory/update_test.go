package directory

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/internal/testing/testkit"
)

// TestRejected sends hostile and mistaken changes and checks each gets the
// typed error and stores nothing: no payload, no new handle state, no VRF
// cache entry, no log entry.
func TestRejected(t *testing.T) {
	e := newEnv(t, backends[0])
	var account [16]byte
	rand.Read(account[:])
	a, b := testkit.NewDevice(), testkit.NewDevice()
	alice := newHandle(t, e.k, "alice@example.com")
	e.enroll(alice, a.Sign, testkit.Set(account, a))
	// v2 adds B; keep it to replay later.
	addB := alice.change(api.AuthDevice, a.Sign, testkit.Set(account, a, b), nil)
	e.apply(alice, addB)
	// v3 removes A.
	e.apply(alice, alice.change(api.AuthDevice, b.Sign, testkit.Set(account, b), nil))
	carol := newHandle(t, e.k, "carol@example.com")
	stranger := testkit.NewDevice()

	type submit func(hc *ktpb.HandleChange) error
	change := func(hc *ktpb.HandleChange) error {
		_, err := e.d.Change(ctxT(t), &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}})
		return err
	}
	enroll := func(cred string) submit {
		return func(hc *ktpb.HandleChange) error {
			if cred == "" {
				h, _ := api.NormalizeHandle(hc.GetHandle())
				cred = e.k.token.IssueToken(h)
			}
			_, err := e.d.Enroll(ctxT(t), &ktpb.EnrollRequest{Change: hc, Credential: cred})
			return err
		}
	}
	recoverOp := func(hc *ktpb.HandleChange) error {
		_, err := e.d.Recover(ctxT(t), &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}})
		return err
	}
	mutate := func(hc *ktpb.HandleChange, f func(*ktpb.HandleChange)) *ktpb.HandleChange {
		f(hc)
		return hc
	}
	stale := *alice // built on v2, but v3 exists
	stale.version, stale.leaf = 2, api.LeafHash(addB.ChangeRecord)
	old := *alice
	old.version, old.leaf = 1, [32]byte{}
	ahead := *alice
	ahead.version++

	tests := []struct {
		name string
		hc   *ktpb.HandleChange
		send submit
		want error
	}{
		{"unauthorized signer", alice.change(api.AuthDevice, stranger.Sign, testkit.Set(account, b, stranger), nil), change, ErrUnauthorized},
		{"replay of an accepted change", addB, change, ErrStaleVersion},
		{"removed device signs", alice.change(api.AuthDevice, a.Sign, testkit.Set(account, a, b), nil), change, ErrUnauthorized},
		{"built on an old version", stale.change(api.AuthDevice, b.Sign, testkit.Set(account, b, stranger), nil), change, ErrStaleVersion},
		{"version ahead", ahead.change(api.AuthDevice, b.Sign, testkit.Set(account, b, stranger), nil), change, ErrStaleVersion},
		{"wrong index", func() *ktpb.HandleChange {
			hc := carol.change(api.AuthEnroll, a.Sign, testkit.Set(account, a), nil)
			hc.Handle = "dave@example.com"
			return hc
		}(), enroll(""), ErrInvalidArgument},
		{"bad credential", carol.change(api.AuthEnroll, a.Sign, testkit.Set(account, a), nil), enroll("kt1.9999999999.AAAA"), ErrUnauthorized},
		{"credential for another handle", carol.change(api.AuthEnroll, a.Sign, testkit.Set(account, a), nil), enroll(e.k.token.IssueToken("mailto:dave@example.com")), ErrUnauthorized},
		{"enroll over a live handle", old.change(api.AuthEnroll, stranger.Sign, testkit.Set(account, stranger), nil), enroll(""), ErrStaleVersion},
		{"truncated record", mutate(alice.change(api.AuthDevice, b.Sign, testkit.Set(account, b, stranger), nil), func(hc *ktpb.HandleChange) { hc.ChangeRecord = hc.ChangeRecord[:50] }), change, ErrInvalidArgument},
		{"garbage record", mutate(alice.change(api.AuthDevice, b.Sign, testkit.Set(account, b, stranger), nil), func(hc *ktpb.HandleChange) { hc.ChangeRecord = []byte("\x01\x01garbage") }), change, ErrInvalidArgument},
		{"short opening", mutate(alice.change(api.AuthDevice, b.Sign, testkit.Set(account, b, stranger), nil), func(hc *ktpb.HandleChange) { hc.Opening = hc.Opening[:31] }), change, ErrInvalidArgument},
		{"commitment does not open", mutate(alice.change(api.AuthDevice, b.Sign, testkit.Set(account, b, stranger), nil), func(hc *ktpb.HandleChange) { hc.Opening[0] ^= 1 }), change, ErrInvalidArgument},
		{"malformed device set", mutate(alice.change(api.AuthDevice, b.Sign, testkit.Set(account, b, stranger), nil), func(hc *ktpb.HandleChange) { hc.DeviceSet = hc.DeviceSet[:len(hc.DeviceSet)-1] }), change, ErrInvalidArgument},
		{"bad signature", mutate(alice.change(api.AuthDevice, b.Sign, testkit.Set(account, b, stranger), nil), func(hc *ktpb.HandleChange) { hc.ChangeRecord[len(hc.ChangeRecord)-1] ^= 1 }), change, ErrUnauthorized},
		{"bad handle", mutate(alice.change(api.AuthDevice, b.Sign, testkit.Set(account, b, stranger), nil), func(hc *ktpb.HandleChange) { hc.Handle = "not a handle" }), change, ErrInvalidArgument},
		{"recovery through Change", alice.change(api.AuthRecovery, e.k.recovery, testkit.Set(account, stranger), nil), change, ErrUnauthorized},
		{"recovery not signed by the recovery key", alice.change(api.AuthRecovery, b.Sign, testkit.Set(account, stranger), nil), recoverOp, ErrUnauthorized},
		{"device change through Recover", alice.change(api.AuthDevice, b.Sign, testkit.Set(account, b, stranger), nil), recoverOp, ErrUnauthorized},
		{"enrollment through Change", carol.change(api.AuthEnroll, a.Sign, testkit.Set(account, a), nil), change, ErrUnauthorized},
		{"account ID changed by a device", func() *ktpb.HandleChange {
			var other [16]byte
			rand.Read(other[:])
			return alice.change(api.AuthDevice, b.Sign, testkit.Set(other, b), nil)
		}(), change, ErrUnauthorized},
		{"bad account signature", func() *ktpb.HandleChange {
			_, acct, _ := ed25519.GenerateKey(nil)
			s := testkit.Set(account, b)
			// Sign the set for another version: the commitment opens (the
			// record commits to these bytes) but the account signature is
			// for the wrong position.
			s.SignAccount(testOrigin, alice.index, alice.version+7, acct)
			ds, _ := s.MarshalBinary()
			next := *alice
			return next.changeWithSet(b.Sign, ds)
		}(), change, ErrUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.snapshotState(t)
			leaf := api.LeafHash(tc.hc.GetChangeRecord())
			_, had, _ := e.d.st.payload(leaf)
			err := tc.send(tc.hc)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if k := kindOf(err); k != tc.want {
				t.Fatalf("error wraps %v first, want %v: %v", k, tc.want, err)
			}
			e.checkNothingStored(t, before, tc.hc)
			if _, has, _ := e.d.st.payload(leaf); has && !had {
				t.Errorf("the rejected change's payload is stored")
			}
		})
	}

	// An atomic request with one bad change stores neither.
	t.Run("atomic multi-handle", func(t *testing.T) {
		before := e.snapshotState(t)
		good := alice.change(api.AuthDevice, b.Sign, testkit.Set(account, b, stranger), nil)
		bad := carol.change(api.AuthDevice, a.Sign, testkit.Set(account, a), nil) // carol is not registered
		_, err := e.d.Change(ctxT(t), &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{good, bad}})
		if !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("got %v, want ErrUnauthorized", err)
		}
		e.checkNothingStored(t, before, good)
		e.checkNothingStored(t, before, bad)
	})

	// After all that, a valid change still goes through.
	i := e.apply(alice, alice.change(api.AuthDevice, b.Sign, testkit.Set(account, b, stranger), nil))
	if res := e.lookup(alice.handle, i); res.Version != 4 {
		t.Fatalf("version %d after rejected changes, want 4", res.Version)
	}
}

// changeWithSet builds a change committing to the given device set bytes.
func (h *handleState) changeWithSet(signer ed25519.PrivateKey, ds []byte) *ktpb.HandleChange {
	s, err := api.ParseDeviceSet(ds)
	if err != nil {
		panic(err)
	}
	version := h.version + 1
	var opening [32]byte
	rand.Read(opening[:])
	rec := &api.ChangeRecord{Index: h.index, Version: version, Commitment: api.Commit(opening, h.index, version, ds), Prev: h.leaf, Kind: api.AuthDevice, Authorizers: s.Authorizers()}
	rec.Sign(testOrigin, signer)
	b, _ := rec.MarshalBinary()
	return &ktpb.HandleChange{Handle: h.handle, ChangeRecord: b, Opening: opening[:], DeviceSet: ds}
}

// stateSnapshot is what the tests compare to show nothing was stored.
type stateSnapshot struct {
	logSize uint64
	keys    int
}

func (e *env) snapshotState(t *testing.T) stateSnapshot {
	t.Helper()
	var s stateSnapshot
	if err := e.d.inSequencer(func() { s.logSize = e.d.size }); err != nil {
		t.Fatal(err)
	}
	it, err := e.d.st.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if k := it.Key(); k[0] == pfxHandle || k[0] == pfxPayload || k[0] == pfxState || k[0] == pfxHistory {
			s.keys++
		}
	}
	return s
}

func (e *env) checkNothingStored(t *testing.T, before stateSnapshot, hc *ktpb.HandleChange) {
	t.Helper()
	after := e.snapshotState(t)
	if after.keys != before.keys {
		t.Errorf("store has %d handle, payload, state and history keys, %d before", after.keys, before.keys)
	}
	if after.logSize != before.logSize {
		// Heartbeat epochs may have been appended; count change records.
		es, err := e.log.Entries(ctxT(t), before.logSize, after.logSize)
		if err == nil {
			for _, x := range es {
				if x[1] == byte(api.TypeChange) {
					t.Errorf("a change record was appended")
				}
			}
		}
	}
}
