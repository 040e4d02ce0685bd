// Package evidence is the evidence of a key transparency log's
// misbehaviour (docs/design.md sections 15 and 15.1) in two formats: the
// kt-evidence/v1 split-view (fork) bundle, and the kt-evidence/v2 bundle of
// log entries that break the rules of the log. Anyone can check a bundle
// offline with the log's parameters alone ([Check], both versions); an
// auditor, a client or ktctl builds one from what it holds and a proof
// source ([Build] for v1, [BuildRecords], [BuildMapRegression],
// [BuildVersionConflict] and [BuildMapRoot] for v2). [Parse] reads both
// versions into a [Bundle]; its Marshal writes them back byte for byte.
//
// # kt-evidence/v1 (kind fork)
//
//	kt-evidence/v1
//	checkpoint <base64 of checkpoint note A>
//	checkpoint <base64 of checkpoint note B>
//	proof <base64 hash>              (zero or more lines)
//
// Every line ends with a newline; base64 is the standard padded alphabet,
// canonical; nothing else may appear. A.size ≤ B.size, and when the sizes
// are equal A's root sorts before B's (so that a given fork has one
// bundle). The bundle proves a fork iff:
//
//   - A.size = B.size, A.root ≠ B.root, and there are no proof lines; or
//   - 0 < A.size < B.size and the proof lines, an RFC 9162 consistency
//     proof from A.size to B.size computed in tree B, with the hash of B's
//     subtree [0, A.size) prepended when A.size is a power of two, make the
//     RFC 9162 section 2.1.4.2 algorithm (without its step 2, which
//     prepends the old root) end with sn = 0 and sr = B.root but
//     fr ≠ A.root.
//
// sr = B.root makes the proof's hashes genuine nodes of tree B (collision
// resistance), so fr is tree B's root at size A.size, which differs from
// A's root: the log signed two trees of which neither extends the other.
//
// # kt-evidence/v2
//
//	kt-evidence/v2
//	kind <records|map-regression|version-conflict|map-root>
//	checkpoint <base64 note C>           (exactly one; signed by the log key)
//	entry <log index> <base64 entry>     (one or more, increasing log index)
//	inclusion <base64 hash>              (its inclusion proof in C, 0-129 lines)
//	map-proof <base64 smt proof>         (after an epoch entry, for the kinds with maps)
//	value <base64 change record>|absent  (the value the map proof proves)
//
// The same line rules as v1; the index is canonical decimal; at most
// [MaxSizeV2] bytes in all, [MaxCheckpointSize] for C and [MaxItemSize]
// for an entry, a map proof or a value. Either every epoch entry of a
// bundle has a map-proof (then value) line or none has. The verifier
// checks C's log signature, every entry's inclusion proof in C, and every
// map proof against the map root of the epoch record it follows, at the
// key x, the VRF index of the first value's record (a map value is
// LeafHash of the record). Then, per kind:
//
//   - records: one or two change records of one VRF index. One record A
//     proves a violation iff api.CheckChange fails for it with no previous
//     state when A.Version = 1; for a later version only the rules that
//     need no previous record count (R1 signature, R6 recovery signed by a
//     key that is not the recovery key, R4 kind). Two records A (earlier)
//     and B prove one iff B.Version ≤ A.Version (two records for one
//     version, or a version going back), or B.Version = A.Version + 1 and
//     api.CheckChange(A.State, B) fails (which includes B.Prev ≠ LeafHash(A)).
//   - map-regression: epoch records E1 < E2 with map proofs for x. Proves
//     misbehaviour iff value1 is a record R1 (of index x) and value2 is
//     absent, a record of another index, an earlier version, or another
//     record of the same version: a later map must hold, for every key,
//     the same record or a later version.
//   - version-conflict: an epoch record E whose map holds R1 at x, and a
//     logged change record R2 (any log index) of index x and R1's version
//     with another leaf hash: either two records for one version are
//     logged, or E's map is not derived from the log.
//   - map-root: one epoch record E at index j. It claims that E's map root
//     or size is not the map of entries [0, j); Check verifies only the
//     signature and inclusion and reports that a replay is needed (ktctl
//     evidence verify replays). Clients do not refuse a log on it alone.
//
// A bundle that verifies but shows no misbehaviour (an honest history, or
// one that only a replay could judge) is ErrNotEvidence.
package evidence

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math/bits"
	"strings"

	fmtlog "github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/log"
)

// Header is the first line of a bundle.
const Header = "kt-evidence/v1"

