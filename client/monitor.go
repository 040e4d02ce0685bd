package client

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
)

// MonitorReport is the verified result of one monitoring poll of one of
// the owner's handles.
type MonitorReport struct {
	// Handle is the polled handle.
	Handle string
	// Result holds the verified changes since the last poll, their
	// classification by who authorized them, the alerts and the devices
	// added and removed between the polls (see [VerifyMonitor]).
	*MonitorResult
	// RequestBytes and ResponseBytes are the protobuf sizes of the poll's
	// request and response: the poll's cost on the wire, before gRPC
	// framing.
	RequestBytes, ResponseBytes int
}

// Monitor polls every handle of this device once (design.md 13): one
// Monitor call per handle with its known version and the trusted size,
// verified by [VerifyMonitor], each new position stored before the report
// is returned. When nothing changed the poll is one round trip carrying
// the map proof (and the epoch part if the epoch moved on). Every change
// not made by the owner's devices is an alert in the report. A
// verification failure stops the poll with a [*VerifyError]; reports of
// handles polled before it are returned with it.
//
// SPEC(design.md 13)
func (c *Client) Monitor(ctx context.Context) ([]*MonitorReport, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := c.loadDevice(ctx)
	if err != nil {
		return nil, err
	}
	// SPEC(design.md 12.2)
	if err := st.refused(c.params()); err != nil {
		return nil, err
	}
	var out []*MonitorReport
	for _, h := range st.sortedHandles() {
		rep, err := withRotations(ctx, c, func() (*MonitorReport, error) { return c.monitor(ctx, h) })
		if err != nil {
			return out, fmt.Errorf("client: monitoring %s: %w", h, err)
		}
		out = append(out, rep)
	}
	return out, nil
}

