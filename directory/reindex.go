package directory

import (
	"bytes"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/smt"
	"github.com/keytrans/kt/vrf"
)

// Rotation of the VRF key and re-indexing (design.md 11.2). After the
// kind-2 rotation record, ktd moves every registered handle at once, before
// the handover epoch: one move entry per handle (api.MoveEntry), in
// appends of moveChunk entries. The store keeps, per handle:
//
//	'h' handle -> index || proof under the current VRF key
//	'o' handle -> index || proof of the index its latest record sits at,
//	              when that is an index under an earlier key (a record
//	              moved and not changed since); lookups send the proof
//	              as record_vrf_proof.
//	'm' "reindexed" -> u64: the sequence of the last VRF rotation whose
//	              moves are all appended.
//
// The new index gets the old index's state ('s') and history ('v'), so
// Monitor at the new index serves the whole chain, records at the old
// index first.
const (
	pfxOldVRF = 'o'
	moveChunk = 1024
)

var keyReindexed = []byte("mreindexed")

func oldVRFKey(handle string) []byte { return append([]byte{pfxOldVRF}, handle...) }

// vrfState is the directory's VRF keys: cur proves lookups of epochs from
// the rotation record at log index at on; prev, the key before it (nil
// before any VRF rotation), proves lookups of earlier epochs and the
// fallback of absent handles.
type vrfState struct {
	cur, prev *vrf.PrivateKey
	at        uint64
	seq       uint64
}

// vrfKeys returns the current VRF state.
func (d *Directory) vrfKeys() *vrfState {
	if s := d.vrfs.Load(); s != nil {
		return s
	}
	return &vrfState{cur: d.cfg.VRFKey}
}

// setupVRF picks the VRF keys for the log's VRF rotation chain among the
// configured ones (VRFKey, NextVRFKey, PrevVRFKey), after the replay.
//
// SPEC(design.md 11.2)
func (d *Directory) setupVRF() error {
	d.rot.mu.RLock()
	var last *rotation
	for _, r := range d.rot.list {
		if r.rec.Kind == api.KeyVRF {
			last = r
		}
	}
	d.rot.mu.RUnlock()
	if last == nil {
		d.vrfs.Store(&vrfState{cur: d.cfg.VRFKey})
		return nil
	}
	find := func(pub [32]byte) *vrf.PrivateKey {
		for _, k := range []*vrf.PrivateKey{d.cfg.VRFKey, d.cfg.NextVRFKey, d.cfg.PrevVRFKey} {
			if k != nil && bytes.Equal(k.Public().Bytes(), pub[:]) {
				return k
			}
		}
		return nil
	}
	cur, prev := find(last.rec.NewKey), find(last.rec.OldKey)
	switch {
	case cur == nil:
		return fmt.Errorf("directory: the log's current VRF key (rotation %d) is none of the configured VRF keys", last.rec.Sequence)
	case prev == nil:
		return fmt.Errorf("directory: the VRF key before rotation %d is not configured (directory.vrf_prev_key_file): it proves the absence of handles under the old key (design.md 11.2)", last.rec.Sequence)
	}
	d.vrfs.Store(&vrfState{cur: cur, prev: prev, at: last.logIndex, seq: last.rec.Sequence})
	done, _, err := d.st.getU64(keyReindexed)
	if err != nil {
		return err
	}
	if done < last.rec.Sequence && d.repl == nil {
		// A restart in the middle of the moves: finish them. (A
		// replicated directory resumes them on the leader; not done yet.)
		return d.reindex(last.rec.Sequence)
	}
	return nil
}

// moveItem is one handle to move.
type moveItem struct {
	handle   string
	old, new *vrfEntry
	head     headState
	// recProof is the proof of the index the latest record sits at, when
	// it is not the new index.
	recProof *vrfEntry
}

