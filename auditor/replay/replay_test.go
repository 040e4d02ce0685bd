package replay_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/auditor/replay"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/log"
)

const origin = "example.com/kt"

type logKey struct {
	s note.Signer
	v note.Verifier
}

func newLogKey(t testing.TB) logKey {
	_ = t
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	return logKey{s, v}
}

// treeRoot computes the RFC 6962 root with sumdb/tlog, independently of the
// engine's compact range.
func treeRoot(t testing.TB, entries [][]byte) []byte {
	hashes := map[int64]tlog.Hash{}
	for i, e := range entries {
		hs, err := tlog.StoredHashes(int64(i), e, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(idx))
			for j, k := range idx {
				out[j] = hashes[k]
			}
			return out, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		base := tlog.StoredHashIndex(0, int64(i))
		for j, h := range hs {
			hashes[base+int64(j)] = h
		}
	}
	h, err := tlog.TreeHash(int64(len(entries)), tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for j, k := range idx {
			out[j] = hashes[k]
		}
		return out, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return h[:]
}

func (k logKey) checkpoint(t testing.TB, entries [][]byte) []byte {
	var root []byte
	if len(entries) == 0 {
		root = rfc6962.DefaultHasher.EmptyRoot()
	} else {
		root = treeRoot(t, entries)
	}
	cp, err := log.SignCheckpoint(k.s, origin, uint64(len(entries)), root)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func newEngine(t testing.TB, k logKey, b *ktlog.Builder, exact bool) *replay.Engine {
	e, err := replay.New(replay.Config{Origin: origin, Verifier: k.v, RecoveryKey: b.RecoveryKey(), ExactSignatures: exact})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

type found struct {
	Index uint64
	Rule  replay.Rule
}

func summary(vs []replay.Violation) []found {
	var out []found
	for _, v := range vs {
		out = append(out, found{v.Index, v.Rule})
	}
	return out
}

func TestHonest(t *testing.T) {
	k := newLogKey(t)
	b := ktlog.New(origin)
	b.Honest(50, 7)
	for _, exact := range []bool{false, true} {
		e := newEngine(t, k, b, exact)
		// Feed in uneven pieces, with a checkpoint after each.
		ents := b.Entries()
		for i := 0; i < len(ents); {
			j := min(len(ents), i+1+i%13)
			if vs := e.Append(ents[i:j]); len(vs) != 0 {
				t.Fatalf("honest log: %v", vs)
			}
			i = j
			c, vs, err := e.Checkpoint(k.checkpoint(t, ents[:i]))
			if err != nil || len(vs) != 0 {
				t.Fatalf("checkpoint %d: %v %v", i, err, vs)
			}
			if c.Size != uint64(i) || e.Clean() != c || e.Last() != c {
				t.Fatalf("checkpoint %d not recorded as clean", i)
			}
		}
		if e.Handles() != 50 {
			t.Errorf("Handles() = %d", e.Handles())
		}
		if _, _, bad := e.Violations(); bad {
			t.Error("violations on an honest log")
		}
	}
}

// TestViolations feeds one fault at a time into an otherwise honest log and
// expects exactly the named violations.
func TestViolations(t *testing.T) {
	d1, d2, d3 := ktlog.Key("d1"), ktlog.Key("d2"), ktlog.Key("d3")
	ix := ktlog.Index("alice")
	for _, tc := range []struct {
		name  string
		build func(b *ktlog.Builder)
		want  []found
	}{
		{"bad map root", func(b *ktlog.Builder) {
			b.Change(ix, api.AuthEnroll, d1, ktlog.Devices(d1))
			b.EpochWith(func(r *api.EpochRecord) { r.MapRoot[0] ^= 1 })
		}, []found{{2, replay.RuleMapRoot}}},
		{"map root of an older epoch", func(b *ktlog.Builder) {
			b.Change(ix, api.AuthEnroll, d1, ktlog.Devices(d1))
			b.Epoch()
			b.Change(ix, api.AuthDevice, d1, ktlog.Devices(d2))
			b.EpochWith(func(r *api.EpochRecord) { r.MapRoot = [32]byte{}; r.MapSize = 0 })
		}, []found{{4, replay.RuleMapRoot}, {4, replay.RuleMapSize}}},
		{"bad map size", func(b *ktlog.Builder) {
			b.Change(ix, api.AuthEnroll, d1, ktlog.Devices(d1))
			b.EpochWith(func(r *api.EpochRecord) { r.MapSize = 7 })
		}, []found{{2, replay.RuleMapSize}}},
		{"removed device authorizes", func(b *ktlog.Builder) {
			b.Change(ix, api.AuthEnroll, d1, ktlog.Devices(d1, d2))
			b.Change(ix, api.AuthDevice, d2, ktlog.Devices(d2)) // d1 removed
			b.Change(ix, api.AuthDevice, d1, ktlog.Devices(d1, d3))
			b.Epoch()
		}, []found{{3, "R5 device"}}},
		{"replayed change", func(b *ktlog.Builder) {
			b.Change(ix, api.AuthEnroll, d1, ktlog.Devices(d1))
			r := b.Record(ix, api.AuthDevice, ktlog.Devices(d2))
			r.Sign(b.Origin, d1)
			enc, _ := r.MarshalBinary()
			b.AppendRecord(r)
			b.Raw(enc) // the same record again
			b.Epoch()
		}, []found{{3, "R2 version"}}},
		{"bad signature", func(b *ktlog.Builder) {
			r := b.Record(ix, api.AuthEnroll, ktlog.Devices(d1))
			r.Sign(b.Origin, d1)
			r.Signature[5] ^= 1
			b.AppendRecord(r)
			b.Epoch()
		}, []found{{1, "R1 signature"}}},
		{"signed for another origin", func(b *ktlog.Builder) {
			r := b.Record(ix, api.AuthEnroll, ktlog.Devices(d1))
			r.Sign("other.example/kt", d1)
			b.AppendRecord(r)
		}, []found{{1, "R1 signature"}}},
		{"recovery by a non-recovery key", func(b *ktlog.Builder) {
			b.Change(ix, api.AuthEnroll, d1, ktlog.Devices(d1))
			b.Change(ix, api.AuthRecovery, d1, ktlog.Devices(d2))
		}, []found{{2, "R6 recovery"}}},
		{"recovery", func(b *ktlog.Builder) {
			b.Change(ix, api.AuthEnroll, d1, ktlog.Devices(d1))
			b.Change(ix, api.AuthRecovery, b.Recovery, ktlog.Devices(d2))
			b.Epoch()
		}, nil},
		{"first change not an enrollment", func(b *ktlog.Builder) {
			b.Change(ix, api.AuthDevice, d1, ktlog.Devices(d1))
		}, []found{{1, "R5 device"}}},
		{"epoch skipped", func(b *ktlog.Builder) {
			b.EpochWith(func(r *api.EpochRecord) { r.Epoch++ })
			b.EpochWith(func(r *api.EpochRecord) { r.Epoch++ }) // consistent after the skip
		}, []found{{1, replay.RuleEpochNumber}}},
		{"epoch log size", func(b *ktlog.Builder) {
			b.EpochWith(func(r *api.EpochRecord) { r.LogSize-- })
		}, []found{{1, replay.RuleEpochLogSize}}},
		{"epoch time goes back", func(b *ktlog.Builder) {
			b.EpochWith(func(r *api.EpochRecord) { r.Timestamp -= 5000 })
		}, []found{{1, replay.RuleEpochTimestamp}}},
		{"garbage entry", func(b *ktlog.Builder) {
			b.Raw([]byte{1, 9, 9})
		}, []found{{1, replay.RuleParse}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newLogKey(t)
			b := ktlog.New(origin)
			tc.build(b)
			for _, exact := range []bool{false, true} {
				e := newEngine(t, k, b, exact)
				got := summary(e.Append(b.Entries()))
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Fatalf("exact=%v: violations (-want +got):\n%s", exact, diff)
				}
				_, _, err := e.Checkpoint(k.checkpoint(t, b.Entries()))
				if err != nil {
					t.Fatal(err)
				}
				if (e.Clean() != nil) != (len(tc.want) == 0) {
					t.Errorf("Clean() = %v with %d violations", e.Clean(), len(tc.want))
				}
			}
		})
	}
}

func TestViolationCarriesAuthError(t *testing.T) {
	k := newLogKey(t)
	b := ktlog.New(origin)
	d1 := ktlog.Key("d1")
	b.Change(ktlog.Index("x"), api.AuthDevice, d1, ktlog.Devices(d1))
	vs := newEngine(t, k, b, false).Append(b.Entries())
	if len(vs) != 1 {
		t.Fatal(vs)
	}
	var ae *api.AuthError
	if !errors.As(&vs[0], &ae) || ae.Rule != "R5 device" {
		t.Fatalf("violation does not unwrap to the AuthError: %v", vs[0].Err)
	}
}

func TestFirstEntry(t *testing.T) {
	k := newLogKey(t)
	d1 := ktlog.Key("d1")
	b := ktlog.New(origin)
	b.Change(ktlog.Index("a"), api.AuthEnroll, d1, ktlog.Devices(d1))
	// A log that starts with a change record.
	ents := b.Entries()[1:]
	got := summary(newEngine(t, k, b, false).Append(ents))
	want := []found{{0, replay.RuleFirstEntry}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatal(diff)
	}
	// A log whose entry 0 has a non-empty map.
	b2 := ktlog.New(origin)
	bad, _ := (&api.EpochRecord{MapRoot: [32]byte{1}, MapSize: 0}).MarshalBinary()
	ents = append([][]byte{bad}, b2.Entries()[1:]...)
	got = summary(newEngine(t, k, b2, false).Append(ents))
	want = []found{{0, replay.RuleFirstEntry}, {0, replay.RuleMapRoot}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatal(diff)
	}
}

// TestRewrittenHistory: the log serves entries that differ from the ones
// its checkpoint commits to (history rewritten after it was checkpointed).
func TestRewrittenHistory(t *testing.T) {
	k := newLogKey(t)
	b := ktlog.New(origin)
	b.Honest(5, 3)
	alt := ktlog.New(origin)
	alt.Honest(6, 3) // a different, internally valid history
	e := newEngine(t, k, alt, false)
	if vs := e.Append(alt.Entries()[:b.Len()]); len(vs) != 0 {
		t.Fatal(vs)
	}
	_, vs, err := e.Checkpoint(k.checkpoint(t, b.Entries()))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]found{{b.Len(), replay.RuleCheckpointRoot}}, summary(vs)); diff != "" {
		t.Fatal(diff)
	}
	if e.Clean() != nil || e.Last() != nil {
		t.Error("a mismatching checkpoint was recorded")
	}
}

