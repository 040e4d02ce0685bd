package client_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/log/witness"
)

// Audit mode (design.md 12.2 steps 2.2a and 2.5a, 14.1): the epoch
// checkpoint carries audit statements, tlog-cosignature/v1 lines by the
// auditors' audit keys, after the log signature and the cosignatures.

// newAuditors returns n audit keys named a1.example/audit, ...
func newAuditors(t testing.TB, n int) []*cosigner {
	var as []*cosigner
	for i := range n {
		as = append(as, newCosigner(t, fmt.Sprintf("a%d.example/audit", i+1)))
	}
	return as
}

// auditPolicy is the audit policy "k of the auditors" (auditor names
// a1, a2, ...).
func auditPolicy(as []*cosigner, k int) string {
	var b strings.Builder
	var names []string
	for i, a := range as {
		fmt.Fprintf(&b, "auditor a%d %s https://a%d.example\n", i+1, a.VKey(), i+1)
		names = append(names, fmt.Sprintf("a%d", i+1))
	}
	fmt.Fprintf(&b, "group auditors %d %s\nquorum auditors\n", k, strings.Join(names, " "))
	return b.String()
}

// auditParams are f's parameters with the audit policy text.
func (f *fixture) auditParams(t testing.TB, policy string, opts client.Options) *client.Params {
	t.Helper()
	pb := f.k.parameters()
	pb.AuditPolicy = policy
	p, err := client.NewParams(pb, opts)
	if err != nil {
		t.Fatal(err)
	}
	if p.Audit == nil {
		t.Fatal("no audit policy in the params")
	}
	return p
}

// vouch appends audit statements by signers, dated at, to a checkpoint.
func vouch(cp []byte, at time.Time, signers ...*cosigner) []byte {
	text := string(cp[:bytes.Index(cp, []byte("\n\n"))+1])
	out := bytes.Clone(cp)
	for _, s := range signers {
		out = append(out, s.Sign(text, uint64(at.Unix()))...)
	}
	return out
}

// epochTS is the fixture's epoch 1 time.
var epochTS = t0.Add(time.Second)

