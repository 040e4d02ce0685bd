package api

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// testRotation returns an honest rotation of an Ed25519 key of kind k from
// the key labelled old to the key labelled new.
func testRotation(t testing.TB, k KeyKind, seq uint64, old, new string) *RotationRecord {
	t.Helper()
	oldPriv, _ := testKey(old)
	newPriv, _ := testKey(new)
	r := &RotationRecord{Kind: k, Sequence: seq}
	if err := r.SignRotation(testOrigin, oldPriv, newPriv); err != nil {
		t.Fatal(err)
	}
	return r
}

// rotationGoldenCases pins the rotation record of design.md 5.1 and its
// statement (4.3). The VRF case has placeholder proofs: this package only
// parses them; the vrf package verifies.
func rotationGoldenCases() []goldenCase {
	logRot := testRotation(&testing.T{}, KeyLog, 1, "log", "log 2")
	recRot := testRotation(&testing.T{}, KeyRecovery, 2, "recovery 2", "recovery 3")
	vrfRot := &RotationRecord{Kind: KeyVRF, Sequence: 1, OldKey: seeded32("vrf old"), NewKey: seeded32("vrf new"),
		OldProof: seeded("vrf old proof", 80), NewProof: seeded("vrf new proof", 80)}
	parse := func(b []byte) (any, error) { return ParseRotationRecord(b) }
	return []goldenCase{
		{"rotation-log", "rotation record: log signing key, sequence 1, from key \"log\" to key \"log 2\", signed by both", mustMarshal(logRot), parse, logRot},
		{"rotation-recovery", "rotation record: recovery key, sequence 2, from key \"recovery 2\" to key \"recovery 3\", signed by both", mustMarshal(recRot), parse, recRot},
		{"rotation-vrf-format", "rotation record: VRF key, sequence 1; the keys and 80-byte proofs are placeholders (format only)", mustMarshal(vrfRot), parse, vrfRot},
		{"statement-rotation", "RotationStatement(\"example.com/kt\", rotation-log)", RotationStatement(testOrigin, logRot), nil, nil},
	}
}

func TestRotationRecordSizes(t *testing.T) {
	for _, c := range []struct {
		k    KeyKind
		size int
	}{{KeyLog, 203}, {KeyVRF, 235}, {KeyRecovery, 203}, {0, 0}, {4, 0}} {
		if got := RotationRecordSize(c.k); got != c.size {
			t.Errorf("RotationRecordSize(%v) = %d, want %d", c.k, got, c.size)
		}
	}
	b := mustMarshal(testRotation(t, KeyLog, 1, "a", "b"))
	if len(b) != 203 {
		t.Errorf("encoded log rotation is %d bytes, want 203", len(b))
	}
	e, err := ParseEntry(b)
	if err != nil {
		t.Fatal(err)
	}
	if e.Type() != TypeRotation || e.Type().String() != "rotation" {
		t.Errorf("ParseEntry type %v", e.Type())
	}
}

// TestParseRotationRecordMalformed breaks each format rule of design.md 5.1
// once; the control is the unmodified record, which parses.
func TestParseRotationRecordMalformed(t *testing.T) {
	good := mustMarshal(testRotation(t, KeyLog, 1, "a", "b"))
	if _, err := ParseRotationRecord(good); err != nil {
		t.Fatalf("control: %v", err)
	}
	set := func(off int, v ...byte) []byte {
		b := bytes.Clone(good)
		copy(b[off:], v)
		return b
	}
	// a VRF-sized record relabelled as kind 1: 32 trailing bytes
	vrfAsLog := mustMarshal(&RotationRecord{Kind: KeyVRF, Sequence: 1, OldKey: seeded32("x"), NewKey: seeded32("y"), OldProof: make([]byte, 80), NewProof: make([]byte, 80)})
	vrfAsLog[2] = byte(KeyLog)
	sameKeys := bytes.Clone(good)
	copy(sameKeys[43:75], good[11:43])
	for _, c := range []struct {
		name string
		b    []byte
		off  int
	}{
		{"empty", nil, 0},
		{"version", set(0, 0x02), 0},
		{"type", set(1, 0x02), 1},
		{"kind 0", set(2, 0), 2},
		{"kind 4", set(2, 4), 2},
		{"sequence 0", set(3, 0, 0, 0, 0, 0, 0, 0, 0), 3},
		{"same keys", sameKeys, 43},
		{"truncated", good[:len(good)-1], 139},
		{"trailing", append(bytes.Clone(good), 0), 203},
		{"kind 2 with 64-byte proofs", set(2, byte(KeyVRF)), 155},
		{"kind 1 with 80-byte proofs", vrfAsLog, 203},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseRotationRecord(c.b)
			var fe *FormatError
			if !errors.As(err, &fe) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want a *FormatError", err)
			}
			if fe.Offset != c.off {
				t.Errorf("offset %d, want %d (%v)", fe.Offset, c.off, err)
			}
			if _, err := ParseEntry(c.b); !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseEntry: got %v, want ErrMalformed", err)
			}
		})
	}
}

