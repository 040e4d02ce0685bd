package client

import (
	"crypto/ed25519"
	"crypto/hpke"
	"errors"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/smt"
)

// Recipient is one device of a verified device set with its HPKE public key
// deserialized: everything a sender needs to encrypt to it.
type Recipient struct {
	Device    api.Device
	PublicKey hpke.PublicKey
	KDF       hpke.KDF
	AEAD      hpke.AEAD
}

// LookupResult is a verified lookup answer.
type LookupResult struct {
	// Handle is the canonical handle the answer is for.
	Handle string
	// Index is the handle's VRF index under the current VRF key.
	Index [32]byte
	// RecordIndex is the index the record (or the absence) was proved at:
	// Index, or, after a VRF key rotation (design.md 11.2), the handle's
	// index under an earlier key when its latest record was moved and not
	// changed since, or when the handle is not moved yet (NotMoved).
	RecordIndex [32]byte
	// NotMoved is set when the map proved Index absent and the answer
	// came from the fallback under the previous VRF key: the handle's
	// history is not moved yet.
	NotMoved bool
	// Registered is false when the map proves the handle absent: it has
	// never been registered and reaches nobody.
	Registered bool
	// The fields below are set only for a registered handle.

	// Record is the handle's latest change record and LeafHash its leaf
	// hash.
	Record   *api.ChangeRecord
	LeafHash [32]byte
	// Version and Kind are the record's version and authorization kind. A
	// sender MAY warn when the latest change was a recovery
	// (api.AuthRecovery).
	Version uint64
	Kind    api.AuthKind
	// DeviceSet is the committed device set; a tombstone has no devices.
	DeviceSet *api.DeviceSet
	// Recipients holds every device of DeviceSet, in order, with its HPKE
	// key ready for use. Encrypt to all of them or to none.
	Recipients []Recipient

	// Epoch is the epoch the answer was verified against.
	Epoch *Epoch
	// Trusted is the state to store in place of the caller's (design.md
	// 12.2 step 9). It is a new value; the caller's is never modified.
	Trusted *Trusted
}

// VerifyLookup verifies a lookup answer for handle (design.md 12.2, steps 1
// to 9) before anything is encrypted to it. t is the client's trusted state
// (nil for none). pinned is the contact's account key when strict mode is on
// for this contact, else nil. The answer's epoch part may be omitted when
// the client already holds that epoch; freshness is still checked against
// now.
//
// On success the result holds the verified device set (none for an absent
// handle) and the new trusted state; on failure the error is a
// [*VerifyError] wrapping one of the package's sentinel errors, and the
// caller must not use any key from the answer.
//
// SPEC(design.md 12.2)
func VerifyLookup(p *Params, t *Trusted, handle string, resp *ktpb.LookupResponse, now time.Time, pinned ed25519.PublicKey) (*LookupResult, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if resp == nil {
		return nil, fail(StepParse, ErrMalformed, nil, "no response")
	}
	// Parse the handle's own parts before spending time on the epoch.
	pl, err := parseLookup(handle, resp, pinned)
	if err != nil {
		return nil, err
	}
	e, err := VerifyEpoch(p, t, resp.GetEpoch(), now)
	if err != nil {
		return nil, err
	}
	return verifyLookupIn(p, e, pl)
}

// VerifyLookupInEpoch verifies steps 1 and 3 to 8 of a lookup answer against
// an epoch the caller has already verified with [VerifyEpoch] (for example
// the shared epoch of a batch lookup). resp's own epoch part, if any, is
// ignored. The result's Trusted field is e.Trusted().
func VerifyLookupInEpoch(p *Params, e *Epoch, handle string, resp *ktpb.LookupResponse, pinned ed25519.PublicKey) (*LookupResult, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if e == nil {
		return nil, fail(StepParams, ErrInvalidParams, nil, "no verified epoch")
	}
	if resp == nil {
		return nil, fail(StepParse, ErrMalformed, nil, "no response")
	}
	pl, err := parseLookup(handle, resp, pinned)
	if err != nil {
		return nil, err
	}
	return verifyLookupIn(p, e, pl)
}

// parsedLookup holds the parsed, not yet verified, parts of an answer.
type parsedLookup struct {
	handle   string
	vrfProof []byte
	mapProof *smt.Proof
	// Present only for a registered handle.
	recordBytes []byte
	record      *api.ChangeRecord
	opening     [32]byte
	setBytes    []byte
	pinned      ed25519.PublicKey
	// After a VRF key rotation (design.md 11.2): the proof of a moved
	// record's index, and the fallback of a handle not moved yet.
	recordVRFProof []byte
	prevVRFProof   []byte
	prevMapProof   *smt.Proof
}

