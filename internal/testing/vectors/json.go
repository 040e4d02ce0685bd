package vectors

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/vrf"
)

// Hex is a byte string written as lowercase hex; every JSON field whose
// name ends in _hex holds one.
type Hex []byte

func (h Hex) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(h)) }

func (h *Hex) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	d, err := hex.DecodeString(s)
	if err != nil {
		return err
	}
	*h = d
	return nil
}

func hexes(bs [][]byte) []Hex {
	out := make([]Hex, len(bs))
	for i, b := range bs {
		out[i] = b
	}
	return out
}

func unhexes(hs []Hex) [][]byte {
	if hs == nil {
		return nil
	}
	out := make([][]byte, len(hs))
	for i, h := range hs {
		out[i] = h
	}
	return out
}

// Params are the directory parameters a client pins (design.md 11), with
// the client's freshness bound and clock skew made explicit.
type Params struct {
	Origin            string `json:"origin"`
	LogPublicKey      string `json:"log_public_key"`
	VRFPublicKey      string `json:"vrf_public_key"`
	RecoveryPublicKey Hex    `json:"recovery_public_key_hex"`
	WitnessPolicy     string `json:"witness_policy"`
	MaxAgeMS          int64  `json:"max_age_ms"`
	SkewMS            int64  `json:"skew_ms"`
	// AuditPolicy, when set, puts the client in audit mode (design.md
	// 14.1; the witness-policy grammar with "auditor NAME VKEY [URL]"
	// lines); MaxAuditLagMS is then its audit lag bound (12.2 step 2.5a).
	AuditPolicy   string `json:"audit_policy,omitempty"`
	MaxAuditLagMS int64  `json:"max_audit_lag_ms,omitempty"`
	// PrevVRFPublicKeys are the VRF keys before vrf_public_key in the
	// rotation chain the client holds, oldest first (design.md 11.2;
	// client.Params.PrevVRFKeys); absent before any VRF key rotation.
	PrevVRFPublicKeys []string `json:"prev_vrf_public_keys,omitempty"`
}

func paramsJSON(pb *ktpb.Parameters) Params {
	return Params{
		Origin: pb.GetOrigin(), LogPublicKey: pb.GetLogPublicKey(), VRFPublicKey: pb.GetVrfPublicKey(),
		RecoveryPublicKey: pb.GetRecoveryPublicKey(), WitnessPolicy: pb.GetWitnessPolicy(),
		MaxAgeMS: 60_000, SkewMS: 10_000,
	}
}

func (p Params) client() (*client.Params, error) {
	cp, err := client.NewParams(&ktpb.Parameters{
		Origin: p.Origin, LogPublicKey: p.LogPublicKey, VrfPublicKey: p.VRFPublicKey,
		RecoveryPublicKey: p.RecoveryPublicKey, WitnessPolicy: p.WitnessPolicy, AuditPolicy: p.AuditPolicy,
	}, client.Options{MaxAge: time.Duration(p.MaxAgeMS) * time.Millisecond, Skew: time.Duration(p.SkewMS) * time.Millisecond,
		MaxAuditLag: time.Duration(p.MaxAuditLagMS) * time.Millisecond})
	if err != nil {
		return nil, err
	}
	for _, k := range p.PrevVRFPublicKeys {
		pk, err := vrf.ParsePublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("%w: previous VRF key: %w", client.ErrInvalidParams, err)
		}
		cp.PrevVRFKeys = append(cp.PrevVRFKeys, pk)
	}
	return cp, nil
}

// Trusted is a client's trusted epoch (design.md 12.2 state T and E).
type Trusted struct {
	// Checkpoint is the trusted epoch checkpoint note, with cosignatures.
	Checkpoint string `json:"checkpoint"`
	// EpochRecord is the checkpoint's last entry.
	EpochRecord Hex `json:"epoch_record_hex"`
	// QuorumTime is the witness quorum time, Unix seconds.
	QuorumTime int64 `json:"quorum_time_unix"`
}

func trustedJSON(t *client.Trusted) *Trusted {
	if t == nil {
		return nil
	}
	return &Trusted{Checkpoint: string(t.Checkpoint), EpochRecord: must(t.Epoch.MarshalBinary()), QuorumTime: t.QuorumTime.Unix()}
}