func TestRotationMarshalRejects(t *testing.T) {
	good := testRotation(t, KeyLog, 1, "a", "b")
	for name, mod := range map[string]func(r *RotationRecord){
		"kind":      func(r *RotationRecord) { r.Kind = 9 },
		"sequence":  func(r *RotationRecord) { r.Sequence = 0 },
		"same keys": func(r *RotationRecord) { r.NewKey = r.OldKey },
		"old proof": func(r *RotationRecord) { r.OldProof = r.OldProof[:63] },
		"new proof": func(r *RotationRecord) { r.NewProof = append(bytes.Clone(r.NewProof), 0) },
	} {
		r := *good
		mod(&r)
		if _, err := r.MarshalBinary(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: MarshalBinary got %v, want ErrMalformed", name, err)
		}
		if err := VerifyRotation(testOrigin, &r, nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: VerifyRotation got %v, want ErrMalformed", name, err)
		}
	}
}

// TestVerifyRotation breaks each proof and each chain rule once and expects
// the typed error naming it; the control is the honest record.
func TestVerifyRotation(t *testing.T) {
	_, oldPub := testKey("a")
	chain := RotationChain{Kind: KeyRecovery, Key: oldPub}
	good := testRotation(t, KeyRecovery, 1, "a", "b")
	next, err := chain.Next(testOrigin, good, nil)
	if err != nil {
		t.Fatalf("control: %v", err)
	}
	if next.Key != good.NewKey || next.Sequence != 1 || next.Kind != KeyRecovery {
		t.Fatalf("chain after the rotation: %+v", next)
	}
	// A second rotation continues from the new key.
	if _, err := next.Next(testOrigin, testRotation(t, KeyRecovery, 2, "b", "c"), nil); err != nil {
		t.Fatalf("second rotation: %v", err)
	}

	flip := func(b []byte) []byte { b = bytes.Clone(b); b[5] ^= 1; return b }
	otherOld, _ := testKey("mallory")
	newPriv, _ := testKey("b")
	forgedOld := &RotationRecord{Kind: KeyRecovery, Sequence: 1}
	_ = forgedOld.SignRotation(testOrigin, otherOld, newPriv) // signed by a key that is not current
	for _, c := range []struct {
		name   string
		chain  RotationChain
		r      *RotationRecord
		origin string
		rule   Rule
		sig    bool
	}{
		{"old proof", chain, &RotationRecord{Kind: good.Kind, Sequence: 1, OldKey: good.OldKey, NewKey: good.NewKey, OldProof: flip(good.OldProof), NewProof: good.NewProof}, testOrigin, RuleRotationOldProof, true},
		{"new proof", chain, &RotationRecord{Kind: good.Kind, Sequence: 1, OldKey: good.OldKey, NewKey: good.NewKey, OldProof: good.OldProof, NewProof: flip(good.NewProof)}, testOrigin, RuleRotationNewProof, true},
		{"other origin", chain, good, "other.example/kt", RuleRotationOldProof, true},
		{"skipped sequence", chain, testRotation(t, KeyRecovery, 2, "a", "b"), testOrigin, RuleRotationSequence, false},
		{"replayed sequence", next, good, testOrigin, RuleRotationSequence, false},
		{"old key not current", chain, forgedOld, testOrigin, RuleRotationOldKey, false},
		{"other kind", chain, testRotation(t, KeyLog, 1, "a", "b"), testOrigin, RuleRotationKind, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.chain.Next(c.origin, c.r, nil)
			var re *RotationError
			if !errors.As(err, &re) || !errors.Is(err, ErrBadRotation) {
				t.Fatalf("got %v, want a *RotationError", err)
			}
			if re.Rule != c.rule {
				t.Errorf("rule %q, want %q (%v)", re.Rule, c.rule, err)
			}
			if errors.Is(err, ErrBadSignature) != c.sig {
				t.Errorf("errors.Is(ErrBadSignature) = %v, want %v", !c.sig, c.sig)
			}
			if diff := cmp.Diff(c.chain, got); diff != "" {
				t.Errorf("chain changed on error:\n%s", diff)
			}
		})
	}
}

// TestVerifyRotationVRFHook checks that kind 2 goes to the VRF verifier with
// the statement as alpha, and fails without one.
func TestVerifyRotationVRFHook(t *testing.T) {
	r := &RotationRecord{Kind: KeyVRF, Sequence: 1, OldKey: seeded32("o"), NewKey: seeded32("n"), OldProof: seeded("op", 80), NewProof: seeded("np", 80)}
	if err := VerifyRotation(testOrigin, r, nil); !errors.Is(err, ErrBadRotation) {
		t.Fatalf("no verifier: got %v, want ErrBadRotation", err)
	}
	var calls int
	ok := func(pub [32]byte, alpha, proof []byte) error {
		calls++
		if !bytes.Equal(alpha, RotationStatement(testOrigin, r)) {
			t.Errorf("alpha is not the rotation statement")
		}
		if (pub == r.OldKey && !bytes.Equal(proof, r.OldProof)) || (pub == r.NewKey && !bytes.Equal(proof, r.NewProof)) {
			t.Errorf("proof passed with the wrong key")
		}
		return nil
	}
	if err := VerifyRotation(testOrigin, r, ok); err != nil || calls != 2 {
		t.Fatalf("control: %v, %d calls", err, calls)
	}
	bad := errors.New("bad proof")
	failNew := func(pub [32]byte, alpha, proof []byte) error {
		if pub == r.NewKey {
			return bad
		}
		return nil
	}
	err := VerifyRotation(testOrigin, r, failNew)
	var re *RotationError
	if !errors.As(err, &re) || re.Rule != RuleRotationNewProof || !errors.Is(err, bad) {
		t.Fatalf("got %v, want RuleRotationNewProof wrapping the verifier's error", err)
	}
}
