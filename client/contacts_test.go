package client_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/log/evidence"
	"github.com/keytrans/kt/smt"
)

// Contact monitoring (design.md 13.3) against the simulator (sim_test.go):
// it holds the log and witness keys, so it can sign epochs whose map goes
// back or whose log holds two records for one version, which no tampering
// with a real directory's answers can produce.

// simDir serves the simulator's latest epoch over the Directory and Log
// services (the calls contact monitoring makes). monitor, when set, edits
// each Monitor answer; refuse makes Monitor fail.
type simDir struct {
	ktpb.DirectoryClient
	ktpb.LogClient
	s *sim

	mu       sync.Mutex
	lookupAt *epoch // answer lookups at this epoch, not the latest
	monitor  func(*ktpb.MonitorResponse)
	refuse   bool
	requests []*ktpb.MonitorRequest
}

func (d *simDir) Lookup(_ context.Context, req *ktpb.LookupRequest, _ ...grpc.CallOption) (*ktpb.LookupResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lookupAt != nil {
		return d.s.lookupAt(d.lookupAt, req.GetHandle(), req.GetKnownSize()), nil
	}
	return d.s.lookup(req.GetHandle(), req.GetKnownSize()), nil
}

// Monitor answers like the directory: records_only strips the openings and
// device sets.
func (d *simDir) Monitor(_ context.Context, req *ktpb.MonitorRequest, _ ...grpc.CallOption) (*ktpb.MonitorResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.requests = append(d.requests, proto.Clone(req).(*ktpb.MonitorRequest))
	if d.refuse {
		return nil, status.Error(codes.Unavailable, "history of the index is missing")
	}
	var name string
	for n, h := range d.s.handles {
		if bytes.Equal(h.index[:], req.GetIndex()) {
			name = n
		}
	}
	resp := d.s.monitor(name, req.GetKnownVersion(), req.GetKnownSize())
	if req.GetRecordsOnly() {
		for _, c := range resp.Changes {
			c.Opening, c.DeviceSet = nil, nil
		}
	}
	if d.monitor != nil {
		d.monitor(resp)
	}
	return resp, nil
}

func (d *simDir) lastMonitor() *ktpb.MonitorRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.requests) == 0 {
		return nil
	}
	return d.requests[len(d.requests)-1]
}

func (d *simDir) GetInclusionProof(ctx context.Context, req *ktpb.GetInclusionProofRequest, _ ...grpc.CallOption) (*ktpb.Proof, error) {
	p, err := d.s.log.InclusionProof(ctx, req.GetIndex(), req.GetSize())
	if err != nil {
		return nil, status.Error(codes.OutOfRange, err.Error())
	}
	return &ktpb.Proof{Hashes: p}, nil
}

func (d *simDir) GetConsistencyProof(ctx context.Context, req *ktpb.GetConsistencyProofRequest, _ ...grpc.CallOption) (*ktpb.Proof, error) {
	p, err := d.s.log.ConsistencyProof(ctx, req.GetOldSize(), req.GetNewSize())
	if err != nil {
		return nil, status.Error(codes.OutOfRange, err.Error())
	}
	return &ktpb.Proof{Hashes: p}, nil
}

func (d *simDir) GetEntries(ctx context.Context, req *ktpb.GetEntriesRequest, _ ...grpc.CallOption) (*ktpb.Entries, error) {
	es, err := d.s.log.Entries(ctx, req.GetStart(), req.GetEnd())
	if err != nil {
		return nil, status.Error(codes.OutOfRange, err.Error())
	}
	return &ktpb.Entries{Entries: es}, nil
}

func (d *simDir) GetCheckpoint(ctx context.Context, _ *ktpb.GetCheckpointRequest, _ ...grpc.CallOption) (*ktpb.Checkpoint, error) {
	return &ktpb.Checkpoint{Note: d.s.checkpoint()}, nil
}

// contactEnv is a sender (Alice's client, no device keys needed) and Bob,
// whose history the simulator writes.
type contactEnv struct {
	t     *testing.T
	k     *keys
	s     *sim
	dir   *simDir
	c     *client.Client
	store *client.MemStore
	now   time.Time
	b1    *device
	bob   string // canonical
}

