package client_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/client"
)

const (
	vAlice = "mailto:alice@example.com"
	vBob   = "mailto:bob@example.com"
	vCarol = "mailto:carol@example.com"
)

// code returns c's verification code for handle.
func code(t *testing.T, c *client.Client, handle string) *client.Verification {
	t.Helper()
	v, err := c.VerificationCode(t.Context(), handle)
	if err != nil {
		t.Fatalf("VerificationCode(%s): %v", handle, err)
	}
	return v
}

// accountIdentity is the identity of an account key.
func accountIdentity(k ed25519.PrivateKey) api.Identity {
	var id api.Identity
	id[0] = api.IdentityAccountKey
	copy(id[1:], k.Public().(ed25519.PublicKey))
	return id
}

// wrongCode returns a well-formed code that is not c.
func wrongCode(c string) string {
	b := []byte(c)
	b[0] = '0' + (b[0]-'0'+1)%10
	return string(b)
}

// TestVerificationCodeE2E: two clients against a real directory over
// gRPC derive the same code; it survives a device added under an account
// key and changes when either account key changes; a wrong code is
// refused and pins nothing; a confirmed code pins the contact, whose
// account key rotation then fails lookups with the typed error until the
// user verifies again.
func TestVerificationCodeE2E(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	alice, bob := e.device(client.Config{}), e.device(client.Config{})
	e.enroll(alice, vAlice, true)
	e.enroll(bob, vBob, true)

	va, vb := code(t, alice, vBob), code(t, bob, vAlice)
	if va.Code != vb.Code {
		t.Fatalf("Alice's code %q, Bob's %q", va.Code, vb.Code)
	}
	ast, _ := alice.State(ctx)
	bst, _ := bob.State(ctx)
	if va.Contact.Identity != accountIdentity(bst.Account) || va.Own.Identity != accountIdentity(ast.Account) || va.Own.Handle != vAlice {
		t.Fatalf("Alice's parties: %+v, %+v", va.Contact, va.Own)
	}
	c0 := va.Code

	// Bob adds a device, signed under his account key: same code.
	bob2 := e.device(client.Config{})
	e.link(bob, bob2, vBob)
	if got := code(t, alice, vBob); got.Code != c0 || got.ContactVersion != 2 {
		t.Fatalf("after Bob added a device: %q at version %d, want %q at 2", got.Code, got.ContactVersion, c0)
	}
	if got := code(t, bob2, vAlice); got.Code != c0 {
		t.Fatalf("Bob's new device: %q, want %q", got.Code, c0)
	}

	// A wrong code and a malformed code are refused; nothing is pinned.
	if _, err := alice.ConfirmVerification(ctx, vBob, wrongCode(c0)); !errors.Is(err, client.ErrVerificationMismatch) || !strings.Contains(err.Error(), vBob) {
		t.Fatalf("wrong code: %v", err)
	}
	if _, err := alice.ConfirmVerification(ctx, vBob, c0[:20]); !errors.Is(err, api.ErrVerificationCode) {
		t.Fatalf("malformed code: %v", err)
	}
	if pins, err := alice.Verified(ctx); err != nil || len(pins) != 0 {
		t.Fatalf("pins after refused codes: %v, %v", pins, err)
	}
	// Verifying one's own handle is refused.
	if _, err := alice.VerificationCode(ctx, vAlice); !errors.Is(err, api.ErrVerificationCode) {
		t.Fatalf("own handle: %v", err)
	}

	// The right code, typed with hyphens, pins Bob's account key.
	v, err := alice.ConfirmVerification(ctx, vBob, strings.ReplaceAll(c0, " ", "-"))
	if err != nil {
		t.Fatalf("ConfirmVerification: %v", err)
	}
	if pins, _ := alice.Verified(ctx); pins[vBob] == nil || pins[vBob].Identity != accountIdentity(bst.Account) || pins[vBob].Own != vAlice || v.Pin == nil {
		t.Fatalf("pins %+v", pins)
	}

	// Alice rotates her account key: the code changes on both sides, and
	// Alice's pin of Bob still holds.
	subs, err := alice.RotateAccountKey(ctx)
	if err != nil {
		t.Fatalf("RotateAccountKey: %v", err)
	}
	awaitVersion(t, bob, vAlice, subs[0].Version)
	awaitVersion(t, alice, vAlice, subs[0].Version)
	c1 := code(t, alice, vBob).Code
	if c1 == c0 || code(t, bob, vAlice).Code != c1 {
		t.Fatalf("after Alice's rotation: Alice %q, before %q", c1, c0)
	}
	if envs, err := alice.Encrypt(ctx, vBob, []byte("hi")); err != nil || len(envs) != 2 {
		t.Fatalf("Encrypt to the verified Bob: %v, %d envelopes", err, len(envs))
	}

	// Bob rotates his: Alice's client refuses Bob, naming him, until she
	// verifies again.
	subs, err = bob.RotateAccountKey(ctx)
	if err != nil {
		t.Fatalf("RotateAccountKey: %v", err)
	}
	awaitVersion(t, bob, vBob, subs[0].Version)
	bst, _ = bob.State(ctx)
	envs, err := alice.Encrypt(ctx, vBob, []byte("hi"))
	var vc *client.VerifiedContactChangedError
	if !errors.As(err, &vc) || !errors.Is(err, client.ErrVerifiedContactChanged) || envs != nil {
		t.Fatalf("Bob's new account key: %v, %d envelopes", err, len(envs))
	}
	if vc.Handle != vBob || vc.Current != accountIdentity(bst.Account) || vc.Pinned == vc.Current || !strings.Contains(err.Error(), vBob) {
		t.Fatalf("alert %+v: %v", vc, err)
	}
	if _, err := alice.VerificationCode(ctx, vBob); !errors.Is(err, client.ErrVerifiedContactChanged) {
		t.Fatalf("a code for a changed verified contact: %v", err)
	}
	if reps, err := alice.CheckContacts(ctx); !errors.Is(err, client.ErrVerifiedContactChanged) || len(reps) != 1 || !reps[0].Verified {
		t.Fatalf("CheckContacts: %v, %+v", err, reps)
	}
	if had, err := alice.Unverify(ctx, vBob); err != nil || !had {
		t.Fatalf("Unverify: %v, %v", had, err)
	}
	c2 := code(t, alice, vBob).Code
	if c2 == c1 || code(t, bob, vAlice).Code != c2 {
		t.Fatalf("after Bob's rotation: %q, before %q", c2, c1)
	}
	if _, err := alice.ConfirmVerification(ctx, vBob, c2); err != nil {
		t.Fatalf("verifying again: %v", err)
	}
	if envs, err := alice.Encrypt(ctx, vBob, []byte("hi")); err != nil || len(envs) != 2 {
		t.Fatalf("Encrypt after verifying again: %v, %d envelopes", err, len(envs))
	}
}

