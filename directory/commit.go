package directory

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/keytrans/kt/smt"
)

// The commit pipeline. A group of requests goes through two stages, both
// driven by the sequencer goroutine:
//
//  1. prepare: the state-dependent rules are re-checked against the latest
//     state (the store, overlaid with the heads of the groups still in the
//     pipeline), and the payloads (opening, device set, record) are
//     written to the store and synced. Prepared groups accumulate in
//     d.next while the previous group is being appended, so the next
//     Append is as large as the load allows.
//  2. append: d.next becomes d.flying and its records are appended in one
//     Append call, in a goroutine of its own; when it returns the
//     sequencer lands it (checks the indices, stores the handle state,
//     answers the callers).
//
// So a payload is synced before its record is handed to the log, and a
// caller is answered only after both its payload and its record are
// durable: the guarantees of the serial version, with the payload store's
// fsync of one group overlapping the log's writes of the one before. Only
// one Append is in flight at a time, so the log's order is the order in
// which groups were prepared.

// batch is a group of requests going through the pipeline.
type batch struct {
	reqs    []*request
	records [][]byte
	heads   map[[32]byte][32]byte // index -> leaf hash of its record in this batch

	// Set by the append goroutine before done is closed.
	idx  []uint64
	err  error
	done chan struct{}
}

// size is the number of records in b (0 for nil).
func (b *batch) size() int {
	if b == nil {
		return 0
	}
	return len(b.records)
}

// indices is the set of indices b changes (nil for nil).
func (b *batch) indices() map[[32]byte]bool {
	if b == nil {
		return nil
	}
	m := make(map[[32]byte]bool, len(b.heads))
	for k := range b.heads {
		m[k] = true
	}
	return m
}

// head is the latest state of index as the sequencer sees it: its record
// in a batch still in the pipeline, else the store's.
func (d *Directory) head(index [32]byte) (headState, bool, error) {
	for _, b := range []*batch{d.next, d.flying} {
		if b == nil {
			continue
		}
		if leaf, ok := b.heads[index]; ok {
			return headState{leaf: leaf}, true, nil
		}
	}
	return d.st.head(index)
}

// prepare re-checks the requests of group, answers those that fail, and
// syncs the payloads of the others to the store, adding them to d.next.
// An error is a store failure; the group's requests are answered.
//
// SPEC(design.md 16)
func (d *Directory) prepare(group []*request) error {
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
	// Replicated: the payloads go to the shared table first, under the
	// lease (replicated.go).
	if reqErr, fatal := d.sharePayloads(ok); reqErr != nil {
		for _, r := range ok {
			r.finish(nil, reqErr)
		}
		return fatal
	}
	// Payloads before the records: a record in the log always has its
	// opening and device set in the store. A crash after this batch and
	// before the append leaves unreferenced payloads, which are harmless
	// (keyed by a leaf hash that no log entry has). The inflight mark is
	// the log size once everything in the pipeline is appended.
	wb := d.st.db.NewBatch()
	for _, r := range ok {
		for _, c := range r.changes {
			wb.Set(payloadKey(c.leaf), encodePayload(&payload{record: c.recBytes, opening: c.opening, deviceSet: c.ds}), nil)
			if c.vrfNew {
				wb.Set(handleKey(c.handle), encodeVRF(c.vrf), nil)
			}
		}
	}
	inflight := d.size + uint64(d.flying.size()+d.next.size()+len(records))
	wb.Set(keyInflight, u64(inflight), nil)
	if err := wb.Commit(pebble.Sync); err != nil {
		for _, r := range ok {
			r.finish(nil, wrapf(ErrUnavailable, err, "storing the change"))
		}
		return fmt.Errorf("directory: storing payloads: %w", err)
	}
	if d.next == nil {
		d.next = &batch{heads: make(map[[32]byte][32]byte)}
	}
	d.next.reqs = append(d.next.reqs, ok...)
	d.next.records = append(d.next.records, records...)
	for _, r := range ok {
		for _, c := range r.changes {
			d.next.heads[c.rec.Index] = c.leaf
		}
	}
	return nil
}

// launch starts appending d.next (there must be no flight).
func (d *Directory) launch() {
	b := d.next
	d.next, d.flying = nil, b
	b.done = make(chan struct{})
	go func() {
		defer close(b.done)
		// The context is not the requests': once handed to the log the
		// records may land whatever the callers do.
		ctx, err := d.appendContext()
		if err != nil {
			b.err = err
			return
		}
		b.idx, b.err = d.log.Append(ctx, b.records)
	}()
}

// land waits for the flight (if any), checks its indices, stores the
// handle state and answers its callers. An error stops the sequencer; the
// flight's callers are answered either way.
//
// SPEC(design.md 17)
func (d *Directory) land() error {
	b := d.flying
	if b == nil {
		return nil
	}
	<-b.done
	d.flying = nil
	n := uint64(len(b.records))
	if b.err != nil {
		for _, r := range b.reqs {
			r.finish(nil, wrapf(ErrUnavailable, b.err, "appending to the log"))
		}
		return fmt.Errorf("directory: Append of %d change records failed; their fate is unknown: %w", n, b.err)
	}
	if err := checkDense(b.idx, d.size, n); err != nil {
		for _, r := range b.reqs {
			r.finish(nil, errorf(ErrUnavailable, "the log assigned unexpected indices"))
		}
		return err
	}
	// Handle state (not synced: replay rebuilds it from the log).
	wb := d.st.db.NewBatch()
	k := 0
	for _, r := range b.reqs {
		r.indices = make([]uint64, len(r.changes))
		for i, c := range r.changes {
			j := b.idx[k]
			k++
			r.indices[i] = j
			h := headState{version: c.rec.Version, leaf: c.leaf, logIndex: j, rules: &headRules{authorizers: c.rec.Authorizers, accountID: c.account}}
			wb.Set(stateKey(c.rec.Index), encodeHead(h), nil)
			wb.Set(historyKey(c.rec.Index, c.rec.Version), encodeHistory(historyEntry{leaf: c.leaf, logIndex: j}), nil)
			d.pending = append(d.pending, smt.Update{Key: c.rec.Index, Value: c.leaf})
		}
	}
	d.size += n
	wb.Set(keyApplied, u64(d.size), nil)
	if err := wb.Commit(pebble.NoSync); err != nil {
		for _, r := range b.reqs {
			r.finish(nil, wrapf(ErrUnavailable, err, "storing the handle state"))
		}
		return fmt.Errorf("directory: storing handle state: %w", err)
	}
	for _, r := range b.reqs {
		close(r.done)
	}
	d.cfg.Metrics.ChangesAccepted(int(n))
	return nil
}

// flush empties the pipeline: it lands the flight, then appends and lands
// the prepared group.
func (d *Directory) flush() error {
	if err := d.land(); err != nil {
		return err
	}
	if d.next == nil {
		return nil
	}
	d.launch()
	return d.land()
}

// drain runs when the sequencer returns: a flight still lands (its
// records may be in the log), and the callers of a prepared group are
// told it was not logged (its payloads stay, unreferenced).
func (d *Directory) drain() {
	if err := d.land(); err != nil {
		d.logger.Error("directory: the last append failed", "err", err)
	}
	if d.next != nil {
		for _, r := range d.next.reqs {
			r.finish(nil, errorf(ErrUnavailable, "the sequencer stopped before logging the change"))
		}
		d.next = nil
	}
}