// Limits that bound the work and memory a hostile bundle can cause.
const (
	// MaxCheckpointSize bounds each checkpoint note (as the read API does).
	MaxCheckpointSize = 64 << 10
	// MaxProofHashes bounds the proof lines: an RFC 9162 consistency proof
	// between trees below 2^64 has fewer than 128 hashes, plus one
	// prepended hash.
	MaxProofHashes = 129
	// MaxSize bounds a whole encoded bundle.
	MaxSize = 2*(len("checkpoint \n")+(MaxCheckpointSize+2)/3*4) + MaxProofHashes*(len("proof \n")+44) + len(Header) + 1
)

// Errors returned by Parse, Verify and Build; test with errors.Is.
var (
	// ErrMalformed: the bundle is not exactly a kt-evidence/v1 encoding.
	ErrMalformed = errors.New("evidence: malformed bundle")
	// ErrCheckpoint: a checkpoint does not parse or is not signed by the
	// log key.
	ErrCheckpoint = errors.New("evidence: checkpoint not valid for the log key")
	// ErrOrder: the checkpoints are not in the canonical order.
	ErrOrder = errors.New("evidence: checkpoints out of order")
	// ErrProof: the proof is not a consistency proof in tree B (wrong
	// length, sr ≠ B.root or sn ≠ 0), so it proves nothing.
	ErrProof = errors.New("evidence: proof does not verify in tree B")
	// ErrNoFork: the checkpoints are consistent; there is nothing to prove.
	ErrNoFork = errors.New("evidence: checkpoints are consistent")
)

// Bundle is a decoded bundle of either version. A kt-evidence/v1 (fork)
// bundle uses A, B and Proof (Kind is "" or [KindFork]); a kt-evidence/v2
// bundle uses Kind, Checkpoint, Entries and Maps.
type Bundle struct {
	// A and B are the signed checkpoint notes of a fork bundle, as signed
	// (with cosignatures); Proof holds its proof lines as they appear.
	A, B  []byte
	Proof [][]byte

	// Kind is the kind of a kt-evidence/v2 bundle.
	Kind Kind
	// Checkpoint is the v2 bundle's checkpoint note C, signed by the log.
	Checkpoint []byte
	// Entries are the log entries, in increasing log index, each with its
	// inclusion proof in C.
	Entries []Entry
	// Maps holds one map proof and value per epoch entry, in the order of
	// the epoch entries, for the kinds that carry map proofs (none for the
	// others).
	Maps []MapValue
}

// isV2 reports whether b is a kt-evidence/v2 bundle.
func (b *Bundle) isV2() bool { return b.Kind != "" && b.Kind != KindFork }

// Fork is what a valid bundle proves.
type Fork struct {
	Origin string
	A, B   *fmtlog.Checkpoint
	// RootAtA is tree B's root at size A.Size, which differs from A.Hash.
	RootAtA []byte
}

func (f *Fork) String() string {
	return fmt.Sprintf("fork of %s: size %d root %x vs size %d root %x (tree B's root at %d is %x)", f.Origin, f.A.Size, f.A.Hash, f.B.Size, f.B.Hash, f.A.Size, f.RootAtA)
}

var b64 = base64.StdEncoding.Strict()

// Parse decodes a bundle of either version strictly, by its first line.
// It checks only the encoding; use [Check] (either version) or
// [Bundle.Verify] (v1) to check what it proves.
//
// SPEC(design.md 15)
// SPEC(design.md 15.1)
func Parse(raw []byte) (*Bundle, error) {
	if bytes.HasPrefix(raw, []byte(HeaderV2+"\n")) {
		return parseV2(raw)
	}
	return parseV1(raw)
}

// SPEC(design.md 15)
func parseV1(raw []byte) (*Bundle, error) {
	if len(raw) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(raw), MaxSize)
	}
	if len(raw) == 0 || raw[len(raw)-1] != '\n' {
		return nil, fmt.Errorf("%w: does not end with a newline", ErrMalformed)
	}
	lines := strings.Split(string(raw[:len(raw)-1]), "\n")
	if lines[0] != Header {
		return nil, fmt.Errorf("%w: first line is not %q", ErrMalformed, Header)
	}
	if len(lines) < 3 {
		return nil, fmt.Errorf("%w: fewer than two checkpoints", ErrMalformed)
	}
	if len(lines)-3 > MaxProofHashes {
		return nil, fmt.Errorf("%w: more than %d proof lines", ErrMalformed, MaxProofHashes)
	}
	b := &Bundle{Kind: KindFork}
	for i, l := range lines[1:] {
		word, val, ok := strings.Cut(l, " ")
		want := "proof"
		if i < 2 {
			want = "checkpoint"
		}
		if !ok || word != want {
			return nil, fmt.Errorf("%w: line %d is not a %s line", ErrMalformed, i+2, want)
		}
		d, err := b64.DecodeString(val)
		if err != nil || b64.EncodeToString(d) != val {
			return nil, fmt.Errorf("%w: line %d: not canonical base64", ErrMalformed, i+2)
		}
		switch {
		case i < 2 && (len(d) == 0 || len(d) > MaxCheckpointSize):
			return nil, fmt.Errorf("%w: line %d: checkpoint of %d bytes", ErrMalformed, i+2, len(d))
		case i == 0:
			b.A = d
		case i == 1:
			b.B = d
		case len(d) != sha256.Size:
			return nil, fmt.Errorf("%w: line %d: hash of %d bytes", ErrMalformed, i+2, len(d))
		default:
			b.Proof = append(b.Proof, d)
		}
	}
	return b, nil
}

