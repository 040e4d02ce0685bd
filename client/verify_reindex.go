package client

import (
	"errors"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/smt"
	"github.com/keytrans/kt/vrf"
)

// parseReindexed is step 1 for the parts of a lookup answer that only a
// VRF key rotation brings (design.md 11.2).
//
// SPEC(design.md 12.2 step 1)
// SPEC(design.md 11.2)
func parseReindexed(pl *parsedLookup, resp *ktpb.LookupResponse) error {
	if b := resp.GetRecordVrfProof(); len(b) != 0 {
		if len(b) != vrf.ProofSize {
			return fail(StepParse, ErrMalformed, nil, "record VRF proof has %d bytes, want 80", len(b))
		}
		pl.recordVRFProof = b
	}
	pv, pm := resp.GetPrevVrfProof(), resp.GetPrevMapProof()
	if len(pv) == 0 && len(pm) == 0 {
		return nil
	}
	switch {
	case pl.recordVRFProof != nil && len(pv) != 0:
		return fail(StepParse, ErrMalformed, nil, "an answer with both a moved record's VRF proof and a fallback")
	case pl.recordVRFProof != nil && len(pm) == 0:
		return fail(StepParse, ErrMalformed, nil, "a moved record's VRF proof without the map proof at the record's index")
	case pl.recordVRFProof == nil && (len(pv) != vrf.ProofSize || len(pm) == 0):
		return fail(StepParse, ErrMalformed, nil, "the fallback needs an 80-byte VRF proof (%d bytes) and a map proof (%d bytes)", len(pv), len(pm))
	}
	var err error
	if pl.prevMapProof, err = smt.ParseProof(pm); err != nil {
		if errors.Is(err, smt.ErrMalformedProof) {
			return fail(StepParse, ErrMalformed, err, "fallback map proof")
		}
		return fail(StepMap, ErrMapProof, err, "fallback map proof")
	}
	if len(pv) != 0 {
		pl.prevVRFProof = pv
	}
	return nil
}

// verifyReindexed is step 4 of a lookup (the map proof) with the steps
// design.md 11.2 adds after a VRF key rotation: index is the handle's index
// under the current key (step 3), res.LeafHash the record's leaf hash if
// there is a record. It sets res.RecordIndex, the index the record or the
// absence is proved at, and res.NotMoved.
//
//   - Membership at index: the record is the handle's latest; if its index
//     field is not index it was moved, and the answer's record VRF proof,
//     under an earlier key of the chain, MUST give that index, and its
//     prev_map_proof MUST prove the record's leaf at that index too.
//   - Absence at index after a VRF rotation: the fallback MUST be given:
//     the handle's VRF proof under the previous key and a map proof for
//     that index (membership of the record, or absence). A move leaves a
//     leaf at the new index forever, so absence there proves the handle
//     not moved, and rule M4 keeps its old index unchanged.
//
// SPEC(design.md 12.2 step 4)
// SPEC(design.md 11.2): lookups after a VRF rotation, steps 3' to 4 with the fallback.
func verifyReindexed(p *Params, e *Epoch, pl *parsedLookup, res *LookupResult) error {
	root := e.Record.MapRoot
	if pl.prevVRFProof != nil {
		// 4'': the fallback. The current index is absent.
		if len(p.PrevVRFKeys) == 0 {
			return fail(StepVRF, ErrVRF, nil, "a fallback proof, but the VRF key was never rotated")
		}
		if err := smt.Verify(root, res.Index, nil, pl.mapProof); err != nil {
			return fail(StepMap, ErrMapProof, err, "a fallback is given, so the handle's index under the current VRF key must be absent")
		}
		prev := p.PrevVRFKeys[len(p.PrevVRFKeys)-1]
		old, err := prev.Verify(api.VRFInput(pl.handle), pl.prevVRFProof)
		if err != nil {
			return fail(StepVRF, ErrVRF, err, "fallback proof under the previous VRF key")
		}
		var value *[32]byte
		if pl.record != nil {
			value = &res.LeafHash
		}
		if err := smt.Verify(root, old, value, pl.prevMapProof); err != nil {
			return fail(StepMap, ErrMapProof, err, "fallback map proof at the handle's index under the previous VRF key")
		}
		res.RecordIndex, res.NotMoved = old, true
		return nil
	}
	var value *[32]byte
	if pl.record != nil {
		value = &res.LeafHash
	}
	if err := smt.Verify(root, res.Index, value, pl.mapProof); err != nil {
		return fail(StepMap, ErrMapProof, err, "")
	}
	if pl.record == nil {
		if len(p.PrevVRFKeys) > 0 {
			// Absence alone could hide a registered handle not moved yet.
			return fail(StepMap, ErrMapProof, nil, "the handle's index under the current VRF key is absent and the answer has no fallback under the previous key (design.md 11.2)")
		}
		return nil
	}
	if pl.record.Index == res.Index {
		if pl.recordVRFProof != nil {
			return fail(StepParse, ErrMalformed, nil, "a moved record's VRF proof for a record that was not moved")
		}
		return nil
	}
	// 4': a record moved and not changed since.
	if pl.recordVRFProof == nil {
		return fail(StepRecord, ErrRecordMismatch, nil, "record index %x, handle index %x, and no VRF proof of the record's index", pl.record.Index[:8], res.Index[:8])
	}
	if pl.prevMapProof == nil {
		return fail(StepParse, ErrMalformed, nil, "a moved record without the map proof at its own index")
	}
	// The record's leaf at its own (frozen) index: the position the
	// record's commitment and account signature are for.
	if err := smt.Verify(root, pl.record.Index, &res.LeafHash, pl.prevMapProof); err != nil {
		return fail(StepMap, ErrMapProof, err, "map proof at the moved record's own index")
	}
	for i := len(p.PrevVRFKeys) - 1; i >= 0; i-- {
		old, err := p.PrevVRFKeys[i].Verify(api.VRFInput(pl.handle), pl.recordVRFProof)
		if err != nil {
			continue
		}
		if old != pl.record.Index {
			return fail(StepRecord, ErrRecordMismatch, nil, "the moved record's index %x is not the handle's index %x under that earlier VRF key", pl.record.Index[:8], old[:8])
		}
		res.RecordIndex = old
		return nil
	}
	return fail(StepVRF, ErrVRF, nil, "the moved record's VRF proof verifies under no earlier VRF key")
}