func TestCheckpointErrors(t *testing.T) {
	k := newLogKey(t)
	other := newLogKey(t)
	b := ktlog.New(origin)
	b.Honest(3, 2)
	e := newEngine(t, k, b, false)
	e.Append(b.Entries())
	good := k.checkpoint(t, b.Entries())
	for name, cp := range map[string][]byte{
		"other key":    other.checkpoint(t, b.Entries()),
		"garbage":      []byte("not a note\n"),
		"truncated":    good[:len(good)-10],
		"wrong size":   k.checkpoint(t, b.Entries()[:3]),
		"body altered": bytes.Replace(good, []byte(origin+"\n"), []byte(origin+"\n1"), 1),
	} {
		if _, vs, err := e.Checkpoint(cp); err == nil || vs != nil {
			t.Errorf("%s: accepted (%v)", name, vs)
		}
	}
	if _, _, err := e.Checkpoint(k.checkpoint(t, b.Entries()[:3])); !errors.Is(err, replay.ErrCheckpointSize) {
		t.Errorf("wrong size: %v", err)
	}
	if e.Last() != nil {
		t.Error("a bad checkpoint was recorded")
	}
}

// TestResume: an engine saved and restored mid-log finishes with the same
// result (state, violations) as one that replayed everything at once.
func TestResume(t *testing.T) {
	k := newLogKey(t)
	b := ktlog.New(origin)
	b.Honest(40, 5)
	d := ktlog.Key("late")
	b.Change(ktlog.Index("h3"), api.AuthDevice, d, ktlog.Devices(d)) // not an authorizer: R5
	b.EpochWith(func(r *api.EpochRecord) { r.MapRoot[3] ^= 1 })
	b.Honest(10, 4)
	ents := b.Entries()

	for _, cut := range []int{1, 37, 90, len(ents) - 1} {
		// The same checkpoints fed without a restart.
		full := newEngine(t, k, b, false)
		wantVs := summary(full.Append(ents[:cut]))
		full.Checkpoint(k.checkpoint(t, ents[:cut]))
		wantVs = append(wantVs, summary(full.Append(ents[cut:]))...)
		full.Checkpoint(k.checkpoint(t, ents))
		if len(wantVs) == 0 {
			t.Fatal("expected violations")
		}
		want, _ := full.MarshalBinary()

		e := newEngine(t, k, b, false)
		got := summary(e.Append(ents[:cut]))
		e.Checkpoint(k.checkpoint(t, ents[:cut]))
		st, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		r, err := replay.Restore(replay.Config{Origin: origin, Verifier: k.v, RecoveryKey: b.RecoveryKey()}, st)
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if r.Size() != uint64(cut) || r.Root() != e.Root() {
			t.Fatalf("cut %d: restored size %d", cut, r.Size())
		}
		got = append(got, summary(r.Append(ents[cut:]))...)
		r.Checkpoint(k.checkpoint(t, ents))
		if diff := cmp.Diff(wantVs, got); diff != "" {
			t.Errorf("cut %d: violations differ:\n%s", cut, diff)
		}
		end, _ := r.MarshalBinary()
		if !bytes.Equal(end, want) {
			t.Errorf("cut %d: final state differs", cut)
		}
		fr, fs := full.MapRoot()
		rr, rs := r.MapRoot()
		if fr != rr || fs != rs {
			t.Errorf("cut %d: map differs", cut)
		}
	}
}

