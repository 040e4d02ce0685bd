package client

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/smt"
)

// OwnKeys are the signing keys the owner's device knows to be the owner's
// without asking the directory.
type OwnKeys struct {
	// Device is this device's Ed25519 signing key. Required.
	Device [32]byte
	// Devices are the signing keys of the owner's other devices that this
	// device learned out of band (for example when it was linked), if any.
	Devices [][32]byte
	// Account is the owner's account key, if the owner has one.
	Account *[32]byte
	// Former are this device's earlier signing keys (before re-keys):
	// changes they signed are reported as made by this device.
	Former [][32]byte
}

func (o *OwnKeys) contains(k [32]byte) bool {
	return o.isThisDevice(k) || slices.Contains(o.Devices, k) || (o.Account != nil && *o.Account == k)
}

func (o *OwnKeys) isThisDevice(k [32]byte) bool {
	return k == o.Device || slices.Contains(o.Former, k)
}

// Authority says who authorized a monitored change, from the owner's point
// of view.
type Authority uint8

const (
	// ByThisDevice: signed by this device's own key.
	ByThisDevice Authority = iota + 1
	// ByOwnDevice: signed by another device known to be the owner's.
	ByOwnDevice
	// ByAccountKey: signed by the owner's known account key.
	ByAccountKey
	// ByRecovery: made by the directory's recovery path, without the owner.
	ByRecovery
	// ByUnknownKey: signed by a key that is not known to be the owner's.
	ByUnknownKey
)

func (a Authority) String() string {
	switch a {
	case ByThisDevice:
		return "this device"
	case ByOwnDevice:
		return "another of your devices"
	case ByAccountKey:
		return "your account key"
	case ByRecovery:
		return "the directory's recovery path"
	case ByUnknownKey:
		return "a key that is not one of your devices"
	}
	return fmt.Sprintf("Authority(%d)", uint8(a))
}

// AlertKind classifies an [Alert].
type AlertKind uint8

const (
	// AlertRecovery: the directory changed the device set through its
	// recovery path (kind 4).
	AlertRecovery AlertKind = iota + 1
	// AlertForeignEnrollment: the handle was enrolled by a key that is not
	// one of the owner's devices.
	AlertForeignEnrollment
	// AlertUnknownSigner: a change was signed by a key that is not one of
	// the owner's devices or account key.
	AlertUnknownSigner
	// AlertRuleViolation: the directory logged a change that breaks an
	// authorization rule (R1 to R7); the auditors report it too.
	AlertRuleViolation
	// AlertTransientDevice: a device was added and removed again between
	// two polls (A7), and the change adding it was not made by the owner.
	AlertTransientDevice
)

func (k AlertKind) String() string {
	switch k {
	case AlertRecovery:
		return "recovery"
	case AlertForeignEnrollment:
		return "foreign enrollment"
	case AlertUnknownSigner:
		return "unknown signer"
	case AlertRuleViolation:
		return "rule violation"
	case AlertTransientDevice:
		return "transient device"
	}
	return fmt.Sprintf("AlertKind(%d)", uint8(k))
}

// Alert is a change the owner did not make, or that breaks the rules. Show
// every alert to the user.
type Alert struct {
	Kind AlertKind
	// Version and LogIndex locate the change record.
	Version  uint64
	LogIndex uint64
	// Rule names the broken rule for AlertRuleViolation ([api.RuleDevice], ...).
	Rule api.Rule
	// Message says what happened, for the user.
	Message string
	// Err is, for AlertRuleViolation, the error of the broken rule: the
	// *api.AuthError of api.CheckChange (R1 to R6) or of
	// api.OpenCommitment, wrapped with [ErrAuthorizers] (R7).
	Err error
}

func (a Alert) String() string {
	return fmt.Sprintf("version %d (log index %d): %s", a.Version, a.LogIndex, a.Message)
}

// Change is one verified change of the monitored handle.
type Change struct {
	Version  uint64
	LogIndex uint64
	Record   *api.ChangeRecord
	// DeviceSet is the set after the change.
	DeviceSet *api.DeviceSet
	// By says who authorized the change.
	By Authority
	// Added and Removed compare the devices with the previous set (a
	// device whose keys changed is in both).
	Added, Removed []api.Device
	// AccountIDChanged and AccountKeyChanged report a change of the
	// account ID or of the account key (including adding or removing it).
	AccountIDChanged, AccountKeyChanged bool
	// Alerts raised by this change.
	Alerts []Alert
}

