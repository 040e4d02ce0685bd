package logapi

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/proof"

	"github.com/keytrans/kt/log"
)

// HashSize is the size of every hash in a proof: SHA-256.
const HashSize = 32

// ErrMalformed reports a response body (or bundle) that does not follow the
// wire format: bad framing, a wrong number of hashes, a body over its limit.
// The client wraps it with what was wrong; test with errors.Is.
var ErrMalformed = errors.New("logapi: malformed response")

// AppendEntries appends entries to b in the entry-bundle framing and returns
// the extended buffer.
//
// SPEC(tlog-tiles): "Entry bundles are sequences of big-endian uint16
// length-prefixed log entries."
//
// SPEC(design.md 10)
func AppendEntries(b []byte, entries [][]byte) ([]byte, error) {
	for i, e := range entries {
		if len(e) == 0 || len(e) > log.MaxEntrySize {
			return nil, fmt.Errorf("entry %d has %d bytes, want 1 to %d", i, len(e), log.MaxEntrySize)
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(e)))
		b = append(b, e...)
	}
	return b, nil
}

// ParseEntries parses a body in the entry-bundle framing. The body must be
// consumed exactly: a truncated length prefix or entry is an error, and so is
// an empty entry (no log accepts one, see [log.CheckEntries]). The returned
// entries alias b.
//
// SPEC(design.md 10)
func ParseEntries(b []byte) ([][]byte, error) {
	var entries [][]byte
	for off := 0; off < len(b); {
		if len(b)-off < 2 {
			return nil, fmt.Errorf("%w: entry %d: truncated length prefix (%d trailing bytes)", ErrMalformed, len(entries), len(b)-off)
		}
		n := int(binary.BigEndian.Uint16(b[off:]))
		off += 2
		if n == 0 {
			return nil, fmt.Errorf("%w: entry %d is empty", ErrMalformed, len(entries))
		}
		if len(b)-off < n {
			return nil, fmt.Errorf("%w: entry %d: length %d but only %d bytes left", ErrMalformed, len(entries), n, len(b)-off)
		}
		entries = append(entries, b[off:off+n:off+n])
		off += n
	}
	return entries, nil
}

// ParseHashes splits a body of concatenated 32-byte hashes. The returned
// hashes alias b.
func ParseHashes(b []byte) ([][]byte, error) {
	if len(b)%HashSize != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not a whole number of %d-byte hashes", ErrMalformed, len(b), HashSize)
	}
	hashes := make([][]byte, 0, len(b)/HashSize)
	for off := 0; off < len(b); off += HashSize {
		hashes = append(hashes, b[off:off+HashSize:off+HashSize])
	}
	return hashes, nil
}

// appendHashes concatenates hashes, checking that each has HashSize bytes.
func appendHashes(b []byte, hashes [][]byte) ([]byte, error) {
	for i, h := range hashes {
		if len(h) != HashSize {
			return nil, fmt.Errorf("hash %d has %d bytes, want %d", i, len(h), HashSize)
		}
		b = append(b, h...)
	}
	return b, nil
}

// InclusionProofSize is the number of hashes in the RFC 6962 inclusion proof
// for the leaf at index in a tree of size leaves. It requires index < size.
func InclusionProofSize(index, size uint64) (int, error) {
	n, err := proof.Inclusion(index, size)
	if err != nil {
		return 0, err
	}
	return proofSize(n), nil
}

// ConsistencyProofSize is the number of hashes in the RFC 6962 consistency
// proof between trees of sizes oldSize and newSize. It requires
// 0 < oldSize <= newSize.
func ConsistencyProofSize(oldSize, newSize uint64) (int, error) {
	if oldSize == 0 {
		return 0, errors.New("consistency proof from the empty tree")
	}
	n, err := proof.Consistency(oldSize, newSize)
	if err != nil {
		return 0, err
	}
	return proofSize(n), nil
}

// proofSize counts the hashes of a proof: the node IDs, with the nodes that
// make up the ephemeral node (at most one) collapsed into that one hash, as
// [proof.Nodes.Rehash] does.
func proofSize(n proof.Nodes) int {
	_, begin, end := n.Ephem()
	if end > begin {
		return len(n.IDs) - (end - begin) + 1
	}
	return len(n.IDs)
}
