package vectors

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/testonly"
	"github.com/keytrans/kt/smt"
	"github.com/keytrans/kt/vrf"
)

// This file is a deterministic directory simulator: every key is derived
// from a label, every opening too, and every time is fixed, so that the
// vectors it yields are the same on every run. It is the in-memory
// reference log (internal/testing/conformance), the real sparse Merkle map,
// VRF, change records and checkpoints, cosigned by three witnesses of a
// 2-of-3 policy.

// Origin is the simulated log's origin.
const Origin = "vectors.example/kt"

// T0 is the simulator's epoch 0 time.
var T0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// seed returns 32 bytes derived from label.
func seed(label string) []byte {
	s := sha256.Sum256([]byte("kt test vectors\x00" + label))
	return s[:]
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func check(err error) {
	if err != nil {
		panic(err)
	}
}

// keys are a directory's keys.
type keys struct {
	logSKey, logVKey string
	logSigner        note.Signer
	vrf              *vrf.PrivateKey
	recovery         ed25519.PrivateKey
	witnesses        []*testonly.Cosigner
	// auditors are a1 and a2 of the 2-of-2 audit policy, and a3, whose
	// key is in no policy.
	auditors []*testonly.Cosigner
}

func newKeys(label string) *keys {
	skey, vkey, err := note.GenerateKey(bytes.NewReader(seed(label+" log")), Origin)
	check(err)
	k := &keys{
		logSKey: skey, logVKey: vkey,
		logSigner: must(note.NewSigner(skey)),
		vrf:       must(vrf.NewPrivateKey(seed(label + " vrf"))),
		recovery:  ed25519.NewKeyFromSeed(seed(label + " recovery")),
	}
	for i := range 3 {
		name := fmt.Sprintf("w%d.example", i+1)
		priv := ed25519.NewKeyFromSeed(seed(label + " witness " + name))
		k.witnesses = append(k.witnesses, &testonly.Cosigner{Name: name, Priv: priv, Pub: priv.Public().(ed25519.PublicKey)})
	}
	for i := range 3 {
		name := fmt.Sprintf("a%d.example", i+1)
		priv := ed25519.NewKeyFromSeed(seed(label + " auditor " + name))
		k.auditors = append(k.auditors, &testonly.Cosigner{Name: name, Priv: priv, Pub: priv.Public().(ed25519.PublicKey)})
	}
	return k
}

// policy is the 2-of-3 witness policy.
func (k *keys) policy() string {
	var b strings.Builder
	fmt.Fprintf(&b, "log %s\n", k.logVKey)
	for i, w := range k.witnesses {
		fmt.Fprintf(&b, "witness w%d %s\n", i+1, w.VKey())
	}
	b.WriteString("group wits 2 w1 w2 w3\nquorum wits\n")
	return b.String()
}

// auditPolicy is the 2-of-2 audit policy of auditors a1 and a2
// (design.md 14.1).
func (k *keys) auditPolicy() string {
	var b strings.Builder
	fmt.Fprintf(&b, "log %s\n", k.logVKey)
	for i, a := range k.auditors[:2] {
		fmt.Fprintf(&b, "auditor a%d %s https://a%d.example\n", i+1, a.VKey(), i+1)
	}
	b.WriteString("group auditors all a1 a2\nquorum auditors\n")
	return b.String()
}

// auditStatements appends to the epoch checkpoint cp an audit statement
// (a tlog-cosignature/v1 line, design.md 14.1) by each auditor of who at
// the matching time.
func (k *keys) auditStatements(cp []byte, who []int, at []time.Time) []byte {
	text := string(cp[:bytes.Index(cp, []byte("\n\n"))+1])
	out := bytes.Clone(cp)
	for i, a := range who {
		out = append(out, k.auditors[a].Sign(text, uint64(at[i].Unix()))...)
	}
	return out
}

func (k *keys) parameters() *ktpb.Parameters {
	return &ktpb.Parameters{
		Origin:            Origin,
		LogPublicKey:      k.logVKey,
		VrfPublicKey:      k.vrf.Public().String(),
		RecoveryPublicKey: k.recovery.Public().(ed25519.PublicKey),
		WitnessPolicy:     k.policy(),
	}
}

// device is a device with its private keys.
type device struct {
	keys *client.DeviceKeys
	dev  api.Device
}

func newDevice(label string, suite api.HPKESuite) *device {
	kem := must(hpke.NewKEM(suite.KEM))
	sk := must(kem.DeriveKeyPair(seed(label + " hpke")))
	k := &client.DeviceKeys{
		Signing: ed25519.NewKeyFromSeed(seed(label + " signing")),
		Suite:   suite,
		HPKE:    sk,
		Created: uint64(T0.Unix()),
	}
	copy(k.ID[:], seed(label+" id"))
	return &device{keys: k, dev: k.Device()}
}

func (d *device) sign() ed25519.PrivateKey { return d.keys.Signing }

var accountID = [16]byte{0xac, 0xc0, 0x01}

// set returns a device set of devs in canonical order.
func set(devs ...*device) *api.DeviceSet {
	s := &api.DeviceSet{AccountID: accountID}
	for _, d := range devs {
		s.Devices = append(s.Devices, d.dev)
	}
	slices.SortFunc(s.Devices, func(a, b api.Device) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	return s
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
	latest      map[[32]byte]*change
}

type sim struct {
	k       *keys
	log     *conformance.MemoryLog
	m       *smt.Map
	pending []smt.Update
	latest  map[[32]byte]*change
	handles map[string]*handle
	epochs  []*epoch
}

func newSim(k *keys) *sim {
	s := &sim{
		k:       k,
		log:     conformance.NewMemoryLog(Origin, k.logSigner),
		m:       must(smt.New(nil)),
		latest:  map[[32]byte]*change{},
		handles: map[string]*handle{},
	}
	s.closeEpoch(epochOpts{ts: T0})
	return s
}

func (s *sim) ep() *epoch { return s.epochs[len(s.epochs)-1] }

func (s *sim) handle(name string) *handle {
	canon := must(api.NormalizeHandle(name))
	h := s.handles[canon]
	if h == nil {
		idx, _ := s.k.vrf.Prove(api.VRFInput(canon))
		h = &handle{name: canon, index: idx}
		s.handles[canon] = h
	}
	return h
}

func (s *sim) append(entry []byte) uint64 {
	return must(s.log.Append(context.Background(), [][]byte{entry}))[0]
}

// record builds a signed change record for the next version of name;
// mut, if not nil, edits it before it is signed.
func (s *sim) record(name string, st *api.DeviceSet, kind api.AuthKind, signer ed25519.PrivateKey, mut func(*api.ChangeRecord)) (*handle, *change) {
	h := s.handle(name)
	value := must(st.MarshalBinary())
	c := &change{set: value}
	copy(c.opening[:], seed(fmt.Sprintf("opening %s %d", h.name, len(h.versions)+1)))
	r := &api.ChangeRecord{
		Index:       h.index,
		Version:     uint64(len(h.versions) + 1),
		Kind:        kind,
		Authorizers: st.Authorizers(),
	}
	if n := len(h.versions); n > 0 {
		r.Prev = h.versions[n-1].leaf
	}
	r.Commitment = api.Commit(c.opening, r.Index, r.Version, value)
	if mut != nil {
		mut(r)
	}
	r.Sign(Origin, signer)
	c.record = r
	return h, c
}

func (s *sim) logChange(h *handle, c *change) *change {
	c.bytes = must(c.record.MarshalBinary())
	c.leaf = api.LeafHash(c.bytes)
	c.logIndex = s.append(c.bytes)
	h.versions = append(h.versions, c)
	s.pending = append(s.pending, smt.Update{Key: h.index, Value: c.leaf})
	s.latest[h.index] = c
	return c
}

func (s *sim) change(name string, st *api.DeviceSet, kind api.AuthKind, signer ed25519.PrivateKey) *change {
	return s.logChange(s.record(name, st, kind, signer, nil))
}

type epochOpts struct {
	ts time.Time
	// cosigned are the cosignature times per witness; nil: all at ts; a
	// zero time leaves that witness out.
	cosigned []time.Time
}

func (s *sim) closeEpoch(o epochOpts) *epoch {
	_, err := s.m.Apply(s.pending)
	check(err)
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
	rb := must(rec.MarshalBinary())
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
	return must(s.log.InclusionProof(context.Background(), index, size))
}

func (s *sim) epochPart(e *epoch, knownSize uint64) *ktpb.EpochPart {
	part := &ktpb.EpochPart{
		Checkpoint:     e.checkpoint,
		EpochRecord:    e.recordBytes,
		InclusionProof: s.inclusion(e.size-1, e.size),
	}
	if knownSize > 0 && knownSize < e.size {
		part.ConsistencyProof = must(s.log.ConsistencyProof(context.Background(), knownSize, e.size))
	}
	return part
}

func (s *sim) lookupAt(e *epoch, name string, knownSize uint64) *ktpb.LookupResponse {
	canon := must(api.NormalizeHandle(name))
	idx, pi := s.k.vrf.Prove(api.VRFInput(canon))
	p, _ := e.snap.Prove(idx)
	resp := &ktpb.LookupResponse{Handle: canon, VrfProof: pi, MapProof: must(p.MarshalBinary())}
	if c := e.latest[idx]; c != nil {
		resp.ChangeRecord, resp.Opening, resp.DeviceSet = c.bytes, c.opening[:], c.set
	}
	if knownSize != e.size {
		resp.Epoch = s.epochPart(e, knownSize)
	}
	return resp
}

func (s *sim) lookup(name string, knownSize uint64) *ktpb.LookupResponse {
	return s.lookupAt(s.ep(), name, knownSize)
}

// monitor answers a monitoring request from version 0 at the latest epoch.
func (s *sim) monitor(name string, knownSize uint64) *ktpb.MonitorResponse {
	e := s.ep()
	h := s.handle(name)
	p, _ := e.snap.Prove(h.index)
	resp := &ktpb.MonitorResponse{MapProof: must(p.MarshalBinary())}
	if knownSize != e.size {
		resp.Epoch = s.epochPart(e, knownSize)
	}
	for _, c := range h.versions {
		if c.logIndex >= e.record.LogSize {
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
