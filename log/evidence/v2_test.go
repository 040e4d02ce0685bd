package evidence_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/evidence"
	"github.com/keytrans/kt/smt"
)

var (
	d1, d2, d3 = ktlog.Key("d1"), ktlog.Key("d2"), ktlog.Key("d3")
	ix, iy     = ktlog.Index("x"), ktlog.Index("y")
)

// scenario builds a log (honest or not) and a bundle over it, and says
// what Check must answer: err nil (the bundle proves misbehaviour; what
// contains the substring), or the typed error of a near miss (control).
type scenario struct {
	name   string
	kind   evidence.Kind
	err    error
	what   string
	golden bool // pinned in testdata/<name>.golden
	build  func(t testing.TB, e *env) []byte
}

// must returns a function that returns a builder's bundle or fails t.
func must(t testing.TB) func([]byte, error) []byte {
	return func(raw []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
}

// one returns a records bundle of entry i.
func one(t testing.TB, e *env, i uint64) []byte {
	cp, n := e.publish()
	a := e.ent(i)
	return must(t)(evidence.BuildRecords(context.Background(), e.mem, cp, n, &a, nil))
}

// two returns a records bundle of entries i and j.
func two(t testing.TB, e *env, i, j uint64) []byte {
	cp, n := e.publish()
	a, b := e.ent(i), e.ent(j)
	return must(t)(evidence.BuildRecords(context.Background(), e.mem, cp, n, &a, &b))
}

// regression returns a map-regression bundle of epochs j1 < j2 whose maps
// m1, m2 hold v1, v2 at x.
func regression(t testing.TB, e *env, j1, j2 uint64, m1, m2 *smt.Map, v1, v2 []byte) []byte {
	cp, n := e.publish()
	return must(t)(evidence.BuildMapRegression(context.Background(), e.mem, cp, n, e.ent(j1), e.ent(j2),
		mapValue(t, m1, ix, v1), mapValue(t, m2, ix, v2)))
}

// conflict returns a version-conflict bundle of epoch j (map m holding v
// at x) and change record i.
func conflict(t testing.TB, e *env, j uint64, m *smt.Map, v []byte, i uint64) []byte {
	cp, n := e.publish()
	return must(t)(evidence.BuildVersionConflict(context.Background(), e.mem, cp, n, e.ent(j), mapValue(t, m, ix, v), e.ent(i)))
}

// enroll appends an honest enrollment of x by d1 and returns its index.
func enroll(e *env) uint64 { return e.b.Change(ix, api.AuthEnroll, d1, ktlog.Devices(d1)) }

// unlogged returns a version 1 record of x by d3 that the log never holds.
func unlogged(t testing.TB) []byte {
	r := &api.ChangeRecord{Index: ix, Version: 1, Kind: api.AuthEnroll, Authorizers: ktlog.Devices(d3), Commitment: [32]byte{3}}
	r.Sign(origin, d3)
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var scenarios = []scenario{
	// records, one record of version 1: the enrollment rules.
	{name: "records-enroll-not-self-signed", kind: evidence.KindRecords, what: "R4 enroll", golden: true,
		build: func(t testing.TB, e *env) []byte {
			r := e.b.Record(ix, api.AuthEnroll, ktlog.Devices(d1))
			r.Sign(origin, d2)
			return one(t, e, e.b.AppendRecord(r))
		}},
	{name: "records-first-is-device-change", kind: evidence.KindRecords, what: "R5 device",
		build: func(t testing.TB, e *env) []byte {
			return one(t, e, e.b.Change(ix, api.AuthDevice, d1, ktlog.Devices(d1)))
		}},
	{name: "records-first-with-prev", kind: evidence.KindRecords, what: "R3 prev",
		build: func(t testing.TB, e *env) []byte {
			return one(t, e, e.forge(ix, 1, [32]byte{1}, api.AuthEnroll, d1, ktlog.Devices(d1)))
		}},
	{name: "records-honest-enrollment", kind: evidence.KindRecords, err: evidence.ErrNotEvidence,
		build: func(t testing.TB, e *env) []byte { return one(t, e, enroll(e)) }},
	{name: "records-alone-at-version-2", kind: evidence.KindRecords, err: evidence.ErrNotEvidence,
		build: func(t testing.TB, e *env) []byte {
			// Version 2 with no version 1: only a replay shows it.
			return one(t, e, e.forge(ix, 2, [32]byte{1}, api.AuthEnroll, d1, ktlog.Devices(d1)))
		}},
	// records, one record of a later version: the rules that need no state.
	{name: "records-bad-signature", kind: evidence.KindRecords, what: "R1 signature",
		build: func(t testing.TB, e *env) []byte {
			enroll(e)
			r := e.b.Record(ix, api.AuthDevice, ktlog.Devices(d2))
			r.Sign(origin, d1)
			r.Signature[0] ^= 1
			return one(t, e, e.b.AppendRecord(r))
		}},
	{name: "records-recovery-not-by-recovery-key", kind: evidence.KindRecords, what: "R6 recovery",
		build: func(t testing.TB, e *env) []byte {
			enroll(e)
			return one(t, e, e.b.Change(ix, api.AuthRecovery, d1, ktlog.Devices(d2)))
		}},
	{name: "records-recovery-by-recovery-key", kind: evidence.KindRecords, err: evidence.ErrNotEvidence,
		build: func(t testing.TB, e *env) []byte {
			enroll(e)
			return one(t, e, e.b.Change(ix, api.AuthRecovery, e.b.Recovery, ktlog.Devices(d2)))
		}},
	{name: "records-non-authorizer-alone", kind: evidence.KindRecords, err: evidence.ErrNotEvidence,
		build: func(t testing.TB, e *env) []byte {
			// R5 needs the previous record: one record proves nothing.
			enroll(e)
			return one(t, e, e.b.Change(ix, api.AuthDevice, d2, ktlog.Devices(d2)))
		}},
	// records, two records.
	{name: "records-non-authorizer", kind: evidence.KindRecords, what: "R5 device", golden: true,
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			e.b.Epoch()
			return two(t, e, a, e.b.Change(ix, api.AuthDevice, d2, ktlog.Devices(d2)))
		}},
	{name: "records-two-for-one-version", kind: evidence.KindRecords, what: "two records for version 2",
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			b := e.b.Change(ix, api.AuthDevice, d1, ktlog.Devices(d2))
			c := e.forge(ix, 2, api.LeafHash(e.data(a)), api.AuthDevice, d1, ktlog.Devices(d3))
			return two(t, e, b, c)
		}},
	{name: "records-version-back", kind: evidence.KindRecords, what: "version 1 of index",
		build: func(t testing.TB, e *env) []byte {
			enroll(e)
			b := e.b.Change(ix, api.AuthDevice, d1, ktlog.Devices(d2))
			return two(t, e, b, e.forge(ix, 1, [32]byte{}, api.AuthEnroll, d3, ktlog.Devices(d3)))
		}},
	{name: "records-wrong-prev", kind: evidence.KindRecords, what: "R3 prev",
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			return two(t, e, a, e.forge(ix, 2, [32]byte{9}, api.AuthDevice, d1, ktlog.Devices(d2)))
		}},
	{name: "records-honest-pair", kind: evidence.KindRecords, err: evidence.ErrNotEvidence,
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			return two(t, e, a, e.b.Change(ix, api.AuthDevice, d1, ktlog.Devices(d2)))
		}},
	{name: "records-gap", kind: evidence.KindRecords, err: evidence.ErrNotEvidence,
		build: func(t testing.TB, e *env) []byte {
			// Version 3 after version 1: version 2 may be between.
			a := enroll(e)
			return two(t, e, a, e.forge(ix, 3, [32]byte{9}, api.AuthDevice, d2, ktlog.Devices(d2)))
		}},
	{name: "records-different-indices", kind: evidence.KindRecords, err: evidence.ErrNotEvidence,
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			return two(t, e, a, e.b.Change(iy, api.AuthEnroll, d1, ktlog.Devices(d1)))
		}},
	// map-regression.
	{name: "map-regression-absent", kind: evidence.KindMapRegression, what: "has no record",
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			j1 := e.b.Epoch()
			m2 := mapOf(t)
			return regression(t, e, j1, e.epochWith(m2), e.honestMap(j1), m2, e.data(a), nil)
		}},
	{name: "map-regression-other-index", kind: evidence.KindMapRegression, what: "holds a record of index",
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			y := e.b.Change(iy, api.AuthEnroll, d2, ktlog.Devices(d2))
			j1 := e.b.Epoch()
			m2, _ := smt.New([]smt.Leaf{{Key: ix, Value: api.LeafHash(e.data(y))}, {Key: iy, Value: api.LeafHash(e.data(y))}})
			return regression(t, e, j1, e.epochWith(m2), e.honestMap(j1), m2, e.data(a), e.data(y))
		}},
	{name: "map-regression-earlier-version", kind: evidence.KindMapRegression, what: "to the earlier version 1", golden: true,
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			b := e.b.Change(ix, api.AuthDevice, d1, ktlog.Devices(d2))
			j1 := e.b.Epoch()
			m2 := mapOf(t, e.data(a))
			return regression(t, e, j1, e.epochWith(m2), e.honestMap(j1), m2, e.data(b), e.data(a))
		}},
	{name: "map-regression-other-record-same-version", kind: evidence.KindMapRegression, what: "another record of version 1",
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			j1 := e.b.Epoch()
			m2 := mapOf(t, unlogged(t))
			return regression(t, e, j1, e.epochWith(m2), e.honestMap(j1), m2, e.data(a), unlogged(t))
		}},
	{name: "map-regression-same-record", kind: evidence.KindMapRegression, err: evidence.ErrNotEvidence,
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			j1 := e.b.Epoch()
			e.b.Change(iy, api.AuthEnroll, d2, ktlog.Devices(d2))
			j2 := e.b.Epoch()
			return regression(t, e, j1, j2, e.honestMap(j1), e.honestMap(j2), e.data(a), e.data(a))
		}},
	{name: "map-regression-later-version", kind: evidence.KindMapRegression, err: evidence.ErrNotEvidence,
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			j1 := e.b.Epoch()
			b := e.b.Change(ix, api.AuthDevice, d1, ktlog.Devices(d2))
			j2 := e.b.Epoch()
			return regression(t, e, j1, j2, e.honestMap(j1), e.honestMap(j2), e.data(a), e.data(b))
		}},
	{name: "map-regression-first-absent", kind: evidence.KindMapRegression, err: evidence.ErrNotEvidence,
		build: func(t testing.TB, e *env) []byte {
			e.b.Change(iy, api.AuthEnroll, d2, ktlog.Devices(d2))
			j1 := e.b.Epoch()
			a := enroll(e)
			j2 := e.b.Epoch()
			return regression(t, e, j1, j2, e.honestMap(j1), e.honestMap(j2), nil, e.data(a))
		}},
	// version-conflict.
	{name: "version-conflict-unlogged-record", kind: evidence.KindVersionConflict, what: "version conflict", golden: true,
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			m := mapOf(t, unlogged(t))
			return conflict(t, e, e.epochWith(m), m, unlogged(t), a)
		}},
	{name: "version-conflict-two-logged-records", kind: evidence.KindVersionConflict, what: "version conflict",
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			b := e.forge(ix, 1, [32]byte{}, api.AuthEnroll, d3, ktlog.Devices(d3))
			j := e.b.Epoch()
			return conflict(t, e, j, e.honestMap(j), e.data(b), a)
		}},
	{name: "version-conflict-record-after-epoch", kind: evidence.KindVersionConflict, what: "version conflict",
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			j := e.b.Epoch()
			b := e.forge(ix, 1, [32]byte{}, api.AuthEnroll, d3, ktlog.Devices(d3))
			return conflict(t, e, j, e.honestMap(j), e.data(a), b)
		}},
	{name: "version-conflict-same-record", kind: evidence.KindVersionConflict, err: evidence.ErrNotEvidence,
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			j := e.b.Epoch()
			return conflict(t, e, j, e.honestMap(j), e.data(a), a)
		}},
	{name: "version-conflict-other-version", kind: evidence.KindVersionConflict, err: evidence.ErrNotEvidence,
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			b := e.b.Change(ix, api.AuthDevice, d1, ktlog.Devices(d2))
			j := e.b.Epoch()
			return conflict(t, e, j, e.honestMap(j), e.data(b), a)
		}},
	{name: "version-conflict-other-index", kind: evidence.KindVersionConflict, err: evidence.ErrNotEvidence,
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			y := e.b.Change(iy, api.AuthEnroll, d1, ktlog.Devices(d1))
			j := e.b.Epoch()
			return conflict(t, e, j, e.honestMap(j), e.data(a), y)
		}},
	{name: "version-conflict-absent", kind: evidence.KindVersionConflict, err: evidence.ErrNotEvidence,
		build: func(t testing.TB, e *env) []byte {
			a := enroll(e)
			m := mapOf(t)
			return conflict(t, e, e.epochWith(m), m, nil, a)
		}},
	// map-root: never judged offline.
	{name: "map-root-wrong-root", kind: evidence.KindMapRoot, what: "replay entries [0, 11)", golden: true,
		build: func(t testing.TB, e *env) []byte {
			e.b.Honest(3, 2)
			j := e.b.EpochWith(func(r *api.EpochRecord) { r.MapRoot = [32]byte{7} })
			cp, n := e.publish()
			return must(t)(evidence.BuildMapRoot(context.Background(), e.mem, cp, n, e.ent(j)))
		}},
	{name: "map-root-honest", kind: evidence.KindMapRoot, what: "replay entries [0, 2)",
		build: func(t testing.TB, e *env) []byte {
			enroll(e)
			j := e.b.Epoch()
			e.b.Epoch()
			cp, n := e.publish()
			return must(t)(evidence.BuildMapRoot(context.Background(), e.mem, cp, n, e.ent(j)))
		}},
}

