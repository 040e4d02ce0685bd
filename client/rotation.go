package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/vrf"
)

// ErrRotation reports a key rotation the client refuses (design.md 11.1): a
// record that does not continue the chain of its kind (an
// *api.RotationError: a proof by a key that is not the current one, a bad
// new-key proof, a skipped sequence), or one not proved to be in the log,
// or a directory that serves another record where the client accepted one.
// A rotation record that is not in a witnessed checkpoint fails with the
// error of that checkpoint instead ([ErrCheckpointSignature],
// [ErrWitnessQuorum], [ErrInconsistent]).
var ErrRotation = errors.New("client: key rotation not accepted")

// StepRotation is the [VerifyError.Step] of rotation checks.
const StepRotation = "key rotation"

// Rotation is a key rotation record the client verified and follows.
type Rotation struct {
	LogIndex uint64
	Record   []byte
	Parsed   *api.RotationRecord
}

type rotationJSON struct {
	LogIndex uint64 `json:"log_index"`
	Record   []byte `json:"record"`
}

// vrfProofVerifier verifies the ECVRF proofs of VRF key rotations
// (design.md 11.2).
var vrfProofVerifier api.VRFProofVerifier = vrf.VerifyRotationProof

// effParams are the pinned parameters with the first n accepted rotations
// applied.
type effParams struct {
	n int
	p *Params
}

// params returns the parameters every verification of this client uses.
func (c *Client) params() *Params { return c.eff.Load().p }

// applyRotations makes the client's parameters the pinned ones with rs
// applied; c.load calls it with the stored rotations.
func (c *Client) applyRotations(rs []Rotation) error {
	if e := c.eff.Load(); e.n == len(rs) {
		return nil
	}
	p, err := c.pinned.WithRotations(rs)
	if err != nil {
		return err
	}
	c.eff.Store(&effParams{n: len(rs), p: p})
	return nil
}

// keyAt is a key that took over at a log index.
type keyAt struct {
	from uint64 // log index of the rotation record
	key  [32]byte
}

// rotationState is what Params know of the rotations applied to them.
type rotationState struct {
	chains   map[api.KeyKind]api.RotationChain
	recovery []keyAt // the recovery keys after each recovery rotation
	// genesisRecovery is the pinned recovery key.
	genesisRecovery [32]byte
	// pinnedLog verifies the log key the parameters were pinned with:
	// witness and audit policies that list logs name it.
	pinnedLog note.Verifier
	// pastLog are the key hashes of the log keys rotated out: their
	// signatures on a checkpoint during a transition are no news.
	pastLog map[uint32]bool
}

// chain returns the current key of kind k.
func (p *Params) chain(k api.KeyKind) (api.RotationChain, error) {
	if p.rot != nil {
		if c, ok := p.rot.chains[k]; ok {
			return c, nil
		}
	}
	c := api.RotationChain{Kind: k}
	switch k {
	case api.KeyLog:
		if p.logKey == ([32]byte{}) {
			return c, fail(StepParams, ErrInvalidParams, nil, "the raw log key is unknown (build the parameters with NewParams to follow log key rotations)")
		}
		c.Key = p.logKey
	case api.KeyRecovery:
		c.Key = p.RecoveryKey
	case api.KeyVRF:
		if p.VRFKey == nil {
			return c, fail(StepParams, ErrInvalidParams, nil, "no VRF key")
		}
		copy(c.Key[:], p.VRFKey.Bytes())
	}
	return c, nil
}

// recoveryKeyAt returns the recovery key that rule R6 accepts for a change
// record at log index j: the key of the last recovery rotation before j,
// or the pinned one.
//
// SPEC(design.md 11.1): "from the record's log position on, R6 accepts
// only the new recovery key".
func (p *Params) recoveryKeyAt(j uint64) [32]byte {
	k := p.RecoveryKey
	if p.rot == nil {
		return k
	}
	k = p.rot.genesisRecovery
	for _, r := range p.rot.recovery {
		if r.from < j {
			k = r.key
		}
	}
	return k
}

