package directory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/log"
)

// gateLog holds the next change-record Append until released, so that a
// test can act while a group is in flight.
type gateLog struct {
	log.Log
	armed   chan struct{} // receives once: the next change Append is held
	entered chan struct{} // closed when the held Append has started
	release chan error    // nil: append; non-nil: fail without appending
}

func newGateLog() *gateLog {
	return &gateLog{armed: make(chan struct{}, 1), entered: make(chan struct{}), release: make(chan error, 1)}
}

func (g *gateLog) Append(ctx context.Context, es [][]byte) ([]uint64, error) {
	if es[0][1] == byte(api.TypeChange) {
		select {
		case <-g.armed:
			close(g.entered)
			if err := <-g.release; err != nil {
				return nil, err
			}
		default:
		}
	}
	return g.Log.Append(ctx, es)
}

type changeResult struct {
	idx []uint64
	err error
}

func (e *env) changeAsync(hc *ktpb.HandleChange) <-chan changeResult {
	ch := make(chan changeResult, 1)
	go func() {
		res, err := e.d.Change(ctxT(e.t), &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}})
		ch <- changeResult{res.GetLogIndices(), err}
	}()
	return ch
}

// TestPipeline: while one group is being appended, the next is checked
// against it (not against the store, which does not have it yet): a
// change conflicting with the one in flight is refused at once as stale,
// one chaining on it is accepted and logged after it. If the flight's
// append fails, the prepared group is not logged either, and a restart
// shows neither.
func TestPipeline(t *testing.T) {
	for _, b := range backends {
		for _, fail := range []bool{false, true} {
			if fail && b.name != "memory" {
				continue // the failure path does not depend on the backend
			}
			name := b.name
			if fail {
				name += "/append-fails"
			}
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, b)
				g := newGateLog()
				t.Cleanup(func() {
					select {
					case g.release <- nil: // never left holding on failure
					default:
					}
				})
				e.wrap = func(l log.Log) log.Log { g.Log = l; return g }
				// Epochs far enough apart that none falls due while the
				// flight is held (an epoch due when a group is launched
				// stops preparation until it closes).
				e.tune = func(c *Config) { c.EpochInterval, c.HeartbeatInterval = 2*time.Second, 2*time.Second }
				e.restart()
				alice, a, account, i := lifeOf(t, e)
				e.waitEpoch(i)

				g.armed <- struct{}{}
				d2, d3 := testkit.NewDevice(), testkit.NewDevice()
				hcA := alice.change(api.AuthDevice, a.Sign, testkit.Set(account, a, d2), nil)
				resA := e.changeAsync(hcA)
				<-g.entered

				// Same version as A, different set: stale against the flight.
				hcB := alice.change(api.AuthDevice, a.Sign, testkit.Set(account, a, d3), nil)
				select {
				case r := <-e.changeAsync(hcB):
					if !errors.Is(r.err, ErrStaleVersion) {
						t.Fatalf("change conflicting with the one in flight: %v, want ErrStaleVersion", r.err)
					}
				case <-time.After(30 * time.Second):
					t.Fatal("a change conflicting with the flight was not answered while the flight was held")
				}

				// Chains on A (signed by a device of A's set).
				alice.accepted(hcA)
				hcC := alice.change(api.AuthDevice, d2.Sign, testkit.Set(account, a, d2, d3), nil)
				resC := e.changeAsync(hcC)
				select {
				case r := <-resC:
					t.Fatalf("the change chaining on the flight was answered before the flight landed: %v", r)
				case <-time.After(200 * time.Millisecond):
				}

				if fail {
					g.release <- errors.New("injected: append failed")
					if r := <-resA; !errors.Is(r.err, ErrUnavailable) {
						t.Fatalf("flight with a failing append: %v, want ErrUnavailable", r.err)
					}
					if r := <-resC; !errors.Is(r.err, ErrUnavailable) {
						t.Fatalf("group prepared behind a failed flight: %v, want ErrUnavailable", r.err)
					}
					e.wrap = nil
					e.restart()
					if res := e.lookup(alice.handle, 0); res.Version != 1 || len(res.DeviceSet.Devices) != 1 {
						t.Fatalf("after restart: version %d with %d devices, want 1 with 1", res.Version, len(res.DeviceSet.Devices))
					}
					return
				}
				g.release <- nil
				rA, rC := <-resA, <-resC
				if rA.err != nil || rC.err != nil {
					t.Fatalf("A: %v, C: %v", rA.err, rC.err)
				}
				if rC.idx[0] <= rA.idx[0] {
					t.Fatalf("C logged at %d, not after A at %d", rC.idx[0], rA.idx[0])
				}
				alice.accepted(hcC)
				check := func(when string) {
					t.Helper()
					res := e.lookup(alice.handle, rC.idx[0])
					if res.Version != 3 || len(res.DeviceSet.Devices) != 3 {
						t.Fatalf("%s: version %d with %d devices, want 3 with 3", when, res.Version, len(res.DeviceSet.Devices))
					}
				}
				check("served")
				e.wrap = nil
				e.restart()
				check("after restart")
			})
		}
	}
}

