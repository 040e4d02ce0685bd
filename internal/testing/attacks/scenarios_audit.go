package attacks

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/attacks/adversary"
	"github.com/keytrans/kt/log/evidence"
)

// ghostChange returns version res.Version+1 of res's handle with a ghost
// device added, of the given kind, signed by signer (nil: the ghost's own
// key, which is not an authorizer of the previous version: R5).
func ghostChange(res *client.LookupResult, kind api.AuthKind, signer []byte) (*ktpb.HandleChange, error) {
	g, err := client.GenerateDevice(api.SuiteX25519, time.Now())
	if err != nil {
		return nil, err
	}
	key := g.Signing
	if signer != nil {
		key = signer
	}
	set := &api.DeviceSet{AccountID: res.DeviceSet.AccountID, Devices: slices.Clone(res.DeviceSet.Devices)}
	adversary.AddDevice(set, g.Device())
	return client.NewChange(Origin, res, set, kind, key)
}

// evidenceParams are what a verifier of dd's evidence pins.
func (dd *Dishonest) evidenceParams() evidence.Params {
	return evidence.Params{Origin: Origin, LogVerifier: dd.Params.LogVerifier, RecoveryKey: dd.Params.RecoveryKey}
}

// awaitBundle waits until a holds a kt-evidence/v2 bundle of kind and
// returns it.
func awaitBundle(ctx context.Context, a *Auditor, kind evidence.Kind) ([]byte, error) {
	var found []byte
	err := poll(ctx, func() (bool, error) {
		evs, err := a.Evidence(Origin)
		if err != nil {
			return false, err
		}
		for _, b := range evs {
			if k, err := bundleKind(b); err == nil && k == kind {
				found = b
				return true, nil
			}
		}
		return false, nil
	})
	return found, err
}

func bundleKind(b []byte) (evidence.Kind, error) {
	p, err := evidence.Parse(b)
	if err != nil {
		return "", err
	}
	return p.Kind, nil
}

var (
	ktctlOnce sync.Once
	ktctlBin  string
	ktctlErr  error
)

// ktctl runs the ktctl binary (built once per process with the go
// command, as an operator or researcher would run it) and returns its
// combined output and exit status.
func ktctl(ctx context.Context, args ...string) (string, int, error) {
	ktctlOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ktattack-ktctl-")
		if err != nil {
			ktctlErr = err
			return
		}
		bin := filepath.Join(dir, "ktctl")
		out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/keytrans/kt/cmd/ktctl").CombinedOutput()
		if err != nil {
			ktctlErr = fmt.Errorf("building ktctl: %w: %s", err, out)
			return
		}
		ktctlBin = bin
	})
	if ktctlErr != nil {
		return "", 0, ktctlErr
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, ktctlBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode(), nil
	}
	return out.String(), 0, err
}

