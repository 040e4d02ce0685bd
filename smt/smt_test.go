package smt

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// The reference implementation: the spec, written as directly as possible,
// on unsorted leaf sets, with its own hashing. It is slow and obviously
// right; the fast Map must agree with it byte for byte.

func refLeafHash(l Leaf) [32]byte {
	b := append([]byte{0x00}, l.Key[:]...)
	return sha256.Sum256(append(b, l.Value[:]...))
}

func refBit(k [32]byte, i int) int { return int(k[i/8]>>(7-i%8)) & 1 }

func refSplit(ls []Leaf, depth int) (left, right []Leaf) {
	for _, l := range ls {
		if refBit(l.Key, depth) == 0 {
			left = append(left, l)
		} else {
			right = append(right, l)
		}
	}
	return left, right
}

// refNode is a node of the reference tree: the full binary trie down to
// the subtrees holding at most one leaf, each with its hash per the spec.
type refNode struct {
	count       int
	leaf        Leaf // if count == 1
	hash        [32]byte
	left, right *refNode
}

func refBuild(ls []Leaf, depth int) *refNode {
	n := &refNode{count: len(ls)}
	switch len(ls) {
	case 0: // hash stays 32 zero bytes
	case 1:
		n.leaf = ls[0]
		n.hash = refLeafHash(ls[0])
	default:
		left, right := refSplit(ls, depth)
		n.left, n.right = refBuild(left, depth+1), refBuild(right, depth+1)
		b := append([]byte{0x01}, n.left.hash[:]...)
		n.hash = sha256.Sum256(append(b, n.right.hash[:]...))
	}
	return n
}

func refHash(ls []Leaf, depth int) [32]byte { return refBuild(ls, depth).hash }

func refProve(n *refNode, key [32]byte) (*Proof, *[32]byte) {
	p := &Proof{Siblings: [][32]byte{}}
	for depth := 0; ; depth++ {
		switch n.count {
		case 0:
			p.Terminal = TerminalEmpty
			return p, nil
		case 1:
			if n.leaf.Key == key {
				p.Terminal = TerminalLeaf
				v := n.leaf.Value
				return p, &v
			}
			p.Terminal = TerminalOtherLeaf
			p.OtherKey, p.OtherValue = n.leaf.Key, n.leaf.Value
			return p, nil
		}
		if refBit(key, depth) == 0 {
			p.Siblings = append(p.Siblings, n.right.hash)
			n = n.left
		} else {
			p.Siblings = append(p.Siblings, n.left.hash)
			n = n.right
		}
	}
}

// refSet returns the leaves of a reference leaf set (a Go map).
func refSet(m map[[32]byte][32]byte) []Leaf {
	ls := make([]Leaf, 0, len(m))
	for k, v := range m {
		ls = append(ls, Leaf{k, v})
	}
	return ls
}

func randKey(r *rand.Rand) (k [32]byte) {
	for i := 0; i < 32; i += 8 {
		x := r.Uint64()
		for j := range 8 {
			k[i+j] = byte(x >> (8 * j))
		}
	}
	return k
}

func randLeaves(r *rand.Rand, n int) []Leaf {
	ls := make([]Leaf, n)
	for i := range ls {
		ls[i] = Leaf{randKey(r), randKey(r)}
	}
	return ls
}

