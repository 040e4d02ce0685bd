package client_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
)

// monitorEntry is one of the two entry points of the monitor check: the
// owner's VerifyMonitor (from version 0, trusting nothing yet) and the
// observer's VerifyObserved. Both return the verified changes.
type monitorEntry struct {
	name   string
	verify func(f *fixture, p *client.Params, index [32]byte, resp *ktpb.MonitorResponse, now time.Time) ([]client.Change, error)
}

var monitorEntries = []monitorEntry{
	{"owner", func(f *fixture, p *client.Params, index [32]byte, resp *ktpb.MonitorResponse, now time.Time) ([]client.Change, error) {
		res, err := client.VerifyMonitor(p, nil, &client.MonitorState{Index: index}, resp, f.own(), now)
		if err != nil {
			return nil, err
		}
		return res.Changes, nil
	}},
	{"observer", func(f *fixture, p *client.Params, index [32]byte, resp *ktpb.MonitorResponse, now time.Time) ([]client.Change, error) {
		o, err := client.VerifyObserved(p, index, resp, now)
		if err != nil {
			return nil, err
		}
		if o.Index != index || o.Epoch == nil {
			return nil, errors.New("observation without its index or epoch")
		}
		return o.Changes, nil
	}},
}

// byVersion returns the change of r with the given version.
func byVersion(t *testing.T, r *ktpb.MonitorResponse, v uint64) *ktpb.MonitoredChange {
	t.Helper()
	for _, c := range r.Changes {
		if rec, err := api.ParseChangeRecord(c.ChangeRecord); err == nil && rec.Version == v {
			return c
		}
	}
	t.Fatalf("no version %d in the answer", v)
	return nil
}

