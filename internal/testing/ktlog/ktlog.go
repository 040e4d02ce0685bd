// Package ktlog builds key transparency logs entry by entry with the api
// encodings, honest or not, for tests and benchmarks of auditors: an honest
// history (enrollments, device changes, epochs with the right map roots),
// and the faults an auditor must find (a wrong map root, a change signed by
// a removed device, a rewritten history). It is deterministic: the same
// calls give the same entries.
package ktlog

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/smt"
	"github.com/keytrans/kt/vrf"
)

// Builder appends entries to an in-memory log. It is not safe for
// concurrent use.
type Builder struct {
	Origin string
	// Recovery is the directory's recovery key (rule R6).
	Recovery ed25519.PrivateKey

	entries [][]byte
	handles map[[32]byte]*handle
	m       *smt.Map
	pending []smt.Update
	epoch   uint64
	time    uint64
	next    int // handles created by Honest so far
}

type handle struct {
	version uint64
	leaf    [32]byte
}

// Key returns a deterministic Ed25519 key for label.
func Key(label string) ed25519.PrivateKey {
	s := sha256.Sum256([]byte("ktlog key " + label))
	return ed25519.NewKeyFromSeed(s[:])
}

// Pub returns k's public key as an array.
func Pub(k ed25519.PrivateKey) [32]byte {
	return [32]byte(k.Public().(ed25519.PublicKey))
}

// Index returns a deterministic VRF-like index for label.
func Index(label string) [32]byte { return sha256.Sum256([]byte("ktlog index " + label)) }

// New returns a builder whose log holds epoch record 0.
func New(origin string) *Builder {
	m, _ := smt.New(nil)
	b := &Builder{Origin: origin, Recovery: Key("recovery"), handles: map[[32]byte]*handle{}, m: m, time: 1_700_000_000_000}
	b.Epoch()
	return b
}

// RecoveryKey returns the public recovery key.
func (b *Builder) RecoveryKey() [32]byte { return Pub(b.Recovery) }

// Entries returns the log's entries (not copies).
func (b *Builder) Entries() [][]byte { return b.entries }

// Len returns the number of entries.
func (b *Builder) Len() uint64 { return uint64(len(b.entries)) }

// Devices returns the authorizers for the given device keys.
func Devices(keys ...ed25519.PrivateKey) []api.Authorizer {
	as := make([]api.Authorizer, 0, len(keys))
	for _, k := range keys {
		as = append(as, api.Authorizer{Role: api.RoleDevice, Digest: api.KeyDigest(Pub(k))})
	}
	api.SortAuthorizers(as)
	return as
}

// Change appends a change record for index, signed by signer, that makes
// authorizers the handle's next authorizers. Version and prev follow the
// handle's history as the builder knows it. It returns the entry's index.
func (b *Builder) Change(index [32]byte, kind api.AuthKind, signer ed25519.PrivateKey, authorizers []api.Authorizer) uint64 {
	r := b.Record(index, kind, authorizers)
	r.Sign(b.Origin, signer)
	return b.AppendRecord(r)
}

// Record returns the unsigned change record that Change would append.
func (b *Builder) Record(index [32]byte, kind api.AuthKind, authorizers []api.Authorizer) *api.ChangeRecord {
	r := &api.ChangeRecord{Index: index, Version: 1, Kind: kind, Authorizers: authorizers}
	if h := b.handles[index]; h != nil {
		r.Version = h.version + 1
		r.Prev = h.leaf
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], r.Version)
	r.Commitment = sha256.Sum256(append(index[:], v[:]...))
	return r
}

// AppendRecord appends r as it is and updates the builder's view of the
// handle and the map as an honest directory would.
func (b *Builder) AppendRecord(r *api.ChangeRecord) uint64 {
	e, err := r.MarshalBinary()
	if err != nil {
		panic(fmt.Sprintf("ktlog: %v", err))
	}
	lh := api.LeafHash(e)
	b.handles[r.Index] = &handle{version: r.Version, leaf: lh}
	b.pending = append(b.pending, smt.Update{Key: r.Index, Value: lh})
	return b.Raw(e)
}

// Raw appends an arbitrary entry and returns its index.
func (b *Builder) Raw(e []byte) uint64 {
	b.entries = append(b.entries, e)
	return uint64(len(b.entries) - 1)
}

