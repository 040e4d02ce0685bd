package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/log/evidence"
	"github.com/keytrans/kt/smt"
)

// Contact monitoring (design.md 13.3): a sender remembers what it verified
// about each contact it encrypted to, and checks every later answer about
// that contact against it. A directory that shows the contact's history
// going back, or two histories, is caught with evidence that anyone can
// check offline.

// Contact alerts.
var (
	// ErrContactChanged: the directory's current answer about a remembered
	// contact contradicts what this client verified before: the map went
	// back (an older version, another record at the remembered version, or
	// the handle absent), or the log holds another record at the
	// remembered version. Errors wrapping it are [*ContactChangedError]
	// values carrying the evidence.
	ErrContactChanged = errors.New("client: a contact's history changed")
	// ErrContactChain: the directory shows a contact at a later version
	// but did not give a chain of changes, from the remembered version to
	// the current one, that verifies (or refused to give one). There is no
	// evidence; the contact's new keys are not used.
	ErrContactChain = errors.New("client: a contact's change chain does not verify")
)

// ContactChangedError is a contact monitoring alert with evidence
// (design.md 13.3). It wraps [ErrContactChanged]. Nothing is encrypted to
// the contact.
type ContactChangedError struct {
	// Handle is the contact's canonical handle.
	Handle string
	// Remembered is the version this client verified before; Current the
	// version the directory shows now (0 and Absent when it shows none).
	Remembered, Current uint64
	Absent              bool
	// Kind is the evidence kind: evidence.KindMapRegression or
	// evidence.KindVersionConflict.
	Kind evidence.Kind
	// Reason says what contradicts what, in words.
	Reason string
	// Evidence is the kt-evidence/v2 bundle of Kind, already checked with
	// evidence.Check, and Proves what evidence.Check says it proves; nil
	// when it could not be built (EvidenceErr says why: for example no Log
	// service to fetch an inclusion proof from).
	Evidence    []byte
	Proves      string
	EvidenceErr error
}

func (e *ContactChangedError) Error() string {
	s := fmt.Sprintf("%v: %s: %s", ErrContactChanged, e.Handle, e.Reason)
	if e.Evidence == nil && e.EvidenceErr != nil {
		s += fmt.Sprintf(" (no %s evidence: %v)", e.Kind, e.EvidenceErr)
	}
	return s
}

// Unwrap returns [ErrContactChanged].
func (e *ContactChangedError) Unwrap() error { return ErrContactChanged }

// chainAlert is an [ErrContactChain] alert for handle.
func chainAlert(handle string, cause error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if cause != nil {
		return fmt.Errorf("%w: %s: %s: %w", ErrContactChain, handle, msg, cause)
	}
	return fmt.Errorf("%w: %s: %s", ErrContactChain, handle, msg)
}

// Contact is what the client remembers about a contact it encrypted to
// (design.md 13.3): the latest version it verified and the material to
// build evidence from later. All of it is public in the log; it is a few
// hundred bytes.
type Contact struct {
	// Index is the contact's VRF index, Version the verified version and
	// LeafHash the leaf hash of its change record.
	Index    [32]byte
	Version  uint64
	LeafHash [32]byte
	// Size is the size of the epoch checkpoint the version was verified
	// under; its epoch record is the log entry at Size − 1.
	Size uint64
	// EpochRecord is that epoch record (its log entry bytes), MapProof the
	// map proof of Index under its map root, and Record the change record
	// at Version (the map's value, proved by MapProof).
	EpochRecord []byte
	MapProof    []byte
	Record      []byte
}

// Epoch returns the parsed epoch record of c.
func (c *Contact) Epoch() (*api.EpochRecord, error) { return api.ParseEpochRecord(c.EpochRecord) }

// contactVersion is the first byte of a persisted Contact.
const contactVersion = 0x01

// maxContactPart bounds the map proof and the change record of a persisted
// Contact.
const maxContactPart = 1 << 16