// TestConcurrentChecks: many changes at once, more than there are
// checkers, some with a bad signature. Each bad one is refused with the
// typed error of R1 and stores nothing; the others, checked on the same
// pool and logged in the same groups, are all accepted.
func TestConcurrentChecks(t *testing.T) {
	e := newEnv(t, backends[0])
	n := 4*numCheckers() + 3
	type owner struct {
		h       *handleState
		dev     *testkit.Device
		account [16]byte
	}
	owners := make([]owner, n)
	for i := range owners {
		var account [16]byte
		account[0] = byte(i)
		d := testkit.NewDevice()
		h := newHandle(t, e.k, fmt.Sprintf("user%d@example.com", i))
		e.enroll(h, d.Sign, testkit.Set(account, d))
		owners[i] = owner{h, d, account}
	}
	bad := func(i int) bool { return i%5 == 2 }
	results := make([]<-chan changeResult, n)
	hcs := make([]*ktpb.HandleChange, n)
	for i, o := range owners {
		hcs[i] = o.h.change(api.AuthDevice, o.dev.Sign, testkit.Set(o.account, o.dev, testkit.NewDevice()), nil)
		if bad(i) {
			r, err := api.ParseChangeRecord(hcs[i].ChangeRecord)
			if err != nil {
				t.Fatal(err)
			}
			r.Signature[10] ^= 0x40
			if hcs[i].ChangeRecord, err = r.MarshalBinary(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range owners {
		results[i] = e.changeAsync(hcs[i])
	}
	var last uint64
	for i, o := range owners {
		r := <-results[i]
		var ae *api.AuthError
		switch {
		case bad(i):
			if !errors.Is(r.err, ErrUnauthorized) || !errors.Is(r.err, api.ErrBadSignature) || !errors.As(r.err, &ae) || ae.Rule != "R1 signature" {
				t.Errorf("change %d with a bad signature: %v, want ErrUnauthorized from R1 (api.ErrBadSignature)", i, r.err)
			}
		case r.err != nil:
			t.Errorf("change %d: %v", i, r.err)
		default:
			o.h.accepted(hcs[i])
			last = max(last, r.idx[0])
		}
	}
	for i, o := range owners {
		res := e.lookup(o.h.handle, last)
		want := uint64(2)
		if bad(i) {
			want = 1
		}
		if res.Version != want || res.Version != o.h.version {
			t.Errorf("%s: version %d, want %d", o.h.handle, res.Version, want)
		}
	}
}

// TestHeadStateFormats: the handle state round-trips with and without the
// rules' part, and malformed values are refused.
func TestHeadStateFormats(t *testing.T) {
	var as []api.Authorizer
	for i := range 3 {
		as = append(as, api.Authorizer{Role: api.RoleDevice, Digest: [32]byte{byte(i + 1)}})
		for _, rules := range []*headRules{nil, {authorizers: as, accountID: [16]byte{9, byte(i)}}} {
			h := headState{version: 7, leaf: [32]byte{1, 2}, logIndex: 99, rules: rules}
			got, err := decodeHead(encodeHead(h))
			if err != nil {
				t.Fatal(err)
			}
			if got.version != h.version || got.leaf != h.leaf || got.logIndex != h.logIndex || (got.rules == nil) != (rules == nil) ||
				(rules != nil && (got.rules.accountID != rules.accountID || !slices.Equal(got.rules.authorizers, rules.authorizers))) {
				t.Errorf("round trip of %+v: %+v", h, got)
			}
		}
	}
	full := encodeHead(headState{rules: &headRules{authorizers: as}})
	for _, n := range []int{0, 47, 49, 64, len(full) - 1, len(full) + 1} {
		v := make([]byte, n)
		copy(v, full)
		if _, err := decodeHead(v); err == nil {
			t.Errorf("%d-byte state decoded", n)
		}
	}
}

// TestHeadStateWithoutRules: a handle state written without the rules'
// part (a store from before it existed) is checked against the stored
// payload, with the same verdicts.
func TestHeadStateWithoutRules(t *testing.T) {
	e := newEnv(t, backends[0])
	alice, a, account, i := lifeOf(t, e)
	e.waitEpoch(i)
	h, ok, err := e.d.st.head(alice.index)
	if err != nil || !ok || h.rules == nil {
		t.Fatalf("state after enrollment: %+v, %v, %v; want one with the rules' part", h, ok, err)
	}
	h.rules = nil
	if err := e.d.st.db.Set(stateKey(alice.index), encodeHead(h), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	// A change signed by a key that is not an authorizer, then a stale
	// one, then a good one.
	other := testkit.NewDevice()
	_, err = e.d.Change(ctxT(t), &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{alice.change(api.AuthDevice, other.Sign, testkit.Set(account, a, other), nil)}})
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("change by a non-authorizer: %v, want ErrUnauthorized", err)
	}
	stale := *alice
	stale.version = 0
	stale.leaf = [32]byte{}
	_, err = e.d.Change(ctxT(t), &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{stale.change(api.AuthDevice, a.Sign, testkit.Set(account, a, other), nil)}})
	if !errors.Is(err, ErrStaleVersion) {
		t.Fatalf("stale change: %v, want ErrStaleVersion", err)
	}
	j := e.apply(alice, alice.change(api.AuthDevice, a.Sign, testkit.Set(account, a, other), nil))
	if res := e.lookup(alice.handle, j); res.Version != 2 || len(res.DeviceSet.Devices) != 2 {
		t.Fatalf("after the change: version %d with %d devices", res.Version, len(res.DeviceSet.Devices))
	}
}
