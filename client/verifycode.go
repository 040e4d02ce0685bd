package client

import (
	"context"
	"crypto/ed25519"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/keytrans/kt/api"
)

// Verification codes (design.md 13.5): two people compare a short code
// their clients derive from the same logged identities; a confirmed code
// pins the contact's identity (per-contact strict mode, see pins.go).

var (
	// ErrVerificationMismatch: the code the user typed is not the code
	// this client derives for the contact (design.md 13.5). Nothing is
	// pinned.
	ErrVerificationMismatch = errors.New("client: the verification code does not match")
	// ErrOwnIdentity: this device cannot stand for its own side of a
	// verification code: it has no primary handle, or the logged set of
	// its primary handle does not carry the account key this device holds
	// (or, without one, does not hold this device): the directory has
	// replaced the owner's own keys, which the owner's monitor reports.
	ErrOwnIdentity = errors.New("client: the own handle's logged identity is not this device's")
)

// Verification is a verification code with what it was derived from.
type Verification struct {
	// Code is the code: six groups of five digits (api.VerificationCode).
	Code string
	// Contact and Own are the two parties: the contact's canonical handle
	// and identity, and the owner's primary handle and identity.
	Contact, Own api.VerifyParty
	// ContactVersion and OwnVersion are the versions of the device sets
	// the identities were read from, and Epoch the epoch of the contact's
	// lookup.
	ContactVersion, OwnVersion uint64
	Epoch                      uint64
	// Pin is the contact's verification pin, if it has one.
	Pin *VerifiedPin
}

// VerificationCode returns the verification code of handle and this
// device's primary handle (design.md 13.5), from verified lookups of both
// (12.2). The contact must be registered with devices; a contact already
// verified whose identity changed fails like any lookup of it
// ([ErrVerifiedContactChanged]: [Client.Unverify] first to verify again).
// The own side must be this device's ([ErrOwnIdentity]).
//
// SPEC(design.md 13.5)
func (c *Client) VerificationCode(ctx context.Context, handle string) (*Verification, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.verification(ctx, handle)
}

// ConfirmVerification derives the verification code of handle again (as
// [Client.VerificationCode]) and compares it, in constant time, with code
// as the user typed it (spaces and hyphens ignored). On a match the
// contact's identity is pinned in the client's state: from then on every
// lookup of handle requires that identity ([ErrVerifiedContactChanged]).
// A code that does not parse wraps api.ErrVerificationCode; one that does
// not match is [ErrVerificationMismatch]; nothing is stored then.
//
// SPEC(design.md 13.5): "compares it with the user's code (a mismatch is
// ErrVerificationMismatch, nothing stored) and stores the contact's
// identity as its verification pin".
func (c *Client) ConfirmVerification(ctx context.Context, handle, code string) (*Verification, error) {
	want, err := api.ParseVerificationCode(code)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	v, err := c.verification(ctx, handle)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(v.Code), []byte(want)) != 1 {
		return nil, fmt.Errorf("%w: %s: the code typed is not the code this device derives (either side may see other keys, or the code was misread); nothing was pinned", ErrVerificationMismatch, v.Contact.Handle)
	}
	pin := &VerifiedPin{Identity: v.Contact.Identity, Own: v.Own.Handle, Time: c.cfg.Now().UTC().Truncate(time.Second)}
	err = c.update(ctx, func(s *State) error {
		if old := s.Verified[v.Contact.Handle]; old != nil && old.Identity != pin.Identity {
			// Another process pinned another identity meanwhile.
			return &VerifiedContactChangedError{Handle: v.Contact.Handle, Pinned: old.Identity, Current: pin.Identity, VerifiedAt: old.Time}
		}
		s.Verified = cloneMap(s.Verified)
		s.Verified[v.Contact.Handle] = pin
		return nil
	})
	if err != nil {
		return nil, err
	}
	v.Pin = pin
	return v, nil
}

// Unverify removes handle's verification pin (design.md 13.5), so that a
// changed identity can be verified again. It reports whether there was
// one.
func (c *Client) Unverify(ctx context.Context, handle string) (bool, error) {
	canon, err := api.NormalizeHandle(handle)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	had := false
	err = c.update(ctx, func(s *State) error {
		_, had = s.Verified[canon]
		if had {
			s.Verified = cloneMap(s.Verified)
			delete(s.Verified, canon)
		}
		return nil
	})
	return had, err
}

// Verified returns the verification pins by canonical contact handle.
func (c *Client) Verified(ctx context.Context) (map[string]*VerifiedPin, error) {
	st, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	return st.Verified, nil
}