// probeKeys returns keys worth proving against ls: every present key (or a
// sample), random absent keys, and keys sharing long prefixes with present
// keys (which end in an "other leaf" or deep "empty" terminal).
func probeKeys(r *rand.Rand, ls []Leaf, max int) [][32]byte {
	var ks [][32]byte
	for i, l := range ls {
		if i >= max {
			break
		}
		ks = append(ks, l.Key)
		near := l.Key
		near[31] ^= 1 << uint(r.IntN(8))
		ks = append(ks, near)
		mid := l.Key
		mid[r.IntN(4)] ^= 1 << uint(r.IntN(8))
		ks = append(ks, mid)
	}
	for range 20 {
		ks = append(ks, randKey(r))
	}
	return append(ks, [32]byte{}, [32]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
}

// checkAgainstRef compares a snapshot with the reference for the set ls.
func checkAgainstRef(t *testing.T, s *Snapshot, ls []Leaf, probes [][32]byte) {
	t.Helper()
	ref := refBuild(ls, 0)
	root := ref.hash
	if got := s.Root(); got != root {
		t.Fatalf("root = %x, reference %x", got, root)
	}
	if got := s.Len(); got != uint64(len(ls)) {
		t.Fatalf("Len = %d, want %d", got, len(ls))
	}
	vals := make(map[[32]byte][32]byte, len(ls))
	for _, l := range ls {
		vals[l.Key] = l.Value
	}
	for _, k := range probes {
		want, wantVal := refProve(ref, k)
		got, gotVal := s.Prove(k)
		// go-cmp is slow on thousands of hashes: compare directly, diff
		// only to explain a failure.
		if !proofsEqual(want, got) {
			t.Fatalf("proof for %x differs from the reference (-ref +got):\n%s", k, cmp.Diff(want, got))
		}
		if (wantVal == nil) != (gotVal == nil) || wantVal != nil && *wantVal != *gotVal {
			t.Fatalf("value for %x differs (-ref +got):\n%s", k, cmp.Diff(wantVal, gotVal))
		}
		if err := Verify(root, k, gotVal, got); err != nil {
			t.Fatalf("Verify(%x): %v", k, err)
		}
		v, ok := s.Get(k)
		if wv, wok := vals[k]; ok != wok || v != wv {
			t.Fatalf("Get(%x) = %x, %v; want %x, %v", k, v, ok, wv, wok)
		}
		enc, err := got.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if len(enc) != got.Size() {
			t.Fatalf("Size = %d, encoding is %d bytes", got.Size(), len(enc))
		}
		back, err := ParseProof(enc)
		if err != nil {
			t.Fatalf("ParseProof(MarshalBinary): %v", err)
		}
		if !proofsEqual(got, back) {
			t.Fatalf("proof did not round-trip:\n%s", cmp.Diff(got, back))
		}
	}
}

func proofsEqual(a, b *Proof) bool {
	return slices.Equal(a.Siblings, b.Siblings) && a.Terminal == b.Terminal &&
		a.OtherKey == b.OtherKey && a.OtherValue == b.OtherValue
}

func checkLeaves(t *testing.T, want, got []Leaf) {
	t.Helper()
	if !slices.Equal(want, got) {
		t.Fatalf("Leaves differ (-want +got):\n%s", cmp.Diff(want, got, cmpopts.EquateEmpty()))
	}
}

func sortedLeaves(ls []Leaf) []Leaf {
	ls = slices.Clone(ls)
	slices.SortFunc(ls, func(a, b Leaf) int { return bytes.Compare(a.Key[:], b.Key[:]) })
	return ls
}

func collect(s *Snapshot) []Leaf {
	var out []Leaf
	for k, v := range s.Leaves() {
		out = append(out, Leaf{k, v})
	}
	return out
}

func TestMatchesReference(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 17, 100, 10000, 70000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(n), 1))
			ls := randLeaves(r, n)
			input := slices.Clone(ls)
			m, err := New(input)
			if err != nil {
				t.Fatal(err)
			}
			maxProbes := 300
			if n > 10000 {
				maxProbes = 50
			}
			checkAgainstRef(t, m.Snapshot(), ls, probeKeys(r, ls, maxProbes))
			checkLeaves(t, sortedLeaves(ls), collect(m.Snapshot()))
		})
	}
}

