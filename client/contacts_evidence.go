package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/keytrans/kt/log/evidence"
)

// mapRegressionEvidence builds and checks the map-regression bundle of
// design.md 13.3: E1 the remembered epoch record with its map proof and
// record, E2 the current epoch cur with the current map proof and record
// (nil for absent), both included in cur's checkpoint (E1's inclusion
// proof fetched from the Log service by index).
//
// SPEC(design.md 13.3): "map-regression evidence (E1 = remembered epoch
// record + map proof + record; E2 = the current one; inclusion proofs of
// both epoch records under the current checkpoint, E1's fetched from the
// Log service by index)".
func (c *Client) mapRegressionEvidence(ctx context.Context, old *Contact, cur *Epoch, curProof, curRecord []byte) (raw []byte, what string, err error) {
	if c.cfg.Log == nil {
		return nil, "", errors.New("no Log service (Config.Log) to fetch the inclusion proof of the remembered epoch")
	}
	rec, err := cur.Record.MarshalBinary()
	if err != nil {
		return nil, "", err
	}
	raw, err = evidence.BuildMapRegression(ctx, LogReader{c.cfg.Log}, cur.Checkpoint, cur.Size,
		evidence.Entry{Index: old.Size - 1, Data: old.EpochRecord},
		evidence.Entry{Index: cur.Size - 1, Data: rec},
		evidence.MapValue{Proof: old.MapProof, Record: old.Record},
		evidence.MapValue{Proof: curProof, Record: curRecord})
	if err != nil {
		return nil, "", err
	}
	return c.checkBundle(raw, evidence.KindMapRegression)
}

// versionConflictEvidence builds and checks the version-conflict bundle of
// design.md 13.3: the epoch record of with, its map proof and record, and
// the logged record got at the same version, all included in e's
// checkpoint.
//
// SPEC(design.md 13.3): "A record at v with another leaf: alert with
// version-conflict evidence".
func (c *Client) versionConflictEvidence(ctx context.Context, with *Contact, e *Epoch, got *parsedChange) (raw []byte, what string, err error) {
	if c.cfg.Log == nil {
		return nil, "", errors.New("no Log service (Config.Log) to fetch the inclusion proof of the remembered epoch")
	}
	raw, err = evidence.BuildVersionConflict(ctx, LogReader{c.cfg.Log}, e.Checkpoint, e.Size,
		evidence.Entry{Index: with.Size - 1, Data: with.EpochRecord},
		evidence.MapValue{Proof: with.MapProof, Record: with.Record},
		evidence.Entry{Index: got.logIndex, Data: got.recordBytes, Inclusion: got.inclusion})
	if err != nil {
		return nil, "", err
	}
	return c.checkBundle(raw, evidence.KindVersionConflict)
}

// checkBundle returns raw and what it proves if evidence.Check accepts it
// as a bundle of kind for this log: an alert never carries evidence that
// does not verify.
func (c *Client) checkBundle(raw []byte, want evidence.Kind) ([]byte, string, error) {
	kind, what, replay, err := CheckEvidence(c.params(), raw)
	switch {
	case err != nil:
		return nil, "", fmt.Errorf("the %s bundle does not verify: %w", want, err)
	case kind != want || replay:
		return nil, "", fmt.Errorf("the bundle checks as %s, not %s", kind, want)
	}
	return raw, what, nil
}

// refuseLog stores checked evidence found by contact monitoring as the
// refusal of the log (design.md 12.2, 15.1): from then on this client,
// and any later one on its store, fails with ErrLogRefused. A failure to
// store is logged; the alert itself is returned either way.
//
// SPEC(design.md 13.3)
func (c *Client) refuseLog(ctx context.Context, kind evidence.Kind, what string, bundle []byte) {
	if err := c.storeRefusal(ctx, kind, what, bundle); err != nil {
		c.log.ErrorContext(ctx, "contact monitoring: storing the refusal of the log failed", "kind", kind, "err", err)
	}
}
