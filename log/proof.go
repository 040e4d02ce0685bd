package log

import (
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// VerifyInclusion checks an RFC 6962 inclusion proof of leafHash at index
// in a tree of size with root (transparency-dev/merkle), reporting a root
// mismatch with both roots in hex, as every other error does (the
// library prints them as decimal byte lists).
func VerifyInclusion(index, size uint64, leafHash []byte, p [][]byte, root []byte) error {
	return hexRoots(proof.VerifyInclusion(rfc6962.DefaultHasher, index, size, leafHash, p, root))
}

// VerifyConsistency checks an RFC 6962 consistency proof from size1 (root1)
// to size2 (root2), as VerifyInclusion does.
func VerifyConsistency(size1, size2 uint64, p [][]byte, root1, root2 []byte) error {
	return hexRoots(proof.VerifyConsistency(rfc6962.DefaultHasher, size1, size2, p, root1, root2))
}

// ErrRootMismatch is wrapped by the errors of VerifyInclusion and
// VerifyConsistency when the proof yields another root.
var ErrRootMismatch = errors.New("the proof yields another root")

func hexRoots(err error) error {
	var m proof.RootMismatchError
	if errors.As(err, &m) {
		return fmt.Errorf("%w: calculated root %x, expected %x", ErrRootMismatch, m.CalculatedRoot, m.ExpectedRoot)
	}
	return err
}
