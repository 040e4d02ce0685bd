package adversary

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
)

// LookupRewrite rewrites one lookup answer of the honest directory. It
// receives the client's request and the honest answer (a copy it may
// modify) and returns what the client gets.
type LookupRewrite func(ctx context.Context, req *ktpb.LookupRequest, honest *ktpb.LookupResponse) (*ktpb.LookupResponse, error)

// Proxy is a malicious front end of the honest directory: a
// ktpb.DirectoryServer that forwards every call to Upstream and lets the
// adversary rewrite Lookup answers. With no rewrite set it is transparent,
// which the attack scenarios use as their control. It also records, per
// handle, every honest lookup answer it forwarded, so that it can replay an
// old one later (A3).
//
// Proxy is safe for concurrent use; mu guards the fields below it.
type Proxy struct {
	ktpb.UnimplementedDirectoryServer

	mu      sync.Mutex
	up      ktpb.DirectoryClient
	rewrite LookupRewrite
	history map[string][]*ktpb.LookupResponse // honest answers by canonical handle, oldest first
	frozen  *frozenView
	served  int // lookups answered while a rewrite or freeze was active
}

type frozenView struct {
	size    uint64                          // the frozen epoch checkpoint's size
	known   uint64                          // the client size the frozen epoch part was fetched for
	epoch   *ktpb.EpochPart                 // nil when known == size
	answers map[string]*ktpb.LookupResponse // by canonical handle, without epoch part
}

// NewProxy returns a transparent proxy in front of up.
func NewProxy(up ktpb.DirectoryClient) *Proxy {
	return &Proxy{up: up, history: map[string][]*ktpb.LookupResponse{}}
}

// SetUpstream points the proxy at another directory from now on: the
// operator replacing its directory by one serving a rewritten history
// under the same keys (A5).
func (p *Proxy) SetUpstream(up ktpb.DirectoryClient) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up = up
}

func (p *Proxy) upstream() ktpb.DirectoryClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.up
}

// SetRewrite installs f for every later Lookup (nil: transparent again).
func (p *Proxy) SetRewrite(f LookupRewrite) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rewrite, p.served = f, 0
}

// Served returns how many lookups were answered by the active rewrite or
// freeze since it was installed.
func (p *Proxy) Served() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.served
}

// History returns the honest answers recorded for handle, oldest first.
func (p *Proxy) History(handle string) []*ktpb.LookupResponse {
	handle = canonical(handle)
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*ktpb.LookupResponse(nil), p.history[handle]...)
}

// Freeze makes the proxy serve, from now on, the directory's current view
// of handles as a client whose trusted checkpoint has size known would get
// it, forever (A9): the answers and the epoch part are fetched once, now,
// and replayed. A client already at the frozen epoch gets no epoch part, as
// the honest directory would do.
func (p *Proxy) Freeze(ctx context.Context, known uint64, handles ...string) error {
	canon := make([]string, len(handles))
	for i, h := range handles {
		canon[i] = canonical(h)
	}
	resp, err := p.upstream().BatchLookup(ctx, &ktpb.BatchLookupRequest{Handles: canon, KnownSize: known})
	if err != nil {
		return fmt.Errorf("adversary: freezing: %w", err)
	}
	fv := &frozenView{known: known, size: known, epoch: resp.Epoch, answers: map[string]*ktpb.LookupResponse{}}
	if resp.Epoch != nil {
		size, err := checkpointSize(resp.Epoch.Checkpoint)
		if err != nil {
			return err
		}
		fv.size = size
	}
	for _, r := range resp.Results {
		fv.answers[r.Handle] = r
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen, p.served = fv, 0
	return nil
}

// Unfreeze ends a freeze.
func (p *Proxy) Unfreeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = nil
}

