package directory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/smt"
)

// epoch is a published epoch as lookups serve it. Immutable but for the
// consistency proof cache.
type epoch struct {
	record   *api.EpochRecord
	logIndex uint64
	size     uint64 // of the epoch checkpoint: logIndex + 1
	snap     *smt.Snapshot
	full     *ktpb.EpochPart // with an empty consistency proof; shared, never modified
	consMu   sync.Mutex
	cons     map[uint64][][]byte // consistency proofs by old size, bounded
}

// maxConsCache bounds the consistency proofs cached per epoch (clients
// typically hold one of the last few epoch checkpoints).
const maxConsCache = 256

func (d *Directory) newEpoch(m *epochMeta, snap *smt.Snapshot) (*epoch, error) {
	rec, err := api.ParseEpochRecord(m.record)
	if err != nil {
		return nil, fmt.Errorf("directory: epoch record: %w", err)
	}
	if snap.Root() != rec.MapRoot || snap.Len() != rec.MapSize {
		return nil, fmt.Errorf("directory: map (root %x) does not match epoch %d (root %x)", snap.Root(), rec.Epoch, rec.MapRoot)
	}
	return &epoch{
		record:   rec,
		logIndex: m.logIndex,
		size:     m.logIndex + 1,
		snap:     snap,
		full: &ktpb.EpochPart{
			Checkpoint:       m.checkpoint,
			EpochRecord:      m.record,
			InclusionProof:   m.inclusion,
			ConsistencyProof: [][]byte{},
		},
		cons: make(map[uint64][][]byte),
	}, nil
}

// current returns the served epoch and its part for a client whose
// trusted epoch checkpoint has size known (see part).
func (d *Directory) current(ctx context.Context, known uint64, omit bool) (*epoch, *ktpb.EpochPart, error) {
	ep := d.cur.Load()
	if ep == nil {
		if d.audit != nil && d.pub.Load() != nil {
			return nil, nil, d.notAudited()
		}
		return nil, nil, errorf(ErrUnavailable, "no epoch is published yet")
	}
	part, err := d.part(ctx, ep, known, omit)
	if err != nil {
		return nil, nil, err
	}
	return ep, part, nil
}

// part returns the epoch part for a client whose trusted epoch checkpoint
// has size known: nil if that is this epoch's (omit is true), the full part
// with a consistency proof from known otherwise (design.md 12.1).
//
// SPEC(design.md 12.1)
func (d *Directory) part(ctx context.Context, ep *epoch, known uint64, omit bool) (*ktpb.EpochPart, error) {
	switch {
	case known == ep.size && omit:
		return nil, nil
	case known > ep.size:
		return nil, d.behind(known, ep.size)
	case known == 0 || known == ep.size:
		return ep.full, nil
	}
	ep.consMu.Lock()
	p, ok := ep.cons[known]
	ep.consMu.Unlock()
	if !ok {
		var err error
		if p, err = d.log.ConsistencyProof(ctx, known, ep.size); err != nil {
			return nil, logErr(err, "consistency proof")
		}
		ep.consMu.Lock()
		if len(ep.cons) >= maxConsCache {
			clear(ep.cons)
		}
		ep.cons[known] = p
		ep.consMu.Unlock()
	}
	return &ktpb.EpochPart{
		Checkpoint:       ep.full.Checkpoint,
		EpochRecord:      ep.full.EpochRecord,
		InclusionProof:   ep.full.InclusionProof,
		ConsistencyProof: p,
	}, nil
}

