package vrf

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// rfc9381B4 holds the ECVRF-EDWARDS25519-SHA512-ELL2 examples of RFC 9381,
// Appendix B.4 (Examples 19, 20 and 21; keys from RFC 8032 Section 7.1).
// The same values appear in draft-irtf-cfrg-vrf-13 Appendix A.4 and in
// curve25519-voi's own tests of its post-draft-11 semantics.
var rfc9381B4 = []struct {
	name  string
	sk    string
	pk    string
	alpha string
	pi    string
	beta  string
}{
	{
		name:  "example 19, empty alpha",
		sk:    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
		pk:    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
		alpha: "",
		pi:    "7d9c633ffeee27349264cf5c667579fc583b4bda63ab71d001f89c10003ab46f14adf9a3cd8b8412d9038531e865c341cafa73589b023d14311c331a9ad15ff2fb37831e00f0acaa6d73bc9997b06501",
		beta:  "9d574bf9b8302ec0fc1e21c3ec5368269527b87b462ce36dab2d14ccf80c53cccf6758f058c5b1c856b116388152bbe509ee3b9ecfe63d93c3b4346c1fbc6c54",
	},
	{
		name:  "example 20, alpha 72",
		sk:    "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
		pk:    "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
		alpha: "72",
		pi:    "47b327393ff2dd81336f8a2ef10339112401253b3c714eeda879f12c509072ef055b48372bb82efbdce8e10c8cb9a2f9d60e93908f93df1623ad78a86a028d6bc064dbfc75a6a57379ef855dc6733801",
		beta:  "38561d6b77b71d30eb97a062168ae12b667ce5c28caccdf76bc88e093e4635987cd96814ce55b4689b3dd2947f80e59aac7b7675f8083865b46c89b2ce9cc735",
	},
	{
		name:  "example 21, alpha af82",
		sk:    "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
		pk:    "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
		alpha: "af82",
		pi:    "926e895d308f5e328e7aa159c06eddbe56d06846abf5d98c2512235eaa57fdce35b46edfc655bc828d44ad09d1150f31374e7ef73027e14760d42e77341fe05467bb286cc2c9d7fde29120a0b2320d04",
		beta:  "121b7f9b9aaaa29099fc04a94ba52784d44eac976dd1a3cca458733be5cd090a7b5fbd148444f17f8daf1fb55cb04b1ae85a626e30a54b4b0f8abf4a43314a58",
	},
}

