package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
)

// Errors of device and account management.
var (
	// ErrAlreadyInitialized: Init on a device that has keys.
	ErrAlreadyInitialized = errors.New("client: this device already has keys")
	// ErrAlreadyRegistered: Enroll of a handle that has devices.
	ErrAlreadyRegistered = errors.New("client: the handle is already registered")
	// ErrNotOwnDevice: the verified device set of an own handle does not
	// contain this device, so it cannot sign a change (or Join).
	ErrNotOwnDevice = errors.New("client: this device is not in the handle's device set")
	// ErrNoHandles: a change of the account before any Enroll or Join.
	ErrNoHandles = errors.New("client: this device has no handles")
	// ErrNoAccountKey: the device set carries an account key whose private
	// key this device does not hold, so it cannot sign the new set.
	ErrNoAccountKey = errors.New("client: the account key is not on this device")
	// ErrDeviceSet: the requested change makes no sense for the current
	// set (a device added twice, an unknown device removed, the last device
	// removed).
	ErrDeviceSet = errors.New("client: invalid device set change")
	// ErrNotVisible: a change the directory accepted is not what verified
	// lookups show at its version, or did not show within the caller's
	// deadline ([Client.AwaitVisible]).
	ErrNotVisible = errors.New("client: accepted change not visible")
)

// Submitted is a change the directory accepted: durable in the log, and
// visible to lookups from the next epoch on.
type Submitted struct {
	Handle   string
	Version  uint64
	LogIndex uint64
	// Record is the signed change record as sent.
	Record []byte
}

// AwaitVisible waits until verified lookups show every change of subs:
// the handle at the change's version with the change's record, or at a
// later version. It returns the lookup that showed each, in order. It
// polls, from every 100 ms up to every second, until ctx ends; then, or if
// the version shows another record, the error wraps [ErrNotVisible].
//
// A change is durable once accepted, but lookups serve it only from the
// next epoch (design.md 7), so a caller that acts on its own change next (a
// command line tool, say, whose user adds a device right after
// registering) waits for it here rather than reading the state before it.
func (c *Client) AwaitVisible(ctx context.Context, subs ...*Submitted) ([]*LookupResult, error) {
	out := make([]*LookupResult, 0, len(subs))
	for _, s := range subs {
		leaf := api.LeafHash(s.Record)
		for wait := 100 * time.Millisecond; ; wait = min(2*wait, time.Second) {
			res, err := c.Lookup(ctx, s.Handle)
			if err != nil {
				return out, err
			}
			if res.Version > s.Version || res.Version == s.Version && res.LeafHash == leaf {
				out = append(out, res)
				break
			}
			if res.Version == s.Version {
				return out, fmt.Errorf("%w: %s version %d is another record than the one logged at index %d", ErrNotVisible, s.Handle, s.Version, s.LogIndex)
			}
			select {
			case <-ctx.Done():
				return out, fmt.Errorf("%w: %s version %d (logged at index %d): lookups still show version %d: %w", ErrNotVisible, s.Handle, s.Version, s.LogIndex, res.Version, ctx.Err())
			case <-time.After(wait):
			}
		}
	}
	return out, nil
}

// Init generates this device's keys (suite zero means X25519) and stores
// them. It fails with [ErrAlreadyInitialized] if the device has keys.
func (c *Client) Init(ctx context.Context, suite api.HPKESuite) (*DeviceKeys, error) {
	k, err := GenerateDevice(suite, c.cfg.Now())
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err = c.update(ctx, func(s *State) error {
		if s.Device != nil {
			return ErrAlreadyInitialized
		}
		s.Device = k
		return nil
	})
	if err != nil {
		return nil, err
	}
	return k, nil
}

