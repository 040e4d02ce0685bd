package adversary

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/witness"
	"github.com/keytrans/kt/smt"
	"github.com/keytrans/kt/vrf"
)

// DirectoryConfig configures a [Directory].
type DirectoryConfig struct {
	// Origin is the log's origin; Log the log the directory writes (a
	// real backend: it signs and publishes checkpoints with its witness
	// policy); LogVKey its verifier key.
	Origin  string
	Log     log.Log
	LogVKey string
	// VRF and Recovery are the operator's VRF and recovery keys.
	VRF      *vrf.PrivateKey
	Recovery ed25519.PrivateKey
	// WitnessPolicy and AuditPolicy are published in the parameters
	// (design.md 11). With an audit policy, epochs are served only once
	// its auditors vouch for them (design.md 14.3), unless forced with
	// [Directory.Serve].
	WitnessPolicy, AuditPolicy string
	// EpochInterval and HeartbeatInterval are published in the parameters
	// only: epochs are closed by [Directory.CloseEpoch] (default 100 ms
	// and 300 ms).
	EpochInterval, HeartbeatInterval time.Duration
	// HTTPClient posts to the auditors (default: 10 s timeout);
	// AuditTimeout bounds how long [Directory.Audit] retries an auditor
	// that answers 503 (default 10 s).
	HTTPClient   *http.Client
	AuditTimeout time.Duration
	// Now is the clock of epoch timestamps (default time.Now).
	Now func() time.Time
}

// Directory is a dishonest directory: the operator, which holds the log,
// VRF and recovery keys, serving clients from a map it edits at will. It
// implements the Directory service methods clients use (GetParameters,
// Lookup, BatchLookup, Monitor with records_only, GetEpoch, Enroll and
// Change, which it checks like the honest directory) and the Log service,
// over the honest library parts: a real log, package smt for the map,
// package vrf for indices and package api for the records. Unlike the
// honest directory it also logs changes that break the rules
// ([Directory.AppendForged]), closes epochs whose map the log does not
// justify ([Directory.CloseEpoch] with overrides), and serves epochs its
// auditors refused to vouch for ([Directory.Serve]): the A11 operator.
//
// Epochs are closed only by CloseEpoch: there is no sequencer, so a
// scenario decides exactly what each epoch holds.
//
// Directory is safe for concurrent use; mu serialises the writers and
// guards the fields below it.
type Directory struct {
	ktpb.UnimplementedDirectoryServer
	ktpb.UnimplementedLogServer

	cfg      DirectoryConfig
	verifier note.Verifier
	audit    *witness.Policy // nil without audit policy
	recovery [32]byte

	mu       sync.Mutex
	m        *smt.Map
	pending  []smt.Update
	heads    map[[32]byte]*api.HandleState // the honest state per index
	payloads map[[32]byte]*Record          // by leaf hash
	size     uint64                        // entries appended
	lastTS   uint64
	epochs   []*Epoch
	served   *Epoch
}

// Record is a change record the directory knows the opening and device
// set of, logged (LogIndex valid) or not.
type Record struct {
	Handle    string
	Entry     []byte
	Change    *api.ChangeRecord
	Opening   [32]byte
	DeviceSet []byte
	Logged    bool
	LogIndex  uint64
}

// Leaf returns the record's leaf hash (its map value).
func (r *Record) Leaf() [32]byte { return api.LeafHash(r.Entry) }

// Epoch is a published epoch: its record, checkpoint and map, and what
// the auditors said about it.
type Epoch struct {
	Number   uint64
	Record   []byte
	LogIndex uint64
	// Published is the checkpoint note as the log published it (log
	// signature and witness cosignatures); Note is Published with the
	// valid audit statements collected so far.
	Published, Note []byte
	Inclusion       [][]byte
	// Audit holds the auditors' answers to the last [Directory.Audit].
	Audit []AuditAnswer
	// Audited reports whether the statements in Note satisfy the audit
	// policy.
	Audited bool

	snap *smt.Snapshot
}

// Size is the size of the epoch's checkpoint.
func (e *Epoch) Size() uint64 { return e.LogIndex + 1 }

// AuditAnswer is one auditor's last answer to POST /kt/v1/audit.
type AuditAnswer struct {
	Auditor string
	Status  int    // HTTP status, 0 if no answer
	Body    string // the answer (a statement line on 200, a reason otherwise) or the error
	Valid   bool   // a statement that verifies with the audit policy
}

