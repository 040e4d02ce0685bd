package witness_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/witness"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// checkFixture is a log checkpoint and six witnesses X1..X3, Y1..Y3.
type checkFixture struct {
	lg     *testLog
	cp     []byte // signed by the log only
	text   string
	w      map[string]*cosigner
	policy map[string]*witness.Policy
}

func newCheckFixture(t *testing.T) *checkFixture {
	f := &checkFixture{lg: newTestLog(t, "localhost/kt"), w: make(map[string]*cosigner)}
	f.cp = f.lg.checkpoint(t, 42, hash32(1))
	f.text = noteText(f.cp)
	var defs strings.Builder
	for _, n := range []string{"X1", "X2", "X3", "Y1", "Y2", "Y3"} {
		f.w[n] = newCosigner(t, "witness.example/"+n)
		fmt.Fprintf(&defs, "witness %s %s\n", n, f.w[n].VKey())
	}
	f.policy = make(map[string]*witness.Policy)
	for name, rule := range map[string]string{
		"none":   "quorum none\n",
		"single": "quorum X1\n",
		"2of3":   "group X 2 X1 X2 X3\nquorum X\n",
		"all":    "group X all X1 X2 X3\nquorum X\n",
		"nested": "group X 2 X1 X2 X3\ngroup Y any Y1 Y2 Y3\ngroup XY all X Y\nquorum XY\n",
		// Y2 is a member of two groups: it may count in each.
		"shared": "group A 2 X1 Y2\ngroup B 2 X2 Y2\ngroup AB all A B\nquorum AB\n",
	} {
		p, err := witness.ParsePolicy([]byte(defs.String() + rule))
		if err != nil {
			t.Fatalf("policy %s: %v", name, err)
		}
		f.policy[name] = p
	}
	return f
}

// cosigned returns the checkpoint with the given signature lines appended.
func (f *checkFixture) cosigned(lines ...string) []byte {
	return []byte(string(f.cp) + strings.Join(lines, ""))
}

func (f *checkFixture) sig(name string, ts uint64) string {
	return f.w[name].Sign(f.text, ts)
}