// MonitorState is what an owner's device remembers about one of its
// handles between polls (design.md 13 step 6). Persist it with
// [MonitorState.MarshalBinary].
type MonitorState struct {
	// Index is the handle's VRF index (from the device's own lookup).
	Index [32]byte
	// Version is the latest verified version, 0 before the first change.
	Version uint64
	// LeafHash is the leaf hash of that version's change record (zero for
	// version 0) and Authorizers its authorizers.
	LeafHash    [32]byte
	Authorizers []api.Authorizer
	// DeviceSet is that version's device set (nil for version 0).
	DeviceSet *api.DeviceSet
	// Known are the signing keys (devices and account key) learned to be
	// the owner's along the chain: those of every set written by a key
	// that was already known. Sorted, unique.
	Known [][32]byte
	// VRFRotations is the number of rotations of the VRF key the client
	// had followed when Index was confirmed as the handle's index under
	// the current key (design.md 11.2); when the client follows another,
	// its next poll crosses the re-indexing ([VerifyMonitorMove]).
	VRFRotations uint32
}

// MonitorResult is a verified monitoring answer.
type MonitorResult struct {
	// State is the state to store in place of the caller's (a new value).
	State *MonitorState
	// Trusted is the trusted epoch state to store.
	Trusted *Trusted
	Epoch   *Epoch
	// Changes are the changes since the known version, in order.
	Changes []Change
	// Alerts collects the alerts of all changes.
	Alerts []Alert
	// Transient lists devices that were added and removed again within the
	// changes of this answer, so never in a stored state (attack A7). Each
	// is also visible in Changes.
	Transient []api.Device
}

// parsedChange is a MonitoredChange after step 1.
type parsedChange struct {
	recordBytes []byte
	record      *api.ChangeRecord
	leaf        [32]byte
	logIndex    uint64
	inclusion   [][]byte
	opening     [32]byte
	setBytes    []byte
}

// VerifyMonitor verifies a monitoring answer for the handle of state
// (design.md 13) and classifies every change since state.Version. t is the
// trusted epoch state (nil for none), own the owner's keys known out of band.
//
// Errors are [*VerifyError] values: the epoch part as in [VerifyEpoch];
// [ErrMonitorGap] when the changes are not the complete chain of versions
// after state.Version, in order, each linked to its predecessor and
// included in the log below the epoch record; [ErrMapProof] when the map
// does not hold the last change (a chain that stops short of the latest
// version fails here); [ErrCommitment] when an opening does not open its
// record's commitment. Authorization rule failures of logged records (R1 to
// R7) and changes the owner did not make are not errors: they are verified
// facts about the log and come back as alerts in the result.
//
// Neither state nor t is modified. [VerifyObserved] runs the same checks
// without the owner's state.
//
// SPEC(design.md 13)
func VerifyMonitor(p *Params, t *Trusted, state *MonitorState, resp *ktpb.MonitorResponse, own OwnKeys, now time.Time) (*MonitorResult, error) {
	if err := checkMonitorArgs(p, state, own); err != nil {
		return nil, err
	}
	return verifyMonitor(p, t, state, resp, own, now, state.Index, nil)
}

func checkMonitorArgs(p *Params, state *MonitorState, own OwnKeys) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if state == nil {
		return fail(StepParams, ErrInvalidParams, nil, "no monitor state")
	}
	if own.Device == ([32]byte{}) {
		return fail(StepParams, ErrInvalidParams, nil, "no own device key")
	}
	if (state.Version == 0) != (state.DeviceSet == nil) || state.Version == 0 && state.LeafHash != [32]byte{} {
		return fail(StepParams, ErrInvalidParams, nil, "monitor state at version %d does not match its record fields", state.Version)
	}
	return nil
}

