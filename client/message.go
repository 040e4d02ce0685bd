package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/keytrans/kt/api"
)

// Errors of signed messages (design.md 12.3). [Client.Decrypt] wraps each
// of them together with [ErrEnvelope].
var (
	// ErrUnsignedEnvelope: a format-1 envelope, whose sender is not
	// authenticated. Client.Decrypt never accepts one; Envelope.Open
	// still opens it for an application that must read old ciphertexts.
	ErrUnsignedEnvelope = errors.New("client: unsigned envelope (format 1): the sender is not authenticated")
	// ErrUnknownSenderDevice: the sender device is not in the sender's
	// verified device set (or the handle has no devices), and this client
	// never verified a set of the handle that held it.
	ErrUnknownSenderDevice = errors.New("client: the sender device is not in the sender's verified device set")
	// ErrSenderDeviceRemoved: the sender device is not in the sender's
	// verified device set, and an earlier verified set of the handle held
	// it: the device was removed.
	ErrSenderDeviceRemoved = errors.New("client: the sender device was removed from the sender's device set")
	// ErrSenderNoMessageKey: the sender device has no message-signing key
	// in its logged set (a format-0x01 set, or a device not upgraded yet).
	ErrSenderNoMessageKey = errors.New("client: the sender device has no message-signing key in its logged device set")
	// ErrMessageSignature: the envelope's signature does not verify under
	// the sender device's logged message-signing key.
	ErrMessageSignature = errors.New("client: the message signature does not verify")
	// ErrMessageTime: the envelope's time is outside the message window,
	// or at or before the replay cache's low-water mark.
	ErrMessageTime = errors.New("client: the message time is outside the accepted window")
	// ErrMessageReplay: an envelope with this sender and message ID was
	// already accepted on this device.
	ErrMessageReplay = errors.New("client: the message was already received (replay)")
	// ErrCannotSign: Encrypt on a device that cannot send authenticated
	// messages: no handle to send from, no message-signing key, or a key
	// its logged device set does not hold yet.
	ErrCannotSign = errors.New("client: this device cannot sign messages")
)

const (
	// DefaultMessageWindow is how old an envelope may be (by its time)
	// when it is received.
	DefaultMessageWindow = 24 * time.Hour
	// messageFutureSkew is how far an envelope's time may be ahead of the
	// receiver's clock.
	messageFutureSkew = 5 * time.Minute
)

func (c *Client) messageWindow() time.Duration {
	if c.cfg.MessageWindow > 0 {
		return c.cfg.MessageWindow
	}
	return DefaultMessageWindow
}

// senderCache holds, per sender handle, the verified lookup the last
// message from it was checked against, and the device IDs seen in any
// verified set of the handle (to tell a removed device from an unknown
// one). Guarded by Client.mu; in memory only.
type senderCache struct {
	res     map[string]*LookupResult
	devices map[string]map[[16]byte]bool
}

// senderSet returns the verified device set of handle: a lookup verified
// as any other (design.md 12.2), reused while the client's trusted epoch
// is the one it was verified under and still fresh. The caller holds c.mu.
//
// SPEC(design.md 12.3 receiving step 2)
func (c *Client) senderSet(ctx context.Context, st *State, handle string) (*LookupResult, error) {
	canon, err := api.NormalizeHandle(handle)
	if err != nil || canon != handle {
		return nil, fmt.Errorf("%w: %w: sender handle %q is not canonical", ErrEnvelope, ErrUnknownSenderDevice, handle)
	}
	if c.senders.res == nil {
		c.senders = senderCache{res: map[string]*LookupResult{}, devices: map[string]map[[16]byte]bool{}}
	}
	if r := c.senders.res[canon]; r != nil && st.Trusted != nil && sameTrusted(r.Trusted, st.Trusted) {
		age := c.cfg.Now().Sub(time.UnixMilli(int64(min(r.Trusted.Epoch.Timestamp, math.MaxInt64))))
		if p := c.params(); age <= p.maxAge()+p.skew() {
			return r, nil
		}
	}
	res, err := withRotations(ctx, c, func() (*LookupResult, error) { return c.lookup(ctx, canon) })
	if err != nil {
		return nil, fmt.Errorf("client: verifying the sender %s: %w", canon, err)
	}
	c.senders.res[canon] = res
	if res.Registered {
		seen := c.senders.devices[canon]
		if seen == nil {
			seen = map[[16]byte]bool{}
			c.senders.devices[canon] = seen
		}
		for _, d := range res.DeviceSet.Devices {
			if len(seen) < 4*api.MaxDevices {
				seen[d.ID] = true
			}
		}
	}
	return res, nil
}