// verification is VerificationCode under c.mu.
//
// SPEC(design.md 13.5)
func (c *Client) verification(ctx context.Context, handle string) (*Verification, error) {
	canon, err := api.NormalizeHandle(handle)
	if err != nil {
		return nil, &VerifyError{Step: StepHandle, Err: err}
	}
	st, err := c.loadDevice(ctx)
	if err != nil {
		return nil, err
	}
	if st.Primary == "" {
		return nil, fmt.Errorf("%w: this device has no handle yet (register or join one first)", ErrOwnIdentity)
	}
	if _, own := st.Handles[canon]; own {
		return nil, fmt.Errorf("%w: %s is one of this device's own handles", api.ErrVerificationCode, canon)
	}
	res, err := withRotations(ctx, c, func() (*LookupResult, error) { return c.lookupAs(ctx, canon, false) })
	if err != nil {
		return nil, err
	}
	if !res.Registered || res.DeviceSet.IsTombstone() {
		return nil, fmt.Errorf("%w: %s: nothing to verify", ErrNoDevices, canon)
	}
	idC, err := api.IdentityOf(c.params().Origin, res.Index, res.Version, res.DeviceSet)
	if err != nil {
		return nil, fail(StepStrict, ErrStrict, err, "%s carries an account key whose signature does not verify", canon)
	}
	own, err := withRotations(ctx, c, func() (*LookupResult, error) { return c.lookup(ctx, st.Primary) })
	if err != nil {
		return nil, fmt.Errorf("client: verifying the own handle %s: %w", st.Primary, err)
	}
	// The keys may have moved on during the lookups (a re-key, a new
	// account key being promoted): read them again.
	if st, err = c.loadDevice(ctx); err != nil {
		return nil, err
	}
	idOwn, err := ownIdentity(c.params().Origin, st, own)
	if err != nil {
		return nil, err
	}
	v := &Verification{
		Contact: api.VerifyParty{Handle: canon, Identity: idC}, Own: api.VerifyParty{Handle: own.Handle, Identity: idOwn},
		ContactVersion: res.Version, OwnVersion: own.Version, Epoch: res.Epoch.Record.Epoch, Pin: st.Verified[canon],
	}
	if v.Code, err = api.VerificationCode(c.params().Origin, v.Contact, v.Own); err != nil {
		return nil, err
	}
	return v, nil
}

// ownIdentity is the identity of the verified own set own, which must be
// the owner's as this device knows it: an account-key identity must be a
// key this device holds (current or pending) or has learnt to be the
// owner's (MonitorState.Known: at enrollment or joining, and along
// monitored chains from sets the owner wrote); a device-set identity must
// hold this device, every device in it must be this device, one it added,
// or one learnt to be the owner's, and a device that holds an account key
// refuses it (the set dropped the key).
//
// SPEC(design.md 13.5): "The owner's own side must be this device's".
func ownIdentity(origin string, st *State, own *LookupResult) (api.Identity, error) {
	h := own.Handle
	if !own.Registered || own.DeviceSet.IsTombstone() {
		return api.Identity{}, fmt.Errorf("%w: %s has no devices in the log", ErrOwnIdentity, h)
	}
	id, err := api.IdentityOf(origin, own.Index, own.Version, own.DeviceSet)
	if err != nil {
		return api.Identity{}, fmt.Errorf("%w: %s: %w", ErrOwnIdentity, h, err)
	}
	var held [][32]byte
	for _, k := range []ed25519.PrivateKey{st.Account, st.PendingAccount} {
		if k != nil {
			held = append(held, [32]byte(k.Public().(ed25519.PublicKey)))
		}
	}
	var learnt [][32]byte
	if ms := st.Handles[h]; ms != nil {
		learnt = ms.Known
	}
	var this [][32]byte
	for _, k := range []*DeviceKeys{st.Device, st.PendingDevice} {
		if k != nil {
			this = append(this, k.SigningPublic())
		}
	}
	known := func(k [32]byte) bool {
		return slices.Contains(held, k) || slices.Contains(learnt, k) || slices.Contains(this, k) || slices.Contains(st.OwnDevices, k)
	}
	if id.Kind() == api.IdentityAccountKey {
		if k := [32]byte(id[1:]); !known(k) {
			return api.Identity{}, fmt.Errorf("%w: %s is logged with %s, which is not an account key this device holds or has seen you set (run kt monitor)", ErrOwnIdentity, h, id)
		}
		return id, nil
	}
	if len(held) > 0 {
		return api.Identity{}, fmt.Errorf("%w: %s is logged without the account key %x… this device holds", ErrOwnIdentity, h, held[0][:8])
	}
	if !slices.ContainsFunc(own.DeviceSet.Devices, func(d api.Device) bool { return slices.Contains(this, d.SigningKey) }) {
		return api.Identity{}, fmt.Errorf("%w: the logged set of %s does not hold this device", ErrOwnIdentity, h)
	}
	for _, d := range own.DeviceSet.Devices {
		if !known(d.SigningKey) {
			return api.Identity{}, fmt.Errorf("%w: the logged set of %s holds device %x, which this device has not seen you add (run kt monitor)", ErrOwnIdentity, h, d.ID)
		}
	}
	return id, nil
}
