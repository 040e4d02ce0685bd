package ktctl

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/keytrans/kt/api"
	klog "github.com/keytrans/kt/log"
)

// Authorizer is a decoded authorizer of a change record.
type Authorizer struct {
	Role   string `json:"role"`
	Digest Hex    `json:"digest"`
}

// Change is a decoded change record.
type Change struct {
	Index       Hex          `json:"index"`
	Version     uint64       `json:"version"`
	Commitment  Hex          `json:"commitment"`
	Prev        Hex          `json:"prev"`
	Kind        string       `json:"kind"`
	Authorizers []Authorizer `json:"authorizers"`
	Signer      Hex          `json:"signer"`
	// SignatureValid reports whether the signature verifies over the
	// change statement for the log's origin (rule R1).
	SignatureValid bool `json:"signature_valid"`
}

// Epoch is a decoded epoch record.
type Epoch struct {
	Epoch   uint64    `json:"epoch"`
	Time    time.Time `json:"time"`
	LogSize uint64    `json:"log_size"`
	MapRoot Hex       `json:"map_root"`
	MapSize uint64    `json:"map_size"`
}

// Entry is one decoded log entry.
type Entry struct {
	// LogIndex is the entry's position in the log.
	LogIndex uint64 `json:"log_index"`
	// Type is "change", "epoch", or "malformed".
	Type string `json:"type"`
	// LeafHash is the RFC 6962 leaf hash of the entry.
	LeafHash Hex     `json:"leaf_hash"`
	Change   *Change `json:"change,omitempty"`
	Epoch    *Epoch  `json:"epoch,omitempty"`
	// Error says why the entry does not parse, for "malformed".
	Error string `json:"error,omitempty"`
	// Included reports whether the entry's inclusion proof in the
	// checkpoint verified; nil when not checked.
	Included *bool `json:"included,omitempty"`
	// Raw is the entry's encoding.
	Raw Hex `json:"raw"`
}

// EpochTime converts an epoch record timestamp (Unix milliseconds).
func EpochTime(ms uint64) time.Time {
	return time.UnixMilli(int64(min(ms, 1<<63-1))).UTC()
}

func decodeEpoch(r *api.EpochRecord) *Epoch {
	return &Epoch{Epoch: r.Epoch, Time: EpochTime(r.Timestamp), LogSize: r.LogSize, MapRoot: r.MapRoot[:], MapSize: r.MapSize}
}

// DecodeEntry decodes the entry at log index i. A change record's
// signature is checked for origin.
func DecodeEntry(i uint64, raw []byte, origin string) *Entry {
	lh := api.LeafHash(raw)
	e := &Entry{LogIndex: i, LeafHash: lh[:], Raw: raw}
	parsed, err := api.ParseEntry(raw)
	if err != nil {
		e.Type, e.Error = "malformed", err.Error()
		return e
	}
	switch r := parsed.(type) {
	case *api.ChangeRecord:
		e.Type = api.TypeChange.String()
		e.Change = DecodeChange(r, origin)
	case *api.EpochRecord:
		e.Type = api.TypeEpoch.String()
		e.Epoch = decodeEpoch(r)
	case *api.RotationRecord:
		e.Type = api.TypeRotation.String() + " of the " + r.Kind.String() + " key"
	case *api.MoveEntry:
		// SPEC(design.md 11.2)
		e.Type = fmt.Sprintf("%s of index %x to %x (VRF rotation %d)", api.TypeMove, r.OldIndex[:8], r.NewIndex[:8], r.Sequence)
	}
	return e
}

// DecodeChange decodes a parsed change record.
func DecodeChange(r *api.ChangeRecord, origin string) *Change {
	c := &Change{
		Index: r.Index[:], Version: r.Version, Commitment: r.Commitment[:], Prev: r.Prev[:],
		Kind: r.Kind.String(), Signer: r.Signer[:], Authorizers: []Authorizer{},
		SignatureValid: r.VerifySignature(origin) == nil,
	}
	for _, a := range r.Authorizers {
		c.Authorizers = append(c.Authorizers, Authorizer{Role: a.Role.String(), Digest: a.Digest[:]})
	}
	return c
}

// MaxListEntries bounds the entries of one [ListEntries] call, which holds
// them all in memory and fetches one proof per entry.
const MaxListEntries = 10000

// ListEntries fetches the entries [start, end) of the log under the
// verified checkpoint cp and decodes them. With prove, each entry's
// inclusion proof in cp is fetched and verified (concurrently); a failure
// is a [*VerifyError] returned with the entries. A malformed entry or a
// change record whose signature does not verify is reported in the entry,
// and as a [*VerifyError] after all entries are decoded.
func ListEntries(ctx context.Context, r klog.Reader, cp *Checkpoint, start, end uint64, prove bool) ([]*Entry, error) {
	if start >= end {
		return nil, argErr("empty range [%d, %d): END must be greater than START", start, end)
	}
	if end > cp.Size {
		return nil, argErr("range [%d, %d) goes beyond the checkpoint's size %d", start, end, cp.Size)
	}
	if end-start > MaxListEntries {
		return nil, argErr("range [%d, %d) has %d entries, more than the limit of %d for one listing (ktctl verify checks a whole log)", start, end, end-start, MaxListEntries)
	}
	raws, err := FetchEntries(ctx, r, start, end)
	if err != nil {
		return nil, err
	}
	out := make([]*Entry, len(raws))
	for i, raw := range raws {
		out[i] = DecodeEntry(start+uint64(i), raw, cp.Origin)
	}
	var errs []error
	if prove {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(8)
		root := cp.RootHash()
		verrs := make([]error, len(out))
		for i, e := range out {
			g.Go(func() error {
				p, err := r.InclusionProof(gctx, e.LogIndex, cp.Size)
				if err != nil {
					return fmt.Errorf("inclusion proof of entry %d: %w", e.LogIndex, err)
				}
				ok := proof.VerifyInclusion(rfc6962.DefaultHasher, e.LogIndex, cp.Size, e.LeafHash, p, root[:]) == nil
				e.Included = &ok
				if !ok {
					verrs[i] = verifyErr("inclusion proof", nil, "entry %d is not included in the checkpoint of size %d", e.LogIndex, cp.Size)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		errs = append(errs, verrs...)
	}
	for _, e := range out {
		switch {
		case e.Type == "malformed":
			errs = append(errs, verifyErr("entry", nil, "entry %d is malformed: %s", e.LogIndex, e.Error))
		case e.Change != nil && !e.Change.SignatureValid:
			errs = append(errs, verifyErr("entry", nil, "change record at %d: the signature does not verify (rule R1)", e.LogIndex))
		}
	}
	return out, errors.Join(errs...)
}

// FetchEntries fetches entries [start, end), following the reader's
// paging, and checks that it got exactly that many.
func FetchEntries(ctx context.Context, r klog.Reader, start, end uint64) ([][]byte, error) {
	out := make([][]byte, 0, min(end-start, 1<<16))
	for pos := start; pos < end; {
		es, err := r.Entries(ctx, pos, end)
		if err != nil {
			return nil, fmt.Errorf("fetching entries [%d, %d): %w", pos, end, err)
		}
		if len(es) == 0 || uint64(len(es)) > end-pos {
			return nil, fmt.Errorf("fetching entries [%d, %d): got %d entries", pos, end, len(es))
		}
		out = append(out, es...)
		pos += uint64(len(es))
	}
	return out, nil
}
