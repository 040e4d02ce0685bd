package evidence

import (
	"errors"
	"fmt"

	fmtlog "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/smt"
)

// Errors of [Check] (besides ErrMalformed and ErrProof, shared with v1);
// test with errors.Is. Check's v1 errors wrap these too: ErrCheckpoint
// wraps into ErrSignature, ErrOrder into ErrMalformed, ErrNoFork into
// ErrNotEvidence.
var (
	// ErrSignature: the checkpoint does not parse as a checkpoint of the
	// log or is not signed by the log key.
	ErrSignature = errors.New("evidence: checkpoint not signed by the log key")
	// ErrNotEvidence: the bundle is well formed and its proofs verify,
	// but what it shows is not misbehaviour (an honest history, or one
	// that only a replay or other records could judge).
	ErrNotEvidence = errors.New("evidence: the bundle proves no misbehaviour")
)

// Params is what Check needs to know about the log.
type Params struct {
	// Origin is the log's origin; empty means LogVerifier.Name().
	Origin string
	// LogVerifier verifies the log's checkpoint signatures.
	LogVerifier note.Verifier
	// RecoveryKey is the directory's published recovery key (rule R6).
	RecoveryKey [32]byte
}

func (p *Params) origin() string {
	if p.Origin != "" {
		return p.Origin
	}
	return p.LogVerifier.Name()
}

// Check verifies a bundle of either version offline with the log's
// parameters alone, and returns its kind and a one-line description of
// what it proves. needsReplay is true only for a map-root bundle, whose
// claim Check cannot judge (it checks its signature and inclusion proof;
// see design.md 15.1). Errors wrap ErrMalformed (not exactly a bundle, or
// not the shape its kind requires), ErrSignature, ErrProof (an inclusion
// or map proof that does not verify) or ErrNotEvidence.
//
// SPEC(design.md 15)
// SPEC(design.md 15.1)
func Check(p Params, raw []byte) (kind Kind, what string, needsReplay bool, err error) {
	if p.LogVerifier == nil {
		return "", "", false, errors.New("evidence: no log verifier")
	}
	b, err := Parse(raw)
	if err != nil {
		return "", "", false, err
	}
	if !b.isV2() {
		f, err := b.Verify(p.LogVerifier)
		switch {
		case errors.Is(err, ErrCheckpoint):
			err = fmt.Errorf("%w: %w", ErrSignature, err)
		case errors.Is(err, ErrOrder):
			err = fmt.Errorf("%w: %w", ErrMalformed, err)
		case errors.Is(err, ErrNoFork):
			err = fmt.Errorf("%w: %w", ErrNotEvidence, err)
		}
		if err != nil {
			return KindFork, "", false, err
		}
		return KindFork, f.String(), false, nil
	}
	what, err = b.check(p)
	return b.Kind, what, b.Kind == KindMapRoot && err == nil, err
}

// parsed is a v2 bundle's entries and values, parsed and checked against
// its kind's shape.
type parsed struct {
	entries []api.Entry
	records [][]byte // the map values' records, nil for absent
	values  []*api.ChangeRecord
	epochs  []int // indices into entries of the epoch records
	changes []int // indices into entries of the change records
}

