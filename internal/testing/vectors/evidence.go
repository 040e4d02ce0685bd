package vectors

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/log/evidence"
	"github.com/keytrans/kt/vrf"
)

var b64Std = base64.StdEncoding

func vrfParse(s string) (*vrf.PublicKey, error) { return vrf.ParsePublicKey(s) }

// EvidenceVector checks an evidence bundle offline (design.md 15, 15.1;
// log/evidence.Check) with the log's origin, verifier key and recovery
// key: the kind of misbehaviour it proves, or the error.
type EvidenceVector struct {
	Name         string      `json:"name"`
	Origin       string      `json:"origin"`
	LogPublicKey string      `json:"log_public_key"`
	RecoveryKey  Hex         `json:"recovery_public_key_hex"`
	Bundle       string      `json:"bundle"`
	Expect       EvidenceOut `json:"expect"`
}

// EvidenceOut is the outcome of an EvidenceVector: ok with the bundle's
// kind (and whether its claim needs a replay of the log), or the error:
// ErrMalformed, ErrSignature, ErrProof or ErrNotEvidence.
type EvidenceOut struct {
	OK          bool   `json:"ok"`
	Kind        string `json:"kind,omitempty"`
	NeedsReplay bool   `json:"needs_replay,omitempty"`
	Error       string `json:"error,omitempty"`
}

// Run checks the bundle.
func (v EvidenceVector) Run() EvidenceVector {
	out := v
	out.Expect = EvidenceOut{}
	lv := must(note.NewVerifier(v.LogPublicKey))
	kind, _, replay, err := evidence.Check(evidence.Params{Origin: v.Origin, LogVerifier: lv, RecoveryKey: [32]byte(v.RecoveryKey)}, []byte(v.Bundle))
	if err != nil {
		for _, s := range []struct {
			err  error
			name string
		}{{evidence.ErrMalformed, "ErrMalformed"}, {evidence.ErrSignature, "ErrSignature"}, {evidence.ErrProof, "ErrProof"}, {evidence.ErrNotEvidence, "ErrNotEvidence"}} {
			if errors.Is(err, s.err) {
				out.Expect.Error = s.name
				return out
			}
		}
		panic("evidence error without a known sentinel: " + err.Error())
	}
	out.Expect = EvidenceOut{OK: true, Kind: string(kind), NeedsReplay: replay}
	return out
}

