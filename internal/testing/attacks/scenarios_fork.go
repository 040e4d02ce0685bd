package attacks

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/auditor"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/testwitness"
	"github.com/keytrans/kt/log/evidence"
)

// verifyBundle checks a kt-evidence/v1 bundle offline with the log key
// alone and describes the fork it proves.
func verifyBundle(k *Keys, b []byte) (string, error) {
	v, err := note.NewVerifier(k.LogVKey)
	if err != nil {
		return "", err
	}
	f, err := evidence.Verify(b, v)
	if err != nil {
		return "", fmt.Errorf("evidence bundle does not verify offline: %w (bundle %q)", err, b)
	}
	return fmt.Sprintf("checkpoints of sizes %d and %d (roots %x… and %x…), tree B's root at %d is %x…",
		f.A.Size, f.B.Size, f.A.Hash[:4], f.B.Hash[:4], f.A.Size, f.RootAtA[:4]), nil
}

// awaitEvidence waits until a holds an evidence bundle.
func awaitEvidence(ctx context.Context, a *Auditor) ([]byte, error) {
	var b []byte
	err := poll(ctx, func() (bool, error) {
		evs, err := a.Evidence(Origin)
		if err != nil {
			return false, err
		}
		if len(evs) > 0 {
			b = evs[0]
		}
		return len(evs) > 0, nil
	})
	return b, err
}

func trustedSize(ctx context.Context, c *Device) uint64 {
	st, err := c.State(ctx)
	if err != nil || st.Trusted == nil {
		return 0
	}
	return st.Trusted.Size
}