// TestCheckV2: every proving condition of design.md 15.1 and every near
// miss, each on its own log.
func TestCheckV2(t *testing.T) {
	k := newKey(origin)
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			e := newEnv(t, k)
			raw := sc.build(t, e)
			kind, what, replay, err := evidence.Check(e.params(), raw)
			if sc.err != nil {
				if !errors.Is(err, sc.err) {
					t.Fatalf("Check = %q, %v; want %v\n%s", what, err, sc.err, raw)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, raw)
			}
			if kind != sc.kind || !strings.Contains(what, sc.what) || replay != (sc.kind == evidence.KindMapRoot) {
				t.Fatalf("Check = %s, %q, replay %v; want %s containing %q", kind, what, replay, sc.kind, sc.what)
			}
			b, err := evidence.Parse(raw)
			if err != nil || !bytes.Equal(b.Marshal(), raw) || b.Kind != sc.kind {
				t.Fatalf("round trip: %v", err)
			}
			// The same bundle for another log's key, or with another
			// recovery key where it matters, does not verify as is.
			p := e.params()
			p.LogVerifier = newKey(origin).v
			if _, _, _, err := evidence.Check(p, raw); !errors.Is(err, evidence.ErrSignature) {
				t.Fatalf("another log key: %v", err)
			}
		})
	}
}