func newContactEnv(t *testing.T) *contactEnv {
	t.Helper()
	k := newKeys(t)
	e := &contactEnv{t: t, k: k, s: newSim(t, k), now: t0, b1: newDevice(t, "b1", api.SuiteX25519)}
	e.dir = &simDir{s: e.s}
	e.bob = e.s.handle(bob).name
	e.s.change(bob, set(e.b1), api.AuthEnroll, e.b1.sign)
	e.epoch()
	e.store = &client.MemStore{}
	var err error
	e.c, err = client.New(e.dir, k.params(t), e.store, client.Config{
		Now: func() time.Time { return e.now.Add(time.Second) },
		Log: e.dir,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// epoch closes an epoch one second after the previous one.
func (e *contactEnv) epoch() {
	e.now = e.now.Add(time.Second)
	e.s.closeEpoch(epochOpts{ts: e.now})
}

// change logs the next version of Bob's set, signed by b1.
func (e *contactEnv) change(devs ...*device) *change {
	return e.s.change(bob, set(devs...), api.AuthDevice, e.b1.sign)
}

func (e *contactEnv) contact() *client.Contact {
	e.t.Helper()
	cs, err := e.c.Contacts(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	return cs[e.bob]
}

// encrypt encrypts to Bob: it verifies and remembers Bob. The client has
// no device keys or handle, so it then cannot sign (design.md 12.3):
// ErrCannotSign, after the verification, is the expected outcome.
func (e *contactEnv) encrypt() {
	e.t.Helper()
	envs, err := e.c.Encrypt(e.t.Context(), bob, []byte("hi"))
	if !errors.Is(err, client.ErrCannotSign) || envs != nil {
		e.t.Fatalf("Encrypt: %d envelopes, %v; want ErrCannotSign after verifying Bob", len(envs), err)
	}
}

// remembered checks the remembered entry of Bob.
func (e *contactEnv) remembered(version uint64, leaf [32]byte) *client.Contact {
	e.t.Helper()
	c := e.contact()
	if c == nil || c.Version != version || c.LeafHash != leaf {
		e.t.Fatalf("remembered %+v, want version %d leaf %x", c, version, leaf[:4])
	}
	st, err := e.c.State(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	if c.Size > st.Trusted.Size {
		e.t.Fatalf("remembered epoch of size %d after the trusted one (%d)", c.Size, st.Trusted.Size)
	}
	return c
}

// TestContactHonest is the control: Bob's set changes legitimately, one
// version and then two at once; each check verifies the chain with one
// records-only Monitor call from the remembered version − 1 and advances
// the remembered entry; with no change the entry moves to the new epoch.
// Only the recipient of Encrypt is remembered, not a handle merely looked
// up.
func TestContactHonest(t *testing.T) {
	e := newContactEnv(t)
	ctx := t.Context()
	if _, err := e.c.Lookup(ctx, bob); err != nil {
		t.Fatal(err)
	}
	if e.contact() != nil {
		t.Fatal("a plain lookup remembered the contact")
	}
	e.encrypt()
	v1 := e.s.handle(bob).versions[0]
	c := e.remembered(1, v1.leaf)
	if c.Size != e.s.ep().size {
		t.Fatalf("remembered epoch size %d, want %d", c.Size, e.s.ep().size)
	}

	// Nothing changed, a new epoch: the entry moves to it.
	e.epoch()
	reps, err := e.c.CheckContacts(ctx)
	if err != nil || len(reps) != 1 || reps[0].Remembered != 1 || reps[0].Current != 1 || reps[0].Err != nil {
		t.Fatalf("CheckContacts: %+v, %v", reps, err)
	}
	if c = e.remembered(1, v1.leaf); c.Size != e.s.ep().size {
		t.Fatalf("remembered epoch size %d, want %d", c.Size, e.s.ep().size)
	}
	if e.dir.lastMonitor() != nil {
		t.Fatal("a Monitor call without a version change")
	}

	// One version on.
	b2 := newDevice(t, "b2", api.SuiteX25519)
	v2 := e.change(e.b1, b2)
	e.epoch()
	reps, err = e.c.CheckContacts(ctx)
	if err != nil || reps[0].Remembered != 1 || reps[0].Current != 2 {
		t.Fatalf("CheckContacts: %+v, %v", reps, err)
	}
	e.remembered(2, v2.leaf)
	req := e.dir.lastMonitor()
	if req == nil || !req.GetRecordsOnly() || req.GetKnownVersion() != 0 || !bytes.Equal(req.GetIndex(), v1.record.Index[:]) {
		t.Fatalf("monitor request %v, want records_only from version 0 (remembered 1)", req)
	}

	// Two versions at once, checked inside Encrypt.
	e.change(b2)
	v4 := e.change(e.b1)
	e.epoch()
	e.encrypt()
	e.remembered(4, v4.leaf)
	if req := e.dir.lastMonitor(); req.GetKnownVersion() != 1 {
		t.Fatalf("monitor from known version %d, want 1 (remembered 2)", req.GetKnownVersion())
	}
}

// alertCase checks that the check of Bob fails with ErrContactChanged of
// the given kind, remembered and current versions, in CheckContacts,
// Lookup and Encrypt, storing nothing and producing no envelope, and
// returns the alert.
func (e *contactEnv) alert(kind evidence.Kind, remembered, current uint64, absent bool) *client.ContactChangedError {
	e.t.Helper()
	ctx := e.t.Context()
	before, _ := e.store.Load(ctx)
	reps, err := e.c.CheckContacts(ctx)
	var cc *client.ContactChangedError
	if !errors.Is(err, client.ErrContactChanged) || !errors.As(err, &cc) {
		e.t.Fatalf("CheckContacts: %v, want ErrContactChanged", err)
	}
	if len(reps) != 1 || reps[0].Err == nil || reps[0].Remembered != remembered || reps[0].Current != current {
		e.t.Fatalf("report %+v", reps)
	}
	if cc.Handle != e.bob || cc.Kind != kind || cc.Remembered != remembered || cc.Current != current || cc.Absent != absent {
		e.t.Fatalf("alert %+v, want kind %s, versions %d -> %d, absent %v", cc, kind, remembered, current, absent)
	}
	// The alert's evidence refuses the log (design.md 13.3, 15.1): every
	// later lookup and encryption fails without asking the directory.
	if _, err := e.c.Lookup(ctx, bob); !errors.Is(err, client.ErrLogRefused) {
		e.t.Fatalf("Lookup: %v, want ErrLogRefused", err)
	}
	envs, err := e.c.Encrypt(ctx, bob, []byte("hi"))
	if envs != nil || !errors.Is(err, client.ErrLogRefused) {
		e.t.Fatalf("Encrypt: %d envelopes, %v; want none and ErrLogRefused", len(envs), err)
	}
	// The refusal is all that the alert stored: no new trusted epoch, no
	// advanced contact.
	after, _ := e.store.Load(ctx)
	var bs, as client.State
	if err := bs.UnmarshalBinary(before); err != nil {
		e.t.Fatal(err)
	}
	if err := as.UnmarshalBinary(after); err != nil {
		e.t.Fatal(err)
	}
	if len(as.Refused) != 1 {
		e.t.Fatalf("refusals stored: %d, want 1", len(as.Refused))
	}
	for _, r := range as.Refused {
		if r.Kind != string(kind) || !bytes.Equal(r.Bundle, cc.Evidence) {
			e.t.Errorf("refusal %s, want the alert's %s bundle", r.Kind, kind)
		}
	}
	as.Refused = nil
	if !bytes.Equal(mustMarshal(e.t, &bs), mustMarshal(e.t, &as)) {
		e.t.Error("the alert changed the stored state beyond the refusal")
	}
	checkContactEvidence(e.t, e.k, cc)
	return cc
}

// TestContactMapRegression: after Alice remembered Bob at version 2, the
// directory signs an epoch whose map holds an older version of Bob, another
// record at version 2, or nothing: a map-regression alert.
func TestContactMapRegression(t *testing.T) {
	for _, tc := range []struct {
		name    string
		regress func(e *contactEnv, h *handle)
		current uint64
		absent  bool
	}{
		{"older version", func(e *contactEnv, h *handle) {
			old := h.versions[0]
			e.s.pending = append(e.s.pending, smt.Update{Key: h.index, Value: old.leaf})
			e.s.latest[h.index] = old
		}, 1, false},
		{"another record at the same version (not logged)", func(e *contactEnv, h *handle) {
			// A record for version 2 that only the map holds.
			h.versions = h.versions[:1]
			_, c := e.s.record(bob, set(newDevice(t, "mallory", api.SuiteX25519)), api.AuthDevice, e.b1.sign, nil)
			c.bytes = mustMarshal(t, c.record)
			c.leaf = api.LeafHash(c.bytes)
			e.s.pending = append(e.s.pending, smt.Update{Key: h.index, Value: c.leaf})
			e.s.latest[h.index] = c
		}, 2, false},
		{"absent", func(e *contactEnv, h *handle) {
			var leaves []smt.Leaf
			for k, v := range e.s.m.Leaves() {
				if k != h.index {
					leaves = append(leaves, smt.Leaf{Key: k, Value: v})
				}
			}
			m, err := smt.New(leaves)
			if err != nil {
				t.Fatal(err)
			}
			e.s.m = m
			delete(e.s.latest, h.index)
		}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newContactEnv(t)
			v2 := e.change(e.b1, newDevice(t, "b2", api.SuiteX25519))
			e.epoch()
			e.encrypt()
			e.remembered(2, v2.leaf)
			e.epoch() // an honest epoch in between
			tc.regress(e, e.s.handle(bob))
			e.epoch()
			e.alert(evidence.KindMapRegression, 2, tc.current, tc.absent)
			e.remembered(2, v2.leaf)
		})
	}
}

// TestContactVersionConflict: the log holds another record at a version
// Alice verified. First, the chain the directory gives from the remembered
// version starts with another record than the remembered one (the
// directory forked Bob's history after Alice's lookup); second, a lookup
// shows a version 2 that only the map held, and the monitoring answer, in
// a later epoch, the logged chain through another version 2.
func TestContactVersionConflict(t *testing.T) {
	t.Run("remembered version", func(t *testing.T) {
		e := newContactEnv(t)
		v2 := e.change(e.b1, newDevice(t, "b2", api.SuiteX25519))
		e.epoch()
		e.encrypt()
		e.remembered(2, v2.leaf)
		// The directory logs another version 2 and a version 3 after it.
		h := e.s.handle(bob)
		h.versions = h.versions[:1]
		e.change(e.b1, newDevice(t, "mallory", api.SuiteX25519))
		e.change(e.b1)
		e.epoch()
		e.alert(evidence.KindVersionConflict, 2, 3, false)
	})
	t.Run("looked-up version", func(t *testing.T) {
		e := newContactEnv(t)
		e.encrypt()
		e.remembered(1, e.s.handle(bob).versions[0].leaf)
		// Version 2 is logged, but the map of epoch a holds another
		// version 2; epoch b's map holds a logged version 3 after the
		// logged version 2. Lookups are answered in epoch a.
		h := e.s.handle(bob)
		e.change(e.b1, newDevice(t, "b2", api.SuiteX25519))
		logged := h.versions
		h.versions = h.versions[:1]
		_, c := e.s.record(bob, set(newDevice(t, "mallory", api.SuiteX25519)), api.AuthDevice, e.b1.sign, nil)
		h.versions = logged
		c.bytes = mustMarshal(t, c.record)
		c.leaf = api.LeafHash(c.bytes)
		e.s.pending = append(e.s.pending, smt.Update{Key: h.index, Value: c.leaf})
		e.s.latest[h.index] = c
		e.epoch()
		e.dir.lookupAt = e.s.ep()
		e.change(e.b1)
		e.epoch()
		e.alert(evidence.KindVersionConflict, 1, 2, false)
	})
}

// TestContactChainRefused: the directory shows Bob at a later version but
// refuses the chain, hides a version, or gives a change that is not
// included in the log, or a records-only answer with device sets: an
// ErrContactChain alert without evidence, nothing stored, no envelope. The
// same client passes the check once the answers are honest.
func TestContactChainRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		refuse bool
		tamper func(*ktpb.MonitorResponse)
	}{
		{name: "refused", refuse: true},
		{name: "version hidden", tamper: func(r *ktpb.MonitorResponse) { r.Changes = append(r.Changes[:1], r.Changes[2:]...) }},
		{name: "chain stops short", tamper: func(r *ktpb.MonitorResponse) { r.Changes = r.Changes[:1] }},
		{name: "no changes", tamper: func(r *ktpb.MonitorResponse) { r.Changes = nil }},
		{name: "inclusion proof", tamper: func(r *ktpb.MonitorResponse) {
			r.Changes[1].InclusionProof[0] = flipLast(r.Changes[1].InclusionProof[0])
		}},
		{name: "not records-only", tamper: func(r *ktpb.MonitorResponse) { r.Changes[0].Opening = make([]byte, 32) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newContactEnv(t)
			ctx := t.Context()
			e.encrypt()
			b2 := newDevice(t, "b2", api.SuiteX25519)
			e.change(e.b1, b2)
			v3 := e.change(b2)
			e.epoch()
			e.dir.refuse, e.dir.monitor = tc.refuse, tc.tamper
			before, _ := e.store.Load(ctx)
			reps, err := e.c.CheckContacts(ctx)
			if !errors.Is(err, client.ErrContactChain) || errors.Is(err, client.ErrContactChanged) || len(reps) != 1 || !errors.Is(reps[0].Err, client.ErrContactChain) {
				t.Fatalf("CheckContacts: %+v, %v; want ErrContactChain", reps, err)
			}
			envs, err := e.c.Encrypt(ctx, bob, []byte("hi"))
			if envs != nil || !errors.Is(err, client.ErrContactChain) {
				t.Fatalf("Encrypt: %d envelopes, %v", len(envs), err)
			}
			if after, _ := e.store.Load(ctx); !bytes.Equal(before, after) {
				t.Error("the alert changed the stored state")
			}
			e.dir.refuse, e.dir.monitor = false, nil
			e.encrypt()
			e.remembered(3, v3.leaf)
		})
	}
}

// TestContactForget: a forgotten contact is a first contact again.
func TestContactForget(t *testing.T) {
	e := newContactEnv(t)
	e.encrypt()
	h := e.s.handle(bob)
	e.s.pending = append(e.s.pending, smt.Update{Key: h.index, Value: [32]byte{1}}) // garbage the map holds
	e.epoch()
	if _, err := e.c.CheckContacts(t.Context()); !errors.Is(err, client.ErrContactChanged) && !errors.Is(err, client.ErrMapProof) {
		t.Fatalf("CheckContacts: %v", err)
	}
	if err := e.c.ForgetContact(t.Context(), bob); err != nil {
		t.Fatal(err)
	}
	if e.contact() != nil {
		t.Fatal("still remembered")
	}
	if reps, err := e.c.CheckContacts(t.Context()); err != nil || len(reps) != 0 {
		t.Fatalf("CheckContacts: %+v %v", reps, err)
	}
}

// TestContactStateRoundTrip: the remembered contacts survive the state
// encoding, and a contact whose parts disagree does not decode.
func TestContactStateRoundTrip(t *testing.T) {
	e := newContactEnv(t)
	e.encrypt()
	st, err := e.c.State(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b := mustMarshal(t, st)
	var got client.State
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	c, g := st.Contacts[e.bob], got.Contacts[e.bob]
	if g == nil || g.Version != c.Version || g.LeafHash != c.LeafHash || g.Size != c.Size || g.Index != c.Index ||
		!bytes.Equal(g.EpochRecord, c.EpochRecord) || !bytes.Equal(g.MapProof, c.MapProof) || !bytes.Equal(g.Record, c.Record) {
		t.Fatalf("round trip: %+v, want %+v", g, c)
	}
	cb := mustMarshal(t, c)
	for name, bad := range map[string][]byte{
		"empty":             nil,
		"unknown version":   append([]byte{2}, cb[1:]...),
		"truncated":         cb[:len(cb)-1],
		"trailing byte":     append(bytes.Clone(cb), 0),
		"other map root":    func() []byte { b := bytes.Clone(cb); b[1+34] ^= 1; return b }(),
		"record bit flip":   func() []byte { b := bytes.Clone(cb); b[len(b)-1] ^= 1; return b }(),
		"huge length":       append(bytes.Clone(cb[:1+api.EpochRecordSize]), 0xff, 0xff, 0xff, 0xff),
		"map proof missing": append(append(bytes.Clone(cb[:1+api.EpochRecordSize]), 0, 0, 0, 0), cb[len(cb)-len(c.Record)-4:]...),
	} {
		var x client.Contact
		if err := x.UnmarshalBinary(bad); !errors.Is(err, client.ErrState) {
			t.Errorf("%s: %v, want ErrState", name, err)
		}
	}
}

// goldenContact is a deterministic remembered contact whose encoding is
// pinned in testdata/contact.golden: a record signed by a key from a fixed
// seed, in a one-leaf map.
func goldenContact(t testing.TB) *client.Contact {
	t.Helper()
	d := api.Device{ID: [16]byte{1}, Suite: api.SuiteX25519, HPKEKey: bytes.Repeat([]byte{9}, 32), SigningKey: [32]byte{5}, Created: 1767225600}
	s := &api.DeviceSet{AccountID: [16]byte{0xac}, Devices: []api.Device{d}}
	r := &api.ChangeRecord{Index: [32]byte{0x1d}, Version: 3, Commitment: [32]byte{0xc0}, Prev: [32]byte{0x1e}, Kind: api.AuthDevice, Authorizers: s.Authorizers()}
	r.Sign(testOrigin, ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, 32)))
	rb := mustMarshal(t, r)
	m, err := smt.New([]smt.Leaf{{Key: r.Index, Value: api.LeafHash(rb)}})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := m.Prove(r.Index)
	er := api.EpochRecord{Epoch: 7, Timestamp: 1767268800000, LogSize: 42, MapRoot: m.Root(), MapSize: 1}
	var c client.Contact
	b := append([]byte{1}, mustMarshal(t, &er)...)
	pb := mustMarshal(t, p)
	b = binary.BigEndian.AppendUint32(b, uint32(len(pb)))
	b = append(b, pb...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(rb)))
	b = append(b, rb...)
	if err := c.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if c.Index != r.Index || c.Version != 3 || c.Size != 43 || c.LeafHash != api.LeafHash(rb) {
		t.Fatalf("decoded %+v", c)
	}
	return &c
}