// parseLookup is step 1 for the handle's parts.
//
// SPEC(design.md 12.2 step 1)
func parseLookup(handle string, resp *ktpb.LookupResponse, pinned ed25519.PublicKey) (*parsedLookup, error) {
	canon, err := api.NormalizeHandle(handle)
	if err != nil {
		return nil, &VerifyError{Step: StepHandle, Err: err}
	}
	if pinned != nil && len(pinned) != ed25519.PublicKeySize {
		return nil, fail(StepParams, ErrInvalidParams, nil, "pinned account key has %d bytes", len(pinned))
	}
	if resp.GetHandle() != canon {
		return nil, fail(StepHandle, ErrRecordMismatch, nil, "answer is for handle %q, asked for %q", resp.GetHandle(), canon)
	}
	pl := &parsedLookup{handle: canon, vrfProof: resp.GetVrfProof(), pinned: pinned}
	if n := len(pl.vrfProof); n != 80 {
		return nil, fail(StepParse, ErrMalformed, nil, "VRF proof has %d bytes, want 80", n)
	}
	if pl.mapProof, err = smt.ParseProof(resp.GetMapProof()); err != nil {
		if errors.Is(err, smt.ErrMalformedProof) {
			return nil, fail(StepParse, ErrMalformed, err, "map proof")
		}
		return nil, fail(StepMap, ErrMapProof, err, "")
	}
	if err := parseReindexed(pl, resp); err != nil {
		return nil, err
	}
	rec, op, set := resp.GetChangeRecord(), resp.GetOpening(), resp.GetDeviceSet()
	if len(rec) == 0 && len(op) == 0 && len(set) == 0 {
		return pl, nil // an absence answer
	}
	if len(rec) == 0 || len(set) == 0 {
		return nil, fail(StepParse, ErrMalformed, nil, "change record, opening and device set must be given together")
	}
	if len(op) != 32 {
		return nil, fail(StepParse, ErrMalformed, nil, "opening has %d bytes, want 32", len(op))
	}
	if pl.record, err = api.ParseChangeRecord(rec); err != nil {
		return nil, fail(StepParse, ErrMalformed, err, "change record")
	}
	if _, err := api.ParseDeviceSet(set); err != nil {
		return nil, fail(StepParse, ErrMalformed, err, "device set")
	}
	pl.recordBytes, pl.setBytes = rec, set
	copy(pl.opening[:], op)
	return pl, nil
}

// verifyLookupIn is steps 3 to 9 against a verified epoch.
//
// SPEC(design.md 12.2 step 3)
// SPEC(design.md 12.2 step 4)
// SPEC(design.md 12.2 step 5)
// SPEC(design.md 12.2 step 7)
// SPEC(design.md 12.2 step 9)
func verifyLookupIn(p *Params, e *Epoch, pl *parsedLookup) (*LookupResult, error) {
	// Step 3: VRF.
	index, err := p.VRFKey.Verify(api.VRFInput(pl.handle), pl.vrfProof)
	if err != nil {
		return nil, fail(StepVRF, ErrVRF, err, "")
	}
	res := &LookupResult{Handle: pl.handle, Index: index, RecordIndex: index, Epoch: e, Trusted: e.Trusted()}

	// Step 4: map membership of leaf(record), or absence; after a VRF
	// rotation, at the index the record sits at (design.md 11.2).
	if pl.record != nil {
		res.LeafHash = api.LeafHash(pl.recordBytes)
	}
	if err := verifyReindexed(p, e, pl, res); err != nil {
		return nil, err
	}
	if pl.record == nil {
		return res, nil
	}

	// Step 5: the record is for this handle.
	r := pl.record
	if r.Index != res.RecordIndex {
		return nil, fail(StepRecord, ErrRecordMismatch, nil, "record index %x, handle index %x", r.Index[:8], res.RecordIndex[:8])
	}

	// Step 6: commitment and R7.
	set, err := openCommitment(r, pl.opening, pl.setBytes)
	if err != nil {
		return nil, err
	}

	// Step 7: strict mode.
	if pl.pinned != nil {
		if set.Account == nil || [32]byte(pl.pinned) != set.Account.Key {
			return nil, fail(StepStrict, ErrStrict, nil, "the device set does not carry the pinned account key")
		}
		if err := set.VerifyAccount(p.Origin, r.Index, r.Version); err != nil {
			return nil, fail(StepStrict, ErrStrict, err, "")
		}
	}

	// Step 8: every HPKE key deserializes.
	rcpts, err := recipients(set)
	if err != nil {
		return nil, err
	}

	// Step 9.
	res.Registered = true
	res.Record = r
	res.Version = r.Version
	res.Kind = r.Kind
	res.DeviceSet = set
	res.Recipients = rcpts
	return res, nil
}

// openCommitment runs api.OpenCommitment and maps its failures.
//
// SPEC(design.md 12.2 step 6)
func openCommitment(r *api.ChangeRecord, opening [32]byte, value []byte) (*api.DeviceSet, error) {
	set, err := api.OpenCommitment(r, opening, value)
	var authErr *api.AuthError
	switch {
	case err == nil:
		return set, nil
	case errors.Is(err, api.ErrCommitment):
		return nil, fail(StepCommitment, ErrCommitment, err, "version %d", r.Version)
	case errors.As(err, &authErr):
		return nil, fail(StepCommitment, ErrAuthorizers, err, "version %d", r.Version)
	default:
		return nil, fail(StepParse, ErrMalformed, err, "device set")
	}
}

// recipients deserializes every HPKE key of set with its suite (design.md
// 4.2: "Senders MUST deserialize every key before encrypting and fail (never
// skip a device) if one does not deserialize").
//
// SPEC(design.md 4.2)
// SPEC(design.md 12.2 step 8)
func recipients(set *api.DeviceSet) ([]Recipient, error) {
	if len(set.Devices) == 0 {
		return nil, nil
	}
	rs := make([]Recipient, len(set.Devices))
	for i, d := range set.Devices {
		bad := func(err error, what string) error {
			return fail(StepHPKE, ErrUnusableKey, err, "device %x: %s", d.ID, what)
		}
		kem, err := hpke.NewKEM(d.Suite.KEM)
		if err != nil {
			return nil, bad(err, "KEM")
		}
		pk, err := kem.NewPublicKey(d.HPKEKey)
		if err != nil {
			return nil, bad(err, "public key")
		}
		kdf, err := hpke.NewKDF(d.Suite.KDF)
		if err != nil {
			return nil, bad(err, "KDF")
		}
		aead, err := hpke.NewAEAD(d.Suite.AEAD)
		if err != nil {
			return nil, bad(err, "AEAD")
		}
		rs[i] = Recipient{Device: d, PublicKey: pk, KDF: kdf, AEAD: aead}
	}
	return rs, nil
}
