package smt

import (
	"bytes"
	"errors"
	"fmt"
	"iter"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// Layout
//
// The tree is cut into nodes of nodeBits levels: a node rooted at bit depth
// D (a multiple of nodeBits) caches, in a small heap, the hash and leaf
// count of every subtree at depths D..D+nodeBits within it, and has fanout
// children at depth D+nodeBits. A child is either a bucket, a sorted slice of
// at most bucketMax leaves whose interior hashes are recomputed on demand, or
// another node. A bucket that grows beyond bucketMax is split into a node.
//
// With uniformly random keys (VRF outputs) the structure is a balanced
// radix-16 trie whose buckets hold about 4 to 16 leaves, so a proof costs a
// few cached reads plus hashing one bucket. Keys that share long prefixes
// (a hostile log replayed by an auditor) only make the chain of nodes
// longer; no operation degrades to scanning large parts of the map.
//
// Nodes and buckets are never modified once a Snapshot can see them: Apply
// copies the nodes on the paths it changes (copy-on-write), so any number of
// versions share their unchanged parts and readers need no locks.
const (
	nodeBits  = 4
	fanout    = 1 << nodeBits
	bucketMax = 16
	// parallelMin is the size from which New builds the root's children in
	// parallel.
	parallelMin = 1 << 16
)

// ErrDuplicateKey reports a key given twice to [New].
var ErrDuplicateKey = errors.New("smt: duplicate key")

// Leaf is one entry of the map.
type Leaf struct {
	Key, Value [HashSize]byte
}

// Update sets Key to Value, inserting the key if it is absent.
type Update struct {
	Key, Value [HashSize]byte
}

type node struct {
	// hash and count form a heap: index 1 is this node's subtree (at bit
	// depth depth), index i has children 2i and 2i+1, and indices
	// [fanout, 2*fanout) are the children's subtrees. Index 0 is unused.
	hash  [2 * fanout][HashSize]byte
	count [2 * fanout]uint64
	kids  [fanout]child
	depth int
}

type child struct {
	sub    *node  // if non-nil, the child is a node
	leaves []Leaf // otherwise a bucket, sorted by key, unique
}

// Snapshot is one immutable version of the map. It is safe for concurrent
// use.
type Snapshot struct {
	root *node
}

// Map is a sparse Merkle tree with a current version that [Map.Apply]
// advances. Reads go to the current version and never block; Apply calls
// are serialised. Use [Map.Snapshot] to keep serving an older version (for
// example the map of the last published epoch while the next one is
// applied). Create maps with [New]; New(nil) is the empty map.
type Map struct {
	mu  sync.Mutex // serialises Apply
	cur atomic.Pointer[Snapshot]
}

// New builds a map from leaves, in any order. It reorders leaves in place
// and does not retain it. A key given twice is an error (ErrDuplicateKey).
// Large inputs are hashed on all CPUs.
func New(leaves []Leaf) (*Map, error) {
	b := &builder{}
	if len(leaves) >= parallelMin {
		b.sem = make(chan struct{}, runtime.GOMAXPROCS(0))
	}
	root, err := b.node(leaves, 0)
	if err != nil {
		return nil, err
	}
	m := &Map{}
	m.cur.Store(&Snapshot{root: root})
	return m, nil
}

// Snapshot returns the current version.
func (m *Map) Snapshot() *Snapshot { return m.cur.Load() }

// Root returns the current root hash.
func (m *Map) Root() [HashSize]byte { return m.Snapshot().Root() }

// Len returns the current number of leaves.
func (m *Map) Len() uint64 { return m.Snapshot().Len() }

// Prove returns the current proof for key, and its value if it is present.
func (m *Map) Prove(key [HashSize]byte) (*Proof, *[HashSize]byte) {
	return m.Snapshot().Prove(key)
}

// Get returns the current value of key.
func (m *Map) Get(key [HashSize]byte) ([HashSize]byte, bool) {
	return m.Snapshot().Get(key)
}

// Leaves iterates over the current leaves in key order.
func (m *Map) Leaves() iter.Seq2[[HashSize]byte, [HashSize]byte] {
	return m.Snapshot().Leaves()
}

// Apply sets each update's key to its value, in order (a key updated twice
// ends with the later value), makes the result the current version and
// returns its root. Snapshots taken before are unaffected.
func (m *Map) Apply(updates []Update) ([HashSize]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.cur.Load()
	if len(updates) == 0 {
		return s.Root(), nil
	}
	u := make([]Leaf, len(updates))
	for i := range updates {
		u[i] = Leaf(updates[i])
	}
	slices.SortStableFunc(u, func(a, b Leaf) int { return bytes.Compare(a.Key[:], b.Key[:]) })
	// Keep the last update of each key.
	w := 0
	for i := range u {
		if i+1 < len(u) && u[i+1].Key == u[i].Key {
			continue
		}
		u[w] = u[i]
		w++
	}
	u = u[:w]
	ns := &Snapshot{root: s.root.apply(u)}
	m.cur.Store(ns)
	return ns.Root(), nil
}

// Root returns the root hash.
func (s *Snapshot) Root() [HashSize]byte { return s.root.hash[1] }

// Len returns the number of leaves.
func (s *Snapshot) Len() uint64 { return s.root.count[1] }

// Get returns the value of key.
func (s *Snapshot) Get(key [HashSize]byte) ([HashSize]byte, bool) {
	n := s.root
	for {
		c := &n.kids[nibble(&key, n.depth)]
		if c.sub != nil {
			n = c.sub
			continue
		}
		i, ok := slices.BinarySearchFunc(c.leaves, key, func(l Leaf, k [HashSize]byte) int {
			return bytes.Compare(l.Key[:], k[:])
		})
		if !ok {
			return zeroHash, false
		}
		return c.leaves[i].Value, true
	}
}

// Leaves iterates over the leaves in key order.
func (s *Snapshot) Leaves() iter.Seq2[[HashSize]byte, [HashSize]byte] {
	return func(yield func([HashSize]byte, [HashSize]byte) bool) {
		s.root.walk(yield)
	}
}

func (n *node) walk(yield func([HashSize]byte, [HashSize]byte) bool) bool {
	for i := range n.kids {
		c := &n.kids[i]
		if c.sub != nil {
			if !c.sub.walk(yield) {
				return false
			}
			continue
		}
		for j := range c.leaves {
			if !yield(c.leaves[j].Key, c.leaves[j].Value) {
				return false
			}
		}
	}
	return true
}

// Prove returns the proof for key and, if key is present, its value.
//
// SPEC(design.md 8.1)
func (s *Snapshot) Prove(key [HashSize]byte) (*Proof, *[HashSize]byte) {
	p := &Proof{Siblings: make([][HashSize]byte, 0, 32)}
	n := s.root
	for {
		i := 1
		for j := range nodeBits {
			if n.count[i] <= 1 {
				return n.terminal(i, &key, p)
			}
			b := bit(&key, n.depth+j)
			p.Siblings = append(p.Siblings, n.hash[2*i+1-b])
			i = 2*i + b
		}
		if n.count[i] <= 1 {
			return n.terminal(i, &key, p)
		}
		c := &n.kids[i-fanout]
		if c.sub != nil {
			n = c.sub
			continue
		}
		return proveBucket(c.leaves, n.depth+nodeBits, &key, p)
	}
}

// terminal ends a proof at heap index i of n, whose subtree holds at most
// one leaf.
func (n *node) terminal(i int, key *[HashSize]byte, p *Proof) (*Proof, *[HashSize]byte) {
	if n.count[i] == 0 {
		p.Terminal = TerminalEmpty
		return p, nil
	}
	// Find the single leaf: follow the non-empty side down.
	for {
		for i < fanout {
			i *= 2
			if n.count[i] == 0 {
				i++
			}
		}
		c := &n.kids[i-fanout]
		if c.sub == nil {
			return leafTerminal(&c.leaves[0], key, p)
		}
		n, i = c.sub, 1
	}
}

func leafTerminal(l *Leaf, key *[HashSize]byte, p *Proof) (*Proof, *[HashSize]byte) {
	if l.Key == *key {
		p.Terminal = TerminalLeaf
		v := l.Value
		return p, &v
	}
	p.Terminal = TerminalOtherLeaf
	p.OtherKey, p.OtherValue = l.Key, l.Value
	return p, nil
}

// proveBucket continues a proof inside a bucket at bit depth depth.
//
// SPEC(design.md 8.1)
func proveBucket(ls []Leaf, depth int, key *[HashSize]byte, p *Proof) (*Proof, *[HashSize]byte) {
	for {
		switch len(ls) {
		case 0:
			p.Terminal = TerminalEmpty
			return p, nil
		case 1:
			return leafTerminal(&ls[0], key, p)
		}
		k := split(ls, depth)
		if bit(key, depth) == 0 {
			p.Siblings = append(p.Siblings, subtreeHash(ls[k:], depth+1))
			ls = ls[:k]
		} else {
			p.Siblings = append(p.Siblings, subtreeHash(ls[:k], depth+1))
			ls = ls[k:]
		}
		depth++
	}
}

// split returns the index of the first leaf of ls (sorted, sharing their
// first depth bits) whose bit depth is 1.
func split(ls []Leaf, depth int) int {
	for i := range ls {
		if bit(&ls[i].Key, depth) == 1 {
			return i
		}
	}
	return len(ls)
}

// subtreeHash hashes the subtree at bit depth depth holding ls (sorted,
// unique, sharing their first depth bits).
//
// SPEC(design.md 8)
func subtreeHash(ls []Leaf, depth int) [HashSize]byte {
	switch len(ls) {
	case 0:
		return zeroHash
	case 1:
		return LeafHash(&ls[0].Key, &ls[0].Value)
	}
	k := split(ls, depth)
	l := subtreeHash(ls[:k], depth+1)
	r := subtreeHash(ls[k:], depth+1)
	return NodeHash(&l, &r)
}

// nibble returns the nodeBits bits of key starting at depth (a multiple of
// nodeBits).
func nibble(key *[HashSize]byte, depth int) int {
	b := key[depth>>3]
	if depth&7 == 0 {
		return int(b >> 4)
	}
	return int(b & 0x0f)
}

// setChild records child c's hash and count in the bottom of n's heap.
func (n *node) setChild(c int) {
	k := &n.kids[c]
	i := fanout + c
	if k.sub != nil {
		n.hash[i], n.count[i] = k.sub.hash[1], k.sub.count[1]
		return
	}
	n.hash[i], n.count[i] = subtreeHash(k.leaves, n.depth+nodeBits), uint64(len(k.leaves))
}

// combine recomputes heap entry i from its two children.
//
// SPEC(design.md 8)
func (n *node) combine(i int) {
	l, r := n.count[2*i], n.count[2*i+1]
	n.count[i] = l + r
	switch {
	case l+r == 0:
		n.hash[i] = zeroHash
	case l+r == 1 && l == 1:
		n.hash[i] = n.hash[2*i]
	case l+r == 1:
		n.hash[i] = n.hash[2*i+1]
	default:
		n.hash[i] = NodeHash(&n.hash[2*i], &n.hash[2*i+1])
	}
}

// apply returns a copy of n with the updates u applied; u is sorted by key,
// unique, and every key in it has n's prefix.
func (n *node) apply(u []Leaf) *node {
	nn := new(node)
	*nn = *n
	var dirty [2 * fanout]bool
	for len(u) > 0 {
		c := nibble(&u[0].Key, n.depth)
		j := 1
		for j < len(u) && nibble(&u[j].Key, n.depth) == c {
			j++
		}
		k := &nn.kids[c]
		if k.sub != nil {
			k.sub = k.sub.apply(u[:j])
		} else {
			merged := merge(k.leaves, u[:j])
			if len(merged) > bucketMax && nn.depth+nodeBits < keyBits {
				// merged is ours and unique: the builder cannot fail.
				sub, _ := (&builder{}).node(merged, nn.depth+nodeBits)
				*k = child{sub: sub}
			} else {
				k.leaves = merged
			}
		}
		nn.setChild(c)
		dirty[fanout+c] = true
		u = u[j:]
	}
	for i := fanout - 1; i >= 1; i-- {
		if dirty[2*i] || dirty[2*i+1] {
			nn.combine(i)
			dirty[i] = true
		}
	}
	return nn
}

// merge returns a new sorted slice with the leaves of old, overwritten or
// extended by u (sorted, unique).
func merge(old, u []Leaf) []Leaf {
	out := make([]Leaf, 0, len(old)+len(u))
	i, j := 0, 0
	for i < len(old) && j < len(u) {
		switch c := bytes.Compare(old[i].Key[:], u[j].Key[:]); {
		case c < 0:
			out = append(out, old[i])
			i++
		case c > 0:
			out = append(out, u[j])
			j++
		default:
			out = append(out, u[j])
			i++
			j++
		}
	}
	out = append(out, old[i:]...)
	out = append(out, u[j:]...)
	// Release the spare capacity when keys were overwritten.
	if cap(out) > len(out) {
		out = slices.Clip(out)
	}
	return out
}

// builder builds nodes from unsorted leaves.
type builder struct {
	sem chan struct{} // if non-nil, limits the parallel builds of root children
}

// node builds the node at bit depth depth from ls, whose keys all share
// their first depth bits. It reorders ls and copies leaves into new buckets.
func (b *builder) node(ls []Leaf, depth int) (*node, error) {
	n := &node{depth: depth}
	var bounds [fanout + 1]int
	partition(ls, depth, &bounds)

	build := func(c int) error {
		part := ls[bounds[c]:bounds[c+1]]
		k := &n.kids[c]
		if len(part) > bucketMax && depth+nodeBits < keyBits {
			sub, err := b.node(part, depth+nodeBits)
			if err != nil {
				return err
			}
			k.sub = sub
		} else if len(part) > 0 {
			sortSmall(part)
			for i := 1; i < len(part); i++ {
				if part[i].Key == part[i-1].Key {
					return fmt.Errorf("%w: %x", ErrDuplicateKey, part[i].Key)
				}
			}
			k.leaves = slices.Clone(part)
		}
		n.setChild(c)
		return nil
	}

	if b.sem != nil && depth == 0 {
		var wg sync.WaitGroup
		var errs [fanout]error
		for c := range fanout {
			b.sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-b.sem }()
				errs[c] = build(c)
			})
		}
		wg.Wait()
		if err := errors.Join(errs[:]...); err != nil {
			return nil, err
		}
	} else {
		for c := range fanout {
			if err := build(c); err != nil {
				return nil, err
			}
		}
	}
	for i := fanout - 1; i >= 1; i-- {
		n.combine(i)
	}
	return n, nil
}