// TestAuditQuorum breaks each part of step 2.2a once on a lookup answer
// and expects ErrAuditQuorum (an *AuditQuorumError naming who vouched),
// with the controls accepted.
func TestAuditQuorum(t *testing.T) {
	as := newAuditors(t, 3)
	rogue := newCosigner(t, "a2.example/audit") // a2's name, another key
	stranger := newCosigner(t, "a9.example/audit")
	type tc struct {
		name    string
		policy  string // default: 2 of a1, a2
		sign    func(cp []byte) []byte
		want    error
		vouched []string // the statements counted, or the Vouched of the error
		missing []string
		detail  string // in the error message
	}
	two := auditPolicy(as[:2], 2)
	cases := []tc{
		{name: "both statements", sign: func(cp []byte) []byte { return vouch(cp, epochTS, as[0], as[1]) }, vouched: []string{"a1", "a2"}},
		{name: "statements a few seconds later", sign: func(cp []byte) []byte { return vouch(cp, epochTS.Add(5*time.Second), as[0], as[1]) }, vouched: []string{"a1", "a2"}},
		{name: "no statements", sign: func(cp []byte) []byte { return cp }, want: client.ErrAuditQuorum, missing: []string{"a1", "a2"}},
		{name: "one of two", sign: func(cp []byte) []byte { return vouch(cp, epochTS, as[0]) }, want: client.ErrAuditQuorum, vouched: []string{"a1"}, missing: []string{"a2"}},
		{name: "second statement by a key not in the policy, under the auditor's name", sign: func(cp []byte) []byte { return vouch(cp, epochTS, as[0], rogue) }, want: client.ErrAuditQuorum, vouched: []string{"a1"}, missing: []string{"a2"}},
		{name: "second statement by an auditor not in the policy", sign: func(cp []byte) []byte { return vouch(cp, epochTS, as[0], stranger) }, want: client.ErrAuditQuorum, vouched: []string{"a1"}, missing: []string{"a2"}},
		{name: "statement by an auditor of a 2-of-3 outside the pinned 2-of-2", sign: func(cp []byte) []byte { return vouch(cp, epochTS, as[0], as[2]) }, want: client.ErrAuditQuorum, vouched: []string{"a1"}, missing: []string{"a2"}},
		// The witnesses' cosignatures are on every checkpoint: they never
		// count as audit statements (different keys; the same key in both
		// policies is refused by the params, TestAuditParams).
		{name: "witness cosignatures only", sign: func(cp []byte) []byte { return cp }, want: client.ErrAuditQuorum, missing: []string{"a1", "a2"}},
		{name: "invalid statement beside a quorum", policy: auditPolicy(as, 2), sign: func(cp []byte) []byte {
			return editSigs(vouch(cp, epochTS, as[0], as[1], as[2]), func(l []string) []string {
				l[len(l)-1] = corrupt(l[len(l)-1])
				return l
			})
		}, want: client.ErrAuditQuorum, detail: "invalid statement from: a3"},
		{name: "statement dated after now + skew", sign: func(cp []byte) []byte {
			return vouch(vouch(cp, epochTS, as[0]), t0.Add(3*time.Second+client.DefaultSkew+time.Second), as[1])
		}, want: client.ErrAuditQuorum, vouched: []string{"a1"}, missing: []string{"a2"}, detail: "after now + skew"},
		{name: "statement dated before the epoch − skew", sign: func(cp []byte) []byte {
			return vouch(vouch(cp, epochTS, as[0]), epochTS.Add(-client.DefaultSkew-2*time.Second), as[1])
		}, want: client.ErrAuditQuorum, vouched: []string{"a1"}, missing: []string{"a2"}, detail: "before the epoch's timestamp"},
		// Control: a statement not counted for its date does not fail
		// a quorum that the others meet.
		{name: "2 of 3 with the third dated in the future", policy: auditPolicy(as, 2), sign: func(cp []byte) []byte {
			return vouch(vouch(cp, epochTS, as[0], as[1]), t0.Add(time.Hour), as[2])
		}, vouched: []string{"a1", "a2"}},
		{name: "2 of 3 with two", policy: auditPolicy(as, 2), sign: func(cp []byte) []byte { return vouch(cp, epochTS, as[1], as[2]) }, vouched: []string{"a2", "a3"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			policy := c.policy
			if policy == "" {
				policy = two
			}
			p := f.auditParams(t, policy, client.Options{})
			in := f.honest()
			in.resp.Epoch.Checkpoint = c.sign(in.resp.Epoch.Checkpoint)
			res, err := client.VerifyLookup(p, nil, in.handle, in.resp, in.now, nil)
			checkErr(t, err, c.want)
			if c.want == nil {
				var got []string
				for _, s := range res.Epoch.AuditStatements {
					got = append(got, s.Witness)
				}
				if !slices.Equal(got, c.vouched) {
					t.Fatalf("statements of %v, want %v", got, c.vouched)
				}
				if len(res.Epoch.Cosignatures) != 3 {
					t.Fatalf("%d cosignatures", len(res.Epoch.Cosignatures))
				}
				return
			}
			var qe *client.AuditQuorumError
			if !errors.As(err, &qe) {
				t.Fatalf("error %v is not an *AuditQuorumError", err)
			}
			if c.vouched != nil || c.missing != nil {
				if !slices.Equal(qe.Vouched, c.vouched) || !slices.Equal(qe.Missing, c.missing) {
					t.Fatalf("vouched %v, missing %v; want %v, %v", qe.Vouched, qe.Missing, c.vouched, c.missing)
				}
			}
			if !strings.Contains(err.Error(), c.detail) {
				t.Fatalf("error %q does not say %q", err, c.detail)
			}
			for _, m := range qe.Missing {
				if !strings.Contains(err.Error(), m) {
					t.Fatalf("error %q does not name %s", err, m)
				}
			}
		})
	}
}

