package client_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
)

// TestAccountKeyPaths: the account key signs changes (kind 3) for the
// owner; it is exported from one device and imported on a new one, which
// recovers the account with it; the owner's monitors report kind-3 changes
// as the account key's, with no alert.
func TestAccountKeyPaths(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	const handle = "bob@example.com"
	bob1, bob2 := e.device(client.Config{}), e.device(client.Config{})
	e.enroll(bob1, handle, true)
	e.link(bob1, bob2, handle)

	// A change signed by the account key: bob1 removes bob2 with it.
	st2, _ := bob2.State(ctx)
	subs, err := bob1.AccountChange(ctx, func(s *api.DeviceSet) error {
		s.Devices = slices.DeleteFunc(s.Devices, func(d api.Device) bool { return d.ID == st2.Device.ID })
		return nil
	})
	if err != nil {
		t.Fatalf("AccountChange: %v", err)
	}
	res := awaitVersion(t, bob1, handle, subs[0].Version)
	st1, _ := bob1.State(ctx)
	if res.Record.Kind != api.AuthAccount || res.Record.Signer != [32]byte(st1.Account.Public().(ed25519.PublicKey)) {
		t.Fatalf("logged as kind %d signed by %x", res.Record.Kind, res.Record.Signer[:8])
	}
	reps, err := bob1.Monitor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []client.Authority{client.ByThisDevice, client.ByThisDevice, client.ByAccountKey}
	if got := bys(reps[0].Changes); !slices.Equal(got, want) || len(reps[0].Alerts) != 0 {
		t.Fatalf("bob1's poll: %v, alerts %v", got, reps[0].Alerts)
	}

	// Export, and import on a new device: a wrong passphrase, a modified
	// export and an export for another log are refused and store nothing.
	exp, err := bob1.ExportAccountKey(ctx, []byte("correct horse"))
	if err != nil {
		t.Fatalf("ExportAccountKey: %v", err)
	}
	if strings.Contains(exp, base64.RawURLEncoding.EncodeToString(st1.Account.Seed())) || !strings.HasPrefix(exp, "kt-account-key:") {
		t.Fatal("the export is not encrypted")
	}
	bob3 := e.device(client.Config{})
	raw, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(exp, "kt-account-key:"))
	for name, c := range map[string]struct {
		exp, pass string
	}{
		"wrong passphrase": {exp, "wrong horse"},
		"modified":         {"kt-account-key:" + base64.RawURLEncoding.EncodeToString(flip(raw, len(raw)-1)), "correct horse"},
		"modified cost":    {"kt-account-key:" + base64.RawURLEncoding.EncodeToString(flip(raw, 18)), "correct horse"},
		"truncated":        {exp[:len(exp)-10], "correct horse"},
		"no prefix":        {strings.TrimPrefix(exp, "kt-account-key:"), "correct horse"},
	} {
		if _, err := bob3.ImportAccountKey(ctx, c.exp, []byte(c.pass)); !errors.Is(err, client.ErrAccountExport) {
			t.Errorf("%s: %v", name, err)
		}
	}
	other := newNetEnv(t)
	oc, _ := other.newClient(nil, client.Config{})
	if _, err := oc.ImportAccountKey(ctx, exp, []byte("correct horse")); !errors.Is(err, client.ErrAccountExport) {
		t.Errorf("another log: %v", err)
	}
	if st3, _ := bob3.State(ctx); st3.Account != nil {
		t.Fatal("a failed import stored a key")
	}
	// Without the account key, recovery is refused before anything is sent.
	canon, _ := api.NormalizeHandle(handle)
	if _, err := bob3.RecoverWithAccountKey(ctx, []string{handle}, true); !errors.Is(err, client.ErrNoAccountKey) {
		t.Fatalf("recovery without the key: %v", err)
	}
	hs, err := bob3.ImportAccountKey(ctx, exp, []byte("correct horse"))
	if err != nil || !slices.Equal(hs, []string{canon}) {
		t.Fatalf("ImportAccountKey: %v, %q", err, hs)
	}

	// Recovery on the new device: its key replaces the set, by a change
	// signed by the account key.
	subs, err = bob3.RecoverWithAccountKey(ctx, hs, true)
	if err != nil {
		t.Fatalf("RecoverWithAccountKey: %v", err)
	}
	res = awaitVersion(t, bob1, handle, subs[0].Version)
	st3, _ := bob3.State(ctx)
	if len(res.DeviceSet.Devices) != 1 || res.DeviceSet.Devices[0].ID != st3.Device.ID || res.Record.Kind != api.AuthAccount {
		t.Fatalf("after recovery: kind %d, %d devices", res.Record.Kind, len(res.DeviceSet.Devices))
	}
	// Both monitors see the account key's change, without alert.
	for name, c := range map[string]*client.Client{"new device": bob3, "old device": bob1} {
		reps, err := c.Monitor(ctx)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := bys(reps[0].Changes); !slices.Equal(got, []client.Authority{client.ByAccountKey}) || len(reps[0].Alerts) != 0 {
			t.Fatalf("%s's poll: %v, alerts %v", name, got, reps[0].Alerts)
		}
	}
	// The recovered device receives messages and manages the account.
	alice := e.device(client.Config{})
	e.enroll(alice, "alice@example.com", false)
	envs, err := alice.Encrypt(ctx, handle, []byte("welcome back"))
	if err != nil || len(envs) != 1 {
		t.Fatalf("Encrypt: %v, %d envelopes", err, len(envs))
	}
	if pt, err := decryptAll(t, bob3, envs); err != nil || pt != "welcome back" {
		t.Fatalf("the recovered device: %q, %v", pt, err)
	}
	bob4 := e.device(client.Config{})
	e.link(bob3, bob4, handle)
	// A second recovery of a device already in the set is refused.
	if _, err := bob3.RecoverWithAccountKey(ctx, hs, false); !errors.Is(err, client.ErrDeviceSet) {
		t.Fatalf("recovering a device already in the set: %v", err)
	}
}