// WithRotations returns p with the rotations rs applied in order: the log
// verifier and the recovery key are the current ones. Each record must
// continue the chain of its kind (api.RotationChain.Next); the client
// checked that they are in the log when it accepted them.
//
// SPEC(design.md 11.1)
func (p *Params) WithRotations(rs []Rotation) (*Params, error) {
	if len(rs) == 0 {
		return p, nil
	}
	if p.rot != nil {
		return nil, fail(StepParams, ErrInvalidParams, nil, "rotations applied twice")
	}
	out := *p
	out.rot = &rotationState{chains: map[api.KeyKind]api.RotationChain{}, genesisRecovery: p.RecoveryKey, pinnedLog: p.LogVerifier, pastLog: map[uint32]bool{}}
	for _, r := range rs {
		rec := r.Parsed
		if rec == nil {
			var err error
			if rec, err = api.ParseRotationRecord(r.Record); err != nil {
				return nil, fail(StepParse, ErrMalformed, err, "stored rotation record")
			}
		}
		c, err := out.chain(rec.Kind)
		if err != nil {
			return nil, err
		}
		next, err := c.Next(p.Origin, rec, vrfProofVerifier)
		if err != nil {
			return nil, fail(StepRotation, ErrRotation, err, "rotation at log index %d", r.LogIndex)
		}
		out.rot.chains[rec.Kind] = next
		switch rec.Kind {
		case api.KeyLog:
			out.rot.pastLog[out.LogVerifier.KeyHash()] = true
			out.logKey = next.Key
			v, err := note.NewVerifier(log.Ed25519VerifierKey(p.Origin, next.Key))
			if err != nil {
				return nil, fail(StepParams, ErrInvalidParams, err, "rotated log key")
			}
			out.LogVerifier = v
		case api.KeyRecovery:
			out.RecoveryKey = next.Key
			out.rot.recovery = append(out.rot.recovery, keyAt{from: r.LogIndex, key: next.Key})
		case api.KeyVRF:
			// SPEC(design.md 11.2): lookups use the new key; the earlier
			// ones prove moved records and the fallback.
			k, err := vrf.NewPublicKey(next.Key[:])
			if err != nil {
				return nil, fail(StepRotation, ErrRotation, err, "rotated VRF key")
			}
			out.PrevVRFKeys = append(slices.Clone(out.PrevVRFKeys), out.VRFKey)
			out.VRFKey = k
		}
	}
	return &out, nil
}

// VerifyRotations verifies a GetRotations answer (design.md 11.1) for a
// client with the pinned parameters pinned, the rotations accepted so far
// and the trusted state t, and returns every accepted rotation and the
// trusted state after them. For each record not accepted yet, in log
// order:
//
//  1. it parses ([ErrMalformed]) and continues the chain of its kind:
//     sequence = the last + 1, old key = the current key, both proofs
//     verify ([ErrRotation] wrapping an *api.RotationError);
//  2. it is in the log: included in the trusted checkpoint (a record below
//     its size), or in its handover epoch's checkpoint, which is verified
//     like an epoch part (design.md 12.2 steps 2.1 to 2.4: signed by the
//     current log key, the witness quorum, consistent with the trusted
//     checkpoint, the epoch record its last entry) but not for freshness or
//     audit statements, and becomes the trusted checkpoint.
//
// A record the client accepted must be served unchanged at the same index.
//
// SPEC(design.md 11.1)
func VerifyRotations(pinned *Params, accepted []Rotation, t *Trusted, resp *ktpb.Rotations, now time.Time) ([]Rotation, *Trusted, error) {
	if err := pinned.Validate(); err != nil {
		return nil, nil, err
	}
	p, err := pinned.WithRotations(accepted)
	if err != nil {
		return nil, nil, err
	}
	out := slices.Clone(accepted)
	for i, r := range resp.GetRotations() {
		raw := r.GetRecord()
		rec, err := api.ParseRotationRecord(raw)
		if err != nil {
			return nil, nil, fail(StepParse, ErrMalformed, err, "rotation %d", i)
		}
		j := r.GetLogIndex()
		if k := slices.IndexFunc(out, func(a Rotation) bool { return a.LogIndex == j }); k >= 0 {
			if !bytes.Equal(out[k].Record, raw) {
				return nil, nil, fail(StepRotation, ErrRotation, nil, "the directory serves another rotation record at log index %d than the one this client accepted", j)
			}
			continue
		}
		if n := len(out); n > 0 && j < out[n-1].LogIndex {
			return nil, nil, fail(StepParse, ErrMalformed, nil, "rotation records out of log order")
		}
		// 1. The chain.
		c, err := p.chain(rec.Kind)
		if err != nil {
			return nil, nil, err
		}
		if _, err := c.Next(p.Origin, rec, vrfProofVerifier); err != nil {
			return nil, nil, fail(StepRotation, ErrRotation, err, "rotation record at log index %d", j)
		}
		// 2. In the log, under a checkpoint the client trusts.
		if err := checkProof("rotation inclusion proof", r.GetInclusionProof()); err != nil {
			return nil, nil, err
		}
		leaf := api.LeafHash(raw)
		if part := r.GetEpoch(); part != nil {
			q := *p
			q.Audit = nil // a handover epoch needs the witnesses, not the auditors
			e, err := verifyEpochPart(&q, t, part, now)
			if err != nil {
				return nil, nil, err
			}
			if j >= e.Size {
				return nil, nil, fail(StepRotation, ErrRotation, nil, "rotation record at log index %d is beyond its handover checkpoint (size %d)", j, e.Size)
			}
			if err := log.VerifyInclusion(j, e.Size, leaf[:], r.GetInclusionProof(), e.Root[:]); err != nil {
				return nil, nil, fail(StepRotation, ErrRotation, err, "rotation record at log index %d is not in its handover checkpoint", j)
			}
			t = e.Trusted()
		} else {
			if t == nil || j >= t.Size {
				return nil, nil, fail(StepRotation, ErrRotation, nil, "rotation record at log index %d comes without a handover epoch and is not below the trusted size", j)
			}
			if err := log.VerifyInclusion(j, t.Size, leaf[:], r.GetInclusionProof(), t.Root[:]); err != nil {
				return nil, nil, fail(StepRotation, ErrRotation, err, "rotation record at log index %d is not in the trusted checkpoint", j)
			}
		}
		out = append(out, Rotation{LogIndex: j, Record: bytes.Clone(raw), Parsed: rec})
		if p, err = pinned.WithRotations(out); err != nil {
			return nil, nil, err
		}
	}
	return out, t, nil
}

