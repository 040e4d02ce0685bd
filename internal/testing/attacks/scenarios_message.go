package attacks

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/keytrans/kt/client"
)

// ByRecipient is the recipient's client ([client.Client.Decrypt]).
const ByRecipient = "recipient client"

const mallory = "mallory@example.com"

// messageWorld is Alice (devices a1, a2), Bob and Mallory, all enrolled on
// an honest deployment; the adversary is whoever delivers messages (the
// messaging server, the network) or a registered user, not the directory.
type messageWorld struct {
	d                    *Deployment
	a1, a2, bob, mallory *Device
}

func newMessageWorld(ctx context.Context, w *World, linkA2 bool) (*messageWorld, error) {
	d, err := w.Deploy(ctx, Options{})
	if err != nil {
		return nil, err
	}
	m := &messageWorld{d: d}
	for _, p := range []**Device{&m.a1, &m.a2, &m.bob, &m.mallory} {
		if *p, err = d.NewDevice(ctx, nil, client.Config{}); err != nil {
			return nil, err
		}
	}
	if err := d.Enroll(ctx, m.a1, alice, false); err != nil {
		return nil, err
	}
	if linkA2 {
		if err := d.Link(ctx, m.a1, m.a2, alice); err != nil {
			return nil, err
		}
	}
	if err := d.Enroll(ctx, m.bob, bob, false); err != nil {
		return nil, err
	}
	if err := d.Enroll(ctx, m.mallory, mallory, false); err != nil {
		return nil, err
	}
	return m, nil
}

// keys returns the device keys of c.
func keys(ctx context.Context, c *Device) (*client.DeviceKeys, error) {
	st, err := c.State(ctx)
	if err != nil {
		return nil, err
	}
	if st.Device == nil || st.Device.Message == nil {
		return nil, errors.New("a device without a message key")
	}
	return st.Device, nil
}

// toBob returns the envelope for Bob's device among envs, encoded.
func toBob(envs []*client.Envelope) ([]byte, *client.Envelope, error) {
	for _, e := range envs {
		if e.Owner == "mailto:"+bob {
			b, err := e.MarshalBinary()
			return b, e, err
		}
	}
	return nil, nil, errors.New("no envelope for Bob")
}

// refusedBy records the recipient's refusal of b with want, and fails
// unless Decrypt refused with it and returned nothing.
func refusedBy(ctx context.Context, r *Result, c *Device, what string, b []byte, want error) error {
	t0 := time.Now()
	pt, e, err := c.Decrypt(ctx, b)
	if err := expect(what, err, want); err != nil {
		return err
	}
	if pt != nil || e != nil {
		return fmt.Errorf("%s: plaintext returned with the error", what)
	}
	r.detect(Detection{By: ByRecipient, After: time.Since(t0), Polls: 1, Err: err,
		Evidence: fmt.Sprintf("%s: Decrypt refused, no plaintext (%v)", what, want)})
	return nil
}

// control sends a message from Alice's device c to Bob and checks that
// Bob authenticates it.
func (m *messageWorld) control(ctx context.Context, c *Device, text string) ([]byte, *client.Envelope, error) {
	envs, err := c.Encrypt(ctx, bob, []byte(text))
	if err != nil {
		return nil, nil, fmt.Errorf("control: Encrypt: %w", err)
	}
	b, env, err := toBob(envs)
	if err != nil {
		return nil, nil, err
	}
	pt, got, err := m.bob.Decrypt(ctx, b)
	if err != nil || string(pt) != text || got.From != "mailto:"+alice || got.SenderDevice != env.SenderDevice {
		return nil, nil, fmt.Errorf("control: Bob's Decrypt: %q, %v", pt, err)
	}
	return b, env, nil
}

