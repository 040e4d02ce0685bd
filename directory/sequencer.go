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
// changes and closing epochs, and it is the only goroutine that appends
// to the log, so indices are predictable: after an Append returns, the
// next entry gets index d.size. While it waits for an epoch checkpoint
// nothing is appended (design.md 7); requests queue meanwhile.
//
// Committing is a two-stage pipeline (see commit.go): while one group's
// records are being appended (d.flying), the next group is checked and its
// payloads are synced to the store (d.next), growing for as long as the
// append takes; it is appended once the first one has landed. At most one
// Append is in flight, so the log's order is the sequencer's order.
//
// Any inconsistency between the log and the directory's view (an Append
// error, an unexpected index, a checkpoint of the wrong size) stops it:
// writes then fail with ErrUnavailable and lookups keep serving the last
// published epoch, until an operator restarts the directory, which
// re-reads the log.
func (d *Directory) run() {
	defer close(d.done)
	defer d.failQueued()
	defer d.drain()
	for {
		if d.ctx.Err() != nil {
			return
		}
		wait := d.untilEpoch(time.Now())
		due := wait <= 0
		if due && d.flying == nil && d.next == nil {
			if err := d.closeEpoch(); err != nil {
				d.stop(err)
				return
			}
			d.draining = false
			continue
		}
		if d.flying == nil && d.next != nil {
			// A group launched once the epoch is due is the last one
			// before the epoch record: nothing more is prepared until
			// it lands, so the epoch cannot be starved. Groups prepared
			// while an earlier flight lands still join it.
			d.draining = due
			d.launch()
			continue
		}
		if room := maxGroup - d.next.size(); room > 0 && !d.draining {
			if group := d.takeGroup(d.next.indices(), room); len(group) > 0 {
				if err := d.prepare(group); err != nil {
					d.stop(err)
					return
				}
				continue
			}
		}
		if err := d.wait(wait); err != nil {
			d.stop(err)
			return
		}
	}
}

// wait blocks until there is something for the sequencer to do: the
// flight landed (it lands it), a request arrived, the next epoch is due
// (after wait; when it is already due, only the flight counts), a job,
// or Close.
func (d *Directory) wait(wait time.Duration) error {
	var landed <-chan struct{}
	if d.flying != nil {
		landed = d.flying.done
	}
	var due <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		due = t.C
	}
	select {
	case <-landed:
		return d.land()
	case <-d.wake:
	case <-due:
	case f := <-d.jobs:
		if err := d.flush(); err != nil {
			return err
		}
		f()
	case <-d.ctx.Done():
	}
	return nil
}

// untilEpoch returns how long until the next epoch is due: at once if no
// epoch is being served, EpochInterval after the last one if changes are
// pending, HeartbeatInterval after it otherwise.
//
// SPEC(design.md 7)
func (d *Directory) untilEpoch(now time.Time) time.Duration {
	if d.pub.Load() == nil {
		return 0
	}
	next := d.lastEpochAt.Add(d.cfg.HeartbeatInterval)
	if len(d.pending) > 0 || d.flying != nil || d.next != nil {
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
	d.haltOnce.Do(func() { close(d.halted) })
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

// takeGroup takes queued requests, up to room changes, such that no VRF
// index appears twice in the group or in exclude (the indices of the group
// it will join): the entries of one Append may be sequenced in any order,
// so two records of one handle go in separate Appends, which are ordered.
// A request that would repeat an index waits for the next group.
func (d *Directory) takeGroup(exclude map[[32]byte]bool, room int) []*request {
	d.queueMu.Lock()
	defer d.queueMu.Unlock()
	seen := make(map[[32]byte]bool, len(exclude))
	for k := range exclude {
		seen[k] = true
	}
	var group, rest []*request
	n := 0
	for i, r := range d.queue {
		if n+len(r.changes) > room && (n > 0 || room < maxGroup) {
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

// checkDense checks that idx is a permutation of [size, size+n): the
// backend assigned every index, and nobody else appended.
//
// SPEC(design.md 17)
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
		// SPEC(design.md 11.2 M4): a change checked against an index
		// under a VRF key rotated since would land at a frozen index.
		if c.vrfSeq != d.vrfKeys().seq {
			return annotate(i, c, errorf(ErrUnavailable, "the VRF key was rotated since the change was checked; look the handle up again and sign a new change"))
		}
		h, exists, err := d.head(c.rec.Index)
		if err != nil {
			return wrapf(ErrUnavailable, err, "change %d", i)
		}
		// A recovery is checked again in full: a rotation of the recovery
		// key (design.md 11.1) may have been logged since its handler
		// checked it.
		if exists == c.prevExists && (!exists || h.leaf == c.prevLeaf) && c.rec.Kind != api.AuthRecovery {
			if c.prevErr != nil {
				return annotate(i, c, c.prevErr)
			}
			continue
		}
		prev, err := d.loadPrevAt(c.rec.Index, h, exists)
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
// publishes it: it is served at once, or once audited with an audit
// policy (design.md 7, 14.3).
//
// SPEC(design.md 7)
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
	actx, err := d.appendContext()
	if err != nil {
		return fmt.Errorf("directory: epoch record %d not appended: %w", rec.Epoch, err)
	}
	idx, err := d.log.Append(actx, [][]byte{raw})
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
	d.handOver(meta, b)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("directory: storing epoch %d: %w", rec.Epoch, err)
	}
	ep, err := d.newEpoch(meta, snap)
	if err != nil {
		return err
	}
	d.publish(ep)
	if err := d.shareEpoch(meta); err != nil {
		return fmt.Errorf("directory: storing epoch %d in the shared table: %w", rec.Epoch, err)
	}
	d.cfg.Metrics.EpochClosed(rec.Epoch, nChanges, time.Since(start))
	d.logger.Debug("directory: epoch closed", "epoch", rec.Epoch, "log_size", i+1, "changes", nChanges, "handles", rec.MapSize, "took", time.Since(start))
	return nil
}