// FollowRotations asks the directory for its key rotations, verifies the
// new ones ([VerifyRotations]) and stores them with the trusted state they
// lead to; from then on the client verifies with the new keys. It returns
// how many rotations it accepted. A refused rotation fails with a
// [*VerifyError] and nothing is stored.
//
// Lookups and monitoring call it themselves when a checkpoint does not
// verify under the current log key or carries a signature by another key
// of the log's name, and when a recovery change is not signed by the
// current recovery key.
//
// SPEC(design.md 11.1)
func (c *Client) FollowRotations(ctx context.Context) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.followRotations(ctx)
}

func (c *Client) followRotations(ctx context.Context) (int, error) {
	st, err := c.load(ctx)
	if err != nil {
		return 0, err
	}
	if err := st.refused(c.params()); err != nil {
		return 0, err
	}
	resp, err := c.dir.GetRotations(ctx, &ktpb.GetRotationsRequest{KnownSize: knownSize(st.Trusted)})
	if err != nil {
		return 0, fmt.Errorf("client: key rotations: %w", err)
	}
	acc, t, err := VerifyRotations(c.pinned, st.Rotations, st.Trusted, resp, c.cfg.Now())
	if err != nil {
		c.log.Warn("client: REFUSED a key rotation served by the directory", "err", err)
		return 0, err
	}
	n := len(acc) - len(st.Rotations)
	if n == 0 {
		return 0, nil
	}
	if err := c.commit(ctx, st.Trusted, func(s *State) error {
		s.Trusted, s.Rotations = t, acc
		return nil
	}); err != nil {
		return 0, err
	}
	if err := c.applyRotations(acc); err != nil {
		return 0, err
	}
	for _, r := range acc[len(acc)-n:] {
		c.log.Warn("client: followed a key rotation", "kind", r.Parsed.Kind.String(), "sequence", r.Parsed.Sequence, "log_index", r.LogIndex)
	}
	return n, nil
}

// withRotations runs op (under c.mu); if its checkpoint does not verify
// under the current log key, it follows the directory's rotations and, if
// it accepted any, runs op again. After a success it follows them too when
// the trusted checkpoint carries a signature by another key of the log's
// name: the log signs with its old and new keys during a rotation.
func withRotations[T any](ctx context.Context, c *Client, op func() (T, error)) (T, error) {
	v, err := retry(op)
	// SPEC(design.md 11.2): a VRF proof under a key the client does not
	// know yet may follow a rotation of the VRF key.
	if errors.Is(err, ErrCheckpointSignature) || errors.Is(err, ErrVRF) {
		n, ferr := c.followRotations(ctx)
		if ferr != nil {
			var zero T
			return zero, errors.Join(err, ferr)
		}
		if n == 0 {
			return v, err
		}
		return retry(op)
	}
	if err != nil {
		return v, err
	}
	if c.rotationHinted(ctx, v) {
		if _, ferr := c.followRotations(ctx); ferr != nil {
			var zero T
			return zero, ferr
		}
	}
	return v, nil
}

// trustedHolder is a verified result that names the trusted epoch it
// left in the state (*LookupResult, *MonitorReport).
type trustedHolder interface{ trustedEpoch() *Trusted }

func (r *LookupResult) trustedEpoch() *Trusted  { return r.Trusted }
func (r *MonitorResult) trustedEpoch() *Trusted { return r.Trusted }

// hintMemo remembers the last checkpoint rotationHinted examined, under
// which parameters, and its answer: lookups within one epoch share a
// checkpoint, whose signature lines need reading once. Guarded by
// Client.mu.
type hintMemo struct {
	checkpoint []byte
	params     *Params
	hinted     bool
}

// rotationHinted reports whether the trusted checkpoint (the one result
// left in the state, or the stored one) carries a signature named by the
// origin under a key other than the current one.
func (c *Client) rotationHinted(ctx context.Context, result any) bool {
	var t *Trusted
	if h, ok := result.(trustedHolder); ok {
		t = h.trustedEpoch()
	}
	if t == nil {
		if st, err := c.load(ctx); err == nil {
			t = st.Trusted
		}
	}
	if t == nil {
		return false
	}
	p := c.params()
	if m := &c.hint; m.params == p && bytes.Equal(m.checkpoint, t.Checkpoint) {
		return m.hinted
	}
	hinted := false
	if n, err := note.Open(t.Checkpoint, note.VerifierList(p.LogVerifier)); err == nil {
		for _, s := range n.UnverifiedSigs {
			if s.Name == p.Origin && s.Hash != p.LogVerifier.KeyHash() && (p.rot == nil || !p.rot.pastLog[s.Hash]) {
				hinted = true
			}
		}
	}
	c.hint = hintMemo{checkpoint: t.Checkpoint, params: p, hinted: hinted}
	return hinted
}