// checkSender runs steps 3 to 6 of design.md 12.3 (receiving) on a parsed
// format-2 envelope, given the sender's verified set.
//
// SPEC(design.md 12.3 receiving steps 3-6)
func (c *Client) checkSender(e *Envelope, res *LookupResult, seen *SeenMessages) error {
	var dev *api.Device
	if res.Registered {
		for i := range res.DeviceSet.Devices {
			if res.DeviceSet.Devices[i].ID == e.SenderDevice {
				dev = &res.DeviceSet.Devices[i]
			}
		}
	}
	if dev == nil {
		if c.senders.devices[e.From][e.SenderDevice] {
			return fmt.Errorf("%w: %w: device %x of %s (version %d)", ErrEnvelope, ErrSenderDeviceRemoved, e.SenderDevice, e.From, res.Version)
		}
		return fmt.Errorf("%w: %w: device %x of %s (version %d)", ErrEnvelope, ErrUnknownSenderDevice, e.SenderDevice, e.From, res.Version)
	}
	if !dev.HasMessageKey() {
		what := "its device set is format 0x01"
		if res.DeviceSet.Format == api.DeviceSetV2 {
			what = "the device has not upgraded yet"
		}
		return fmt.Errorf("%w: %w: device %x of %s: %s", ErrEnvelope, ErrSenderNoMessageKey, e.SenderDevice, e.From, what)
	}
	if err := e.VerifySignature(c.params().Origin, dev.MessageKey); err != nil {
		return err
	}
	now := c.cfg.Now()
	ts := time.UnixMilli(int64(min(e.Timestamp, math.MaxInt64)))
	switch {
	case e.Timestamp > math.MaxInt64 || ts.After(now.Add(messageFutureSkew)):
		return fmt.Errorf("%w: %w: sent at %v, ahead of this clock (%v) by more than %v", ErrEnvelope, ErrMessageTime, ts.UTC(), now.UTC(), messageFutureSkew)
	case ts.Before(now.Add(-c.messageWindow())):
		return fmt.Errorf("%w: %w: sent at %v, older than the window of %v", ErrEnvelope, ErrMessageTime, ts.UTC(), c.messageWindow())
	case e.Timestamp <= seen.mark():
		return fmt.Errorf("%w: %w: sent at %v, at or before the replay cache's low-water mark %v", ErrEnvelope, ErrMessageTime, ts.UTC(), time.UnixMilli(int64(seen.mark())).UTC())
	}
	return nil
}