// MarshalBinary encodes c for persistence:
//
//	u8 version (1) || epoch record (66 bytes, design.md 5.1)
//	|| u32 length || map proof || u32 length || change record
//
// Index, Version, LeafHash and Size are not stored: they are read back
// from the record and the epoch record.
func (c *Contact) MarshalBinary() ([]byte, error) {
	if len(c.EpochRecord) != api.EpochRecordSize || len(c.MapProof) > maxContactPart || len(c.Record) > maxContactPart {
		return nil, fmt.Errorf("%w: contact: epoch record of %d bytes, map proof of %d, record of %d", ErrState, len(c.EpochRecord), len(c.MapProof), len(c.Record))
	}
	b := []byte{contactVersion}
	b = append(b, c.EpochRecord...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(c.MapProof)))
	b = append(b, c.MapProof...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(c.Record)))
	return append(b, c.Record...), nil
}

// UnmarshalBinary decodes what MarshalBinary wrote, strictly, and checks
// that the parts agree: the record parses, and the map proof proves its
// leaf hash at its index under the epoch record's map root.
func (c *Contact) UnmarshalBinary(b []byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: contact: %s", ErrState, fmt.Sprintf(format, args...))
	}
	take := func(n int) []byte { return cutPrefix(&b, n) }
	v := take(1)
	if v == nil || v[0] != contactVersion {
		return bad("missing or unknown version")
	}
	er := take(api.EpochRecordSize)
	if er == nil {
		return bad("truncated")
	}
	part := func(what string) ([]byte, error) {
		l := take(4)
		if l == nil {
			return nil, bad("truncated")
		}
		n := binary.BigEndian.Uint32(l)
		if n > maxContactPart {
			return nil, bad("%s of %d bytes", what, n)
		}
		p := take(int(n))
		if p == nil {
			return nil, bad("truncated %s", what)
		}
		return bytes.Clone(p), nil
	}
	mp, err := part("map proof")
	if err != nil {
		return err
	}
	rb, err := part("change record")
	if err != nil {
		return err
	}
	if len(b) != 0 {
		return bad("%d trailing bytes", len(b))
	}
	out, err := newContact(bytes.Clone(er), mp, rb)
	if err != nil {
		return bad("%v", err)
	}
	*c = *out
	return nil
}

// newContact builds the remembered entry from an epoch record, a map proof
// and the change record the proof proves, checking that they agree.
func newContact(epochRecord, mapProof, record []byte) (*Contact, error) {
	er, err := api.ParseEpochRecord(epochRecord)
	if err != nil {
		return nil, err
	}
	r, err := api.ParseChangeRecord(record)
	if err != nil {
		return nil, err
	}
	p, err := smt.ParseProof(mapProof)
	if err != nil {
		return nil, err
	}
	leaf := api.LeafHash(record)
	if err := smt.Verify(er.MapRoot, r.Index, &leaf, p); err != nil {
		return nil, err
	}
	return &Contact{
		Index: r.Index, Version: r.Version, LeafHash: leaf, Size: er.LogSize + 1,
		EpochRecord: epochRecord, MapProof: mapProof, Record: record,
	}, nil
}

// contactOf is the entry to remember after the verified lookup res, whose
// answer was resp. res must be registered.
func contactOf(res *LookupResult, resp *ktpb.LookupResponse) (*Contact, error) {
	er, err := res.Epoch.Record.MarshalBinary()
	if err != nil {
		return nil, err
	}
	mp := resp.GetMapProof()
	if res.RecordIndex != res.Index {
		// SPEC(design.md 11.2): a record at an index under an earlier
		// VRF key (not moved yet, or moved and not changed since) is
		// proved there by prev_map_proof.
		mp = resp.GetPrevMapProof()
	}
	return newContact(er, bytes.Clone(mp), bytes.Clone(resp.GetChangeRecord()))
}

// sameContact reports whether a and b remember the same thing.
func sameContact(a, b *Contact) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Version == b.Version && a.LeafHash == b.LeafHash && a.Size == b.Size
}

// ContactReport is the outcome of the check of one remembered contact.
type ContactReport struct {
	// Handle is the contact's canonical handle.
	Handle string
	// Remembered is the version remembered before the check; Current the
	// version the directory showed (0 when absent or when the lookup
	// failed).
	Remembered, Current uint64
	// Err is nil when the check passed (the remembered entry then
	// advanced to Current); a [*ContactChangedError] or an error wrapping
	// [ErrContactChain] for an alert; another error when the lookup
	// failed.
	Err error
	// Verified is set for a contact with a verification pin (design.md
	// 13.5); a changed identity is an Err wrapping
	// [ErrVerifiedContactChanged].
	Verified bool
}