// TestSkewedKeys uses keys that share long prefixes: deep chains of nodes,
// buckets at depth 256, and long runs of empty siblings.
func TestSkewedKeys(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	var ls []Leaf
	base := randKey(r)
	// 40 keys differing only in the last byte.
	for i := range 40 {
		k := base
		k[31] = byte(i * 5)
		ls = append(ls, Leaf{k, randKey(r)})
	}
	// 30 keys sharing 200 bits with another base.
	base2 := randKey(r)
	for range 30 {
		k := base2
		k[25] ^= byte(r.IntN(256))
		for j := 26; j < 32; j++ {
			k[j] = byte(r.IntN(256))
		}
		ls = append(ls, Leaf{k, randKey(r)})
	}
	// Two keys differing only in the very last bit.
	k1 := randKey(r)
	k2 := k1
	k2[31] ^= 1
	ls = append(ls, Leaf{k1, randKey(r)}, Leaf{k2, randKey(r)})
	// Dedupe any accidental repeats.
	seen := map[[32]byte]bool{}
	ls = slices.DeleteFunc(ls, func(l Leaf) bool { d := seen[l.Key]; seen[l.Key] = true; return d })
	ls = append(ls, randLeaves(r, 200)...)

	m, err := New(slices.Clone(ls))
	if err != nil {
		t.Fatal(err)
	}
	checkAgainstRef(t, m.Snapshot(), ls, probeKeys(r, ls, len(ls)))
	p, _ := m.Prove(k1)
	if len(p.Siblings) != 256 {
		t.Errorf("proof for keys differing in the last bit has depth %d, want 256", len(p.Siblings))
	}

	// The same set, grown through Apply instead (buckets split on the way).
	m2, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(ls); i += 7 {
		end := min(i+7, len(ls))
		var u []Update
		for _, l := range ls[i:end] {
			u = append(u, Update(l))
		}
		if _, err := m2.Apply(u); err != nil {
			t.Fatal(err)
		}
	}
	checkAgainstRef(t, m2.Snapshot(), ls, probeKeys(r, ls, len(ls)))
}

func TestApplyMatchesReference(t *testing.T) {
	for _, start := range []int{0, 1, 50, 5000} {
		t.Run(fmt.Sprint(start), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(start), 2))
			ref := map[[32]byte][32]byte{}
			ls := randLeaves(r, start)
			for _, l := range ls {
				ref[l.Key] = l.Value
			}
			m, err := New(ls)
			if err != nil {
				t.Fatal(err)
			}
			type version struct {
				snap   *Snapshot
				leaves []Leaf
			}
			var old []version
			for round := range 12 {
				var u []Update
				keys := refSet(ref)
				for range r.IntN(300) + 1 {
					switch x := r.IntN(10); {
					case x < 3 && len(keys) > 0: // overwrite
						u = append(u, Update{keys[r.IntN(len(keys))].Key, randKey(r)})
					case x < 4 && len(u) > 0: // same key twice in a batch
						u = append(u, Update{u[r.IntN(len(u))].Key, randKey(r)})
					default:
						u = append(u, Update{randKey(r), randKey(r)})
					}
				}
				for _, x := range u {
					ref[x.Key] = x.Value
				}
				before := m.Snapshot()
				root, err := m.Apply(u)
				if err != nil {
					t.Fatal(err)
				}
				old = append(old, version{before, collect(before)})
				want := refSet(ref)
				if root != refHash(want, 0) {
					t.Fatalf("round %d: Apply root differs from the reference", round)
				}
				checkAgainstRef(t, m.Snapshot(), want, probeKeys(r, want, 100))
				checkLeaves(t, sortedLeaves(want), collect(m.Snapshot()))
			}
			// Earlier versions are untouched by later Applies.
			for i, v := range old {
				if got, want := v.snap.Root(), refHash(v.leaves, 0); got != want {
					t.Fatalf("snapshot %d changed: root %x, want %x", i, got, want)
				}
				checkAgainstRef(t, v.snap, v.leaves, probeKeys(r, v.leaves, 20))
			}
			// An empty batch changes nothing.
			root, err := m.Apply(nil)
			if err != nil || root != m.Root() {
				t.Fatalf("Apply(nil) = %x, %v", root, err)
			}
		})
	}
}

