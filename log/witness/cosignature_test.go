package witness_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/log/witness"
)

// sigLine parses a "— name base64" line into a note.Signature as note.Open
// would (the key hash taken from the first four bytes).
func sigLine(t testing.TB, line string) note.Signature {
	t.Helper()
	f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "— "))
	raw, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil || len(raw) < 4 {
		t.Fatalf("line %q", line)
	}
	return note.Signature{Name: f[0], Hash: binary.BigEndian.Uint32(raw), Base64: f[1]}
}

// TestParseCosignature breaks every field of a cosignature/v1 line once.
func TestParseCosignature(t *testing.T) {
	c := newCosigner(t, "w.example")
	const text = "log.example\n42\nAAAA\n"
	const ts = 1700000000
	good := sigLine(t, c.Sign(text, ts))
	raw, _ := base64.StdEncoding.DecodeString(good.Base64)

	gotTime, sig, err := witness.ParseCosignature(good)
	if err != nil || !gotTime.Equal(time.Unix(ts, 0)) || !bytes.Equal(sig, raw[4:]) {
		t.Fatalf("genuine line: %v, %v, %x", gotTime, err, sig)
	}
	// The returned bytes are what the witness's verifier checks.
	v, err := fnote.NewVerifierForCosignatureV1(c.VKey())
	if err != nil {
		t.Fatal(err)
	}
	if !v.Verify([]byte(text), sig) {
		t.Fatal("the timestamped signature returned does not verify")
	}

	with := func(b []byte) note.Signature {
		s := good
		s.Base64 = base64.StdEncoding.EncodeToString(b)
		return s
	}
	withTS := func(ts uint64) note.Signature {
		b := bytes.Clone(raw)
		binary.BigEndian.PutUint64(b[4:], ts)
		return with(b)
	}
	otherHash := good
	otherHash.Hash ^= 1
	for _, tc := range []struct {
		name string
		s    note.Signature
	}{
		{"not base64", note.Signature{Name: good.Name, Hash: good.Hash, Base64: "!!!!"}},
		{"empty", with(nil)},
		{"key hash only", with(raw[:4])},
		{"short key hash", with(raw[:3])},
		{"short timestamp", with(raw[:4+7])},
		{"timestamp only", with(raw[:4+8])},
		{"short signature", with(raw[:len(raw)-1])},
		{"long signature", with(append(bytes.Clone(raw), 0))},
		{"plain Ed25519 signature (no timestamp)", with(append(bytes.Clone(raw[:4]), raw[4+8:]...))},
		{"wrong key hash", otherHash},
		{"timestamp 2^63", withTS(1 << 63)},
		{"timestamp 2^64-1", withTS(math.MaxUint64)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := witness.ParseCosignature(tc.s); !errors.Is(err, witness.ErrMalformedCosignature) {
				t.Errorf("ParseCosignature: %v, want ErrMalformedCosignature", err)
			}
		})
	}

	// The largest timestamp allowed, and an ML-DSA-44-sized signature,
	// decode (they do not verify: that is the verifier's job).
	if got, _, err := witness.ParseCosignature(withTS(math.MaxInt64)); err != nil || got.Unix() != math.MaxInt64 {
		t.Errorf("timestamp 2^63-1: %v, %v", got, err)
	}
	mldsa := append(bytes.Clone(raw[:4+8]), make([]byte, 2420)...)
	if got, sig, err := witness.ParseCosignature(with(mldsa)); err != nil || !got.Equal(time.Unix(ts, 0)) || len(sig) != 8+2420 {
		t.Errorf("ML-DSA-44 size: %v, %d bytes, %v", got, len(sig), err)
	}
}

// FuzzParseCosignature: ParseCosignature never panics, and what it accepts
// has the cosignature/v1 shape and round-trips.
func FuzzParseCosignature(f *testing.F) {
	c := newCosigner(f, "w.example")
	good := sigLine(f, c.Sign("log.example\n1\nAAAA\n", 1700000000))
	raw, _ := base64.StdEncoding.DecodeString(good.Base64)
	f.Add(good.Hash, raw)
	f.Add(good.Hash, raw[:12])
	f.Add(uint32(0), []byte{})
	f.Fuzz(func(t *testing.T, hash uint32, b []byte) {
		s := note.Signature{Name: "w.example", Hash: hash, Base64: base64.StdEncoding.EncodeToString(b)}
		ts, sig, err := witness.ParseCosignature(s)
		if err != nil {
			if !errors.Is(err, witness.ErrMalformedCosignature) {
				t.Fatalf("error %v does not wrap ErrMalformedCosignature", err)
			}
			return
		}
		if binary.BigEndian.Uint32(b) != hash || !bytes.Equal(sig, b[4:]) || (len(sig) != 8+64 && len(sig) != 8+2420) {
			t.Fatalf("accepted %x (hash %08x) as %v, %x", b, hash, ts, sig)
		}
		if u := binary.BigEndian.Uint64(sig); u > math.MaxInt64 || ts.Unix() != int64(u) {
			t.Fatalf("timestamp %d decoded as %v", u, ts)
		}
	})
}