func TestRestoreRejects(t *testing.T) {
	k := newLogKey(t)
	b := ktlog.New(origin)
	b.Honest(4, 2)
	e := newEngine(t, k, b, false)
	e.Append(b.Entries())
	e.Checkpoint(k.checkpoint(t, b.Entries()))
	st, _ := e.MarshalBinary()
	cfg := replay.Config{Origin: origin, Verifier: k.v}
	if _, err := replay.Restore(cfg, st); err != nil {
		t.Fatal(err)
	}
	other := newLogKey(t)
	if _, err := replay.Restore(replay.Config{Origin: origin, Verifier: other.v}, st); !errors.Is(err, replay.ErrState) {
		t.Errorf("state under another log key: %v", err)
	}
	for i := 0; i < len(st); i += 7 {
		if _, err := replay.Restore(cfg, st[:i]); err == nil {
			t.Fatalf("truncated at %d: accepted", i)
		}
	}
	if _, err := replay.Restore(cfg, append(bytes.Clone(st), 0)); err == nil {
		t.Error("trailing byte accepted")
	}
	// A flipped compact-range hash no longer matches the saved checkpoint.
	bad := bytes.Clone(st)
	off := len("kt-replay-state/v1\n") + 2 + len(origin) + 8 + 2
	bad[off] ^= 1
	if _, err := replay.Restore(cfg, bad); !errors.Is(err, replay.ErrState) {
		t.Errorf("tampered range: %v", err)
	}
}

