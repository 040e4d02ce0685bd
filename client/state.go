package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	fmtlog "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
)

// ErrState reports a persisted state that cannot be decoded.
var ErrState = errors.New("client: invalid persisted state")

// Trusted is the client's trusted state (design.md 16): the epoch checkpoint
// it last accepted and the epoch it verified under it. Every verification
// returns a new Trusted value that the client writes to durable storage
// before using the verified answer; the values are never modified in place.
type Trusted struct {
	// Checkpoint is the trusted epoch checkpoint: the signed note with its
	// cosignatures, as received.
	Checkpoint []byte
	// Size and Root are the checkpoint's tree size and root hash.
	Size uint64
	Root [32]byte
	// Epoch is the latest verified epoch record (number, timestamp, map
	// root): the checkpoint's last entry.
	Epoch api.EpochRecord
	// QuorumTime is the witness quorum time of the checkpoint (zero when
	// verified without witnesses), for freshness checks of answers that
	// reuse this epoch.
	QuorumTime time.Time
}

// trustedVersion is the first byte of a persisted Trusted.
const trustedVersion = 0x01

// maxPersistedNote bounds the checkpoint note in persisted state.
const maxPersistedNote = 1 << 16

// MarshalBinary encodes t for persistence:
//
//	u8 version (1) || epoch record (66 bytes, design.md 5.1)
//	|| i64 quorum time (Unix seconds, or the minimum int64 for none)
//	|| u32 length || checkpoint note
//
// Size and Root are not stored: they are read back from the note.
func (t *Trusted) MarshalBinary() ([]byte, error) {
	if len(t.Checkpoint) > maxPersistedNote {
		return nil, fmt.Errorf("%w: checkpoint note of %d bytes", ErrState, len(t.Checkpoint))
	}
	b := []byte{trustedVersion}
	b, _ = t.Epoch.AppendBinary(b)
	qt := int64(math.MinInt64)
	if !t.QuorumTime.IsZero() {
		qt = t.QuorumTime.Unix()
	}
	b = binary.BigEndian.AppendUint64(b, uint64(qt))
	b = binary.BigEndian.AppendUint32(b, uint32(len(t.Checkpoint)))
	return append(b, t.Checkpoint...), nil
}

// UnmarshalBinary decodes what MarshalBinary wrote. It checks that the
// encoding is complete and that the note's size is one more than the epoch
// record's log size; it does not verify signatures (the state was verified
// before it was written).
func (t *Trusted) UnmarshalBinary(b []byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: trusted state: %s", ErrState, fmt.Sprintf(format, args...))
	}
	const head = 1 + api.EpochRecordSize + 8 + 4
	if len(b) < head {
		return bad("truncated")
	}
	if b[0] != trustedVersion {
		return bad("unknown version %d", b[0])
	}
	rec, err := api.ParseEpochRecord(b[1 : 1+api.EpochRecordSize])
	if err != nil {
		return bad("%v", err)
	}
	qt := int64(binary.BigEndian.Uint64(b[1+api.EpochRecordSize:]))
	n := binary.BigEndian.Uint32(b[head-4:])
	if uint64(len(b)-head) != uint64(n) {
		return bad("checkpoint length %d, have %d bytes", n, len(b)-head)
	}
	raw := bytes.Clone(b[head:])
	text, err := noteText(raw)
	if err != nil {
		return bad("%v", err)
	}
	var cp fmtlog.Checkpoint
	if _, err := cp.Unmarshal([]byte(text)); err != nil || len(cp.Hash) != 32 {
		return bad("checkpoint does not parse")
	}
	if cp.Size == 0 || rec.LogSize != cp.Size-1 {
		return bad("epoch record log size %d does not match checkpoint size %d", rec.LogSize, cp.Size)
	}
	*t = Trusted{Checkpoint: raw, Size: cp.Size, Epoch: *rec}
	copy(t.Root[:], cp.Hash)
	if qt != math.MinInt64 {
		t.QuorumTime = time.Unix(qt, 0)
	}
	return nil
}

// noteText returns the text of a signed note without verifying anything.
func noteText(raw []byte) (string, error) {
	_, err := note.Open(raw, note.VerifierList())
	var u *note.UnverifiedNoteError
	if !errors.As(err, &u) {
		return "", fmt.Errorf("malformed checkpoint note: %w", err)
	}
	return u.Note.Text, nil
}

// monitorVersion is the first byte of a persisted MonitorState;
// monitorVersion2 adds the VRF rotation count (design.md 11.2), and is
// written only when it is not zero.
const (
	monitorVersion  = 0x01
	monitorVersion2 = 0x02
)

// maxKnownKeys bounds the known keys of a persisted MonitorState.
const maxKnownKeys = 4096

