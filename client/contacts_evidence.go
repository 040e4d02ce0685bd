package client

import (
	"context"
	"errors"
)

// errNoBuilders: the kt-evidence/v2 builders are not in this build yet
// (branch i13-evidence).
var errNoBuilders = errors.New("kt-evidence/v2 builders not available")

// mapRegressionEvidence builds and checks the map-regression bundle of
// design.md 13.3: E1 the remembered epoch record with its map proof and
// record, E2 the current epoch cur with the current map proof and record
// (nil for absent), both included in cur's checkpoint.
//
// SPEC(design.md 13.3)
func (c *Client) mapRegressionEvidence(ctx context.Context, old *Contact, cur *Epoch, curProof, curRecord []byte) ([]byte, error) {
	return nil, errNoBuilders
}

// versionConflictEvidence builds and checks the version-conflict bundle of
// design.md 13.3: the epoch record of with, its map proof and record, and
// the logged record got at the same version, all included in e's
// checkpoint.
//
// SPEC(design.md 13.3)
func (c *Client) versionConflictEvidence(ctx context.Context, with *Contact, e *Epoch, got *parsedChange) ([]byte, error) {
	return nil, errNoBuilders
}

// refuseLog is where evidence found by contact monitoring triggers the
// log refusal of design.md 12.2 (ErrLogRefused, on branch i13-client).
func (c *Client) refuseLog(ctx context.Context, bundle []byte) {}
