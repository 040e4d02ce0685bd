package api

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"testing"

	"github.com/oasisprotocol/curve25519-voi/curve"
	"github.com/oasisprotocol/curve25519-voi/curve/scalar"
	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// sigCase is one (key, message, signature) triple of the differential test.
type sigCase struct {
	kind string
	pub  [32]byte
	msg  []byte
	sig  [64]byte
}

func encodePoint(p *curve.EdwardsPoint) (b [32]byte) {
	var c curve.CompressedEdwardsY
	c.SetEdwardsPoint(p)
	return [32]byte(c)
}

func scalarBytes(t *testing.T, s *scalar.Scalar) (b [32]byte) {
	t.Helper()
	if err := s.ToBytes(b[:]); err != nil {
		t.Fatal(err)
	}
	return b
}

// challenge is k = SHA-512(R || A || msg) mod l.
func challenge(t *testing.T, r, a [32]byte, msg []byte) *scalar.Scalar {
	t.Helper()
	h := sha512.New()
	h.Write(r[:])
	h.Write(a[:])
	h.Write(msg)
	k, err := scalar.NewFromBytesModOrderWide(h.Sum(nil))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func randomScalar(t *testing.T) *scalar.Scalar {
	t.Helper()
	var s scalar.Scalar
	if _, err := s.SetRandom(rand.Reader); err != nil {
		t.Fatal(err)
	}
	return &s
}

// forge signs msg with secret scalar a and nonce r, but publishes the key
// encoding pubEnc and the nonce encoding rEnc, which need not be [a]B and
// [r]B: S = r + k·a with k over the published encodings, the signature a
// key holder can make for a key or nonce with a small-order component.
func forge(t *testing.T, a, r *scalar.Scalar, pubEnc, rEnc [32]byte, msg []byte) (sig [64]byte) {
	t.Helper()
	var s scalar.Scalar
	s.Mul(challenge(t, rEnc, pubEnc, msg), a)
	s.Add(&s, r)
	copy(sig[:32], rEnc[:])
	sb := scalarBytes(t, &s)
	copy(sig[32:], sb[:])
	return sig
}

// groupOrder is l, the order of the prime-order subgroup.
var groupOrder, _ = new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)

// fieldPrime is p = 2^255 - 19.
var fieldPrime = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))

func littleEndian(n *big.Int) (b [32]byte) {
	be := n.FillBytes(make([]byte, 32))
	for i := range b {
		b[i] = be[31-i]
	}
	return b
}

func fromLittleEndian(b [32]byte) *big.Int {
	be := slices.Clone(b[:])
	slices.Reverse(be)
	return new(big.Int).SetBytes(be)
}

// nonCanonicalEncodings returns the encodings y+p (y < 19, both sign bits)
// and the canonical y with the sign bit set where x = 0 (y = 1 and y = p-1):
// every non-canonical point encoding that decodes to a point.
func nonCanonicalEncodings() [][32]byte {
	var out [][32]byte
	for y := int64(0); y < 19; y++ {
		for _, sign := range []byte{0, 0x80} {
			b := littleEndian(new(big.Int).Add(big.NewInt(y), fieldPrime))
			b[31] |= sign
			out = append(out, b)
		}
	}
	for _, y := range []*big.Int{big.NewInt(1), new(big.Int).Sub(fieldPrime, big.NewInt(1))} {
		b := littleEndian(y)
		b[31] |= 0x80
		out = append(out, b)
	}
	return out
}