// Lookup forwards to the honest directory, records the honest answer and
// applies the active freeze or rewrite.
func (p *Proxy) Lookup(ctx context.Context, req *ktpb.LookupRequest) (*ktpb.LookupResponse, error) {
	p.mu.Lock()
	fv, rw, up := p.frozen, p.rewrite, p.up
	p.mu.Unlock()
	if fv != nil {
		a, ok := fv.answers[req.Handle]
		if !ok {
			return nil, status.Error(codes.Unavailable, "try again later")
		}
		out := proto.Clone(a).(*ktpb.LookupResponse)
		switch req.KnownSize {
		case fv.size:
			out.Epoch = nil
		case fv.known:
			out.Epoch = proto.Clone(fv.epoch).(*ktpb.EpochPart)
		default:
			// A client with another view would need another proof; the
			// frozen directory pretends to be overloaded.
			return nil, status.Error(codes.Unavailable, "try again later")
		}
		p.count()
		return out, nil
	}
	resp, err := up.Lookup(ctx, req)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if len(resp.ChangeRecord) > 0 {
		p.history[resp.Handle] = append(p.history[resp.Handle], proto.Clone(resp).(*ktpb.LookupResponse))
	}
	p.mu.Unlock()
	if rw == nil {
		return resp, nil
	}
	p.count()
	return rw(ctx, req, proto.Clone(resp).(*ktpb.LookupResponse))
}

func (p *Proxy) count() {
	p.mu.Lock()
	p.served++
	p.mu.Unlock()
}

// The other calls are forwarded unchanged.

func (p *Proxy) GetParameters(ctx context.Context, req *ktpb.GetParametersRequest) (*ktpb.Parameters, error) {
	return p.upstream().GetParameters(ctx, req)
}

func (p *Proxy) BatchLookup(ctx context.Context, req *ktpb.BatchLookupRequest) (*ktpb.BatchLookupResponse, error) {
	return p.upstream().BatchLookup(ctx, req)
}

func (p *Proxy) Monitor(ctx context.Context, req *ktpb.MonitorRequest) (*ktpb.MonitorResponse, error) {
	return p.upstream().Monitor(ctx, req)
}

// GetRotations passes the rotation list through (design.md 11.1).
func (p *Proxy) GetRotations(ctx context.Context, req *ktpb.GetRotationsRequest) (*ktpb.Rotations, error) {
	return p.upstream().GetRotations(ctx, req)
}

func (p *Proxy) GetEpoch(ctx context.Context, req *ktpb.GetEpochRequest) (*ktpb.EpochPart, error) {
	return p.upstream().GetEpoch(ctx, req)
}

func (p *Proxy) Enroll(ctx context.Context, req *ktpb.EnrollRequest) (*ktpb.ChangeResponse, error) {
	return p.upstream().Enroll(ctx, req)
}

func (p *Proxy) Change(ctx context.Context, req *ktpb.ChangeRequest) (*ktpb.ChangeResponse, error) {
	return p.upstream().Change(ctx, req)
}

// InjectGhost returns a rewrite that adds ghost to the device set of
// handle's answers and, so that the commitment and the record's signature
// still verify, replaces the change record by one of the same index,
// version and predecessor, committing to the new set and signed with the
// operator's recovery key (A1). The record was never logged, so the map
// proof of the honest answer does not prove it. naive skips the forgery
// and only edits the device set, which the commitment catches.
func InjectGhost(origin, handle string, ghost api.Device, recovery ed25519.PrivateKey, naive bool) LookupRewrite {
	handle = canonical(handle)
	return func(_ context.Context, _ *ktpb.LookupRequest, r *ktpb.LookupResponse) (*ktpb.LookupResponse, error) {
		if r.Handle != handle || len(r.ChangeRecord) == 0 {
			return r, nil
		}
		set, err := api.ParseDeviceSet(r.DeviceSet)
		if err != nil {
			return nil, err
		}
		AddDevice(set, ghost)
		ds, err := set.MarshalBinary()
		if err != nil {
			return nil, err
		}
		r.DeviceSet = ds
		if naive {
			return r, nil
		}
		honest, err := api.ParseChangeRecord(r.ChangeRecord)
		if err != nil {
			return nil, err
		}
		rec, opening, err := ForgeRecovery(origin, honest.Index, honest.Version, honest.Prev, ds, recovery)
		if err != nil {
			return nil, err
		}
		r.ChangeRecord, r.Opening = rec, opening[:]
		return r, nil
	}
}

// ServeStale returns a rewrite that answers handle's lookups with the
// honest answer recorded at version (the device set before a revocation)
// under the current epoch: the current epoch part is kept, and the old
// record, opening, device set and map proof are grafted in (A3).
func (p *Proxy) ServeStale(handle string, version uint64) (LookupRewrite, error) {
	handle = canonical(handle)
	old, err := p.recorded(handle, version)
	if err != nil {
		return nil, err
	}
	return func(_ context.Context, _ *ktpb.LookupRequest, r *ktpb.LookupResponse) (*ktpb.LookupResponse, error) {
		if r.Handle != handle {
			return r, nil
		}
		r.ChangeRecord, r.Opening, r.DeviceSet, r.MapProof = old.ChangeRecord, old.Opening, old.DeviceSet, old.MapProof
		return r, nil
	}, nil
}