// VerifyMonitorMove verifies the poll of an own handle that crosses a
// rotation of the VRF key (design.md 11.2). lookup is the device's own
// lookup of the handle under the current VRF key, verified by
// [VerifyLookup]; resp is the monitoring answer from state.Version for
// the index the handle's history is at now: lookup.Index once moved, the
// old index state.Index while lookup.NotMoved.
//
// Not moved yet: it is [VerifyMonitor] at the old index. Moved: the
// history at the new index must continue the device's, which the chain of
// resp from state.Version (records at the old index may start it, 13 step
// 3 as relaxed by 11.2) and the map leaf at the new index prove; the
// result's state is at the new index. A new index whose history does not
// continue the device's (another leaf, a chain that does not link to
// state.LeafHash, an older version, or nothing at all where the device
// had a history) fails with [ErrMoved], wrapping what failed: an alert,
// since the directory either moved the history somewhere else or put
// another one where it belongs.
//
// SPEC(design.md 11.2): "Monitoring ... ErrMoved".
func VerifyMonitorMove(p *Params, t *Trusted, state *MonitorState, lookup *LookupResult, resp *ktpb.MonitorResponse, own OwnKeys, now time.Time) (*MonitorResult, error) {
	if err := checkMonitorArgs(p, state, own); err != nil {
		return nil, err
	}
	if lookup == nil {
		return nil, fail(StepParams, ErrInvalidParams, nil, "no lookup of the handle under the current VRF key")
	}
	moved := func(cause error, format string, args ...any) error {
		return fail(StepMove, ErrMoved, cause, format, args...)
	}
	if lookup.NotMoved {
		if lookup.RecordIndex != state.Index {
			return nil, moved(nil, "the directory says the handle is not moved yet, at index %x, but the device knows it at %x", lookup.RecordIndex[:8], state.Index[:8])
		}
		return verifyMonitor(p, t, state, resp, own, now, state.Index, nil)
	}
	switch {
	case !lookup.Registered && state.Version > 0:
		return nil, moved(nil, "no history at the new index %x, nor at the old one, where the device knows version %d", lookup.Index[:8], state.Version)
	case lookup.Registered && lookup.Version < state.Version:
		return nil, moved(nil, "the new index %x holds version %d, the device knows version %d", lookup.Index[:8], lookup.Version, state.Version)
	case lookup.Registered && lookup.Version == state.Version && lookup.LeafHash != state.LeafHash:
		return nil, moved(nil, "the new index %x holds another record at version %d than the device knows", lookup.Index[:8], state.Version)
	case lookup.Registered && lookup.RecordIndex != lookup.Index && lookup.RecordIndex != state.Index:
		return nil, moved(nil, "the new index %x holds a record moved from %x, not from the device's index %x", lookup.Index[:8], lookup.RecordIndex[:8], state.Index[:8])
	}
	res, err := verifyMonitor(p, t, state, resp, own, now, lookup.Index, &state.Index)
	if errors.Is(err, ErrMonitorGap) || errors.Is(err, ErrMapProof) {
		return nil, moved(err, "the history at the new index %x does not continue version %d", lookup.Index[:8], state.Version)
	}
	if err != nil {
		return nil, err
	}
	res.State.VRFRotations = uint32(len(p.PrevVRFKeys))
	return res, nil
}

// verifyMonitor is VerifyMonitor for the handle at index; prevIndex, if
// not nil, is the index the device knew before a VRF key rotation, whose
// records may start the chain (design.md 11.2). The result's state has
// index as its Index.
func verifyMonitor(p *Params, t *Trusted, state *MonitorState, resp *ktpb.MonitorResponse, own OwnKeys, now time.Time, index [32]byte, prevIndex *[32]byte) (*MonitorResult, error) {
	e, changes, err := verifyChain(p, index, prevIndex, state.Version, state.LeafHash, resp, false, func(part *ktpb.EpochPart) (*Epoch, error) {
		return VerifyEpoch(p, t, part, now)
	})
	if err != nil {
		return nil, err
	}

	// Steps 4 and 5: rules and classification.
	res := &MonitorResult{Trusted: e.Trusted(), Epoch: e}
	next := state.clone()
	type addition struct {
		d  api.Device
		by Change
	}
	var added []addition // every device added during this answer
	for i := range changes {
		pc := &changes[i]
		c, err := next.apply(p, pc, &own)
		if err != nil {
			return nil, err
		}
		res.Changes = append(res.Changes, *c)
		for _, d := range c.Added {
			added = append(added, addition{d, *c})
		}
	}
	for _, c := range res.Changes {
		res.Alerts = append(res.Alerts, c.Alerts...)
	}
	for _, a := range added {
		d := a.d
		if !containsDevice(state.DeviceSet, d) && !containsDevice(next.DeviceSet, d) &&
			!slices.ContainsFunc(res.Transient, func(x api.Device) bool { return sameDevice(x, d) }) {
			res.Transient = append(res.Transient, d)
			if a.by.By != ByThisDevice && a.by.By != ByOwnDevice && a.by.By != ByAccountKey {
				res.Alerts = append(res.Alerts, Alert{
					Kind: AlertTransientDevice, Version: a.by.Version, LogIndex: a.by.LogIndex,
					Message: fmt.Sprintf("device %x was added by %v and removed again before this poll", d.ID[:8], a.by.By),
				})
			}
		}
	}
	next.Index = index
	res.State = next
	return res, nil
}

