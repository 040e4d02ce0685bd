package directory

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/log"
)

// Key rotation (design.md 11.1). The log holds the rotation records; the
// store keeps a copy of each ('r' || u64 log index -> record) and the
// handover epoch of each ('R' || u64 log index -> epochMeta): the first
// epoch closed after the record, whose checkpoint clients that still
// trust the old log key verify. Both are written by the sequencer (or by
// New's replay) and read by GetRotations.
const (
	pfxRotation = 'r'
	pfxHandover = 'R'
)

func rotationKey(pfx byte, logIndex uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{pfx}, logIndex)
}

// rotation is one rotation record of the log.
type rotation struct {
	logIndex uint64
	raw      []byte
	rec      *api.RotationRecord
	handover *epochMeta // nil until the first epoch after it is published
}

// rotations is the directory's view of the log's key rotations. mu guards
// every field; the sequencer (and New) write, handlers read.
type rotations struct {
	mu   sync.RWMutex
	list []*rotation
	// chains are the current keys by kind; a kind that was never rotated
	// has the key of the configuration, sequence 0.
	chains map[api.KeyKind]api.RotationChain
	// genesis are the keys before the first rotation of each kind: the
	// keys of the directory parameters (design.md 11), which clients
	// pin and follow the rotations from.
	genesis map[api.KeyKind][32]byte
}

// recoveryKey returns the current recovery key: rule R6 accepts only it
// (design.md 11.1).
func (d *Directory) recoveryKey() [32]byte {
	d.rot.mu.RLock()
	defer d.rot.mu.RUnlock()
	if c, ok := d.rot.chains[api.KeyRecovery]; ok {
		return c.Key
	}
	return d.recovery
}

// genesisKey returns the key of kind k before any rotation.
func (d *Directory) genesisKey(k api.KeyKind, configured [32]byte) [32]byte {
	d.rot.mu.RLock()
	defer d.rot.mu.RUnlock()
	if g, ok := d.rot.genesis[k]; ok {
		return g
	}
	return configured
}

// loadRotations reads the stored rotation records and handover epochs
// (New, before the replay adds the records the store does not have).
func (d *Directory) loadRotations() error {
	it, err := d.st.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxRotation}, UpperBound: []byte{pfxRotation + 1}})
	if err != nil {
		return fmt.Errorf("directory: store: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 9 {
			return fmt.Errorf("directory: store: rotation key of %d bytes", len(k))
		}
		j := binary.BigEndian.Uint64(k[1:])
		if err := d.addRotation(j, bytes.Clone(it.Value()), nil); err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("directory: store: %w", err)
	}
	for _, r := range d.rot.list {
		raw, ok, err := d.st.get(rotationKey(pfxHandover, r.logIndex))
		if err != nil {
			return err
		}
		if ok {
			if r.handover, err = decodeEpochMeta(raw); err != nil {
				return err
			}
		}
	}
	return nil
}

// addRotation records the rotation record raw at log index j (already in
// the log, or being appended by Rotate), after checking that it continues
// the chain of its kind; b, if not nil, receives the store write. A record
// that does not continue the chain means the log breaks design.md 11.1,
// which the directory never does: New fails.
//
// SPEC(design.md 11.1)
func (d *Directory) addRotation(j uint64, raw []byte, b *pebble.Batch) error {
	rec, err := api.ParseRotationRecord(raw)
	if err != nil {
		return fmt.Errorf("directory: rotation record at log index %d: %w", j, err)
	}
	d.rot.mu.Lock()
	defer d.rot.mu.Unlock()
	for _, r := range d.rot.list {
		if r.logIndex == j {
			if !bytes.Equal(r.raw, raw) {
				return fmt.Errorf("directory: the log's rotation record at index %d is not the stored one: the state belongs to another log", j)
			}
			return nil // loaded from the store, and replayed again
		}
	}
	if n := len(d.rot.list); n > 0 && d.rot.list[n-1].logIndex > j {
		return fmt.Errorf("directory: rotation record at log index %d after one at %d", j, d.rot.list[n-1].logIndex)
	}
	if d.rot.chains == nil {
		d.rot.chains = map[api.KeyKind]api.RotationChain{}
		d.rot.genesis = map[api.KeyKind][32]byte{}
	}
	c, ok := d.rot.chains[rec.Kind]
	if !ok {
		// The first rotation of its kind names the genesis key.
		c = api.RotationChain{Kind: rec.Kind, Key: rec.OldKey}
		d.rot.genesis[rec.Kind] = rec.OldKey
	}
	next, err := c.Next(d.cfg.Origin, rec, d.cfg.VerifyVRFProof)
	if err != nil {
		return fmt.Errorf("directory: the log's rotation record at index %d: %w", j, err)
	}
	d.rot.chains[rec.Kind] = next
	d.rot.list = append(d.rot.list, &rotation{logIndex: j, raw: raw, rec: rec})
	if b != nil {
		b.Set(rotationKey(pfxRotation, j), raw, nil)
	}
	return nil
}