// TestCheckRecoveryKey: the R6 verdict depends on the recovery key given.
func TestCheckRecoveryKey(t *testing.T) {
	e := newEnv(t, newKey(origin))
	enroll(e)
	raw := one(t, e, e.b.Change(ix, api.AuthRecovery, e.b.Recovery, ktlog.Devices(d2)))
	p := e.params()
	p.RecoveryKey = ktlog.Pub(d3)
	if _, what, _, err := evidence.Check(p, raw); err != nil || !strings.Contains(what, "R6 recovery") {
		t.Fatalf("%q %v", what, err)
	}
}

// validPair returns a valid records bundle of two entries and a valid
// map-regression bundle, with their env.
func validBundles(t *testing.T) (*env, *evidence.Bundle, *evidence.Bundle) {
	e := newEnv(t, newKey(origin))
	a := enroll(e)
	e.b.Change(iy, api.AuthEnroll, d3, ktlog.Devices(d3))
	e.b.Epoch()
	b := e.b.Change(ix, api.AuthDevice, d2, ktlog.Devices(d2))
	rec := two(t, e, a, b)
	j1 := e.b.Epoch()
	m2 := mapOf(t, e.data(a)) // without y: its proofs differ from E1's
	reg := regression(t, e, j1, e.epochWith(m2), e.honestMap(j1), m2, e.data(b), e.data(a))
	e.b.Epoch()
	for _, raw := range [][]byte{rec, reg} {
		if _, _, _, err := evidence.Check(e.params(), raw); err != nil {
			t.Fatal(err)
		}
	}
	rb, err := evidence.Parse(rec)
	if err != nil {
		t.Fatal(err)
	}
	gb, err := evidence.Parse(reg)
	if err != nil {
		t.Fatal(err)
	}
	return e, rb, gb
}