// verifyChain runs steps 1 to 3 of design.md 13 on a monitoring answer
// for index from the known version (with leaf hash leaf; 0 and zero for
// none), for owners and observers alike: it parses the answer, verifies
// its epoch part with epoch, checks that the changes are the complete
// chain of versions after version, each included in the log below the
// epoch record and after its predecessor, and verifies the map proof for
// the last one. Errors are [*VerifyError] values. With recordsOnly (a
// records_only answer: contact monitoring, design.md 13.3) the changes
// carry no opening and no device set, and the parsed changes have none.
//
// SPEC(design.md 13 step 1)
// SPEC(design.md 13 step 2)
// SPEC(design.md 13 step 3)
//
// prevIndex, if not nil, is the handle's index before a rotation of the VRF
// key (design.md 11.2): records at it may start the chain, and none may
// follow a record at index.
//
// SPEC(design.md 11.2): "each record's index is the old index or the new
// one, and no record at the old index follows one at the new index".
func verifyChain(p *Params, index [32]byte, prevIndex *[32]byte, version uint64, leaf [32]byte, resp *ktpb.MonitorResponse, recordsOnly bool, epoch func(*ktpb.EpochPart) (*Epoch, error)) (*Epoch, []parsedChange, error) {
	if resp == nil {
		return nil, nil, fail(StepParse, ErrMalformed, nil, "no response")
	}

	// Step 1 (12.2 step 1): parse.
	mp, err := smt.ParseProof(resp.GetMapProof())
	if err != nil {
		if errors.Is(err, smt.ErrMalformedProof) {
			return nil, nil, fail(StepParse, ErrMalformed, err, "map proof")
		}
		return nil, nil, fail(StepMap, ErrMapProof, err, "")
	}
	changes := make([]parsedChange, len(resp.GetChanges()))
	for i, c := range resp.GetChanges() {
		pc := &changes[i]
		if c == nil {
			return nil, nil, fail(StepParse, ErrMalformed, nil, "change %d is empty", i)
		}
		if pc.record, err = api.ParseChangeRecord(c.GetChangeRecord()); err != nil {
			return nil, nil, fail(StepParse, ErrMalformed, err, "change %d record", i)
		}
		switch {
		case recordsOnly:
			// SPEC(design.md 13.3): "each MonitoredChange carries only
			// change_record, log_index and inclusion_proof".
			if len(c.GetOpening()) != 0 || len(c.GetDeviceSet()) != 0 {
				return nil, nil, fail(StepParse, ErrMalformed, nil, "change %d of a records-only answer has an opening or a device set", i)
			}
		case len(c.GetOpening()) != 32:
			return nil, nil, fail(StepParse, ErrMalformed, nil, "change %d opening has %d bytes, want 32", i, len(c.GetOpening()))
		default:
			if _, err := api.ParseDeviceSet(c.GetDeviceSet()); err != nil {
				return nil, nil, fail(StepParse, ErrMalformed, err, "change %d device set", i)
			}
		}
		if err := checkProof("change inclusion proof", c.GetInclusionProof()); err != nil {
			return nil, nil, err
		}
		pc.recordBytes = c.GetChangeRecord()
		pc.leaf = api.LeafHash(pc.recordBytes)
		pc.logIndex = c.GetLogIndex()
		pc.inclusion = c.GetInclusionProof()
		copy(pc.opening[:], c.GetOpening())
		pc.setBytes = c.GetDeviceSet()
	}

	// Step 1 of 13: the epoch.
	e, err := epoch(resp.GetEpoch())
	if err != nil {
		return nil, nil, err
	}

	// Step 3 of 13 (before the map proof, so that a gap is reported as
	// one): the changes are the complete chain after version.
	atNew := prevIndex == nil
	for i := range changes {
		pc := &changes[i]
		r := pc.record
		if r.Index == index {
			atNew = true
		}
		switch {
		case r.Index != index && (atNew || r.Index != *prevIndex):
			return nil, nil, fail(StepChain, ErrMonitorGap, nil, "change %d is for index %x, not %x", i, r.Index[:8], index[:8])
		case version == ^uint64(0) || r.Version != version+1:
			return nil, nil, fail(StepChain, ErrMonitorGap, nil, "change %d has version %d, want %d", i, r.Version, version+1)
		case r.Prev != leaf:
			return nil, nil, fail(StepChain, ErrMonitorGap, nil, "version %d does not link to the leaf hash of version %d", r.Version, version)
		case pc.logIndex >= e.Record.LogSize:
			return nil, nil, fail(StepChain, ErrMonitorGap, nil, "version %d at log index %d, not below the epoch's log size %d", r.Version, pc.logIndex, e.Record.LogSize)
		case i > 0 && pc.logIndex <= changes[i-1].logIndex:
			// SPEC(design.md 13 step 3): versions are logged in order.
			return nil, nil, fail(StepChain, ErrMonitorGap, nil, "version %d at log index %d, not after version %d at %d", r.Version, pc.logIndex, version, changes[i-1].logIndex)
		}
		if err := log.VerifyInclusion(pc.logIndex, e.Size, pc.leaf[:], pc.inclusion, e.Root[:]); err != nil {
			return nil, nil, fail(StepChain, ErrMonitorGap, err, "version %d not included at log index %d", r.Version, pc.logIndex)
		}
		version, leaf = r.Version, pc.leaf
	}

	// Step 2 of 13: the map holds the last version (or, at version 0 with
	// no change, nothing).
	var value *[32]byte
	if version > 0 {
		value = &leaf
	}
	if err := smt.Verify(e.Record.MapRoot, index, value, mp); err != nil {
		return nil, nil, fail(StepMap, ErrMapProof, err, "index %x at version %d", index[:8], version)
	}
	return e, changes, nil
}