// NewDirectory starts a dishonest directory on an empty log: it appends
// epoch record 0 with the empty map (design.md 7) and, without an audit
// policy, serves it.
func NewDirectory(ctx context.Context, cfg DirectoryConfig) (*Directory, error) {
	v, err := note.NewVerifier(cfg.LogVKey)
	if err != nil {
		return nil, fmt.Errorf("adversary: log key: %w", err)
	}
	if cfg.EpochInterval == 0 {
		cfg.EpochInterval = 100 * time.Millisecond
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = 300 * time.Millisecond
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.AuditTimeout == 0 {
		cfg.AuditTimeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m, err := smt.New(nil)
	if err != nil {
		return nil, err
	}
	d := &Directory{
		cfg: cfg, verifier: v, recovery: [32]byte(cfg.Recovery.Public().(ed25519.PublicKey)),
		m: m, heads: map[[32]byte]*api.HandleState{}, payloads: map[[32]byte]*Record{},
	}
	if cfg.AuditPolicy != "" {
		if d.audit, err = witness.ParseAuditPolicy([]byte(cfg.AuditPolicy)); err != nil {
			return nil, fmt.Errorf("adversary: audit policy: %w", err)
		}
	}
	if _, err := d.publish(ctx, nil); err != nil {
		return nil, err
	}
	return d, nil
}

// Index returns handle's canonical form and VRF index and proof.
func (d *Directory) Index(handle string) (string, [32]byte, []byte, error) {
	h, err := api.NormalizeHandle(handle)
	if err != nil {
		return "", [32]byte{}, nil, status.Errorf(codes.InvalidArgument, "handle: %v", err)
	}
	idx, p := d.cfg.VRF.Prove(api.VRFInput(h))
	return h, idx, p, nil
}

// Submit checks a change as the honest directory does (the record's
// index, the commitment and R7, the rules R1 to R6 against the latest
// honest record of the index), logs it and queues its map update for the
// next epoch. It returns the record's log index.
func (d *Directory) Submit(ctx context.Context, hc *ktpb.HandleChange) (uint64, error) {
	r, err := d.parse(hc)
	if err != nil {
		return 0, status.Error(codes.InvalidArgument, err.Error())
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := api.CheckChange(d.cfg.Origin, d.heads[r.Change.Index], r.Change, d.recovery); err != nil {
		return 0, status.Errorf(codes.PermissionDenied, "%v", err)
	}
	if err := d.appendLocked(ctx, r, true); err != nil {
		return 0, err
	}
	d.heads[r.Change.Index] = r.Change.State(r.Entry)
	return r.LogIndex, nil
}

// AppendForged logs hc without any check of the rules (the adversary's
// capability): a change the honest directory would refuse. With inMap its
// leaf is also the index's map value from the next epoch on; either way
// the directory's own notion of the index's latest honest record does not
// move, so the owner's later changes are still accepted by [Submit].
// The commitment must open (the directory serves the set).
func (d *Directory) AppendForged(ctx context.Context, hc *ktpb.HandleChange, inMap bool) (*Record, error) {
	r, err := d.parse(hc)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.appendLocked(ctx, r, inMap); err != nil {
		return nil, err
	}
	return r, nil
}

// Keep makes the directory know hc (its opening and device set) without
// logging it, so that a map override may point at it and lookups serve it:
// a record the log does not justify (A11, variant 2).
func (d *Directory) Keep(hc *ktpb.HandleChange) (*Record, error) {
	r, err := d.parse(hc)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.payloads[r.Leaf()] = r
	return r, nil
}

// parse checks what the directory must know to serve hc: the handle's
// index, and that the opening and set open the commitment.
func (d *Directory) parse(hc *ktpb.HandleChange) (*Record, error) {
	h, idx, _, err := d.Index(hc.GetHandle())
	if err != nil {
		return nil, err
	}
	rec, err := api.ParseChangeRecord(hc.GetChangeRecord())
	if err != nil {
		return nil, err
	}
	if rec.Index != idx {
		return nil, fmt.Errorf("adversary: the record's index is not %s's", h)
	}
	if len(hc.GetOpening()) != 32 {
		return nil, errors.New("adversary: opening of the wrong size")
	}
	if _, err := api.OpenCommitment(rec, [32]byte(hc.GetOpening()), hc.GetDeviceSet()); err != nil {
		return nil, err
	}
	return &Record{Handle: h, Entry: hc.GetChangeRecord(), Change: rec, Opening: [32]byte(hc.GetOpening()), DeviceSet: hc.GetDeviceSet()}, nil
}

// appendLocked logs r as the next entry and, with inMap, queues its map
// update.
func (d *Directory) appendLocked(ctx context.Context, r *Record, inMap bool) error {
	i, err := d.appendEntryLocked(ctx, r.Entry)
	if err != nil {
		return err
	}
	r.Logged, r.LogIndex = true, i
	d.payloads[r.Leaf()] = r
	if inMap {
		d.pending = append(d.pending, smt.Update{Key: r.Change.Index, Value: r.Leaf()})
	}
	return nil
}

// appendEntryLocked appends entry at the next index.
func (d *Directory) appendEntryLocked(ctx context.Context, entry []byte) (uint64, error) {
	idx, err := d.cfg.Log.Append(ctx, [][]byte{entry})
	if err != nil {
		return 0, status.Errorf(codes.Unavailable, "append: %v", err)
	}
	if len(idx) != 1 || idx[0] != d.size {
		return 0, fmt.Errorf("adversary: the log put entry %d at %v", d.size, idx)
	}
	d.size++
	return idx[0], nil
}

// Point returns the map override that makes index's value the leaf of r
// (an honest record, a forged one, or one the log never saw).
func Point(r *Record) smt.Update { return smt.Update{Key: r.Change.Index, Value: r.Leaf()} }

// CloseEpoch publishes the next epoch: the map gets the queued updates of
// the logged changes, then overrides (the edits the log does not
// justify); its root goes into the epoch record, which is logged and
// published. Without an audit policy the epoch is served at once; with
// one, it is served when [Directory.Audit] gets the policy's statements
// (the epoch's Audit and Audited tell). The error is about publication
// only.
func (d *Directory) CloseEpoch(ctx context.Context, overrides ...smt.Update) (*Epoch, error) {
	ep, err := d.publish(ctx, overrides)
	if err != nil || d.audit == nil {
		return ep, err
	}
	d.Audit(ctx, ep)
	return ep, nil
}

// publish closes an epoch; without an audit policy it serves it.
func (d *Directory) publish(ctx context.Context, overrides []smt.Update) (*Epoch, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	root, err := d.m.Apply(append(d.pending, overrides...))
	if err != nil {
		return nil, err
	}
	snap := d.m.Snapshot()
	ts := max(uint64(d.cfg.Now().UnixMilli()), d.lastTS)
	rec := &api.EpochRecord{Epoch: uint64(len(d.epochs)), Timestamp: ts, LogSize: d.size, MapRoot: root, MapSize: snap.Len()}
	raw, err := rec.MarshalBinary()
	if err != nil {
		return nil, err
	}
	i, err := d.appendEntryLocked(ctx, raw)
	if err != nil {
		return nil, err
	}
	d.pending, d.lastTS = nil, ts
	cpRaw, err := d.cfg.Log.Await(ctx, i)
	if err != nil {
		return nil, fmt.Errorf("adversary: checkpoint of epoch %d: %w", rec.Epoch, err)
	}
	cp, _, err := log.ParseCheckpoint(cpRaw, d.cfg.Origin, d.verifier)
	if err != nil {
		return nil, err
	}
	if cp.Size != i+1 {
		return nil, fmt.Errorf("adversary: checkpoint of size %d after epoch record %d", cp.Size, i)
	}
	incl, err := d.cfg.Log.InclusionProof(ctx, i, i+1)
	if err != nil {
		return nil, err
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, i+1, rfc6962.DefaultHasher.HashLeaf(raw), incl, cp.Hash); err != nil {
		return nil, fmt.Errorf("adversary: inclusion of epoch record %d: %w", rec.Epoch, err)
	}
	ep := &Epoch{Number: rec.Epoch, Record: raw, LogIndex: i, Published: cpRaw, Note: cpRaw, Inclusion: incl, snap: snap}
	d.epochs = append(d.epochs, ep)
	if d.audit == nil {
		d.served = ep
	}
	return ep, nil
}

// Audit posts ep's published checkpoint to every auditor of the audit
// policy (POST URL/kt/v1/audit), retrying 503 answers, keeps the
// statements that verify with the policy and, if they satisfy it, serves
// ep (if newer than the served epoch). It returns the policy's verdict
// (a *witness.PolicyError when not satisfied); ep.Audit holds every
// auditor's answer.
func (d *Directory) Audit(ctx context.Context, ep *Epoch) error {
	if d.audit == nil {
		return errors.New("adversary: no audit policy")
	}
	auditors := d.audit.Witnesses()
	answers := make([]AuditAnswer, len(auditors))
	var wg sync.WaitGroup
	for i, a := range auditors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = d.ask(ctx, a, ep.Published)
		}()
	}
	wg.Wait()
	signed := bytes.Clone(ep.Published)
	for i := range answers {
		a := &answers[i]
		if a.Status != http.StatusOK {
			continue
		}
		line := a.Body
		if !strings.HasSuffix(line, "\n") {
			line += "\n"
		}
		cs, _ := d.audit.Check(append(bytes.Clone(ep.Published), line...))
		for _, c := range cs {
			a.Valid = a.Valid || c.Witness == a.Auditor
		}
		if a.Valid {
			signed = append(signed, line...)
		}
	}
	_, verdict := d.audit.Check(signed)
	d.mu.Lock()
	defer d.mu.Unlock()
	ep.Audit, ep.Note, ep.Audited = answers, signed, verdict == nil
	if ep.Audited && (d.served == nil || d.served.Number < ep.Number) {
		d.served = ep
	}
	return verdict
}

// ask posts note to one auditor until it answers other than 503 or the
// audit timeout passes.
func (d *Directory) ask(ctx context.Context, a *witness.Witness, body []byte) AuditAnswer {
	ans := AuditAnswer{Auditor: a.Name}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.AuditTimeout)
	defer cancel()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(a.URL, "/")+"/kt/v1/audit", bytes.NewReader(body))
		if err != nil {
			ans.Body = err.Error()
			return ans
		}
		req.Header.Set("Content-Type", "text/plain")
		resp, err := d.cfg.HTTPClient.Do(req)
		if err != nil {
			ans.Status, ans.Body = 0, err.Error()
			return ans
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		ans.Status, ans.Body = resp.StatusCode, string(b)
		if resp.StatusCode != http.StatusServiceUnavailable {
			return ans
		}
		wait := time.Second
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 && time.Duration(s)*time.Second < wait {
			wait = time.Duration(s) * time.Second
		}
		select {
		case <-ctx.Done():
			return ans
		case <-time.After(max(wait, 50*time.Millisecond)):
		}
	}
}