// partition reorders ls in place by the nibble at depth (an American flag
// sort pass) and sets bounds[c]..bounds[c+1] to the range of nibble c.
func partition(ls []Leaf, depth int, bounds *[fanout + 1]int) {
	var counts [fanout]int
	for i := range ls {
		counts[nibble(&ls[i].Key, depth)]++
	}
	var next [fanout]int
	for c := range fanout {
		bounds[c+1] = bounds[c] + counts[c]
		next[c] = bounds[c]
	}
	for c := range fanout {
		for next[c] < bounds[c+1] {
			d := nibble(&ls[next[c]].Key, depth)
			if d == c {
				next[c]++
				continue
			}
			ls[next[c]], ls[next[d]] = ls[next[d]], ls[next[c]]
			next[d]++
		}
	}
}

// sortSmall sorts a bucket-sized slice by key (insertion sort).
func sortSmall(ls []Leaf) {
	if len(ls) > 2*bucketMax {
		slices.SortFunc(ls, func(a, b Leaf) int { return bytes.Compare(a.Key[:], b.Key[:]) })
		return
	}
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && bytes.Compare(ls[j-1].Key[:], ls[j].Key[:]) > 0; j-- {
			ls[j-1], ls[j] = ls[j], ls[j-1]
		}
	}
}
