package client_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
)

// msgEnv is a real deployment (gRPC directory, witness) with Alice (two
// devices) and Bob enrolled, for the checks of design.md 12.3 (receiving).
type msgEnv struct {
	*netEnv
	alice1, alice2, bob *client.Client
	a1, a2, b           *client.DeviceKeys
	bobDev              api.Device
}

func newMsgEnv(t *testing.T) *msgEnv {
	e := &msgEnv{netEnv: newNetEnv(t)}
	e.alice1, e.alice2, e.bob = e.device(client.Config{}), e.device(client.Config{}), e.device(client.Config{})
	e.enroll(e.alice1, "alice@example.com", false)
	e.link(e.alice1, e.alice2, "alice@example.com")
	e.enroll(e.bob, "bob@example.com", false)
	e.a1, e.a2, e.b = keysOf(t, e.alice1), keysOf(t, e.alice2), keysOf(t, e.bob)
	e.bobDev = e.b.Device()
	return e
}

func keysOf(t *testing.T, c *client.Client) *client.DeviceKeys {
	t.Helper()
	st, err := c.State(t.Context())
	if err != nil || st.Device == nil || st.Device.Message == nil {
		t.Fatalf("device keys: %v", err)
	}
	return st.Device
}

// forge seals a format-2 envelope from Alice to Bob's device, signed by
// key, with sender device dev, time ts and message ID id.
func (e *msgEnv) forge(t *testing.T, from string, dev [16]byte, ts time.Time, id [16]byte, key ed25519.PrivateKey) []byte {
	t.Helper()
	env, err := client.SealSignedForTest(e.bobDev, from, "mailto:bob@example.com", "mailto:bob@example.com", dev, uint64(ts.UnixMilli()), id, netOrigin, key, []byte("forged"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := env.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func randomID() (id [16]byte) {
	rand.Read(id[:])
	return id
}

// refused expects Bob's Decrypt to fail with want (and ErrEnvelope) and to
// return nothing.
func refused(t *testing.T, c *client.Client, b []byte, want error) {
	t.Helper()
	pt, env, err := c.Decrypt(t.Context(), b)
	if !errors.Is(err, want) || !errors.Is(err, client.ErrEnvelope) || pt != nil || env != nil {
		t.Fatalf("Decrypt: %q, %v; want %v", pt, err, want)
	}
}

// TestDecryptChecks breaks each check of design.md 12.3 (receiving) alone,
// on envelopes that are valid in every other part, after a control run in
// which Bob authenticates Alice's real message.
func TestDecryptChecks(t *testing.T) {
	e := newMsgEnv(t)
	ctx := t.Context()
	alice := "mailto:alice@example.com"

	// Control: Alice's message; Bob learns her sender handle and device
	// as authenticated, and so does her other device.
	envs, err := e.alice1.Encrypt(ctx, "bob@example.com", []byte("hello bob"))
	if err != nil || len(envs) != 2 {
		t.Fatalf("Encrypt: %d envelopes, %v", len(envs), err)
	}
	var toBob []byte
	for _, env := range envs {
		if env.Version != client.EnvelopeV2 || env.From != alice || env.SenderDevice != e.a1.ID || env.MessageID != envs[0].MessageID {
			t.Fatalf("envelope %+v", env)
		}
		if env.Device == e.b.ID {
			toBob, _ = env.MarshalBinary()
		}
	}
	pt, got, err := e.bob.Decrypt(ctx, toBob)
	if err != nil || string(pt) != "hello bob" || got.From != alice || got.SenderDevice != e.a1.ID {
		t.Fatalf("control: %q, %+v, %v", pt, got, err)
	}
	if pt, err := decryptAll(t, e.alice2, envs); err != nil || pt != "hello bob" {
		t.Fatalf("Alice's other device: %q, %v", pt, err)
	}
	// The forging helper makes envelopes Bob accepts: its control.
	now := time.Now()
	if pt, _, err := e.bob.Decrypt(ctx, e.forge(t, alice, e.a1.ID, now, randomID(), e.a1.Message)); err != nil || string(pt) != "forged" {
		t.Fatalf("control of the forging helper: %q, %v", pt, err)
	}

	good, err := client.ParseEnvelope(toBob)
	if err != nil {
		t.Fatal(err)
	}
	reencode := func(edit func(*client.Envelope)) []byte {
		c := *good
		c.Enc, c.Ciphertext = bytes.Clone(good.Enc), bytes.Clone(good.Ciphertext)
		edit(&c)
		b, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	other := e.device(client.Config{})
	e.enroll(other, "carol@example.com", false)
	carol := keysOf(t, other)

	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"replayed (the control's envelope again)", toBob, client.ErrMessageReplay},
		{"signature byte flipped", reencode(func(c *client.Envelope) { c.Signature[63] ^= 1 }), client.ErrMessageSignature},
		{"ciphertext byte flipped", reencode(func(c *client.Envelope) { c.Ciphertext[0] ^= 1 }), client.ErrMessageSignature},
		{"sender handle changed to another registered handle", reencode(func(c *client.Envelope) { c.From = "mailto:carol@example.com" }), client.ErrUnknownSenderDevice},
		{"sender handle changed to an unregistered handle", reencode(func(c *client.Envelope) { c.From = "mailto:nobody@example.com" }), client.ErrUnknownSenderDevice},
		{"sender device ID changed to an unknown one", reencode(func(c *client.Envelope) { c.SenderDevice[0] ^= 1 }), client.ErrUnknownSenderDevice},
		{"sender device ID changed to Alice's other device", reencode(func(c *client.Envelope) { c.SenderDevice = e.a2.ID }), client.ErrMessageSignature},
		{"timestamp changed", reencode(func(c *client.Envelope) { c.Timestamp++ }), client.ErrMessageSignature},
		{"message ID changed", reencode(func(c *client.Envelope) { c.MessageID[0] ^= 1 }), client.ErrMessageSignature},
		{"signed by Alice's device signing key", e.forge(t, alice, e.a1.ID, now, randomID(), e.a1.Signing), client.ErrMessageSignature},
		{"signed by Carol's message key as Alice's device", e.forge(t, alice, e.a1.ID, now, randomID(), carol.Message), client.ErrMessageSignature},
		{"Carol's device claims Alice's handle", e.forge(t, alice, carol.ID, now, randomID(), carol.Message), client.ErrUnknownSenderDevice},
		{"signed for another origin", func() []byte {
			env, err := client.SealSignedForTest(e.bobDev, alice, "mailto:bob@example.com", "mailto:bob@example.com", e.a1.ID, uint64(now.UnixMilli()), randomID(), "other.example/kt", e.a1.Message, []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := env.MarshalBinary()
			return b
		}(), client.ErrMessageSignature},
		{"time older than the window", e.forge(t, alice, e.a1.ID, now.Add(-client.DefaultMessageWindow-time.Minute), randomID(), e.a1.Message), client.ErrMessageTime},
		{"time in the future", e.forge(t, alice, e.a1.ID, now.Add(10*time.Minute), randomID(), e.a1.Message), client.ErrMessageTime},
		{"unsigned format 1", func() []byte {
			env, err := client.SealForTest(e.bobDev, alice, "mailto:bob@example.com", "mailto:bob@example.com", []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := env.MarshalBinary()
			return b
		}(), client.ErrUnsignedEnvelope},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := e.bob.State(ctx)
			refused(t, e.bob, tc.b, tc.want)
			after, _ := e.bob.State(ctx)
			if len(after.Seen.Entries) != len(before.Seen.Entries) {
				t.Errorf("a refused envelope entered the replay cache")
			}
		})
	}

	// A removed device: Bob received from Alice's second device, then
	// Alice removed it; its key no longer counts. A device of Bob's that
	// never saw it calls it unknown.
	if pt, _, err := e.bob.Decrypt(ctx, e.forge(t, alice, e.a2.ID, time.Now(), randomID(), e.a2.Message)); err != nil || string(pt) != "forged" {
		t.Fatalf("from Alice's second device before its removal: %q, %v", pt, err)
	}
	subs, err := e.alice1.RemoveDevice(ctx, e.a2.ID)
	if err != nil {
		t.Fatal(err)
	}
	awaitVersion(t, e.bob, "bob@example.com", 1)
	awaitVersion(t, e.alice1, "alice@example.com", subs[0].Version)
	waitLookup(t, e.bob, "alice@example.com", subs[0].Version)
	refused(t, e.bob, e.forge(t, alice, e.a2.ID, time.Now(), randomID(), e.a2.Message), client.ErrSenderDeviceRemoved)
	if _, err := e.alice2.Encrypt(ctx, "bob@example.com", []byte("still here?")); !errors.Is(err, client.ErrCannotSign) {
		t.Fatalf("the removed device's Encrypt: %v, want ErrCannotSign", err)
	}
	bob2 := e.device(client.Config{})
	e.link(e.bob, bob2, "bob@example.com")
	b2 := keysOf(t, bob2)
	env, err := client.SealSignedForTest(b2.Device(), alice, "mailto:bob@example.com", "mailto:bob@example.com", e.a2.ID, uint64(time.Now().UnixMilli()), randomID(), netOrigin, e.a2.Message, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := env.MarshalBinary()
	refused(t, bob2, b, client.ErrUnknownSenderDevice)
}

// waitLookup polls c's lookups of handle until its version is at least v.
func waitLookup(t *testing.T, c *client.Client, handle string, v uint64) {
	t.Helper()
	awaitVersion(t, c, handle, v)
}

// TestMessageKeyUpgrade: a device whose keys predate message keys
// registers a format-0x01 set; it can receive but not send authenticated
// messages (ErrCannotSign; a recipient of a forged envelope from it gets
// ErrSenderNoMessageKey); UpgradeMessageKey writes a format-0x02 set with
// a message key and the same authorizers, after which its messages are
// authenticated.
func TestMessageKeyUpgrade(t *testing.T) {
	e := newMsgEnv(t)
	ctx := t.Context()
	dave, store := e.newClient(nil, client.Config{})
	if _, err := dave.Init(ctx, api.HPKESuite{}); err != nil {
		t.Fatal(err)
	}
	// Legacy state: the device keys without a message key.
	if err := store.Update(ctx, func(old []byte) ([]byte, error) {
		var s client.State
		if err := s.UnmarshalBinary(old); err != nil {
			return nil, err
		}
		s.Device.Message = nil
		return s.MarshalBinary()
	}); err != nil {
		t.Fatal(err)
	}
	st, _ := dave.State(ctx)
	if st.Device.Message != nil {
		t.Fatal("the message key survived")
	}
	// A format-0x01 enrollment, as an old client wrote it.
	res, err := dave.Lookup(ctx, "dave@example.com")
	if err != nil {
		t.Fatal(err)
	}
	set := &api.DeviceSet{Format: api.DeviceSetV1, Devices: []api.Device{st.Device.Device()}}
	rand.Read(set.AccountID[:])
	hc, err := client.NewChange(netOrigin, res, set, api.AuthEnroll, st.Device.Signing)
	if err != nil {
		t.Fatal(err)
	}
	if hc.DeviceSet[0] != api.DeviceSetV1 {
		t.Fatalf("format 0x%02x", hc.DeviceSet[0])
	}
	if _, err := e.dir.Enroll(ctx, &ktpb.EnrollRequest{Change: hc, Credential: e.token.IssueToken(res.Handle)}); err != nil {
		t.Fatal(err)
	}
	awaitVersion(t, dave, "dave@example.com", 1)
	if _, err := dave.Join(ctx, "dave@example.com"); err != nil {
		t.Fatal(err)
	}
	// It receives.
	envs, err := e.alice1.Encrypt(ctx, "dave@example.com", []byte("to an old device"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := decryptAll(t, dave, envs); err != nil || pt != "to an old device" {
		t.Fatalf("dave receives: %q, %v", pt, err)
	}
	// It cannot send; an envelope claiming its device is refused.
	if _, err := dave.Encrypt(ctx, "bob@example.com", []byte("hi")); !errors.Is(err, client.ErrCannotSign) {
		t.Fatalf("Encrypt from a format-0x01 device: %v, want ErrCannotSign", err)
	}
	_, anyKey, _ := ed25519.GenerateKey(nil)
	refused(t, e.bob, e.forge(t, "mailto:dave@example.com", st.Device.ID, time.Now(), randomID(), anyKey), client.ErrSenderNoMessageKey)

	// The upgrade.
	subs, err := dave.UpgradeMessageKey(ctx)
	if err != nil || len(subs) != 1 {
		t.Fatalf("UpgradeMessageKey: %v", err)
	}
	up := awaitVersion(t, e.bob, "dave@example.com", subs[0].Version)
	st, _ = dave.State(ctx)
	if up.DeviceSet.Format != api.DeviceSetV2 || len(up.DeviceSet.Devices) != 1 || up.DeviceSet.Devices[0].MessageKey != st.Device.MessagePublic() || st.Device.Message == nil {
		t.Fatalf("upgraded set %+v", up.DeviceSet)
	}
	if v1 := set.Authorizers(); len(v1) != 1 || up.DeviceSet.Authorizers()[0] != v1[0] {
		t.Fatalf("the upgrade changed the authorizers")
	}
	awaitVersion(t, dave, "dave@example.com", subs[0].Version)
	if again, err := dave.UpgradeMessageKey(ctx); err != nil || again != nil {
		t.Fatalf("a second upgrade sent %d changes, %v", len(again), err)
	}
	envs, err = dave.Encrypt(ctx, "bob@example.com", []byte("signed now"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := envs[0].MarshalBinary()
	if pt, got, err := e.bob.Decrypt(ctx, b); err != nil || string(pt) != "signed now" || got.From != "mailto:dave@example.com" {
		t.Fatalf("after the upgrade: %q, %v", pt, err)
	}
}

// TestReplayCache: the cache is bounded; when it is full the oldest entry
// goes and its time becomes the low-water mark, under which envelopes are
// refused; it survives the state encoding.
func TestReplayCache(t *testing.T) {
	e := newMsgEnv(t)
	ctx := t.Context()
	base := time.Now().Add(-time.Hour)
	first := e.forge(t, "mailto:alice@example.com", e.a1.ID, base, randomID(), e.a1.Message)
	if _, _, err := e.bob.Decrypt(ctx, first); err != nil {
		t.Fatal(err)
	}
	refused(t, e.bob, first, client.ErrMessageReplay)
	// Fill the cache through the state (4096 entries after the first).
	if err := e.bob.UpdateStateForTest(ctx, func(s *client.State) {
		for i := range 4095 {
			var k [32]byte
			k[0], k[1] = byte(i>>8), byte(i)
			s.Seen.Entries = append(s.Seen.Entries, client.SeenMessage{Key: k, Time: uint64(base.Add(time.Duration(i+1) * time.Millisecond).UnixMilli())})
		}
	}); err != nil {
		t.Fatal(err)
	}
	next := e.forge(t, "mailto:alice@example.com", e.a1.ID, time.Now(), randomID(), e.a1.Message)
	if _, _, err := e.bob.Decrypt(ctx, next); err != nil {
		t.Fatal(err)
	}
	st, _ := e.bob.State(ctx)
	if n := len(st.Seen.Entries); n != 4096 || st.Seen.Mark != uint64(base.UnixMilli()) {
		t.Fatalf("%d entries, mark %d; want 4096 and the first message's time %d", n, st.Seen.Mark, base.UnixMilli())
	}
	// The first message fell out of the cache, but its time is at the
	// mark: still refused.
	refused(t, e.bob, first, client.ErrMessageTime)
	refused(t, e.bob, e.forge(t, "mailto:alice@example.com", e.a1.ID, base, randomID(), e.a1.Message), client.ErrMessageTime)
	refused(t, e.bob, next, client.ErrMessageReplay)
}

// TestSignedMessageSuites: signed messages between devices of both HPKE
// suites, X25519 and the hybrid MLKEM768-X25519, sender and recipient.
func TestSignedMessageSuites(t *testing.T) {
	e := newNetEnv(t)
	ctx := t.Context()
	hybrid := func() *client.Client {
		c, _ := e.newClient(nil, client.Config{})
		if _, err := c.Init(ctx, api.SuiteHybrid); err != nil {
			t.Fatal(err)
		}
		return c
	}
	alice, bob := hybrid(), e.device(client.Config{})
	e.enroll(alice, "alice@example.com", false)
	e.enroll(bob, "bob@example.com", false)
	bob2 := hybrid()
	e.link(bob, bob2, "bob@example.com")
	awaitVersion(t, alice, "bob@example.com", 2)
	envs, err := alice.Encrypt(ctx, "bob@example.com", []byte("pq hello"))
	if err != nil || len(envs) != 2 {
		t.Fatalf("Encrypt: %d envelopes, %v", len(envs), err)
	}
	for _, c := range []*client.Client{bob, bob2} {
		if pt, err := decryptAll(t, c, envs); err != nil || pt != "pq hello" {
			t.Fatalf("decrypt: %q, %v", pt, err)
		}
	}
	suites := map[api.HPKESuite]bool{}
	for _, env := range envs {
		suites[env.Suite] = true
	}
	if !suites[api.SuiteX25519] || !suites[api.SuiteHybrid] {
		t.Fatalf("suites %v", suites)
	}
	// And back, from the X25519 device to the hybrid sender.
	envs, err = bob.Encrypt(ctx, "alice@example.com", []byte("reply"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := decryptAll(t, alice, envs); err != nil || pt != "reply" {
		t.Fatalf("reply: %q, %v", pt, err)
	}
}

// TestLegacyStateLoads: a state file written before message keys (the
// golden client state, device keys encoding version 1) loads, with no
// message key; the next write stores the key once one is generated.
func TestLegacyStateLoads(t *testing.T) {
	raw, err := os.ReadFile("testdata/client-state.golden")
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	var st client.State
	if err := st.UnmarshalBinary(b); err != nil {
		t.Fatalf("a state file from before message keys does not load: %v", err)
	}
	if st.Device == nil || st.Device.Message != nil || st.Device.MessagePublic() != ([32]byte{}) || st.Device.Device().HasMessageKey() {
		t.Fatalf("legacy device keys: %+v", st.Device)
	}
	_, st.Device.Message, _ = ed25519.GenerateKey(nil)
	again, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var st2 client.State
	if err := st2.UnmarshalBinary(again); err != nil || !st2.Device.Message.Equal(st.Device.Message) {
		t.Fatalf("the message key does not persist: %v", err)
	}
}

// TestDecryptReusesSenderSet: with the default freshness bound (Params
// leaves MaxAge zero), a second message from the same sender within the
// trusted epoch is checked against the cached verified set, without a
// lookup (design.md 12.3 receiving step 2); the control is the first
// message, which looks the sender up.
func TestDecryptReusesSenderSet(t *testing.T) {
	e := newNetEnv(t)
	alice := e.device(client.Config{})
	e.enroll(alice, "alice@example.com", false)
	dir := &countingDir{DirectoryClient: e.dir}
	bob, _, err := e.dep.NewDevice(t.Context(), dir, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	e.enroll(bob, "bob@example.com", false)
	st, err := bob.State(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var msgs [][]byte
	for range 2 {
		envs, err := alice.Encrypt(t.Context(), "bob@example.com", []byte("hi"))
		if err != nil {
			t.Fatal(err)
		}
		for _, env := range envs {
			if env.Device == st.Device.ID {
				b, err := env.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				msgs = append(msgs, b)
			}
		}
	}
	before := dir.calls.Load()
	if _, _, err := bob.Decrypt(t.Context(), msgs[0]); err != nil {
		t.Fatal(err)
	}
	first := dir.calls.Load()
	if first == before {
		t.Fatal("the first message from Alice did not look her up")
	}
	if _, _, err := bob.Decrypt(t.Context(), msgs[1]); err != nil {
		t.Fatal(err)
	}
	if n := dir.calls.Load() - first; n != 0 {
		t.Fatalf("the second message from Alice made %d lookups; the verified set of the first should be reused", n)
	}
}

// TestReplayStore: with Config.Replay the replay cache lives in its own
// store (design.md 12.3): a replayed message is refused, also by a client
// restarted on the same stores, and an empty replay store is seeded from
// the cache an earlier version kept in the state (the control: a message
// never seen is accepted and lands in the replay store).
func TestReplayStore(t *testing.T) {
	e := newNetEnv(t)
	alice := e.device(client.Config{})
	e.enroll(alice, "alice@example.com", false)
	bob, state, err := e.dep.NewDevice(t.Context(), nil, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	e.enroll(bob, "bob@example.com", false)
	st, err := bob.State(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	msg := func() []byte {
		envs, err := alice.Encrypt(t.Context(), "bob@example.com", []byte("hi"))
		if err != nil {
			t.Fatal(err)
		}
		for _, env := range envs {
			if env.Device == st.Device.ID {
				b, err := env.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
		}
		t.Fatal("no envelope for Bob's device")
		return nil
	}
	inState, m1, m2 := msg(), msg(), msg()
	// An older client keeps the cache in the state.
	if _, _, err := bob.Decrypt(t.Context(), inState); err != nil {
		t.Fatal(err)
	}
	replay := &client.MemStore{}
	open := func() *client.Client {
		c, err := client.New(e.dir, e.params, state, client.Config{Log: e.logc, Replay: replay})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	bob = open()
	refused(t, bob, inState, client.ErrMessageReplay) // seeded from the state
	if b, _ := replay.Load(t.Context()); b != nil {
		t.Fatal("a refused message was stored")
	}
	if _, _, err := bob.Decrypt(t.Context(), m1); err != nil {
		t.Fatalf("control: a new message: %v", err)
	}
	if b, _ := replay.Load(t.Context()); b == nil {
		t.Fatal("the accepted message's ID is not in the replay store")
	}
	refused(t, bob, m1, client.ErrMessageReplay)
	bob = open() // restarted on the same stores
	refused(t, bob, m1, client.ErrMessageReplay)
	refused(t, bob, inState, client.ErrMessageReplay)
	if _, _, err := bob.Decrypt(t.Context(), m2); err != nil {
		t.Fatalf("control after the restart: %v", err)
	}
}