// Epoch appends an honest epoch record and returns its index.
func (b *Builder) Epoch() uint64 {
	return b.EpochWith(func(*api.EpochRecord) {})
}

// EpochWith appends an epoch record that edit may falsify before it is
// encoded. The builder's own counters advance as for an honest record.
func (b *Builder) EpochWith(edit func(*api.EpochRecord)) uint64 {
	if len(b.pending) > 0 {
		if _, err := b.m.Apply(b.pending); err != nil {
			panic(err)
		}
		b.pending = b.pending[:0]
	}
	r := &api.EpochRecord{Epoch: b.epoch, Timestamp: b.time, LogSize: b.Len(), MapRoot: b.m.Root(), MapSize: b.m.Len()}
	b.epoch++
	b.time += 1000
	edit(r)
	e, err := r.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return b.Raw(e)
}

// Fork returns an independent copy of the builder, so that two histories
// can share a prefix.
func (b *Builder) Fork() *Builder {
	c := *b
	c.entries = append([][]byte(nil), b.entries...)
	c.handles = make(map[[32]byte]*handle, len(b.handles))
	for k, v := range b.handles {
		h := *v
		c.handles[k] = &h
	}
	leaves := make([]smt.Leaf, 0, b.m.Len())
	for k, v := range b.m.Leaves() {
		leaves = append(leaves, smt.Leaf{Key: k, Value: v})
	}
	c.m, _ = smt.New(leaves)
	c.pending = append([]smt.Update(nil), b.pending...)
	return &c
}

// Honest appends a history of n new handles (named h<i>, numbered on from
// the previous call), each enrolled with one device and
// then changed once by that device to a second device, with an epoch every
// perEpoch change records. It returns the device keys of each handle, in
// order: the enrolling device and its successor.
func (b *Builder) Honest(n, perEpoch int) [][2]ed25519.PrivateKey {
	keys := make([][2]ed25519.PrivateKey, n)
	first := b.next
	b.next += n
	changes := 0
	tick := func() {
		changes++
		if changes%perEpoch == 0 {
			b.Epoch()
		}
	}
	for i := range n {
		h := first + i
		d1 := Key(fmt.Sprintf("h%d d1", h))
		keys[i][0] = d1
		b.Change(Index(fmt.Sprint("h", h)), api.AuthEnroll, d1, Devices(d1))
		tick()
	}
	for i := range n {
		h := first + i
		d2 := Key(fmt.Sprintf("h%d d2", h))
		keys[i][1] = d2
		b.Change(Index(fmt.Sprint("h", h)), api.AuthDevice, keys[i][0], Devices(d2))
		tick()
	}
	b.Epoch()
	return keys
}

// VRFRotation appends a rotation record of the VRF key (kind 2, design.md
// 11.2) from oldKey to newKey with sequence seq, proved by both keys, and
// returns its index.
func (b *Builder) VRFRotation(seq uint64, oldKey, newKey *vrf.PrivateKey) uint64 {
	r := &api.RotationRecord{Kind: api.KeyVRF, Sequence: seq}
	if err := r.ProveVRFRotation(b.Origin, [32]byte(oldKey.Public().Bytes()), [32]byte(newKey.Public().Bytes()), oldKey.ProveRotation, newKey.ProveRotation); err != nil {
		panic(err)
	}
	e, err := r.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return b.Raw(e)
}

// Move appends a move entry (design.md 11.2) of rotation seq from old to
// new, with old's latest leaf as the builder knows it, and updates the
// builder's view as an honest directory would: new continues old's history
// and the map gets a leaf at new. It returns the entry's index.
func (b *Builder) Move(seq uint64, old, new [32]byte) uint64 {
	var leaf [32]byte
	if h := b.handles[old]; h != nil {
		leaf = h.leaf
		c := *h
		b.handles[new] = &c
	}
	return b.MoveWith(&api.MoveEntry{Sequence: seq, OldIndex: old, NewIndex: new, Leaf: leaf})
}

// MoveWith appends mv as it is; the map gets a leaf at mv.NewIndex with
// value mv.Leaf, as a directory that logged it would commit to.
func (b *Builder) MoveWith(mv *api.MoveEntry) uint64 {
	e, err := mv.MarshalBinary()
	if err != nil {
		panic(fmt.Sprintf("ktlog: %v", err))
	}
	b.pending = append(b.pending, smt.Update{Key: mv.NewIndex, Value: mv.Leaf})
	return b.Raw(e)
}