// A13: a forged sender. Mallory, a registered user with her own client
// and keys, and whoever relays messages, make Bob's client believe a
// message comes from Alice.
func runA13(ctx context.Context, w *World, r *Result) error {
	m, err := newMessageWorld(ctx, w, false)
	if err != nil {
		return err
	}
	_, aEnv, err := m.control(ctx, m.a1, "hello Bob")
	if err != nil {
		return err
	}
	r.Control = fmt.Sprintf("Alice sends Bob a message; Bob's client verifies her device set by lookup and shows it as from mailto:%s, device %x", alice, aEnv.SenderDevice)

	mk, err := keys(ctx, m.mallory)
	if err != nil {
		return err
	}
	envs, err := m.mallory.Encrypt(ctx, bob, []byte("send the money to Mallory"))
	if err != nil {
		return err
	}
	_, mEnv, err := toBob(envs)
	if err != nil {
		return err
	}
	forge := func(edit func(e *client.Envelope), sign ed25519.PrivateKey) []byte {
		e := *mEnv
		e.Enc, e.Ciphertext = bytes.Clone(mEnv.Enc), bytes.Clone(mEnv.Ciphertext)
		edit(&e)
		if sign != nil {
			e.Sign(Origin, sign)
		}
		b, err := e.MarshalBinary()
		if err != nil {
			panic(err)
		}
		return b
	}
	for _, c := range []struct {
		what string
		b    []byte
		want error
	}{
		{"Mallory's message re-labelled from Alice, re-signed by Mallory's device", forge(func(e *client.Envelope) { e.From = "mailto:" + alice }, mk.Message), client.ErrUnknownSenderDevice},
		{"Mallory's message claiming Alice's device, re-signed by Mallory's device", forge(func(e *client.Envelope) {
			e.From, e.SenderDevice = "mailto:"+alice, aEnv.SenderDevice
		}, mk.Message), client.ErrMessageSignature},
		{"Mallory's message with Alice's handle and device and Alice's signature bytes", forge(func(e *client.Envelope) {
			e.From, e.SenderDevice, e.Signature = "mailto:"+alice, aEnv.SenderDevice, aEnv.Signature
		}, nil), client.ErrMessageSignature},
		{"an unsigned (format 1) envelope claiming Alice", forge(func(e *client.Envelope) {
			e.Version, e.From = client.EnvelopeV1, "mailto:"+alice
		}, nil), client.ErrUnsignedEnvelope},
	} {
		if err := refusedBy(ctx, r, m.bob, c.what, c.b, c.want); err != nil {
			return err
		}
	}
	return nil
}