// handleInput is the protocol's VRF input for a handle (api.VRFInput, not imported
// here to keep this package free of protocol dependencies).
func handleInput(handle string) []byte { return []byte("kt/v1/handle\x00" + handle) }

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRFC9381Vectors(t *testing.T) {
	for _, tc := range rfc9381B4 {
		t.Run(tc.name, func(t *testing.T) {
			sk, err := NewPrivateKey(unhex(t, tc.sk))
			if err != nil {
				t.Fatal(err)
			}
			if got := sk.Public().Bytes(); !bytes.Equal(got, unhex(t, tc.pk)) {
				t.Fatalf("public key = %x, want %s", got, tc.pk)
			}
			alpha := unhex(t, tc.alpha)
			wantIndex := unhex(t, tc.beta)[:IndexSize]

			index, proof := sk.Prove(alpha)
			if !bytes.Equal(proof, unhex(t, tc.pi)) {
				t.Errorf("proof = %x, want %s", proof, tc.pi)
			}
			if !bytes.Equal(index[:], wantIndex) {
				t.Errorf("index = %x, want %x", index, wantIndex)
			}

			pk, err := NewPublicKey(unhex(t, tc.pk))
			if err != nil {
				t.Fatal(err)
			}
			vindex, err := pk.Verify(alpha, unhex(t, tc.pi))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !bytes.Equal(vindex[:], wantIndex) {
				t.Errorf("verified index = %x, want %x", vindex, wantIndex)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	sk, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	alpha := handleInput("mailto:alice@example.com")
	_, proof := sk.Prove(alpha)
	pk := sk.Public()
	if _, err := pk.Verify(alpha, proof); err != nil {
		t.Fatalf("valid proof rejected: %v", err)
	}

	t.Run("every bit flipped", func(t *testing.T) {
		for i := range len(proof) * 8 {
			bad := bytes.Clone(proof)
			bad[i/8] ^= 1 << (i % 8)
			if _, err := pk.Verify(alpha, bad); !errors.Is(err, ErrInvalidProof) {
				t.Fatalf("bit %d flipped: err = %v, want ErrInvalidProof", i, err)
			}
		}
	})
	cases := []struct {
		name  string
		pk    *PublicKey
		alpha []byte
		proof []byte
	}{
		{"wrong key", other.Public(), alpha, proof},
		{"wrong alpha", pk, handleInput("mailto:bob@example.com"), proof},
		{"alpha without domain", pk, []byte("mailto:alice@example.com"), proof},
		{"truncated", pk, alpha, proof[:ProofSize-1]},
		{"extended", pk, alpha, append(bytes.Clone(proof), 0)},
		{"empty", pk, alpha, nil},
		{"all zero", pk, alpha, make([]byte, ProofSize)},
		{"all ff", pk, alpha, bytes.Repeat([]byte{0xff}, ProofSize)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			index, err := tc.pk.Verify(tc.alpha, tc.proof)
			if !errors.Is(err, ErrInvalidProof) {
				t.Fatalf("err = %v, want ErrInvalidProof", err)
			}
			if index != ([IndexSize]byte{}) {
				t.Errorf("index %x returned with an error", index)
			}
		})
	}
}

func TestDistinctHandles(t *testing.T) {
	sk, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := sk.Prove(handleInput("tel:+15551234567"))
	b, _ := sk.Prove(handleInput("tel:+15551234568"))
	a2, _ := sk.Prove(handleInput("tel:+15551234567"))
	if a == b {
		t.Error("two handles got the same index")
	}
	if a != a2 {
		t.Error("Prove is not deterministic")
	}
}

func TestKeyText(t *testing.T) {
	sk, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	text, err := sk.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(text), "kt-vrf-private:") {
		t.Fatalf("private text %q", text)
	}
	sk2, err := ParsePrivateKey(string(text) + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sk2.Seed(), sk.Seed()) || !sk2.Public().Equal(sk.Public()) {
		t.Fatal("private key did not round-trip")
	}

	pub := sk.Public().String()
	if !strings.HasPrefix(pub, "kt-vrf-public:") {
		t.Fatalf("public text %q", pub)
	}
	var pk PublicKey
	if err := pk.UnmarshalText([]byte(pub)); err != nil {
		t.Fatal(err)
	}
	if !pk.Equal(sk.Public()) {
		t.Fatal("public key did not round-trip")
	}

	// A proof made with the parsed private key verifies with the parsed public key.
	idx, proof := sk2.Prove([]byte("x"))
	if got, err := pk.Verify([]byte("x"), proof); err != nil || got != idx {
		t.Fatalf("Verify after round trip: %x, %v", got, err)
	}

	seedB64 := strings.TrimPrefix(string(text), "kt-vrf-private:")
	pubB64 := strings.TrimPrefix(pub, "kt-vrf-public:")
	// Identity point (small order) and a non-canonical y (p itself, 2^255-19).
	identity := "kt-vrf-public:AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	nonCanonical := "kt-vrf-public:7f///////////////////////////////////////38="
	bad := []struct {
		name  string
		parse func(string) error
		in    string
	}{
		{"private with public prefix", privParse, "kt-vrf-public:" + seedB64},
		{"private without prefix", privParse, seedB64},
		{"private short", privParse, "kt-vrf-private:AAAA"},
		{"private long", privParse, "kt-vrf-private:" + seedB64[:len(seedB64)-1] + "AAAA"},
		{"private unpadded", privParse, "kt-vrf-private:" + strings.TrimRight(seedB64, "=")},
		{"private embedded newline", privParse, "kt-vrf-private:" + seedB64[:10] + "\n" + seedB64[10:]},
		{"public with private prefix", pubParse, "kt-vrf-private:" + pubB64},
		{"public bad base64", pubParse, "kt-vrf-public:!!!!"},
		{"public empty", pubParse, ""},
		{"public small order", pubParse, identity},
		{"public non-canonical", pubParse, nonCanonical},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.parse(tc.in); !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("err = %v, want ErrInvalidKey", err)
			}
		})
	}
	if _, err := NewPublicKey(make([]byte, 31)); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("31-byte public key: err = %v", err)
	}
	if _, err := NewPrivateKey(make([]byte, 33)); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("33-byte seed: err = %v", err)
	}
}

