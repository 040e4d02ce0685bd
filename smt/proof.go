package smt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// MaxDepth is the largest number of siblings in a proof: one per key bit.
const MaxDepth = keyBits

var (
	// ErrMalformedProof reports a proof encoding that cannot be parsed:
	// truncated, trailing bytes, depth over 256, unknown terminal kind.
	ErrMalformedProof = errors.New("smt: malformed proof")
	// ErrNotCanonical reports a well-formed proof that is not the unique
	// proof the tree would produce: bitmap bits set beyond the depth, a
	// non-empty sibling equal to the empty hash, or a proof that does not
	// stop at the first subtree holding at most one leaf.
	ErrNotCanonical = errors.New("smt: non-canonical proof")
	// ErrWrongTerminal reports a proof whose terminal does not prove the
	// claim for this key: a membership claim answered with an absence proof
	// or the reverse, or an "other leaf" that is the key itself or is not on
	// the key's path.
	ErrWrongTerminal = errors.New("smt: proof terminal does not match the claim")
	// ErrRootMismatch reports a proof that does not lead to the expected
	// root. Errors wrapping it are of type [*RootMismatchError].
	ErrRootMismatch = errors.New("smt: proof does not match the root")
)

// RootMismatchError is the evidence of a failed verification: the key and
// the root the proof leads to, next to the root that was expected.
type RootMismatchError struct {
	Key      [HashSize]byte
	Want     [HashSize]byte
	Computed [HashSize]byte
}

func (e *RootMismatchError) Error() string {
	return fmt.Sprintf("smt: proof for key %x leads to root %x, want %x", e.Key, e.Computed, e.Want)
}

// Unwrap makes errors.Is(err, ErrRootMismatch) hold.
func (e *RootMismatchError) Unwrap() error { return ErrRootMismatch }

// Terminal says what the subtree at the end of a proof's path holds.
type Terminal uint8

const (
	// TerminalLeaf: the key's own leaf (membership). Its value is not in the
	// proof; the verifier supplies it.
	TerminalLeaf Terminal = 0
	// TerminalEmpty: an empty subtree (absence).
	TerminalEmpty Terminal = 1
	// TerminalOtherLeaf: a single leaf for another key sharing the path
	// (absence); its key and value are in the proof.
	TerminalOtherLeaf Terminal = 2
)

func (t Terminal) String() string {
	switch t {
	case TerminalLeaf:
		return "leaf"
	case TerminalEmpty:
		return "empty"
	case TerminalOtherLeaf:
		return "other-leaf"
	}
	return fmt.Sprintf("Terminal(%d)", uint8(t))
}

// Proof is a membership or absence proof for one key.
//
// Wire format (all integers big-endian):
//
//	uint16  depth d, the number of siblings (at most 256)
//	[ceil(d/8)]byte  bitmap: bit i (byte i/8, mask 0x80>>(i%8)) is set iff
//	        the sibling at depth i is non-empty; bits from d on are zero
//	[32]byte × popcount(bitmap)  the non-empty siblings, root side first
//	uint8   terminal kind: 0 leaf, 1 empty, 2 other leaf
//	[32]byte key, [32]byte value  only for kind 2
//
// The sibling at depth i is the hash of the subtree whose path is the key's
// first i bits followed by the complement of bit i.
type Proof struct {
	// Siblings has one entry per level, root side first; an all-zero entry
	// is an empty sibling (which is exactly its hash).
	Siblings [][HashSize]byte
	Terminal Terminal
	// OtherKey and OtherValue are the leaf of a TerminalOtherLeaf proof;
	// zero otherwise.
	OtherKey, OtherValue [HashSize]byte
}

// check enforces the key-independent rules of a canonical proof.
//
// SPEC(design.md 8.2 step 1)
// SPEC(design.md 8.2 step 2)
func (p *Proof) check() error {
	d := len(p.Siblings)
	if d > MaxDepth {
		return fmt.Errorf("%w: depth %d exceeds %d", ErrMalformedProof, d, MaxDepth)
	}
	switch p.Terminal {
	case TerminalLeaf, TerminalEmpty:
		if p.OtherKey != zeroHash || p.OtherValue != zeroHash {
			return fmt.Errorf("%w: %v terminal carries a leaf", ErrNotCanonical, p.Terminal)
		}
	case TerminalOtherLeaf:
	default:
		return fmt.Errorf("%w: unknown terminal kind %d", ErrMalformedProof, uint8(p.Terminal))
	}
	// SPEC: a proof stops at the first subtree on the path holding at most
	// one leaf, so the subtree above it holds at least two: the last
	// sibling is never empty. (Otherwise the proof should have stopped one
	// level higher; a verifier that accepted it would accept two encodings.)
	if d > 0 && p.Siblings[d-1] == zeroHash {
		return fmt.Errorf("%w: empty sibling at the last level", ErrNotCanonical)
	}
	return nil
}

// MarshalBinary encodes p in the wire format. It fails for a proof that
// ParseProof would reject.
func (p *Proof) MarshalBinary() ([]byte, error) {
	return p.AppendBinary(make([]byte, 0, p.Size()))
}

// AppendBinary appends the encoding of p to b.
//
// SPEC(design.md 8.1)
func (p *Proof) AppendBinary(b []byte) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	d := len(p.Siblings)
	b = binary.BigEndian.AppendUint16(b, uint16(d))
	bm := len(b)
	b = append(b, make([]byte, (d+7)/8)...)
	for i := range p.Siblings {
		if p.Siblings[i] != zeroHash {
			b[bm+i/8] |= 0x80 >> uint(i%8)
			b = append(b, p.Siblings[i][:]...)
		}
	}
	b = append(b, byte(p.Terminal))
	if p.Terminal == TerminalOtherLeaf {
		b = append(b, p.OtherKey[:]...)
		b = append(b, p.OtherValue[:]...)
	}
	return b, nil
}