// A4: the operator runs a second directory with the same keys on a
// separate log (a fork) in which Bob has a ghost device, and shows it to
// one sender and one auditor only. No honest witness cosigns the fork.
func runA4(ctx context.Context, w *World, r *Result) error {
	k, err := NewKeys()
	if err != nil {
		return err
	}
	main, err := w.Deploy(ctx, Options{Keys: k})
	if err != nil {
		return err
	}
	fork, err := w.Deploy(ctx, Options{Keys: k, NoWitness: true})
	if err != nil {
		return err
	}
	url1, sw1 := w.NewAuditorURL()
	url2, sw2 := w.NewAuditorURL()
	aud1, err := w.StartAuditorAt(ctx, "auditor-1", url1, sw1, k, main.LogURL, AuditorOptions{Peers: []auditor.Peer{{Name: "auditor-2", URL: url2}}})
	if err != nil {
		return err
	}
	aud2, err := w.StartAuditorAt(ctx, "auditor-2", url2, sw2, k, fork.LogURL, AuditorOptions{Peers: []auditor.Peer{{Name: "auditor-1", URL: url1}}})
	if err != nil {
		return err
	}
	owner, err := main.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	if err := main.Enroll(ctx, owner, bob, false); err != nil {
		return err
	}
	// In the fork, Bob's handle is enrolled to the adversary's device.
	gdev, err := fork.NewDevice(ctx, fork.Honest, client.Config{})
	if err != nil {
		return err
	}
	if err := fork.Enroll(ctx, gdev, bob, false); err != nil {
		return err
	}

	sender, err := main.NewDevice(ctx, nil, client.Config{Auditors: []string{url1}})
	if err != nil {
		return err
	}
	if _, err := sender.Lookup(ctx, bob); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if err := aud1.AwaitAudited(ctx, trustedSize(ctx, sender)); err != nil {
		return err
	}
	if _, err := sender.Gossip(ctx); err != nil {
		return fmt.Errorf("control: gossip with an auditor of the same view: %w", err)
	}
	r.Control = "a sender on the real log looks Bob up and gossips with an auditor of the same log: consistent"

	// The fork shown to a sender (pinned to the real deployment's
	// parameters, network redirected).
	victim, err := main.NewDevice(ctx, fork.Front, client.Config{Log: fork.LogRPC})
	if err != nil {
		return err
	}
	t0 := time.Now()
	_, err = victim.Lookup(ctx, bob)
	if err := expect("fork shown to a sender", err, client.ErrWitnessQuorum); err != nil {
		return err
	}
	r.detect(Detection{By: BySender, After: time.Since(t0), Polls: 1, Err: err,
		Evidence: fmt.Sprintf("lookup in the fork refused (step %q: %v): no cosignature of the pinned witness", verifyStep(err), client.ErrWitnessQuorum)})

	// The fork shown to an auditor, which gossips with its peer.
	if err := poll(ctx, func() (bool, error) {
		_, err := aud2.Latest(Origin)
		return err == nil, nil
	}); err != nil {
		return fmt.Errorf("auditor-2 audited nothing of the fork: %w", err)
	}
	t0 = time.Now()
	aud2.GossipRound(ctx, Origin)
	b1, err := awaitEvidence(ctx, aud1)
	if err != nil {
		return fmt.Errorf("auditor-1: %w: %w", errNotDetected, err)
	}
	b2, err := awaitEvidence(ctx, aud2)
	if err != nil {
		return fmt.Errorf("auditor-2: %w: %w", errNotDetected, err)
	}
	after := time.Since(t0)
	f, err := verifyBundle(k, b1)
	if err != nil {
		return fmt.Errorf("auditor-1: %w", err)
	}
	if _, err := verifyBundle(k, b2); err != nil {
		return fmt.Errorf("auditor-2: %w", err)
	}
	r.detect(Detection{By: ByAuditor, After: after, Polls: 1, Bundle: b1,
		Evidence: fmt.Sprintf("one gossip round: both auditors hold a kt-evidence/v1 bundle (same bundle: %v), verified offline: %s", string(b1) == string(b2), f)})

	// A sender on the real log gossips with the auditor shown the fork.
	s2, err := main.NewDevice(ctx, nil, client.Config{Auditors: []string{url2}})
	if err != nil {
		return err
	}
	if _, err := s2.Lookup(ctx, bob); err != nil {
		return err
	}
	t0 = time.Now()
	_, gerr := s2.Gossip(ctx)
	var sv *client.SplitViewError
	if !errors.As(gerr, &sv) {
		return fmt.Errorf("sender gossip: got %v, want a SplitViewError", gerr)
	}
	after = time.Since(t0)
	bundle, how := sv.Evidence, "the SplitViewError's bundle: the auditor's 409 answer, or built by the client over its Log service"
	if len(bundle) == 0 {
		// Whichever view is the smaller, one side holds the larger tree and
		// can prove the fork: the auditor answers 409 with a bundle, or the
		// client builds one over its own Log service.
		return fmt.Errorf("sender gossip with auditor-2: a SplitViewError without evidence (%v)", sv)
	}
	f, err = verifyBundle(k, bundle)
	if err != nil {
		return fmt.Errorf("sender gossip with auditor-2 (%v): %w", sv, err)
	}
	r.detect(Detection{By: BySender, After: after, Polls: 1, Err: gerr, Bundle: bundle,
		Evidence: fmt.Sprintf("gossip with auditor-2: %v; kt-evidence/v1 bundle (%s), verified offline: %s", client.ErrSplitView, how, f)})
	return nil
}