// TestMonitorEntryPoints breaks each check of a monitoring answer once and
// expects the same typed error from both entry points, which share one
// implementation. Where they differ by design (freshness, the owner's
// classification), the case says so.
func TestMonitorEntryPoints(t *testing.T) {
	type tc struct {
		name  string
		setup func(t *testing.T, f *fixture) // extra history before the epoch
		edit  func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) *ktpb.MonitorResponse
		now   func(f *fixture) time.Time
		want  error
		// observerWant overrides want for the observer, when set.
		observerWant error
		observerOK   bool
	}
	none := func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) *ktpb.MonitorResponse { return r }
	edit := func(e func(t *testing.T, f *fixture, r *ktpb.MonitorResponse)) func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) *ktpb.MonitorResponse {
		return func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) *ktpb.MonitorResponse {
			e(t, f, r)
			return r
		}
	}
	tests := []tc{
		{name: "genuine", edit: none},

		// Step 1: parse.
		{name: "no response", edit: func(*testing.T, *fixture, *ktpb.MonitorResponse) *ktpb.MonitorResponse { return nil }, want: client.ErrMalformed},
		{name: "map proof malformed", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) { r.MapProof = r.MapProof[:1] }), want: client.ErrMalformed},
		{name: "change record truncated", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			byVersion(t, r, 2).ChangeRecord = byVersion(t, r, 2).ChangeRecord[:100]
		}), want: client.ErrMalformed},
		{name: "opening of 31 bytes", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			byVersion(t, r, 2).Opening = byVersion(t, r, 2).Opening[:31]
		}), want: client.ErrMalformed},
		{name: "device set truncated", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			c := byVersion(t, r, 2)
			c.DeviceSet = c.DeviceSet[:len(c.DeviceSet)-1]
		}), want: client.ErrMalformed},
		{name: "inclusion proof hash of 31 bytes", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			c := byVersion(t, r, 2)
			c.InclusionProof[0] = c.InclusionProof[0][:31]
		}), want: client.ErrMalformed},
		{name: "no epoch part", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) { r.Epoch = nil }), want: client.ErrMalformed},
		{name: "epoch record truncated", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			r.Epoch.EpochRecord = r.Epoch.EpochRecord[:10]
		}), want: client.ErrMalformed},

		// Step 1 of 13: the epoch part (12.2 step 2).
		{name: "checkpoint signature corrupted", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			r.Epoch.Checkpoint = editSigs(r.Epoch.Checkpoint, func(l []string) []string {
				l[0] = corrupt(l[0])
				return l
			})
		}), want: client.ErrCheckpointSignature},
		{name: "cosignature corrupted", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			r.Epoch.Checkpoint = editSigs(r.Epoch.Checkpoint, func(l []string) []string {
				l[1] = corrupt(l[1])
				return l
			})
		}), want: client.ErrWitnessQuorum},
		{name: "cosignatures below the quorum", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			r.Epoch.Checkpoint = editSigs(r.Epoch.Checkpoint, func(l []string) []string { return l[:2] })
		}), want: client.ErrWitnessQuorum},
		{name: "epoch record not the last entry", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			e, _ := api.ParseEpochRecord(r.Epoch.EpochRecord)
			e.LogSize--
			r.Epoch.EpochRecord, _ = e.MarshalBinary()
		}), want: client.ErrNotLatestEpoch},
		{name: "epoch record of another map root", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			r.Epoch.EpochRecord = flip(r.Epoch.EpochRecord, -1)
		}), want: client.ErrEpochInclusion},
		{name: "epoch inclusion proof corrupted", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			r.Epoch.InclusionProof[0] = flip(r.Epoch.InclusionProof[0], 0)
		}), want: client.ErrEpochInclusion},
		{
			name: "stale epoch", edit: none,
			now:  func(f *fixture) time.Time { return f.now.Add(time.Hour) },
			want: client.ErrStale, observerOK: true, // an observer does not check freshness
		},

		// Step 3: the chain.
		{name: "change of another handle spliced in", edit: func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) *ktpb.MonitorResponse {
			r.Changes[0] = clone(f.s.monitor(bob, 0, 0)).Changes[0]
			return r
		}, want: client.ErrMonitorGap},
		{name: "middle version missing (A7 hidden)", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			r.Changes = slices.Delete(r.Changes, 1, 2)
		}), want: client.ErrMonitorGap},
		{name: "first version missing", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) { r.Changes = r.Changes[1:] }), want: client.ErrMonitorGap},
		{name: "versions reordered", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			r.Changes[1], r.Changes[2] = r.Changes[2], r.Changes[1]
		}), want: client.ErrMonitorGap},
		{name: "change inclusion proof corrupted", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			c := byVersion(t, r, 3)
			c.InclusionProof[0] = flip(c.InclusionProof[0], 3)
		}), want: client.ErrMonitorGap},
		{name: "change at a wrong log index", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) { byVersion(t, r, 2).LogIndex++ }), want: client.ErrMonitorGap},
		{name: "change at the log index of its predecessor", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			byVersion(t, r, 3).LogIndex = byVersion(t, r, 2).LogIndex
		}), want: client.ErrMonitorGap},
		{name: "change at the epoch record's index", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			e, _ := api.ParseEpochRecord(r.Epoch.EpochRecord)
			byVersion(t, r, 4).LogIndex = e.LogSize
		}), want: client.ErrMonitorGap},

		// Step 2: the map.
		{name: "last version missing", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) { r.Changes = r.Changes[:3] }), want: client.ErrMapProof},
		{name: "all changes withheld", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) { r.Changes = nil }), want: client.ErrMapProof},
		{name: "known handle answered as absent", edit: func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) *ktpb.MonitorResponse {
			r.MapProof = clone(f.s.monitor(nobody, 0, 0)).MapProof
			return r
		}, want: client.ErrMapProof},
		{name: "map proof corrupted", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) { r.MapProof = flip(r.MapProof, -1) }), want: client.ErrMapProof},

		// Step 4: commitments (errors) and rules (alerts).
		{name: "opening corrupted", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			byVersion(t, r, 3).Opening = flip(byVersion(t, r, 3).Opening, 0)
		}), want: client.ErrCommitment},
		{name: "device set of another version", edit: edit(func(t *testing.T, f *fixture, r *ktpb.MonitorResponse) {
			byVersion(t, r, 3).DeviceSet, byVersion(t, r, 3).Opening = byVersion(t, r, 2).DeviceSet, byVersion(t, r, 2).Opening
		}), want: client.ErrCommitment},
		{
			name: "logged change whose authorizers hide a device (R7)",
			setup: func(t *testing.T, f *fixture) {
				f.g = newDevice(t, "ghost", api.SuiteX25519)
				h, c := f.s.record(alice, set(f.a1, f.a2, f.g), api.AuthDevice, f.a1.sign, func(r *api.ChangeRecord) {
					r.Authorizers = slices.DeleteFunc(r.Authorizers, func(a api.Authorizer) bool { return a.Digest == api.KeyDigest(f.g.pub()) })
				})
				f.s.logChange(h, c)
			},
			edit: none,
		},
		{
			name: "logged change signed by a non-authorizer (R5)",
			setup: func(t *testing.T, f *fixture) {
				f.g = newDevice(t, "ghost", api.SuiteX25519)
				f.s.change(alice, set(f.a1, f.a2, f.g), api.AuthDevice, f.g.sign)
			},
			edit: none,
		},
	}
	for _, tc := range tests {
		for _, entry := range monitorEntries {
			t.Run(tc.name+"/"+entry.name, func(t *testing.T) {
				f := newFixture(t)
				if tc.setup != nil {
					tc.setup(t, f)
				} else {
					f.threeMore(t)
				}
				f.next()
				index := f.s.handle(alice).index
				resp := tc.edit(t, f, clone(f.s.monitor(alice, 0, 0)))
				now := f.now
				if tc.now != nil {
					now = tc.now(f)
				}
				want := tc.want
				if entry.name == "observer" {
					if tc.observerWant != nil {
						want = tc.observerWant
					}
					if tc.observerOK {
						want = nil
					}
				}
				changes, err := entry.verify(f, f.p, index, resp, now)
				if err != nil {
					var ve *client.VerifyError
					if !errors.As(err, &ve) {
						t.Errorf("error %v is not a *client.VerifyError", err)
					}
				}
				checkErr(t, err, want)
				if err != nil {
					return
				}
				// Both entry points return the same verified facts;
				// only the owner classifies.
				h := f.s.handle(alice)
				if len(changes) != len(h.versions) {
					t.Fatalf("%d changes, want %d", len(changes), len(h.versions))
				}
				for i, c := range changes {
					v := h.versions[i]
					if c.Version != v.record.Version || c.LogIndex != v.logIndex || !bytes.Equal(mustMarshal(t, c.DeviceSet), v.set) {
						t.Errorf("change %d: version %d at %d, want %d at %d", i, c.Version, c.LogIndex, v.record.Version, v.logIndex)
					}
				}
				rules := func(cs []client.Change) (out []api.Rule) {
					for _, c := range cs {
						for _, a := range c.Alerts {
							if a.Kind == client.AlertRuleViolation {
								out = append(out, a.Rule)
								var ae *api.AuthError
								if !errors.As(a.Err, &ae) || ae.Rule != a.Rule {
									t.Errorf("alert %v: Err %v is not the rule's *api.AuthError", a, a.Err)
								}
								if r7 := errors.Is(a.Err, client.ErrAuthorizers); r7 != (a.Rule == api.RuleAuthorizers) {
									t.Errorf("alert %v: Err %v wraps ErrAuthorizers: %v", a, a.Err, r7)
								}
							}
						}
					}
					return out
				}
				var wantRules []api.Rule
				switch {
				case tc.setup == nil:
				case tc.name == "logged change whose authorizers hide a device (R7)":
					wantRules = []api.Rule{api.RuleAuthorizers}
				default:
					wantRules = []api.Rule{api.RuleDevice}
				}
				if diff := cmp.Diff(wantRules, rules(changes)); diff != "" {
					t.Errorf("rule violations (-want +got):\n%s", diff)
				}
				if entry.name == "observer" {
					for _, c := range changes {
						if c.By != 0 || slices.ContainsFunc(c.Alerts, func(a client.Alert) bool { return a.Kind != client.AlertRuleViolation }) {
							t.Errorf("observer classified change %d: by %v, alerts %v", c.Version, c.By, c.Alerts)
						}
					}
				}
			})
		}
	}
}