// TestAccountKeyRejected: kind-3 changes that the account key did not sign
// are rejected by the directory (PermissionDenied, design.md 6.1 R5) and
// nothing is stored: a random key, the account key rotated away, and a
// device key (a role-1 authorizer) signing as the account. A device that
// still holds the rotated-away key is refused by the client too.
func TestAccountKeyRejected(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	const handle = "carol@example.com"
	carol1, carol2 := e.device(client.Config{}), e.device(client.Config{})
	e.enroll(carol1, handle, true)
	exp, err := carol1.ExportAccountKey(ctx, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	e.link(carol1, carol2, handle)
	if _, err := carol2.ImportAccountKey(ctx, exp, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	old, _ := carol1.State(ctx)
	oldKey := old.Account
	subs, err := carol1.RotateAccountKey(ctx)
	if err != nil {
		t.Fatalf("RotateAccountKey: %v", err)
	}
	res := awaitVersion(t, carol1, handle, subs[0].Version)
	cur, _ := carol1.State(ctx)
	if res.Record.Kind != api.AuthAccount || res.Record.Signer != [32]byte(oldKey.Public().(ed25519.PublicKey)) ||
		res.DeviceSet.Account.Key != [32]byte(cur.Account.Public().(ed25519.PublicKey)) {
		t.Fatal("the rotation is not a kind-3 change by the old key to the new one")
	}
	// carol2 holds only the old key now: the client refuses.
	if _, err := carol2.AccountChange(ctx, func(*api.DeviceSet) error { return nil }); !errors.Is(err, client.ErrNoAccountKey) {
		t.Fatalf("a change by the rotated-away key: %v", err)
	}

	_, random, _ := ed25519.GenerateKey(nil)
	for name, signer := range map[string]ed25519.PrivateKey{
		"random key":            random,
		"rotated-away key":      oldKey,
		"device key as account": cur.Device.Signing,
	} {
		t.Run(name, func(t *testing.T) {
			res, err := carol1.Lookup(ctx, handle)
			if err != nil {
				t.Fatal(err)
			}
			set := &api.DeviceSet{AccountID: res.DeviceSet.AccountID, Devices: slices.Clone(res.DeviceSet.Devices)}
			addSorted(set, ghost(t))
			// The set itself is validly signed (by a key the attacker
			// holds), so only the change's signer is wrong.
			set.SignAccount(netOrigin, res.Index, res.Version+1, random)
			hc, err := client.NewChange(netOrigin, res, set, api.AuthAccount, signer)
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.dir.Change(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}})
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "R5 account") {
				t.Fatalf("Change: %v, want PermissionDenied for the authorization (R5)", err)
			}
		})
	}
	// Nothing was stored: the next accepted change is the next version,
	// and carol's monitor sees only her own changes.
	v := res.Version
	subs, err = carol1.AccountChange(ctx, func(*api.DeviceSet) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if subs[0].Version != v+1 {
		t.Fatalf("version %d after the rejected changes, want %d", subs[0].Version, v+1)
	}
	awaitVersion(t, carol1, handle, v+1)
	reps, err := carol1.Monitor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []client.Authority{client.ByThisDevice, client.ByThisDevice, client.ByAccountKey, client.ByAccountKey}
	if got := bys(reps[0].Changes); !slices.Equal(got, want) || len(reps[0].Alerts) != 0 {
		t.Fatalf("carol's poll: %v, alerts %v", got, reps[0].Alerts)
	}
	for _, c := range reps[0].Changes[2:] {
		if len(c.Added) != 0 || len(c.Removed) != 0 || len(c.DeviceSet.Devices) != 2 {
			t.Fatalf("version %d changed the devices", c.Version)
		}
	}
}

