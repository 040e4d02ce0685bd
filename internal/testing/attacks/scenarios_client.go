package attacks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/attacks/adversary"
)

const (
	alice = "alice@example.com"
	bob   = "bob@example.com"
	carol = "carol@example.com"
)

// sentinel returns the client sentinel error err wraps, or err.
func sentinel(err error) error {
	var ve *client.VerifyError
	if errors.As(err, &ve) {
		for _, s := range []error{client.ErrMalformed, client.ErrCheckpointSignature, client.ErrWitnessQuorum, client.ErrRollback,
			client.ErrInconsistent, client.ErrNotLatestEpoch, client.ErrEpochInclusion, client.ErrStale, client.ErrVRF,
			client.ErrMapProof, client.ErrRecordMismatch, client.ErrCommitment, client.ErrAuthorizers, client.ErrStrict,
			client.ErrUnusableKey, client.ErrMonitorGap} {
			if errors.Is(err, s) {
				return s
			}
		}
	}
	return err
}

func verifyStep(err error) string {
	var ve *client.VerifyError
	if errors.As(err, &ve) {
		return ve.Step
	}
	return "?"
}

// A1: the proxy adds a ghost device to Bob's lookup answers and forges a
// recovery record that commits to it; the record was never logged.
func runA1(ctx context.Context, w *World, r *Result) error {
	d, err := w.Deploy(ctx, Options{})
	if err != nil {
		return err
	}
	sender, err := d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	// The sender signs with a device of its handle (design.md 12.3).
	if err := d.Enroll(ctx, sender, alice, false); err != nil {
		return err
	}
	owner, err := d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	if err := d.Enroll(ctx, owner, bob, false); err != nil {
		return err
	}
	envs, err := sender.Encrypt(ctx, bob, []byte("hi"))
	if err != nil || len(envs) != 1 {
		return fmt.Errorf("control: Encrypt to Bob: %d envelopes, %v", len(envs), err)
	}
	r.Control = "the sender encrypts to Bob's 1 device through the same (transparent) proxy"

	g, err := Ghost()
	if err != nil {
		return err
	}
	for _, naive := range []bool{false, true} {
		d.Proxy.SetRewrite(adversary.InjectGhost(Origin, bob, g, d.Keys.Recovery, naive))
		before, _ := sender.Store.Load(ctx)
		t0 := time.Now()
		envs, err := sender.Encrypt(ctx, bob, []byte("hi"))
		after := time.Since(t0)
		if now, _ := sender.Store.Load(ctx); !bytes.Equal(before, now) {
			return errors.New("the sender stored state from a rejected answer")
		}
		want, what := client.ErrMapProof, "forged recovery record committing to the ghost"
		if naive {
			want, what = client.ErrCommitment, "ghost added to the device set only"
		}
		if len(envs) != 0 {
			return fmt.Errorf("%s: %d envelopes returned", what, len(envs))
		}
		if err := expect(what, err, want); err != nil {
			return err
		}
		r.detect(Detection{By: BySender, After: after, Polls: 1, Err: err,
			Evidence: fmt.Sprintf("%s: Encrypt refused, no envelope (step %q: %v)", what, verifyStep(err), want)})
	}
	d.Proxy.SetRewrite(nil)
	return nil
}

// A2: the operator adds a ghost device to Bob's set through the Operator
// service's Recover RPC, signed by the recovery key: it is in the log.
func runA2(ctx context.Context, w *World, r *Result) error {
	d, err := w.Deploy(ctx, Options{})
	if err != nil {
		return err
	}
	owner, err := d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	if err := d.Enroll(ctx, owner, bob, true); err != nil {
		return err
	}
	strict, err := d.NewDevice(ctx, nil, client.Config{Strict: true})
	if err != nil {
		return err
	}
	// The sender signs with a device of its handle (design.md 12.3).
	if err := d.Enroll(ctx, strict, alice, false); err != nil {
		return err
	}
	plain, err := d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	if _, err := strict.Encrypt(ctx, bob, []byte("hi")); err != nil {
		return fmt.Errorf("control: strict-mode Encrypt: %w", err)
	}
	reps, err := owner.Monitor(ctx)
	if err != nil || len(reps) != 1 || len(reps[0].Alerts) != 0 {
		return fmt.Errorf("control: owner's poll: %v, %+v", err, reps)
	}
	r.Control = "the strict-mode sender pins Bob's account key and encrypts; Bob's poll shows his enrollment, no alert"

	g, err := Ghost()
	if err != nil {
		return err
	}
	t0 := time.Now()
	v, err := d.Recover(ctx, owner, bob, func(s *api.DeviceSet) { adversary.AddDevice(s, g) })
	if err != nil {
		return err
	}
	tLogged := time.Now()
	reps, err = owner.Monitor(ctx)
	if err != nil {
		return fmt.Errorf("owner's poll: %w", err)
	}
	i := slices.IndexFunc(reps[0].Alerts, func(a client.Alert) bool { return a.Kind == client.AlertRecovery })
	if i < 0 || len(reps[0].Changes) != 1 || len(reps[0].Changes[0].Added) != 1 || reps[0].Changes[0].Added[0].ID != g.ID {
		return fmt.Errorf("owner monitor: %w: %+v", errNotDetected, reps[0].MonitorResult)
	}
	a := reps[0].Alerts[i]
	r.detect(Detection{By: ByOwnerMonitor, After: time.Since(t0), Polls: 1, Detail: reps[0].Alerts,
		Evidence: fmt.Sprintf("alert %v at version %d, log index %d: %q; the ghost is listed as added", a.Kind, a.Version, a.LogIndex, a.Message)})

	t1 := time.Now()
	envs, err := strict.Encrypt(ctx, bob, []byte("hi"))
	if len(envs) != 0 {
		return fmt.Errorf("strict sender: %d envelopes", len(envs))
	}
	if err := expect("strict sender", err, client.ErrStrict); err != nil {
		return err
	}
	r.detect(Detection{By: ByStrictSender, After: time.Since(t1) + tLogged.Sub(t0), Polls: 1, Err: err,
		Evidence: fmt.Sprintf("Encrypt refused (step %q: %v)", verifyStep(err), client.ErrStrict)})

	res, err := plain.Lookup(ctx, bob)
	if err == nil && res.Version == v && res.Kind == api.AuthRecovery && len(res.Recipients) == 2 {
		r.note("a sender not in strict mode accepts the recovered set (%d devices, ghost included); it sees only Kind = recovery, which it MAY show as a warning (design.md 12.2 step 9); the owner's monitor is the detector", len(res.Recipients))
	} else {
		return fmt.Errorf("non-strict sender: version %d kind %v, %v", res.Version, res.Kind, err)
	}
	return nil
}