// edgeCases builds signatures of every kind on which Ed25519 verifiers are
// known to disagree ("Taming the many EdDSAs", Chalkias et al. 2020), plus
// ordinary valid and invalid ones.
func edgeCases(t *testing.T) []sigCase {
	t.Helper()
	var cs []sigCase
	add := func(kind string, pub [32]byte, msg []byte, sig [64]byte) {
		cs = append(cs, sigCase{kind, pub, slices.Clone(msg), sig})
	}
	torsion := curve.EIGHT_TORSION
	for i := range 16 {
		msg := fmt.Appendf(nil, "kt edge case %d", i)
		a, r := randomScalar(t), randomScalar(t)
		var A, R curve.EdwardsPoint
		A.MulBasepoint(curve.ED25519_BASEPOINT_TABLE, a)
		R.MulBasepoint(curve.ED25519_BASEPOINT_TABLE, r)
		pub, rEnc := encodePoint(&A), encodePoint(&R)

		// Valid, then tampered.
		sig := forge(t, a, r, pub, rEnc, msg)
		add("valid", pub, msg, sig)
		add("other message", pub, append(msg, '!'), sig)
		bad := sig
		bad[i%32] ^= 1
		add("flipped R bit", pub, msg, bad)
		bad = sig
		bad[32+i%32] ^= 1
		add("flipped S bit", pub, msg, bad)

		// S + l: the same equation, but S is not canonical. S | 0xe0
		// (top three bits set) too.
		sPlusL := littleEndian(new(big.Int).Add(fromLittleEndian([32]byte(sig[32:])), groupOrder))
		bad = sig
		copy(bad[32:], sPlusL[:])
		add("S+l", pub, msg, bad)
		bad = sig
		bad[63] |= 0xe0
		add("S high bits", pub, msg, bad)

		for j, T := range torsion {
			// R with a small-order component: only the cofactored
			// equation accepts it.
			var RT curve.EdwardsPoint
			RT.Add(&R, T)
			add(fmt.Sprintf("R+T%d", j), pub, msg, forge(t, a, r, pub, encodePoint(&RT), msg))
			// A with a small-order component: the cofactorless equation
			// holds only when [k]T is the identity.
			var AT curve.EdwardsPoint
			AT.Add(&A, T)
			add(fmt.Sprintf("A+T%d", j), encodePoint(&AT), msg, forge(t, a, r, encodePoint(&AT), rEnc, msg))
			// Both, with every torsion point on R: sometimes the
			// components cancel.
			for m, U := range torsion {
				RT.Add(&R, U)
				add(fmt.Sprintf("A+T%d R+T%d", j, m), encodePoint(&AT), msg, forge(t, a, r, encodePoint(&AT), encodePoint(&RT), msg))
			}
		}
	}

	// Small-order keys with small-order R and S = 0: [0]B - [k]A = R
	// holds for some pairs.
	for i, A := range torsion {
		for j, R := range torsion {
			for n := range 4 {
				msg := fmt.Appendf(nil, "small order %d", n)
				var sig [64]byte
				rEnc := encodePoint(R)
				copy(sig[:32], rEnc[:])
				add(fmt.Sprintf("small A%d R%d", i, j), encodePoint(A), msg, sig)
			}
		}
	}

	// Non-canonical encodings of A and R (they decode to small-order or
	// random points), with S = 0 and with a valid-looking S.
	nc := nonCanonicalEncodings()
	for i, enc := range nc {
		for j, T := range torsion {
			msg := fmt.Appendf(nil, "non-canonical %d %d", i, j)
			var sig [64]byte
			tEnc := encodePoint(T)
			copy(sig[:32], tEnc[:])
			add("non-canonical A", enc, msg, sig)
			copy(sig[:32], enc[:])
			add("non-canonical R, small A", tEnc, msg, sig)
		}
		// A non-canonical R that encodes [r]B's point would need y < 19;
		// instead sign honestly over the non-canonical R bytes.
		a, r := randomScalar(t), randomScalar(t)
		var A curve.EdwardsPoint
		A.MulBasepoint(curve.ED25519_BASEPOINT_TABLE, a)
		msg := fmt.Appendf(nil, "non-canonical R %d", i)
		add("non-canonical R, forged", encodePoint(&A), msg, forge(t, a, r, encodePoint(&A), enc, msg))
	}

	// Random bytes: most keys do not decode.
	for range 64 {
		var c sigCase
		rand.Read(c.pub[:])
		rand.Read(c.sig[:])
		c.sig[63] &= 0x0f // S < 2^252: often canonical
		add("random", c.pub, []byte("random"), c.sig)
	}

	// Keys and signatures from crypto/ed25519 itself.
	for i := range 16 {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		msg := fmt.Appendf(nil, "stdlib %d", i)
		add("stdlib", [32]byte(pub), msg, [64]byte(ed25519.Sign(priv, msg)))
	}
	return cs
}