func TestDuplicateKey(t *testing.T) {
	for _, n := range []int{2, 40, 100000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(n), 3))
			ls := randLeaves(r, n)
			ls[n-1].Key = ls[n/3].Key
			if _, err := New(ls); !errors.Is(err, ErrDuplicateKey) {
				t.Fatalf("New with a duplicate: err = %v, want ErrDuplicateKey", err)
			}
		})
	}
}

// fixtures builds a map with one proof of each kind, all at depth 2. By
// first byte, the keys are 0x00, 0x40, 0x80 and 0x81: lookup 0x40 is a
// member; lookup 0xc0 ends in an empty subtree (its sibling at depth 1 holds
// 0x80 and 0x81); lookup 0x20 ends in the single leaf 0x00.
type fixture struct {
	name  string
	key   [32]byte
	value *[32]byte
	kind  Terminal
}

func fixtures(t testing.TB) (*Map, []fixture) {
	t.Helper()
	k := func(b byte) (k [32]byte) { k[0] = b; k[31] = 0x5a; return k }
	ls := []Leaf{{k(0x00), k(0x01)}, {k(0x40), k(0x02)}, {k(0x80), k(0x03)}, {k(0x81), k(0x04)}}
	m, err := New(slices.Clone(ls))
	if err != nil {
		t.Fatal(err)
	}
	v := ls[1].Value
	return m, []fixture{
		{"membership", k(0x40), &v, TerminalLeaf},
		{"absence empty", k(0xc0), nil, TerminalEmpty},
		{"absence other leaf", k(0x20), nil, TerminalOtherLeaf},
	}
}