// Serve serves ep from now on, audited or not: the forcing path of a
// directory that shows clients an epoch its auditors did not vouch for
// (its note carries whatever valid statements it got).
func (d *Directory) Serve(ep *Epoch) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.served = ep
}

// Served returns the served epoch (nil before the first).
func (d *Directory) Served() *Epoch {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.served
}

// Epochs returns every published epoch, oldest first.
func (d *Directory) Epochs() []*Epoch {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*Epoch(nil), d.epochs...)
}

// current returns the served epoch, its note and its part for a client
// whose trusted checkpoint has size known (nil part when omit and the
// client holds it).
func (d *Directory) current(ctx context.Context, known uint64, omit bool) (*Epoch, *ktpb.EpochPart, error) {
	d.mu.Lock()
	ep := d.served
	var cpNote []byte
	if ep != nil {
		cpNote = ep.Note
	}
	d.mu.Unlock()
	switch {
	case ep == nil && d.audit != nil:
		return nil, nil, status.Error(codes.Unavailable, "no epoch audited by the audit policy yet")
	case ep == nil:
		return nil, nil, status.Error(codes.Unavailable, "no epoch yet")
	case known == ep.Size() && omit:
		return ep, nil, nil
	case known > ep.Size():
		return nil, nil, status.Errorf(codes.OutOfRange, "known size %d is beyond the epoch checkpoint's size %d", known, ep.Size())
	}
	part := &ktpb.EpochPart{Checkpoint: cpNote, EpochRecord: ep.Record, InclusionProof: ep.Inclusion, ConsistencyProof: [][]byte{}}
	if known > 0 && known < ep.Size() {
		p, err := d.cfg.Log.ConsistencyProof(ctx, known, ep.Size())
		if err != nil {
			return nil, nil, status.Errorf(codes.Unavailable, "consistency proof: %v", err)
		}
		part.ConsistencyProof = p
	}
	return ep, part, nil
}