// TestVerifyEd25519MatchesStdlib: VerifyEd25519 accepts exactly what
// crypto/ed25519.Verify accepts, on every edge case.
func TestVerifyEd25519MatchesStdlib(t *testing.T) {
	cases := edgeCases(t)
	outcomes := map[string][2]int{} // kind -> [rejected, accepted] by crypto/ed25519
	cofactoredOnly := 0
	for i, c := range cases {
		want := ed25519.Verify(c.pub[:], c.msg, c.sig[:])
		if got := VerifyEd25519(c.pub, c.msg, c.sig); got != want {
			t.Errorf("case %d (%s): VerifyEd25519 = %v, crypto/ed25519 = %v\npub %x\nsig %x\nmsg %q", i, c.kind, got, want, c.pub, c.sig, c.msg)
		}
		o := outcomes[c.kind]
		if want {
			o[1]++
		} else {
			o[0]++
		}
		outcomes[c.kind] = o
		// The cases must tell the cofactorless rules from the cofactored
		// ones (ZIP-215, FIPS 186-5, batch verification), or they would not
		// test the choice of rules.
		if !want && voi.VerifyWithOptions(voi.PublicKey(c.pub[:]), c.msg, c.sig[:], &voi.Options{Verify: voi.VerifyOptionsZIP_215}) {
			cofactoredOnly++
		}
	}
	accepted := 0
	for _, o := range outcomes {
		accepted += o[1]
	}
	t.Logf("%d cases, %d accepted by crypto/ed25519; %d of the rejected ones are accepted by the cofactored ZIP-215 rules", len(cases), accepted, cofactoredOnly)
	for kind, want := range map[string]string{
		"valid": "accepted", "stdlib": "accepted", "S+l": "rejected", "S high bits": "rejected",
		"R+T1": "rejected", "non-canonical R, forged": "rejected",
	} {
		o := outcomes[kind]
		if (want == "accepted" && o[0] != 0) || (want == "rejected" && o[1] != 0) || o[0]+o[1] == 0 {
			t.Errorf("%s cases: crypto/ed25519 [rejected accepted] = %v, want all %s", kind, o, want)
		}
	}
	// Signatures with a small-order component on A are accepted only
	// sometimes (when [k]T is the identity): both outcomes must occur over
	// all the torsion points, and small-order keys must occur with both.
	var mixedA, small [2]int
	for kind, o := range outcomes {
		var n, m int
		if _, err := fmt.Sscanf(kind, "A+T%d R+T%d", &n, &m); err == nil {
			mixedA[0] += o[0]
			mixedA[1] += o[1]
		}
		if _, err := fmt.Sscanf(kind, "small A%d R%d", &n, &m); err == nil {
			small[0] += o[0]
			small[1] += o[1]
		}
	}
	if mixedA[0] == 0 || mixedA[1] == 0 || small[0] == 0 || small[1] == 0 {
		t.Errorf("mixed-torsion cases [rejected accepted] %v, small-order cases %v: want both outcomes", mixedA, small)
	}
	if cofactoredOnly < 100 {
		t.Errorf("only %d cases separate the cofactored rules from crypto/ed25519's", cofactoredOnly)
	}
}

// TestVerifySignatureR1 checks that the change-record and account-key
// signature checks reject a signature that only the cofactored equation
// accepts, with the same typed error as any other bad signature.
func TestVerifySignatureR1(t *testing.T) {
	dev, k := testDevice("a", false)
	r, _, _ := testRecord(testSet(dev), 1, [32]byte{}, AuthEnroll, k)
	if err := r.VerifySignature(testOrigin); err != nil {
		t.Fatalf("valid record: %v", err)
	}
	// Re-sign with R replaced by R + T (T of order 8), over the same
	// statement, by a signer who knows the secret scalar.
	a := expandedSecret(t, k)
	rNonce := randomScalar(t)
	var R, RT curve.EdwardsPoint
	R.MulBasepoint(curve.ED25519_BASEPOINT_TABLE, rNonce)
	RT.Add(&R, curve.EIGHT_TORSION[1])
	sig := forge(t, a, rNonce, r.Signer, encodePoint(&RT), ChangeStatement(testOrigin, r))
	if !voi.VerifyWithOptions(voi.PublicKey(r.Signer[:]), ChangeStatement(testOrigin, r), sig[:], &voi.Options{Verify: voi.VerifyOptionsZIP_215}) {
		t.Fatal("the forged signature should pass the cofactored equation")
	}
	r.Signature = sig
	err := r.VerifySignature(testOrigin)
	var ae *AuthError
	if !errors.As(err, &ae) || ae.Rule != "R1 signature" || !errors.Is(err, ErrBadSignature) {
		t.Fatalf("VerifySignature = %v, want an R1 *AuthError wrapping ErrBadSignature", err)
	}
}

// expandedSecret returns the secret scalar of an Ed25519 private key
// (SHA-512 of the seed, clamped), as RFC 8032 5.1.5 derives it.
func expandedSecret(t *testing.T, k ed25519.PrivateKey) *scalar.Scalar {
	t.Helper()
	h := sha512.Sum512(k.Seed())
	h[0] &= 248
	h[31] &= 127
	h[31] |= 64
	s, err := scalar.NewFromBytesModOrder(h[:32])
	if err != nil {
		t.Fatal(err)
	}
	return s
}