// GetParameters implements [ktpb.DirectoryServer].
//
// SPEC(design.md 11.1): the parameters name the keys before any rotation;
// clients follow the rotations from them (GetRotations).
func (d *Directory) GetParameters(context.Context, *ktpb.GetParametersRequest) (*ktpb.Parameters, error) {
	rec := d.genesisKey(api.KeyRecovery, d.recovery)
	return &ktpb.Parameters{
		Origin:              d.cfg.Origin,
		LogPublicKey:        d.genesisLogKey(),
		VrfPublicKey:        d.cfg.VRFKey.Public().String(),
		RecoveryPublicKey:   bytes.Clone(rec[:]),
		WitnessPolicy:       d.cfg.WitnessPolicy,
		AuditPolicy:         string(d.cfg.AuditPolicy),
		EpochIntervalMs:     uint64(d.cfg.EpochInterval.Milliseconds()),
		HeartbeatIntervalMs: uint64(d.cfg.HeartbeatInterval.Milliseconds()),
	}, nil
}

// GetEpoch implements [ktpb.DirectoryServer]: always the full epoch part.
func (d *Directory) GetEpoch(ctx context.Context, req *ktpb.GetEpochRequest) (*ktpb.EpochPart, error) {
	_, part, err := d.current(ctx, req.GetKnownSize(), false)
	return part, err
}

// Lookup implements [ktpb.DirectoryServer] (design.md 12.1).
//
// SPEC(design.md 12.1)
func (d *Directory) Lookup(ctx context.Context, req *ktpb.LookupRequest) (*ktpb.LookupResponse, error) {
	ep, part, err := d.current(ctx, req.GetKnownSize(), true)
	if err != nil {
		return nil, err
	}
	res, err := d.lookup(ep, req.GetHandle())
	if err != nil {
		return nil, err
	}
	res.Epoch = part
	d.cfg.Metrics.Lookups(1)
	return res, nil
}

// BatchLookup implements [ktpb.DirectoryServer]: every result against one
// epoch, with one epoch part.
func (d *Directory) BatchLookup(ctx context.Context, req *ktpb.BatchLookupRequest) (*ktpb.BatchLookupResponse, error) {
	hs := req.GetHandles()
	switch {
	case len(hs) == 0:
		return nil, errorf(ErrInvalidArgument, "no handles")
	case len(hs) > MaxBatchLookup:
		return nil, errorf(ErrResourceExhausted, "%d handles in one batch, at most %d", len(hs), MaxBatchLookup)
	}
	ep, part, err := d.current(ctx, req.GetKnownSize(), true)
	if err != nil {
		return nil, err
	}
	out := &ktpb.BatchLookupResponse{Epoch: part, Results: make([]*ktpb.LookupResponse, len(hs))}
	for i, h := range hs {
		if out.Results[i], err = d.lookup(ep, h); err != nil {
			return nil, fmt.Errorf("handle %d: %w", i, err)
		}
	}
	d.cfg.Metrics.Lookups(len(hs))
	return out, nil
}

