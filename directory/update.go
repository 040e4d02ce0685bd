package directory

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
)

// checked is a change that passed every state-independent check, with the
// verdict of the state-dependent rules against the state the handler saw.
type checked struct {
	handle   string
	vrf      *vrfEntry
	vrfNew   bool   // the VRF entry is not in the store yet
	vrfSeq   uint64 // the VRF rotation the entry is for (design.md 11.2)
	rec      *api.ChangeRecord
	recBytes []byte
	leaf     [32]byte
	opening  [32]byte
	ds       []byte
	account  [16]byte // account ID of the new device set

	// The state the handler checked against (prevExists false: none) and
	// its verdict; the sequencer keeps it if the state is still the latest.
	prevExists bool
	prevLeaf   [32]byte
	prevErr    error
}

// prevState is what the state-dependent rules need about a handle.
type prevState struct {
	hs        *api.HandleState // nil: no change record yet
	accountID [16]byte
}

// Enroll implements [ktpb.DirectoryServer]: a kind-1 change with a valid
// account credential for the handle.
func (d *Directory) Enroll(ctx context.Context, req *ktpb.EnrollRequest) (*ktpb.ChangeResponse, error) {
	if req.GetChange() == nil {
		return nil, d.reject(errorf(ErrInvalidArgument, "no change"))
	}
	if len(req.GetCredential()) > MaxCredentialSize {
		return nil, d.reject(errorf(ErrInvalidArgument, "credential of %d bytes, more than %d", len(req.GetCredential()), MaxCredentialSize))
	}
	handle, err := normalize(req.GetChange().GetHandle())
	if err != nil {
		return nil, d.reject(err)
	}
	if err := d.cfg.Credentials.Verify(ctx, handle, req.GetCredential()); err != nil {
		return nil, d.reject(wrapf(ErrUnauthorized, err, "enrollment credential for %s", handle))
	}
	return d.update(ctx, []*ktpb.HandleChange{req.GetChange()}, api.AuthEnroll)
}

// Change implements [ktpb.DirectoryServer]: changes signed by a device or
// the account key (kinds 2 and 3) to one or more handles, atomically.
func (d *Directory) Change(ctx context.Context, req *ktpb.ChangeRequest) (*ktpb.ChangeResponse, error) {
	return d.update(ctx, req.GetChanges(), api.AuthDevice, api.AuthAccount)
}

// Recover implements [ktpb.OperatorServer]: kind-4 changes signed by the
// recovery key. Serve it only to the operator.
func (d *Directory) Recover(ctx context.Context, req *ktpb.ChangeRequest) (*ktpb.ChangeResponse, error) {
	return d.update(ctx, req.GetChanges(), api.AuthRecovery)
}

func (d *Directory) update(ctx context.Context, hcs []*ktpb.HandleChange, kinds ...api.AuthKind) (*ktpb.ChangeResponse, error) {
	if err := d.refuseWrite(); err != nil { // a replicated reader
		return nil, err
	}
	switch {
	case len(hcs) == 0:
		return nil, d.reject(errorf(ErrInvalidArgument, "no changes"))
	case len(hcs) > MaxChangesPerRequest:
		return nil, d.reject(errorf(ErrResourceExhausted, "%d changes in one request, at most %d", len(hcs), MaxChangesPerRequest))
	}
	cs := make([]*checked, len(hcs))
	seen := make(map[[32]byte]bool, len(hcs))
	for i, hc := range hcs {
		c, err := d.checkInPool(ctx, hc, kinds)
		if err != nil {
			return nil, d.reject(fmt.Errorf("change %d: %w", i, err))
		}
		if seen[c.rec.Index] {
			return nil, d.reject(errorf(ErrInvalidArgument, "change %d: handle %s is changed twice in one request", i, c.handle))
		}
		seen[c.rec.Index] = true
		cs[i] = c
	}
	idx, err := d.submit(ctx, cs)
	if err != nil {
		return nil, err
	}
	return &ktpb.ChangeResponse{LogIndices: idx}, nil
}

// checkJob is one change for the checkers.
type checkJob struct {
	ctx   context.Context
	hc    *ktpb.HandleChange
	kinds []api.AuthKind
	c     *checked      // set before done is closed
	err   error         // set before done is closed
	done  chan struct{} // closed by the checker
}

// numCheckers is the size of the checker pool: the checks are CPU-bound
// (signature, commitment, store reads), so a few per core keep the cores
// busy while one waits for a store read.
func numCheckers() int { return 2 * runtime.GOMAXPROCS(0) }

