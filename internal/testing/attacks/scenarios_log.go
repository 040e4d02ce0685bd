package attacks

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/attacks/adversary"
)

// auditedClean waits until a has audited the checkpoint c trusts and
// checks it found nothing.
func auditedClean(ctx context.Context, a *Auditor, c *Device) error {
	st, err := c.State(ctx)
	if err != nil {
		return err
	}
	if err := a.AwaitAudited(ctx, st.Trusted.Size); err != nil {
		return err
	}
	vs, err := a.Violations(Origin)
	if err != nil {
		return err
	}
	if len(vs) != 0 {
		return fmt.Errorf("violations in the honest log: %v", vs)
	}
	return nil
}

// awaitViolation waits until a reports a violation matching f.
func awaitViolation(ctx context.Context, a *Auditor, f func(auditor.Violation) bool) (auditor.Violation, error) {
	var found auditor.Violation
	err := poll(ctx, func() (bool, error) {
		vs, err := a.Violations(Origin)
		if err != nil {
			return false, err
		}
		i := slices.IndexFunc(vs, f)
		if i >= 0 {
			found = vs[i]
		}
		return i >= 0, nil
	})
	return found, err
}

func withGhost(set *api.DeviceSet, g api.Device) ([]byte, error) {
	s := &api.DeviceSet{AccountID: set.AccountID, Devices: slices.Clone(set.Devices)}
	adversary.AddDevice(s, g)
	return s.MarshalBinary()
}

// A6: the log under the directory receives, in place of Bob's honest
// version-3 change, a recovery record committing to a ghost. The
// directory's map, and so the published map root, holds the honest
// record: the root is not derived from the logged changes.
func runA6(ctx context.Context, w *World, r *Result) error {
	d, err := w.Deploy(ctx, Options{})
	if err != nil {
		return err
	}
	aud, err := w.StartAuditor(ctx, "auditor-1", d.Keys, d.LogURL, AuditorOptions{})
	if err != nil {
		return err
	}
	owner, err := d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	if err := d.Enroll(ctx, owner, bob, false); err != nil {
		return err
	}
	if _, err := owner.Rekey(ctx); err != nil {
		return err
	}
	res, err := AwaitVersion(ctx, owner, bob, 2)
	if err != nil {
		return err
	}
	if err := auditedClean(ctx, aud, owner); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if reps, err := owner.Monitor(ctx); err != nil || len(reps[0].Alerts) != 0 {
		return fmt.Errorf("control: owner's poll: %v %+v", err, reps[0].Alerts)
	}
	r.Control = "Bob's honest changes: the auditor replays the log to the trusted checkpoint with no violation, Bob's poll verifies"

	g, err := Ghost()
	if err != nil {
		return err
	}
	ds, err := withGhost(res.DeviceSet, g)
	if err != nil {
		return err
	}
	forged, _, err := adversary.ForgeRecovery(Origin, res.Index, 3, res.LeafHash, ds, d.Keys.Recovery)
	if err != nil {
		return err
	}
	d.Log.Arm(adversary.ChangeOf(res.Index, 3, func(*api.ChangeRecord) []byte { return forged }))
	t0 := time.Now()
	if _, err := owner.Rekey(ctx); err != nil {
		return err
	}
	if _, err := AwaitVersion(ctx, owner, bob, 3); err != nil {
		return err
	}
	subs := d.Log.Substitutions()
	if len(subs) != 1 {
		return fmt.Errorf("the log wrapper substituted %d entries", len(subs))
	}
	v, err := awaitViolation(ctx, aud, func(v auditor.Violation) bool {
		return v.Rule == api.RuleMapRoot && v.Index > subs[0].Index
	})
	if err != nil {
		return fmt.Errorf("auditor: %w: %w", errNotDetected, err)
	}
	r.detect(Detection{By: ByAuditor, After: time.Since(t0), Detail: v,
		Evidence: fmt.Sprintf("violation at entry %d (epoch record after the substituted entry %d): %s: %s", v.Index, subs[0].Index, v.Rule, v.Detail)})
	sender, err := d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	if res, err := sender.Lookup(ctx, bob); err != nil || res.Version != 3 || len(res.Recipients) != 1 {
		r.note("a sender's lookup of Bob: %v", err)
	} else {
		r.note("lookups of Bob (his own and a new sender's) verify at version 3 with his one honest device: the published map is self-consistent, only a replay of the log shows it is not the log's")
	}

	_, err = owner.Monitor(ctx)
	if err == nil {
		r.note("Bob's monitor did not notice")
		return nil
	}
	r.detect(Detection{By: ByOwnerMonitor, After: time.Since(t0), Polls: 1, Err: err,
		Evidence: fmt.Sprintf("poll refused (step %q: %v): the directory's record is not the logged one", verifyStep(err), sentinel(err))})
	return nil
}