// Decrypt opens a format-2 envelope on this device and authenticates its
// sender (design.md 12.3, receiving): the envelope must be for this device
// and one of its handles; the sender's device set is verified by lookup
// like any other; the sender device must be in it with a message-signing
// key that verifies the signature; the time must be within the message
// window; and the message ID must not have been accepted before. The
// message ID is stored in the replay cache before the plaintext is
// returned. On success the returned Envelope's From and SenderDevice are
// authenticated. On failure nothing is returned and nothing stored but
// the trusted state the sender's lookup verified; the error wraps
// [ErrEnvelope] and, for a refused sender, one of [ErrUnsignedEnvelope],
// [ErrUnknownSenderDevice], [ErrSenderDeviceRemoved],
// [ErrSenderNoMessageKey], [ErrMessageSignature], [ErrMessageTime] or
// [ErrMessageReplay]; a failed lookup of the sender is returned as such.
//
// SPEC(design.md 12.3)
func (c *Client) Decrypt(ctx context.Context, envelope []byte) ([]byte, *Envelope, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, raw, err := c.loadRaw(ctx)
	if err != nil {
		return nil, nil, err
	}
	if st.Device == nil {
		return nil, nil, ErrNoDevice
	}
	e, err := ParseEnvelope(envelope)
	if err != nil {
		return nil, nil, err
	}
	if e.version() != EnvelopeV2 {
		return nil, nil, fmt.Errorf("%w: %w (from %q)", ErrEnvelope, ErrUnsignedEnvelope, e.From)
	}
	if _, ok := st.Handles[e.Owner]; !ok {
		return nil, nil, fmt.Errorf("%w: addressed to %q, not one of this device's handles", ErrEnvelope, e.Owner)
	}
	if e.Device != st.Device.ID {
		return nil, nil, fmt.Errorf("%w: for device %x, this is device %x", ErrEnvelope, e.Device, st.Device.ID)
	}
	res, err := c.senderSet(ctx, st, e.From)
	if err != nil {
		return nil, nil, err
	}
	seen, err := c.loadSeen(ctx, st)
	if err != nil {
		return nil, nil, err
	}
	if err := c.checkSender(e, res, seen); err != nil {
		return nil, nil, err
	}
	key := seenKey(e)
	if seen.seen(key) {
		return nil, nil, errReplay(e)
	}
	pt, err := e.Open(st.Device)
	if err != nil && st.PendingDevice != nil {
		// A re-key in flight: the log may already name the new key.
		pt, err = e.Open(st.PendingDevice)
	}
	if err != nil {
		return nil, nil, err
	}
	// SPEC(design.md 12.3 receiving step 8): stored durably before the
	// plaintext is returned; checked again under the store's lock, for
	// another process sharing the store.
	oldest := uint64(max(c.cfg.Now().Add(-c.messageWindow()).UnixMilli(), 0))
	if c.cfg.Replay != nil {
		err = c.storeSeen(ctx, st.Seen, e, key, oldest)
	} else {
		// The sender's lookup may have stored a newer trusted epoch: then
		// the store no longer holds raw and updateFrom decodes what it holds.
		err = c.updateFrom(ctx, st, raw, func(s *State) (err error) {
			s.Seen, err = s.Seen.accept(e, key, oldest)
			return err
		})
	}
	if err != nil {
		return nil, nil, err
	}
	return pt, e, nil
}

// signingKey returns this device's message-signing key after checking
// that the sender's verified set (from) holds it for this device.
//
// SPEC(design.md 12.3)
func signingKey(st *State, from *LookupResult) (ed25519.PrivateKey, error) {
	if from == nil {
		return nil, fmt.Errorf("%w: this device has no handle to send from", ErrCannotSign)
	}
	if st.Device.Message == nil {
		return nil, fmt.Errorf("%w: this device has no message-signing key yet (Client.UpgradeMessageKey)", ErrCannotSign)
	}
	if from.Registered {
		for _, d := range from.DeviceSet.Devices {
			if d.ID == st.Device.ID && d.MessageKey == st.Device.MessagePublic() {
				return st.Device.Message, nil
			}
		}
	}
	return nil, fmt.Errorf("%w: %s's verified device set does not hold this device's message-signing key (yet: Client.UpgradeMessageKey, or wait for the change to show)", ErrCannotSign, from.Handle)
}

// newMessageID returns a random message ID.
func newMessageID() (id [16]byte) {
	rand.Read(id[:])
	return id
}

