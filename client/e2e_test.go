package client_test

import (
	"crypto/ed25519"
	"errors"
	"slices"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/client"
)

// TestEndToEnd: Alice encrypts to Bob's three devices (and her own second
// device) and each decrypts; a device Bob removed cannot decrypt later
// messages; Bob's monitor classifies his own changes without alerts and
// alerts on a device added through the operator's Recover RPC, and on a
// device added and removed again between two polls.
func TestEndToEnd(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()

	alice1, alice2 := e.device(client.Config{}), e.device(client.Config{})
	e.enroll(alice1, "alice@example.com", false)
	e.link(alice1, alice2, "alice@example.com")

	bob1, bob2, bob3 := e.device(client.Config{}), e.device(client.Config{}), e.device(client.Config{})
	e.enroll(bob1, "bob@example.com", false)
	e.link(bob1, bob2, "bob@example.com")
	e.link(bob1, bob3, "bob@example.com")

	// Bob's first poll: enrollment and two additions, all by this device.
	reps, err := bob1.Monitor(ctx)
	if err != nil {
		t.Fatalf("Monitor: %v", err)
	}
	if len(reps) != 1 || len(reps[0].Changes) != 3 || len(reps[0].Alerts) != 0 {
		t.Fatalf("first poll: %+v", reps)
	}
	for _, c := range reps[0].Changes {
		if c.By != client.ByThisDevice {
			t.Errorf("version %d by %v, want this device", c.Version, c.By)
		}
	}
	// Bob's second device joined at version 2: its first poll shows the
	// third device, added by another of Bob's devices, without alert.
	if reps, err := bob2.Monitor(ctx); err != nil || !slices.Equal(bys(reps[0].Changes), []client.Authority{client.ByOwnDevice}) || len(reps[0].Alerts) != 0 {
		t.Fatalf("bob2's first poll: %v, %+v", err, reps)
	}

	envs, err := alice1.Encrypt(ctx, "bob@example.com", []byte("hello bob"))
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if len(envs) != 4 {
		t.Fatalf("%d envelopes, want 4 (Bob's three devices and Alice's other device)", len(envs))
	}
	for i, c := range []*client.Client{bob1, bob2, bob3, alice2} {
		pt, err := decryptAll(t, c, envs)
		if err != nil || pt != "hello bob" {
			t.Errorf("device %d: %q, %v", i, pt, err)
		}
	}
	// Alice's own device cannot decrypt: nothing was encrypted to it.
	if _, err := decryptAll(t, alice1, envs); err == nil {
		t.Errorf("the sending device has an envelope")
	}
	// An envelope does not decrypt on another device, nor when modified.
	b0, _ := envs[0].MarshalBinary()
	for _, c := range []*client.Client{bob1, bob2, bob3} {
		st, _ := c.State(ctx)
		if st.Device.ID == envs[0].Device {
			continue
		}
		if _, _, err := c.Decrypt(ctx, b0); !errors.Is(err, client.ErrEnvelope) {
			t.Errorf("another device's envelope: %v", err)
		}
	}
	mod := *envs[0]
	mod.From = "mallory@example.com"
	mb, _ := mod.MarshalBinary()
	for _, c := range []*client.Client{bob1, bob2, bob3} {
		if _, _, err := c.Decrypt(ctx, mb); err == nil {
			t.Errorf("an envelope with a modified sender decrypts")
		}
	}

	// Bob removes his third device; later messages do not reach it.
	st3, _ := bob3.State(ctx)
	subs, err := bob1.RemoveDevice(ctx, st3.Device.ID)
	if err != nil {
		t.Fatalf("RemoveDevice: %v", err)
	}
	awaitVersion(t, alice1, "bob@example.com", subs[0].Version)
	envs, err = alice1.Encrypt(ctx, "bob@example.com", []byte("after removal"))
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if len(envs) != 3 {
		t.Fatalf("%d envelopes after removal, want 3", len(envs))
	}
	if pt, err := decryptAll(t, bob3, envs); err == nil {
		t.Fatalf("the removed device decrypted %q", pt)
	}
	for _, env := range envs {
		b, _ := env.MarshalBinary()
		if _, _, err := bob3.Decrypt(ctx, b); !errors.Is(err, client.ErrEnvelope) {
			t.Fatalf("removed device: %v", err)
		}
	}
	if pt, err := decryptAll(t, bob2, envs); err != nil || pt != "after removal" {
		t.Fatalf("bob2 after removal: %q, %v", pt, err)
	}

	// Re-keying: bob2 replaces its keys; messages encrypted afterwards
	// decrypt with the new key.
	subs, err = bob2.Rekey(ctx)
	if err != nil {
		t.Fatalf("Rekey: %v", err)
	}
	awaitVersion(t, alice1, "bob@example.com", subs[0].Version)
	envs, err = alice1.Encrypt(ctx, "bob@example.com", []byte("after rekey"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := decryptAll(t, bob2, envs); err != nil || pt != "after rekey" {
		t.Fatalf("bob2 after rekey: %q, %v", pt, err)
	}

	// Bob's poll: the removal (this device) and the re-key (another of
	// his devices), no alert.
	reps, err = bob1.Monitor(ctx)
	if err != nil {
		t.Fatalf("Monitor: %v", err)
	}
	if got := bys(reps[0].Changes); !slices.Equal(got, []client.Authority{client.ByThisDevice, client.ByOwnDevice}) || len(reps[0].Alerts) != 0 {
		t.Fatalf("second poll: by %v, alerts %v", got, reps[0].Alerts)
	}

	// The operator adds a ghost device through the recovery path.
	g := ghost(t)
	e.recover(bob1, "bob@example.com", func(s *api.DeviceSet) { addSorted(s, g) })
	reps, err = bob1.Monitor(ctx)
	if err != nil {
		t.Fatalf("Monitor: %v", err)
	}
	if !hasAlert(reps[0].Alerts, client.AlertRecovery) || len(reps[0].Changes) != 1 || reps[0].Changes[0].By != client.ByRecovery ||
		len(reps[0].Changes[0].Added) != 1 || reps[0].Changes[0].Added[0].ID != g.ID {
		t.Fatalf("recovery poll: %+v", reps[0].MonitorResult)
	}
	// Bob's other device sees it too.
	if reps, err := bob2.Monitor(ctx); err != nil || !hasAlert(reps[0].Alerts, client.AlertRecovery) {
		t.Fatalf("bob2 did not alert: %v %+v", err, reps)
	}

	// A ghost added and removed again between two polls.
	g2 := ghost(t)
	e.recover(bob1, "bob@example.com", func(s *api.DeviceSet) { addSorted(s, g2) })
	e.recover(bob1, "bob@example.com", func(s *api.DeviceSet) {
		s.Devices = slices.DeleteFunc(s.Devices, func(d api.Device) bool { return d.ID == g2.ID || d.ID == g.ID })
	})
	reps, err = bob1.Monitor(ctx)
	if err != nil {
		t.Fatalf("Monitor: %v", err)
	}
	r := reps[0]
	if !hasAlert(r.Alerts, client.AlertTransientDevice) || len(r.Transient) != 1 || r.Transient[0].ID != g2.ID || len(r.Changes) != 2 {
		t.Fatalf("add-remove poll: alerts %v, transient %v, %d changes", r.Alerts, r.Transient, len(r.Changes))
	}
	// Nothing changed since: no alert, and the poll is small.
	reps, err = bob1.Monitor(ctx)
	if err != nil || len(reps[0].Changes) != 0 || len(reps[0].Alerts) != 0 {
		t.Fatalf("quiet poll: %v %+v", err, reps)
	}
	if n := reps[0].RequestBytes + reps[0].ResponseBytes; n > 2048 {
		t.Errorf("quiet poll costs %d bytes, more than 2 KB", n)
	}
	t.Logf("quiet poll: request %d B, response %d B (epoch part included: %v)", reps[0].RequestBytes, reps[0].ResponseBytes, !reps[0].Epoch.Reused)
}

func bys(cs []client.Change) []client.Authority {
	var out []client.Authority
	for _, c := range cs {
		out = append(out, c.By)
	}
	return out
}

func hasAlert(as []client.Alert, k client.AlertKind) bool {
	return slices.ContainsFunc(as, func(a client.Alert) bool { return a.Kind == k })
}

// TestStrictMode: a strict-mode sender pins Bob's account key on first use
// and refuses, with nothing encrypted, a device set the operator's
// recovery path wrote without Bob's account signature; a validly signed
// account key rotation is surfaced as AccountKeyChangedError.
func TestStrictMode(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	bob := e.device(client.Config{})
	e.enroll(bob, "bob@example.com", true)
	alice := e.device(client.Config{Strict: true})
	// A sender signs with a device of its handle (design.md 12.3); in
	// strict mode her own handle carries her account key.
	e.enroll(alice, "alice@example.com", true)

	if _, err := alice.Encrypt(ctx, "bob@example.com", []byte("hi")); err != nil {
		t.Fatalf("strict Encrypt: %v", err)
	}
	st, _ := alice.State(ctx)
	bst, _ := bob.State(ctx)
	if pin, ok := st.Pins["mailto:bob@example.com"]; !ok || pin != [32]byte(bst.Account.Public().(ed25519.PublicKey)) {
		t.Fatalf("pin %x, want Bob's account key", pin)
	}

	// A strict sender refuses a contact without an account key.
	carol := e.device(client.Config{})
	e.enroll(carol, "carol@example.com", false)
	if envs, err := alice.Encrypt(ctx, "carol@example.com", []byte("hi")); !errors.Is(err, client.ErrStrict) || envs != nil {
		t.Fatalf("no account key: %v, %d envelopes", err, len(envs))
	}

	// Recovery adds a ghost. It cannot sign for Bob's account key (the
	// directory refuses a set with an account signature that does not
	// verify), so the set it writes has none.
	g := ghost(t)
	e.recover(bob, "bob@example.com", func(s *api.DeviceSet) { addSorted(s, g) })
	envs, err := alice.Encrypt(ctx, "bob@example.com", []byte("hi"))
	var ve *client.VerifyError
	if !errors.Is(err, client.ErrStrict) || !errors.As(err, &ve) || ve.Step != client.StepStrict || envs != nil {
		t.Fatalf("ghost under strict mode: %v, %d envelopes", err, len(envs))
	}
	// A non-strict sender encrypts (and may warn: the last change was a
	// recovery).
	lax := e.device(client.Config{})
	res, err := lax.Lookup(ctx, "bob@example.com")
	if err != nil || res.Kind != api.AuthRecovery {
		t.Fatalf("non-strict lookup: %v, kind %v", err, res.Kind)
	}

	// Bob rotates his account key (removing the ghost first): Alice's
	// client surfaces the change and refuses until she repins.
	subs, err := bob.RemoveDevice(ctx, g.ID)
	if err != nil {
		t.Fatalf("RemoveDevice: %v", err)
	}
	awaitVersion(t, bob, "bob@example.com", subs[0].Version)
	subs, err = bob.SetAccountKey(ctx)
	if err != nil {
		t.Fatalf("SetAccountKey: %v", err)
	}
	awaitVersion(t, lax, "bob@example.com", subs[0].Version)
	_, err = alice.Encrypt(ctx, "bob@example.com", []byte("hi"))
	var kc *client.AccountKeyChangedError
	if !errors.As(err, &kc) || !errors.Is(err, client.ErrStrict) {
		t.Fatalf("rotated account key: %v", err)
	}
	if err := alice.Repin(ctx, "bob@example.com", &kc.New); err != nil {
		t.Fatal(err)
	}
	envs, err = alice.Encrypt(ctx, "bob@example.com", []byte("hi"))
	if err != nil || len(envs) != 1 {
		t.Fatalf("after repin: %v, %d envelopes", err, len(envs))
	}
	if pt, err := decryptAll(t, bob, envs); err != nil || pt != "hi" {
		t.Fatalf("bob: %q %v", pt, err)
	}

	// The sender's own handle, in strict mode, must carry her account
	// key: a ghost the recovery path adds to it (without her account
	// signature) stops her copies, and so the whole message.
	if envs, err := alice.Encrypt(ctx, "bob@example.com", []byte("hi")); err != nil || len(envs) != 1 {
		t.Fatalf("strict sender with an own handle: %v, %d envelopes", err, len(envs))
	}
	e.recover(lax, "alice@example.com", func(s *api.DeviceSet) { addSorted(s, ghost(t)) })
	envs, err = alice.Encrypt(ctx, "bob@example.com", []byte("hi"))
	if !errors.Is(err, client.ErrStrict) || envs != nil {
		t.Fatalf("ghost on the sender's own handle: %v, %d envelopes", err, len(envs))
	}
}