// Record returns the record with leaf hash leaf that the directory knows
// (logged, forged or kept).
func (d *Directory) Record(leaf [32]byte) (*Record, error) { return d.payload(leaf) }

// payload returns the record under leaf.
func (d *Directory) payload(leaf [32]byte) (*Record, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.payloads[leaf]
	if !ok {
		return nil, status.Errorf(codes.Unavailable, "no record under %x", leaf[:4])
	}
	return r, nil
}

// GetParameters implements [ktpb.DirectoryServer].
func (d *Directory) GetParameters(context.Context, *ktpb.GetParametersRequest) (*ktpb.Parameters, error) {
	return &ktpb.Parameters{
		Origin: d.cfg.Origin, LogPublicKey: d.cfg.LogVKey, VrfPublicKey: d.cfg.VRF.Public().String(),
		RecoveryPublicKey: d.recovery[:], WitnessPolicy: d.cfg.WitnessPolicy, AuditPolicy: d.cfg.AuditPolicy,
		EpochIntervalMs:     uint64(d.cfg.EpochInterval.Milliseconds()),
		HeartbeatIntervalMs: uint64(d.cfg.HeartbeatInterval.Milliseconds()),
	}, nil
}

// GetRotations implements [ktpb.DirectoryServer]: this directory's log
// holds no key rotation record (design.md 11.1), so the list is empty.
func (d *Directory) GetRotations(context.Context, *ktpb.GetRotationsRequest) (*ktpb.Rotations, error) {
	return &ktpb.Rotations{}, nil
}