func clone(t *testing.T, b *evidence.Bundle) *evidence.Bundle {
	c, err := evidence.Parse(b.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCheckBroken breaks each check of the verifier once and expects its
// typed error.
func TestCheckBroken(t *testing.T) {
	e, rec, reg := validBundles(t)
	cp, _, err := log.ParseCheckpoint(rec.Checkpoint, origin, e.k.v)
	if err != nil {
		t.Fatal(err)
	}
	other := newKey(origin)
	for _, tc := range []struct {
		name string
		base *evidence.Bundle
		edit func(b *evidence.Bundle)
		want error
	}{
		{"bad log signature", rec, func(b *evidence.Bundle) {
			b.Checkpoint, _ = log.SignCheckpoint(other.s, origin, cp.Size, cp.Hash)
		}, evidence.ErrSignature},
		{"checkpoint of another origin", rec, func(b *evidence.Bundle) {
			b.Checkpoint, _ = log.SignCheckpoint(e.k.s, "other.example/kt", cp.Size, cp.Hash)
		}, evidence.ErrSignature},
		{"bad inclusion proof", rec, func(b *evidence.Bundle) { b.Entries[0].Inclusion[0][0] ^= 1 }, evidence.ErrProof},
		{"missing inclusion proof", rec, func(b *evidence.Bundle) { b.Entries[1].Inclusion = nil }, evidence.ErrProof},
		{"wrong entry index", rec, func(b *evidence.Bundle) { b.Entries[1].Index++ }, evidence.ErrProof},
		{"entry beyond the checkpoint", rec, func(b *evidence.Bundle) { b.Entries[1].Index = cp.Size }, evidence.ErrProof},
		{"bad map proof: another value", reg, func(b *evidence.Bundle) { b.Maps[1].Record = b.Maps[0].Record }, evidence.ErrProof},
		{"bad map proof: another map", reg, func(b *evidence.Bundle) { b.Maps[1].Proof = b.Maps[0].Proof }, evidence.ErrProof},
		{"bad map proof: absent", reg, func(b *evidence.Bundle) { b.Maps[1].Record = nil }, evidence.ErrProof},
		{"map proof with trailing bytes", reg, func(b *evidence.Bundle) { b.Maps[0].Proof = append(b.Maps[0].Proof, 0) }, evidence.ErrMalformed},
		{"entry with trailing bytes", rec, func(b *evidence.Bundle) { b.Entries[0].Data = append(b.Entries[0].Data, 0) }, evidence.ErrMalformed},
		{"value with trailing bytes", reg, func(b *evidence.Bundle) { b.Maps[0].Record = append(b.Maps[0].Record, 0) }, evidence.ErrMalformed},
		{"records bundle of an epoch record", reg, func(b *evidence.Bundle) { b.Kind = evidence.KindRecords }, evidence.ErrMalformed},
		{"map-root bundle of a change record", rec, func(b *evidence.Bundle) {
			b.Kind, b.Entries = evidence.KindMapRoot, b.Entries[:1]
		}, evidence.ErrMalformed},
		{"map-regression of one epoch", reg, func(b *evidence.Bundle) {
			b.Kind, b.Entries, b.Maps = evidence.KindMapRegression, b.Entries[:1], b.Maps[:1]
		}, evidence.ErrMalformed},
		{"version-conflict of two epochs", reg, func(b *evidence.Bundle) { b.Kind = evidence.KindVersionConflict }, evidence.ErrMalformed},
		{"three records", rec, func(b *evidence.Bundle) {
			b.Entries = append(b.Entries, b.Entries[1])
			b.Entries[2].Index++
		}, evidence.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := clone(t, tc.base)
			tc.edit(b)
			if _, what, _, err := evidence.Check(e.params(), b.Marshal()); !errors.Is(err, tc.want) {
				t.Fatalf("Check = %q, %v; want %v", what, err, tc.want)
			}
		})
	}
}

// TestParseV2Rejects: encodings that are not exactly kt-evidence/v2.
func TestParseV2Rejects(t *testing.T) {
	_, rec, reg := validBundles(t)
	raw, rawReg := string(rec.Marshal()), string(reg.Marshal())
	lines := strings.SplitAfter(raw, "\n")
	lines = lines[:len(lines)-1]
	// lines: 0 header, 1 kind, 2 checkpoint, then entry, inclusion...
	second := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "entry ") && i > 3 {
			second = i
		}
	}
	swapped := strings.Join(lines[:3], "") + strings.Join(lines[second:], "") + strings.Join(lines[3:second], "")
	incl := ""
	for _, l := range lines {
		if strings.HasPrefix(l, "inclusion ") {
			incl = l
			break
		}
	}
	h := strings.TrimSuffix(strings.TrimPrefix(incl, "inclusion "), "\n")
	// A 32-byte hash has 2 spare bits in its last base64 digit.
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	c := strings.IndexByte(alpha, h[42])
	nonCanon := "inclusion " + h[:42] + string(alpha[c^1]) + "=\n"
	for name, s := range map[string]string{
		"trailing bytes":          raw + "x",
		"trailing line":           raw + "junk\n",
		"no final newline":        strings.TrimSuffix(raw, "\n"),
		"CRLF":                    strings.ReplaceAll(raw, "\n", "\r\n"),
		"non-canonical base64":    strings.Replace(raw, incl, nonCanon, 1),
		"unpadded base64":         strings.Replace(raw, incl, strings.Replace(incl, "=\n", "\n", 1), 1),
		"wrong order":             swapped,
		"entry twice":             raw + strings.Join(lines[second:], ""),
		"no entry":                strings.Join(lines[:3], ""),
		"two checkpoints":         strings.Join(lines[:3], "") + lines[2] + strings.Join(lines[3:], ""),
		"no kind":                 lines[0] + strings.Join(lines[2:], ""),
		"kind fork":               strings.Replace(raw, "kind records", "kind fork", 1),
		"unknown kind":            strings.Replace(raw, "kind records", "kind split", 1),
		"inclusion first":         strings.Join(lines[:3], "") + incl + strings.Join(lines[3:], ""),
		"leading zero index":      strings.Replace(raw, "entry ", "entry 0", 1),
		"double space":            strings.Replace(raw, "entry ", "entry  ", 1),
		"map-proof after record":  raw + "map-proof AAAA\nvalue absent\n",
		"map-proof without value": strings.Replace(rawReg, "value ", "xvalue ", 1),
		"value without map-proof": rawReg + "value absent\n",
		"one map of two epochs":   strings.Join(strings.SplitAfter(rawReg, "\n")[:mapLine(rawReg)], "") + strings.Join(strings.SplitAfter(rawReg, "\n")[mapLine(rawReg)+2:], ""),
		"empty value":             strings.Join(strings.SplitAfter(rawReg, "\n")[:mapLine(rawReg)+1], "") + "value \n" + strings.Join(strings.SplitAfter(rawReg, "\n")[mapLine(rawReg)+2:], ""),
		"too many inclusions":     strings.Join(lines[:4], "") + strings.Repeat(incl, evidence.MaxProofHashes+1) + strings.Join(lines[4:], ""),
		"too large":               raw + strings.Repeat(incl, evidence.MaxSizeV2/len(incl)),
	} {
		if _, err := evidence.Parse([]byte(s)); !errors.Is(err, evidence.ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
		if _, _, _, err := evidence.Check(evidence.Params{Origin: origin, LogVerifier: newKey(origin).v}, []byte(s)); !errors.Is(err, evidence.ErrMalformed) {
			t.Errorf("%s: Check: %v", name, err)
		}
	}
}

