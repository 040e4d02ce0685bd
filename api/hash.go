package api

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/transparency-dev/merkle/rfc6962"
)

// Commit returns the commitment to a value (a device set encoding) for the
// handle with the given VRF index at the given version:
//
//	SHA-256("kt/v1/commit" || 0x00 || opening || index || uint64 version || value)
//
// opening is 32 bytes from a cryptographic random source, fresh for every
// commitment: it hides the value (the log shows only the commitment) and
// the value is bound by SHA-256's collision resistance.
//
// SPEC(design.md 4.4)
func Commit(opening [32]byte, index [32]byte, version uint64, value []byte) [32]byte {
	h := sha256.New()
	var buf [len(commitLabel) + 1 + 32 + 32 + 8]byte
	b := appendLabel(buf[:0], commitLabel)
	b = append(b, opening[:]...)
	b = append(b, index[:]...)
	b = binary.BigEndian.AppendUint64(b, version)
	h.Write(b)
	h.Write(value)
	var c [32]byte
	h.Sum(c[:0])
	return c
}

// LeafHash returns the RFC 6962 leaf hash of a log entry,
// SHA-256(0x00 || entry): how the log's Merkle tree, the prev links of change
// records and the map's values refer to an entry.
//
// SPEC(design.md 5.2)
func LeafHash(entry []byte) [32]byte {
	return [32]byte(rfc6962.DefaultHasher.HashLeaf(entry))
}

// VRFInput returns the VRF input (RFC 9381 alpha) for a handle:
//
//	"kt/v1/handle" || 0x00 || handle
//
// handle must already be in canonical form (see [NormalizeHandle]); the
// function does not normalise, so that what is proved is exactly what was
// asked.
//
// SPEC(design.md 4.1)
func VRFInput(handle string) []byte {
	b := make([]byte, 0, len(handleLabel)+1+len(handle))
	b = appendLabel(b, handleLabel)
	return append(b, handle...)
}