// ReplayOld returns a rewrite that answers handle's lookups with the whole
// honest answer recorded at version, its epoch part included: an older
// epoch: shown to a client that has seen a newer one (A3, rollback), or to
// a new client, which has nothing to compare it with but its clock.
func (p *Proxy) ReplayOld(handle string, version uint64) (LookupRewrite, error) {
	handle = canonical(handle)
	old, err := p.recorded(handle, version)
	if err != nil {
		return nil, err
	}
	if old.Epoch == nil {
		return nil, errors.New("adversary: the recorded answer has no epoch part")
	}
	size, err := checkpointSize(old.Epoch.Checkpoint)
	if err != nil {
		return nil, err
	}
	return func(_ context.Context, req *ktpb.LookupRequest, r *ktpb.LookupResponse) (*ktpb.LookupResponse, error) {
		if r.Handle != handle {
			return r, nil
		}
		out := proto.Clone(old).(*ktpb.LookupResponse)
		switch req.KnownSize {
		case 0:
			// A new client needs no consistency proof.
			out.Epoch.ConsistencyProof = nil
		case size:
			// A client that took the bait already holds the epoch.
			out.Epoch = nil
		}
		return out, nil
	}, nil
}

// recorded returns the first recorded honest answer for handle at version
// that carries an epoch part (or the first, if none does).
func (p *Proxy) recorded(handle string, version uint64) (*ktpb.LookupResponse, error) {
	var found *ktpb.LookupResponse
	for _, r := range p.History(handle) {
		rec, err := api.ParseChangeRecord(r.ChangeRecord)
		if err != nil || rec.Version != version {
			continue
		}
		if found == nil || found.Epoch == nil && r.Epoch != nil {
			found = r
		}
	}
	if found == nil {
		return nil, fmt.Errorf("adversary: no recorded answer for %s at version %d", handle, version)
	}
	return found, nil
}

// ForgeRecovery returns a change record for index at version with
// predecessor prev, committing to the device set encoding ds with a fresh
// opening, authorized as a recovery (kind 4) and signed with the operator's
// recovery key.
func ForgeRecovery(origin string, index [32]byte, version uint64, prev [32]byte, ds []byte, recovery ed25519.PrivateKey) ([]byte, [32]byte, error) {
	return ForgeChange(origin, index, version, prev, ds, api.AuthRecovery, recovery)
}

// ForgeChange is ForgeRecovery with any kind and signer, for example a
// device key the owner removed (A8).
func ForgeChange(origin string, index [32]byte, version uint64, prev [32]byte, ds []byte, kind api.AuthKind, signer ed25519.PrivateKey) ([]byte, [32]byte, error) {
	var opening [32]byte
	if _, err := rand.Read(opening[:]); err != nil {
		return nil, opening, err
	}
	set, err := api.ParseDeviceSet(ds)
	if err != nil {
		return nil, opening, err
	}
	rec := &api.ChangeRecord{
		Index:       index,
		Version:     version,
		Commitment:  api.Commit(opening, index, version, ds),
		Prev:        prev,
		Kind:        kind,
		Authorizers: set.Authorizers(),
	}
	rec.Sign(origin, signer)
	b, err := rec.MarshalBinary()
	return b, opening, err
}

// canonical returns handle's canonical form (design.md 3.1), the form
// answers carry, or handle itself if it has none.
func canonical(handle string) string {
	if c, err := api.NormalizeHandle(handle); err == nil {
		return c
	}
	return handle
}

// AddDevice inserts d into set, keeping the devices in ID order.
func AddDevice(set *api.DeviceSet, d api.Device) {
	set.Devices = append(set.Devices, d)
	for i := len(set.Devices) - 1; i > 0 && string(set.Devices[i].ID[:]) < string(set.Devices[i-1].ID[:]); i-- {
		set.Devices[i], set.Devices[i-1] = set.Devices[i-1], set.Devices[i]
	}
}