// Size returns the length of the encoding of p.
func (p *Proof) Size() int {
	n := 2 + (len(p.Siblings)+7)/8 + 1
	for i := range p.Siblings {
		if p.Siblings[i] != zeroHash {
			n += HashSize
		}
	}
	if p.Terminal == TerminalOtherLeaf {
		n += 2 * HashSize
	}
	return n
}

// ParseProof decodes a proof strictly: the input must be exactly one
// canonical encoding. Errors wrap ErrMalformedProof or ErrNotCanonical.
//
// SPEC(design.md 8.1)
// SPEC(design.md 8.2 step 1)
func ParseProof(b []byte) (*Proof, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: truncated depth", ErrMalformedProof)
	}
	d := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if d > MaxDepth {
		return nil, fmt.Errorf("%w: depth %d exceeds %d", ErrMalformedProof, d, MaxDepth)
	}
	nbm := (d + 7) / 8
	if len(b) < nbm {
		return nil, fmt.Errorf("%w: truncated bitmap", ErrMalformedProof)
	}
	bitmap := b[:nbm]
	b = b[nbm:]
	if d%8 != 0 && bitmap[nbm-1]&(0xff>>uint(d%8)) != 0 {
		return nil, fmt.Errorf("%w: bitmap bits set beyond depth %d", ErrNotCanonical, d)
	}
	n := 0
	for _, x := range bitmap {
		n += bits.OnesCount8(x)
	}
	if len(b) < n*HashSize {
		return nil, fmt.Errorf("%w: truncated siblings", ErrMalformedProof)
	}
	p := &Proof{Siblings: make([][HashSize]byte, d)}
	for i := range d {
		if bitmap[i/8]&(0x80>>uint(i%8)) == 0 {
			continue
		}
		copy(p.Siblings[i][:], b)
		b = b[HashSize:]
		if p.Siblings[i] == zeroHash {
			return nil, fmt.Errorf("%w: sibling %d marked non-empty but is the empty hash", ErrNotCanonical, i)
		}
	}
	if len(b) < 1 {
		return nil, fmt.Errorf("%w: missing terminal", ErrMalformedProof)
	}
	p.Terminal = Terminal(b[0])
	b = b[1:]
	switch p.Terminal {
	case TerminalLeaf, TerminalEmpty:
	case TerminalOtherLeaf:
		if len(b) < 2*HashSize {
			return nil, fmt.Errorf("%w: truncated terminal leaf", ErrMalformedProof)
		}
		copy(p.OtherKey[:], b)
		copy(p.OtherValue[:], b[HashSize:])
		b = b[2*HashSize:]
	default:
		return nil, fmt.Errorf("%w: unknown terminal kind %d", ErrMalformedProof, uint8(p.Terminal))
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformedProof, len(b))
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	return p, nil
}

// Verify checks that p proves, under root, that key maps to *value
// (membership) or, if value is nil, that key is absent.
//
// Errors wrap ErrMalformedProof or ErrNotCanonical (a proof the tree cannot
// produce), ErrWrongTerminal (the proof is about something else than the
// claim) or ErrRootMismatch (as a [*RootMismatchError], carrying the
// computed root).
//
// SPEC(design.md 8.2 step 5)
func Verify(root, key [HashSize]byte, value *[HashSize]byte, p *Proof) error {
	if p == nil {
		return fmt.Errorf("%w: nil proof", ErrMalformedProof)
	}
	computed, err := p.root(&key, value)
	if err != nil {
		return err
	}
	if computed != root {
		return &RootMismatchError{Key: key, Want: root, Computed: computed}
	}
	return nil
}

// root checks the proof's shape against the claim and returns the root it
// leads to.
//
// SPEC(design.md 8.2 step 3)
// SPEC(design.md 8.2 step 4)
func (p *Proof) root(key, value *[HashSize]byte) ([HashSize]byte, error) {
	if err := p.check(); err != nil {
		return zeroHash, err
	}
	d := len(p.Siblings)
	var h [HashSize]byte
	switch p.Terminal {
	case TerminalLeaf:
		if value == nil {
			return zeroHash, fmt.Errorf("%w: absence claimed, proof shows membership", ErrWrongTerminal)
		}
		h = LeafHash(key, value)
	case TerminalEmpty:
		if value != nil {
			return zeroHash, fmt.Errorf("%w: membership claimed, proof shows an empty subtree", ErrWrongTerminal)
		}
	case TerminalOtherLeaf:
		if value != nil {
			return zeroHash, fmt.Errorf("%w: membership claimed, proof shows another leaf", ErrWrongTerminal)
		}
		if p.OtherKey == *key {
			return zeroHash, fmt.Errorf("%w: the other leaf is the key itself", ErrWrongTerminal)
		}
		// SPEC: the other leaf must share the first d bits with the key,
		// or it is not in the subtree the path leads to.
		if !samePrefix(&p.OtherKey, key, d) {
			return zeroHash, fmt.Errorf("%w: the other leaf is not on the key's path", ErrWrongTerminal)
		}
		h = LeafHash(&p.OtherKey, &p.OtherValue)
	}
	for i := d - 1; i >= 0; i-- {
		if bit(key, i) == 0 {
			h = NodeHash(&h, &p.Siblings[i])
		} else {
			h = NodeHash(&p.Siblings[i], &h)
		}
	}
	return h, nil
}