func (t *Trusted) client() (*client.Trusted, error) {
	if t == nil {
		return nil, nil
	}
	// The persisted form (client/state.go) reads size and root back from
	// the note.
	b := []byte{0x01}
	b = append(b, t.EpochRecord...)
	b = binary.BigEndian.AppendUint64(b, uint64(t.QuorumTime))
	b = binary.BigEndian.AppendUint32(b, uint32(len(t.Checkpoint)))
	b = append(b, t.Checkpoint...)
	ct := new(client.Trusted)
	if err := ct.UnmarshalBinary(b); err != nil {
		return nil, err
	}
	return ct, nil
}

// EpochPart is ktpb.EpochPart (design.md 12.1).
type EpochPart struct {
	Checkpoint       string `json:"checkpoint"`
	EpochRecord      Hex    `json:"epoch_record_hex"`
	InclusionProof   []Hex  `json:"inclusion_proof_hex"`
	ConsistencyProof []Hex  `json:"consistency_proof_hex"`
}

func epochPartJSON(p *ktpb.EpochPart) *EpochPart {
	if p == nil {
		return nil
	}
	return &EpochPart{Checkpoint: string(p.GetCheckpoint()), EpochRecord: p.GetEpochRecord(),
		InclusionProof: hexes(p.GetInclusionProof()), ConsistencyProof: hexes(p.GetConsistencyProof())}
}

func (p *EpochPart) pb() *ktpb.EpochPart {
	if p == nil {
		return nil
	}
	return &ktpb.EpochPart{Checkpoint: []byte(p.Checkpoint), EpochRecord: p.EpochRecord,
		InclusionProof: unhexes(p.InclusionProof), ConsistencyProof: unhexes(p.ConsistencyProof)}
}

// LookupResponse is ktpb.LookupResponse (design.md 12.1).
type LookupResponse struct {
	Handle       string     `json:"handle"`
	VRFProof     Hex        `json:"vrf_proof_hex"`
	MapProof     Hex        `json:"map_proof_hex"`
	ChangeRecord Hex        `json:"change_record_hex"`
	Opening      Hex        `json:"opening_hex"`
	DeviceSet    Hex        `json:"device_set_hex"`
	Epoch        *EpochPart `json:"epoch"`
	// After a VRF key rotation (design.md 11.2; LookupResponse fields 8
	// to 10): a moved record's VRF proof under an earlier key, the
	// fallback's VRF proof under the previous key, and the map proof at
	// the record's (or the fallback's) index.
	RecordVRFProof Hex `json:"record_vrf_proof_hex,omitempty"`
	PrevVRFProof   Hex `json:"prev_vrf_proof_hex,omitempty"`
	PrevMapProof   Hex `json:"prev_map_proof_hex,omitempty"`
}

func lookupJSON(r *ktpb.LookupResponse) LookupResponse {
	return LookupResponse{Handle: r.GetHandle(), VRFProof: r.GetVrfProof(), MapProof: r.GetMapProof(),
		ChangeRecord: r.GetChangeRecord(), Opening: r.GetOpening(), DeviceSet: r.GetDeviceSet(), Epoch: epochPartJSON(r.GetEpoch()),
		RecordVRFProof: r.GetRecordVrfProof(), PrevVRFProof: r.GetPrevVrfProof(), PrevMapProof: r.GetPrevMapProof()}
}

func (r LookupResponse) pb() *ktpb.LookupResponse {
	return &ktpb.LookupResponse{Handle: r.Handle, VrfProof: r.VRFProof, MapProof: r.MapProof,
		ChangeRecord: r.ChangeRecord, Opening: r.Opening, DeviceSet: r.DeviceSet, Epoch: r.Epoch.pb(),
		RecordVrfProof: r.RecordVRFProof, PrevVrfProof: r.PrevVRFProof, PrevMapProof: r.PrevMapProof}
}

// MonitoredChange is ktpb.MonitoredChange (design.md 13).
type MonitoredChange struct {
	ChangeRecord   Hex    `json:"change_record_hex"`
	LogIndex       uint64 `json:"log_index"`
	InclusionProof []Hex  `json:"inclusion_proof_hex"`
	Opening        Hex    `json:"opening_hex"`
	DeviceSet      Hex    `json:"device_set_hex"`
}

// MonitorResponse is ktpb.MonitorResponse (design.md 13).
type MonitorResponse struct {
	Epoch    *EpochPart        `json:"epoch"`
	MapProof Hex               `json:"map_proof_hex"`
	Changes  []MonitoredChange `json:"changes"`
}