// mapLine returns the line number of the first map-proof line.
func mapLine(raw string) int {
	for i, l := range strings.Split(raw, "\n") {
		if strings.HasPrefix(l, "map-proof ") {
			return i
		}
	}
	return -1
}

// TestBuildersCheck: the builders refuse what cannot be a bundle of their
// kind, and a proof source serving another tree.
func TestBuildersCheck(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, newKey(origin))
	a := enroll(e)
	j := e.b.Epoch()
	cp, n := e.publish()
	ea, ej := e.ent(a), e.ent(j)
	if _, err := evidence.BuildRecords(ctx, e.mem, cp, n, &ej, nil); !errors.Is(err, evidence.ErrMalformed) {
		t.Errorf("records of an epoch: %v", err)
	}
	if _, err := evidence.BuildRecords(ctx, e.mem, cp, n, nil, nil); !errors.Is(err, evidence.ErrMalformed) {
		t.Errorf("no record: %v", err)
	}
	if _, err := evidence.BuildRecords(ctx, e.mem, cp, n, &ea, &ea); !errors.Is(err, evidence.ErrMalformed) {
		t.Errorf("one record twice: %v", err)
	}
	if _, err := evidence.BuildMapRoot(ctx, e.mem, cp, n+1, ej); !errors.Is(err, evidence.ErrMalformed) {
		t.Errorf("wrong size: %v", err)
	}
	m := e.honestMap(j)
	if _, err := evidence.BuildMapRegression(ctx, e.mem, cp, n, ej, ej, mapValue(t, m, ix, e.data(a)), mapValue(t, m, ix, e.data(a))); !errors.Is(err, evidence.ErrMalformed) {
		t.Errorf("map regression of one epoch: %v", err)
	}
	// A proof source with another tree.
	f := newEnv(t, e.k)
	f.b.Honest(2, 1)
	f.publish()
	if _, err := evidence.BuildMapRoot(ctx, f.mem, cp, n, ej); !errors.Is(err, evidence.ErrProof) {
		t.Errorf("another tree: %v", err)
	}
	// Given inclusion proofs are kept and checked.
	ej.Inclusion = [][]byte{bytes.Repeat([]byte{1}, 32)}
	if _, err := evidence.BuildMapRoot(ctx, nil, cp, n, ej); !errors.Is(err, evidence.ErrProof) {
		t.Errorf("given bad proof: %v", err)
	}
}

