package api

import (
	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// stdLibRules selects curve25519-voi's verification rules that match Go's
// crypto/ed25519: the cofactorless equation [S]B - [k]A = R compared on
// R's encoding (so a non-canonical R fails), S must be canonical (below
// the group order), and small-order or non-canonically encoded A and
// small-order R are accepted, as crypto/ed25519 accepts them.
var stdLibRules = &voi.Options{Verify: voi.VerifyOptionsStdLib}

// VerifyEd25519 reports whether sig is a valid Ed25519 signature (RFC 8032,
// pure) of msg under pub, by the rules of crypto/ed25519.Verify
// (docs/design.md 4). It uses curve25519-voi, which is faster on amd64
// (see BenchmarkVerifyEd25519); TestVerifyEd25519MatchesStdlib checks
// that it agrees with crypto/ed25519 on valid signatures and on every kind
// of edge case: non-canonical S, R and A encodings, small-order R and A,
// and keys and signatures with a small-order component that only the
// cofactored equation accepts.
//
// Every signature the directory accepts (R1 and the account signature)
// and every one a client or auditor checks in these packages goes through
// this function or through crypto/ed25519 itself, so all parties accept
// exactly the same signatures.
//
// SPEC(design.md 4)
func VerifyEd25519(pub [32]byte, msg []byte, sig [64]byte) bool {
	return voi.VerifyWithOptions(voi.PublicKey(pub[:]), msg, sig[:], stdLibRules)
}