// A3: Bob revokes a device; the proxy keeps serving the set from before
// the revocation, first grafted under the current epoch, then as the whole
// recorded answer with its older epoch.
func runA3(ctx context.Context, w *World, r *Result) error {
	d, err := w.Deploy(ctx, Options{MaxAge: 10 * time.Second, Skew: time.Second})
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
	sender, err := d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	if res, err := sender.Lookup(ctx, bob); err != nil || res.Version != 2 {
		return fmt.Errorf("sender's first lookup: %v", err)
	}
	st2, _ := b2.State(ctx)
	subs, err := b1.RemoveDevice(ctx, st2.Device.ID)
	if err != nil {
		return err
	}
	res, err := AwaitVersion(ctx, sender, bob, subs[0].Version)
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if len(res.Recipients) != 1 {
		return fmt.Errorf("control: %d recipients after the revocation", len(res.Recipients))
	}
	r.Control = fmt.Sprintf("after Bob revokes his second device (version %d), the sender's lookup through the same proxy returns 1 device", res.Version)

	stale, err := d.Proxy.ServeStale(bob, 2)
	if err != nil {
		return err
	}
	d.Proxy.SetRewrite(stale)
	t0 := time.Now()
	_, err = sender.Lookup(ctx, bob)
	if err := expect("stale set under the current epoch", err, client.ErrMapProof); err != nil {
		return err
	}
	r.detect(Detection{By: BySender, After: time.Since(t0), Polls: 1, Err: err,
		Evidence: fmt.Sprintf("version-2 set under the current epoch: lookup refused (step %q: %v)", verifyStep(err), client.ErrMapProof)})

	old, err := d.Proxy.ReplayOld(bob, 2)
	if err != nil {
		return err
	}
	d.Proxy.SetRewrite(old)
	t0 = time.Now()
	_, err = sender.Lookup(ctx, bob)
	if err := expect("whole old answer", err, client.ErrRollback); err != nil {
		return err
	}
	r.detect(Detection{By: BySender, After: time.Since(t0), Polls: 1, Err: err,
		Evidence: fmt.Sprintf("whole version-2 answer with its older epoch: lookup refused (step %q: %v)", verifyStep(err), client.ErrRollback)})

	// A new sender with no trusted state has nothing to roll back from:
	// only the freshness bound protects it.
	clk := &Clock{}
	fresh, err := d.NewDevice(ctx, nil, client.Config{Now: clk.Now})
	if err != nil {
		return err
	}
	res, err = fresh.Lookup(ctx, bob)
	if err == nil && res.Version == 2 {
		oldest := time.UnixMilli(int64(res.Epoch.Record.Timestamp))
		if q := res.Epoch.QuorumTime; !q.IsZero() && q.Before(oldest) {
			oldest = q
		}
		age := time.Since(oldest)
		clk.Advance(d.Params.MaxAge + d.Params.Skew - age + 100*time.Millisecond)
		_, err2 := fresh.Lookup(ctx, bob)
		if err := expect("old answer to a new sender, past the bound", err2, client.ErrStale); err != nil {
			return err
		}
		r.note("a new sender with no trusted state accepted the recorded pre-revocation answer (its epoch was %v old, within MaxAge %v + skew %v); past the bound the same answer fails with %v (the A9 mechanism)",
			age.Round(time.Millisecond), d.Params.MaxAge, d.Params.Skew, client.ErrStale)
	} else if err != nil {
		r.note("a new sender refused the recorded pre-revocation answer too: %v", err)
	}
	d.Proxy.SetRewrite(nil)
	return nil
}