// FuzzOpenAccountExport: an account key export never panics the importer,
// fails only with ErrAccountExport, and a payload that decrypts parses
// strictly. Seeds: valid exports (cheap parameters) of well-formed and
// malformed payloads.
func FuzzOpenAccountExport(f *testing.F) {
	pass := []byte("pw")
	good := append([]byte{1}, make([]byte, 32)...)
	good = append(good, 0, 3, 'a', '/', 'b', 0, 0, 0, 7, 0, 1, 0, 13)
	good = append(good, "mailto:h@x.io"...)
	f.Add(client.SealAccountExportForTest(good, pass))
	f.Add(client.SealAccountExportForTest(good[:len(good)-1], pass))
	f.Add(client.SealAccountExportForTest(append(slices.Clone(good), 0), pass))
	f.Add(client.SealAccountExportForTest([]byte{2}, pass))
	f.Add("kt-account-key:")
	f.Fuzz(func(t *testing.T, exp string) {
		seed, origin, hs, err := client.OpenAccountExportForTest(exp, pass)
		if err != nil {
			if !errors.Is(err, client.ErrAccountExport) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if len(seed) != ed25519.SeedSize {
			t.Fatalf("decoded a seed of %d bytes (%q %q)", len(seed), origin, hs)
		}
	})
}

// TestAccountExportPayload: the payload inside an export parses strictly.
func TestAccountExportPayload(t *testing.T) {
	pass := []byte("pw")
	good := append([]byte{1}, make([]byte, 32)...)
	good = append(good, 0, 3, 'a', '/', 'b', 0, 0, 0, 7, 0, 1, 0, 13)
	good = append(good, "mailto:h@x.io"...)
	if _, o, hs, err := client.OpenAccountExportForTest(client.SealAccountExportForTest(good, pass), pass); err != nil || o != "a/b" || !slices.Equal(hs, []string{"mailto:h@x.io"}) {
		t.Fatalf("%q %q %v", o, hs, err)
	}
	for name, pt := range map[string][]byte{
		"truncated":     good[:len(good)-1],
		"trailing byte": append(slices.Clone(good), 0),
		"version 2":     append([]byte{2}, good[1:]...),
		"no key hash":   good[:1+32+5],
		"not canonical": append(slices.Clone(good[:len(good)-4]), "X.IO"...),
	} {
		if _, _, _, err := client.OpenAccountExportForTest(client.SealAccountExportForTest(pt, pass), pass); !errors.Is(err, client.ErrAccountExport) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