// checkConfiguredKeys checks, after the replay, that the configured keys
// are the log's current keys: the recovery key is the current one, and the
// log signs with the current log key, or (between Rotate and the end of a
// rotation) with the old one while NextLogVerifierKey is the current one.
//
// SPEC(design.md 11.1)
func (d *Directory) checkConfiguredKeys() error {
	d.rot.mu.RLock()
	defer d.rot.mu.RUnlock()
	if c, ok := d.rot.chains[api.KeyRecovery]; ok && c.Key != d.recovery {
		return fmt.Errorf("directory: the configured recovery key %s is not the log's current recovery key %s (rotation %d): configure the new recovery public key",
			b64(d.recovery[:]), b64(c.Key[:]), c.Sequence)
	}
	c, ok := d.rot.chains[api.KeyLog]
	if !ok {
		return nil
	}
	cur := vkeyRaw(d.cfg.LogVerifierKey)
	next := vkeyRaw(d.cfg.NextLogVerifierKey)
	switch {
	case cur == c.Key:
		return nil
	case next == c.Key:
		// The rotation is appended and not yet finished: the log signs
		// with both keys.
		return nil
	}
	return fmt.Errorf("directory: the log's current signing key (rotation %d) is %s, which is neither the configured log key nor the configured next log key", c.Sequence, b64(c.Key[:]))
}

// handOver records meta, a published epoch, as the handover epoch of the
// rotations before it that have none (the sequencer, after closeEpoch).
func (d *Directory) handOver(meta *epochMeta, b *pebble.Batch) {
	d.rot.mu.Lock()
	defer d.rot.mu.Unlock()
	for _, r := range d.rot.list {
		if r.handover == nil && r.logIndex < meta.logIndex {
			r.handover = meta
			b.Set(rotationKey(pfxHandover, r.logIndex), encodeEpochMeta(meta), nil)
		}
	}
}

