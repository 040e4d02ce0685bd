package main

import (
	"context"
	"encoding/base64"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/cmd/ktctl/internal/ktctl"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/log/evidence"
	"github.com/keytrans/kt/log/logapi"
	"github.com/keytrans/kt/smt"
)

// v2Log is a dishonest key transparency log (ktlog) served over the read
// API, with the bundles of each v2 kind built over it.
type v2Log struct {
	m       *memDeployment
	b       *ktlog.Builder
	mem     *conformance.MemoryLog
	url     string
	flags   []string // --log-key, --recovery-key
	bundles map[string]string
}

func newV2Log(t *testing.T) *v2Log {
	ctx := context.Background()
	m := newMemDeployment(t)
	b := ktlog.New("mem.example/kt")
	d1, d2 := ktlog.Key("d1"), ktlog.Key("d2")
	x := ktlog.Index("x")
	// records: a device change signed by a key that is not an authorizer.
	a := b.Change(x, api.AuthEnroll, d1, ktlog.Devices(d1))
	bad := b.Change(x, api.AuthDevice, d2, ktlog.Devices(d2))
	// version-conflict: a second version 2 of x, which the map holds.
	r2 := b.Record(x, api.AuthDevice, ktlog.Devices(d1))
	r2.Version, r2.Prev = 2, api.LeafHash(b.Entries()[a])
	r2.Sign(b.Origin, d1)
	b.AppendRecord(r2)
	honest := b.Change(ktlog.Index("y"), api.AuthEnroll, d2, ktlog.Devices(d2))
	// R6: a recovery signed by the recovery key (valid with it only).
	rec := b.Change(ktlog.Index("y"), api.AuthRecovery, b.Recovery, ktlog.Devices(d1))
	// map-root: an epoch whose map root is not the map of the records.
	wrong := b.EpochWith(func(r *api.EpochRecord) { r.MapRoot = [32]byte{7} })
	good := b.Epoch()
	// map-regression: an epoch whose map holds version 1 of x, after the
	// log holds version 2.
	m1, _ := smt.New([]smt.Leaf{{Key: x, Value: api.LeafHash(b.Entries()[a])}})
	regressed := b.EpochWith(func(r *api.EpochRecord) { r.MapRoot, r.MapSize = m1.Root(), m1.Len() })
	b.Epoch()
	ents := b.Entries()
	mem := conformance.NewMemoryLog("mem.example/kt", m.signer)
	if _, err := mem.Append(ctx, b.Entries()); err != nil {
		t.Fatal(err)
	}
	s := httptest.NewServer(logapi.NewHandler(mem))
	t.Cleanup(s.Close)
	rk := ktlog.Pub(b.Recovery)
	l := &v2Log{m: m, b: b, mem: mem, url: s.URL, bundles: map[string]string{},
		flags: []string{"--log-key", m.vkey, "--recovery-key", base64.StdEncoding.EncodeToString(rk[:])}}
	cp, _ := mem.Checkpoint(ctx)
	n := b.Len()
	ent := func(i uint64) evidence.Entry { return evidence.Entry{Index: i, Data: ents[i]} }
	honestMap := func(upto uint64) *smt.Map {
		mp, _ := smt.New(nil)
		for _, d := range ents[:upto] {
			if r, err := api.ParseChangeRecord(d); err == nil {
				mp.Apply([]smt.Update{{Key: r.Index, Value: api.LeafHash(d)}})
			}
		}
		return mp
	}
	mv := func(mp *smt.Map, rec []byte) evidence.MapValue {
		p, _ := mp.Prove(x)
		pb, _ := p.MarshalBinary()
		return evidence.MapValue{Proof: pb, Record: rec}
	}
	write := func(name string) func([]byte, error) {
		return func(raw []byte, err error) {
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			p := filepath.Join(t.TempDir(), name)
			if err := os.WriteFile(p, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			l.bundles[name] = p
		}
	}
	ea, eb, eh, er := ent(a), ent(bad), ent(honest), ent(rec)
	write("records")(evidence.BuildRecords(ctx, mem, cp, n, &ea, &eb))
	write("records-honest")(evidence.BuildRecords(ctx, mem, cp, n, &eh, nil))
	write("records-r6")(evidence.BuildRecords(ctx, mem, cp, n, &er, nil))
	write("map-root")(evidence.BuildMapRoot(ctx, mem, cp, n, ent(wrong)))
	write("map-root-honest")(evidence.BuildMapRoot(ctx, mem, cp, n, ent(good)))
	write("map-regression")(evidence.BuildMapRegression(ctx, mem, cp, n, ent(good), ent(regressed), mv(honestMap(good), ents[bad+1]), mv(m1, ents[a])))
	write("version-conflict")(evidence.BuildVersionConflict(ctx, mem, cp, n, ent(good), mv(honestMap(good), ents[bad+1]), ent(bad)))
	return l
}

// TestEvidenceVerifyV2: evidence verify prints the kind and what each v2
// kind proves, replays a map-root claim when given the log, and refuses
// near misses.
func TestEvidenceVerifyV2(t *testing.T) {
	l := newV2Log(t)
	verify := func(name string, extra ...string) result {
		return runCLI(t, append(append([]string{"evidence", "verify", l.bundles[name]}, l.flags...), extra...)...)
	}
	verify("records").want(t, exitOK, []string{"kind", "records", "PROVEN: R5 device: version 2 of index", "entry 1", "entry 2"})
	verify("map-regression").want(t, exitOK, []string{"map-regression", "PROVEN: map regression", "to the earlier version 1", "map value"})
	verify("version-conflict").want(t, exitOK, []string{"version-conflict", "PROVEN: version conflict"})

	var info ktctl.EvidenceInfo
	r := verify("records", "--json")
	r.decode(t, &info)
	if r.code != exitOK || info.Kind != "records" || info.What == "" || len(info.Entries) != 2 || info.Checkpoint == nil {
		t.Fatalf("JSON: %+v", info)
	}

	// Near misses.
	verify("records-honest").want(t, exitVerify, []string{"does not prove misbehaviour"}, "proves no misbehaviour")
	verify("records-r6").want(t, exitVerify, nil, "proves no misbehaviour")
	runCLI(t, "evidence", "verify", l.bundles["records-r6"], "--log-key", l.m.vkey).want(t, exitVerify, nil, "rests on rule R6")
	runCLI(t, "evidence", "verify", l.bundles["records"], "--log-key", newMemDeployment(t).vkey).want(t, exitVerify, nil, "not signed by the log key")

	// map-root: without the log, the range to replay; with it, the verdict.
	j := "6"
	verify("map-root").want(t, exitVerify, []string{"kind", "map-root"}, "a replay is needed: replay entries [0, "+j+")")
	verify("map-root", "--log-url", l.url).want(t, exitOK, []string{"PROVEN by replay", "replayed", "entries [0, " + j + ") from the read API at " + l.url, "recomputed map", "published map"})
	r = verify("map-root", "--log-url", l.url, "--json")
	r.decode(t, &info)
	if r.code != exitOK || info.Replay == nil || !info.Replay.Holds || strconv.FormatUint(info.Replay.Index, 10) != j {
		t.Fatalf("JSON: %+v", info.Replay)
	}
	verify("map-root-honest", "--log-url", l.url).want(t, exitVerify, []string{"does not prove misbehaviour"}, "the claim does not hold")
	// A read API serving another tree cannot confirm the claim.
	other := l.m.serve(t, l.b.Entries()[:3])
	verify("map-root", "--log-url", other).want(t, exitIO, []string{"not decided"}, "fetching entries")
	// The same entries [0, j), then others.
	es := l.b.Entries()
	forked := append(append(append([][]byte{}, es[:6]...), es[7:]...), es[6])
	verify("map-root", "--log-url", l.m.serve(t, forked)).want(t, exitVerify, nil, "not those of the bundle's checkpoint")

	// inspect decodes without keys.
	runCLI(t, "evidence", "inspect", l.bundles["version-conflict"]).want(t, exitOK, []string{"version-conflict", "well-formed", "epoch record", "change record"})
}