// apply checks one change against s (the state before it), classifies it
// from the owner's point of view and advances s.
//
// SPEC(design.md 13 step 5)
func (s *MonitorState) apply(p *Params, pc *parsedChange, own *OwnKeys) (*Change, error) {
	c, violated, err := s.check(p, pc)
	if err != nil {
		return nil, err
	}
	r := pc.record
	alert := func(kind AlertKind, format string, args ...any) {
		c.Alerts = append(c.Alerts, Alert{Kind: kind, Version: r.Version, LogIndex: pc.logIndex, Message: fmt.Sprintf(format, args...)})
	}

	// Step 5: who made the change.
	known := func(k [32]byte) bool {
		if s.Version == 0 {
			// SPEC(design.md 13): "kind 1 with k = 0: expected only if the
			// signer is this device's own key". Nothing is learned yet;
			// keys given out of band count as own.
			return own.contains(k)
		}
		return own.contains(k) || slices.Contains(s.Known, k)
	}
	switch {
	case r.Kind == api.AuthRecovery:
		c.By = ByRecovery
		alert(AlertRecovery, "changed by the directory's recovery path, not by you")
	case own.isThisDevice(r.Signer):
		c.By = ByThisDevice
	case !known(r.Signer):
		c.By = ByUnknownKey
		if r.Kind == api.AuthEnroll && s.Version == 0 {
			alert(AlertForeignEnrollment, "enrolled by a key that is not one of your devices (%x)", r.Signer[:8])
		} else {
			alert(AlertUnknownSigner, "signed by a key that is not one of your devices or your account key (%x)", r.Signer[:8])
		}
	case r.Kind == api.AuthAccount:
		c.By = ByAccountKey
	default:
		c.By = ByOwnDevice
	}

	// Learn the keys of a set written by the owner.
	if !violated && (c.By == ByThisDevice || c.By == ByOwnDevice || c.By == ByAccountKey) {
		for _, d := range c.DeviceSet.Devices {
			s.learn(d.SigningKey)
		}
		if c.DeviceSet.Account != nil {
			s.learn(c.DeviceSet.Account.Key)
		}
	}

	s.advance(pc, c.DeviceSet)
	return c, nil
}

