// Package smt is the verifiable map of the key transparency directory: a
// sparse Merkle tree over 256-bit keys (VRF indices) with 32-byte values
// (RFC 6962 leaf hashes of each handle's latest change record).
//
// # Tree
//
// SPEC (docs/design.md, "Map"): keys are read MSB first, bit 0 selects the
// left subtree. The hash of a subtree is
//
//   - 32 zero bytes if it holds no leaf;
//   - SHA-256(0x00 || key || value) if it holds exactly one leaf, at whatever
//     height (the single leaf is not pushed down to depth 256);
//   - SHA-256(0x01 || left || right) otherwise.
//
// The map root is the hash of the whole tree.
//
// # Proofs
//
// A [Proof] for a key lists the siblings along the key's path from the root
// down to the first subtree on that path holding at most one leaf, and says
// what that subtree holds: the key's own leaf (membership), nothing, or one
// other leaf (both absence). Verification ([Verify]) is a pure function of
// the root, the key, the claimed value and the proof.
//
// # Building
//
// [Map] holds the leaves and cached interior hashes, applies an epoch's
// updates as a batch ([Map.Apply]) and proves lookups ([Map.Prove]). Versions
// are immutable ([Snapshot]), so proofs for a published epoch can be served
// while the next epoch is being applied.
package smt

import (
	"crypto/sha256"
)

// HashSize is the size of keys, values and hashes.
const HashSize = 32

const (
	leafPrefix = 0x00
	nodePrefix = 0x01
	keyBits    = 256
)

var zeroHash [HashSize]byte

// LeafHash returns the hash of a subtree holding exactly one leaf:
// SHA-256(0x00 || key || value).
//
// SPEC(design.md 8)
func LeafHash(key, value *[HashSize]byte) [HashSize]byte {
	var b [1 + 2*HashSize]byte
	b[0] = leafPrefix
	copy(b[1:], key[:])
	copy(b[1+HashSize:], value[:])
	return sha256.Sum256(b[:])
}

// NodeHash returns the hash of a subtree holding at least two leaves:
// SHA-256(0x01 || left || right).
//
// SPEC(design.md 8)
func NodeHash(left, right *[HashSize]byte) [HashSize]byte {
	var b [1 + 2*HashSize]byte
	b[0] = nodePrefix
	copy(b[1:], left[:])
	copy(b[1+HashSize:], right[:])
	return sha256.Sum256(b[:])
}

// bit returns bit i of key, counting from the most significant bit of key[0].
//
// SPEC(design.md 8)
func bit(key *[HashSize]byte, i int) int {
	return int(key[i>>3]>>(7-uint(i&7))) & 1
}

// samePrefix reports whether a and b agree on their first n bits.
func samePrefix(a, b *[HashSize]byte, n int) bool {
	full := n >> 3
	for i := range full {
		if a[i] != b[i] {
			return false
		}
	}
	if rem := n & 7; rem != 0 {
		mask := byte(0xff << (8 - uint(rem)))
		return (a[full]^b[full])&mask == 0
	}
	return true
}
