package log

import (
	"errors"
	"strings"
	"testing"

	"github.com/transparency-dev/merkle/rfc6962"
)

// TestProofErrorsInHex: a root mismatch names both roots in hex, not as
// decimal byte lists; other proof errors pass through.
func TestProofErrorsInHex(t *testing.T) {
	h := rfc6962.DefaultHasher
	a, b := h.HashLeaf([]byte("a")), h.HashLeaf([]byte("b"))
	root := h.HashChildren(a, b)
	if err := VerifyInclusion(0, 2, a, [][]byte{b}, root); err != nil {
		t.Fatalf("control: %v", err)
	}
	wrong := make([]byte, 32)
	err := VerifyInclusion(0, 2, a, [][]byte{b}, wrong)
	if !errors.Is(err, ErrRootMismatch) || !strings.Contains(err.Error(), "expected 0000000000") || strings.Contains(err.Error(), "[") {
		t.Errorf("inclusion root mismatch: %v", err)
	}
	err = VerifyConsistency(1, 2, [][]byte{b}, a, wrong)
	if !errors.Is(err, ErrRootMismatch) || strings.Contains(err.Error(), "[") {
		t.Errorf("consistency root mismatch: %v", err)
	}
	if err := VerifyConsistency(1, 2, nil, a, root); err == nil || errors.Is(err, ErrRootMismatch) {
		t.Errorf("a proof of the wrong length: %v", err)
	}
}