// shape parses b's entries and values and checks the shape of its kind:
//
//	records: one or two change records
//	map-regression: two epoch records, each with a map proof
//	version-conflict: an epoch record with a map proof and a change record
//	map-root: one epoch record without a map proof
//
// SPEC(design.md 15.1)
func (b *Bundle) shape() (*parsed, error) {
	ps := &parsed{}
	for i, e := range b.Entries {
		ent, err := api.ParseEntry(e.Data)
		if err != nil {
			return nil, fmt.Errorf("%w: entry %d: %w", ErrMalformed, e.Index, err)
		}
		ps.entries = append(ps.entries, ent)
		if _, ok := ent.(*api.EpochRecord); ok {
			ps.epochs = append(ps.epochs, i)
		} else {
			ps.changes = append(ps.changes, i)
		}
	}
	for _, m := range b.Maps {
		if _, err := smt.ParseProof(m.Proof); err != nil {
			return nil, fmt.Errorf("%w: map proof: %w", ErrMalformed, err)
		}
		var r *api.ChangeRecord
		if m.Record != nil {
			var err error
			if r, err = api.ParseChangeRecord(m.Record); err != nil {
				return nil, fmt.Errorf("%w: value: %w", ErrMalformed, err)
			}
		}
		ps.values = append(ps.values, r)
		ps.records = append(ps.records, m.Record)
	}
	ne, nc, nm := len(ps.epochs), len(ps.changes), len(b.Maps)
	ok := false
	switch b.Kind {
	case KindRecords:
		ok = ne == 0 && (nc == 1 || nc == 2)
	case KindMapRegression:
		ok = ne == 2 && nc == 0 && nm == 2
	case KindVersionConflict:
		ok = ne == 1 && nc == 1 && nm == 1
	case KindMapRoot:
		ok = ne == 1 && nc == 0 && nm == 0
	}
	if !ok {
		return nil, fmt.Errorf("%w: a %s bundle with %d epoch records, %d change records and %d map proofs", ErrMalformed, b.Kind, ne, nc, nm)
	}
	return ps, nil
}

// check verifies a parsed v2 bundle: its shape, C's signature, every
// inclusion proof in C, every map proof against the map root of the epoch
// record it follows, then what the kind proves.
//
// SPEC(design.md 15.1): "the verifier checks C's log signature, every
// inclusion proof against C, every map proof against the map root of the
// epoch record it follows"
func (b *Bundle) check(p Params) (string, error) {
	ps, err := b.shape()
	if err != nil {
		return "", err
	}
	origin := p.origin()
	cp, _, err := log.ParseCheckpoint(b.Checkpoint, origin, p.LogVerifier)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrSignature, err)
	}
	for _, e := range b.Entries {
		if err := verifyInclusion(cp, e); err != nil {
			return "", err
		}
	}
	if len(b.Maps) > 0 {
		// The key x of every map proof is the VRF index of the first
		// value's record (design.md 15.1: "value1 is a change record R1
		// with R1.Index = x"; "R1 (a change record of index x)").
		if ps.values[0] == nil {
			return "", fmt.Errorf("%w: the first map value is absent, so no key is in question", ErrNotEvidence)
		}
		x := ps.values[0].Index
		for k, m := range b.Maps {
			if err := verifyMapAt(ps.entries[ps.epochs[k]].(*api.EpochRecord), b.Entries[ps.epochs[k]].Index, x, m); err != nil {
				return "", err
			}
		}
	}
	switch b.Kind {
	case KindRecords:
		return b.checkRecords(p, ps)
	case KindMapRegression:
		return b.checkMapRegression(ps)
	case KindVersionConflict:
		return b.checkVersionConflict(ps)
	default: // KindMapRoot
		j := b.Entries[0].Index
		e := ps.entries[0].(*api.EpochRecord)
		return fmt.Sprintf("claim: the map of epoch %d (entry %d: root %s, size %d) is not the map of entries [0, %d); replay entries [0, %d) of the log to check it",
			e.Epoch, j, short(e.MapRoot[:]), e.MapSize, j, j), nil
	}
}

// verifyInclusion checks e's inclusion proof in the tree of checkpoint cp.
//
// SPEC(design.md 15.1)
func verifyInclusion(cp *fmtlog.Checkpoint, e Entry) error {
	if e.Index >= cp.Size {
		return fmt.Errorf("%w: entry %d is beyond the checkpoint's size %d", ErrProof, e.Index, cp.Size)
	}
	leaf := api.LeafHash(e.Data)
	if err := log.VerifyInclusion(e.Index, cp.Size, leaf[:], e.Inclusion, cp.Hash); err != nil {
		return fmt.Errorf("%w: entry %d is not in the checkpoint's tree: %w", ErrProof, e.Index, err)
	}
	return nil
}