// A8: a replayed old change (captured on the network) and a change signed
// by a device Bob removed (stolen) are sent to the directory, which
// rejects both; then the operator forces each into the log under the
// directory, and the auditor flags the rule each breaks.
func runA8(ctx context.Context, w *World, r *Result) error {
	d, err := w.Deploy(ctx, Options{})
	if err != nil {
		return err
	}
	aud, err := w.StartAuditor(ctx, "auditor-1", d.Keys, d.LogURL, AuditorOptions{})
	if err != nil {
		return err
	}
	b1, err := d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	b2, err := d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	if err := d.Enroll(ctx, b1, bob, false); err != nil {
		return err
	}
	if err := d.Link(ctx, b1, b2, bob); err != nil {
		return err
	}
	st2, _ := b2.State(ctx)
	stolen := st2.Device.Signing
	if _, err := b1.RemoveDevice(ctx, st2.Device.ID); err != nil {
		return err
	}
	c1, err := d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	if err := d.Enroll(ctx, c1, carol, false); err != nil {
		return err
	}
	for v := uint64(2); v <= 3; v++ {
		if _, err := c1.Rekey(ctx); err != nil {
			return err
		}
		if _, err := AwaitVersion(ctx, c1, carol, v); err != nil {
			return err
		}
	}
	// Control: a change by a current device through the same API.
	if _, err := b1.Rekey(ctx); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	bres, err := AwaitVersion(ctx, b1, bob, 4)
	if err != nil {
		return err
	}
	if err := auditedClean(ctx, aud, b1); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	r.Control = "a change signed by one of Bob's current devices is accepted through the same Change RPC (version 4); the auditor finds no violation"

	// The replay: Carol's version-2 change as the network saw it.
	var old *ktpb.LookupResponse
	for _, a := range d.Proxy.History(carol) {
		if rec, err := api.ParseChangeRecord(a.ChangeRecord); err == nil && rec.Version == 2 {
			old = a
			break
		}
	}
	if old == nil {
		return fmt.Errorf("no recorded version-2 change of Carol")
	}
	replayed := &ktpb.HandleChange{Handle: carol, ChangeRecord: old.ChangeRecord, Opening: old.Opening, DeviceSet: old.DeviceSet}
	g, err := Ghost()
	if err != nil {
		return err
	}
	set := &api.DeviceSet{AccountID: bres.DeviceSet.AccountID, Devices: slices.Clone(bres.DeviceSet.Devices)}
	adversary.AddDevice(set, g)
	byRemoved, err := client.NewChange(Origin, bres, set, api.AuthDevice, stolen)
	if err != nil {
		return err
	}
	for _, c := range []struct {
		what   string
		hc     *ktpb.HandleChange
		handle string
		code   codes.Code
		ver    uint64
	}{
		{"replay of Carol's version-2 change at version 3", replayed, carol, codes.Aborted, 3},
		{"change signed by Bob's removed device", byRemoved, bob, codes.PermissionDenied, 4},
	} {
		t0 := time.Now()
		_, err := d.Honest.Change(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{c.hc}})
		after := time.Since(t0)
		if status.Code(err) != c.code {
			return fmt.Errorf("directory: %s: got %v, want code %v", c.what, err, c.code)
		}
		// Nothing stored: the next epochs still show the old version.
		time.Sleep(2 * EpochInterval)
		dev := b1
		if c.handle == carol {
			dev = c1
		}
		if res, err := dev.Lookup(ctx, c.handle); err != nil || res.Version != c.ver {
			return fmt.Errorf("after the rejected %s: version %d, %v", c.what, res.Version, err)
		}
		r.detect(Detection{By: ByDirectory, After: after, Polls: 1, Err: err,
			Evidence: fmt.Sprintf("%s: gRPC %v %q; nothing stored (still version %d)", c.what, status.Code(err), status.Convert(err).Message(), c.ver)})
	}

	// Forced into the log under the directory: Carol's old record, and a
	// version 5 of Bob's (following his version 4) signed by the removed
	// device.
	cres, err := c1.Lookup(ctx, carol)
	if err != nil {
		return err
	}
	ds, err := set.MarshalBinary()
	if err != nil {
		return err
	}
	byRemovedV5, _, err := adversary.ForgeChange(Origin, bres.Index, 5, bres.LeafHash, ds, api.AuthDevice, stolen)
	if err != nil {
		return err
	}
	for _, c := range []struct {
		what  string
		index [32]byte
		ver   uint64
		entry func(h *api.ChangeRecord) []byte
		dev   *Device
		rule  api.Rule
	}{
		{"Carol's version-2 change replayed in place of her version 4", cres.Index, 4, func(*api.ChangeRecord) []byte { return old.ChangeRecord }, c1, api.RuleVersion},
		{"a change signed by Bob's removed device in place of his version 5", bres.Index, 5, func(*api.ChangeRecord) []byte { return byRemovedV5 }, b1, api.RuleDevice},
	} {
		d.Log.Arm(adversary.ChangeOf(c.index, c.ver, c.entry))
		t0 := time.Now()
		if _, err := c.dev.Rekey(ctx); err != nil {
			return err
		}
		if err := poll(ctx, func() (bool, error) { return !d.Log.Armed(), nil }); err != nil {
			return err
		}
		subs := d.Log.Substitutions()
		at := subs[len(subs)-1].Index
		v, err := awaitViolation(ctx, aud, func(v auditor.Violation) bool { return v.Index == at && v.Rule == c.rule })
		if err != nil {
			return fmt.Errorf("auditor: %s: %w: %w", c.what, errNotDetected, err)
		}
		r.detect(Detection{By: ByAuditor, After: time.Since(t0), Detail: v,
			Evidence: fmt.Sprintf("%s: violation at entry %d: %s: %s", c.what, v.Index, v.Rule, v.Detail)})
	}
	return nil
}