// A7: the operator adds a ghost device through the recovery path and
// removes it again before Bob's next poll.
func runA7(ctx context.Context, w *World, r *Result) error {
	d, err := w.Deploy(ctx, Options{})
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
	other, err := d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	if err := d.Link(ctx, owner, other, bob); err != nil {
		return err
	}
	st, _ := other.State(ctx)
	if _, err := owner.RemoveDevice(ctx, st.Device.ID); err != nil {
		return err
	}
	if _, err := AwaitVersion(ctx, owner, bob, 3); err != nil {
		return err
	}
	reps, err := owner.Monitor(ctx)
	if err != nil || len(reps[0].Alerts) != 0 || len(reps[0].Changes) != 3 {
		return fmt.Errorf("control: %v %+v", err, reps)
	}
	r.Control = "Bob adds and removes a device of his own between two polls: the poll shows both changes by this device, no alert"

	g, err := Ghost()
	if err != nil {
		return err
	}
	t0 := time.Now()
	if _, err := d.Recover(ctx, owner, bob, func(s *api.DeviceSet) { adversary.AddDevice(s, g) }); err != nil {
		return err
	}
	if _, err := d.Recover(ctx, owner, bob, func(s *api.DeviceSet) {
		s.Devices = slices.DeleteFunc(s.Devices, func(x api.Device) bool { return x.ID == g.ID })
	}); err != nil {
		return err
	}
	res, _ := owner.Lookup(ctx, bob)
	if res == nil || len(res.Recipients) != 1 {
		return errors.New("the ghost was not removed again")
	}
	reps, err = owner.Monitor(ctx)
	if err != nil {
		return fmt.Errorf("owner's poll: %w", err)
	}
	m := reps[0]
	i := slices.IndexFunc(m.Alerts, func(a client.Alert) bool { return a.Kind == client.AlertTransientDevice })
	if i < 0 || len(m.Transient) != 1 || m.Transient[0].ID != g.ID || len(m.Changes) != 2 {
		return fmt.Errorf("owner monitor: %w: alerts %v, transient %v", errNotDetected, m.Alerts, m.Transient)
	}
	r.detect(Detection{By: ByOwnerMonitor, After: time.Since(t0), Polls: 1, Detail: m.Alerts,
		Evidence: fmt.Sprintf("alerts %v; transient device %x in versions %d..%d (the current set no longer holds it)",
			kinds(m.Alerts), g.ID[:4], m.Changes[0].Version, m.Changes[1].Version)})
	return nil
}

func kinds(as []client.Alert) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.Kind.String())
	}
	return out
}

// Clock is a controllable client clock: real time plus an offset.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// A9: the proxy freezes the sender's view on a valid epoch and serves it
// forever; the sender's clock moves on.
func runA9(ctx context.Context, w *World, r *Result) error {
	// The bound is short so that the control, which waits for it in real
	// time, stays short; it must still cover an honest epoch's age on a
	// loaded machine (heartbeat, witness round trip).
	const step = time.Second
	d, err := w.Deploy(ctx, Options{MaxAge: 3 * time.Second, Skew: 500 * time.Millisecond})
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
	bound := d.Params.MaxAge + d.Params.Skew
	// Control: an honest directory keeps the sender fresh (heartbeat
	// epochs) across more than the bound of real time.
	honest, err := d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	n := int(bound/step) + 2
	for i := range n {
		if _, err := honest.Lookup(ctx, bob); err != nil {
			return fmt.Errorf("control: lookup %d: %w", i, err)
		}
		time.Sleep(step)
	}
	r.Control = fmt.Sprintf("%d lookups %v apart (%v > MaxAge %v + skew %v) through the transparent proxy all succeed: heartbeat epochs keep the view fresh",
		n, step, time.Duration(n)*step, d.Params.MaxAge, d.Params.Skew)

	clk := &Clock{}
	sender, err := d.NewDevice(ctx, nil, client.Config{Now: clk.Now})
	if err != nil {
		return err
	}
	if err := d.Proxy.Freeze(ctx, 0, bob); err != nil {
		return err
	}
	var elapsed time.Duration
	var accepted int
	for polls := 1; ; polls++ {
		_, err := sender.Lookup(ctx, bob)
		if err != nil {
			if err := expect("frozen view", err, client.ErrStale); err != nil {
				return err
			}
			r.detect(Detection{By: BySender, After: elapsed, Polls: polls, Clock: "client clock", Err: err,
				Evidence: fmt.Sprintf("lookup refused (step %q: %v) once the frozen epoch was older than MaxAge + skew = %v", verifyStep(err), client.ErrStale, bound)})
			break
		}
		accepted++
		if polls > 100 {
			return fmt.Errorf("frozen view: %w after %v", errNotDetected, elapsed)
		}
		clk.Advance(step)
		elapsed += step
	}
	r.note("the frozen view was accepted by %d lookups (%v of client time) before the bound tripped; the exposure window is MaxAge + skew", accepted, time.Duration(accepted)*step)
	d.Proxy.Unfreeze()
	return nil
}