// SPEC(design.md 13)
// SPEC(design.md 13 step 6)
// SPEC(design.md 13.1)
func (c *Client) monitor(ctx context.Context, handle string) (*MonitorReport, error) {
	st, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	// SPEC(design.md 12.2)
	if err := st.refused(c.params()); err != nil {
		return nil, err
	}
	ms := st.Handles[handle]
	if ms == nil {
		return nil, ErrNoHandles
	}
	p := c.params()
	// SPEC(design.md 11.2): after a rotation of the VRF key the device
	// looks its handle up under the new key and crosses the re-indexing.
	var moved *LookupResult
	trusted, index := st.Trusted, ms.Index
	if uint32(len(p.PrevVRFKeys)) != ms.VRFRotations {
		lresp, err := c.dir.Lookup(ctx, &ktpb.LookupRequest{Handle: handle, KnownSize: knownSize(st.Trusted)})
		if err != nil {
			return nil, err
		}
		if moved, err = VerifyLookup(p, st.Trusted, handle, lresp, c.cfg.Now(), nil); err != nil {
			return nil, err
		}
		trusted = moved.Trusted
		if !moved.NotMoved {
			index = moved.Index
		}
	}
	own := OwnKeys{Device: st.Device.SigningPublic(), Devices: slices.Clone(st.OwnDevices), Former: slices.Clone(st.FormerKeys)}
	if st.PendingDevice != nil {
		own.Devices = append(own.Devices, st.PendingDevice.SigningPublic())
	}
	if st.Account != nil {
		k := [32]byte(st.Account.Public().(ed25519.PublicKey))
		own.Account = &k
	}
	if st.PendingAccount != nil {
		// A pending account key signed no change record (changes are
		// signed by this device); it only signs sets.
		k := [32]byte(st.PendingAccount.Public().(ed25519.PublicKey))
		own.Devices = append(own.Devices, k)
	}
	req, resp, err := c.monitorAsOwner(ctx, st, index, trusted, ms.Version)
	if errors.Is(err, errNotAuthorizer) {
		return nil, c.lockedOut(ctx, st, handle, ms, own, err)
	}
	if err != nil {
		return nil, err
	}
	var res *MonitorResult
	if moved != nil {
		res, err = VerifyMonitorMove(p, trusted, ms, moved, resp, own, c.cfg.Now())
	} else {
		res, err = VerifyMonitor(p, trusted, ms, resp, own, c.cfg.Now())
	}
	if err != nil {
		return nil, err
	}
	// SPEC(design.md 11.1): a recovery change that the current recovery
	// key did not sign may follow a rotation of the recovery key that
	// this client has not seen; and (11.2, 13) the answer counts the
	// log's rotation records: more than this client holds means one to
	// follow (the frozen old index of a moved handle would otherwise keep
	// verifying). Follow the rotations, then poll again.
	if resp.GetRotations() > uint64(len(st.Rotations)) || slices.ContainsFunc(res.Alerts, func(a Alert) bool { return a.Rule == api.RuleRecovery }) {
		n, err := c.followRotations(ctx)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			return nil, errStateMoved
		}
	}
	err = c.commit(ctx, st.Trusted, func(s *State) error {
		if cur := s.Handles[handle]; cur == nil || cur.Version != ms.Version || cur.LeafHash != ms.LeafHash {
			return errStateMoved
		}
		s.Trusted = res.Trusted
		s.Handles = cloneMap(s.Handles)
		s.Handles[handle] = res.State
		// A re-key or account key whose change is logged is current, even
		// if this process did not see the directory accept it.
		if set := res.State.DeviceSet; set != nil {
			if s.PendingDevice != nil && slices.ContainsFunc(set.Devices, func(d api.Device) bool { return d.SigningKey == s.PendingDevice.SigningPublic() }) {
				s.FormerKeys = append(s.FormerKeys, s.Device.SigningPublic())
				s.Device, s.PendingDevice = s.PendingDevice, nil
			}
			if s.PendingAccount != nil && set.Account != nil && set.Account.Key == [32]byte(s.PendingAccount.Public().(ed25519.PublicKey)) {
				s.Account, s.PendingAccount = s.PendingAccount, nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &MonitorReport{Handle: handle, MonitorResult: res, RequestBytes: proto.Size(req), ResponseBytes: proto.Size(resp)}, nil
}

// errNotAuthorizer: the directory refused every key this device holds as
// the owner's authorization of a Monitor request (PermissionDenied).
var errNotAuthorizer = errors.New("client: no key of this device is a current authorizer of the handle")

// monitorAsOwner sends the poll of one own handle with the owner's
// authorization (design.md 13.4): signed by this device's signing key,
// else, if the directory answers that the signer is not a current
// authorizer, by the keys the log may name instead (a re-key in flight,
// the account key). It returns the last request sent and the answer, or
// an error wrapping errNotAuthorizer when every key was refused.
//
// SPEC(design.md 13.4)
func (c *Client) monitorAsOwner(ctx context.Context, st *State, index [32]byte, trusted *Trusted, version uint64) (*ktpb.MonitorRequest, *ktpb.MonitorResponse, error) {
	keys := []ed25519.PrivateKey{st.Device.Signing}
	if st.PendingDevice != nil {
		keys = append(keys, st.PendingDevice.Signing)
	}
	if st.Account != nil {
		keys = append(keys, st.Account)
	}
	if st.PendingAccount != nil {
		keys = append(keys, st.PendingAccount)
	}
	var denied error
	for _, k := range keys {
		req := &ktpb.MonitorRequest{Index: index[:], KnownVersion: version, KnownSize: knownSize(trusted)}
		ts := uint64(c.cfg.Now().UnixMilli())
		signer, sig := api.SignMonitor(c.params().Origin, k, index, req.KnownVersion, req.KnownSize, ts)
		req.Auth = &ktpb.MonitorAuth{Signer: signer[:], TimestampMs: ts, Signature: sig[:]}
		resp, err := c.dir.Monitor(ctx, req)
		if status.Code(err) == codes.PermissionDenied {
			denied = err
			continue
		}
		return req, resp, err
	}
	return nil, nil, fmt.Errorf("%w: %w", errNotAuthorizer, denied)
}

// LockedOutError reports that the directory no longer serves an own
// handle's device sets to this device: none of its keys is an authorizer
// of the handle's latest change record (design.md 13.4), because the
// recovery path replaced the owner's keys, another device removed this
// one, or the directory refuses wrongly. The client then verified the
// public records since its known version (a records_only answer, steps 1
// to 3 of design.md 13) and reports them: Alerts holds an AlertRecovery
// for each kind-4 record and an AlertUnknownSigner for each record signed
// by a key that is not known to be the owner's (its own keys and those
// learned along the chain up to the known version: keys added since
// cannot be learned without their sets). Nothing is stored: the
// device sets cannot be verified without their openings. It wraps
// [ErrLockedOut] and the directory's refusal.
type LockedOutError struct {
	Handle string
	// Version is the last version this device verified; Latest the
	// latest version of the verified records.
	Version, Latest uint64
	// Changes lists the verified records after Version, with who made
	// each from the owner's point of view; their DeviceSet is nil.
	Changes []Change
	Alerts  []Alert
	Err     error
}

// ErrLockedOut: see [LockedOutError].
var ErrLockedOut = errors.New("client: this device is no longer an authorizer of its handle")

func (e *LockedOutError) Error() string {
	msg := fmt.Sprintf("client: %s: this device is no longer an authorizer of the handle (version %d, verified records up to %d)", e.Handle, e.Version, e.Latest)
	for _, a := range e.Alerts {
		msg += "; ALERT " + a.String()
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *LockedOutError) Unwrap() []error { return []error{ErrLockedOut, e.Err} }

// lockedOut asks for the public records of an own handle whose device
// sets this device may no longer read, verifies their chain from the
// known state and returns a [*LockedOutError] naming who made each change.
//
// SPEC(design.md 13.4): "the owner's device then asks with records_only
// and sees the kind-4 record, which is the alert".
func (c *Client) lockedOut(ctx context.Context, st *State, handle string, ms *MonitorState, own OwnKeys, refusal error) error {
	req := &ktpb.MonitorRequest{Index: ms.Index[:], KnownVersion: ms.Version, KnownSize: knownSize(st.Trusted), RecordsOnly: true}
	resp, err := c.dir.Monitor(ctx, req)
	if err != nil {
		return fmt.Errorf("client: %s: refused as owner (%w), and the records-only poll failed: %w", handle, refusal, err)
	}
	now := c.cfg.Now()
	_, changes, err := verifyChain(c.params(), ms.Index, nil, ms.Version, ms.LeafHash, resp, true, func(part *ktpb.EpochPart) (*Epoch, error) {
		return VerifyEpoch(c.params(), st.Trusted, part, now)
	})
	if err != nil {
		return err
	}
	out := &LockedOutError{Handle: handle, Version: ms.Version, Latest: ms.Version, Err: refusal}
	for i := range changes {
		r := changes[i].record
		ch := Change{Version: r.Version, LogIndex: changes[i].logIndex, Record: r}
		known := own.contains(r.Signer) || ms.Version > 0 && slices.Contains(ms.Known, r.Signer)
		switch {
		case r.Kind == api.AuthRecovery:
			ch.By = ByRecovery
			out.Alerts = append(out.Alerts, Alert{Kind: AlertRecovery, Version: r.Version, LogIndex: ch.LogIndex,
				Message: fmt.Sprintf("version %d was made by the directory's recovery path; this device's keys no longer authorize the handle", r.Version)})
		case own.isThisDevice(r.Signer):
			ch.By = ByThisDevice
		case !known:
			// Keys added by the records since the known version cannot be
			// learned without their sets.
			ch.By = ByUnknownKey
			out.Alerts = append(out.Alerts, Alert{Kind: AlertUnknownSigner, Version: r.Version, LogIndex: ch.LogIndex,
				Message: fmt.Sprintf("version %d was signed by key %x, which is not known to be yours", r.Version, r.Signer[:8])})
		case r.Kind == api.AuthAccount:
			ch.By = ByAccountKey
		default:
			ch.By = ByOwnDevice
		}
		out.Changes = append(out.Changes, ch)
		out.Latest = r.Version
	}
	return out
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	c := make(map[K]V, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Watch runs the owner's monitoring loop until ctx ends: every interval it
// polls the device's handles with [Client.Monitor] and gossips the trusted
// checkpoint with the configured auditors ([Client.Gossip]), and calls
// report with the poll's reports, the gossip results and the first error
// (a verification failure, a transport error, or a [*SplitViewError]).
// Errors do not stop the loop: the next poll retries. report runs on
// Watch's goroutine; Watch returns ctx's error.
func (c *Client) Watch(ctx context.Context, interval time.Duration, report func([]*MonitorReport, []GossipResult, error)) error {
	if interval <= 0 {
		return fmt.Errorf("client: Watch interval %v is not positive", interval)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		reps, err := c.Monitor(ctx)
		var gs []GossipResult
		if len(c.cfg.Auditors) > 0 {
			var gerr error
			gs, gerr = c.Gossip(ctx)
			if err == nil {
				err = gerr
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		report(reps, gs, err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