// TestVerifyObservedParams: the observer needs no VRF key, and without a
// recovery key it does not check R6, so a recovery change is no violation.
func TestVerifyObservedParams(t *testing.T) {
	f := newFixture(t)
	f.g = newDevice(t, "ghost", api.SuiteX25519)
	f.s.change(alice, set(f.a1, f.a2, f.g), api.AuthRecovery, f.k.recovery)
	f.next()
	index := f.s.handle(alice).index
	p := *f.p
	p.VRFKey = nil
	p.RecoveryKey = [32]byte{}
	o, err := client.VerifyObserved(&p, index, f.s.monitor(alice, 0, 0), f.now)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Changes) != 2 || len(o.Changes[1].Alerts) != 0 {
		t.Fatalf("changes %+v", o.Changes)
	}
	// With the wrong recovery key, R6 fails: an alert, not an error.
	p.RecoveryKey = f.a1.pub()
	if o, err = client.VerifyObserved(&p, index, f.s.monitor(alice, 0, 0), f.now); err != nil {
		t.Fatal(err)
	}
	if a := o.Changes[1].Alerts; len(a) != 1 || a[0].Rule != "R6 recovery" {
		t.Errorf("alerts %+v, want R6", a)
	}
	// The owner's entry point still needs both.
	if _, err := client.VerifyMonitor(&p, nil, &client.MonitorState{Index: index}, f.s.monitor(alice, 0, 0), f.own(), f.now); !errors.Is(err, client.ErrInvalidParams) {
		t.Errorf("VerifyMonitor without a VRF key: %v", err)
	}
	p.Origin = ""
	if _, err := client.VerifyObserved(&p, index, f.s.monitor(alice, 0, 0), f.now); !errors.Is(err, client.ErrInvalidParams) {
		t.Errorf("VerifyObserved without an origin: %v", err)
	}
}