// check is step 4 of design.md 13 for one change, for owners and observers
// alike: the authorization rules against s (the state before the change)
// and the commitment. A broken rule is a verified fact about the log, an
// AlertRuleViolation in the change, and sets violated; a commitment that
// does not open is an error. check also compares the device set with s's.
// It does not modify s.
//
// SPEC(design.md 13 step 5): "any change of the account ID or the account
// key is reported".
// SPEC(design.md 13 step 4): "api.CheckChange against the previous state
// and api.OpenCommitment; a failure is an alert".
func (s *MonitorState) check(p *Params, pc *parsedChange) (c *Change, violated bool, err error) {
	r := pc.record
	c = &Change{Version: r.Version, LogIndex: pc.logIndex, Record: r}
	ruleAlert := func(rule api.Rule, cause, err error) {
		violated = true
		c.Alerts = append(c.Alerts, Alert{
			Kind: AlertRuleViolation, Version: r.Version, LogIndex: pc.logIndex, Rule: rule, Err: err,
			Message: fmt.Sprintf("the directory logged a change that breaks rule %s: %v", rule, cause),
		})
	}

	// R1 to R6.
	var prev *api.HandleState
	if s.Version > 0 {
		prev = &api.HandleState{Version: s.Version, LeafHash: s.LeafHash, Authorizers: s.Authorizers}
	}
	recovery := p.recoveryKeyAt(pc.logIndex)
	if recovery == ([32]byte{}) && r.Kind == api.AuthRecovery {
		// Only an observer's Params may lack the recovery key: R6 is
		// then not checked (see VerifyObserved).
		recovery = r.Signer
	}
	if err := api.CheckChange(p.Origin, prev, r, recovery); err != nil {
		var ae *api.AuthError
		rule := api.Rule("authorization") // CheckChange returns only *api.AuthError today
		if errors.As(err, &ae) {
			rule = ae.Rule
		}
		ruleAlert(rule, err, err)
	}

	// The commitment, then R7.
	set, err := api.OpenCommitment(r, pc.opening, pc.setBytes)
	var ae *api.AuthError
	switch {
	case err == nil:
	case errors.As(err, &ae):
		// R7: the record names other authorizers than the set's keys. The
		// set itself is committed to, so it is still the set.
		ruleAlert(ae.Rule, err, fmt.Errorf("%w: %w", ErrAuthorizers, err))
		if set, err = api.ParseDeviceSet(pc.setBytes); err != nil {
			return nil, false, fail(StepParse, ErrMalformed, err, "version %d device set", r.Version)
		}
	case errors.Is(err, api.ErrCommitment):
		return nil, false, fail(StepCommitment, ErrCommitment, err, "version %d", r.Version)
	default:
		return nil, false, fail(StepParse, ErrMalformed, err, "version %d device set", r.Version)
	}
	c.DeviceSet = set

	// Compare with the previous set.
	old := s.DeviceSet
	for _, d := range set.Devices {
		if !containsDevice(old, d) {
			c.Added = append(c.Added, d)
		}
	}
	if old != nil {
		for _, d := range old.Devices {
			if !containsDevice(set, d) {
				c.Removed = append(c.Removed, d)
			}
		}
		c.AccountIDChanged = old.AccountID != set.AccountID
		c.AccountKeyChanged = accountKey(old) != accountKey(set)
	}
	return c, violated, nil
}

// advance is step 6 of design.md 13: s moves to the change pc, whose
// device set is set.
//
// SPEC(design.md 13 step 6): "Store the latest version, leaf hash and
// device set."
func (s *MonitorState) advance(pc *parsedChange, set *api.DeviceSet) {
	s.Version = pc.record.Version
	s.LeafHash = pc.leaf
	s.Authorizers = slices.Clone(pc.record.Authorizers)
	s.DeviceSet = set
}

func (s *MonitorState) learn(k [32]byte) {
	i, found := slices.BinarySearchFunc(s.Known, k, func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
	if !found {
		s.Known = slices.Insert(s.Known, i, k)
	}
}

func (s *MonitorState) clone() *MonitorState {
	c := *s
	c.Authorizers = slices.Clone(s.Authorizers)
	c.Known = slices.Clone(s.Known)
	return &c
}

func accountKey(s *api.DeviceSet) [32]byte {
	if s == nil || s.Account == nil {
		return [32]byte{}
	}
	return s.Account.Key
}

func sameDevice(a, b api.Device) bool {
	return a.ID == b.ID && a.Suite == b.Suite && bytes.Equal(a.HPKEKey, b.HPKEKey) &&
		a.SigningKey == b.SigningKey && a.Created == b.Created
}

func containsDevice(s *api.DeviceSet, d api.Device) bool {
	if s == nil {
		return false
	}
	return slices.ContainsFunc(s.Devices, func(x api.Device) bool { return sameDevice(x, d) })
}
