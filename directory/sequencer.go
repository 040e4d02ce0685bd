package directory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/internal/smt"
)

// request is one Enroll, Change or Recover call waiting for the sequencer.
type request struct {
	changes []*checked
	indices []uint64      // set before done is closed
	err     error         // set before done is closed
	done    chan struct{} // closed by the sequencer
}

func (r *request) finish(indices []uint64, err error) {
	r.indices, r.err = indices, err
	close(r.done)
}

// submit queues a validated request and waits for the sequencer's answer.
func (d *Directory) submit(ctx context.Context, changes []*checked) ([]uint64, error) {
	req := &request{changes: changes, done: make(chan struct{})}
	d.queueMu.Lock()
	switch {
	case d.closing:
		d.queueMu.Unlock()
		return nil, errorf(ErrUnavailable, "the directory is closing")
	case d.fatal.Load() != nil:
		d.queueMu.Unlock()
		return nil, wrapf(ErrUnavailable, *d.fatal.Load(), "the sequencer stopped")
	case d.queued+len(changes) > MaxQueuedChanges:
		d.queueMu.Unlock()
		return nil, errorf(ErrResourceExhausted, "%d changes are waiting to be logged; retry later", d.queued)
	}
	d.queue = append(d.queue, req)
	d.queued += len(changes)
	d.queueMu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	select {
	case <-req.done:
		return req.indices, req.err
	case <-ctx.Done():
		return nil, wrapf(ErrUnavailable, ctx.Err(), "gave up waiting for the log; the change may still be logged")
	}
}

// run is the sequencer. It alternates between committing groups of queued
// changes (group commit: payloads synced to the store, then one Append for
// the whole group) and closing epochs, and it is the only goroutine that
// appends to the log, so indices are predictable: after an Append returns,
// the next entry gets index d.size. While it waits for an epoch checkpoint
// nothing is appended (design.md 7); requests queue meanwhile.
//
// Any inconsistency between the log and the directory's view (an Append
// error, an unexpected index, a checkpoint of the wrong size) stops it:
// writes then fail with ErrUnavailable and lookups keep serving the last
// published epoch, until an operator restarts the directory, which
// re-reads the log.
func (d *Directory) run() {
	defer close(d.done)
	defer d.failQueued()
	for {
		if d.ctx.Err() != nil {
			return
		}
		if wait := d.untilEpoch(time.Now()); wait <= 0 {
			if err := d.closeEpoch(); err != nil {
				d.stop(err)
				return
			}
			continue
		}
		if group := d.takeGroup(); len(group) > 0 {
			if err := d.commitGroup(group); err != nil {
				d.stop(err)
				return
			}
			continue
		}
		t := time.NewTimer(d.untilEpoch(time.Now()))
		select {
		case <-d.wake:
		case <-t.C:
		case f := <-d.jobs:
			f()
		case <-d.ctx.Done():
		}
		t.Stop()
	}
}

// untilEpoch returns how long until the next epoch is due: at once if no
// epoch is being served, EpochInterval after the last one if changes are
// pending, HeartbeatInterval after it otherwise.
func (d *Directory) untilEpoch(now time.Time) time.Duration {
	if d.cur.Load() == nil {
		return 0
	}
	next := d.lastEpochAt.Add(d.cfg.HeartbeatInterval)
	if len(d.pending) > 0 {
		next = d.lastEpochAt.Add(d.cfg.EpochInterval)
	}
	return next.Sub(now)
}

// inSequencer runs f in the sequencer goroutine, between groups and epochs.
func (d *Directory) inSequencer(f func()) error {
	ran := make(chan struct{})
	select {
	case d.jobs <- func() { f(); close(ran) }:
		<-ran
		return nil
	case <-d.done:
		return errorf(ErrUnavailable, "the sequencer stopped")
	}
}

// stop records a fatal error.
func (d *Directory) stop(err error) {
	if errors.Is(err, context.Canceled) && d.ctx.Err() != nil {
		return // Close
	}
	d.fatal.Store(&err)
	d.logger.Error("directory: SEQUENCER STOPPED; writes are refused until a restart re-reads the log", "err", err)
}

// failQueued answers every queued request when the sequencer returns.
func (d *Directory) failQueued() {
	d.queueMu.Lock()
	q := d.queue
	d.queue, d.queued = nil, 0
	d.closing = true
	d.queueMu.Unlock()
	for _, r := range q {
		r.finish(nil, errorf(ErrUnavailable, "the sequencer stopped before logging the change"))
	}
}