// Contacts returns the remembered contacts by canonical handle.
func (c *Client) Contacts(ctx context.Context) (map[string]*Contact, error) {
	st, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	return st.Contacts, nil
}

// CheckContacts checks every remembered contact (design.md 13.3), and
// every verified contact against its verification pin (13.5): a
// verified lookup of each, compared with what was remembered, with the
// chain of changes in between when the version moved on. Each passed
// check advances the contact's entry in the same write as the trusted
// checkpoint. The reports are in handle order; the error joins the
// reports' errors (errors.Is finds [ErrContactChanged] and
// [ErrContactChain] in it).
//
// SPEC(design.md 13.3)
func (c *Client) CheckContacts(ctx context.Context) ([]ContactReport, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	var out []ContactReport
	var errs []error
	// SPEC(design.md 13.5): verified contacts are checked too.
	for _, h := range st.checkedContacts() {
		rep := ContactReport{Handle: h, Verified: st.Verified[h] != nil}
		if ct := st.Contacts[h]; ct != nil {
			rep.Remembered = ct.Version
		}
		res, err := withRotations(ctx, c, func() (*LookupResult, error) { return c.lookupAs(ctx, h, false) })
		var cc *ContactChangedError
		switch {
		case err == nil:
			rep.Current = res.Version
		case errors.As(err, &cc):
			rep.Current = cc.Current
		}
		rep.Err = err
		if err != nil {
			errs = append(errs, err)
		}
		out = append(out, rep)
	}
	return out, errors.Join(errs...)
}

// ForgetContact removes handle from the remembered contacts: its next
// lookup is a first contact again. Use it once the user has dealt with an
// alert about it.
func (c *Client) ForgetContact(ctx context.Context, handle string) error {
	canon, err := api.NormalizeHandle(handle)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.update(ctx, func(s *State) error {
		delete(s.Contacts, canon)
		return nil
	})
}

// checkContact is the check of design.md 13.3 of the remembered entry old
// against the verified lookup res (answer resp). It returns the entry to
// remember and the trusted state to store (res.Trusted, or the newer epoch
// of the monitoring answer), or the alert.
//
// SPEC(design.md 13.3)
func (c *Client) checkContact(ctx context.Context, old *Contact, res *LookupResult, resp *ktpb.LookupResponse) (*Contact, *Trusted, error) {
	alert := &ContactChangedError{Handle: res.Handle, Remembered: old.Version, Current: res.Version, Absent: !res.Registered, Kind: evidence.KindMapRegression}
	switch {
	case !res.Registered:
		// SPEC(design.md 13.3): "the handle absent now: alert with
		// map-regression evidence".
		alert.Reason = fmt.Sprintf("version %d was verified in the epoch at log size %d; the directory now shows the handle absent", old.Version, old.Size)
	case res.Version < old.Version:
		// SPEC(design.md 13.3): "v2 < v ... alert with map-regression
		// evidence".
		alert.Reason = fmt.Sprintf("version %d was verified in the epoch at log size %d; the directory now shows version %d", old.Version, old.Size, res.Version)
	case res.Version == old.Version && res.LeafHash != old.LeafHash:
		// SPEC(design.md 13.3): "v2 = v and L2 ≠ L ... alert".
		alert.Reason = fmt.Sprintf("version %d was verified as record %x; the directory now shows record %x at that version", old.Version, old.LeafHash[:8], res.LeafHash[:8])
	case res.Version == old.Version:
		next, err := contactOf(res, resp)
		if err != nil {
			return nil, nil, fmt.Errorf("client: remembering %s: %w", res.Handle, err)
		}
		return next, res.Trusted, nil
	default:
		return c.checkContactChain(ctx, old, res, resp)
	}
	var curRecord []byte
	if res.Registered {
		curRecord = resp.GetChangeRecord()
	}
	alert.Evidence, alert.Proves, alert.EvidenceErr = c.mapRegressionEvidence(ctx, old, res.Epoch, resp.GetMapProof(), curRecord)
	return nil, nil, c.contactAlert(ctx, alert)
}