func monitorJSON(r *ktpb.MonitorResponse) MonitorResponse {
	m := MonitorResponse{Epoch: epochPartJSON(r.GetEpoch()), MapProof: r.GetMapProof(), Changes: []MonitoredChange{}}
	for _, c := range r.GetChanges() {
		m.Changes = append(m.Changes, MonitoredChange{ChangeRecord: c.GetChangeRecord(), LogIndex: c.GetLogIndex(),
			InclusionProof: hexes(c.GetInclusionProof()), Opening: c.GetOpening(), DeviceSet: c.GetDeviceSet()})
	}
	return m
}

func (r MonitorResponse) pb() *ktpb.MonitorResponse {
	m := &ktpb.MonitorResponse{Epoch: r.Epoch.pb(), MapProof: r.MapProof}
	for _, c := range r.Changes {
		m.Changes = append(m.Changes, &ktpb.MonitoredChange{ChangeRecord: c.ChangeRecord, LogIndex: c.LogIndex,
			InclusionProof: unhexes(c.InclusionProof), Opening: c.Opening, DeviceSet: c.DeviceSet})
	}
	return m
}

// Failure is the expected failure of a verification: the step of design.md
// 12.2/13 that fails (client.VerifyError.Step) and the error's name (the Go
// sentinel, for reference).
type Failure struct {
	Step  string `json:"step"`
	Error string `json:"error"`
}

var sentinelNames = []struct {
	err  error
	name string
}{
	{client.ErrInvalidParams, "ErrInvalidParams"}, {client.ErrMalformed, "ErrMalformed"},
	{client.ErrCheckpointSignature, "ErrCheckpointSignature"}, {client.ErrWitnessQuorum, "ErrWitnessQuorum"},
	{client.ErrAuditQuorum, "ErrAuditQuorum"}, {client.ErrRollback, "ErrRollback"},
	{client.ErrInconsistent, "ErrInconsistent"}, {client.ErrNotLatestEpoch, "ErrNotLatestEpoch"},
	{client.ErrEpochInclusion, "ErrEpochInclusion"}, {client.ErrStale, "ErrStale"},
	{client.ErrAuditLag, "ErrAuditLag"}, {client.ErrVRF, "ErrVRF"}, {client.ErrMapProof, "ErrMapProof"},
	{client.ErrRecordMismatch, "ErrRecordMismatch"}, {client.ErrCommitment, "ErrCommitment"},
	{client.ErrAuthorizers, "ErrAuthorizers"}, {client.ErrStrict, "ErrStrict"},
	{client.ErrUnusableKey, "ErrUnusableKey"}, {client.ErrMonitorGap, "ErrMonitorGap"},
	{client.ErrEnvelope, "ErrEnvelope"},
	{api.ErrInvalidHandle, "ErrInvalidHandle"}, {api.ErrMalformed, "ErrMalformed"},
	{api.ErrCommitment, "ErrCommitment"}, {api.ErrBadSignature, "ErrBadSignature"},
	{api.ErrUnauthorized, "ErrUnauthorized"},
}

// failure describes err; nil for nil.
func failure(err error) *Failure {
	if err == nil {
		return nil
	}
	f := &Failure{Error: "unknown"}
	for _, s := range sentinelNames {
		if errors.Is(err, s.err) {
			f.Error = s.name
			break
		}
	}
	var ve *client.VerifyError
	if errors.As(err, &ve) {
		f.Step = ve.Step
	}
	if f.Error == "unknown" {
		panic(fmt.Sprintf("vectors: error without a known sentinel: %v", err))
	}
	return f
}

// Device is api.Device.
type Device struct {
	ID         Hex    `json:"id_hex"`
	KEM        uint16 `json:"kem"`
	KDF        uint16 `json:"kdf"`
	AEAD       uint16 `json:"aead"`
	HPKEKey    Hex    `json:"hpke_public_key_hex"`
	SigningKey Hex    `json:"signing_key_hex"`
	// MessageKey is the message-signing key of format 0x02 (all zero for
	// a device without one); absent in format 0x01.
	MessageKey Hex    `json:"message_key_hex,omitempty"`
	Created    uint64 `json:"created_unix"`
}

