package client

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"slices"
	"time"

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
	// SPEC(design.md 11.2): the owner's monitor asks for new rotations
	// every poll: the frozen old index of a moved handle would otherwise
	// keep verifying, and the device would never look at the new one.
	if _, err := c.followRotations(ctx); err != nil {
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
	req := &ktpb.MonitorRequest{Index: index[:], KnownVersion: ms.Version, KnownSize: knownSize(trusted)}
	resp, err := c.dir.Monitor(ctx, req)
	if err != nil {
		return nil, err
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
	// this client has not seen: follow the rotations, then poll again.
	if slices.ContainsFunc(res.Alerts, func(a Alert) bool { return a.Rule == api.RuleRecovery }) {
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