// TestAuditParams: the audit policy comes from Parameters.audit_policy;
// a key in both policies (a witness cosignature would then count as an
// audit statement), "quorum none", a witness policy in its place, or a
// policy for another log are refused.
func TestAuditParams(t *testing.T) {
	f := newFixture(t)
	as := newAuditors(t, 2)
	w1 := f.k.witnesses[0]
	other := newKeys(t)
	for _, c := range []struct {
		name   string
		policy string
		ok     bool
	}{
		{"2 of 2", auditPolicy(as, 2), true},
		{"witness key as audit key", fmt.Sprintf("auditor a1 %s\nauditor a2 %s\ngroup g 1 a1 a2\nquorum g\n", w1.VKey(), as[1].VKey()), false},
		{"quorum none", fmt.Sprintf("auditor a1 %s\nquorum none\n", as[0].VKey()), false},
		{"witness lines", f.k.policy(), false},
		{"malformed", "auditor a1\n", false},
		{"for another log", fmt.Sprintf("log %s\n", other.logVKey) + auditPolicy(as, 2), false},
		{"for this log", fmt.Sprintf("log %s\n", f.k.logVKey) + auditPolicy(as, 2), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			pb := f.k.parameters()
			pb.AuditPolicy = c.policy
			_, err := client.NewParams(pb, client.Options{})
			if c.ok != (err == nil) || !c.ok && !errors.Is(err, client.ErrInvalidParams) {
				t.Fatalf("NewParams: %v", err)
			}
		})
	}
	// Params filled by hand are checked the same way.
	shared, err := witness.ParseAuditPolicy(fmt.Appendf(nil, "auditor a1 %s\nquorum a1\n", w1.VKey()))
	if err != nil {
		t.Fatal(err)
	}
	p := *f.p
	p.Audit = shared
	if err := p.Validate(); !errors.Is(err, client.ErrInvalidParams) {
		t.Fatalf("Validate with a shared key: %v", err)
	}
	resp := clone(f.s.lookup(alice, 0))
	resp.Epoch.Checkpoint = vouch(resp.Epoch.Checkpoint, epochTS, w1)
	_, err = client.VerifyLookup(&p, nil, alice, resp, f.now, nil)
	checkErr(t, err, client.ErrInvalidParams)
	p.MaxAuditLag = -time.Second
	p.Audit = f.auditParams(t, auditPolicy(as, 2), client.Options{}).Audit
	if err := p.Validate(); !errors.Is(err, client.ErrInvalidParams) {
		t.Fatalf("Validate with a negative MaxAuditLag: %v", err)
	}
	if q := f.auditParams(t, auditPolicy(as, 2), client.Options{MaxAuditLag: time.Minute}); q.MaxAuditLag != time.Minute {
		t.Fatalf("Options.MaxAuditLag not applied: %v", q.MaxAuditLag)
	}
	// Config.MaxAuditLag overrides the parameters' bound, as MaxAge does.
	c, err := client.New(nilDir{}, f.auditParams(t, auditPolicy(as, 2), client.Options{MaxAuditLag: time.Minute}), &client.MemStore{}, client.Config{MaxAuditLag: 5 * time.Second})
	if err != nil || c.Params().MaxAuditLag != 5*time.Second {
		t.Fatalf("Config.MaxAuditLag: %v", err)
	}
}

