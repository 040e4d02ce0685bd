package evidence_test

import (
	"context"
	"crypto/ed25519"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/log/evidence"
	"github.com/keytrans/kt/smt"
)

// env is a key transparency log under construction (ktlog, honest or
// not) and the MemoryLog that serves it, signed by k.
type env struct {
	t   testing.TB
	k   key
	b   *ktlog.Builder
	mem *conformance.MemoryLog
	pub uint64 // entries appended to mem
}

func newEnv(t testing.TB, k key) *env {
	return &env{t: t, k: k, b: ktlog.New(origin), mem: conformance.NewMemoryLog(origin, k.s)}
}

func (e *env) params() evidence.Params {
	return evidence.Params{Origin: origin, LogVerifier: e.k.v, RecoveryKey: e.b.RecoveryKey()}
}

// publish appends the builder's new entries to the log and returns its
// checkpoint and size.
func (e *env) publish() ([]byte, uint64) {
	e.t.Helper()
	ctx := context.Background()
	if e.pub < e.b.Len() {
		if _, err := e.mem.Append(ctx, e.b.Entries()[e.pub:]); err != nil {
			e.t.Fatal(err)
		}
		e.pub = e.b.Len()
	}
	cp, err := e.mem.Checkpoint(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return cp, e.b.Len()
}

// ent returns entry i without its inclusion proof (the builders fetch it).
func (e *env) ent(i uint64) evidence.Entry {
	return evidence.Entry{Index: i, Data: e.b.Entries()[i]}
}

func (e *env) data(i uint64) []byte { return e.b.Entries()[i] }

// record returns entry i as a change record.
func (e *env) record(i uint64) *api.ChangeRecord {
	e.t.Helper()
	r, err := api.ParseChangeRecord(e.data(i))
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// mapOf returns the map holding, for each record (encoded), its index →
// its leaf hash; a later record of an index replaces an earlier one.
func mapOf(t testing.TB, records ...[]byte) *smt.Map {
	t.Helper()
	var ups []smt.Update
	for _, rb := range records {
		r, err := api.ParseChangeRecord(rb)
		if err != nil {
			t.Fatal(err)
		}
		ups = append(ups, smt.Update{Key: r.Index, Value: api.LeafHash(rb)})
	}
	m, err := smt.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) > 0 {
		if _, err := m.Apply(ups); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// honestMap returns the map of the change records before log index j.
func (e *env) honestMap(j uint64) *smt.Map {
	var rs [][]byte
	for _, d := range e.b.Entries()[:j] {
		if _, err := api.ParseChangeRecord(d); err == nil {
			rs = append(rs, d)
		}
	}
	return mapOf(e.t, rs...)
}

// epochWith appends an epoch record committing to m.
func (e *env) epochWith(m *smt.Map) uint64 {
	return e.b.EpochWith(func(r *api.EpochRecord) { r.MapRoot, r.MapSize = m.Root(), m.Len() })
}

// mapValue returns m's proof for key x with the record it holds (rec, as
// the caller claims it; nil for absent).
func mapValue(t testing.TB, m *smt.Map, x [32]byte, rec []byte) evidence.MapValue {
	t.Helper()
	p, _ := m.Prove(x)
	pb, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return evidence.MapValue{Proof: pb, Record: rec}
}

// forge appends a change record for index x with the given version and
// prev, signed by signer, whatever the history.
func (e *env) forge(x [32]byte, version uint64, prev [32]byte, kind api.AuthKind, signer ed25519.PrivateKey, authorizers []api.Authorizer) uint64 {
	r := e.b.Record(x, kind, authorizers)
	r.Version, r.Prev = version, prev
	r.Sign(origin, signer)
	return e.b.AppendRecord(r)
}