// DeviceSet is api.DeviceSet (design.md 5.3).
type DeviceSet struct {
	// Format is 2 for format 0x02, absent for format 0x01.
	Format           uint8    `json:"format,omitempty"`
	AccountID        Hex      `json:"account_id_hex"`
	Devices          []Device `json:"devices"`
	AccountKey       Hex      `json:"account_key_hex,omitempty"`
	AccountSignature Hex      `json:"account_signature_hex,omitempty"`
}

func deviceSetJSON(s *api.DeviceSet) *DeviceSet {
	if s == nil {
		return nil
	}
	out := &DeviceSet{AccountID: s.AccountID[:], Devices: []Device{}}
	v2 := s.Format == api.DeviceSetV2
	if v2 {
		out.Format = 2
	}
	for _, d := range s.Devices {
		jd := Device{ID: d.ID[:], KEM: d.Suite.KEM, KDF: d.Suite.KDF, AEAD: d.Suite.AEAD,
			HPKEKey: d.HPKEKey, SigningKey: d.SigningKey[:], Created: d.Created}
		if v2 {
			jd.MessageKey = bytes.Clone(d.MessageKey[:])
		}
		out.Devices = append(out.Devices, jd)
	}
	if s.Account != nil {
		out.AccountKey, out.AccountSignature = s.Account.Key[:], s.Account.Signature[:]
	}
	return out
}

// Authorizer is api.Authorizer.
type Authorizer struct {
	Role   uint8 `json:"role"`
	Digest Hex   `json:"digest_hex"`
}

// ChangeRecord is api.ChangeRecord (design.md 5.1).
type ChangeRecord struct {
	Index       Hex          `json:"index_hex"`
	Version     uint64       `json:"version"`
	Commitment  Hex          `json:"commitment_hex"`
	Prev        Hex          `json:"prev_hex"`
	Kind        uint8        `json:"kind"`
	Authorizers []Authorizer `json:"authorizers"`
	Signer      Hex          `json:"signer_hex"`
	Signature   Hex          `json:"signature_hex"`
}

func changeRecordJSON(r *api.ChangeRecord) *ChangeRecord {
	out := &ChangeRecord{Index: r.Index[:], Version: r.Version, Commitment: r.Commitment[:], Prev: r.Prev[:],
		Kind: uint8(r.Kind), Authorizers: []Authorizer{}, Signer: r.Signer[:], Signature: r.Signature[:]}
	for _, a := range r.Authorizers {
		out.Authorizers = append(out.Authorizers, Authorizer{Role: uint8(a.Role), Digest: a.Digest[:]})
	}
	return out
}

// EpochRecord is api.EpochRecord (design.md 5.1).
type EpochRecord struct {
	Epoch       uint64 `json:"epoch"`
	TimestampMS uint64 `json:"timestamp_unix_ms"`
	LogSize     uint64 `json:"log_size"`
	MapRoot     Hex    `json:"map_root_hex"`
	MapSize     uint64 `json:"map_size"`
}

func epochRecordJSON(e *api.EpochRecord) *EpochRecord {
	return &EpochRecord{Epoch: e.Epoch, TimestampMS: e.Timestamp, LogSize: e.LogSize, MapRoot: e.MapRoot[:], MapSize: e.MapSize}
}

// RotationRecord is api.RotationRecord (design.md 5.1, 11.1, 11.2).
type RotationRecord struct {
	Kind     uint8  `json:"key_kind"`
	Sequence uint64 `json:"sequence"`
	OldKey   Hex    `json:"old_key_hex"`
	NewKey   Hex    `json:"new_key_hex"`
	OldProof Hex    `json:"old_proof_hex"`
	NewProof Hex    `json:"new_proof_hex"`
}

func rotationRecordJSON(r *api.RotationRecord) *RotationRecord {
	return &RotationRecord{Kind: uint8(r.Kind), Sequence: r.Sequence, OldKey: r.OldKey[:], NewKey: r.NewKey[:], OldProof: r.OldProof, NewProof: r.NewProof}
}

// MoveEntry is api.MoveEntry (design.md 11.2).
type MoveEntry struct {
	Sequence uint64 `json:"rotation_sequence"`
	OldIndex Hex    `json:"old_index_hex"`
	NewIndex Hex    `json:"new_index_hex"`
	Leaf     Hex    `json:"leaf_hex"`
}

func moveEntryJSON(m *api.MoveEntry) *MoveEntry {
	return &MoveEntry{Sequence: m.Sequence, OldIndex: m.OldIndex[:], NewIndex: m.NewIndex[:], Leaf: m.Leaf[:]}
}