// MarshalBinary encodes s for persistence:
//
//	u8 version (1) || index (32) || u64 version || leaf hash (32)
//	|| u8 n || n authorizers (role, digest: 33 bytes each)
//	|| u32 length || device set encoding (empty for none)
//	|| u16 k || k known keys (32 bytes each)
//	[|| u32 VRF rotations, version 2 only: not zero]
func (s *MonitorState) MarshalBinary() ([]byte, error) {
	if len(s.Authorizers) > api.MaxAuthorizers || len(s.Known) > maxKnownKeys {
		return nil, fmt.Errorf("%w: monitor state too large", ErrState)
	}
	var set []byte
	if s.DeviceSet != nil {
		var err error
		if set, err = s.DeviceSet.MarshalBinary(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrState, err)
		}
	}
	b := []byte{monitorVersion}
	if s.VRFRotations > 0 {
		b[0] = monitorVersion2
	}
	b = append(b, s.Index[:]...)
	b = binary.BigEndian.AppendUint64(b, s.Version)
	b = append(b, s.LeafHash[:]...)
	b = append(b, byte(len(s.Authorizers)))
	for _, a := range s.Authorizers {
		b = append(b, byte(a.Role))
		b = append(b, a.Digest[:]...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(set)))
	b = append(b, set...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.Known)))
	for _, k := range s.Known {
		b = append(b, k[:]...)
	}
	if s.VRFRotations > 0 {
		b = binary.BigEndian.AppendUint32(b, s.VRFRotations)
	}
	return b, nil
}

// cutPrefix removes the first n bytes from *b and returns them, or
// returns nil and leaves *b alone if it holds fewer (or n < 0). The
// strict decoders of the client's state and envelopes read with it.
func cutPrefix(b *[]byte, n int) []byte {
	if n < 0 || len(*b) < n {
		return nil
	}
	r := (*b)[:n]
	*b = (*b)[n:]
	return r
}

// UnmarshalBinary decodes what MarshalBinary wrote, strictly.
func (s *MonitorState) UnmarshalBinary(b []byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: monitor state: %s", ErrState, fmt.Sprintf(format, args...))
	}
	take := func(n int) []byte { return cutPrefix(&b, n) }
	v := take(1)
	if v == nil || v[0] != monitorVersion && v[0] != monitorVersion2 {
		return bad("missing or unknown version")
	}
	var out MonitorState
	fixed := take(32 + 8 + 32 + 1)
	if fixed == nil {
		return bad("truncated")
	}
	copy(out.Index[:], fixed)
	out.Version = binary.BigEndian.Uint64(fixed[32:])
	copy(out.LeafHash[:], fixed[40:])
	n := int(fixed[72])
	if n > api.MaxAuthorizers {
		return bad("%d authorizers", n)
	}
	for i := range n {
		a := take(33)
		if a == nil {
			return bad("truncated authorizers")
		}
		au := api.Authorizer{Role: api.Role(a[0])}
		copy(au.Digest[:], a[1:])
		if au.Role != api.RoleDevice && au.Role != api.RoleAccount {
			return bad("authorizer %d has role %d", i, a[0])
		}
		if i > 0 {
			p := out.Authorizers[i-1]
			if p.Role > au.Role || p.Role == au.Role && bytes.Compare(p.Digest[:], au.Digest[:]) >= 0 {
				return bad("authorizers out of order")
			}
		}
		out.Authorizers = append(out.Authorizers, au)
	}
	l := take(4)
	if l == nil {
		return bad("truncated")
	}
	if m := binary.BigEndian.Uint32(l); m > 0 {
		set := take(int(min(m, math.MaxInt32)))
		if set == nil {
			return bad("truncated device set")
		}
		var err error
		if out.DeviceSet, err = api.ParseDeviceSet(set); err != nil {
			return bad("%v", err)
		}
	}
	k := take(2)
	if k == nil {
		return bad("truncated")
	}
	nk := int(binary.BigEndian.Uint16(k))
	if nk > maxKnownKeys {
		return bad("%d known keys", nk)
	}
	for i := range nk {
		key := take(32)
		if key == nil {
			return bad("truncated known keys")
		}
		kk := [32]byte(key)
		if i > 0 && bytes.Compare(out.Known[i-1][:], kk[:]) >= 0 {
			return bad("known keys out of order")
		}
		out.Known = append(out.Known, kk)
	}
	if v[0] == monitorVersion2 {
		r := take(4)
		if r == nil {
			return bad("truncated VRF rotations")
		}
		if out.VRFRotations = binary.BigEndian.Uint32(r); out.VRFRotations == 0 {
			return bad("version 2 with no VRF rotation")
		}
	}
	if len(b) != 0 {
		return bad("%d trailing bytes", len(b))
	}
	if (out.Version == 0) != (out.DeviceSet == nil) || out.Version == 0 && (out.LeafHash != [32]byte{} || len(out.Authorizers) != 0) {
		return bad("version %d does not match the record fields", out.Version)
	}
	*s = out
	return nil
}