// A13R: a removed device sends. Alice's second device is stolen; she
// removes it; the thief, holding its keys, signs a new, well-formed
// message as Alice's device.
func runA13Removed(ctx context.Context, w *World, r *Result) error {
	m, err := newMessageWorld(ctx, w, true)
	if err != nil {
		return err
	}
	if _, _, err := m.control(ctx, m.a2, "from Alice's tablet"); err != nil {
		return err
	}
	k2, err := keys(ctx, m.a2)
	if err != nil {
		return err
	}
	// The thief's tool: a complete envelope to Bob's verified device,
	// signed by the tablet's message key.
	craft := func(text string) ([]byte, error) {
		res, err := m.mallory.Lookup(ctx, bob)
		if err != nil {
			return nil, err
		}
		rc := &res.Recipients[0]
		e := &client.Envelope{Version: client.EnvelopeV2, Suite: rc.Device.Suite, Device: rc.Device.ID,
			From: "mailto:" + alice, To: "mailto:" + bob, Owner: "mailto:" + bob,
			SenderDevice: k2.ID, Timestamp: uint64(time.Now().UnixMilli())}
		rand.Read(e.MessageID[:])
		if err := e.Seal(rc, []byte(text)); err != nil {
			return nil, err
		}
		e.Sign(Origin, k2.Message)
		return e.MarshalBinary()
	}
	b, err := craft("crafted while the tablet was Alice's")
	if err != nil {
		return err
	}
	if pt, _, err := m.bob.Decrypt(ctx, b); err != nil || string(pt) != "crafted while the tablet was Alice's" {
		return fmt.Errorf("control: the crafted envelope: %q, %v", pt, err)
	}
	r.Control = fmt.Sprintf("Alice's tablet (device %x) sends Bob a message, and so does the thief's tool with its keys while it is Alice's: Bob authenticates both", k2.ID)

	subs, err := m.a1.RemoveDevice(ctx, k2.ID)
	if err != nil {
		return err
	}
	if _, err := AwaitVersion(ctx, m.bob, alice, subs[0].Version); err != nil {
		return err
	}
	if _, err := m.a2.Encrypt(ctx, bob, []byte("hi")); !errors.Is(err, client.ErrCannotSign) {
		return fmt.Errorf("the removed tablet's own client: %v, want ErrCannotSign", err)
	}
	if b, err = craft("send the money to the thief"); err != nil {
		return err
	}
	if err := refusedBy(ctx, r, m.bob, "a new message signed by the removed tablet's key (Bob verified it as Alice's before)", b, client.ErrSenderDeviceRemoved); err != nil {
		return err
	}
	bob2, err := m.d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	if err := m.d.Link(ctx, m.bob, bob2, bob); err != nil {
		return err
	}
	res, err := bob2.Lookup(ctx, bob)
	if err != nil {
		return err
	}
	k, err := keys(ctx, bob2)
	if err != nil {
		return err
	}
	var rc *client.Recipient
	for i := range res.Recipients {
		if res.Recipients[i].Device.ID == k.ID {
			rc = &res.Recipients[i]
		}
	}
	if rc == nil {
		return errors.New("Bob's new device is not in his set")
	}
	e := &client.Envelope{Version: client.EnvelopeV2, Suite: rc.Device.Suite, Device: rc.Device.ID,
		From: "mailto:" + alice, To: "mailto:" + bob, Owner: "mailto:" + bob,
		SenderDevice: k2.ID, Timestamp: uint64(time.Now().UnixMilli())}
	rand.Read(e.MessageID[:])
	if err := e.Seal(rc, []byte("x")); err != nil {
		return err
	}
	e.Sign(Origin, k2.Message)
	if b, err = e.MarshalBinary(); err != nil {
		return err
	}
	return refusedBy(ctx, r, bob2, "the same to Bob's new device, which never saw the tablet", b, client.ErrUnknownSenderDevice)
}

// A13P: a replayed message. Whoever relays messages delivers Alice's
// genuine envelope to Bob again, and holds one back past the window.
func runA13Replay(ctx context.Context, w *World, r *Result) error {
	m, err := newMessageWorld(ctx, w, false)
	if err != nil {
		return err
	}
	b, env, err := m.control(ctx, m.a1, "meet at noon")
	if err != nil {
		return err
	}
	r.Control = fmt.Sprintf("Alice's message %x is delivered once and Bob authenticates it", env.MessageID)
	if err := refusedBy(ctx, r, m.bob, "the same envelope delivered again", b, client.ErrMessageReplay); err != nil {
		return err
	}
	// A device with a short window (as an application may configure):
	// an envelope held back beyond it is refused.
	const window = 2 * time.Second
	bob2, err := m.d.NewDevice(ctx, nil, client.Config{MessageWindow: window})
	if err != nil {
		return err
	}
	if err := m.d.Link(ctx, m.bob, bob2, bob); err != nil {
		return err
	}
	if _, err := AwaitVersion(ctx, m.a1, bob, 2); err != nil {
		return err
	}
	envs, err := m.a1.Encrypt(ctx, bob, []byte("held back"))
	if err != nil {
		return err
	}
	k, err := keys(ctx, bob2)
	if err != nil {
		return err
	}
	var held []byte
	for _, e := range envs {
		if e.Device == k.ID {
			held, _ = e.MarshalBinary()
		}
	}
	if held == nil {
		return errors.New("no envelope for Bob's second device")
	}
	select {
	case <-time.After(window + 500*time.Millisecond):
	case <-ctx.Done():
		return ctx.Err()
	}
	r.note("held-back envelope delivered %v after it was sent, to a device configured with a %v window", window+500*time.Millisecond, window)
	return refusedBy(ctx, r, bob2, "an envelope held back beyond the recipient's window", held, client.ErrMessageTime)
}