// checker runs checks until the directory closes (started by the first
// checkInPool, whatever the mode the directory started in). The checks run on these
// long-lived goroutines rather than on the request's: a request's
// goroutine is often new (gRPC's stream workers are all busy while
// changes wait for the log), and its stack would grow, by copying, to
// the depth of a Pebble read on every change (about 6% of the CPU time
// of an update). A checker's stack is grown once.
func (d *Directory) checker() {
	for {
		select {
		case j := <-d.checks:
			j.c, j.err = d.check(j.ctx, j.hc, j.kinds)
			close(j.done)
		case <-d.ctx.Done():
			return
		}
	}
}

// checkInPool runs check on a checker and waits for it.
func (d *Directory) checkInPool(ctx context.Context, hc *ktpb.HandleChange, kinds []api.AuthKind) (*checked, error) {
	d.checkersOnce.Do(func() {
		for range numCheckers() {
			go d.checker()
		}
	})
	j := &checkJob{ctx: ctx, hc: hc, kinds: kinds, done: make(chan struct{})}
	select {
	case d.checks <- j:
	case <-ctx.Done():
		return nil, wrapf(ErrUnavailable, ctx.Err(), "waiting to check the change")
	case <-d.ctx.Done():
		return nil, errorf(ErrUnavailable, "the directory is closing")
	}
	<-j.done
	return j.c, j.err
}

func (d *Directory) reject(err error) error {
	d.cfg.Metrics.ChangeRejected(kindOf(err))
	return err
}