func privParse(s string) error { _, err := ParsePrivateKey(s); return err }
func pubParse(s string) error  { _, err := ParsePublicKey(s); return err }

func TestGenerateKeyReadError(t *testing.T) {
	if _, err := GenerateKey(bytes.NewReader(make([]byte, 5))); err == nil {
		t.Fatal("GenerateKey with a short reader succeeded")
	}
}

func BenchmarkProve(b *testing.B) {
	sk, err := GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	alpha := handleInput("mailto:someone@example.com")
	for b.Loop() {
		sk.Prove(alpha)
	}
}

func BenchmarkVerify(b *testing.B) {
	sk, err := GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	alpha := handleInput("mailto:someone@example.com")
	_, proof := sk.Prove(alpha)
	pk := sk.Public()
	for b.Loop() {
		if _, err := pk.Verify(alpha, proof); err != nil {
			b.Fatal(err)
		}
	}
}

// rotationStatement mirrors api.RotationStatement for a test record body.
func rotationStatement(origin string, body []byte) []byte {
	b := []byte(RotationLabel)
	b = append(b, byte(len(origin)>>8), byte(len(origin)))
	b = append(b, origin...)
	return append(b, body...)
}

// TestRotationProof: a proof of possession by the key verifies (control);
// each part broken on its own fails with its typed error.
func TestRotationProof(t *testing.T) {
	oldKey, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	stmt := rotationStatement("example.com/kt", bytes.Repeat([]byte{7}, 75))
	proof, err := oldKey.ProveRotation(stmt)
	if err != nil {
		t.Fatal(err)
	}
	pub := [PublicKeySize]byte(oldKey.Public().Bytes())
	if err := VerifyRotationProof(pub, stmt, proof); err != nil {
		t.Fatalf("control: honest proof refused: %v", err)
	}

	wrongKey := [PublicKeySize]byte(other.Public().Bytes())
	if err := VerifyRotationProof(wrongKey, stmt, proof); !errors.Is(err, ErrInvalidProof) {
		t.Errorf("proof by another key: %v, want ErrInvalidProof", err)
	}
	changed := bytes.Clone(stmt)
	changed[len(changed)-1] ^= 1
	if err := VerifyRotationProof(pub, changed, proof); !errors.Is(err, ErrInvalidProof) {
		t.Errorf("other statement: %v, want ErrInvalidProof", err)
	}
	bad := bytes.Clone(proof)
	bad[40] ^= 1
	if err := VerifyRotationProof(pub, stmt, bad); !errors.Is(err, ErrInvalidProof) {
		t.Errorf("changed proof: %v, want ErrInvalidProof", err)
	}
	if err := VerifyRotationProof(pub, stmt, proof[:79]); !errors.Is(err, ErrInvalidProof) {
		t.Errorf("short proof: %v, want ErrInvalidProof", err)
	}
	// The identity point encodes as 1 followed by zeros: small order.
	var small [PublicKeySize]byte
	small[0] = 1
	if err := VerifyRotationProof(small, stmt, proof); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("small-order key: %v, want ErrInvalidKey", err)
	}

	// Domain separation: a handle's lookup proof is not a rotation proof,
	// and the key holder's prover refuses to make one over a handle input.
	_, handleProof := oldKey.Prove(handleInput("tel:+14155550100"))
	if err := VerifyRotationProof(pub, handleInput("tel:+14155550100"), handleProof); !errors.Is(err, ErrNotRotationStatement) {
		t.Errorf("handle proof as rotation proof: %v, want ErrNotRotationStatement", err)
	}
	if _, err := oldKey.ProveRotation(handleInput("tel:+14155550100")); !errors.Is(err, ErrNotRotationStatement) {
		t.Errorf("ProveRotation over a handle input: %v, want ErrNotRotationStatement", err)
	}
}