// takeGroup takes queued requests, up to maxGroup changes, such that no VRF
// index appears twice in the group: the entries of one Append may be
// sequenced in any order, so two records of one handle go in separate
// Appends, which are ordered. A request that would repeat an index waits
// for the next group.
func (d *Directory) takeGroup() []*request {
	d.queueMu.Lock()
	defer d.queueMu.Unlock()
	seen := make(map[[32]byte]bool)
	var group, rest []*request
	n := 0
	for i, r := range d.queue {
		if n+len(r.changes) > maxGroup && n > 0 {
			rest = append(rest, d.queue[i:]...)
			break
		}
		dup := false
		for _, c := range r.changes {
			if seen[c.rec.Index] {
				dup = true
			}
		}
		if dup {
			// Later requests on any of its indices must wait too, so that
			// each index's records stay in request order.
			for _, c := range r.changes {
				seen[c.rec.Index] = true
			}
			rest = append(rest, r)
			continue
		}
		for _, c := range r.changes {
			seen[c.rec.Index] = true
		}
		group = append(group, r)
		n += len(r.changes)
	}
	d.queue = rest
	d.queued -= n
	return group
}

// current is the latest state of an index as the sequencer sees it.
type current struct {
	exists    bool
	hs        *api.HandleState // loaded lazily
	accountID [16]byte
}

// commitGroup checks each request against the latest state (compare and
// swap: the state the handler checked against must still be the latest,
// else the rules are re-run), stores the payloads (synced), appends the
// records in one call, stores the new handle state, and answers.
func (d *Directory) commitGroup(group []*request) error {
	var ok []*request
	var records [][]byte
	for _, r := range group {
		if err := d.recheck(r); err != nil {
			r.finish(nil, err)
			d.cfg.Metrics.ChangeRejected(kindOf(err))
			continue
		}
		ok = append(ok, r)
		for _, c := range r.changes {
			records = append(records, c.recBytes)
		}
	}
	if len(ok) == 0 {
		return nil
	}
	n := uint64(len(records))

	// 1. Payloads before the records: a record in the log always has its
	// opening and device set in the store. A crash after this batch and
	// before the append leaves unreferenced payloads, which are harmless
	// (keyed by a leaf hash that no log entry has).
	b := d.st.db.NewBatch()
	for _, r := range ok {
		for _, c := range r.changes {
			b.Set(payloadKey(c.leaf), encodePayload(&payload{record: c.recBytes, opening: c.opening, deviceSet: c.ds}), nil)
			if c.vrfNew {
				b.Set(handleKey(c.handle), encodeVRF(c.vrf), nil)
			}
		}
	}
	b.Set(keyInflight, u64(d.size+n), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("directory: storing payloads: %w", err)
	}

	// 2. Append. The context is not the requests': once handed to the log
	// the records may land whatever the callers do.
	idx, err := d.log.Append(context.WithoutCancel(d.ctx), records)
	if err != nil {
		for _, r := range ok {
			r.finish(nil, wrapf(ErrUnavailable, err, "appending to the log"))
		}
		return fmt.Errorf("directory: Append of %d change records failed; their fate is unknown: %w", n, err)
	}
	if err := checkDense(idx, d.size, n); err != nil {
		for _, r := range ok {
			r.finish(nil, errorf(ErrUnavailable, "the log assigned unexpected indices"))
		}
		return err
	}

	// 3. Handle state (not synced: replay rebuilds it from the log).
	b = d.st.db.NewBatch()
	k := 0
	for _, r := range ok {
		r.indices = make([]uint64, len(r.changes))
		for i, c := range r.changes {
			j := idx[k]
			k++
			r.indices[i] = j
			b.Set(stateKey(c.rec.Index), encodeHead(headState{version: c.rec.Version, leaf: c.leaf, logIndex: j}), nil)
			b.Set(historyKey(c.rec.Index, c.rec.Version), encodeHistory(historyEntry{leaf: c.leaf, logIndex: j}), nil)
			d.pending = append(d.pending, smt.Update{Key: c.rec.Index, Value: c.leaf})
		}
	}
	d.size += n
	b.Set(keyApplied, u64(d.size), nil)
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("directory: storing handle state: %w", err)
	}
	for _, r := range ok {
		close(r.done)
	}
	d.cfg.Metrics.ChangesAccepted(int(n))
	return nil
}

// checkDense checks that idx is a permutation of [size, size+n): the
// backend assigned every index, and nobody else appended.
func checkDense(idx []uint64, size, n uint64) error {
	if uint64(len(idx)) != n {
		return fmt.Errorf("directory: the log returned %d indices for %d entries", len(idx), n)
	}
	seen := make([]bool, n)
	for _, j := range idx {
		if j < size || j >= size+n || seen[j-size] {
			return fmt.Errorf("directory: the log assigned index %d, outside [%d, %d) or twice: another writer, or lost sequencing", j, size, size+n)
		}
		seen[j-size] = true
	}
	return nil
}