// Rotate implements [ktpb.OperatorServer]: it appends a rotation record
// signed by the old and the new key (design.md 11.1) and closes an epoch
// after it, whose checkpoint is the handover checkpoint. The record must
// continue the chain of its kind (sequence, old key, both proofs). A log
// key rotation needs the log to sign with the new key already
// (Config.NextLogVerifierKey, ktd's log.next_key_file): otherwise no
// checkpoint would carry the new key's signature and clients could not
// verify the next ones.
//
// SPEC(design.md 11.1)
func (d *Directory) Rotate(ctx context.Context, req *ktpb.RotateRequest) (*ktpb.RotateResponse, error) {
	if err := d.refuseWrite(); err != nil {
		return nil, err
	}
	raw := bytes.Clone(req.GetRecord())
	rec, err := api.ParseRotationRecord(raw)
	if err != nil {
		return nil, d.reject(wrapf(ErrInvalidArgument, err, "rotation record"))
	}
	if rec.Kind == api.KeyVRF && d.cfg.VerifyVRFProof == nil {
		return nil, d.reject(errorf(ErrInvalidArgument, "this directory cannot rotate its VRF key"))
	}
	// SPEC(design.md 11.2): the directory needs the new VRF private key
	// to move the handles; it is configured before the rotation.
	if rec.Kind == api.KeyVRF && (d.cfg.NextVRFKey == nil || !bytes.Equal(d.cfg.NextVRFKey.Public().Bytes(), rec.NewKey[:])) {
		return nil, d.reject(errorf(ErrInvalidArgument, "the new VRF key is not the directory's next VRF key: configure it (directory.vrf_next_key_file) and restart before rotating"))
	}
	if rec.Kind == api.KeyLog && (d.cfg.NextLogVerifierKey == "" || vkeyRaw(d.cfg.NextLogVerifierKey) != rec.NewKey) {
		return nil, d.reject(errorf(ErrInvalidArgument, "the new log key is not the log's next signing key: configure it (log.next_key_file) and restart before rotating"))
	}
	var (
		idx  uint64
		meta *epochMeta
		rerr error
	)
	err = d.inSequencer(func() {
		idx, meta, rerr = d.appendRotation(raw, rec)
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return nil, err
	}
	d.logger.Warn("directory: KEY ROTATED", "kind", rec.Kind.String(), "sequence", rec.Sequence, "log_index", idx)
	return &ktpb.RotateResponse{LogIndex: idx, Checkpoint: meta.checkpoint}, nil
}

// appendRotation runs in the sequencer, between groups: every change
// before it is in the log, and changes after it are checked against the
// new keys (recheck).
func (d *Directory) appendRotation(raw []byte, rec *api.RotationRecord) (uint64, *epochMeta, error) {
	d.rot.mu.RLock()
	c, ok := d.rot.chains[rec.Kind]
	d.rot.mu.RUnlock()
	if !ok {
		var cur [32]byte
		switch rec.Kind {
		case api.KeyLog:
			cur = vkeyRaw(d.cfg.LogVerifierKey)
		case api.KeyRecovery:
			cur = d.recovery
		case api.KeyVRF:
			copy(cur[:], d.cfg.VRFKey.Public().Bytes())
		}
		c = api.RotationChain{Kind: rec.Kind, Key: cur}
	}
	if _, err := c.Next(d.cfg.Origin, rec, d.cfg.VerifyVRFProof); err != nil {
		return 0, nil, d.reject(wrapf(ErrUnauthorized, err, "rotation record"))
	}
	// The append, like closeEpoch's: a failure stops the sequencer.
	fail := func(err error) (uint64, *epochMeta, error) {
		d.stop(err)
		return 0, nil, wrapf(ErrUnavailable, err, "appending the rotation record")
	}
	if err := d.st.db.Set(keyInflight, u64(d.size+1), pebble.Sync); err != nil {
		return fail(fmt.Errorf("directory: store: %w", err))
	}
	actx, err := d.appendContext()
	if err != nil {
		return fail(err)
	}
	idx, err := d.log.Append(actx, [][]byte{raw})
	if err != nil {
		return fail(fmt.Errorf("directory: Append of a rotation record failed; its fate is unknown: %w", err))
	}
	if len(idx) != 1 || idx[0] != d.size {
		return fail(fmt.Errorf("directory: the rotation record went to index %v, want %d", idx, d.size))
	}
	j := d.size
	d.size++
	b := d.st.db.NewBatch()
	if err := d.addRotation(j, raw, b); err != nil {
		return fail(err)
	}
	b.Set(keyApplied, u64(d.size), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fail(fmt.Errorf("directory: store: %w", err))
	}
	// SPEC(design.md 11.2): every handle moves before the handover epoch.
	if rec.Kind == api.KeyVRF {
		d.vrfs.Store(&vrfState{cur: d.cfg.NextVRFKey, prev: d.vrfKeys().cur, at: j, seq: rec.Sequence})
		if err := d.reindex(rec.Sequence); err != nil {
			return fail(err)
		}
	}
	// The handover epoch, at once.
	if err := d.closeEpoch(); err != nil {
		return fail(err)
	}
	d.rot.mu.RLock()
	defer d.rot.mu.RUnlock()
	for _, r := range d.rot.list {
		if r.logIndex == j {
			return j, r.handover, nil
		}
	}
	return fail(errors.New("directory: the rotation record vanished"))
}

// rotationsBefore returns the number of rotation records in the log's
// first size entries: Monitor's hint (design.md 13) to call GetRotations.
func (d *Directory) rotationsBefore(size uint64) uint64 {
	d.rot.mu.RLock()
	defer d.rot.mu.RUnlock()
	var n uint64
	for _, r := range d.rot.list {
		if r.logIndex < size {
			n++
		}
	}
	return n
}

// GetRotations implements [ktpb.DirectoryServer] (design.md 11.1): every
// rotation record whose handover epoch is published, in log order. A
// record below known_size comes with its inclusion proof in the tree of
// that size; a later one with its handover epoch part (consistency from
// known_size, or from the previous handover epoch of the answer) and its
// inclusion proof in the handover checkpoint's tree.
//
// SPEC(design.md 11.1)
func (d *Directory) GetRotations(ctx context.Context, req *ktpb.GetRotationsRequest) (*ktpb.Rotations, error) {
	known := req.GetKnownSize()
	ep := d.cur.Load()
	if ep == nil {
		return nil, errorf(ErrUnavailable, "no epoch is published yet")
	}
	if known > ep.size {
		return nil, errorf(ErrOutOfRange, "known size %d is beyond the served epoch's size %d", known, ep.size)
	}
	d.rot.mu.RLock()
	list := append([]*rotation(nil), d.rot.list...)
	hand := make([]*epochMeta, len(list))
	for i, r := range list {
		hand[i] = r.handover
	}
	d.rot.mu.RUnlock()
	out := &ktpb.Rotations{}
	prev := known
	for i, r := range list {
		if r.logIndex < known {
			incl, err := d.log.InclusionProof(ctx, r.logIndex, known)
			if err != nil {
				return nil, logErr(err, "inclusion proof of a rotation record")
			}
			out.Rotations = append(out.Rotations, &ktpb.Rotation{LogIndex: r.logIndex, Record: r.raw, InclusionProof: incl})
			continue
		}
		h := hand[i]
		if h == nil || h.logIndex+1 > ep.size {
			break // not handed over yet: it comes with a later answer
		}
		size := h.logIndex + 1
		var cons [][]byte
		if prev > 0 && prev < size {
			var err error
			if cons, err = d.log.ConsistencyProof(ctx, prev, size); err != nil {
				return nil, logErr(err, "consistency proof to a handover epoch")
			}
		}
		incl, err := d.log.InclusionProof(ctx, r.logIndex, size)
		if err != nil {
			return nil, logErr(err, "inclusion proof of a rotation record")
		}
		out.Rotations = append(out.Rotations, &ktpb.Rotation{
			LogIndex: r.logIndex,
			Record:   r.raw,
			Epoch: &ktpb.EpochPart{
				Checkpoint:       h.checkpoint,
				EpochRecord:      h.record,
				InclusionProof:   h.inclusion,
				ConsistencyProof: cons,
			},
			InclusionProof: incl,
		})
		prev = size
	}
	return out, nil
}

// vkeyRaw returns the Ed25519 key of a signed-note vkey
// "name+hash+base64(0x01 || key)", zero if it is not one.
func vkeyRaw(vkey string) (k [32]byte) {
	if _, err := note.NewVerifier(vkey); err != nil {
		return k
	}
	// Names never contain '+'; the base64 may.
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return k
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 33 || raw[0] != 0x01 {
		return k
	}
	return [32]byte(raw[1:])
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// genesisLogKey returns the log's vkey before any rotation.
func (d *Directory) genesisLogKey() string {
	cur := vkeyRaw(d.cfg.LogVerifierKey)
	if g := d.genesisKey(api.KeyLog, cur); g != cur {
		return log.Ed25519VerifierKey(d.cfg.Origin, g)
	}
	return d.cfg.LogVerifierKey
}