// ensureMessageKey gives this device a message-signing key if its keys
// predate them (design.md 5.3), stored before any change names it. The
// caller holds c.mu.
//
// SPEC(design.md 5.3)
func (c *Client) ensureMessageKey(ctx context.Context, st *State) (*State, error) {
	if st.Device.Message != nil {
		return st, nil
	}
	_, k, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	if err := c.update(ctx, func(s *State) error {
		if s.Device != nil && s.Device.Message == nil {
			d := *s.Device
			d.Message = k
			s.Device = &d
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return c.loadDevice(ctx)
}

// upgradeSet writes set in format 0x02 and gives this device's entry (by
// ID and current signing key) its message-signing key if it has none.
//
// SPEC(design.md 5.3)
func upgradeSet(set *api.DeviceSet, k *DeviceKeys) {
	set.Format = api.DeviceSetV2
	for i := range set.Devices {
		d := &set.Devices[i]
		if d.ID == k.ID && d.SigningKey == k.SigningPublic() && !d.HasMessageKey() {
			d.MessageKey = k.MessagePublic()
		}
	}
}

// UpgradeMessageKey makes this device able to send authenticated messages
// (design.md 5.3): it generates a message-signing key if the device has
// none (stored first), and sends a kind-2 change of every own handle that
// writes the set in format 0x02 with this device's message key. A device
// whose set already holds its key sends nothing and returns nil. Any
// other change of the set ([Client.AddDevice], [Client.RemoveDevice],
// [Client.Rekey], [Client.SetAccountKey]) upgrades the same way.
func (c *Client) UpgradeMessageKey(ctx context.Context) ([]*Submitted, error) {
	done, err := c.messageKeyLogged(ctx)
	if err != nil || done {
		return nil, err
	}
	return c.changeAll(ctx, nil, nil, func(*api.DeviceSet) error { return nil })
}

// messageKeyLogged reports whether every own handle's verified set holds
// this device's message key.
func (c *Client) messageKeyLogged(ctx context.Context) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := c.loadDevice(ctx)
	if err != nil || st.Device.Message == nil || len(st.Handles) == 0 {
		return false, err
	}
	for _, h := range st.sortedHandles() {
		res, err := withRotations(ctx, c, func() (*LookupResult, error) { return c.lookup(ctx, h) })
		if err != nil {
			return false, err
		}
		if !res.Registered || !setHolds(res.DeviceSet, st.Device) {
			return false, nil
		}
	}
	return true, nil
}

func setHolds(s *api.DeviceSet, k *DeviceKeys) bool {
	for _, d := range s.Devices {
		if d.ID == k.ID && d.MessageKey == k.MessagePublic() && d.HasMessageKey() {
			return true
		}
	}
	return false
}

// loadSeen returns the replay cache: from Config.Replay when set (seeded
// by the state's own cache while that store is empty), else the state's.
//
// SPEC(design.md 12.3)
func (c *Client) loadSeen(ctx context.Context, st *State) (*SeenMessages, error) {
	if c.cfg.Replay == nil {
		return st.Seen, nil
	}
	b, err := c.cfg.Replay.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("client: loading the replay cache: %w", err)
	}
	if b == nil {
		return st.Seen, nil
	}
	s := new(SeenMessages)
	if err := s.UnmarshalBinary(b); err != nil {
		return nil, err
	}
	return s, nil
}

// storeSeen adds e's key to the replay cache in Config.Replay, durably,
// refusing it if another process stored it meanwhile (design.md 12.3
// receiving step 8). seed is the state's cache, for an empty store.
//
// SPEC(design.md 12.3 receiving step 8)
func (c *Client) storeSeen(ctx context.Context, seed *SeenMessages, e *Envelope, key [32]byte, oldest uint64) error {
	return c.cfg.Replay.Update(ctx, func(old []byte) ([]byte, error) {
		cur := seed
		if old != nil {
			cur = new(SeenMessages)
			if err := cur.UnmarshalBinary(old); err != nil {
				return nil, err
			}
		}
		next, err := cur.accept(e, key, oldest)
		if err != nil {
			return nil, err
		}
		return next.MarshalBinary()
	})
}