func TestProofKinds(t *testing.T) {
	m, fx := fixtures(t)
	for _, f := range fx {
		t.Run(f.name, func(t *testing.T) {
			p, v := m.Prove(f.key)
			if p.Terminal != f.kind {
				t.Fatalf("terminal = %v, want %v", p.Terminal, f.kind)
			}
			if len(p.Siblings) == 0 {
				t.Fatal("fixture proof has depth 0")
			}
			if diff := cmp.Diff(f.value, v); diff != "" {
				t.Fatalf("value (-want +got):\n%s", diff)
			}
			if err := Verify(m.Root(), f.key, f.value, p); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Empty and single-leaf maps: depth-0 proofs.
	empty, _ := New(nil)
	p, v := empty.Prove([32]byte{1})
	if p.Terminal != TerminalEmpty || v != nil || len(p.Siblings) != 0 || empty.Root() != ([32]byte{}) {
		t.Fatalf("empty map: proof %+v, value %v, root %x", p, v, empty.Root())
	}
	if err := Verify([32]byte{}, [32]byte{1}, nil, p); err != nil {
		t.Fatal(err)
	}
}

var sentinels = []error{ErrMalformedProof, ErrNotCanonical, ErrWrongTerminal, ErrRootMismatch}

func isTyped(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// TestTamperEveryBit flips every bit of real proofs of each kind (and of a
// deep proof in a large map): parsing or verification must fail with a
// typed error.
func TestTamperEveryBit(t *testing.T) {
	m, fx := fixtures(t)
	r := rand.New(rand.NewPCG(9, 9))
	big, err := New(randLeaves(r, 3000))
	if err != nil {
		t.Fatal(err)
	}
	var bk [32]byte
	for k := range big.Leaves() {
		bk = k
		break
	}
	bp, bv := big.Prove(bk)
	type tc struct {
		fixture
		root  [32]byte
		proof *Proof
	}
	var cases []tc
	for _, f := range fx {
		p, _ := m.Prove(f.key)
		cases = append(cases, tc{f, m.Root(), p})
	}
	cases = append(cases, tc{fixture{"deep membership", bk, bv, TerminalLeaf}, big.Root(), bp})
	ak := randKey(r)
	ap, _ := big.Prove(ak)
	cases = append(cases, tc{fixture{"deep absence", ak, nil, ap.Terminal}, big.Root(), ap})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			enc, err := c.proof.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if err := Verify(c.root, c.key, c.value, c.proof); err != nil {
				t.Fatalf("untampered proof rejected: %v", err)
			}
			for i := range len(enc) * 8 {
				bad := bytes.Clone(enc)
				bad[i/8] ^= 0x80 >> uint(i%8)
				p, err := ParseProof(bad)
				if err == nil {
					err = Verify(c.root, c.key, c.value, p)
				}
				if err == nil {
					t.Fatalf("bit %d flipped: tampered proof accepted", i)
				}
				if !isTyped(err) {
					t.Fatalf("bit %d flipped: untyped error %v", i, err)
				}
			}
			for n := range len(enc) {
				if _, err := ParseProof(enc[:n]); !errors.Is(err, ErrMalformedProof) {
					t.Fatalf("truncated to %d bytes: err = %v, want ErrMalformedProof", n, err)
				}
			}
			if _, err := ParseProof(append(bytes.Clone(enc), 0)); !errors.Is(err, ErrMalformedProof) {
				t.Fatalf("trailing byte: err = %v, want ErrMalformedProof", err)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	m, fx := fixtures(t)
	root := m.Root()
	mem, absE, absO := fx[0], fx[1], fx[2]
	memP, _ := m.Prove(mem.key)
	emptyP, _ := m.Prove(absE.key)
	otherP, _ := m.Prove(absO.key)
	other := *mem.value
	other[0] ^= 1
	otherRoot := root
	otherRoot[5] ^= 1

	clone := func(p *Proof) *Proof {
		q := *p
		q.Siblings = slices.Clone(p.Siblings)
		return &q
	}
	extend := func(p *Proof) *Proof { q := clone(p); q.Siblings = append(q.Siblings, [32]byte{}); return q }
	flipOtherKeyLastBit := func(p *Proof) *Proof { q := clone(p); q.OtherKey[31] ^= 1; return q }
	otherIsKey := func(p *Proof) *Proof { q := clone(p); q.OtherKey = absO.key; return q }
	offPath := func(p *Proof) *Proof { q := clone(p); q.OtherKey[0] ^= 0x80; return q }
	leafWithExtra := func(p *Proof) *Proof { q := clone(p); q.OtherKey[3] = 1; return q }
	badKind := func(p *Proof) *Proof { q := clone(p); q.Terminal = 3; return q }
	tooDeep := func(p *Proof) *Proof {
		q := clone(p)
		q.Siblings = make([][32]byte, 257)
		q.Siblings[256][0] = 1
		return q
	}

	cases := []struct {
		name  string
		root  [32]byte
		key   [32]byte
		value *[32]byte
		proof *Proof
		want  error
	}{
		{"membership, wrong value", root, mem.key, &other, memP, ErrRootMismatch},
		{"membership, wrong root", otherRoot, mem.key, mem.value, memP, ErrRootMismatch},
		{"membership proof for another key", root, absO.key, mem.value, memP, ErrRootMismatch},
		{"membership proof, absence claimed", root, mem.key, nil, memP, ErrWrongTerminal},
		{"empty proof, membership claimed", root, absE.key, mem.value, emptyP, ErrWrongTerminal},
		{"other-leaf proof, membership claimed", root, absO.key, mem.value, otherP, ErrWrongTerminal},
		{"empty proof for a present key", root, mem.key, nil, emptyP, ErrRootMismatch},
		{"other-leaf proof: other key is the key", root, absO.key, nil, otherIsKey(otherP), ErrWrongTerminal},
		{"other-leaf proof: other key off the path", root, absO.key, nil, offPath(otherP), ErrWrongTerminal},
		{"other-leaf proof: other leaf altered", root, absO.key, nil, flipOtherKeyLastBit(otherP), ErrRootMismatch},
		{"other-leaf proof used for the present leaf's key", root, otherP.OtherKey, nil, otherP, ErrWrongTerminal},
		{"leaf pushed one level down", root, mem.key, mem.value, extend(memP), ErrNotCanonical},
		{"empty pushed one level down", root, absE.key, nil, extend(emptyP), ErrNotCanonical},
		{"leaf terminal carrying a leaf", root, mem.key, mem.value, leafWithExtra(memP), ErrNotCanonical},
		{"unknown terminal", root, mem.key, mem.value, badKind(memP), ErrMalformedProof},
		{"depth 257", root, mem.key, mem.value, tooDeep(memP), ErrMalformedProof},
		{"nil proof", root, mem.key, mem.value, nil, ErrMalformedProof},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Verify(c.root, c.key, c.value, c.proof)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if c.proof != nil && !errors.Is(c.want, ErrRootMismatch) && !errors.Is(c.want, ErrWrongTerminal) {
				if _, err := c.proof.MarshalBinary(); !errors.Is(err, c.want) {
					t.Fatalf("MarshalBinary of a proof Verify rejects: err = %v, want %v", err, c.want)
				}
			}
		})
	}
	var rm *RootMismatchError
	if err := Verify(otherRoot, mem.key, mem.value, memP); !errors.As(err, &rm) || rm.Computed != root || rm.Want != otherRoot || rm.Key != mem.key {
		t.Fatalf("RootMismatchError evidence wrong: %v", err)
	}
}

func TestParseProofNonCanonical(t *testing.T) {
	m, fx := fixtures(t)
	p, _ := m.Prove(fx[0].key) // depth 2: bitmap one byte
	enc, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if enc[0] != 0 || enc[1] != byte(len(p.Siblings)) || len(p.Siblings) >= 8 {
		t.Fatalf("unexpected fixture encoding %x", enc)
	}
	// Bit beyond the depth set in the bitmap (and a hash added for it).
	beyond := bytes.Clone(enc)
	beyond[2] |= 0x01
	beyond = slices.Insert(beyond, 3+32*popcount(enc[2]), bytes.Repeat([]byte{7}, 32)...)
	// A present sibling equal to the empty hash: mark sibling 0 present with
	// zero hash (depth 2 proof with sibling 0 already present: use a new
	// proof with one more level whose first sibling is zero).
	zeroSib := []byte{0, 2, 0xc0}
	zeroSib = append(zeroSib, make([]byte, 32)...)
	zeroSib = append(zeroSib, bytes.Repeat([]byte{1}, 32)...)
	zeroSib = append(zeroSib, 1)
	// Last sibling empty.
	lastEmpty := []byte{0, 2, 0x80}
	lastEmpty = append(lastEmpty, bytes.Repeat([]byte{1}, 32)...)
	lastEmpty = append(lastEmpty, 0)

	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"bitmap bit beyond depth", beyond, ErrNotCanonical},
		{"zero hash marked present", zeroSib, ErrNotCanonical},
		{"last sibling empty", lastEmpty, ErrNotCanonical},
		{"depth 257", append([]byte{0x01, 0x01}, make([]byte, 33)...), ErrMalformedProof},
		{"depth 65535", []byte{0xff, 0xff}, ErrMalformedProof},
		{"empty input", nil, ErrMalformedProof},
		{"terminal 3", []byte{0, 0, 3}, ErrMalformedProof},
		{"terminal 2 truncated", append([]byte{0, 0, 2}, make([]byte, 63)...), ErrMalformedProof},
		{"terminal 0 with leaf bytes", append([]byte{0, 0, 0}, make([]byte, 64)...), ErrMalformedProof},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := ParseProof(c.in); !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
	// Depth 0 proofs are fine: empty map and single leaf.
	for _, ok := range [][]byte{{0, 0, 1}, {0, 0, 0}, append([]byte{0, 0, 2}, make([]byte, 64)...)} {
		if _, err := ParseProof(ok); err != nil {
			t.Errorf("ParseProof(%x): %v", ok[:3], err)
		}
	}
}

func popcount(b byte) int {
	n := 0
	for ; b != 0; b &= b - 1 {
		n++
	}
	return n
}

// TestConcurrentReads runs Prove on old and current versions while Apply
// advances the map (meaningful under -race).
func TestConcurrentReads(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	ls := randLeaves(r, 2000)
	m, err := New(slices.Clone(ls))
	if err != nil {
		t.Fatal(err)
	}
	snap := m.Snapshot()
	root0 := snap.Root()
	keys := make([][32]byte, len(ls))
	for i, l := range ls {
		keys[i] = l.Key
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 3 {
		wg.Go(func() {
			for i := range 500 {
				k := keys[(i*7+g)%len(keys)]
				p, v := snap.Prove(k)
				if err := Verify(root0, k, v, p); err != nil {
					errs <- err
					return
				}
				cur := m.Snapshot()
				p, v = cur.Prove(k)
				if err := Verify(cur.Root(), k, v, p); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for range 20 {
		u := make([]Update, 100)
		for i := range u {
			if i%2 == 0 {
				u[i] = Update{keys[r.IntN(len(keys))], randKey(r)}
			} else {
				u[i] = Update{randKey(r), randKey(r)}
			}
		}
		if _, err := m.Apply(u); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func FuzzParseProof(f *testing.F) {
	m, fx := fixtures(f)
	for _, x := range fx {
		p, _ := m.Prove(x.key)
		enc, _ := p.MarshalBinary()
		f.Add(enc)
	}
	f.Add([]byte{0, 0, 1})
	f.Add([]byte{0, 9, 0xff, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseProof(b)
		if err != nil {
			if !errors.Is(err, ErrMalformedProof) && !errors.Is(err, ErrNotCanonical) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		enc, err := p.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted proof does not marshal: %v", err)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("re-marshal differs:\n in %x\nout %x", b, enc)
		}
	})
}

// FuzzVerify tampers with real proofs: a tampered proof may only verify if
// it is byte-identical to the genuine one. The map is built from the fuzz
// seed, so the fuzzer also explores tree shapes.
func FuzzVerify(f *testing.F) {
	f.Add(uint64(1), uint8(10), uint8(0), uint16(0), byte(1), false)
	f.Add(uint64(2), uint8(3), uint8(1), uint16(40), byte(0x80), true)
	f.Add(uint64(3), uint8(60), uint8(200), uint16(2), byte(0xff), false)
	f.Fuzz(func(t *testing.T, seed uint64, n uint8, which uint8, pos uint16, mask byte, absent bool) {
		r := rand.New(rand.NewPCG(seed, 5))
		ls := randLeaves(r, int(n))
		m, err := New(slices.Clone(ls))
		if err != nil {
			t.Fatal(err)
		}
		var key [32]byte
		if absent || len(ls) == 0 {
			key = randKey(r)
			if len(ls) > 0 && which%2 == 0 { // share a prefix with a present key
				key = ls[int(which)%len(ls)].Key
				key[31-int(which)%32] ^= 1 << (which % 8)
			}
		} else {
			key = ls[int(which)%len(ls)].Key
		}
		p, v := m.Prove(key)
		if err := Verify(m.Root(), key, v, p); err != nil {
			t.Fatalf("genuine proof rejected: %v", err)
		}
		enc, err := p.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		bad := bytes.Clone(enc)
		if mask == 0 {
			mask = 1
		}
		bad[int(pos)%len(bad)] ^= mask
		q, err := ParseProof(bad)
		if err == nil {
			err = Verify(m.Root(), key, v, q)
		}
		if err == nil {
			t.Fatalf("tampered proof accepted: %x", bad)
		}
		if !isTyped(err) {
			t.Fatalf("untyped error: %v", err)
		}
		// The opposite claim never verifies.
		var flipped *[32]byte
		if v == nil {
			flipped = &[32]byte{1}
		}
		if err := Verify(m.Root(), key, flipped, p); err == nil {
			t.Fatal("opposite claim accepted")
		}
	})
}