// ktctlVerify writes bundle to a file of w and runs `ktctl evidence
// verify` on it with the pinned keys (and extra flags); it fails unless
// ktctl exits 0, and returns its output on one line.
func (dd *Dishonest) ktctlVerify(ctx context.Context, w *World, bundle []byte, extra ...string) (string, error) {
	dir, err := w.dir("evidence")
	if err != nil {
		return "", err
	}
	file := filepath.Join(dir, "bundle.txt")
	if err := os.WriteFile(file, bundle, 0o600); err != nil {
		return "", err
	}
	args := append([]string{"evidence", "verify", file, "--log-key", dd.Keys.LogVKey,
		"--recovery-key", base64.StdEncoding.EncodeToString(dd.Params.RecoveryKey[:])}, extra...)
	out, code, err := ktctl(ctx, args...)
	if err != nil {
		return "", err
	}
	out = strings.Join(strings.Fields(out), " ")
	if code != 0 {
		return "", fmt.Errorf("ktctl %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
	// The verdict, without the bundle's listing.
	if i := strings.LastIndex(out, "result "); i >= 0 {
		out = out[i:]
	}
	return out, nil
}

// refused checks that every auditor answered 403 about ep and returns
// the answers.
func refused(ep *adversary.Epoch) error {
	if ep.Audited || len(ep.Audit) == 0 {
		return fmt.Errorf("epoch %d was vouched for: %s", ep.Number, auditAnswers(ep))
	}
	for _, a := range ep.Audit {
		if a.Status != 403 {
			return fmt.Errorf("%s answered %d, want 403: %s", a.Auditor, a.Status, auditAnswers(ep))
		}
	}
	return nil
}

// forceUnaudited makes dd serve ep and checks that a sender's lookup
// (and its Encrypt) fails with ErrAuditQuorum.
func forceUnaudited(ctx context.Context, dd *Dishonest, ep *adversary.Epoch, r *Result) error {
	dd.Dir.Serve(ep)
	victim, err := dd.NewDevice(ctx, client.Config{})
	if err != nil {
		return err
	}
	t0 := time.Now()
	envs, err := victim.Encrypt(ctx, bob, []byte("hello Bob"))
	if err := expect("unaudited epoch served anyway", err, client.ErrAuditQuorum); err != nil {
		return err
	}
	if len(envs) != 0 {
		return fmt.Errorf("%d envelopes produced from an unaudited epoch", len(envs))
	}
	r.detect(Detection{By: BySender, After: time.Since(t0), Polls: 1, Err: err,
		Evidence: fmt.Sprintf("epoch %d served anyway (forcing path): Encrypt refused, no envelope (step %q: %v)", ep.Number, verifyStep(err), err)})
	return nil
}

// A11, variant 1: the operator logs a change for Bob signed by a key that
// is not an authorizer of his previous version (R5), in the log and in
// the map, to show a sender a ghost in epoch N (and would restore Bob's
// record in N+1). The auditors of the audit policy replay the log before
// they vouch, so epoch N is never served.
func runA11(ctx context.Context, w *World, r *Result) error {
	dd, err := w.DeployDishonest(ctx, DishonestOptions{Auditors: 2})
	if err != nil {
		return err
	}
	owner, err := dd.NewDevice(ctx, client.Config{})
	if err != nil {
		return err
	}
	if _, err := dd.Enroll(ctx, owner, bob); err != nil {
		return err
	}
	sender, err := dd.NewDevice(ctx, client.Config{Auditors: dd.AuditorURLs})
	if err != nil {
		return err
	}
	// The sender signs with a device of its handle (design.md 12.3).
	if _, err := dd.Enroll(ctx, sender, alice); err != nil {
		return err
	}
	// Control: an honest change, audited and served; the sender encrypts
	// to Bob's devices.
	if _, err := owner.Rekey(ctx); err != nil {
		return err
	}
	ctl, err := dd.CloseEpoch(ctx)
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	res, err := AwaitVersion(ctx, sender, bob, 2)
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if envs, err := sender.Encrypt(ctx, bob, []byte("hello Bob")); err != nil || len(envs) != 1 {
		return fmt.Errorf("control: Encrypt: %d envelopes, %v", len(envs), err)
	}
	r.Control = fmt.Sprintf("Bob's honest re-key (version 2) in epoch %d: both auditors vouch for it (%d statements on the served checkpoint), the sender encrypts to Bob's 1 device", ctl.Number, len(res.Epoch.AuditStatements))

	hc, err := ghostChange(res, api.AuthDevice, nil)
	if err != nil {
		return err
	}
	t0 := time.Now()
	forged, err := dd.Dir.AppendForged(ctx, hc, true)
	if err != nil {
		return err
	}
	epN, err := dd.Dir.CloseEpoch(ctx)
	if err != nil {
		return err
	}
	if err := refused(epN); err != nil {
		return fmt.Errorf("auditors: %w: %w", errNotDetected, err)
	}
	r.detect(Detection{By: ByAuditor, After: time.Since(t0), Polls: 1,
		Evidence: fmt.Sprintf("epoch %d (Bob's version 3 at log index %d, signed by a key that is not an authorizer of version 2) not vouched for: %s; the directory keeps serving epoch %d", epN.Number, forged.LogIndex, auditAnswers(epN), dd.Dir.Served().Number)})

	// The sender never sees the ghost.
	if res, err := sender.Lookup(ctx, bob); err != nil || res.Version != 2 {
		return fmt.Errorf("the sender's lookup while epoch %d is refused: version %d, %v", epN.Number, res.Version, err)
	}
	r.note("while the auditors refuse epoch %d the sender's lookups show Bob's version 2 with his 1 device: the ghost is never served to a client of the audit policy", epN.Number)

	// The auditor's records bundle.
	bundle, err := awaitBundle(ctx, dd.Auditors[0], "records")
	if err != nil {
		return fmt.Errorf("auditor-1 holds no records bundle: %w", err)
	}
	after := time.Since(t0)
	kind, what, replay, err := evidence.Check(dd.evidenceParams(), bundle)
	if err != nil || kind != "records" || replay {
		return fmt.Errorf("the records bundle does not verify offline: %v (kind %q)", err, kind)
	}
	out, err := dd.ktctlVerify(ctx, w, bundle)
	if err != nil {
		return err
	}
	r.detect(Detection{By: ByAuditor, After: after, Bundle: bundle,
		Evidence: fmt.Sprintf("kt-evidence/v2 records bundle, verified offline by evidence.Check (%s) and by `ktctl evidence verify` (%s)", what, out)})

	// The forcing path: epoch N served anyway.
	if err := forceUnaudited(ctx, dd, epN, r); err != nil {
		return err
	}
	dd.Dir.Serve(ctl)

	// A client given the bundle refuses the log: through ReportEvidence,
	// and through gossip with an auditor that holds it.
	if err := sender.ReportEvidence(ctx, bundle); err != nil {
		return fmt.Errorf("ReportEvidence: %w", err)
	}
	t1 := time.Now()
	_, err = sender.Lookup(ctx, bob)
	if err := expect("lookup after ReportEvidence", err, client.ErrLogRefused); err != nil {
		return err
	}
	r.detect(Detection{By: BySender, After: time.Since(t1), Polls: 1, Err: err,
		Evidence: fmt.Sprintf("given the bundle (ReportEvidence), the client refuses the log: %v", err)})
	other, err := dd.NewDevice(ctx, client.Config{Auditors: dd.AuditorURLs[:1]})
	if err != nil {
		return err
	}
	if _, err := other.Lookup(ctx, bob); err != nil {
		return err
	}
	t1 = time.Now()
	_, gerr := other.Gossip(ctx)
	_, err = other.Lookup(ctx, bob)
	if err := expect("lookup after gossip with auditor-1", err, client.ErrLogRefused); err != nil {
		return fmt.Errorf("%w (gossip: %v)", err, gerr)
	}
	r.detect(Detection{By: BySender, After: time.Since(t1), Polls: 2, Err: err,
		Evidence: fmt.Sprintf("gossip with auditor-1 (%v) gave another client the bundle; it refuses the log: %v", gerr, err)})
	return nil
}

// A11, variant 2: the operator's map points Bob's index at a record the
// log does not hold (a recovery adding a ghost, never logged). Auditors
// recompute the map root, refuse the epoch and hold a map-root bundle,
// which ktctl confirms by replaying the log.
func runA11MapNotFromLog(ctx context.Context, w *World, r *Result) error {
	dd, err := w.DeployDishonest(ctx, DishonestOptions{Auditors: 2})
	if err != nil {
		return err
	}
	owner, err := dd.NewDevice(ctx, client.Config{})
	if err != nil {
		return err
	}
	if _, err := dd.Enroll(ctx, owner, bob); err != nil {
		return err
	}
	sender, err := dd.NewDevice(ctx, client.Config{})
	if err != nil {
		return err
	}
	if _, err := owner.Rekey(ctx); err != nil {
		return err
	}
	ctl, err := dd.CloseEpoch(ctx)
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	res, err := AwaitVersion(ctx, sender, bob, 2)
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	r.Control = fmt.Sprintf("Bob's honest re-key (version 2) in epoch %d: its map root is the map of the log, both auditors vouch, the sender sees version 2", ctl.Number)

	hc, err := ghostChange(res, api.AuthRecovery, dd.Keys.Recovery)
	if err != nil {
		return err
	}
	kept, err := dd.Dir.Keep(hc)
	if err != nil {
		return err
	}
	t0 := time.Now()
	epN, err := dd.Dir.CloseEpoch(ctx, adversary.Point(kept))
	if err != nil {
		return err
	}
	if err := refused(epN); err != nil {
		return fmt.Errorf("auditors: %w: %w", errNotDetected, err)
	}
	r.detect(Detection{By: ByAuditor, After: time.Since(t0), Polls: 1,
		Evidence: fmt.Sprintf("epoch %d (its map holds Bob's version 3, a record the log does not hold) not vouched for: %s", epN.Number, auditAnswers(epN))})
	if res, err := sender.Lookup(ctx, bob); err != nil || res.Version != 2 {
		return fmt.Errorf("the sender's lookup while epoch %d is refused: version %d, %v", epN.Number, res.Version, err)
	}

	bundle, err := awaitBundle(ctx, dd.Auditors[0], "map-root")
	if err != nil {
		return fmt.Errorf("auditor-1 holds no map-root bundle: %w", err)
	}
	after := time.Since(t0)
	kind, what, replay, err := evidence.Check(dd.evidenceParams(), bundle)
	if err != nil || kind != "map-root" || !replay {
		return fmt.Errorf("the map-root bundle: kind %q, needs replay %v, %v", kind, replay, err)
	}
	out, err := dd.ktctlVerify(ctx, w, bundle, "--log-url", dd.LogURL)
	if err != nil {
		return err
	}
	r.detect(Detection{By: ByAuditor, After: after, Bundle: bundle,
		Evidence: fmt.Sprintf("kt-evidence/v2 map-root bundle: signature and inclusion verified offline (%s; needs a replay), and `ktctl evidence verify --log-url` replayed the log: %s", what, out)})

	if err := forceUnaudited(ctx, dd, epN, r); err != nil {
		return err
	}
	// A client cannot replay: it does not refuse the log on this bundle
	// alone (design.md 15.1); the auditors' refusal protects it.
	dd.Dir.Serve(ctl)
	if err := sender.ReportEvidence(ctx, bundle); err == nil {
		return errors.New("a client accepted a map-root bundle as a reason to refuse the log")
	} else if _, lerr := sender.Lookup(ctx, bob); lerr != nil {
		return fmt.Errorf("after a map-root bundle the client refuses the log: %w", lerr)
	} else {
		r.note("given the map-root bundle, a client does not refuse the log (%v): it cannot replay; the auditors' refusal is what protects it", err)
	}
	return nil
}

// A11, without auditors: the same forged change reaches a sender whose
// parameters have no audit policy (the control of why auditors matter);
// the operator restores Bob's record in epoch N+1, and the sender's
// contact monitoring proves the regression.
func runA11ContactMonitoring(ctx context.Context, w *World, r *Result) error {
	dd, err := w.DeployDishonest(ctx, DishonestOptions{})
	if err != nil {
		return err
	}
	owner, err := dd.NewDevice(ctx, client.Config{})
	if err != nil {
		return err
	}
	if _, err := dd.Enroll(ctx, owner, bob); err != nil {
		return err
	}
	sender, err := dd.NewDevice(ctx, client.Config{})
	if err != nil {
		return err
	}
	// The sender signs with a device of its handle (design.md 12.3).
	if _, err := dd.Enroll(ctx, sender, alice); err != nil {
		return err
	}
	if envs, err := sender.Encrypt(ctx, bob, []byte("hello Bob")); err != nil || len(envs) != 1 {
		return fmt.Errorf("control: Encrypt: %d envelopes, %v", len(envs), err)
	}
	if _, err := owner.Rekey(ctx); err != nil {
		return err
	}
	if _, err := dd.CloseEpoch(ctx); err != nil {
		return err
	}
	if _, err := dd.CloseEpoch(ctx); err != nil {
		return err
	}
	reps, err := sender.CheckContacts(ctx)
	if err != nil {
		return fmt.Errorf("control: contact check: %w", err)
	}
	res, err := AwaitVersion(ctx, sender, bob, 2)
	if err != nil {
		return err
	}
	if len(reps) != 1 || reps[0].Err != nil {
		return fmt.Errorf("control: contact reports %+v", reps)
	}
	r.Control = "the sender encrypts to Bob (version 1), Bob re-keys (version 2); two epochs later the sender's contact check follows the chain (records-only Monitor) and is clean, and its lookup shows version 2"

	hc, err := ghostChange(res, api.AuthDevice, nil)
	if err != nil {
		return err
	}
	forged, err := dd.Dir.AppendForged(ctx, hc, true)
	if err != nil {
		return err
	}
	epN, err := dd.CloseEpoch(ctx)
	if err != nil {
		return err
	}
	envs, err := sender.Encrypt(ctx, bob, []byte("hello Bob"))
	if err != nil || len(envs) != 2 {
		return fmt.Errorf("epoch %d without auditors: Encrypt: %d envelopes, %v (want the ghost's too)", epN.Number, len(envs), err)
	}
	r.note("without an audit policy the sender encrypts to the ghost in epoch %d (%d envelopes, Bob's version 3 at log index %d breaks R5): nothing a client checks on one lookup catches a logged change that breaks the rules; the auditors of the audit policy would have refused the epoch (TestA11ForgedRecord)", epN.Number, len(envs), forged.LogIndex)

	honest, err := dd.Dir.Record(res.LeafHash)
	if err != nil {
		return err
	}
	t0 := time.Now()
	epN1, err := dd.Dir.CloseEpoch(ctx, adversary.Point(honest))
	if err != nil {
		return err
	}
	if reps, err := owner.Monitor(ctx); err == nil && len(reps) == 1 && len(reps[0].Alerts) == 0 {
		r.note("Bob's monitor in epoch %d finds an intact chain (version 2) and no alert: it never saw epoch %d", epN1.Number, epN.Number)
	}
	_, err = sender.CheckContacts(ctx)
	after := time.Since(t0)
	if err := expect("contact check in epoch N+1", err, client.ErrContactChanged); err != nil {
		return err
	}
	var cc *client.ContactChangedError
	if !errors.As(err, &cc) || len(cc.Evidence) == 0 {
		return fmt.Errorf("the contact alert carries no evidence: %v", err)
	}
	kind, what, _, cerr := evidence.Check(dd.evidenceParams(), cc.Evidence)
	if cerr != nil || kind != "map-regression" {
		return fmt.Errorf("the contact alert's bundle: kind %q, %v", kind, cerr)
	}
	out, kerr := dd.ktctlVerify(ctx, w, cc.Evidence)
	if kerr != nil {
		return kerr
	}
	r.detect(Detection{By: BySender, After: after, Polls: 1, Err: err, Bundle: cc.Evidence,
		Evidence: fmt.Sprintf("contact check in epoch %d: %v; kt-evidence/v2 map-regression bundle, verified offline by evidence.Check (%s) and `ktctl evidence verify` (%s)", epN1.Number, err, what, out)})
	t1 := time.Now()
	_, err = sender.Lookup(ctx, bob)
	if err := expect("lookup after the contact alert", err, client.ErrLogRefused); err != nil {
		return err
	}
	r.detect(Detection{By: BySender, After: time.Since(t1), Polls: 1, Err: err,
		Evidence: fmt.Sprintf("after the alert the client refuses the log: %v", err)})
	return nil
}

// A14: the honest directory in audit mode loses its auditors (the
// network between them is cut, as when it withholds its epochs from them
// or they stall). It goes on publishing but keeps serving its last
// audited epoch, which ages until the sender's audit lag bound refuses
// it, long before MaxAge.
func runA14(ctx context.Context, w *World, r *Result) error {
	// The skew is 1 s, not less: audit statements carry whole seconds (see
	// docs/attacks.md, Findings).
	const lag, skew, every = 2 * time.Second, time.Second, 250 * time.Millisecond
	d, err := w.Deploy(ctx, Options{Auditors: 2, MaxAuditLag: lag, Skew: skew})
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
	sender, err := d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	bound := lag + skew
	// Control: the auditors reachable, lookups over more than the bound.
	var n int
	var oldest time.Duration
	for start := time.Now(); time.Since(start) < bound+time.Second; n++ {
		res, err := sender.Lookup(ctx, bob)
		if err != nil {
			return fmt.Errorf("control: lookup %d: %w", n+1, err)
		}
		if len(res.Epoch.AuditStatements) == 0 && !res.Epoch.Reused {
			return fmt.Errorf("control: an epoch without audit statements")
		}
		oldest = max(oldest, time.Since(time.UnixMilli(int64(res.Epoch.Record.Timestamp))))
		time.Sleep(every)
	}
	r.Control = fmt.Sprintf("auditors reachable: %d lookups %v apart over more than MaxAuditLag %v + skew %v all pass (the served epoch at most %v old: each heartbeat epoch is audited and served)", n, every, lag, skew, oldest.Round(time.Millisecond))

	before, err := d.Honest.GetEpoch(ctx, &ktpb.GetEpochRequest{})
	if err != nil {
		return err
	}
	t0 := time.Now()
	for _, a := range d.Auditors {
		a.Close()
	}
	polls := 0
	var lerr error
	for {
		polls++
		if _, lerr = sender.Lookup(ctx, bob); lerr != nil {
			break
		}
		if time.Since(t0) > Wait {
			return fmt.Errorf("sender: %w within %v", errNotDetected, Wait)
		}
		time.Sleep(every)
	}
	after := time.Since(t0)
	if err := expect("lookup with the auditors cut off", lerr, client.ErrAuditLag); err != nil {
		return err
	}
	if errors.Is(lerr, client.ErrStale) {
		return fmt.Errorf("the audit lag failure is also a staleness failure: %w", lerr)
	}
	maxAge := d.Params.MaxAge
	if maxAge == 0 {
		maxAge = client.DefaultMaxAge
	}
	var le *client.AuditLagError
	if !errors.As(lerr, &le) || le.Age >= maxAge {
		return fmt.Errorf("audit lag error %v: no age, or older than MaxAge %v", lerr, maxAge)
	}
	now, err := d.Honest.GetEpoch(ctx, &ktpb.GetEpochRequest{})
	if err != nil {
		return err
	}
	cp, err := d.LogRPC.GetCheckpoint(ctx, &ktpb.GetCheckpointRequest{})
	if err != nil {
		return err
	}
	servedSize, _ := noteSize(now.Checkpoint)
	logSize, _ := noteSize(cp.Note)
	if servedSize < mustSize(before.Checkpoint) {
		return fmt.Errorf("the served epoch went back")
	}
	if logSize <= servedSize {
		return fmt.Errorf("the directory stopped publishing (log %d, served %d)", logSize, servedSize)
	}
	r.detect(Detection{By: BySender, After: after, Polls: polls, Err: lerr,
		Evidence: fmt.Sprintf("lookup refused (step %q): %v; MaxAge %v not exceeded: the directory went on publishing (log size %d) but served its last audited epoch (checkpoint size %d)", verifyStep(lerr), lerr, maxAge, logSize, servedSize)})
	r.note("the served epoch was accepted for %d lookups (%v) after the cut: the exposure window is MaxAuditLag + skew from the last audited epoch", polls-1, after.Round(time.Millisecond))
	return nil
}

// noteSize reads a checkpoint note's tree size (unverified).
func noteSize(n []byte) (uint64, error) {
	lines := strings.SplitN(string(n), "\n", 3)
	if len(lines) < 3 {
		return 0, errors.New("malformed checkpoint")
	}
	return strconv.ParseUint(lines[1], 10, 64)
}

func mustSize(n []byte) uint64 { s, _ := noteSize(n); return s }