func TestContactGolden(t *testing.T) {
	got := hex.EncodeToString(mustMarshal(t, goldenContact(t))) + "\n"
	path := filepath.Join("testdata", "contact.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("encoding changed (run with -update if intended):\n got %s\nwant %s", got, want)
	}
}

func FuzzUnmarshalContact(f *testing.F) {
	f.Add(mustMarshal(f, goldenContact(f)))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		var c client.Contact
		if err := c.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, client.ErrState) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if b2, err := c.MarshalBinary(); err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("re-encoding differs: %v", err)
		}
	})
}

// TestContactAlertWithoutLog: without a Log service to fetch the
// remembered epoch's inclusion proof the alert stands, without evidence,
// saying why.
func TestContactAlertWithoutLog(t *testing.T) {
	e := newContactEnv(t)
	v2 := e.change(e.b1, newDevice(t, "b2", api.SuiteX25519))
	e.epoch()
	e.encrypt()
	h := e.s.handle(bob)
	e.s.pending = append(e.s.pending, smt.Update{Key: h.index, Value: h.versions[0].leaf})
	e.s.latest[h.index] = h.versions[0]
	e.epoch()
	c, err := client.New(e.dir, e.k.params(t), e.store, client.Config{Now: func() time.Time { return e.now.Add(time.Second) }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Encrypt(t.Context(), bob, []byte("hi"))
	var cc *client.ContactChangedError
	if !errors.As(err, &cc) || cc.Evidence != nil || cc.EvidenceErr == nil || cc.Kind != evidence.KindMapRegression {
		t.Fatalf("Encrypt: %v (%+v), want a map-regression alert without evidence", err, cc)
	}
	e.remembered(2, v2.leaf)
}
