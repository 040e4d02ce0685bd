package client_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
)

// own returns alice's keys as her device a1 knows them.
func (f *fixture) own() client.OwnKeys { return client.OwnKeys{Device: f.a1.pub()} }

// poll0 is a1's first, honest poll of alice at epoch 1: it returns the
// state and trusted checkpoint after version 1.
func (f *fixture) poll0(t testing.TB) (*client.MonitorState, *client.Trusted) {
	t.Helper()
	st := &client.MonitorState{Index: f.s.handle(alice).index}
	res, err := client.VerifyMonitor(f.p, nil, st, f.s.monitor(alice, 0, 0), f.own(), f.now)
	if err != nil {
		t.Fatal(err)
	}
	return res.State, res.Trusted
}

// next closes epoch 2 (at t0+2s, before the clock's t0+3s).
func (f *fixture) next() { f.s.closeEpoch(epochOpts{ts: t0.Add(2 * time.Second)}) }

func deviceIDs(ds []api.Device) []string {
	var ids []string
	for _, d := range ds {
		ids = append(ids, string(d.ID[:4]))
	}
	return ids
}

func ids(ds ...*device) []string {
	var out []string
	for _, d := range ds {
		out = append(out, string(d.dev.ID[:4]))
	}
	return out
}

// summary is the part of a change the tests compare.
type summary struct {
	Version          uint64
	By               client.Authority
	Added, Removed   []string
	Alerts           []client.AlertKind
	Rules            []api.Rule
	AccountIDChanged bool
	AccountKeyChange bool
}

func summarize(cs []client.Change) []summary {
	var out []summary
	for _, c := range cs {
		s := summary{Version: c.Version, By: c.By, Added: deviceIDs(c.Added), Removed: deviceIDs(c.Removed),
			AccountIDChanged: c.AccountIDChanged, AccountKeyChange: c.AccountKeyChanged}
		for _, a := range c.Alerts {
			s.Alerts = append(s.Alerts, a.Kind)
			if a.Rule != "" {
				s.Rules = append(s.Rules, a.Rule)
			}
		}
		out = append(out, s)
	}
	return out
}