// TestCheckV1: Check accepts kt-evidence/v1 with the v1 meaning, and maps
// v1's errors onto its own.
func TestCheckV1(t *testing.T) {
	ctx := context.Background()
	k := newKey(origin)
	_, lb, cpa, cpb := forked(t, k, 2, 4, 9)
	fork, err := evidence.Build(ctx, k.v, cpa[3], cpb[8], lb)
	if err != nil {
		t.Fatal(err)
	}
	p := evidence.Params{LogVerifier: k.v}
	if kind, what, replay, err := evidence.Check(p, fork.Marshal()); err != nil || kind != evidence.KindFork || replay || !strings.Contains(what, "fork of") {
		t.Fatalf("%s %q %v %v", kind, what, replay, err)
	}
	same := &evidence.Bundle{A: cpb[2], B: cpb[2]}
	if _, _, _, err := evidence.Check(p, same.Marshal()); !errors.Is(err, evidence.ErrNotEvidence) {
		t.Fatalf("no fork: %v", err)
	}
	if _, _, _, err := evidence.Check(evidence.Params{LogVerifier: newKey(origin).v}, fork.Marshal()); !errors.Is(err, evidence.ErrSignature) {
		t.Fatalf("other key: %v", err)
	}
	rev := &evidence.Bundle{A: fork.B, B: fork.A, Proof: fork.Proof}
	if _, _, _, err := evidence.Check(p, rev.Marshal()); !errors.Is(err, evidence.ErrMalformed) {
		t.Fatalf("reversed: %v", err)
	}
	// A v2 bundle is not a fork for the v1 API.
	_, rec, _ := validBundles(t)
	if _, err := evidence.Verify(rec.Marshal(), k.v); !errors.Is(err, evidence.ErrMalformed) {
		t.Fatalf("v1 Verify of v2: %v", err)
	}
}