// verifyMapAt checks that m's proof shows, under e's map root, key x
// holding LeafHash(m.Record), or absent when m.Record is nil.
//
// SPEC(design.md 8.2 step 5)
func verifyMapAt(e *api.EpochRecord, j uint64, x [32]byte, m MapValue) error {
	mp, err := smt.ParseProof(m.Proof)
	if err != nil {
		return fmt.Errorf("%w: map proof after entry %d: %w", ErrMalformed, j, err)
	}
	var v *[32]byte
	if m.Record != nil {
		lh := api.LeafHash(m.Record)
		v = &lh
	}
	if err := smt.Verify(e.MapRoot, x, v, mp); err != nil {
		return fmt.Errorf("%w: map proof after entry %d (epoch %d) for index %s: %w", ErrProof, j, e.Epoch, short(x[:]), err)
	}
	return nil
}

// checkRecords: one record A proves a violation iff api.CheckChange fails
// on it as an enrollment (version 1), or, for a later version, it breaks
// a rule that needs no earlier state (R1, R6 signer, R4 kind); two records
// A, B of one index (A earlier) iff B.Version ≤ A.Version, or B.Version =
// A.Version + 1 and api.CheckChange(A.State, B) fails (R3 prev included).
//
// SPEC(design.md 15.1 records)
func (b *Bundle) checkRecords(p Params, ps *parsed) (string, error) {
	origin := p.origin()
	a := ps.entries[0].(*api.ChangeRecord)
	ia := b.Entries[0].Index
	if len(ps.entries) == 1 {
		if a.Version == 1 {
			// SPEC(design.md 15.1): "state = nil if A.Version == 1 (enrollment rules)"
			if err := api.CheckChange(origin, nil, a, p.RecoveryKey); err != nil {
				return authWhat(err, a, ia, "the first record of the index"), nil
			}
			return "", fmt.Errorf("%w: version 1 of index %s (entry %d) is a valid enrollment", ErrNotEvidence, short(a.Index[:]), ia)
		}
		// SPEC(design.md 15.1): "for A.Version > 1 only the rules that need
		// no earlier state (R1 signature; R6 recovery signed by a key that
		// is not the recovery key; R4 kind)". The state below has the
		// version and leaf hash A claims to follow and no authorizers, so
		// R2 and R3 hold and only the state-free rules are counted.
		st := &api.HandleState{Version: a.Version - 1, LeafHash: a.Prev}
		if err := api.CheckChangeUnsigned(st, a, p.RecoveryKey); err != nil {
			if ae, ok := errors.AsType[*api.AuthError](err); ok && (ae.Rule == api.RuleRecovery || ae.Rule == api.RuleKind) {
				return authWhat(err, a, ia, ""), nil
			}
		}
		if err := a.VerifySignature(origin); err != nil {
			return authWhat(err, a, ia, ""), nil
		}
		return "", fmt.Errorf("%w: version %d of index %s (entry %d) breaks no rule that can be judged without the previous record", ErrNotEvidence, a.Version, short(a.Index[:]), ia)
	}
	bb := ps.entries[1].(*api.ChangeRecord)
	ib := b.Entries[1].Index
	if a.Index != bb.Index {
		return "", fmt.Errorf("%w: entries %d and %d are records of different indices", ErrNotEvidence, ia, ib)
	}
	x := short(a.Index[:])
	switch {
	case bb.Version == a.Version:
		// SPEC(design.md 15.1): "two records for one version"
		return fmt.Sprintf("%s: two records for version %d of index %s (entries %d and %d)", api.RuleVersion, a.Version, x, ia, ib), nil
	case bb.Version < a.Version:
		// SPEC(design.md 15.1): "a version going back"
		return fmt.Sprintf("%s: version %d of index %s (entry %d) after version %d (entry %d)", api.RuleVersion, bb.Version, x, ib, a.Version, ia), nil
	case bb.Version-1 == a.Version:
		// SPEC(design.md 15.1): "B.Prev ≠ LeafHash(A) or
		// api.CheckChange(origin, A.State(entryA), B, recoveryKey) fails"
		// (CheckChange checks R3 prev itself).
		if err := api.CheckChange(origin, a.State(b.Entries[0].Data), bb, p.RecoveryKey); err != nil {
			return authWhat(err, bb, ib, fmt.Sprintf("version %d (entry %d)", a.Version, ia)), nil
		}
		return "", fmt.Errorf("%w: version %d of index %s (entry %d) validly follows version %d (entry %d)", ErrNotEvidence, bb.Version, x, ib, a.Version, ia)
	default:
		return "", fmt.Errorf("%w: versions %d (entry %d) and %d (entry %d) of index %s are not consecutive", ErrNotEvidence, a.Version, ia, bb.Version, ib, x)
	}
}