// GetEpoch implements [ktpb.DirectoryServer].
func (d *Directory) GetEpoch(ctx context.Context, req *ktpb.GetEpochRequest) (*ktpb.EpochPart, error) {
	_, part, err := d.current(ctx, req.GetKnownSize(), false)
	return part, err
}

// Lookup implements [ktpb.DirectoryServer].
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
	return res, nil
}

// BatchLookup implements [ktpb.DirectoryServer].
func (d *Directory) BatchLookup(ctx context.Context, req *ktpb.BatchLookupRequest) (*ktpb.BatchLookupResponse, error) {
	ep, part, err := d.current(ctx, req.GetKnownSize(), true)
	if err != nil {
		return nil, err
	}
	out := &ktpb.BatchLookupResponse{Epoch: part}
	for _, h := range req.GetHandles() {
		r, err := d.lookup(ep, h)
		if err != nil {
			return nil, err
		}
		out.Results = append(out.Results, r)
	}
	return out, nil
}

func (d *Directory) lookup(ep *Epoch, handle string) (*ktpb.LookupResponse, error) {
	h, idx, vp, err := d.Index(handle)
	if err != nil {
		return nil, err
	}
	p, val := ep.snap.Prove(idx)
	mp, err := p.MarshalBinary()
	if err != nil {
		return nil, err
	}
	res := &ktpb.LookupResponse{Handle: h, VrfProof: vp, MapProof: mp}
	if val == nil {
		return res, nil
	}
	r, err := d.payload(*val)
	if err != nil {
		return nil, err
	}
	res.ChangeRecord, res.Opening, res.DeviceSet = r.Entry, r.Opening[:], r.DeviceSet
	return res, nil
}

// Monitor implements [ktpb.DirectoryServer]: the chain of versions
// known+1 to the map's record, walked back from the map's value by the
// records' prev links (so it is the chain the map commits to, whatever
// else the log holds), each with its inclusion proof; with records_only,
// without openings and sets. A record of the chain that was never logged
// cannot be proven and fails the call.
func (d *Directory) Monitor(ctx context.Context, req *ktpb.MonitorRequest) (*ktpb.MonitorResponse, error) {
	if len(req.GetIndex()) != 32 {
		return nil, status.Error(codes.InvalidArgument, "index of the wrong size")
	}
	ep, part, err := d.current(ctx, req.GetKnownSize(), true)
	if err != nil {
		return nil, err
	}
	p, val := ep.snap.Prove([32]byte(req.GetIndex()))
	mp, err := p.MarshalBinary()
	if err != nil {
		return nil, err
	}
	res := &ktpb.MonitorResponse{Epoch: part, MapProof: mp}
	k := req.GetKnownVersion()
	if val == nil {
		if k > 0 {
			return nil, status.Errorf(codes.OutOfRange, "known version %d, but the index is absent", k)
		}
		return res, nil
	}
	for leaf := *val; ; {
		r, err := d.payload(leaf)
		if err != nil {
			return nil, err
		}
		if r.Change.Version <= k {
			break
		}
		if !r.Logged || r.LogIndex >= ep.Size() {
			return nil, status.Errorf(codes.Unavailable, "version %d is not in the log", r.Change.Version)
		}
		incl, err := d.cfg.Log.InclusionProof(ctx, r.LogIndex, ep.Size())
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "inclusion proof: %v", err)
		}
		mc := &ktpb.MonitoredChange{ChangeRecord: r.Entry, LogIndex: r.LogIndex, InclusionProof: incl}
		if !req.GetRecordsOnly() {
			mc.Opening, mc.DeviceSet = r.Opening[:], r.DeviceSet
		}
		res.Changes = append([]*ktpb.MonitoredChange{mc}, res.Changes...)
		if r.Change.Version == 1 {
			break
		}
		leaf = r.Change.Prev
	}
	return res, nil
}