// Enroll registers handle with this device as its only device, using the
// account credential the operator issued (design.md 6, R4). It first
// verifies, by lookup, that the handle is unregistered (or a tombstone).
// The handle joins the device's account (the account ID of the primary
// handle, or a new random one), and is monitored from version 0. With
// accountKey, the set is signed by the account key (generated now if this
// device holds none), so that strict-mode senders can pin it.
//
// SPEC(design.md 6)
// SPEC(design.md 6.1 R4)
func (c *Client) Enroll(ctx context.Context, handle, credential string, accountKey bool) (*Submitted, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, res, err := c.deviceLookup(ctx, handle)
	if err != nil {
		return nil, err
	}
	if res.Registered && !res.DeviceSet.IsTombstone() {
		return nil, fmt.Errorf("%w: %s", ErrAlreadyRegistered, res.Handle)
	}
	set := &api.DeviceSet{Devices: []api.Device{st.Device.Device()}}
	if m := st.Handles[st.Primary]; m != nil && m.DeviceSet != nil {
		set.AccountID = m.DeviceSet.AccountID
	} else {
		rand.Read(set.AccountID[:])
	}
	acct := st.Account
	if accountKey && acct == nil {
		_, acct, _ = ed25519.GenerateKey(nil)
	}
	version := res.Version + 1
	if acct != nil {
		set.SignAccount(c.params().Origin, res.Index, version, acct)
	}
	hc, err := NewChange(c.params().Origin, res, set, api.AuthEnroll, st.Device.Signing)
	if err != nil {
		return nil, err
	}
	// The account key and the handle's monitoring position are stored
	// before the enrollment is sent.
	_, had := st.Handles[res.Handle]
	err = c.update(ctx, func(s *State) error {
		s.Account = acct
		if s.Handles == nil {
			s.Handles = map[string]*MonitorState{}
		}
		if _, ok := s.Handles[res.Handle]; !ok {
			s.Handles[res.Handle] = &MonitorState{Index: res.Index}
		}
		if s.Primary == "" {
			s.Primary = res.Handle
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	cr, err := c.dir.Enroll(ctx, &ktpb.EnrollRequest{Change: hc, Credential: credential})
	if err != nil {
		if !had && definitive(err) {
			c.update(ctx, func(s *State) error {
				if m := s.Handles[res.Handle]; m != nil && m.Version == 0 {
					delete(s.Handles, res.Handle)
					if s.Primary == res.Handle {
						s.Primary = ""
					}
				}
				return nil
			})
		}
		return nil, fmt.Errorf("client: enroll %s: %w", res.Handle, err)
	}
	return submitted(res, version, hc, cr, 0), nil
}

// deviceLookup loads the state of a device that has keys and looks handle
// up, verified (with retries): the start of Enroll and Join. The caller
// holds c.mu.
func (c *Client) deviceLookup(ctx context.Context, handle string) (*State, *LookupResult, error) {
	st, err := c.loadDevice(ctx)
	if err != nil {
		return nil, nil, err
	}
	res, err := withRotations(ctx, c, func() (*LookupResult, error) { return c.lookup(ctx, handle) })
	if err != nil {
		return nil, nil, err
	}
	return st, res, nil
}

// definitive reports whether a failed RPC certainly did not apply the
// change (the directory answered with a rejection).
func definitive(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated,
		codes.FailedPrecondition, codes.AlreadyExists, codes.ResourceExhausted, codes.OutOfRange:
		return true
	}
	return false
}

func submitted(res *LookupResult, version uint64, hc *ktpb.HandleChange, cr *ktpb.ChangeResponse, i int) *Submitted {
	s := &Submitted{Handle: res.Handle, Version: version, Record: hc.ChangeRecord}
	if idx := cr.GetLogIndices(); i < len(idx) {
		s.LogIndex = idx[i]
	}
	return s
}

// NewChange builds and signs the change of design.md 6 that replaces the
// verified state res (a [LookupResult] of the handle's latest state, an
// absence included) by set: version = latest + 1, prev = leaf hash of the
// latest record (zero if none), the given kind, the authorizers of set, a
// commitment with a fresh opening, signed by signer for origin. The set
// must already carry its account signature, if any, for version latest +
// 1. The result is ready for the Enroll, Change or (operator) Recover RPC.
//
// SPEC(design.md 6)
func NewChange(origin string, res *LookupResult, set *api.DeviceSet, kind api.AuthKind, signer ed25519.PrivateKey) (*ktpb.HandleChange, error) {
	version := res.Version + 1
	ds, err := set.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDeviceSet, err)
	}
	var opening [32]byte
	rand.Read(opening[:])
	rec := &api.ChangeRecord{
		Index:       res.Index,
		Version:     version,
		Commitment:  api.Commit(opening, res.Index, version, ds),
		Prev:        res.LeafHash,
		Kind:        kind,
		Authorizers: set.Authorizers(),
	}
	rec.Sign(origin, signer)
	b, err := rec.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDeviceSet, err)
	}
	return &ktpb.HandleChange{Handle: res.Handle, ChangeRecord: b, Opening: opening[:], DeviceSet: ds}, nil
}