// checkContactChain is the case v2 > v of design.md 13.3: a records-only
// monitoring answer from version v − 1 must be a chain whose record at v is
// the remembered one and whose record at v2 is the looked-up one (design.md
// 13 steps 1 to 3, by verifyChain).
//
// SPEC(design.md 13.3): "Monitor(index, known_version = v − 1,
// records_only) must give a chain whose record at version v has leaf L,
// then links to L2".
func (c *Client) checkContactChain(ctx context.Context, old *Contact, res *LookupResult, resp *ktpb.LookupResponse) (*Contact, *Trusted, error) {
	h := res.Handle
	// SPEC(design.md 11.2): "the records_only chain of step 3 is asked at
	// the handle's current index with the relaxed index rule": after a
	// rotation of the VRF key, the remembered record may sit at the
	// contact's previous index and the chain continue at the current one.
	cur := res.RecordIndex
	var prevIndex *[32]byte
	if cur != old.Index {
		prevIndex = &old.Index
	}
	req := &ktpb.MonitorRequest{Index: cur[:], KnownVersion: old.Version - 1, KnownSize: res.Trusted.Size, RecordsOnly: true}
	mresp, err := c.dir.Monitor(ctx, req)
	if err != nil {
		return nil, nil, chainAlert(h, err, "the directory refused the chain from version %d to %d", old.Version, res.Version)
	}
	// The chain starts at version v: its link to v − 1 is not this
	// check's business (the sender never saw v − 1), so verifyChain starts
	// from the first change's own link. A first change at another version
	// fails there as a gap.
	prev := [32]byte{}
	if r, err := api.ParseChangeRecord(old.Record); err == nil {
		prev = r.Prev
	}
	if cs := mresp.GetChanges(); len(cs) > 0 {
		if r, err := api.ParseChangeRecord(cs[0].GetChangeRecord()); err == nil && r.Version == old.Version {
			prev = r.Prev
		}
	}
	now := c.cfg.Now()
	e, changes, err := verifyChain(c.params(), cur, prevIndex, old.Version-1, prev, mresp, true, func(part *ktpb.EpochPart) (*Epoch, error) {
		return VerifyEpoch(c.params(), res.Trusted, part, now)
	})
	if err != nil {
		return nil, nil, chainAlert(h, err, "the chain from version %d to %d", old.Version, res.Version)
	}
	last := old.Version - 1 + uint64(len(changes))
	if len(changes) == 0 || last < res.Version {
		return nil, nil, chainAlert(h, nil, "the chain from version %d ends at version %d, the lookup showed %d", old.Version, last, res.Version)
	}
	conflict := func(with *Contact, got *parsedChange, what string) error {
		alert := &ContactChangedError{
			Handle: h, Remembered: old.Version, Current: res.Version, Kind: evidence.KindVersionConflict,
			Reason: fmt.Sprintf("%s: version %d is record %x, but the log holds record %x at that version (log index %d)",
				what, got.record.Version, with.LeafHash[:8], got.leaf[:8], got.logIndex),
		}
		alert.Evidence, alert.Proves, alert.EvidenceErr = c.versionConflictEvidence(ctx, with, e, got)
		return c.contactAlert(ctx, alert)
	}
	// SPEC(design.md 13.3): "A record at v with another leaf: alert with
	// version-conflict evidence".
	if first := &changes[0]; first.leaf != old.LeafHash {
		return nil, nil, conflict(old, first, "the remembered version")
	}
	next, err := contactOf(res, resp)
	if err != nil {
		return nil, nil, fmt.Errorf("client: remembering %s: %w", h, err)
	}
	// The chain's record at v2 must be the one the lookup showed: another
	// one is a second record for v2 in the log, against the lookup's map.
	if at := &changes[res.Version-old.Version]; at.leaf != res.LeafHash {
		return nil, nil, conflict(next, at, "the looked-up version")
	}
	t := res.Trusted
	if e.Size > t.Size {
		t = e.Trusted()
	}
	return next, t, nil
}

// contactAlert hands an alert with evidence to the log refusal (design.md
// 13.3: "An alert with evidence also triggers the refusal of D") and
// returns it.
func (c *Client) contactAlert(ctx context.Context, alert *ContactChangedError) error {
	if alert.Evidence != nil {
		c.log.WarnContext(ctx, "contact monitoring: evidence of misbehaviour", "handle", alert.Handle, "kind", alert.Kind, "proves", alert.Proves)
		c.refuseLog(ctx, alert.Kind, alert.Proves, alert.Evidence)
	} else {
		c.log.WarnContext(ctx, "contact monitoring: alert without evidence", "handle", alert.Handle, "kind", alert.Kind, "err", alert.EvidenceErr)
	}
	return alert
}