// reindex appends the moves of every registered handle not moved yet to
// its index under the current key and updates the store (design.md 11.2).
// It runs in the sequencer (or in New), with nothing else appending.
//
// SPEC(design.md 11.2): "moves every handle ... from its handle cache".
func (d *Directory) reindex(seq uint64) error {
	vs := d.vrfKeys()
	it, err := d.st.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxHandle}, UpperBound: []byte{pfxHandle + 1}})
	if err != nil {
		return fmt.Errorf("directory: store: %w", err)
	}
	var items []moveItem
	fix := d.st.db.NewBatch() // cache entries of handles whose move is already logged
	for it.First(); it.Valid(); it.Next() {
		handle := string(it.Key()[1:])
		old, err := decodeVRFEntry(handle, it.Value())
		if err != nil {
			it.Close()
			return err
		}
		idx, proof := vs.cur.Prove(api.VRFInput(handle))
		if old.index == idx {
			continue
		}
		nw := &vrfEntry{index: idx, proof: proof}
		if _, moved, err := d.st.head(idx); err != nil {
			it.Close()
			return err
		} else if moved {
			fix.Set(handleKey(handle), encodeVRF(nw), nil)
			continue
		}
		h, ok, err := d.st.head(old.index)
		if err != nil {
			it.Close()
			return err
		}
		if !ok {
			continue // cached, never logged
		}
		item := moveItem{handle: handle, old: old, new: nw, head: h, recProof: old}
		if p, ok, err := d.st.payload(h.leaf); err == nil && ok {
			if r, err := parsePayloadRecord(p); err == nil && r.Index != old.index {
				// Moved before and not changed since: the record's index
				// is still the earlier one.
				if e, ok, _ := d.oldVRF(handle); ok && e.index == r.Index {
					item.recProof = e
				}
			}
		}
		items = append(items, item)
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("directory: store: %w", err)
	}
	if err := fix.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("directory: store: %w", err)
	}
	for len(items) > 0 {
		n := min(len(items), moveChunk)
		if err := d.appendMoves(seq, items[:n]); err != nil {
			return err
		}
		items = items[n:]
	}
	if err := d.st.db.Set(keyReindexed, u64(seq), pebble.Sync); err != nil {
		return fmt.Errorf("directory: store: %w", err)
	}
	d.logger.Info("directory: re-indexing done", "rotation", seq)
	return nil
}

// appendMoves appends one chunk of moves and stores their effects.
func (d *Directory) appendMoves(seq uint64, items []moveItem) error {
	entries := make([][]byte, len(items))
	for i, m := range items {
		e, err := (&api.MoveEntry{Sequence: seq, OldIndex: m.old.index, NewIndex: m.new.index, Leaf: m.head.leaf}).MarshalBinary()
		if err != nil {
			return fmt.Errorf("directory: move of %s: %w", m.handle, err)
		}
		entries[i] = e
	}
	n := uint64(len(entries))
	if err := d.st.db.Set(keyInflight, u64(d.size+n), pebble.Sync); err != nil {
		return fmt.Errorf("directory: store: %w", err)
	}
	actx, err := d.appendContext()
	if err != nil {
		return err
	}
	idx, err := d.log.Append(actx, entries)
	if err != nil {
		return fmt.Errorf("directory: Append of %d move entries failed; their fate is unknown: %w", n, err)
	}
	if err := checkDense(idx, d.size, n); err != nil {
		return err
	}
	b := d.st.db.NewBatch()
	for _, m := range items {
		if err := d.copyHistory(b, m.old.index, m.new.index, m.head); err != nil {
			return err
		}
		b.Set(handleKey(m.handle), encodeVRF(m.new), nil)
		b.Set(oldVRFKey(m.handle), encodeVRF(m.recProof), nil)
		d.pending = append(d.pending, smt.Update{Key: m.new.index, Value: m.head.leaf})
	}
	d.size += n
	b.Set(keyApplied, u64(d.size), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("directory: store: %w", err)
	}
	return nil
}