// kindOf returns the sentinel an error wraps.
func kindOf(err error) error {
	for _, k := range []error{ErrInvalidArgument, ErrUnauthorized, ErrStaleVersion, ErrNotFound, ErrOutOfRange, ErrUnavailable, ErrResourceExhausted} {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}

func annotate(i int, c *checked, err error) error {
	return fmt.Errorf("change %d (%s): %w", i, c.handle, err)
}

func normalize(h string) (string, error) {
	if len(h) > MaxHandleInput {
		return "", errorf(ErrInvalidArgument, "handle of %d bytes, more than %d", len(h), MaxHandleInput)
	}
	n, err := api.NormalizeHandle(h)
	if err != nil {
		return "", wrapf(ErrInvalidArgument, err, "handle")
	}
	return n, nil
}

// check runs every check of design.md 6.1 that the directory can run
// before the sequencer: parsing, the record's index, the change kind
// allowed on this endpoint, the commitment and R7, the account signature,
// and the rules R1-R6 and the account-ID rule against the latest stored
// state. R1 (the signature) is final; the state-dependent verdict may be
// revised by the sequencer if the state changed meanwhile.
//
// SPEC(design.md 6)
// SPEC(design.md 6.1)
func (d *Directory) check(ctx context.Context, hc *ktpb.HandleChange, kinds []api.AuthKind) (*checked, error) {
	if hc == nil {
		return nil, errorf(ErrInvalidArgument, "empty change")
	}
	handle, err := normalize(hc.GetHandle())
	if err != nil {
		return nil, err
	}
	c := &checked{handle: handle, recBytes: hc.GetChangeRecord(), ds: hc.GetDeviceSet()}
	switch {
	case len(c.recBytes) > api.ChangeRecordMaxSize:
		return nil, errorf(ErrInvalidArgument, "change record of %d bytes, more than %d", len(c.recBytes), api.ChangeRecordMaxSize)
	case len(c.ds) > MaxDeviceSetSize:
		return nil, errorf(ErrInvalidArgument, "device set of %d bytes, more than %d", len(c.ds), MaxDeviceSetSize)
	case len(hc.GetOpening()) != 32:
		return nil, errorf(ErrInvalidArgument, "opening of %d bytes, want 32", len(hc.GetOpening()))
	}
	c.opening = [32]byte(hc.GetOpening())
	if c.rec, err = api.ParseChangeRecord(c.recBytes); err != nil {
		return nil, wrapf(ErrInvalidArgument, err, "change record")
	}
	if !allowed(c.rec.Kind, kinds) {
		return nil, errorf(ErrUnauthorized, "a %s change (kind %d) is not accepted here; %s", c.rec.Kind, c.rec.Kind, kindHint(c.rec.Kind))
	}
	c.vrfSeq = d.vrfKeys().seq
	if c.vrf, c.vrfNew, err = d.vrfFor(handle); err != nil {
		return nil, err
	}
	if c.rec.Index != c.vrf.index {
		return nil, errorf(ErrInvalidArgument, "the change record's index %x is not the VRF index of %s", c.rec.Index, handle)
	}
	set, err := api.OpenCommitment(c.rec, c.opening, c.ds)
	switch {
	case errors.Is(err, api.ErrUnauthorized):
		return nil, wrapf(ErrUnauthorized, err, "device set")
	case err != nil:
		return nil, wrapf(ErrInvalidArgument, err, "device set and opening")
	}
	if set.Account != nil {
		if err := set.VerifyAccount(d.cfg.Origin, c.rec.Index, c.rec.Version); err != nil {
			return nil, wrapf(ErrUnauthorized, err, "account signature")
		}
	}
	c.account = set.AccountID
	c.leaf = api.LeafHash(c.recBytes)

	h, exists, err := d.st.head(c.rec.Index)
	if err != nil {
		return nil, wrapf(ErrUnavailable, err, "reading the handle's state")
	}
	c.prevExists, c.prevLeaf = exists, h.leaf
	prev, err := d.loadPrevAt(c.rec.Index, h, exists)
	if err != nil {
		return nil, err
	}
	c.prevErr = d.checkState(c, prev)
	if errors.Is(c.prevErr, api.ErrBadSignature) {
		return nil, c.prevErr // R1 does not depend on the state
	}
	return c, nil
}

func allowed(k api.AuthKind, kinds []api.AuthKind) bool {
	for _, a := range kinds {
		if a == k {
			return true
		}
	}
	return false
}

func kindHint(k api.AuthKind) string {
	switch k {
	case api.AuthEnroll:
		return "enrollments go through Enroll with a credential"
	case api.AuthRecovery:
		return "recovery changes are accepted only through the operator's Recover"
	default:
		return "device and account-key changes go through Change"
	}
}

func (d *Directory) loadPrevAt(index [32]byte, h headState, exists bool) (*prevState, error) {
	if !exists {
		return &prevState{}, nil
	}
	if h.rules != nil {
		hs := &api.HandleState{Version: h.version, LeafHash: h.leaf, Authorizers: h.rules.authorizers}
		return &prevState{hs: hs, accountID: h.rules.accountID}, nil
	}
	p, ok, err := d.st.payload(h.leaf)
	if err != nil {
		return nil, wrapf(ErrUnavailable, err, "reading the handle's latest record")
	}
	if !ok {
		return nil, errorf(ErrUnavailable, "the opening and device set of index %x version %d are not in the store", index, h.version)
	}
	r, err := parsePayloadRecord(p)
	if err != nil {
		return nil, wrapf(ErrUnavailable, err, "stored record")
	}
	if len(p.deviceSet) < 17 {
		return nil, errorf(ErrUnavailable, "stored device set of index %x is truncated", index)
	}
	return &prevState{hs: r.State(p.record), accountID: [16]byte(p.deviceSet[1:17])}, nil
}

// checkState runs the rules that depend on the handle's latest state:
// api.CheckChange (R1-R6, with R2 and R3 reported as ErrStaleVersion) and
// the account-ID rule of design.md 6.1: only an enrollment or a recovery
// may change the account ID.
//
// SPEC(design.md 6.1)
func (d *Directory) checkState(c *checked, prev *prevState) error {
	if err := api.CheckChange(d.cfg.Origin, prev.hs, c.rec, d.recoveryKey()); err != nil {
		var ae *api.AuthError
		if errors.As(err, &ae) && (ae.Rule == api.RuleVersion || ae.Rule == api.RulePrev) {
			return wrapf(ErrStaleVersion, err, "the change does not follow the handle's latest record")
		}
		return wrapf(ErrUnauthorized, err, "authorization")
	}
	if prev.hs != nil && (c.rec.Kind == api.AuthDevice || c.rec.Kind == api.AuthAccount) && c.account != prev.accountID {
		return errorf(ErrUnauthorized, "the account ID changes from %x to %x; only an enrollment or a recovery may change it", prev.accountID, c.account)
	}
	return nil
}

// vrfFor returns the VRF index and proof of a canonical handle: stored for
// registered handles, computed otherwise (new reports that).
func (d *Directory) vrfFor(handle string) (e *vrfEntry, isNew bool, err error) {
	e, ok, err := d.st.vrf(handle)
	if err != nil {
		return nil, false, wrapf(ErrUnavailable, err, "reading the VRF cache")
	}
	if ok {
		return e, false, nil
	}
	index, proof := d.vrfKeys().cur.Prove(api.VRFInput(handle))
	return &vrfEntry{index: index, proof: proof}, true, nil
}