// Marshal encodes the bundle: as kt-evidence/v2 when Kind is a v2 kind,
// else as kt-evidence/v1. It encodes what it is given; a v2 bundle whose
// maps do not match its epoch entries (see [Bundle]) encodes to bytes that
// [Parse] rejects.
//
// SPEC(design.md 15)
// SPEC(design.md 15.1)
func (b *Bundle) Marshal() []byte {
	if b.isV2() {
		return b.marshalV2()
	}
	var s strings.Builder
	s.WriteString(Header + "\n")
	for _, n := range [][]byte{b.A, b.B} {
		s.WriteString("checkpoint " + b64.EncodeToString(n) + "\n")
	}
	for _, h := range b.Proof {
		s.WriteString("proof " + b64.EncodeToString(h) + "\n")
	}
	return []byte(s.String())
}

// Verify parses raw and verifies it with the log's note verifier key,
// whose name is the log's origin.
//
// SPEC(design.md 15)
func Verify(raw []byte, logKey note.Verifier) (*Fork, error) {
	b, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	return b.Verify(logKey)
}

// Verify checks that b proves a fork of the log whose note verifier is
// logKey (named by the log's origin). It needs nothing else.
//
// SPEC(design.md 15)
func (b *Bundle) Verify(logKey note.Verifier) (*Fork, error) {
	if b.isV2() {
		return nil, fmt.Errorf("%w: a %s bundle is not a fork bundle (use Check)", ErrMalformed, b.Kind)
	}
	origin := logKey.Name()
	a, err := parse(b.A, origin, logKey)
	if err != nil {
		return nil, err
	}
	bb, err := parse(b.B, origin, logKey)
	if err != nil {
		return nil, err
	}
	f := &Fork{Origin: origin, A: a, B: bb}
	switch {
	case a.Size > bb.Size:
		return nil, fmt.Errorf("%w: A has size %d, B %d", ErrOrder, a.Size, bb.Size)
	case a.Size == bb.Size:
		if len(b.Proof) != 0 {
			return nil, fmt.Errorf("%w: proof lines with two checkpoints of one size", ErrMalformed)
		}
		switch c := bytes.Compare(a.Hash, bb.Hash); {
		case c == 0:
			return nil, fmt.Errorf("%w: same size and root", ErrNoFork)
		case c > 0:
			return nil, fmt.Errorf("%w: with equal sizes A's root must sort first", ErrOrder)
		}
		f.RootAtA = bb.Hash
		return f, nil
	case a.Size == 0:
		return nil, fmt.Errorf("%w: every tree extends the empty tree", ErrNoFork)
	}
	fr, sr, err := roots(a.Size, bb.Size, b.Proof)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(sr, bb.Hash) {
		return nil, fmt.Errorf("%w: the proof yields root %x for B, not %x", ErrProof, sr, bb.Hash)
	}
	if bytes.Equal(fr, a.Hash) {
		return nil, fmt.Errorf("%w: tree B at size %d has A's root", ErrNoFork, a.Size)
	}
	f.RootAtA = fr
	return f, nil
}

func parse(n []byte, origin string, v note.Verifier) (*fmtlog.Checkpoint, error) {
	cp, _, err := log.ParseCheckpoint(n, origin, v)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	return cp, nil
}

func hashChildren(l, r []byte) []byte { return rfc6962.DefaultHasher.HashChildren(l, r) }