// copyHistory gives the new index the old one's state and history.
func (d *Directory) copyHistory(b *pebble.Batch, old, nw [32]byte, h headState) error {
	b.Set(stateKey(nw), encodeHead(h), nil)
	for v := uint64(1); v <= h.version; v++ {
		e, ok, err := d.st.history(old, v)
		if err != nil {
			return err
		}
		if ok {
			b.Set(historyKey(nw, v), encodeHistory(e), nil)
		}
	}
	return nil
}

// oldVRF returns the stored proof of the index a handle's latest record
// sits at, when it is under an earlier key.
func (d *Directory) oldVRF(handle string) (*vrfEntry, bool, error) {
	v, ok, err := d.st.get(oldVRFKey(handle))
	if err != nil || !ok {
		return nil, false, err
	}
	e, err := decodeVRFEntry(handle, v)
	return e, err == nil, err
}

func decodeVRFEntry(handle string, v []byte) (*vrfEntry, error) {
	if len(v) != 32+vrf.ProofSize {
		return nil, fmt.Errorf("directory: store: VRF entry of %q has %d bytes", handle, len(v))
	}
	e := &vrfEntry{proof: bytes.Clone(v[32:])}
	copy(e.index[:], v[:32])
	return e, nil
}

// lookupReindexed completes a lookup answer after a VRF rotation (design.md
// 11.2): the proof of a moved record's index, or the fallback under the
// previous key when the handle's current index is absent. val is the
// map's value at the current index (nil: absent).
//
// SPEC(design.md 11.2): "record_vrf_proof", "the fallback".
func (d *Directory) lookupReindexed(ep *epoch, vs *vrfState, handle string, index [32]byte, val *[32]byte, res *ktpb.LookupResponse) error {
	if val != nil {
		rec, err := api.ParseChangeRecord(res.ChangeRecord)
		if err != nil || rec.Index == index {
			return nil
		}
		e, ok, err := d.oldVRF(handle)
		if err != nil {
			return wrapf(ErrUnavailable, err, "reading the VRF cache")
		}
		if !ok || e.index != rec.Index {
			old, proof := vs.prev.Prove(api.VRFInput(handle))
			if old != rec.Index {
				return errorf(ErrUnavailable, "the record at the index of %s is at an index the directory cannot prove", handle)
			}
			e = &vrfEntry{index: old, proof: proof}
		}
		res.RecordVrfProof = e.proof
		// The record's leaf at its own index, frozen since the move.
		p, _ := ep.snap.Prove(rec.Index)
		if res.PrevMapProof, err = p.MarshalBinary(); err != nil {
			return fmt.Errorf("directory: encoding a map proof: %w", err)
		}
		return nil
	}
	old, proof := vs.prev.Prove(api.VRFInput(handle))
	p, pval := ep.snap.Prove(old)
	mp, err := p.MarshalBinary()
	if err != nil {
		return fmt.Errorf("directory: encoding a map proof: %w", err)
	}
	res.PrevVrfProof, res.PrevMapProof = proof, mp
	if pval == nil {
		return nil
	}
	pl, err := d.payloadOf(*pval)
	if err != nil {
		return err
	}
	res.ChangeRecord, res.Opening, res.DeviceSet = pl.record, pl.opening[:], pl.deviceSet
	return nil
}

// replayMove applies a move entry met by New's replay to the handle state
// (the map is fed by the replayer): the new index gets the old index's
// state and history. The store's view of the old index must be committed.
func (d *Directory) replayMove(b *pebble.Batch, mv *api.MoveEntry) error {
	h, ok, err := d.st.head(mv.OldIndex)
	if err != nil {
		return err
	}
	if !ok || h.leaf != mv.Leaf {
		return fmt.Errorf("directory: the log moves index %x, whose latest record is not the move's", mv.OldIndex[:8])
	}
	return d.copyHistory(b, mv.OldIndex, mv.NewIndex, h)
}