func TestVerifyMonitor(t *testing.T) {
	type call struct {
		st   *client.MonitorState
		tr   *client.Trusted
		resp *ktpb.MonitorResponse
		own  client.OwnKeys
	}
	// from polls from version 1 after the changes logged by build.
	from := func(t *testing.T, f *fixture) *call {
		st, tr := f.poll0(t)
		f.next()
		return &call{st: st, tr: tr, resp: clone(f.s.monitor(alice, st.Version, tr.Size)), own: f.own()}
	}
	ghost := func(t *testing.T) *device { return newDevice(t, "ghost", api.SuiteX25519) }
	recovery := func(f *fixture) ed25519.PrivateKey { return f.k.recovery }

	tests := []struct {
		name      string
		build     func(t *testing.T, f *fixture) *call
		want      error
		changes   []summary
		transient func(f *fixture) []string
	}{
		{
			name: "enrolled by this device",
			build: func(t *testing.T, f *fixture) *call {
				return &call{st: &client.MonitorState{Index: f.s.handle(alice).index}, resp: f.s.monitor(alice, 0, 0), own: f.own()}
			},
			changes: []summary{{Version: 1, By: client.ByThisDevice, Added: nil}},
		},
		{
			name: "enrolled by another own device known out of band",
			build: func(t *testing.T, f *fixture) *call {
				own := f.own()
				own.Device = newDevice(t, "new", api.SuiteX25519).pub()
				own.Devices = [][32]byte{f.a1.pub()}
				return &call{st: &client.MonitorState{Index: f.s.handle(alice).index}, resp: f.s.monitor(alice, 0, 0), own: own}
			},
			changes: []summary{{Version: 1, By: client.ByOwnDevice}},
		},
		{
			name: "enrolled by another device, unknown to this one",
			build: func(t *testing.T, f *fixture) *call {
				own := f.own()
				own.Device = newDevice(t, "new", api.SuiteX25519).pub()
				return &call{st: &client.MonitorState{Index: f.s.handle(alice).index}, resp: f.s.monitor(alice, 0, 0), own: own}
			},
			changes: []summary{{Version: 1, By: client.ByUnknownKey, Alerts: []client.AlertKind{client.AlertForeignEnrollment}}},
		},
		{
			name: "nothing changed",
			build: func(t *testing.T, f *fixture) *call {
				c := from(t, f)
				if len(c.resp.Changes) != 0 {
					t.Fatal("simulator sent changes")
				}
				return c
			},
		},
		{
			name: "device added by this device",
			build: func(t *testing.T, f *fixture) *call {
				f.a3 = newDevice(t, "a3", api.SuiteX25519)
				f.s.change(alice, set(f.a1, f.a2, f.a3), api.AuthDevice, f.a1.sign)
				return from(t, f)
			},
			changes: []summary{{Version: 2, By: client.ByThisDevice}},
		},
		{
			name: "device removed by another own device",
			build: func(t *testing.T, f *fixture) *call {
				f.s.change(alice, set(f.a2), api.AuthDevice, f.a2.sign)
				return from(t, f)
			},
			changes: []summary{{Version: 2, By: client.ByOwnDevice}},
		},
		{
			name: "account key added, then used",
			build: func(t *testing.T, f *fixture) *call {
				_, acct, _ := ed25519.GenerateKey(rand.Reader)
				s := set(f.a1, f.a2)
				s.SignAccount(testOrigin, f.s.handle(alice).index, 2, acct)
				f.s.change(alice, s, api.AuthDevice, f.a1.sign)
				f.a3 = newDevice(t, "a3", api.SuiteX25519)
				s = set(f.a1, f.a2, f.a3)
				s.SignAccount(testOrigin, f.s.handle(alice).index, 3, acct)
				f.s.change(alice, s, api.AuthAccount, acct)
				return from(t, f)
			},
			changes: []summary{
				{Version: 2, By: client.ByThisDevice, AccountKeyChange: true},
				{Version: 3, By: client.ByAccountKey},
			},
		},
		{
			name: "ghost added by the recovery path (A2)",
			build: func(t *testing.T, f *fixture) *call {
				f.g = ghost(t)
				f.s.change(alice, set(f.a1, f.a2, f.g), api.AuthRecovery, recovery(f))
				return from(t, f)
			},
			changes: []summary{{Version: 2, By: client.ByRecovery, Alerts: []client.AlertKind{client.AlertRecovery}}},
		},
		{
			name: "recovery takes over, then the new key signs",
			build: func(t *testing.T, f *fixture) *call {
				f.g = ghost(t)
				f.s.change(alice, set(f.g), api.AuthRecovery, recovery(f))
				f.s.change(alice, set(f.g, newDevice(t, "ghost2", api.SuiteX25519)), api.AuthDevice, f.g.sign)
				return from(t, f)
			},
			changes: []summary{
				{Version: 2, By: client.ByRecovery, Alerts: []client.AlertKind{client.AlertRecovery}},
				{Version: 3, By: client.ByUnknownKey, Alerts: []client.AlertKind{client.AlertUnknownSigner}},
			},
		},
		{
			name: "enrolled by a foreign key",
			build: func(t *testing.T, f *fixture) *call {
				g := ghost(t)
				f.s.change(carol, set(g), api.AuthEnroll, g.sign)
				f.next()
				return &call{st: &client.MonitorState{Index: f.s.handle(carol).index}, resp: f.s.monitor(carol, 0, 0), own: f.own()}
			},
			changes: []summary{{Version: 1, By: client.ByUnknownKey, Alerts: []client.AlertKind{client.AlertForeignEnrollment}}},
		},
		{
			name: "ghost added and removed between polls by recovery (A7)",
			build: func(t *testing.T, f *fixture) *call {
				f.g = ghost(t)
				f.s.change(alice, set(f.a1, f.a2, f.g), api.AuthRecovery, recovery(f))
				f.s.change(alice, set(f.a1, f.a2), api.AuthRecovery, recovery(f))
				return from(t, f)
			},
			changes: []summary{
				{Version: 2, By: client.ByRecovery, Alerts: []client.AlertKind{client.AlertRecovery}},
				{Version: 3, By: client.ByRecovery, Alerts: []client.AlertKind{client.AlertRecovery}},
			},
			transient: func(f *fixture) []string { return ids(f.g) },
		},
		{
			name: "device added and removed between polls by the owner",
			build: func(t *testing.T, f *fixture) *call {
				f.a3 = newDevice(t, "a3", api.SuiteX25519)
				f.s.change(alice, set(f.a1, f.a2, f.a3), api.AuthDevice, f.a1.sign)
				f.s.change(alice, set(f.a1, f.a2), api.AuthDevice, f.a3.sign)
				return from(t, f)
			},
			changes: []summary{
				{Version: 2, By: client.ByThisDevice},
				{Version: 3, By: client.ByOwnDevice},
			},
			transient: func(f *fixture) []string { return ids(f.a3) },
		},
		{
			name: "logged change signed by a non-authorizer (R5)",
			build: func(t *testing.T, f *fixture) *call {
				f.g = ghost(t)
				f.s.change(alice, set(f.a1, f.a2, f.g), api.AuthDevice, f.g.sign)
				return from(t, f)
			},
			changes: []summary{{Version: 2, By: client.ByUnknownKey,
				Alerts: []client.AlertKind{client.AlertRuleViolation, client.AlertUnknownSigner}, Rules: []api.Rule{"R5 device"}}},
		},
		{
			name: "logged change whose authorizers hide a device (R7)",
			build: func(t *testing.T, f *fixture) *call {
				f.g = ghost(t)
				h, c := f.s.record(alice, set(f.a1, f.a2, f.g), api.AuthDevice, f.a1.sign, func(r *api.ChangeRecord) {
					r.Authorizers = slices.DeleteFunc(r.Authorizers, func(a api.Authorizer) bool { return a.Digest == api.KeyDigest(f.g.pub()) })
				})
				f.s.logChange(h, c)
				return from(t, f)
			},
			changes: []summary{{Version: 2, By: client.ByThisDevice,
				Alerts: []client.AlertKind{client.AlertRuleViolation}, Rules: []api.Rule{"R7 authorizers"}}},
		},
		{
			name: "account ID changed by recovery",
			build: func(t *testing.T, f *fixture) *call {
				s := set(f.a1, f.a2)
				s.AccountID[0] ^= 1
				f.s.change(alice, s, api.AuthRecovery, recovery(f))
				return from(t, f)
			},
			changes: []summary{{Version: 2, By: client.ByRecovery, AccountIDChanged: true, Alerts: []client.AlertKind{client.AlertRecovery}}},
		},

		// Failures: the answer is not the complete, included chain.
		{
			name: "middle version missing (A7 hidden)",
			build: func(t *testing.T, f *fixture) *call {
				f.threeMore(t)
				c := from(t, f)
				c.resp.Changes = slices.Delete(c.resp.Changes, 1, 2)
				return c
			},
			want: client.ErrMonitorGap,
		},
		{
			name: "versions reordered",
			build: func(t *testing.T, f *fixture) *call {
				f.threeMore(t)
				c := from(t, f)
				c.resp.Changes[0], c.resp.Changes[1] = c.resp.Changes[1], c.resp.Changes[0]
				return c
			},
			want: client.ErrMonitorGap,
		},
		{
			name: "first version missing",
			build: func(t *testing.T, f *fixture) *call {
				f.threeMore(t)
				c := from(t, f)
				c.resp.Changes = c.resp.Changes[1:]
				return c
			},
			want: client.ErrMonitorGap,
		},
		{
			name: "change does not link to the known version",
			build: func(t *testing.T, f *fixture) *call {
				f.threeMore(t)
				c := from(t, f)
				c.st.LeafHash[0] ^= 1
				return c
			},
			want: client.ErrMonitorGap,
		},
		{
			name: "change of another handle spliced in",
			build: func(t *testing.T, f *fixture) *call {
				f.s.change(bob, set(f.b1, newDevice(t, "b2", api.SuiteX25519)), api.AuthDevice, f.b1.sign)
				f.threeMore(t)
				c := from(t, f)
				c.resp.Changes[0] = clone(f.s.monitor(bob, 1, 0)).Changes[0]
				return c
			},
			want: client.ErrMonitorGap,
		},
		{
			name: "change inclusion proof corrupted",
			build: func(t *testing.T, f *fixture) *call {
				f.threeMore(t)
				c := from(t, f)
				c.resp.Changes[1].InclusionProof[0] = flip(c.resp.Changes[1].InclusionProof[0], 3)
				return c
			},
			want: client.ErrMonitorGap,
		},
		{
			name: "change at a wrong log index",
			build: func(t *testing.T, f *fixture) *call {
				f.threeMore(t)
				c := from(t, f)
				c.resp.Changes[0].LogIndex++
				return c
			},
			want: client.ErrMonitorGap,
		},
		{
			name: "change beyond the epoch",
			build: func(t *testing.T, f *fixture) *call {
				st, tr := f.poll0(t)
				f.s.change(alice, set(f.a1), api.AuthDevice, f.a1.sign)
				f.next()
				f.s.change(alice, set(f.a1, f.a2), api.AuthDevice, f.a1.sign) // after epoch 2
				resp := clone(f.s.monitor(alice, 1, tr.Size))
				late := f.s.handle(alice).versions[2]
				size := f.s.size()
				resp.Changes = append(resp.Changes, &ktpb.MonitoredChange{
					ChangeRecord: late.bytes, LogIndex: late.logIndex, InclusionProof: f.s.inclusion(late.logIndex, size),
					Opening: late.opening[:], DeviceSet: late.set,
				})
				return &call{st: st, tr: tr, resp: resp, own: f.own()}
			},
			want: client.ErrMonitorGap,
		},
		{
			name: "last version missing",
			build: func(t *testing.T, f *fixture) *call {
				f.threeMore(t)
				c := from(t, f)
				c.resp.Changes = c.resp.Changes[:2]
				return c
			},
			want: client.ErrMapProof,
		},
		{
			name: "all changes withheld",
			build: func(t *testing.T, f *fixture) *call {
				f.threeMore(t)
				c := from(t, f)
				c.resp.Changes = nil
				return c
			},
			want: client.ErrMapProof,
		},
		{
			name: "known handle answered as absent",
			build: func(t *testing.T, f *fixture) *call {
				c := from(t, f)
				c.resp.MapProof = clone(f.s.monitor(nobody, 0, 0)).MapProof
				return c
			},
			want: client.ErrMapProof,
		},
		{
			name: "opening corrupted",
			build: func(t *testing.T, f *fixture) *call {
				f.threeMore(t)
				c := from(t, f)
				c.resp.Changes[1].Opening = flip(c.resp.Changes[1].Opening, 0)
				return c
			},
			want: client.ErrCommitment,
		},
		{
			name: "device set swapped for one without the ghost",
			build: func(t *testing.T, f *fixture) *call {
				f.g = ghost(t)
				f.s.change(alice, set(f.a1, f.a2, f.g), api.AuthRecovery, recovery(f))
				c := from(t, f)
				c.resp.Changes[0].DeviceSet = mustMarshal(t, set(f.a1, f.a2))
				return c
			},
			want: client.ErrCommitment,
		},
		{
			name: "change record truncated",
			build: func(t *testing.T, f *fixture) *call {
				f.threeMore(t)
				c := from(t, f)
				c.resp.Changes[0].ChangeRecord = c.resp.Changes[0].ChangeRecord[:100]
				return c
			},
			want: client.ErrMalformed,
		},
		{
			name: "epoch checkpoint signature corrupted",
			build: func(t *testing.T, f *fixture) *call {
				f.threeMore(t)
				c := from(t, f)
				c.resp.Epoch.Checkpoint = editSigs(c.resp.Epoch.Checkpoint, func(l []string) []string {
					l[0] = corrupt(l[0])
					return l
				})
				return c
			},
			want: client.ErrCheckpointSignature,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			c := tc.build(t, f)
			before := mustMarshal(t, c.st)
			res, err := client.VerifyMonitor(f.p, c.tr, c.st, c.resp, c.own, f.now)
			if err != nil {
				t.Logf("error: %v", err)
			}
			checkErr(t, err, tc.want)
			if !bytes.Equal(before, mustMarshal(t, c.st)) {
				t.Error("VerifyMonitor modified the state it was given")
			}
			if err != nil {
				return
			}
			// Added/Removed are compared by ID prefix; fill them in from
			// the simulator's history.
			want := slices.Clone(tc.changes)
			h := f.s.handle(alice)
			if c.st.Index != h.index {
				h = f.s.handle(carol)
			}
			prev := c.st.DeviceSet
			for i := range want {
				v := h.versions[want[i].Version-1]
				s, _ := api.ParseDeviceSet(v.set)
				want[i].Added, want[i].Removed = diffIDs(prev, s)
				prev = s
			}
			if diff := cmp.Diff(want, summarize(res.Changes)); diff != "" {
				t.Errorf("changes (-want +got):\n%s", diff)
			}
			var wantAlerts int
			for _, w := range want {
				wantAlerts += len(w.Alerts)
			}
			// A transient device added by someone other than the owner
			// raises one more alert, on the answer as a whole.
			transientAlerts := 0
			for _, a := range res.Alerts {
				if a.Kind == client.AlertTransientDevice {
					transientAlerts++
				}
			}
			if want := strings.Contains(tc.name, "by recovery (A7)"); want != (transientAlerts == 1) || transientAlerts > 1 {
				t.Errorf("%d transient-device alerts, want one only for a ghost", transientAlerts)
			}
			if len(res.Alerts) != wantAlerts+transientAlerts {
				t.Errorf("%d alerts in the result, want %d", len(res.Alerts), wantAlerts+transientAlerts)
			}
			var wantTransient []string
			if tc.transient != nil {
				wantTransient = tc.transient(f)
			}
			if diff := cmp.Diff(wantTransient, deviceIDs(res.Transient)); diff != "" {
				t.Errorf("transient devices (-want +got):\n%s", diff)
			}
			// The new state is the handle's latest version at the epoch.
			last := h.versions[len(h.versions)-1]
			if res.State.Version != last.record.Version || res.State.LeafHash != last.leaf ||
				!bytes.Equal(mustMarshal(t, res.State.DeviceSet), last.set) {
				t.Errorf("state at version %d, want %d", res.State.Version, last.record.Version)
			}
		})
	}
}