// lookup builds the handle-specific part of a lookup answer.
//
// SPEC(design.md 12.1)
func (d *Directory) lookup(ep *epoch, input string) (*ktpb.LookupResponse, error) {
	handle, err := normalize(input)
	if err != nil {
		return nil, err
	}
	vs := d.vrfKeys()
	var v *vrfEntry
	isNew := false
	if vs.prev != nil && ep.size <= vs.at {
		// SPEC(design.md 11.2): an epoch before the VRF rotation record
		// is answered under the previous key.
		index, proof := vs.prev.Prove(api.VRFInput(handle))
		v, vs = &vrfEntry{index: index, proof: proof}, &vrfState{cur: vs.prev}
	} else if v, isNew, err = d.vrfFor(handle); err != nil {
		return nil, err
	}
	p, val := ep.snap.Prove(v.index)
	if isNew && val != nil {
		d.cacheVRF(handle, v) // a replicated reader (replicated.go)
	}
	mp, err := p.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("directory: encoding a map proof: %w", err)
	}
	res := &ktpb.LookupResponse{Handle: handle, VrfProof: v.proof, MapProof: mp}
	if val != nil {
		pl, err := d.payloadOf(*val)
		if err != nil {
			return nil, err
		}
		res.ChangeRecord, res.Opening, res.DeviceSet = pl.record, pl.opening[:], pl.deviceSet
	}
	if vs.prev != nil {
		if err := d.lookupReindexed(ep, vs, handle, v.index, val, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// payloadOf returns the stored payload of the record with leaf hash leaf.
func (d *Directory) payloadOf(leaf [32]byte) (*payload, error) {
	p, ok, err := d.st.payload(leaf)
	if err != nil {
		return nil, wrapf(ErrUnavailable, err, "reading a record")
	}
	if !ok {
		return nil, errorf(ErrUnavailable, "the opening and device set of record %x are not in the store", leaf)
	}
	if api.LeafHash(p.record) != leaf {
		return nil, errorf(ErrUnavailable, "the stored record under %x has another leaf hash", leaf)
	}
	return p, nil
}

// Monitor implements [ktpb.DirectoryServer] (design.md 13): the epoch part,
// the map proof of the index, and every version after known_version up to
// the latest as of the epoch, with inclusion proofs in the epoch checkpoint.
// With records_only (contact monitoring, design.md 13.3) each change
// carries only its record, log index and inclusion proof, and anyone may
// ask. Without it the changes carry their openings and device sets, which
// only the handle's owner may read: the request must carry an
// authorization by a current authorizer of the index (design.md 13.4,
// [Directory.checkMonitorAuth]).
//
// SPEC(design.md 13)
// SPEC(design.md 13.3)
// SPEC(design.md 13.4)
func (d *Directory) Monitor(ctx context.Context, req *ktpb.MonitorRequest) (*ktpb.MonitorResponse, error) {
	if req.GetRecordsOnly() {
		return d.monitor(ctx, req, false, nil)
	}
	if len(req.GetIndex()) != 32 {
		return nil, errorf(ErrInvalidArgument, "index of %d bytes, want 32", len(req.GetIndex()))
	}
	if req.GetAuth() == nil {
		return nil, errorf(ErrUnauthenticated, "a Monitor request without records_only needs the owner's authorization (design.md 13.4); anyone may ask with records_only")
	}
	return d.monitor(ctx, req, true, func(latest *api.ChangeRecord) error {
		return checkMonitorAuth(d.cfg.Origin, req, latest, time.Now())
	})
}

// History implements [ktpb.OperatorServer]: Monitor's full answer, openings
// and device sets included, without the owner's authorization, for the
// operator's observer (ktctl diff, design.md 13.4). It is served on the
// operator's private listener only.
//
// SPEC(design.md 13.4)
func (d *Directory) History(ctx context.Context, req *ktpb.MonitorRequest) (*ktpb.MonitorResponse, error) {
	return d.monitor(ctx, req, true, nil)
}

// checkMonitorAuth checks the owner's authorization of a Monitor request
// (design.md 13.4) against the index's latest change record as of the
// served epoch, cheapest check first, so that a caller who is not an
// authorizer never costs a signature verification: the encoding, the
// timestamp within [api.MonitorAuthWindow] of now, the signer among the
// record's authorizers (a device key or the account key), and last the
// signature of [api.MonitorStatement] over this request. A missing,
// malformed, stale or badly signed authorization is ErrUnauthenticated; a
// signer that is not a current authorizer is ErrUnauthorized.
//
// SPEC(design.md 13.4)
func checkMonitorAuth(origin string, req *ktpb.MonitorRequest, latest *api.ChangeRecord, now time.Time) error {
	a := req.GetAuth()
	if len(a.GetSigner()) != 32 || len(a.GetSignature()) != 64 {
		return errorf(ErrUnauthenticated, "monitor authorization: signer of %d bytes and signature of %d bytes, want 32 and 64", len(a.GetSigner()), len(a.GetSignature()))
	}
	ts := a.GetTimestampMs()
	nowMs := now.UnixMilli()
	window := api.MonitorAuthWindow.Milliseconds()
	if ts > uint64(nowMs+window) {
		return errorf(ErrUnauthenticated, "monitor authorization: timestamp %d ms is more than %v ahead of the directory's clock (%d ms)", ts, api.MonitorAuthWindow, nowMs)
	}
	if int64(ts) < nowMs-window {
		return errorf(ErrUnauthenticated, "monitor authorization: timestamp %d ms is more than %v behind the directory's clock (%d ms); sign a fresh request", ts, api.MonitorAuthWindow, nowMs)
	}
	signer := [32]byte(a.GetSigner())
	if !api.HasAuthorizer(latest.Authorizers, api.RoleDevice, signer) && !api.HasAuthorizer(latest.Authorizers, api.RoleAccount, signer) {
		return errorf(ErrUnauthorized, "monitor authorization: signer %x is not a device or account key of the index's latest change record (version %d); only records_only answers are served to it", signer[:8], latest.Version)
	}
	msg := api.MonitorStatement(origin, [32]byte(req.GetIndex()), req.GetKnownVersion(), req.GetKnownSize(), ts)
	if !api.VerifyEd25519(signer, msg, [64]byte(a.GetSignature())) {
		return errorf(ErrUnauthenticated, "monitor authorization: the signature does not verify under signer %x over this origin, index, known version, known size and timestamp", signer[:8])
	}
	return nil
}

// monitor builds a Monitor answer: with openings and device sets if full.
// authorize, if set, is called with the index's latest change record before
// anything about the index's history is read; an index without a record in
// the served epoch has no history, and its answer (the absence proof) is
// the same with or without full.
func (d *Directory) monitor(ctx context.Context, req *ktpb.MonitorRequest, full bool, authorize func(*api.ChangeRecord) error) (*ktpb.MonitorResponse, error) {
	if len(req.GetIndex()) != 32 {
		return nil, errorf(ErrInvalidArgument, "index of %d bytes, want 32", len(req.GetIndex()))
	}
	index := [32]byte(req.GetIndex())
	ep, part, err := d.current(ctx, req.GetKnownSize(), true)
	if err != nil {
		return nil, err
	}
	p, val := ep.snap.Prove(index)
	mp, err := p.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("directory: encoding a map proof: %w", err)
	}
	res := &ktpb.MonitorResponse{Epoch: part, MapProof: mp, Rotations: d.rotationsBefore(ep.size)}
	k := req.GetKnownVersion()
	if val == nil {
		if k > 0 {
			return nil, errorf(ErrOutOfRange, "known version %d, but the index has no change record in epoch %d", k, ep.record.Epoch)
		}
		return res, nil
	}
	latest, err := d.payloadOf(*val)
	if err != nil {
		return nil, err
	}
	r, err := parsePayloadRecord(latest)
	if err != nil {
		return nil, wrapf(ErrUnavailable, err, "latest record")
	}
	if authorize != nil {
		if err := authorize(r); err != nil {
			return nil, err
		}
	}
	switch {
	case k > r.Version:
		return nil, errorf(ErrOutOfRange, "known version %d, but the latest in epoch %d is %d", k, ep.record.Epoch, r.Version)
	case r.Version-k > MaxMonitorChanges:
		return nil, errorf(ErrResourceExhausted, "%d versions since %d, more than %d in one answer", r.Version-k, k, MaxMonitorChanges)
	}
	for v := k + 1; v <= r.Version; v++ {
		h, ok, err := d.st.history(index, v)
		if err != nil {
			return nil, wrapf(ErrUnavailable, err, "history")
		}
		if !ok || h.logIndex >= ep.size || (v == r.Version && h.leaf != *val) {
			return nil, errorf(ErrUnavailable, "history of %x version %d is missing or inconsistent", index, v)
		}
		pl, err := d.payloadOf(h.leaf)
		if err != nil {
			return nil, err
		}
		incl, err := d.log.InclusionProof(ctx, h.logIndex, ep.size)
		if err != nil {
			return nil, logErr(err, "inclusion proof")
		}
		mc := &ktpb.MonitoredChange{
			ChangeRecord:   pl.record,
			LogIndex:       h.logIndex,
			InclusionProof: incl,
		}
		// SPEC(design.md 13.3): records_only answers carry no opening and
		// no device set, only what is public in the log.
		if full {
			mc.Opening, mc.DeviceSet = pl.opening[:], pl.deviceSet
		}
		res.Changes = append(res.Changes, mc)
	}
	return res, nil
}

// logErr maps a log error to a domain error.
func logErr(err error, what string) error {
	switch {
	case errors.Is(err, log.ErrOutOfRange):
		return wrapf(ErrOutOfRange, err, "%s", what)
	case errors.Is(err, log.ErrNoCheckpoint), errors.Is(err, log.ErrPushback), errors.Is(err, log.ErrClosed):
		return wrapf(ErrUnavailable, err, "%s", what)
	case errors.Is(err, log.ErrInvalidEntry):
		return wrapf(ErrInvalidArgument, err, "%s", what)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return wrapf(ErrUnavailable, err, "%s", what)
	}
	return fmt.Errorf("directory: %s: %w", what, err)
}

// The Log service mirrors log.Reader (design.md 10).

// maxEntriesPerCall bounds GetEntries, as the HTTP read API does.
const maxEntriesPerCall = 1024

// GetCheckpoint implements [ktpb.LogServer].
func (d *Directory) GetCheckpoint(ctx context.Context, _ *ktpb.GetCheckpointRequest) (*ktpb.Checkpoint, error) {
	cp, err := d.log.Checkpoint(ctx)
	if err != nil {
		return nil, logErr(err, "checkpoint")
	}
	return &ktpb.Checkpoint{Note: cp}, nil
}

// GetEntries implements [ktpb.LogServer]: at least one entry, at most 1024.
func (d *Directory) GetEntries(ctx context.Context, req *ktpb.GetEntriesRequest) (*ktpb.Entries, error) {
	start, end := req.GetStart(), req.GetEnd()
	if start >= end {
		return nil, errorf(ErrInvalidArgument, "empty or inverted range [%d, %d)", start, end)
	}
	end = min(end, start+maxEntriesPerCall)
	es, err := d.log.Entries(ctx, start, end)
	if err != nil {
		return nil, logErr(err, "entries")
	}
	return &ktpb.Entries{Entries: es}, nil
}

// GetInclusionProof implements [ktpb.LogServer].
func (d *Directory) GetInclusionProof(ctx context.Context, req *ktpb.GetInclusionProofRequest) (*ktpb.Proof, error) {
	if req.GetIndex() >= req.GetSize() {
		return nil, errorf(ErrInvalidArgument, "index %d not below size %d", req.GetIndex(), req.GetSize())
	}
	p, err := d.log.InclusionProof(ctx, req.GetIndex(), req.GetSize())
	if err != nil {
		return nil, logErr(err, "inclusion proof")
	}
	return &ktpb.Proof{Hashes: p}, nil
}

// GetConsistencyProof implements [ktpb.LogServer].
func (d *Directory) GetConsistencyProof(ctx context.Context, req *ktpb.GetConsistencyProofRequest) (*ktpb.Proof, error) {
	if req.GetOldSize() == 0 || req.GetOldSize() > req.GetNewSize() {
		return nil, errorf(ErrInvalidArgument, "consistency needs 0 < old <= new, got %d, %d", req.GetOldSize(), req.GetNewSize())
	}
	p, err := d.log.ConsistencyProof(ctx, req.GetOldSize(), req.GetNewSize())
	if err != nil {
		return nil, logErr(err, "consistency proof")
	}
	return &ktpb.Proof{Hashes: p}, nil
}

var (
	_ ktpb.DirectoryServer = (*Directory)(nil)
	_ ktpb.LogServer       = (*Directory)(nil)
	_ ktpb.OperatorServer  = (*Directory)(nil)
)
