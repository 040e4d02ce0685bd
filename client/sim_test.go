package client_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/internal/testing/testonly"
	"github.com/keytrans/kt/smt"
	"github.com/keytrans/kt/vrf"
)

// This file is a small directory simulator: a real log (conformance's
// in-memory reference log), a real sparse Merkle map, a real VRF key, real
// change records signed by device keys, epoch records appended as each
// epoch checkpoint's last entry, and checkpoints signed by the log key and
// cosigned by three test witnesses with chosen timestamps. Tests derive
// honest answers from it and tamper with exactly one part.

const testOrigin = "example.com/kt"

// t0 is the simulator's epoch 0 time; tests pass explicit clocks.
var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// cosigner is a C2SP tlog-cosignature/v1 Ed25519 cosigner that signs with a
// chosen timestamp (formats/note's signer always uses the wall clock).
type cosigner = testonly.Cosigner

func newCosigner(t testing.TB, name string) *cosigner { return testonly.NewCosigner(t, name) }

// keys are a directory's keys; two simulators with the same keys are two
// views (forks) of one log.
type keys struct {
	logSigner note.Signer
	logVKey   string
	vrf       *vrf.PrivateKey
	recovery  ed25519.PrivateKey
	witnesses []*cosigner
}

func newKeys(t testing.TB) *keys {
	t.Helper()
	_, vkey, signer, _ := testkit.NoteKey(t, testOrigin)
	vk, err := vrf.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, rec, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k := &keys{logSigner: signer, logVKey: vkey, vrf: vk, recovery: rec}
	for i := range 3 {
		k.witnesses = append(k.witnesses, newCosigner(t, fmt.Sprintf("w%d.example", i+1)))
	}
	return k
}

// policy is the 2-of-3 witness policy text.
func (k *keys) policy() string {
	var b strings.Builder
	fmt.Fprintf(&b, "log %s\n", k.logVKey)
	for i, w := range k.witnesses {
		fmt.Fprintf(&b, "witness w%d %s\n", i+1, w.VKey())
	}
	b.WriteString("group wits 2 w1 w2 w3\nquorum wits\n")
	return b.String()
}

func (k *keys) parameters() *ktpb.Parameters {
	return &ktpb.Parameters{
		Origin:            testOrigin,
		LogPublicKey:      k.logVKey,
		VrfPublicKey:      k.vrf.Public().String(),
		RecoveryPublicKey: k.recovery.Public().(ed25519.PublicKey),
		WitnessPolicy:     k.policy(),
	}
}