// TestVerifiedContactRecoveryGhost: the directory's recovery path
// replaces a verified contact's keys. A contact verified by account key
// is refused whether the recovery writes a set without an account key or
// one under a key of the directory's own; a contact verified by device
// set is refused when a ghost device joins it. Each with its control run
// (no change: encrypt works) and an unpinned sender that does encrypt to
// the ghost. The pins are read back from the store by a restarted client.
func TestVerifiedContactRecoveryGhost(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	alice, aliceStore, err := e.dep.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	e.enroll(alice, vAlice, false)
	bob, carol := e.device(client.Config{}), e.device(client.Config{})
	e.enroll(bob, vBob, true)
	e.enroll(carol, vCarol, false)
	lax := e.device(client.Config{})
	e.enroll(lax, "lax@example.com", false) // a sender signs with a device of its handle (design.md 12.3)

	for _, h := range []string{vBob, vCarol} {
		if _, err := alice.ConfirmVerification(ctx, h, code(t, map[string]*client.Client{vBob: bob, vCarol: carol}[h], vAlice).Code); err != nil {
			t.Fatalf("verifying %s: %v", h, err)
		}
	}
	pins, _ := alice.Verified(ctx)
	if pins[vBob].Identity.Kind() != api.IdentityAccountKey || pins[vCarol].Identity.Kind() != api.IdentityDeviceSet {
		t.Fatalf("pins %+v", pins)
	}

	// Restart: a new client over the same store keeps the pins.
	alice, err = client.New(e.dir, e.params, aliceStore, client.Config{Log: e.logc})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := alice.Verified(ctx); len(got) != 2 || got[vBob].Identity != pins[vBob].Identity || got[vCarol].Identity != pins[vCarol].Identity {
		t.Fatalf("pins after a restart: %+v", got)
	}

	// Control: nothing changed, both encrypt and check cleanly.
	for _, h := range []string{vBob, vCarol} {
		if envs, err := alice.Encrypt(ctx, h, []byte("hi")); err != nil || len(envs) != 1 {
			t.Fatalf("control, %s: %v, %d envelopes", h, err, len(envs))
		}
	}
	if _, err := alice.CheckContacts(ctx); err != nil {
		t.Fatalf("control CheckContacts: %v", err)
	}

	refused := func(h string, wantCurrent func(api.Identity) bool) {
		t.Helper()
		envs, err := alice.Encrypt(ctx, h, []byte("hi"))
		var vc *client.VerifiedContactChangedError
		if !errors.As(err, &vc) || !errors.Is(err, client.ErrVerifiedContactChanged) || envs != nil {
			t.Fatalf("%s after recovery: %v, %d envelopes", h, err, len(envs))
		}
		if vc.Handle != h || !strings.Contains(err.Error(), h) || vc.Pinned != pins[h].Identity || !wantCurrent(vc.Current) {
			t.Fatalf("%s: alert %+v: %v", h, vc, err)
		}
		if _, err := alice.Lookup(ctx, h); !errors.Is(err, client.ErrVerifiedContactChanged) {
			t.Fatalf("%s: Lookup: %v", h, err)
		}
		reps, err := alice.CheckContacts(ctx)
		if !errors.Is(err, client.ErrVerifiedContactChanged) {
			t.Fatalf("%s: CheckContacts: %v", h, err)
		}
		for _, r := range reps {
			if r.Handle == h && !errors.Is(r.Err, client.ErrVerifiedContactChanged) {
				t.Fatalf("%s: report %+v", h, r)
			}
		}
		// The unpinned sender encrypts to the ghost: the pin is what
		// stopped Alice.
		if envs, err := lax.Encrypt(ctx, h, []byte("hi")); err != nil || len(envs) < 2 {
			t.Fatalf("%s: unpinned sender: %v, %d envelopes", h, err, len(envs))
		}
	}

	// Carol, verified by device set: a ghost device joins it.
	e.recover(lax, vCarol, func(s *api.DeviceSet) { addSorted(s, ghost(t)) })
	refused(vCarol, func(id api.Identity) bool { return id.Kind() == api.IdentityDeviceSet && id != pins[vCarol].Identity })

	// Bob, verified by account key: the recovery path writes a ghost
	// under a key of the directory's own, validly signed.
	res, err := lax.Lookup(ctx, vBob)
	if err != nil {
		t.Fatal(err)
	}
	_, dirKey, _ := ed25519.GenerateKey(rand.Reader)
	e.recover(lax, vBob, func(s *api.DeviceSet) {
		addSorted(s, ghost(t))
		s.SignAccount(e.params.Origin, res.Index, res.Version+1, dirKey)
	})
	refused(vBob, func(id api.Identity) bool { return id == accountIdentity(dirKey) })

	// And a set without an account key (the signature check of strict
	// mode fails first).
	e.recover(lax, vBob, func(s *api.DeviceSet) { addSorted(s, ghost(t)) })
	refused(vBob, func(id api.Identity) bool { return id.Kind() == api.IdentityDeviceSet })
	if _, err := alice.Encrypt(ctx, vBob, nil); !errors.Is(err, client.ErrStrict) {
		t.Fatalf("the account-key pin is strict mode for Bob: %v", err)
	}
}