// Enroll implements [ktpb.DirectoryServer]: any credential is accepted
// (the operator issues them anyway); the change is checked as Submit does.
func (d *Directory) Enroll(ctx context.Context, req *ktpb.EnrollRequest) (*ktpb.ChangeResponse, error) {
	i, err := d.Submit(ctx, req.GetChange())
	if err != nil {
		return nil, err
	}
	return &ktpb.ChangeResponse{LogIndices: []uint64{i}}, nil
}

// Change implements [ktpb.DirectoryServer]: each change as Submit does.
func (d *Directory) Change(ctx context.Context, req *ktpb.ChangeRequest) (*ktpb.ChangeResponse, error) {
	out := &ktpb.ChangeResponse{}
	for _, hc := range req.GetChanges() {
		i, err := d.Submit(ctx, hc)
		if err != nil {
			return nil, err
		}
		out.LogIndices = append(out.LogIndices, i)
	}
	return out, nil
}

// The Log service: the log as is.

// GetCheckpoint implements [ktpb.LogServer].
func (d *Directory) GetCheckpoint(ctx context.Context, _ *ktpb.GetCheckpointRequest) (*ktpb.Checkpoint, error) {
	cp, err := d.cfg.Log.Checkpoint(ctx)
	if err != nil {
		return nil, logStatus(err)
	}
	return &ktpb.Checkpoint{Note: cp}, nil
}

// GetEntries implements [ktpb.LogServer].
func (d *Directory) GetEntries(ctx context.Context, req *ktpb.GetEntriesRequest) (*ktpb.Entries, error) {
	if req.GetStart() >= req.GetEnd() {
		return nil, status.Error(codes.InvalidArgument, "empty range")
	}
	es, err := d.cfg.Log.Entries(ctx, req.GetStart(), min(req.GetEnd(), req.GetStart()+1024))
	if err != nil {
		return nil, logStatus(err)
	}
	return &ktpb.Entries{Entries: es}, nil
}

// GetInclusionProof implements [ktpb.LogServer].
func (d *Directory) GetInclusionProof(ctx context.Context, req *ktpb.GetInclusionProofRequest) (*ktpb.Proof, error) {
	if req.GetIndex() >= req.GetSize() {
		return nil, status.Error(codes.InvalidArgument, "index not below size")
	}
	p, err := d.cfg.Log.InclusionProof(ctx, req.GetIndex(), req.GetSize())
	if err != nil {
		return nil, logStatus(err)
	}
	return &ktpb.Proof{Hashes: p}, nil
}

// GetConsistencyProof implements [ktpb.LogServer].
func (d *Directory) GetConsistencyProof(ctx context.Context, req *ktpb.GetConsistencyProofRequest) (*ktpb.Proof, error) {
	if req.GetOldSize() == 0 || req.GetOldSize() > req.GetNewSize() {
		return nil, status.Error(codes.InvalidArgument, "consistency needs 0 < old <= new")
	}
	p, err := d.cfg.Log.ConsistencyProof(ctx, req.GetOldSize(), req.GetNewSize())
	if err != nil {
		return nil, logStatus(err)
	}
	return &ktpb.Proof{Hashes: p}, nil
}

func logStatus(err error) error {
	if errors.Is(err, log.ErrOutOfRange) {
		return status.Error(codes.OutOfRange, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

var (
	_ ktpb.DirectoryServer = (*Directory)(nil)
	_ ktpb.LogServer       = (*Directory)(nil)
)