func (k *keys) params(t testing.TB) *client.Params {
	t.Helper()
	p, err := client.NewParams(k.parameters(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// change is a logged change record with what a lookup serves with it.
type change struct {
	record   *api.ChangeRecord
	bytes    []byte
	leaf     [32]byte
	opening  [32]byte
	set      []byte
	logIndex uint64
}

type handle struct {
	name     string
	index    [32]byte
	versions []*change
}

// epoch is a closed epoch and its cosigned epoch checkpoint.
type epoch struct {
	record      api.EpochRecord
	recordBytes []byte
	checkpoint  []byte
	size        uint64
	snap        *smt.Snapshot
	latest      map[[32]byte]*change // the change the map holds per index
}

// sim is the directory simulator.
type sim struct {
	t       testing.TB
	k       *keys
	log     *conformance.MemoryLog
	m       *smt.Map
	pending []smt.Update
	latest  map[[32]byte]*change
	handles map[string]*handle
	epochs  []*epoch
}

func newSim(t testing.TB, k *keys) *sim {
	t.Helper()
	m, err := smt.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &sim{
		t:       t,
		k:       k,
		log:     conformance.NewMemoryLog(testOrigin, k.logSigner),
		m:       m,
		latest:  map[[32]byte]*change{},
		handles: map[string]*handle{},
	}
	s.closeEpoch(epochOpts{ts: t0}) // entry 0: epoch record 0, empty map
	return s
}

// ep returns the latest epoch.
func (s *sim) ep() *epoch { return s.epochs[len(s.epochs)-1] }

func (s *sim) handle(name string) *handle {
	canon, err := api.NormalizeHandle(name)
	if err != nil {
		s.t.Fatal(err)
	}
	h := s.handles[canon]
	if h == nil {
		idx, _ := s.k.vrf.Prove(api.VRFInput(canon))
		h = &handle{name: canon, index: idx}
		s.handles[canon] = h
	}
	return h
}

func (s *sim) append(entry []byte) uint64 {
	idx, err := s.log.Append(context.Background(), [][]byte{entry})
	if err != nil {
		s.t.Fatal(err)
	}
	return idx[0]
}

// record builds a signed change record for the next version of name
// committing to set. mut, if not nil, edits the record before it is signed
// (to log records that break the rules).
func (s *sim) record(name string, set *api.DeviceSet, kind api.AuthKind, signer ed25519.PrivateKey, mut func(*api.ChangeRecord)) (*handle, *change) {
	h := s.handle(name)
	value, err := set.MarshalBinary()
	if err != nil {
		s.t.Fatal(err)
	}
	c := &change{set: value}
	rand.Read(c.opening[:])
	r := &api.ChangeRecord{
		Index:       h.index,
		Version:     uint64(len(h.versions) + 1),
		Kind:        kind,
		Authorizers: set.Authorizers(),
	}
	if n := len(h.versions); n > 0 {
		r.Prev = h.versions[n-1].leaf
	}
	r.Commitment = api.Commit(c.opening, r.Index, r.Version, value)
	if mut != nil {
		mut(r)
	}
	r.Sign(testOrigin, signer)
	c.record = r
	return h, c
}

// log appends c as the next version of h and queues its map update.
func (s *sim) logChange(h *handle, c *change) *change {
	var err error
	if c.bytes, err = c.record.MarshalBinary(); err != nil {
		s.t.Fatal(err)
	}
	c.leaf = api.LeafHash(c.bytes)
	c.logIndex = s.append(c.bytes)
	h.versions = append(h.versions, c)
	s.pending = append(s.pending, smt.Update{Key: h.index, Value: c.leaf})
	s.latest[h.index] = c
	return c
}

// change logs a change of name's device set, signed by signer.
func (s *sim) change(name string, set *api.DeviceSet, kind api.AuthKind, signer ed25519.PrivateKey) *change {
	return s.logChange(s.record(name, set, kind, signer, nil))
}

// fill adds n random leaves to the map without log entries, to give map
// proofs a realistic depth (benchmarks only: an auditor would object).
func (s *sim) fill(n int) {
	for range n {
		var u smt.Update
		rand.Read(u.Key[:])
		rand.Read(u.Value[:])
		s.pending = append(s.pending, u)
	}
}

type epochOpts struct {
	ts time.Time
	// cosigned are the cosignature times per witness; nil means all at
	// ts, a zero time leaves that witness out.
	cosigned []time.Time
	// number overrides the epoch number.
	number *uint64
}

// closeEpoch applies the pending map updates, appends the epoch record and
// cosigns the resulting checkpoint.
func (s *sim) closeEpoch(o epochOpts) *epoch {
	if _, err := s.m.Apply(s.pending); err != nil {
		s.t.Fatal(err)
	}
	s.pending = nil
	snap := s.m.Snapshot()
	size := s.size()
	rec := api.EpochRecord{
		Epoch:     uint64(len(s.epochs)),
		Timestamp: uint64(o.ts.UnixMilli()),
		LogSize:   size,
		MapRoot:   snap.Root(),
		MapSize:   snap.Len(),
	}
	if o.number != nil {
		rec.Epoch = *o.number
	}
	rb, _ := rec.MarshalBinary()
	s.append(rb)
	latest := make(map[[32]byte]*change, len(s.latest))
	for k, v := range s.latest {
		latest[k] = v
	}
	e := &epoch{record: rec, recordBytes: rb, size: size + 1, snap: snap, latest: latest}
	e.checkpoint = s.cosign(s.checkpoint(), o.ts, o.cosigned)
	s.epochs = append(s.epochs, e)
	return e
}

func (s *sim) size() uint64 {
	cp := s.checkpoint()
	if cp == nil {
		return 0
	}
	lines := strings.SplitN(string(cp), "\n", 3)
	var n uint64
	fmt.Sscan(lines[1], &n)
	return n
}

func (s *sim) checkpoint() []byte {
	cp, err := s.log.Checkpoint(context.Background())
	if err != nil {
		return nil
	}
	return cp
}

// cosign adds cosignature lines to a log-signed checkpoint.
func (s *sim) cosign(cp []byte, ts time.Time, times []time.Time) []byte {
	text := string(cp[:bytes.Index(cp, []byte("\n\n"))+1])
	out := bytes.Clone(cp)
	for i, w := range s.k.witnesses {
		at := ts
		if times != nil {
			at = times[i]
		}
		if at.IsZero() {
			continue
		}
		out = append(out, w.Sign(text, uint64(at.Unix()))...)
	}
	return out
}

func (s *sim) inclusion(index, size uint64) [][]byte {
	p, err := s.log.InclusionProof(context.Background(), index, size)
	if err != nil {
		s.t.Fatal(err)
	}
	return p
}

// epochPart is the epoch part of e for a client that trusts knownSize.
func (s *sim) epochPart(e *epoch, knownSize uint64) *ktpb.EpochPart {
	part := &ktpb.EpochPart{
		Checkpoint:     e.checkpoint,
		EpochRecord:    e.recordBytes,
		InclusionProof: s.inclusion(e.size-1, e.size),
	}
	if knownSize > 0 && knownSize < e.size {
		p, err := s.log.ConsistencyProof(context.Background(), knownSize, e.size)
		if err != nil {
			s.t.Fatal(err)
		}
		part.ConsistencyProof = p
	}
	return part
}

// lookup answers a lookup at the latest epoch.
func (s *sim) lookup(name string, knownSize uint64) *ktpb.LookupResponse {
	return s.lookupAt(s.ep(), name, knownSize)
}

func (s *sim) lookupAt(e *epoch, name string, knownSize uint64) *ktpb.LookupResponse {
	canon, err := api.NormalizeHandle(name)
	if err != nil {
		s.t.Fatal(err)
	}
	idx, pi := s.k.vrf.Prove(api.VRFInput(canon))
	p, _ := e.snap.Prove(idx)
	mp, err := p.MarshalBinary()
	if err != nil {
		s.t.Fatal(err)
	}
	resp := &ktpb.LookupResponse{Handle: canon, VrfProof: pi, MapProof: mp}
	if c := e.latest[idx]; c != nil {
		resp.ChangeRecord, resp.Opening, resp.DeviceSet = c.bytes, c.opening[:], c.set
	}
	if knownSize != e.size {
		resp.Epoch = s.epochPart(e, knownSize)
	}
	return resp
}

// monitor answers a monitoring request at the latest epoch.
func (s *sim) monitor(name string, knownVersion, knownSize uint64) *ktpb.MonitorResponse {
	e := s.ep()
	h := s.handle(name)
	p, _ := e.snap.Prove(h.index)
	mp, err := p.MarshalBinary()
	if err != nil {
		s.t.Fatal(err)
	}
	resp := &ktpb.MonitorResponse{MapProof: mp}
	if knownSize != e.size {
		resp.Epoch = s.epochPart(e, knownSize)
	}
	for _, c := range h.versions {
		if c.record.Version <= knownVersion || c.logIndex >= e.record.LogSize {
			continue
		}
		resp.Changes = append(resp.Changes, &ktpb.MonitoredChange{
			ChangeRecord:   c.bytes,
			LogIndex:       c.logIndex,
			InclusionProof: s.inclusion(c.logIndex, e.size),
			Opening:        c.opening[:],
			DeviceSet:      c.set,
		})
	}
	return resp
}

// device is a test device with its keys.
type device struct {
	dev  api.Device
	sign ed25519.PrivateKey
	hpke hpke.PrivateKey
}

func (d *device) pub() [32]byte { return d.dev.SigningKey }

func newDevice(t testing.TB, label string, suite api.HPKESuite) *device {
	t.Helper()
	var kem hpke.KEM
	switch suite.KEM {
	case api.KEMX25519HKDFSHA256:
		kem = hpke.DHKEM(ecdh.X25519())
	case api.KEMP256HKDFSHA256:
		kem = hpke.DHKEM(ecdh.P256())
	case api.KEMMLKEM768:
		kem = hpke.MLKEM768()
	case api.KEMMLKEM768X25519:
		kem = hpke.MLKEM768X25519()
	default:
		t.Fatalf("no KEM %x", suite.KEM)
	}
	sk, err := kem.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d := &device{sign: priv, hpke: sk}
	id := sha256.Sum256([]byte("device " + label))
	copy(d.dev.ID[:], id[:16])
	d.dev.Suite = suite
	d.dev.HPKEKey = sk.PublicKey().Bytes()
	d.dev.SigningKey = [32]byte(pub)
	d.dev.Created = uint64(t0.Unix())
	return d
}

var accountID = [16]byte{0xac, 0xc0}

// set returns a device set of the given devices.
func set(devs ...*device) *api.DeviceSet {
	s := &api.DeviceSet{AccountID: accountID}
	for _, d := range devs {
		s.Devices = append(s.Devices, d.dev)
	}
	for i := 1; i < len(s.Devices); i++ {
		for j := i; j > 0 && bytes.Compare(s.Devices[j-1].ID[:], s.Devices[j].ID[:]) > 0; j-- {
			s.Devices[j-1], s.Devices[j] = s.Devices[j], s.Devices[j-1]
		}
	}
	return s
}

func mustMarshal(t testing.TB, m interface{ MarshalBinary() ([]byte, error) }) []byte {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