// TestVerificationOwnIdentity: a device gives its own side of a code only
// for a set it knows to be its owner's. A ghost the recovery path adds to
// the own set, or an account key of the directory's own, is refused
// (otherwise both sides would compute one code from the same forged log);
// a device another own device added counts once this device's monitor
// has seen it added. Each with its control.
func TestVerificationOwnIdentity(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	alice, bob1, bob2 := e.device(client.Config{}), e.device(client.Config{}), e.device(client.Config{})
	e.enroll(alice, vAlice, true)
	e.enroll(bob1, vBob, false)
	e.link(bob1, bob2, vBob)
	c0 := code(t, alice, vBob).Code
	if code(t, bob1, vAlice).Code != c0 || code(t, bob2, vAlice).Code != c0 {
		t.Fatal("control: the codes differ")
	}

	// bob2 adds a third device: bob1 has not seen it added yet.
	bob3 := e.device(client.Config{})
	e.link(bob2, bob3, vBob)
	if _, err := bob1.VerificationCode(ctx, vAlice); !errors.Is(err, client.ErrOwnIdentity) || !strings.Contains(err.Error(), "run kt monitor") {
		t.Fatalf("a device added by another own device, not yet monitored: %v", err)
	}
	if _, err := bob1.Monitor(ctx); err != nil {
		t.Fatal(err)
	}
	c1 := code(t, bob1, vAlice).Code
	if c1 == c0 || code(t, alice, vBob).Code != c1 {
		t.Fatalf("after the monitor saw the new device: %q (before %q)", c1, c0)
	}

	// The recovery path adds a ghost to Bob's set: both sides would
	// derive one code from it, but Bob's devices refuse their side.
	lax := e.device(client.Config{})
	e.recover(lax, vBob, func(s *api.DeviceSet) { addSorted(s, ghost(t)) })
	if code(t, alice, vBob).Code == c1 {
		t.Fatal("the ghost did not change the code")
	}
	for _, b := range []*client.Client{bob1, bob2} {
		if _, err := b.Monitor(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := b.VerificationCode(ctx, vAlice); !errors.Is(err, client.ErrOwnIdentity) {
			t.Fatalf("ghost on the own handle: %v", err)
		}
	}

	// Alice's handle under an account key of the directory's own.
	res, err := lax.Lookup(ctx, vAlice)
	if err != nil {
		t.Fatal(err)
	}
	_, dirKey, _ := ed25519.GenerateKey(rand.Reader)
	e.recover(lax, vAlice, func(s *api.DeviceSet) { s.SignAccount(e.params.Origin, res.Index, res.Version+1, dirKey) })
	if _, err := alice.VerificationCode(ctx, vBob); !errors.Is(err, client.ErrOwnIdentity) {
		t.Fatalf("own handle under the directory's account key: %v", err)
	}
	// A device without a handle has no side to give.
	fresh := e.device(client.Config{})
	if _, err := fresh.VerificationCode(ctx, vBob); !errors.Is(err, client.ErrOwnIdentity) {
		t.Fatalf("no own handle: %v", err)
	}
}