// TestVerifyEpochRecord proves an earlier epoch record in a later epoch
// checkpoint, and breaks each of its checks once.
func TestVerifyEpochRecord(t *testing.T) {
	f := newFixture(t)
	f.threeMore(t)
	f.next()
	later, err := client.VerifyEpoch(f.p, nil, f.s.epochPart(f.s.ep(), 0), f.now)
	if err != nil {
		t.Fatal(err)
	}
	at := f.e1.size - 1
	proof := f.s.inclusion(at, later.Size)
	rec, err := client.VerifyEpochRecord(f.e1.recordBytes, at, later.Size, later.Root, proof)
	if err != nil || rec.Epoch != f.e1.record.Epoch {
		t.Fatalf("epoch 1 in the later checkpoint: %+v, %v", rec, err)
	}
	for _, tc := range []struct {
		name     string
		raw      []byte
		at, size uint64
		proof    [][]byte
		want     error
	}{
		{"truncated", f.e1.recordBytes[:10], at, later.Size, proof, client.ErrMalformed},
		{"proof hash of 31 bytes", f.e1.recordBytes, at, later.Size, [][]byte{proof[0][:31]}, client.ErrMalformed},
		{"another index", f.e1.recordBytes, at + 1, later.Size, proof, client.ErrNotLatestEpoch},
		{"beyond the tree", f.e1.recordBytes, later.Size, later.Size, proof, client.ErrNotLatestEpoch},
		{"proof corrupted", f.e1.recordBytes, at, later.Size, [][]byte{flip(proof[0], 0)}, client.ErrEpochInclusion},
		{"another record", mustMarshal(t, &later.Record), at, later.Size, proof, client.ErrNotLatestEpoch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.VerifyEpochRecord(tc.raw, tc.at, tc.size, later.Root, tc.proof)
			checkErr(t, err, tc.want)
		})
	}
}