func TestCheck(t *testing.T) {
	f := newCheckFixture(t)
	intruder := newCosigner(t, "witness.example/X2") // X2's name, another key
	other := f.lg.checkpoint(t, 43, hash32(2))
	// forge returns a line with X2's key name and key hash but a signature
	// by another key.
	forge := func(ts uint64) string {
		line := intruder.Sign(f.text, ts)
		_, b64, _ := strings.Cut(strings.TrimPrefix(strings.TrimSuffix(line, "\n"), "— "), " ")
		raw, _ := base64.StdEncoding.DecodeString(b64)
		h := f.w["X2"].KeyHash()
		raw[0], raw[1], raw[2], raw[3] = byte(h>>24), byte(h>>16), byte(h>>8), byte(h)
		return "— witness.example/X2 " + base64.StdEncoding.EncodeToString(raw) + "\n"
	}
	// Y1's valid cosignature on another checkpoint, moved onto this one.
	moved := f.w["Y1"].Sign(noteText(other), 100)

	for _, tc := range []struct {
		name     string
		policy   string
		lines    []string
		ok       bool
		cosigned []string // valid cosignatures reported
		invalid  []string
	}{
		{"none, no cosignatures", "none", nil, true, nil, nil},
		{"single, signed", "single", []string{f.sig("X1", 100)}, true, []string{"X1"}, nil},
		{"single, missing", "single", []string{f.sig("X2", 100)}, false, []string{"X2"}, nil},
		{"2of3, two", "2of3", []string{f.sig("X1", 100), f.sig("X3", 100)}, true, []string{"X1", "X3"}, nil},
		{"2of3, one", "2of3", []string{f.sig("X1", 100)}, false, []string{"X1"}, nil},
		{"2of3, one witness twice counts once", "2of3", []string{f.sig("X1", 100), f.sig("X1", 101)}, false, []string{"X1"}, nil},
		{"2of3, identical duplicate counts once", "2of3", []string{f.sig("X1", 100), f.sig("X1", 100)}, false, []string{"X1"}, nil},
		{"2of3, unknown signatures ignored", "2of3", []string{intruder.Sign(f.text, 1), f.sig("X1", 100), f.sig("Y1", 100)}, false, []string{"X1", "Y1"}, nil},
		{"all, three", "all", []string{f.sig("X3", 1), f.sig("X2", 2), f.sig("X1", 3)}, true, []string{"X1", "X2", "X3"}, nil},
		{"all, two", "all", []string{f.sig("X1", 1), f.sig("X2", 2)}, false, []string{"X1", "X2"}, nil},
		{"tampered cosignature rejects even a met quorum", "2of3", []string{f.sig("X1", 100), flip1(f.sig("X2", 100)), f.sig("X3", 100)}, false, []string{"X1", "X3"}, []string{"X2"}},
		{"tampered timestamp", "single", []string{func() string {
			line := f.sig("X1", 100)
			_, b64, _ := strings.Cut(strings.TrimPrefix(strings.TrimSuffix(line, "\n"), "— "), " ")
			raw, _ := base64.StdEncoding.DecodeString(b64)
			raw[4+7]++ // the timestamp's last byte
			return "— witness.example/X1 " + base64.StdEncoding.EncodeToString(raw) + "\n"
		}()}, false, nil, []string{"X1"}},
		{"another key under a witness's name is ignored", "2of3", []string{f.sig("X1", 100), intruder.Sign(f.text, 100)}, false, []string{"X1"}, nil},
		{"another key forging a witness's key hash", "2of3", []string{f.sig("X1", 100), forge(100)}, false, []string{"X1"}, []string{"X2"}},
		{"cosignature moved from another checkpoint", "nested", []string{f.sig("X1", 1), f.sig("X2", 1), moved}, false, []string{"X1", "X2"}, []string{"Y1"}},
		{"nested, met", "nested", []string{f.sig("X1", 1), f.sig("X3", 1), f.sig("Y2", 1)}, true, []string{"X1", "X3", "Y2"}, nil},
		{"nested, X group short", "nested", []string{f.sig("X1", 1), f.sig("Y1", 1), f.sig("Y2", 1), f.sig("Y3", 1)}, false, []string{"X1", "Y1", "Y2", "Y3"}, nil},
		{"nested, Y group short", "nested", []string{f.sig("X1", 1), f.sig("X2", 1), f.sig("X3", 1)}, false, []string{"X1", "X2", "X3"}, nil},
		{"shared member counts in both groups", "shared", []string{f.sig("X1", 1), f.sig("X2", 1), f.sig("Y2", 1)}, true, []string{"X1", "X2", "Y2"}, nil},
		{"shared member alone is not enough", "shared", []string{f.sig("X1", 1), f.sig("Y2", 1)}, false, []string{"X1", "Y2"}, nil},
		{"timestamp above 2^63-1", "single", []string{f.sig("X1", math.MaxInt64+1)}, false, nil, []string{"X1"}},
		{"timestamp 2^63-1", "single", []string{f.sig("X1", math.MaxInt64)}, true, []string{"X1"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := f.policy[tc.policy]
			cs, err := p.Check(f.cosigned(tc.lines...))
			var got []string
			for _, c := range cs {
				got = append(got, c.Witness)
			}
			if diff := cmp.Diff(tc.cosigned, got); diff != "" {
				t.Errorf("cosignatures (-want +got):\n%s", diff)
			}
			if tc.ok {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			var pe *witness.PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("Check error %v (%T), want *PolicyError", err, err)
			}
			if diff := cmp.Diff(tc.cosigned, pe.Cosigned); diff != "" {
				t.Errorf("PolicyError.Cosigned (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.invalid, pe.Invalid); diff != "" {
				t.Errorf("PolicyError.Invalid (-want +got):\n%s", diff)
			}
			if pe.Quorum != p.Quorum() {
				t.Errorf("PolicyError.Quorum = %q, want %q", pe.Quorum, p.Quorum())
			}
		})
	}
}

func TestCheckMalformed(t *testing.T) {
	f := newCheckFixture(t)
	p := f.policy["single"]
	for _, tc := range []struct {
		name string
		note string
	}{
		{"empty", ""},
		{"no signatures", f.text},
		{"no blank line", f.text + "— x AAAAAAAA\n"},
		{"bad signature line", string(f.cp) + "— witness.example/X1 !!!\n"},
		{"no final newline", strings.TrimSuffix(string(f.cp), "\n")},
		{"control character", strings.Replace(string(f.cp), "localhost", "local\x01host", 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Check([]byte(tc.note))
			if err == nil {
				t.Fatal("Check succeeded on a malformed note")
			}
			var pe *witness.PolicyError
			if errors.As(err, &pe) {
				t.Fatalf("malformed note gave a PolicyError: %v", err)
			}
		})
	}
}

// TestCheckNote checks a note parsed by log.ParseCheckpoint, whose log
// signature is in Sigs and the cosignatures in UnverifiedSigs.
func TestCheckNote(t *testing.T) {
	f := newCheckFixture(t)
	v, err := note.NewVerifier(f.lg.vkey)
	if err != nil {
		t.Fatal(err)
	}
	_, n, err := log.ParseCheckpoint(f.cosigned(f.sig("X1", 5), f.sig("X2", 6)), f.lg.origin, v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.policy["2of3"].CheckNote(n); err != nil {
		t.Errorf("CheckNote: %v", err)
	}
	if _, err := f.policy["all"].CheckNote(n); err == nil {
		t.Errorf("CheckNote with policy all succeeded with two of three cosignatures")
	}
}

// TestCheckFormatsCosigner checks cosignatures made by formats/note's
// cosignature/v1 signer (with the current time).
func TestCheckFormatsCosigner(t *testing.T) {
	lg := newTestLog(t, "localhost/kt")
	skey, vkey, err := note.GenerateKey(nil, "w.example")
	if err != nil {
		t.Fatal(err)
	}
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	cvkey, err := fnote.VKeyToCosignatureV1(vkey)
	if err != nil {
		t.Fatal(err)
	}
	p, err := witness.ParsePolicy([]byte("witness W " + cvkey + "\nquorum W\n"))
	if err != nil {
		t.Fatal(err)
	}
	cp := lg.checkpoint(t, 3, hash32(3))
	n, err := note.Open(cp, note.VerifierList(mustVerifier(t, lg.vkey)))
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Truncate(time.Second)
	signed, err := note.Sign(n, lg.signer, s)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := p.Check(signed)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	// The timestamp is the signer's clock: not before the call (seconds).
	if len(cs) != 1 || cs[0].Time.Before(before) {
		t.Fatalf("cosignatures %+v, want one at or after %v", cs, before)
	}
	ts, err := fnote.CoSigV1Timestamp(cs[0].Signature)
	if err != nil || !ts.Equal(cs[0].Time) {
		t.Errorf("formats timestamp %v (%v), Check timestamp %v", ts, err, cs[0].Time)
	}
}

func mustVerifier(t *testing.T, vkey string) note.Verifier {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestQuorumTime(t *testing.T) {
	f := newCheckFixture(t)
	for _, tc := range []struct {
		name   string
		policy string
		lines  []string
		want   int64 // unix seconds; -1 for none
	}{
		{"single", "single", []string{f.sig("X1", 500)}, 500},
		{"2of3 takes the second most recent", "2of3", []string{f.sig("X1", 100), f.sig("X2", 300), f.sig("X3", 200)}, 200},
		{"all takes the oldest", "all", []string{f.sig("X1", 100), f.sig("X2", 300), f.sig("X3", 200)}, 100},
		{"duplicates use the most recent", "2of3", []string{f.sig("X1", 100), f.sig("X1", 400), f.sig("X2", 300)}, 300},
		{"nested", "nested", []string{f.sig("X1", 100), f.sig("X2", 600), f.sig("X3", 500), f.sig("Y1", 50), f.sig("Y3", 400)}, 400},
		{"nested, Y limits", "nested", []string{f.sig("X1", 100), f.sig("X2", 600), f.sig("X3", 500), f.sig("Y1", 50)}, 50},
		{"not satisfied", "all", []string{f.sig("X1", 100)}, -1},
		{"quorum none gives no time", "none", []string{f.sig("X1", 100)}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := f.policy[tc.policy]
			cs, _ := p.Check(f.cosigned(tc.lines...))
			got, ok := p.QuorumTime(cs)
			if tc.want < 0 {
				if ok {
					t.Fatalf("QuorumTime = %v, true; want false", got)
				}
				return
			}
			if !ok || got.Unix() != tc.want {
				t.Fatalf("QuorumTime = %v (%d), %v; want %d", got, got.Unix(), ok, tc.want)
			}
		})
	}
}

func TestMergeAndStrip(t *testing.T) {
	f := newCheckFixture(t)
	p := f.policy["2of3"]
	lgv := mustVerifier(t, f.lg.vkey)
	stranger := newCosigner(t, "stranger.example")

	a := f.cosigned(f.sig("X1", 100), stranger.Sign(f.text, 1))
	b := f.cosigned(f.sig("X2", 200), f.sig("X1", 50), flip1(f.sig("X3", 1)))
	merged, err := p.Merge(a, b)
	if err != nil {
		t.Fatal(err)
	}
	// The log's signature and the stranger's (from the first note) come
	// first, then X1 (the most recent, from a) and X2; X3's bad line is gone.
	want := string(f.cp) + stranger.Sign(f.text, 1) + f.sig("X1", 100) + f.sig("X2", 200)
	if diff := cmp.Diff(want, string(merged)); diff != "" {
		t.Errorf("Merge (-want +got):\n%s", diff)
	}
	if _, err := p.Check(merged); err != nil {
		t.Errorf("Check(merged): %v", err)
	}

	stripped, err := p.Strip(merged, lgv)
	if err != nil {
		t.Fatal(err)
	}
	want = string(f.cp) + f.sig("X1", 100) + f.sig("X2", 200)
	if diff := cmp.Diff(want, string(stripped)); diff != "" {
		t.Errorf("Strip (-want +got):\n%s", diff)
	}

	if _, err := p.Merge(a, f.lg.checkpoint(t, 43, hash32(9))); err == nil {
		t.Error("Merge of notes with different texts succeeded")
	}
	other := newTestLog(t, "localhost/kt")
	if _, err := p.Strip(merged, mustVerifier(t, other.vkey)); err == nil {
		t.Error("Strip keeping a verifier that signed nothing succeeded")
	}
	if _, err := p.Strip(f.cp); err == nil {
		t.Error("Strip that leaves no signature succeeded")
	}
}

// flip1 flips a bit in the signature of a signature line.
func flip1(line string) string {
	name, b64, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(line, "— "), "\n"), " ")
	raw, _ := base64.StdEncoding.DecodeString(b64)
	raw[len(raw)-1] ^= 1
	return "— " + name + " " + base64.StdEncoding.EncodeToString(raw) + "\n"
}

// BenchmarkCheck measures the client's cost of checking a checkpoint with
// three cosignatures against a 2-of-3 policy (three Ed25519 verifications).
func BenchmarkCheck(b *testing.B) {
	lg := newTestLog(b, "localhost/kt")
	cp := lg.checkpoint(b, 1<<20, hash32(1))
	text := noteText(cp)
	var defs, lines strings.Builder
	for i := range 3 {
		c := newCosigner(b, fmt.Sprintf("w%d.example", i))
		fmt.Fprintf(&defs, "witness W%d %s\n", i, c.VKey())
		lines.WriteString(c.Sign(text, 1700000000))
	}
	p, err := witness.ParsePolicy([]byte(defs.String() + "group g 2 W0 W1 W2\nquorum g\n"))
	if err != nil {
		b.Fatal(err)
	}
	signed := []byte(string(cp) + lines.String())
	for b.Loop() {
		if _, err := p.Check(signed); err != nil {
			b.Fatal(err)
		}
	}
}