// Join makes this device, after another of the owner's devices added it
// (with [Client.AddDevice] and this device's [DeviceKeys.Descriptor]),
// one of handle's devices here: it verifies by lookup that the set holds
// this device, and starts monitoring from that version, taking the keys of
// that set as the owner's.
//
// SPEC(design.md 13.1)
func (c *Client) Join(ctx context.Context, handle string) (*LookupResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, res, err := c.deviceLookup(ctx, handle)
	if err != nil {
		return nil, err
	}
	if !res.Registered || !slices.ContainsFunc(res.DeviceSet.Devices, func(d api.Device) bool {
		return d.ID == st.Device.ID && d.SigningKey == st.Device.SigningPublic() && bytes.Equal(d.HPKEKey, st.Device.Device().HPKEKey)
	}) {
		return nil, fmt.Errorf("%w: %s", ErrNotOwnDevice, res.Handle)
	}
	err = c.update(ctx, func(s *State) error {
		adoptHandles(s, []*LookupResult{res})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// AddDevice adds device d (from its [ParseDescriptor]d descriptor) to every
// handle of this device's account, in one atomic request signed by this
// device.
//
// SPEC(design.md 13.1)
func (c *Client) AddDevice(ctx context.Context, d api.Device) ([]*Submitted, error) {
	subs, err := c.changeAll(ctx, nil, nil, func(set *api.DeviceSet) error {
		if slices.ContainsFunc(set.Devices, func(x api.Device) bool { return x.ID == d.ID || x.SigningKey == d.SigningKey }) {
			return fmt.Errorf("%w: device %x is already in the set", ErrDeviceSet, d.ID)
		}
		set.Devices = append(set.Devices, d)
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.update(ctx, func(s *State) error {
		if !slices.Contains(s.OwnDevices, d.SigningKey) {
			s.OwnDevices = append(s.OwnDevices, d.SigningKey)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return subs, nil
}

// RemoveDevice removes the device with the given ID from every handle of
// this device's account. Removing the last device is refused; removing
// this device itself is allowed (it then can no longer change the set).
func (c *Client) RemoveDevice(ctx context.Context, id [16]byte) ([]*Submitted, error) {
	return c.changeAll(ctx, nil, nil, func(set *api.DeviceSet) error {
		i := slices.IndexFunc(set.Devices, func(x api.Device) bool { return x.ID == id })
		if i < 0 {
			return fmt.Errorf("%w: no device %x", ErrDeviceSet, id)
		}
		if len(set.Devices) == 1 {
			return fmt.Errorf("%w: refusing to remove the last device", ErrDeviceSet)
		}
		set.Devices = slices.Delete(set.Devices, i, i+1)
		return nil
	})
}

// Rekey replaces this device's signing and HPKE keys (same device ID and
// suite) in every handle of its account, signed by the old signing key.
// The new keys are stored before the change is sent and replace the old
// ones once the directory accepts it.
//
// SPEC(design.md 13.1)
func (c *Client) Rekey(ctx context.Context) ([]*Submitted, error) {
	st, err := c.loadDevice(ctx)
	if err != nil {
		return nil, err
	}
	nk, err := st.Device.rekeyed(c.cfg.Now())
	if err != nil {
		return nil, err
	}
	return c.changeAll(ctx, nk, nil, func(set *api.DeviceSet) error {
		i := slices.IndexFunc(set.Devices, func(x api.Device) bool { return x.ID == nk.ID })
		if i < 0 {
			return fmt.Errorf("%w: no device with this device's ID %x", ErrNotOwnDevice, nk.ID)
		}
		set.Devices[i] = nk.Device()
		return nil
	})
}

// SetAccountKey generates a new account key and sets it on every handle of
// this device's account (adding one, or rotating the current one), each
// set signed by the new key and each change by this device. The key is
// stored before the change is sent.
//
// SPEC(design.md 13.1)
func (c *Client) SetAccountKey(ctx context.Context) ([]*Submitted, error) {
	_, ak, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	return c.changeAll(ctx, nil, ak, func(*api.DeviceSet) error { return nil })
}

// changeAll changes the device set of every own handle with edit, after
// verifying each handle's latest state by lookup, and sends the changes in
// one request. newDevice (re-key) and newAccount (account key) are stored
// as pending before sending and promoted after acceptance.
func (c *Client) changeAll(ctx context.Context, newDevice *DeviceKeys, newAccount ed25519.PrivateKey, edit func(*api.DeviceSet) error) ([]*Submitted, error) {
	return c.changeWith(ctx, changeOpts{newDevice: newDevice, newAccount: newAccount}, edit)
}

// changeOpts are the variants of changeWith.
type changeOpts struct {
	// newDevice (re-key) and newAccount (account key) are stored as
	// pending before sending and promoted after acceptance.
	newDevice  *DeviceKeys
	newAccount ed25519.PrivateKey
	// byAccount signs each change with the account key this device holds
	// (kind 3, rule R5 role 2) instead of this device's key (kind 2).
	byAccount bool
	// handles, when set, are the handles to change instead of every own
	// handle; this device need not be in their sets (recovery on a new
	// device, with byAccount), and they become own handles, monitored from
	// the version before the change, once the directory accepts it.
	handles []string
}

// SPEC(design.md 6)
// SPEC(design.md 6.1 R5)
// SPEC(design.md 13.1)
// SPEC(design.md 13.2)
func (c *Client) changeWith(ctx context.Context, o changeOpts, edit func(*api.DeviceSet) error) ([]*Submitted, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := c.loadDevice(ctx)
	if err != nil {
		return nil, err
	}
	handles := st.sortedHandles()
	if o.handles != nil {
		handles = o.handles
	}
	if len(handles) == 0 {
		return nil, ErrNoHandles
	}
	self := st.Device.SigningPublic()
	var (
		hcs  []*ktpb.HandleChange
		ress []*LookupResult
	)
	for _, h := range handles {
		res, err := withRotations(ctx, c, func() (*LookupResult, error) { return c.lookup(ctx, h) })
		if err != nil {
			return nil, err
		}
		if !res.Registered {
			if m := st.Handles[res.Handle]; m != nil && m.Version == 0 {
				// This device enrolled the handle, and lookups do not
				// show it yet.
				return nil, fmt.Errorf("%w: %s is not registered yet: its registration was accepted, but lookups show it only from the next epoch (wait for it, as kt register does unless --no-wait)", ErrNotOwnDevice, res.Handle)
			}
			return nil, fmt.Errorf("%w: %s is not registered", ErrNotOwnDevice, res.Handle)
		}
		if o.handles == nil && !slices.ContainsFunc(res.DeviceSet.Devices, func(d api.Device) bool { return d.SigningKey == self }) {
			return nil, fmt.Errorf("%w: %s", ErrNotOwnDevice, res.Handle)
		}
		signer, kind := st.Device.Signing, api.AuthDevice
		if o.byAccount {
			// SPEC(design.md 6.1 R5): "(role, H(N.signer)) is among P's
			// authorizers, with ... role 2 for kind 3": the account key
			// of the latest set, which this device must hold.
			cur := res.DeviceSet.Account
			if cur == nil || st.Account == nil || [32]byte(st.Account.Public().(ed25519.PublicKey)) != cur.Key {
				return nil, fmt.Errorf("%w: %s: its account key is not the one on this device", ErrNoAccountKey, res.Handle)
			}
			signer, kind = st.Account, api.AuthAccount
		}
		set := cloneSet(res.DeviceSet)
		if err := edit(set); err != nil {
			return nil, err
		}
		slices.SortFunc(set.Devices, func(a, b api.Device) int { return bytes.Compare(a.ID[:], b.ID[:]) })
		acct := st.Account
		switch {
		case o.newAccount != nil:
			acct = o.newAccount
		case set.Account == nil:
			acct = nil
		case acct == nil || [32]byte(acct.Public().(ed25519.PublicKey)) != set.Account.Key:
			return nil, fmt.Errorf("%w: %s", ErrNoAccountKey, res.Handle)
		}
		set.Account = nil
		if acct != nil {
			// SPEC(design.md 6): "builds the new device set, signs it with
			// the account key if it has one".
			set.SignAccount(c.params().Origin, res.Index, res.Version+1, acct)
		}
		hc, err := NewChange(c.params().Origin, res, set, kind, signer)
		if err != nil {
			return nil, err
		}
		hcs, ress = append(hcs, hc), append(ress, res)
	}
	pending := o.newDevice != nil || o.newAccount != nil
	if pending {
		if err := c.update(ctx, func(s *State) error {
			s.PendingDevice, s.PendingAccount = o.newDevice, o.newAccount
			return nil
		}); err != nil {
			return nil, err
		}
	}
	cr, err := c.dir.Change(ctx, &ktpb.ChangeRequest{Changes: hcs})
	if err != nil {
		if pending && definitive(err) {
			c.update(ctx, func(s *State) error {
				s.PendingDevice, s.PendingAccount = nil, nil
				return nil
			})
		}
		return nil, fmt.Errorf("client: change: %w", err)
	}
	if pending {
		if err := c.update(ctx, promotePending); err != nil {
			return nil, err
		}
	}
	if o.handles != nil {
		if err := c.update(ctx, func(s *State) error { adoptHandles(s, ress); return nil }); err != nil {
			return nil, err
		}
	}
	out := make([]*Submitted, len(hcs))
	for i, hc := range hcs {
		out[i] = submitted(ress[i], ress[i].Version+1, hc, cr, i)
	}
	return out, nil
}

// promotePending makes the pending keys the current ones.
//
// SPEC(design.md 13.1)
func promotePending(s *State) error {
	if s.PendingDevice != nil {
		s.FormerKeys = append(s.FormerKeys, s.Device.SigningPublic())
		s.Device, s.PendingDevice = s.PendingDevice, nil
	}
	if s.PendingAccount != nil {
		s.Account, s.PendingAccount = s.PendingAccount, nil
	}
	return nil
}

func cloneSet(s *api.DeviceSet) *api.DeviceSet {
	c := &api.DeviceSet{AccountID: s.AccountID, Devices: slices.Clone(s.Devices)}
	if s.Account != nil {
		a := *s.Account
		c.Account = &a
	}
	return c
}
