package witness

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math/big"
	"testing"

	fnote "github.com/transparency-dev/formats/note"
)

// TestFastVerifierMatchesFormats checks that the expanded-key cosignature
// verifier gives the verdicts of transparency-dev/formats' verifier (Go's
// crypto/ed25519 underneath), including on a signature with a
// non-canonical S, which both must reject.
func TestFastVerifierMatchesFormats(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	const name = "w.example"
	vkeyRaw := append([]byte{algCosignatureEd25519}, pub...)
	fv0, err := fnote.NewVerifierForCosignatureV1(fmt.Sprintf("%s+00000000+%s", name, base64.StdEncoding.EncodeToString(vkeyRaw)))
	if err != nil {
		t.Fatal(err)
	}
	vkey := fmt.Sprintf("%s+%08x+%s", name, fv0.KeyHash(), base64.StdEncoding.EncodeToString(vkeyRaw))
	ref, err := fnote.NewVerifierForCosignatureV1(vkey)
	if err != nil {
		t.Fatal(err)
	}
	fast, _, err := cosignatureVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := fast.(*ed25519CosigVerifier); !ok || fast.Name() != ref.Name() || fast.KeyHash() != ref.KeyHash() {
		t.Fatalf("not the fast verifier, or another name or key hash")
	}
	text := []byte("log.example\n42\nAAAA\n")
	cosig := func(ts uint64, msg []byte) []byte {
		m := fmt.Appendf(nil, "cosignature/v1\ntime %d\n%s", ts, msg)
		return append(binary.BigEndian.AppendUint64(nil, ts), ed25519.Sign(priv, m)...)
	}
	good := cosig(1700000000, text)
	// S + L: the same signature with a non-canonical scalar.
	l, _ := new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)
	s := good[8+32:]
	le := make([]byte, 32)
	for i := range le {
		le[i] = s[31-i]
	}
	sl := new(big.Int).Add(new(big.Int).SetBytes(le), l).Bytes()
	nonCanon := append([]byte(nil), good[:8+32]...)
	for i := len(sl) - 1; i >= 0; i-- {
		nonCanon = append(nonCanon, sl[i])
	}
	for len(nonCanon) < 8+64 {
		nonCanon = append(nonCanon, 0)
	}
	flipped := append([]byte(nil), good...)
	flipped[20] ^= 1
	otherTime := append(binary.BigEndian.AppendUint64(nil, 1700000001), good[8:]...)
	for _, c := range []struct {
		name     string
		msg, sig []byte
	}{
		{"valid", text, good},
		{"other text", []byte("log.example\n43\nAAAA\n"), good},
		{"flipped", text, flipped},
		{"other timestamp", text, otherTime},
		{"non-canonical S", text, nonCanon},
		{"short", text, good[:70]},
		{"long", text, append(append([]byte(nil), good...), 0)},
		{"one-line text", []byte("x\n"), cosig(1, []byte("x\n"))},
	} {
		if got, want := fast.Verify(c.msg, c.sig), ref.Verify(c.msg, c.sig); got != want {
			t.Errorf("%s: fast verifier says %v, formats %v", c.name, got, want)
		}
	}
	if !fast.Verify(text, good) || fast.Verify(text, nonCanon) {
		t.Fatal("wrong verdicts")
	}
}