// A5: the operator replaces its directory by one with the same keys on a
// new log (a rewritten history in which Bob has a ghost device), cosigned
// by a witness whose key it stole, and points the sender and the auditor
// at it.
func runA5(ctx context.Context, w *World, r *Result) error {
	k, err := NewKeys()
	if err != nil {
		return err
	}
	orig, err := w.Deploy(ctx, Options{Keys: k})
	if err != nil {
		return err
	}
	stolen, err := testwitness.New("witness.attacks.example")
	if err != nil {
		return err
	}
	if err := stolen.AddLog(Origin, k.LogVKey); err != nil {
		return err
	}
	stolen.SetBehavior(testwitness.Behavior{SignWith: orig.Witness.Signer()})
	rewritten, err := w.Deploy(ctx, Options{Keys: k, Witness: stolen, WitnessKey: orig.Witness.VerifierKey()})
	if err != nil {
		return err
	}
	sw := &Switch{}
	sw.Set(orig.LogHandler)
	logURL := w.httpServer(sw)
	aud, err := w.StartAuditor(ctx, "auditor-1", k, logURL, AuditorOptions{})
	if err != nil {
		return err
	}
	owner, err := orig.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	if err := orig.Enroll(ctx, owner, bob, false); err != nil {
		return err
	}
	sender, err := orig.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	if _, err := sender.Lookup(ctx, bob); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	s0 := trustedSize(ctx, sender)
	time.Sleep(2 * HeartbeatInterval)
	if _, err := sender.Lookup(ctx, bob); err != nil {
		return fmt.Errorf("control: a later lookup: %w", err)
	}
	if trustedSize(ctx, sender) <= s0 {
		return errors.New("control: the log did not grow")
	}
	if err := auditedClean(ctx, aud, sender); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	r.Control = fmt.Sprintf("the sender's trusted checkpoint moves from size %d to %d with a verified consistency proof; the auditor replays it cleanly", s0, trustedSize(ctx, sender))

	// The rewritten history: Bob enrolled to the adversary's device,
	// grown past what the sender and the auditor have seen.
	gdev, err := rewritten.NewDevice(ctx, rewritten.Honest, client.Config{})
	if err != nil {
		return err
	}
	if err := rewritten.Enroll(ctx, gdev, bob, false); err != nil {
		return err
	}
	var seen uint64
	for _, s := range aud.Status() {
		if s.Latest != nil {
			seen = s.Latest.Size
		}
	}
	target := max(trustedSize(ctx, sender), seen) + 1
	if err := poll(ctx, func() (bool, error) {
		if _, err := gdev.Lookup(ctx, bob); err != nil {
			return false, err
		}
		return trustedSize(ctx, gdev) > target, nil
	}); err != nil {
		return fmt.Errorf("the rewritten log did not grow past %d: %w", target, err)
	}
	orig.Proxy.SetUpstream(rewritten.Honest)
	sw.Set(rewritten.LogHandler)
	t0 := time.Now()
	_, err = sender.Lookup(ctx, bob)
	if err := expect("rewritten history shown to the sender", err, client.ErrInconsistent); err != nil {
		return err
	}
	var ie *client.InconsistencyError
	ev := fmt.Sprintf("lookup refused (step %q: %v)", verifyStep(err), client.ErrInconsistent)
	var bundle []byte
	if errors.As(err, &ie) {
		// The rewritten log serves the larger tree, so it can be asked for
		// the proof when the received one does not prove the fork alone.
		var berr error
		bundle, berr = ie.Evidence(ctx, sender.Params(), rewritten.LogRPC)
		if berr != nil {
			ev += "; the InconsistencyError makes no bundle: " + berr.Error()
			bundle = nil
		} else if f, verr := verifyBundle(k, bundle); verr == nil {
			ev += "; its InconsistencyError makes a kt-evidence/v1 bundle, verified offline: " + f
		} else {
			ev += "; the InconsistencyError's checkpoints and proof do not make a verifiable bundle: " + verr.Error()
			bundle = nil
		}
	}
	r.detect(Detection{By: BySender, After: time.Since(t0), Polls: 1, Err: err, Bundle: bundle, Evidence: ev})

	b, err := awaitEvidence(ctx, aud)
	if err != nil {
		return fmt.Errorf("auditor: %w: %w", errNotDetected, err)
	}
	f, err := verifyBundle(k, b)
	if err != nil {
		return err
	}
	st := aud.Status()[0]
	r.detect(Detection{By: ByAuditor, After: time.Since(t0), Bundle: b,
		Evidence: fmt.Sprintf("kt-evidence/v1 bundle, verified offline: %s; the auditor froze the log (%q)", f, st.Frozen)})
	return nil
}