// TestGoldenV2 pins the kt-evidence/v2 encoding of one bundle per kind
// (run with -update to rewrite testdata/*.golden).
func TestGoldenV2(t *testing.T) {
	k := fixedKey(t)
	for _, sc := range scenarios {
		if !sc.golden {
			continue
		}
		t.Run(sc.name, func(t *testing.T) {
			e := newEnv(t, k)
			got := sc.build(t, e)
			path := filepath.Join("testdata", sc.name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encoding changed:\n got %s\nwant %s", got, want)
			}
			if kind, _, _, err := evidence.Check(e.params(), want); err != nil || kind != sc.kind {
				t.Fatal(kind, err)
			}
		})
	}
}

// goldenSeeds returns every testdata/*.golden bundle.
func goldenSeeds(f *testing.F) [][]byte {
	names, _ := filepath.Glob(filepath.Join("testdata", "*.golden"))
	var out [][]byte
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// FuzzCheck: Check never panics, and what it accepts is a bundle that
// re-encodes to itself, of a known kind, with a description.
func FuzzCheck(f *testing.F) {
	for _, s := range goldenSeeds(f) {
		f.Add(s)
	}
	k := fixedKey(f)
	p := evidence.Params{Origin: origin, LogVerifier: k.v, RecoveryKey: ktlog.Pub(ktlog.Key("recovery"))}
	f.Fuzz(func(t *testing.T, in []byte) {
		kind, what, replay, err := evidence.Check(p, in)
		if err != nil {
			return
		}
		b, perr := evidence.Parse(in)
		if perr != nil || !bytes.Equal(b.Marshal(), in) {
			t.Fatalf("accepted a bundle that does not re-encode: %v", perr)
		}
		if what == "" || replay != (kind == evidence.KindMapRoot) {
			t.Fatalf("kind %s, what %q, replay %v", kind, what, replay)
		}
	})
}
