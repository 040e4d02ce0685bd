package ktctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	klog "github.com/keytrans/kt/log"
)

// Device is a decoded device of a device set.
type Device struct {
	ID         Hex       `json:"id"`
	Suite      string    `json:"suite"`
	HPKEKey    Hex       `json:"hpke_key"`
	SigningKey Hex       `json:"signing_key"`
	Created    time.Time `json:"created"`
}

// DeviceSet is a decoded device set.
type DeviceSet struct {
	AccountID  Hex      `json:"account_id"`
	Devices    []Device `json:"devices"`
	AccountKey Hex      `json:"account_key,omitempty"`
}

func decodeSet(s *api.DeviceSet) *DeviceSet {
	d := &DeviceSet{AccountID: s.AccountID[:], Devices: []Device{}}
	for _, dv := range s.Devices {
		d.Devices = append(d.Devices, decodeDevice(dv))
	}
	if s.Account != nil {
		d.AccountKey = s.Account.Key[:]
	}
	return d
}

func decodeDevice(d api.Device) Device {
	return Device{
		ID: d.ID[:], Suite: suiteName(d.Suite), HPKEKey: d.HPKEKey, SigningKey: d.SigningKey[:],
		Created: time.Unix(int64(min(d.Created, 1<<62)), 0).UTC(),
	}
}

// VerifiedChange is one change of a handle from a verified monitoring
// answer, with its opened device set.
type VerifiedChange struct {
	LogIndex  uint64     `json:"log_index"`
	Change    *Change    `json:"change"`
	DeviceSet *DeviceSet `json:"device_set"`

	set *api.DeviceSet
}

// VerifiedHistory is a verified monitoring answer for known version 0:
// every version of an index, under an epoch checkpoint.
type VerifiedHistory struct {
	Index      Hex               `json:"index"`
	Checkpoint *Checkpoint       `json:"checkpoint"`
	Epoch      *Epoch            `json:"epoch"`
	Changes    []*VerifiedChange `json:"changes"`
}

// VerifyMonitor verifies a Monitor answer for index and known version 0
// with [client.VerifyObserved] (design.md 13, from the point of view of
// anyone holding the pinned keys rather than the owner): the epoch
// checkpoint's signatures (and witness policy, if any), that the epoch
// record is its last entry, the chain of every version 1, 2, ... (index,
// prev links, inclusion below the epoch record, in log order), the map
// proof for the latest version, and every commitment opening. A change
// that breaks rule R7 fails too. Each failure is a [*VerifyError] wrapping
// the client's typed error.
func VerifyMonitor(k *Keys, index [32]byte, resp *ktpb.MonitorResponse) (*VerifiedHistory, error) {
	o, err := client.VerifyObserved(k.params(), index, resp, time.Now())
	if err != nil {
		return nil, observerErr(k, err)
	}
	for _, c := range o.Changes {
		for _, a := range c.Alerts {
			if errors.Is(a.Err, client.ErrAuthorizers) {
				return nil, verifyErr("commitment", a.Err, "version %d does not open to the device set served", c.Version)
			}
		}
	}
	// Verified above; this describes the checkpoint's signature lines.
	cp, err := VerifyCheckpoint(o.Epoch.Checkpoint, k)
	if err != nil {
		return nil, err
	}
	vh := &VerifiedHistory{Index: index[:], Checkpoint: cp, Changes: []*VerifiedChange{}, Epoch: decodeEpoch(&o.Epoch.Record)}
	for _, c := range o.Changes {
		vh.Changes = append(vh.Changes, &VerifiedChange{LogIndex: c.LogIndex, Change: DecodeChange(c.Record, cp.Origin), DeviceSet: decodeSet(c.DeviceSet), set: c.DeviceSet})
	}
	return vh, nil
}

// params returns the client parameters of an observer holding k. Without
// a policy, cosignatures are not checked, as by [VerifyCheckpoint].
func (k *Keys) params() *client.Params {
	p := &client.Params{
		Origin: k.Origin, LogVerifier: k.LogVerifier, Witnesses: k.Policy,
		InsecureNoWitnesses: k.Policy == nil || k.Policy.QuorumNone(),
	}
	if k.RecoveryKey != nil {
		p.RecoveryKey = *k.RecoveryKey
	}
	return p
}

// observerErr classifies an error of client.VerifyObserved for people.
func observerErr(k *Keys, err error) error {
	switch {
	case errors.Is(err, client.ErrInvalidParams):
		return fmt.Errorf("%w: the pinned keys: %w", ErrArgument, err)
	case errors.Is(err, client.ErrCheckpointSignature):
		return verifyErr("checkpoint", err, "the log signature does not verify with the pinned key %s", k.LogVerifierKey)
	case errors.Is(err, client.ErrWitnessQuorum):
		return verifyErr("witness policy", err, "the epoch checkpoint is not accepted")
	case errors.Is(err, client.ErrNotLatestEpoch), errors.Is(err, client.ErrEpochInclusion):
		return verifyErr("epoch record", err, "it is not proved to be the epoch checkpoint's last entry")
	case errors.Is(err, client.ErrMonitorGap):
		return verifyErr("version chain", err, "the changes served are not every version of the index, in the log, in order")
	case errors.Is(err, client.ErrMapProof):
		return verifyErr("map proof", err, "the map does not hold the latest version served (versions withheld?)")
	case errors.Is(err, client.ErrCommitment):
		return verifyErr("commitment", err, "a version does not open to the device set served")
	default:
		return verifyErr("monitor answer", err, "malformed")
	}
}