// threeMore logs alice's versions 2, 3 and 4, all by her own devices.
func (f *fixture) threeMore(t *testing.T) {
	f.a3 = newDevice(t, "a3", api.SuiteX25519)
	f.s.change(alice, set(f.a1, f.a2, f.a3), api.AuthDevice, f.a1.sign)
	f.s.change(alice, set(f.a1, f.a3), api.AuthDevice, f.a3.sign)
	f.s.change(alice, set(f.a1), api.AuthDevice, f.a1.sign)
}

func diffIDs(old, new *api.DeviceSet) (added, removed []string) {
	has := func(s *api.DeviceSet, d api.Device) bool {
		return s != nil && slices.ContainsFunc(s.Devices, func(x api.Device) bool { return x.ID == d.ID })
	}
	for _, d := range new.Devices {
		if !has(old, d) {
			added = append(added, string(d.ID[:4]))
		}
	}
	if old != nil {
		for _, d := range old.Devices {
			if !has(new, d) {
				removed = append(removed, string(d.ID[:4]))
			}
		}
	}
	return added, removed
}

// TestMonitorKnownKeys follows the known keys across polls: a device the
// owner added is trusted later; a device the recovery path added is not,
// even after it was persisted and restored.
func TestMonitorKnownKeys(t *testing.T) {
	f := newFixture(t)
	st, tr := f.poll0(t)
	f.a3 = newDevice(t, "a3", api.SuiteX25519)
	f.g = newDevice(t, "ghost", api.SuiteX25519)
	f.s.change(alice, set(f.a1, f.a2, f.a3), api.AuthDevice, f.a2.sign)
	f.s.change(alice, set(f.a1, f.a2, f.a3, f.g), api.AuthRecovery, f.k.recovery)
	f.next()
	res, err := client.VerifyMonitor(f.p, tr, st, f.s.monitor(alice, st.Version, tr.Size), f.own(), f.now)
	if err != nil {
		t.Fatal(err)
	}
	var restored client.MonitorState
	if err := restored.UnmarshalBinary(mustMarshal(t, res.State)); err != nil {
		t.Fatal(err)
	}
	f.s.change(alice, set(f.a1, f.a3, f.g), api.AuthDevice, f.g.sign) // the ghost: unknown
	f.s.change(alice, set(f.a1, f.a3), api.AuthDevice, f.a3.sign)     // a3: known through a2
	f.s.closeEpoch(epochOpts{ts: t0.Add(3 * time.Second)})
	res, err = client.VerifyMonitor(f.p, res.Trusted, &restored, f.s.monitor(alice, restored.Version, res.Trusted.Size), f.own(), f.now)
	if err != nil {
		t.Fatal(err)
	}
	got := summarize(res.Changes)
	if len(got) != 2 || got[0].By != client.ByUnknownKey || !slices.Equal(got[0].Alerts, []client.AlertKind{client.AlertUnknownSigner}) ||
		got[1].By != client.ByOwnDevice || len(got[1].Alerts) != 0 {
		t.Errorf("classification: %+v", got)
	}
}