func FuzzRestore(f *testing.F) {
	k := newLogKey(f)
	b := ktlog.New(origin)
	b.Honest(3, 2)
	e := newEngine(f, k, b, false)
	e.Append(b.Entries())
	e.Checkpoint(k.checkpoint(f, b.Entries()))
	st, _ := e.MarshalBinary()
	f.Add(st)
	f.Add([]byte("kt-replay-state/v1\n"))
	cfg := replay.Config{Origin: origin, Verifier: k.v}
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := replay.Restore(cfg, in)
		if err != nil {
			return
		}
		out, err := r.MarshalBinary()
		if err != nil || !bytes.Equal(out, in) {
			t.Fatalf("restored state re-encodes differently")
		}
	})
}

type pagedSource struct {
	ents [][]byte
	page int
	fail uint64 // fail reads starting at this index (0: never)
}

func (s *pagedSource) Entries(_ context.Context, start, end uint64) ([][]byte, error) {
	if s.fail != 0 && start >= s.fail {
		return nil, errors.New("source broken")
	}
	return s.ents[start:min(end, start+uint64(s.page))], nil
}

func TestReplayTo(t *testing.T) {
	ctx := context.Background()
	k := newLogKey(t)
	b := ktlog.New(origin)
	b.Honest(30, 4)
	b.EpochWith(func(r *api.EpochRecord) { r.MapSize = 1 })
	ents := b.Entries()
	cp := k.checkpoint(t, ents)
	src := &pagedSource{ents: ents, page: 7, fail: 40}
	e := newEngine(t, k, b, false)
	var sizes []uint64
	if _, err := e.ReplayTo(ctx, src, cp, func(n uint64) { sizes = append(sizes, n) }); err == nil {
		t.Fatal("a broken source did not stop the replay")
	}
	if e.Size() != 42 || len(sizes) != 6 {
		t.Fatalf("stopped at %d after %v", e.Size(), sizes)
	}
	src.fail = 0
	vs, err := e.ReplayTo(ctx, src, cp, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]found{{uint64(len(ents) - 1), replay.RuleMapSize}}, summary(vs)); diff != "" {
		t.Fatal(diff)
	}
	// A source that returns too many entries is refused.
	e2 := newEngine(t, k, b, false)
	over := &overSource{ents: ents}
	if _, err := e2.ReplayTo(ctx, over, k.checkpoint(t, ents[:10]), nil); err == nil {
		t.Fatal("a source returning more than asked was accepted")
	}
}

