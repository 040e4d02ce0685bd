package evidence

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	fmtlog "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// The v2 builders encode a bundle of one kind from a checkpoint note C of
// the log (signed, as published) and its size, and the entries and map
// values the caller holds. An entry whose Inclusion is empty gets its
// inclusion proof in C from src (src may be nil when every entry carries
// one). Every inclusion proof is checked against C's root, so that a
// source serving another tree gives ErrProof, not a bundle that does not
// verify. The builders hold no log key and do not judge what the bundle
// proves: [Check] it before relying on it.

// BuildRecords returns a records bundle of change record a, or of a and b
// (b may be nil), in log index order.
//
// SPEC(design.md 15.1 records)
func BuildRecords(ctx context.Context, src ProofSource, checkpoint []byte, size uint64, a, b *Entry) ([]byte, error) {
	if a == nil {
		return nil, fmt.Errorf("%w: no record", ErrMalformed)
	}
	es := []Entry{*a}
	if b != nil {
		es = append(es, *b)
	}
	return build(ctx, src, checkpoint, size, &Bundle{Kind: KindRecords, Entries: es})
}

// BuildMapRegression returns a map-regression bundle: epoch records e1 and
// e2 (e1 at the smaller log index), with m1 and m2 their map proofs for
// one key and the values they prove.
//
// SPEC(design.md 15.1 map-regression)
func BuildMapRegression(ctx context.Context, src ProofSource, checkpoint []byte, size uint64, e1, e2 Entry, m1, m2 MapValue) ([]byte, error) {
	if e1.Index >= e2.Index {
		return nil, fmt.Errorf("%w: the earlier epoch record (index %d) must come first (%d)", ErrMalformed, e1.Index, e2.Index)
	}
	return build(ctx, src, checkpoint, size, &Bundle{Kind: KindMapRegression, Entries: []Entry{e1, e2}, Maps: []MapValue{m1, m2}})
}

// BuildVersionConflict returns a version-conflict bundle: epoch record e
// with m, its map proof and value, and change record r.
//
// SPEC(design.md 15.1 version-conflict)
func BuildVersionConflict(ctx context.Context, src ProofSource, checkpoint []byte, size uint64, e Entry, m MapValue, r Entry) ([]byte, error) {
	return build(ctx, src, checkpoint, size, &Bundle{Kind: KindVersionConflict, Entries: []Entry{e, r}, Maps: []MapValue{m}})
}

// BuildMapRoot returns a map-root bundle for epoch record e.
//
// SPEC(design.md 15.1 map-root)
func BuildMapRoot(ctx context.Context, src ProofSource, checkpoint []byte, size uint64, e Entry) ([]byte, error) {
	return build(ctx, src, checkpoint, size, &Bundle{Kind: KindMapRoot, Entries: []Entry{e}})
}

// build sorts b's entries by log index, checks the kind's shape, fills and
// checks the inclusion proofs, and encodes b.
func build(ctx context.Context, src ProofSource, checkpoint []byte, size uint64, b *Bundle) ([]byte, error) {
	cp, err := unverifiedCheckpoint(checkpoint)
	if err != nil {
		return nil, err
	}
	if cp.Size != size {
		return nil, fmt.Errorf("%w: the checkpoint has size %d, not %d", ErrMalformed, cp.Size, size)
	}
	b.Checkpoint = bytes.Clone(checkpoint)
	slices.SortStableFunc(b.Entries, func(x, y Entry) int {
		switch {
		case x.Index < y.Index:
			return -1
		case x.Index > y.Index:
			return 1
		}
		return 0
	})
	for i := 1; i < len(b.Entries); i++ {
		if b.Entries[i].Index == b.Entries[i-1].Index {
			return nil, fmt.Errorf("%w: entry %d given twice", ErrMalformed, b.Entries[i].Index)
		}
	}
	if _, err := b.shape(); err != nil {
		return nil, err
	}
	for i := range b.Entries {
		e := &b.Entries[i]
		if len(e.Inclusion) == 0 && size > 1 {
			if src == nil {
				return nil, fmt.Errorf("evidence: no proof source for the inclusion proof of entry %d", e.Index)
			}
			p, err := src.InclusionProof(ctx, e.Index, size)
			if err != nil {
				return nil, fmt.Errorf("evidence: inclusion proof of %d in %d: %w", e.Index, size, err)
			}
			e.Inclusion = p
		}
		if err := verifyInclusion(cp, *e); err != nil {
			return nil, err
		}
	}
	raw := b.Marshal()
	if len(raw) > MaxSizeV2 {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(raw), MaxSizeV2)
	}
	return raw, nil
}

// unverifiedCheckpoint parses a checkpoint note's text without checking
// its signatures (the builders hold no key).
func unverifiedCheckpoint(raw []byte) (*fmtlog.Checkpoint, error) {
	if len(raw) == 0 || len(raw) > MaxCheckpointSize {
		return nil, fmt.Errorf("%w: checkpoint of %d bytes", ErrMalformed, len(raw))
	}
	_, err := note.Open(raw, note.VerifierList())
	var u *note.UnverifiedNoteError
	if !errors.As(err, &u) {
		return nil, fmt.Errorf("%w: not a signed note: %w", ErrMalformed, err)
	}
	var cp fmtlog.Checkpoint
	if _, err := cp.Unmarshal([]byte(u.Note.Text)); err != nil {
		return nil, fmt.Errorf("%w: not a checkpoint: %w", ErrMalformed, err)
	}
	return &cp, nil
}