func (w *world) genEvidence() File[EvidenceVector] {
	f := File[EvidenceVector]{Description: "Evidence bundles (design.md 15: kt-evidence/v1 forks; 15.1: kt-evidence/v2 rule violations), " +
		"checked offline with the log's origin, verifier key and recovery key: expect.ok with the kind, or expect.error " +
		"(ErrMalformed, ErrSignature, ErrProof, ErrNotEvidence). bundle is the bundle's text."}
	ctx := context.Background()
	k := newKeys("evidence")
	lv := must(note.NewVerifier(k.logVKey))
	add := func(name string, raw []byte) {
		f.Vectors = append(f.Vectors, EvidenceVector{Name: name, Origin: Origin, LogPublicKey: k.logVKey,
			RecoveryKey: []byte(k.recovery.Public().(ed25519.PublicKey)), Bundle: string(raw)}.Run())
	}
	d1 := newDevice("ev d1", api.SuiteX25519)
	d2 := newDevice("ev d2", api.SuiteX25519)

	// Two views of one log: a common prefix, then different changes.
	x, y := newSim(k), newSim(k)
	for _, s := range []*sim{x, y} {
		s.change("erin@example.com", set(d1), api.AuthEnroll, d1.sign())
		s.closeEpoch(epochOpts{ts: T0.Add(time.Second)})
	}
	x.change("frank@example.com", set(d2), api.AuthEnroll, d2.sign())
	y.change("grace@example.com", set(d2), api.AuthEnroll, d2.sign())
	ex := x.closeEpoch(epochOpts{ts: T0.Add(2 * time.Second)})
	ey := y.closeEpoch(epochOpts{ts: T0.Add(2 * time.Second)})
	b := must(evidence.Build(ctx, lv, ex.checkpoint, ey.checkpoint, nil))
	add("v1 fork: two checkpoints of one size with different roots", b.Marshal())
	y.change("heidi@example.com", set(d1), api.AuthEnroll, d1.sign())
	ey2 := y.closeEpoch(epochOpts{ts: T0.Add(3 * time.Second)})
	b2 := must(evidence.Build(ctx, lv, ex.checkpoint, ey2.checkpoint, y.log))
	add("v1 fork: a smaller checkpoint not consistent with a larger one", b2.Marshal())
	tampered := *b2
	tampered.Proof = append([][]byte(nil), b2.Proof...)
	tampered.Proof[0] = flip(tampered.Proof[0], 0)
	add("v1 fork: consistency proof corrupted", tampered.Marshal())
	// Consistent checkpoints: no fork. Sizes 4 and 7 of one view (4 is a
	// power of two: its proof starts with the subtree root).
	honest := &evidence.Bundle{A: y.epochs[1].checkpoint, B: ey2.checkpoint,
		Proof: must(y.log.ConsistencyProof(ctx, y.epochs[1].size, ey2.size))}
	if y.epochs[1].size&(y.epochs[1].size-1) == 0 {
		panic("vectors: the honest fork bundle needs a size that is not a power of two")
	}
	add("v1: two consistent checkpoints are not a fork", honest.Marshal())
	forged := *b
	forged.A = bytes.Clone(b.A)
	forged.A[len(Origin)+2] ^= 1 // a digit of the size line
	add("v1: a checkpoint whose signature does not verify", forged.Marshal())

	// kt-evidence/v2: change records of one index that break the rules.
	s := newSim(k)
	h, c1 := s.record("ivan@example.com", set(d1), api.AuthEnroll, d1.sign(), nil)
	s.logChange(h, c1)
	// Version 2 whose prev is not version 1's leaf hash (R3).
	h, c2 := s.record("ivan@example.com", set(d1, d2), api.AuthDevice, d1.sign(), func(r *api.ChangeRecord) { r.Prev = [32]byte{1} })
	s.logChange(h, c2)
	// judy: version 1, then a recovery signed by her device, not the
	// recovery key (R6).
	hj, j1 := s.record("judy@example.com", set(d2), api.AuthEnroll, d2.sign(), nil)
	s.logChange(hj, j1)
	hj, j2 := s.record("judy@example.com", set(d1), api.AuthRecovery, d2.sign(), nil)
	s.logChange(hj, j2)
	// kim: two honest versions.
	hk, k1 := s.record("kim@example.com", set(d1), api.AuthEnroll, d1.sign(), nil)
	s.logChange(hk, k1)
	hk, k2 := s.record("kim@example.com", set(d1, d2), api.AuthDevice, d1.sign(), nil)
	s.logChange(hk, k2)
	e := s.closeEpoch(epochOpts{ts: T0.Add(time.Second)})
	cp := s.checkpoint()
	entry := func(c *change) *evidence.Entry { return &evidence.Entry{Index: c.logIndex, Data: c.bytes} }
	add("v2 records: version 2's prev is not version 1's leaf hash (R3)", must(evidence.BuildRecords(ctx, s.log, cp, e.size, entry(c1), entry(c2))))
	add("v2 records: a recovery not signed by the recovery key (R6)", must(evidence.BuildRecords(ctx, s.log, cp, e.size, entry(j1), entry(j2))))
	add("v2 records: two honest versions are not evidence", must(evidence.BuildRecords(ctx, s.log, cp, e.size, entry(k1), entry(k2))))
	raw := must(evidence.BuildRecords(ctx, s.log, cp, e.size, entry(c1), entry(c2)))
	pb := must(evidence.Parse(raw))
	pb.Entries[0].Inclusion[0] = flip(pb.Entries[0].Inclusion[0], 0)
	add("v2 records: an inclusion proof corrupted", pb.Marshal())
	add("v2: truncated bundle", raw[:len(raw)/2])
	return f
}