type overSource struct{ ents [][]byte }

func (s *overSource) Entries(_ context.Context, start, end uint64) ([][]byte, error) {
	return s.ents[start:], nil
}

func TestLateEpochWarning(t *testing.T) {
	k := newLogKey(t)
	b := ktlog.New(origin) // epochs 1 s apart
	d := ktlog.Key("d")
	b.Change(ktlog.Index("a"), api.AuthEnroll, d, ktlog.Devices(d))
	b.Epoch()
	b.EpochWith(func(r *api.EpochRecord) { r.Timestamp += 60_000 }) // idle: no warning
	b.Change(ktlog.Index("b"), api.AuthEnroll, d, ktlog.Devices(d))
	late := b.EpochWith(func(r *api.EpochRecord) { r.Timestamp += 120_000 })
	e, err := replay.New(replay.Config{Origin: origin, Verifier: k.v, Heartbeat: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if vs := e.Append(b.Entries()); len(vs) != 0 {
		t.Fatal(vs)
	}
	ws := e.Warnings()
	if len(ws) != 1 || ws[0].Index != late || ws[0].Kind != replay.WarnLateEpoch {
		t.Fatalf("warnings %+v, want one at %d", ws, late)
	}
	if len(e.Warnings()) != 0 {
		t.Fatal("warnings not cleared")
	}
}

// TestViolationPrev: an authorization violation names the log index of the
// index's previous record (Prev), for the R1 failures found in batches as
// for the others, and none for an index's first record.
func TestViolationPrev(t *testing.T) {
	k := newLogKey(t)
	for _, exact := range []bool{false, true} {
		b := ktlog.New(origin)
		d, x := ktlog.Key("d"), ktlog.Key("x")
		h := ktlog.Index("h")
		first := b.Change(h, api.AuthDevice, d, ktlog.Devices(d)) // R5 with no previous record
		b.Epoch()
		prev := b.Change(ktlog.Index("h"), api.AuthDevice, x, ktlog.Devices(x)) // R5 after first
		r := b.Record(h, api.AuthDevice, ktlog.Devices(d))
		r.Sign(origin, x)
		r.Signature[0] ^= 1
		bad := b.AppendRecord(r) // R1 after prev
		vs := newEngine(t, k, b, exact).Append(b.Entries())
		want := map[uint64]*uint64{first: nil, prev: &first, bad: &prev}
		if len(vs) != 3 {
			t.Fatalf("%+v", vs)
		}
		for _, v := range vs {
			w, ok := want[v.Index]
			if !ok || (w == nil) != (v.Prev == nil) || (w != nil && *w != *v.Prev) {
				t.Errorf("exact %v: violation %d (%s) has Prev %v", exact, v.Index, v.Rule, v.Prev)
			}
		}
	}
}