// EpochAt finds the epoch record with the given number in the log under
// the verified checkpoint cp, whose last entry must be an epoch record
// (an epoch checkpoint). Epoch records are numbered in log order, so a
// binary search over log positions needs about log2(size) short reads.
// The record found is proven included in cp.
func EpochAt(ctx context.Context, r klog.Reader, cp *Checkpoint, epoch uint64) (*Epoch, error) {
	// first returns the first epoch record at or after position i.
	first := func(i uint64) (*api.EpochRecord, uint64, []byte, error) {
		for pos, n := i, uint64(16); pos < cp.Size; n = min(n*4, 1024) {
			es, err := r.Entries(ctx, pos, min(pos+n, cp.Size))
			if err != nil {
				return nil, 0, nil, fmt.Errorf("fetching entries from %d: %w", pos, err)
			}
			if len(es) == 0 {
				return nil, 0, nil, fmt.Errorf("fetching entries from %d: got none", pos)
			}
			for _, e := range es {
				if len(e) > 1 && api.EntryType(e[1]) == api.TypeEpoch {
					rec, err := api.ParseEpochRecord(e)
					if err != nil {
						return nil, 0, nil, verifyErr("epoch record", err, "entry %d is malformed", pos)
					}
					return rec, pos, e, nil
				}
				pos++
			}
		}
		return nil, 0, nil, verifyErr("epoch record", nil, "no epoch record at or after %d in the log of size %d", i, cp.Size)
	}
	lo, hi := uint64(0), cp.Size-1 // invariant: the answer is in [lo, hi]
	for lo < hi {
		mid := lo + (hi-lo)/2
		rec, _, _, err := first(mid)
		if err != nil {
			return nil, err
		}
		if rec.Epoch >= epoch {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	rec, pos, raw, err := first(lo)
	if err != nil {
		return nil, err
	}
	if rec.Epoch != epoch {
		if rec.Epoch < epoch {
			return nil, argErr("epoch %d does not exist yet: the latest is %d", epoch, rec.Epoch)
		}
		return nil, verifyErr("epoch record", nil, "the log has no epoch record %d (found %d at %d): epochs must be numbered 0, 1, 2, ...", epoch, rec.Epoch, pos)
	}
	p, err := r.InclusionProof(ctx, pos, cp.Size)
	if err != nil {
		return nil, fmt.Errorf("fetching the inclusion proof of epoch %d: %w", epoch, err)
	}
	if _, err := client.VerifyEpochRecord(raw, pos, cp.Size, cp.RootHash(), p); err != nil {
		return nil, verifyErr("epoch record", err, "epoch %d at log index %d", epoch, pos)
	}
	return decodeEpoch(rec), nil
}

// DiffSide is the state of a handle at one epoch.
type DiffSide struct {
	Epoch *Epoch `json:"epoch"`
	// Version is the version current at the epoch, 0 if none.
	Version   uint64     `json:"version"`
	DeviceSet *DeviceSet `json:"device_set"`

	set *api.DeviceSet
}

// Rekeyed is a device whose ID stayed and whose keys changed.
type Rekeyed struct {
	Old Device `json:"old"`
	New Device `json:"new"`
}

// Account key changes.
const (
	AccountKeyUnchanged = "unchanged"
	AccountKeyAdded     = "added"
	AccountKeyRemoved   = "removed"
	AccountKeyChanged   = "changed"
)

// DiffResult is the device-set difference of a handle between two epochs.
type DiffResult struct {
	Index  Hex       `json:"index"`
	Handle string    `json:"handle,omitempty"`
	A      *DiffSide `json:"a"`
	B      *DiffSide `json:"b"`
	// Added and Removed are the devices (by ID) only in B or only in A.
	Added   []Device  `json:"added"`
	Removed []Device  `json:"removed"`
	Rekeyed []Rekeyed `json:"rekeyed"`
	// Unchanged counts the devices identical in both.
	Unchanged        int    `json:"unchanged"`
	AccountIDChanged bool   `json:"account_id_changed"`
	AccountKey       string `json:"account_key"`
	// Between are the changes after A's version up to B's (or, when B is
	// the earlier epoch, after B's up to A's).
	Between []*VerifiedChange `json:"between"`
	// CheckpointSize is the epoch checkpoint everything was verified under.
	CheckpointSize uint64 `json:"checkpoint_size"`
}

// LatestEpoch, as an epoch argument of [Diff], stands for the epoch of the
// directory's answer.
const LatestEpoch = ^uint64(0)

// Diff verifies a monitoring answer (known version 0) for index from the
// Operator service's History (the public Monitor serves openings and
// device sets only to the handle's owner, design.md 13.4), finds the
// epochs a and b in the log under its epoch checkpoint, picks the version
// current at each epoch (the last change before the epoch record), and
// compares the two device sets.
func Diff(ctx context.Context, oc ktpb.OperatorClient, r klog.Reader, k *Keys, index [32]byte, a, b uint64) (*DiffResult, error) {
	resp, err := oc.History(ctx, &ktpb.MonitorRequest{Index: index[:]})
	if err != nil {
		return nil, fmt.Errorf("Operator History: %w", err)
	}
	vh, err := VerifyMonitor(k, index, resp)
	if err != nil {
		return nil, err
	}
	res := &DiffResult{Index: index[:], CheckpointSize: vh.Checkpoint.Size, Between: []*VerifiedChange{}}
	for _, side := range []struct {
		epoch uint64
		out   **DiffSide
	}{{a, &res.A}, {b, &res.B}} {
		if side.epoch == LatestEpoch {
			side.epoch = vh.Epoch.Epoch
		}
		if side.epoch > vh.Epoch.Epoch {
			return nil, argErr("epoch %d does not exist yet: the latest is %d", side.epoch, vh.Epoch.Epoch)
		}
		e := vh.Epoch
		if side.epoch != vh.Epoch.Epoch {
			if e, err = EpochAt(ctx, r, vh.Checkpoint, side.epoch); err != nil {
				return nil, err
			}
		}
		s := &DiffSide{Epoch: e}
		for _, c := range vh.Changes {
			if c.LogIndex < e.LogSize {
				s.Version, s.DeviceSet, s.set = c.Change.Version, c.DeviceSet, c.set
			}
		}
		*side.out = s
	}
	lo, hi := min(res.A.Version, res.B.Version), max(res.A.Version, res.B.Version)
	for _, c := range vh.Changes {
		if c.Change.Version > lo && c.Change.Version <= hi {
			res.Between = append(res.Between, c)
		}
	}
	compareSets(res)
	return res, nil
}

func compareSets(res *DiffResult) {
	var as, bs []api.Device
	var aAcct, bAcct *api.AccountKey
	var aID, bID [16]byte
	if s := res.A.set; s != nil {
		as, aAcct, aID = s.Devices, s.Account, s.AccountID
	}
	if s := res.B.set; s != nil {
		bs, bAcct, bID = s.Devices, s.Account, s.AccountID
	}
	res.Added, res.Removed, res.Rekeyed = []Device{}, []Device{}, []Rekeyed{}
	for _, d := range bs {
		i := slices.IndexFunc(as, func(o api.Device) bool { return o.ID == d.ID })
		switch {
		case i < 0:
			res.Added = append(res.Added, decodeDevice(d))
		case as[i].SigningKey != d.SigningKey || as[i].Suite != d.Suite || !bytes.Equal(as[i].HPKEKey, d.HPKEKey):
			res.Rekeyed = append(res.Rekeyed, Rekeyed{Old: decodeDevice(as[i]), New: decodeDevice(d)})
		default:
			res.Unchanged++
		}
	}
	for _, d := range as {
		if !slices.ContainsFunc(bs, func(o api.Device) bool { return o.ID == d.ID }) {
			res.Removed = append(res.Removed, decodeDevice(d))
		}
	}
	res.AccountIDChanged = res.A.set != nil && res.B.set != nil && aID != bID
	switch {
	case aAcct == nil && bAcct == nil:
		res.AccountKey = AccountKeyUnchanged
	case aAcct == nil:
		res.AccountKey = AccountKeyAdded
	case bAcct == nil:
		res.AccountKey = AccountKeyRemoved
	case aAcct.Key != bAcct.Key:
		res.AccountKey = AccountKeyChanged
	default:
		res.AccountKey = AccountKeyUnchanged
	}
}

// suiteName names an HPKE suite (design.md 4.2) for people.
func suiteName(s api.HPKESuite) string {
	names := map[uint16]string{
		api.KEMP256HKDFSHA256: "P-256", api.KEMX25519HKDFSHA256: "X25519",
		api.KEMMLKEM768: "ML-KEM-768", api.KEMMLKEM768X25519: "MLKEM768-X25519",
	}
	kdfs := map[uint16]string{api.KDFHKDFSHA256: "HKDF-SHA256", api.KDFHKDFSHA384: "HKDF-SHA384", api.KDFHKDFSHA512: "HKDF-SHA512"}
	aeads := map[uint16]string{api.AEADAES128GCM: "AES-128-GCM", api.AEADAES256GCM: "AES-256-GCM", api.AEADChaCha20Poly1305: "ChaCha20Poly1305"}
	k, ok1 := names[s.KEM]
	f, ok2 := kdfs[s.KDF]
	a, ok3 := aeads[s.AEAD]
	if !ok1 || !ok2 || !ok3 {
		return s.String()
	}
	return k + "/" + f + "/" + a
}