// authWhat describes an authorization failure of r at log index i, after
// prev (a description, or "" when the previous record is not known).
func authWhat(err error, r *api.ChangeRecord, i uint64, prev string) string {
	rule, reason := api.Rule("authorization"), err.Error()
	if ae, ok := errors.AsType[*api.AuthError](err); ok {
		rule, reason = ae.Rule, ae.Reason
	}
	s := fmt.Sprintf("%s: version %d of index %s (entry %d)", rule, r.Version, short(r.Index[:]), i)
	if prev != "" {
		s += " after " + prev
	}
	return s + ": " + reason
}

// checkMapRegression: epoch records E1 < E2 with map proofs for one key x,
// the index of value1's record R1; proves misbehaviour iff value2 is
// absent, a record of another index, an earlier version, or another record
// of the same version.
//
// SPEC(design.md 15.1 map-regression)
func (b *Bundle) checkMapRegression(ps *parsed) (string, error) {
	e1, e2 := ps.entries[0].(*api.EpochRecord), ps.entries[1].(*api.EpochRecord)
	j1, j2 := b.Entries[0].Index, b.Entries[1].Index
	r1, r2 := ps.values[0], ps.values[1]
	x := r1.Index // not nil: check returned ErrNotEvidence
	head := fmt.Sprintf("map regression: epoch %d (entry %d) maps index %s to version %d, epoch %d (entry %d) ", e1.Epoch, j1, short(x[:]), r1.Version, e2.Epoch, j2)
	switch {
	case r2 == nil:
		return head + "has no record for it", nil
	case r2.Index != x:
		return head + fmt.Sprintf("holds a record of index %s at that key", short(r2.Index[:])), nil
	case r2.Version < r1.Version:
		return head + fmt.Sprintf("to the earlier version %d", r2.Version), nil
	case r2.Version == r1.Version && api.LeafHash(ps.records[1]) != api.LeafHash(ps.records[0]):
		return head + fmt.Sprintf("to another record of version %d", r2.Version), nil
	}
	return "", fmt.Errorf("%w: epoch %d (entry %d) holds the same record or a later version of index %s", ErrNotEvidence, e2.Epoch, j2, short(x[:]))
}

// checkVersionConflict: an epoch record mapping x to R1 and a logged
// change record R2 of index x and R1's version with another leaf hash.
//
// SPEC(design.md 15.1 version-conflict)
func (b *Bundle) checkVersionConflict(ps *parsed) (string, error) {
	ei, ci := ps.epochs[0], ps.changes[0]
	e := ps.entries[ei].(*api.EpochRecord)
	r2 := ps.entries[ci].(*api.ChangeRecord)
	j, i := b.Entries[ei].Index, b.Entries[ci].Index
	r1 := ps.values[0]
	switch {
	case r2.Index != r1.Index:
		return "", fmt.Errorf("%w: entry %d is a record of index %s, the map's value is of index %s", ErrNotEvidence, i, short(r2.Index[:]), short(r1.Index[:]))
	case r2.Version != r1.Version:
		return "", fmt.Errorf("%w: entry %d is version %d, the map holds version %d", ErrNotEvidence, i, r2.Version, r1.Version)
	case api.LeafHash(b.Entries[ci].Data) == api.LeafHash(ps.records[0]):
		return "", fmt.Errorf("%w: entry %d is the record the map holds", ErrNotEvidence, i)
	}
	return fmt.Sprintf("version conflict: epoch %d (entry %d) maps index %s to a record of version %d that is not entry %d, also version %d of the index",
		e.Epoch, j, short(r1.Index[:]), r1.Version, i, r2.Version), nil
}

// short abbreviates a hash for descriptions.
func short(h []byte) string { return fmt.Sprintf("%x..", h[:min(len(h), 4)]) }
