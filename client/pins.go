package client

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
)

// Verification pins (design.md 13.5): per-contact strict mode, set by a
// confirmed verification code, kept in the client's state apart from the
// first-use pins of the global strict mode (State.Pins).

// ErrVerifiedContactChanged: a contact whose verification code was
// confirmed is now logged with another identity (another account key, a
// set without a valid signature by the pinned one, another device set, or
// none). Errors wrapping it are [*VerifiedContactChangedError] values
// naming the contact. Nothing is encrypted to the contact until the user
// verifies again ([Client.Unverify], then a new code).
var ErrVerifiedContactChanged = errors.New("client: a verified contact's identity changed")

// StepVerifiedContact is the [VerifyError.Step] of a verification pin
// check (design.md 13.5).
const StepVerifiedContact = "verified contact"

// VerifiedPin is what a confirmed verification code pins for a contact
// (design.md 13.5).
type VerifiedPin struct {
	// Identity is the contact's identity as verified: its account key, or
	// the digest of its whole device set.
	Identity api.Identity
	// Own is the owner's handle the code was compared from.
	Own string
	// Time is when the code was confirmed (whole seconds, UTC).
	Time time.Time
}

// VerifiedContactChangedError reports that a verified contact's logged
// identity is not the pinned one (design.md 13.5). It wraps
// [ErrVerifiedContactChanged] and, when the check that failed was strict
// mode's account signature (12.2 step 7), that error too.
type VerifiedContactChangedError struct {
	// Handle is the contact's canonical handle.
	Handle string
	// Pinned is the identity verified at VerifiedAt; Current the one the
	// directory now shows (zero when it shows none: no valid account
	// signature, not registered, or a tombstone).
	Pinned, Current api.Identity
	VerifiedAt      time.Time
	// Cause is the verification failure, if the lookup itself failed.
	Cause error
}

func (e *VerifiedContactChangedError) Error() string {
	cur := "no identity (not registered, no devices, or no valid account signature)"
	if e.Current.Kind() != 0 {
		cur = e.Current.String()
	}
	s := fmt.Sprintf("%v: %s was verified with %s on %s; the directory now shows %s; do not trust it until you compare a new code (kt verify)",
		ErrVerifiedContactChanged, e.Handle, e.Pinned, e.VerifiedAt.UTC().Format(time.DateOnly), cur)
	if e.Cause != nil {
		s += fmt.Sprintf(" (%v)", e.Cause)
	}
	return s
}

// Unwrap returns [ErrVerifiedContactChanged] and Cause.
func (e *VerifiedContactChangedError) Unwrap() []error {
	if e.Cause == nil {
		return []error{ErrVerifiedContactChanged}
	}
	return []error{ErrVerifiedContactChanged, e.Cause}
}

// verifiedAccountKey returns the account key a verification pin requires
// (12.2 step 7 for this contact), if the pinned identity is one.
func verifiedAccountKey(v *VerifiedPin) (key [32]byte, ok bool) {
	if v == nil || v.Identity.Kind() != api.IdentityAccountKey {
		return key, false
	}
	return [32]byte(v.Identity[1:]), true
}

// verifiedChanged is the alert for a verified contact whose lookup failed
// with cause in strict mode; the identity now logged is read from an
// answer verified without the pin, when there is one.
//
// SPEC(design.md 13.5): "A failure is a VerifiedContactChangedError
// (ErrVerifiedContactChanged) naming the contact, the pinned identity and
// the one now logged".
func (c *Client) verifiedChanged(v *VerifiedPin, t *Trusted, canon string, resp *ktpb.LookupResponse, now time.Time, cause error) error {
	alert := &VerifiedContactChangedError{Handle: canon, Pinned: v.Identity, VerifiedAt: v.Time, Cause: cause}
	if res, err := VerifyLookup(c.params(), t, canon, resp, now, nil); err == nil && res.Registered {
		alert.Current, _ = api.IdentityOf(c.params().Origin, res.Index, res.Version, res.DeviceSet)
	}
	return &VerifyError{Step: StepVerifiedContact, Err: alert}
}

// checkVerified checks the verified lookup res of a contact against its
// verification pin v.
//
// SPEC(design.md 13.5): "for a device-set identity, the identity of the
// verified set MUST equal the pinned one".
func (c *Client) checkVerified(v *VerifiedPin, res *LookupResult) error {
	var cur api.Identity
	if res.Registered {
		cur, _ = api.IdentityOf(c.params().Origin, res.Index, res.Version, res.DeviceSet)
	}
	if cur == v.Identity {
		return nil
	}
	return &VerifyError{Step: StepVerifiedContact, Err: &VerifiedContactChangedError{Handle: res.Handle, Pinned: v.Identity, Current: cur, VerifiedAt: v.Time}}
}

// checkedContacts returns, in order, the handles contact monitoring checks:
// the remembered contacts and the verified ones.
func (s *State) checkedContacts() []string {
	hs := slices.Collect(maps.Keys(s.Contacts))
	for h := range s.Verified {
		if s.Contacts[h] == nil {
			hs = append(hs, h)
		}
	}
	slices.Sort(hs)
	return hs
}

// verifiedJSON is the persisted encoding of a [VerifiedPin].
type verifiedJSON struct {
	Identity []byte    `json:"identity"`
	Own      string    `json:"own,omitempty"`
	Time     time.Time `json:"time"`
}

// marshalVerified encodes the verification pins for [State.MarshalBinary].
func marshalVerified(m map[string]*VerifiedPin) map[string]verifiedJSON {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]verifiedJSON, len(m))
	for h, v := range m {
		out[h] = verifiedJSON{Identity: v.Identity[:], Own: v.Own, Time: v.Time}
	}
	return out
}

// unmarshalVerified decodes the verification pins, strictly: canonical
// handles, a 33-byte identity of a known kind.
//
// SPEC(design.md 16)
func unmarshalVerified(m map[string]verifiedJSON) (map[string]*VerifiedPin, error) {
	if len(m) == 0 {
		return nil, nil
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: verified contacts: %s", ErrState, fmt.Sprintf(format, args...))
	}
	out := make(map[string]*VerifiedPin, len(m))
	for h, j := range m {
		if c, err := api.NormalizeHandle(h); err != nil || c != h {
			return nil, bad("contact %q is not canonical", h)
		}
		if j.Own != "" {
			if c, err := api.NormalizeHandle(j.Own); err != nil || c != j.Own || c == h {
				return nil, bad("own handle %q of %s is not canonical or is the contact", j.Own, h)
			}
		}
		if len(j.Identity) != len(api.Identity{}) {
			return nil, bad("identity of %s has %d bytes", h, len(j.Identity))
		}
		id := api.Identity(j.Identity)
		if k := id.Kind(); k != api.IdentityAccountKey && k != api.IdentityDeviceSet {
			return nil, bad("identity of %s has unknown kind %d", h, k)
		}
		out[h] = &VerifiedPin{Identity: id, Own: j.Own, Time: j.Time}
	}
	return out, nil
}