// TestAuditLag: step 2.5a bounds the epoch's age by MaxAuditLag + Skew
// (default 30 s + 10 s) before the freshness check (MaxAge 60 s + 10 s),
// also for an answer that reuses the trusted epoch; without audit mode the
// same answers are fresh.
func TestAuditLag(t *testing.T) {
	f := newFixture(t)
	as := newAuditors(t, 2)
	p := f.auditParams(t, auditPolicy(as, 2), client.Options{})
	f.e1.checkpoint = vouch(f.e1.checkpoint, epochTS, as...)
	bound := client.DefaultMaxAuditLag + client.DefaultSkew
	for _, c := range []struct {
		name string
		p    *client.Params
		age  time.Duration
		want error
	}{
		{"at the bound", p, bound, nil},
		{"lag bound exceeded, MaxAge not", p, bound + time.Second, client.ErrAuditLag},
		{"same age without audit mode", f.p, bound + time.Second, nil},
		{"MaxAge exceeded too", p, client.DefaultMaxAge + client.DefaultSkew + time.Second, client.ErrAuditLag},
	} {
		t.Run(c.name, func(t *testing.T) {
			now := epochTS.Add(c.age)
			// The statements are dated at the epoch: fine at any age (step
			// 2.2a bounds them by now + skew only from above).
			res, err := client.VerifyLookup(c.p, nil, alice, clone(f.s.lookup(alice, 0)), now, nil)
			checkErr(t, err, c.want)
			if c.want != nil {
				var le *client.AuditLagError
				if !errors.As(err, &le) || le.Epoch != 1 || le.Bound != bound || le.Age != c.age {
					t.Fatalf("error %v: %+v", err, le)
				}
				if !strings.Contains(err.Error(), "epoch 1") {
					t.Fatalf("error %q does not name the epoch", err)
				}
				return
			}
			if c.p == p && len(res.Epoch.AuditStatements) != 2 {
				t.Fatalf("%d statements", len(res.Epoch.AuditStatements))
			}
		})
	}
	// An answer without an epoch part reuses the trusted epoch: the lag
	// bound applies to it too.
	tr, err := client.VerifyLookup(p, nil, alice, clone(f.s.lookup(alice, 0)), f.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp := clone(f.s.lookup(alice, tr.Trusted.Size))
	if resp.Epoch != nil {
		t.Fatal("the simulator sent an epoch part")
	}
	res, err := client.VerifyLookup(p, tr.Trusted, alice, resp, f.now, nil)
	if err != nil || !res.Epoch.Reused || res.Epoch.AuditStatements != nil {
		t.Fatalf("reused epoch: %v", err)
	}
	_, err = client.VerifyLookup(p, tr.Trusted, alice, resp, epochTS.Add(bound+time.Second), nil)
	checkErr(t, err, client.ErrAuditLag)
	// The very note already trusted is not verified again (the per-note
	// cache), but the lag still applies.
	full := clone(f.s.lookup(alice, 0))
	if res, err = client.VerifyLookup(p, tr.Trusted, alice, full, f.now, nil); err != nil || res.Epoch.AuditStatements != nil {
		t.Fatalf("epoch part repeating the trusted note: %v", err)
	}
	_, err = client.VerifyLookup(p, tr.Trusted, alice, full, epochTS.Add(bound+time.Second), nil)
	checkErr(t, err, client.ErrAuditLag)
}

// TestAuditMonitor: the owner's VerifyMonitor and the observer's
// VerifyObserved apply step 2.2a (the observer checks no freshness, so no
// lag); the owner's monitor applies 2.5a.
func TestAuditMonitor(t *testing.T) {
	f := newFixture(t)
	as := newAuditors(t, 2)
	p := f.auditParams(t, auditPolicy(as, 2), client.Options{})
	index := f.s.handle(alice).index
	bare := clone(f.s.monitor(alice, 0, 0))
	f.e1.checkpoint = vouch(f.e1.checkpoint, epochTS, as...)
	vouched := clone(f.s.monitor(alice, 0, 0))
	late := epochTS.Add(client.DefaultMaxAuditLag + client.DefaultSkew + time.Second)
	for _, m := range monitorEntries {
		t.Run(m.name, func(t *testing.T) {
			if _, err := m.verify(f, p, index, clone(vouched), f.now); err != nil {
				t.Fatalf("vouched answer: %v", err)
			}
			_, err := m.verify(f, p, index, clone(bare), f.now)
			checkErr(t, err, client.ErrAuditQuorum)
			// Without audit mode the bare answer is fine.
			if _, err := m.verify(f, f.p, index, clone(bare), f.now); err != nil {
				t.Fatalf("bare answer without audit mode: %v", err)
			}
			_, err = m.verify(f, p, index, clone(vouched), late)
			if m.name == "observer" {
				checkErr(t, err, nil)
			} else {
				checkErr(t, err, client.ErrAuditLag)
			}
		})
	}
	// The owner's later poll that reuses the trusted epoch.
	res, err := client.VerifyMonitor(p, nil, &client.MonitorState{Index: index}, clone(vouched), f.own(), f.now)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Epoch.AuditStatements) != 2 {
		t.Fatalf("%d statements", len(res.Epoch.AuditStatements))
	}
	resp := f.s.monitor(alice, res.State.Version, res.Trusted.Size)
	_, err = client.VerifyMonitor(p, res.Trusted, res.State, resp, f.own(), late)
	checkErr(t, err, client.ErrAuditLag)
}

// TestAuditEpoch: VerifyEpoch itself (the batch lookup's shared epoch).
func TestAuditEpoch(t *testing.T) {
	f := newFixture(t)
	as := newAuditors(t, 1)
	p := f.auditParams(t, auditPolicy(as, 1), client.Options{})
	part := func() *ktpb.EpochPart { return clone(f.s.lookup(alice, 0)).Epoch }
	_, err := client.VerifyEpoch(p, nil, part(), f.now)
	checkErr(t, err, client.ErrAuditQuorum)
	f.e1.checkpoint = vouch(f.e1.checkpoint, epochTS, as...)
	e, err := client.VerifyEpoch(p, nil, part(), f.now)
	if err != nil || len(e.AuditStatements) != 1 || e.AuditStatements[0].Witness != "a1" {
		t.Fatalf("VerifyEpoch: %v", err)
	}
	if s := e.AuditStatements[0]; s.Signature.Name != "a1.example/audit" || !s.Time.Equal(epochTS) {
		t.Fatalf("statement %+v", s)
	}
}