// roots runs the RFC 9162 section 2.1.4.2 algorithm from step 3 on path,
// 0 < m < n, and returns fr and sr. It fails (ErrProof) where the
// algorithm fails other than by the final root comparisons: an empty path,
// sn reaching 0 too early, or sn ≠ 0 at the end.
//
// SPEC(design.md 15)
func roots(m, n uint64, path [][]byte) (fr, sr []byte, err error) {
	// SPEC(RFC 9162 2.1.4.2): "If consistency_path is an empty array, stop
	// and fail the proof verification."
	if len(path) == 0 {
		return nil, nil, fmt.Errorf("%w: no proof", ErrProof)
	}
	// Step 3: "Set fn to first - 1 and sn to second - 1."
	fn, sn := m-1, n-1
	// Step 4: "If LSB(fn) is set, then right-shift both fn and sn equally
	// until LSB(fn) is not set."
	for fn&1 == 1 {
		fn >>= 1
		sn >>= 1
	}
	// Step 5: "Set both fr and sr to the first value in the
	// consistency_path array."
	fr, sr = path[0], path[0]
	// Step 6.
	for _, c := range path[1:] {
		// 6a: "If sn is 0, then stop the iteration and fail the proof
		// verification."
		if sn == 0 {
			return nil, nil, fmt.Errorf("%w: proof too long", ErrProof)
		}
		// 6b: "If LSB(fn) is set, or if fn is equal to sn, then: set fr to
		// HASH(0x01 || c || fr), set sr to HASH(0x01 || c || sr); if
		// LSB(fn) is not set, then right-shift both fn and sn equally
		// until either LSB(fn) is set or fn is 0."
		if fn&1 == 1 || fn == sn {
			fr = hashChildren(c, fr)
			sr = hashChildren(c, sr)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			// 6c: "Otherwise: set sr to HASH(0x01 || sr || c)."
			sr = hashChildren(sr, c)
		}
		// 6d: "Finally, right-shift both fn and sn one time."
		fn >>= 1
		sn >>= 1
	}
	// Step 7 (the part that does not compare roots): "sn is 0".
	if sn != 0 {
		return nil, nil, fmt.Errorf("%w: proof too short", ErrProof)
	}
	return fr, sr, nil
}

// ProofSource serves proofs and entries in one tree (tree B's view of the
// log). A log.Reader is one.
type ProofSource interface {
	Entries(ctx context.Context, start, end uint64) ([][]byte, error)
	InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error)
	ConsistencyProof(ctx context.Context, oldSize, newSize uint64) ([][]byte, error)
}

// Build returns the bundle that proves that checkpoint notes x and y, both
// of the log whose verifier is logKey, are a fork, in either order. When
// their sizes differ, src must serve the larger one's tree; its proofs are
// checked, and Build fails with ErrProof if src serves another tree (src
// may then be in the smaller checkpoint's view: ask the other side) and
// ErrNoFork if x and y are consistent. The returned bundle verifies.
//
// SPEC(design.md 15)
func Build(ctx context.Context, logKey note.Verifier, x, y []byte, src ProofSource) (*Bundle, error) {
	origin := logKey.Name()
	cx, err := parse(x, origin, logKey)
	if err != nil {
		return nil, err
	}
	cy, err := parse(y, origin, logKey)
	if err != nil {
		return nil, err
	}
	if cx.Size > cy.Size || (cx.Size == cy.Size && bytes.Compare(cx.Hash, cy.Hash) > 0) {
		x, y, cx, cy = y, x, cy, cx
	}
	b := &Bundle{A: bytes.Clone(x), B: bytes.Clone(y)}
	if cx.Size < cy.Size {
		if cx.Size == 0 {
			return nil, fmt.Errorf("%w: every tree extends the empty tree", ErrNoFork)
		}
		p, err := src.ConsistencyProof(ctx, cx.Size, cy.Size)
		if err != nil {
			return nil, fmt.Errorf("evidence: consistency proof %d to %d: %w", cx.Size, cy.Size, err)
		}
		if bits.OnesCount64(cx.Size) == 1 {
			sub, err := subtreeRoot(ctx, src, cx.Size, cy)
			if err != nil {
				return nil, err
			}
			p = append([][]byte{sub}, p...)
		}
		b.Proof = p
	}
	if _, err := b.Verify(logKey); err != nil {
		return nil, err
	}
	return b, nil
}

// subtreeRoot returns the root of tree B's subtree [0, m), m a power of
// two below B's size: the last leaf of the subtree hashed up with the first
// log2(m) hashes of its inclusion proof, after that proof is checked
// against B's root.
//
// SPEC(design.md 15)
func subtreeRoot(ctx context.Context, src ProofSource, m uint64, cb *fmtlog.Checkpoint) ([]byte, error) {
	es, err := src.Entries(ctx, m-1, m)
	if err != nil || len(es) != 1 {
		return nil, fmt.Errorf("evidence: entry %d: %w (%d entries)", m-1, err, len(es))
	}
	p, err := src.InclusionProof(ctx, m-1, cb.Size)
	if err != nil {
		return nil, fmt.Errorf("evidence: inclusion proof of %d in %d: %w", m-1, cb.Size, err)
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(es[0])
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, m-1, cb.Size, leaf, p, cb.Hash); err != nil {
		return nil, fmt.Errorf("%w: the source's inclusion proof is not in tree B: %w", ErrProof, err)
	}
	k := bits.TrailingZeros64(m)
	if len(p) < k {
		return nil, fmt.Errorf("%w: inclusion proof too short", ErrProof)
	}
	h := leaf
	for _, s := range p[:k] {
		h = hashChildren(s, h)
	}
	return h, nil
}