// recheck runs the state-dependent rules of a request's changes against
// the latest state. A change whose handler saw the latest state keeps the
// handler's verdict; others are checked again in full.
func (d *Directory) recheck(r *request) error {
	for i, c := range r.changes {
		h, exists, err := d.st.head(c.rec.Index)
		if err != nil {
			return wrapf(ErrUnavailable, err, "change %d", i)
		}
		if exists == c.prevExists && (!exists || h.leaf == c.prevLeaf) {
			if c.prevErr != nil {
				return annotate(i, c, c.prevErr)
			}
			continue
		}
		prev, err := d.loadPrev(c.rec.Index)
		if err != nil {
			return annotate(i, c, err)
		}
		if err := d.checkState(c, prev); err != nil {
			return annotate(i, c, err)
		}
	}
	return nil
}

// closeEpoch appends the next epoch record, waits for its checkpoint and
// makes it the served epoch (design.md 7).
func (d *Directory) closeEpoch() error {
	start := time.Now()
	nChanges := len(d.pending)
	root, err := d.m.Apply(d.pending)
	if err != nil {
		return fmt.Errorf("directory: applying %d changes to the map: %w", nChanges, err)
	}
	snap := d.m.Snapshot()
	// Check the map took every update (the last one per key wins).
	last := make(map[[32]byte][32]byte, len(d.pending))
	for _, u := range d.pending {
		last[u.Key] = u.Value
	}
	for k, v := range last {
		if got, ok := snap.Get(k); !ok || got != v {
			return fmt.Errorf("directory: the map lost the update of %x", k)
		}
	}
	ts := max(uint64(start.UnixMilli()), d.lastTS)
	rec := &api.EpochRecord{Epoch: d.nextEpoch, Timestamp: ts, LogSize: d.size, MapRoot: root, MapSize: snap.Len()}
	raw, _ := rec.MarshalBinary()
	if err := d.st.db.Set(keyInflight, u64(d.size+1), pebble.Sync); err != nil {
		return fmt.Errorf("directory: store: %w", err)
	}
	idx, err := d.log.Append(context.WithoutCancel(d.ctx), [][]byte{raw})
	if err != nil {
		return fmt.Errorf("directory: Append of epoch record %d failed; its fate is unknown: %w", rec.Epoch, err)
	}
	if len(idx) != 1 || idx[0] != d.size {
		return fmt.Errorf("directory: epoch record %d says log size %d but the log put it at index %v", rec.Epoch, d.size, idx)
	}
	i := d.size
	d.size++
	d.nextEpoch++
	d.lastTS = ts
	d.lastEpochAt = start
	d.pending = nil

	// Nothing is appended until the checkpoint of size exactly i+1.
	cpRaw, err := d.log.Await(d.ctx, i)
	if err != nil {
		return fmt.Errorf("directory: waiting for the checkpoint of epoch %d: %w", rec.Epoch, err)
	}
	cp, err := d.parseCheckpoint(cpRaw)
	if err != nil {
		return fmt.Errorf("directory: checkpoint of epoch %d: %w", rec.Epoch, err)
	}
	if cp.Size != i+1 {
		return fmt.Errorf("directory: the checkpoint after epoch record %d has size %d, want exactly %d: another writer", rec.Epoch, cp.Size, i+1)
	}
	var incl [][]byte
	for attempt := 0; ; attempt++ {
		incl, err = d.log.InclusionProof(d.ctx, i, i+1)
		if err == nil || attempt == 3 || d.ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond << attempt)
	}
	if err != nil {
		return fmt.Errorf("directory: inclusion proof of epoch record %d: %w", rec.Epoch, err)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, i+1, rfc6962.DefaultHasher.HashLeaf(raw), incl, cp.Hash); err != nil {
		return fmt.Errorf("directory: the log's inclusion proof of epoch record %d does not verify: %w", rec.Epoch, err)
	}
	meta := &epochMeta{record: raw, logIndex: i, checkpoint: cpRaw, inclusion: incl}
	b := d.st.db.NewBatch()
	for k, v := range last {
		b.Set(leafKey(k), bytes.Clone(v[:]), nil)
	}
	b.Set(keyEpoch, encodeEpochMeta(meta), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("directory: storing epoch %d: %w", rec.Epoch, err)
	}
	ep, err := d.newEpoch(meta, snap)
	if err != nil {
		return err
	}
	d.cur.Store(ep)
	d.cfg.Metrics.EpochClosed(rec.Epoch, nChanges, time.Since(start))
	d.logger.Debug("directory: epoch closed", "epoch", rec.Epoch, "log_size", i+1, "changes", nChanges, "handles", rec.MapSize, "took", time.Since(start))
	return nil
}
