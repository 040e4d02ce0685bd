package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/evidence"
)

// Gossip errors.
var (
	// ErrSplitView: an auditor's view of the log and this client's are not
	// one history. Errors wrapping it are [*SplitViewError] values carrying
	// the evidence.
	ErrSplitView = errors.New("client: split view: the log showed different histories")
	// ErrGossip: an exchange with an auditor failed without showing a
	// conflict (unreachable, malformed or badly signed answer, bad
	// evidence, unknown origin).
	ErrGossip = errors.New("client: gossip failed")
)

// SplitViewError is a conflict found by gossip (design.md 15). Evidence is
// a kt-evidence/v1 bundle (package log/evidence), verified with
// [VerifyEvidence], when the auditor sent one (HTTP 409), when the two
// checkpoints prove the fork on their own (equal sizes, different roots),
// or when the auditor is behind on another branch and the Log service's
// proofs in this client's tree build one; otherwise Ours and Theirs are
// both signed by the log and the directory could not prove them
// consistent.
type SplitViewError struct {
	// Auditor is the auditor's base URL.
	Auditor string
	// Ours and Theirs are the two checkpoint notes.
	Ours, Theirs []byte
	// Evidence is a verified kt-evidence/v1 bundle, or nil.
	Evidence []byte
	// Reason says what failed.
	Reason string
}

func (e *SplitViewError) Error() string {
	return fmt.Sprintf("%v: auditor %s: %s", ErrSplitView, e.Auditor, e.Reason)
}

// Unwrap returns [ErrSplitView].
func (e *SplitViewError) Unwrap() error { return ErrSplitView }

// GossipResult is the outcome of gossip with one auditor.
type GossipResult struct {
	Auditor string
	// Size of the auditor's checkpoint, when it answered 200.
	Size uint64
	// Err is nil when the auditor's checkpoint is consistent with the
	// trusted one; a [*SplitViewError] for a conflict; else an error
	// wrapping [ErrGossip].
	Err error
}

// Gossip posts the trusted epoch checkpoint to every configured auditor
// (design.md 15) and checks each answer: a 200 carries the auditor's
// latest audited checkpoint, which must be signed by the log and
// consistent with the trusted one in whichever direction is larger
// (checked with a consistency proof from the Log service); a 409 carries a
// kt-evidence/v1 bundle, which is verified and returned as a
// [*SplitViewError]. Gossiped checkpoints never replace the trusted one.
// The returned error is the first split view found, if any.
//
// SPEC(design.md 15)
func (c *Client) Gossip(ctx context.Context) ([]GossipResult, error) {
	st, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	if st.Trusted == nil {
		return nil, fmt.Errorf("%w: no trusted checkpoint yet", ErrGossip)
	}
	return c.gossipAll(ctx, st.Trusted)
}

// gossipAll gossips t with every configured auditor.
//
// SPEC(design.md 15)
func (c *Client) gossipAll(ctx context.Context, t *Trusted) ([]GossipResult, error) {
	var first error
	var out []GossipResult
	for _, a := range c.cfg.Auditors {
		r := c.gossipOne(ctx, a, t)
		var sv *SplitViewError
		if first == nil && errors.As(r.Err, &sv) {
			first = sv
		}
		if r.Err != nil {
			c.log.WarnContext(ctx, "gossip", "auditor", a, "err", r.Err)
		}
		out = append(out, r)
	}
	return out, first
}

// SPEC(design.md 15)
func (c *Client) gossipOne(ctx context.Context, auditor string, t *Trusted) GossipResult {
	res := GossipResult{Auditor: auditor}
	bad := func(format string, args ...any) GossipResult {
		res.Err = fmt.Errorf("%w: %s: %s", ErrGossip, auditor, fmt.Sprintf(format, args...))
		return res
	}
	code, body, err := evidence.Post(ctx, c.cfg.HTTPClient, auditor, t.Checkpoint)
	if err != nil {
		return bad("%v", err)
	}
	switch code {
	case http.StatusOK:
	case http.StatusConflict:
		// SPEC(design.md 15): "409 with an evidence bundle if not".
		kind, what, needsReplay, err := CheckEvidence(c.params(), body)
		if err != nil {
			return bad("409 with evidence that does not verify: %v", err)
		}
		if needsReplay {
			return bad("409 with %s evidence, which needs a replay of the log to be believed", kind)
		}
		// SPEC(design.md 12.2): the client stores verified evidence and
		// refuses the log from then on.
		if err := c.storeRefusal(ctx, kind, what, body); err != nil {
			c.log.ErrorContext(ctx, "gossip: storing the refusal of the log", "auditor", auditor, "err", err)
		}
		if kind == evidence.KindFork {
			res.Err = &SplitViewError{Auditor: auditor, Ours: t.Checkpoint, Evidence: body, Reason: "the auditor sent evidence of " + what}
			return res
		}
		// SPEC(design.md 15.1): evidence of a broken rule, not of two
		// histories: the log is refused, and the answer says why.
		res.Err = &LogRefusedError{Origin: c.params().Origin, KeyHash: c.params().LogVerifier.KeyHash(),
			Refusal: &Refusal{Kind: string(kind), ID: evidence.ID(body), What: what, Bundle: body, Time: c.cfg.Now()}}
		return res
	default:
		return bad("HTTP %d: %.200s", code, body)
	}
	cp, _, err := log.ParseCheckpoint(body, c.params().Origin, c.params().LogVerifier)
	if err != nil {
		return bad("the auditor's checkpoint: %v", err)
	}
	res.Size = cp.Size
	theirRoot := [32]byte(cp.Hash)
	conflict := func(reason string, ev []byte) GossipResult {
		res.Err = &SplitViewError{Auditor: auditor, Ours: t.Checkpoint, Theirs: body, Evidence: ev, Reason: reason}
		if ev != nil {
			// SPEC(design.md 12.2): evidence the client built itself
			// refuses the log too, once it verifies.
			if kind, what, needsReplay, err := CheckEvidence(c.params(), ev); err == nil && !needsReplay {
				if err := c.storeRefusal(ctx, kind, what, ev); err != nil {
					c.log.ErrorContext(ctx, "gossip: storing the refusal of the log", "auditor", auditor, "err", err)
				}
			}
			// SPEC(design.md 15): "The body may also be an evidence
			// bundle, which the auditor verifies offline and records
			// (409, echoing it)." The auditor could not build this one.
			if code, _, err := evidence.Post(ctx, c.cfg.HTTPClient, auditor, ev); err != nil || code != http.StatusConflict {
				c.log.WarnContext(ctx, "gossip: the auditor did not record the evidence", "auditor", auditor, "status", code, "err", err)
			}
		}
		return res
	}
	switch {
	case cp.Size == t.Size:
		if theirRoot != t.Root {
			// Two notes of one size are a bundle on their own; Build puts
			// them in the canonical order and needs no proof source.
			b, err := evidence.Build(ctx, c.params().LogVerifier, t.Checkpoint, body, nil)
			if err != nil {
				return bad("building evidence from two checkpoints of size %d: %v", cp.Size, err)
			}
			return conflict("same size, different root hashes", b.Marshal())
		}
		return res
	case c.cfg.Log == nil:
		return bad("no Log service configured to check consistency")
	}
	oldSize, newSize := t.Size, cp.Size
	oldRoot, newRoot := t.Root, theirRoot
	if cp.Size < t.Size {
		oldSize, newSize, oldRoot, newRoot = newSize, oldSize, newRoot, oldRoot
	}
	pr, err := c.cfg.Log.GetConsistencyProof(ctx, &ktpb.GetConsistencyProofRequest{OldSize: oldSize, NewSize: newSize})
	if status.Code(err) == codes.OutOfRange {
		// The log signed a checkpoint of this size and will not prove it:
		// whoever it showed that checkpoint to saw another log.
		return conflict(fmt.Sprintf("the log signed size %d but refuses to prove it from size %d: %v", newSize, oldSize, err), nil)
	}
	if err != nil {
		return bad("consistency proof %d to %d: %v", oldSize, newSize, err)
	}
	if err := checkProof("consistency proof", pr.GetHashes()); err != nil {
		return bad("%v", err)
	}
	if err := log.VerifyConsistency(oldSize, newSize, pr.GetHashes(), oldRoot[:], newRoot[:]); err != nil {
		// When the Log service serves the larger tree (ours, with the
		// auditor behind on another branch), its proofs build a bundle
		// that anyone can check; otherwise the two notes are all we have.
		var ev []byte
		if b, berr := evidence.Build(ctx, c.params().LogVerifier, t.Checkpoint, body, LogReader{c.cfg.Log}); berr == nil {
			ev = b.Marshal()
		}
		return conflict(fmt.Sprintf("the log cannot prove size %d consistent with size %d: %v", oldSize, newSize, err), ev)
	}
	return res
}

// Evidence encodes checkpoint notes a and b and the proof lines as a
// kt-evidence/v1 bundle in the order given, with [evidence.Bundle.Marshal]
// and without checking anything; [VerifyEvidence] says whether it proves a
// fork. Use evidence.Build to build the canonical bundle of two
// checkpoints from a proof source.
//
// SPEC(design.md 15)
func Evidence(a, b []byte, pr [][]byte) []byte {
	return (&evidence.Bundle{A: a, B: b, Proof: pr}).Marshal()
}

// Evidence returns the kt-evidence/v1 bundle that proves the fork e
// reports, for an auditor or anyone else to check offline: the received
// proof when it already proves it (it was computed in tree New, and
// TrustedSize is not a power of two); otherwise one built by evidence.Build
// from l, a Log service serving the larger of the two trees (the
// directory's, when it showed this client a fork that extends its own
// view). Two checkpoints of one size need no Log service (l may be nil).
// The error wraps [ErrEvidence] when the proofs at hand do not prove a fork
// (l serves the smaller tree, say): hand e's checkpoints to an auditor
// ([Client.Gossip] does it with the trusted one).
//
// SPEC(design.md 15)
func (e *InconsistencyError) Evidence(ctx context.Context, p *Params, l ktpb.LogClient) ([]byte, error) {
	if e.TrustedSize < e.NewSize {
		b := &evidence.Bundle{A: e.Trusted, B: e.New, Proof: e.Proof}
		if _, err := b.Verify(p.LogVerifier); err == nil {
			return b.Marshal(), nil
		}
	}
	var src evidence.ProofSource
	if l != nil {
		src = LogReader{l}
	}
	if src == nil && e.TrustedSize != e.NewSize {
		return nil, fmt.Errorf("%w: the received proof proves nothing and there is no Log service to ask", ErrEvidence)
	}
	b, err := evidence.Build(ctx, p.LogVerifier, e.Trusted, e.New, src)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEvidence, err)
	}
	return b.Marshal(), nil
}

// ErrEvidence reports an evidence bundle that is malformed or does not
// prove what it claims (for [VerifyEvidence], a kt-evidence/v1 bundle that
// does not prove misbehaviour). Errors wrapping it also wrap the [evidence]
// package's typed error (evidence.ErrMalformed, ErrCheckpoint, ErrOrder,
// ErrProof or ErrNoFork from VerifyEvidence; evidence.ErrMalformed,
// ErrSignature, ErrProof or ErrNotEvidence from [CheckEvidence]).
var ErrEvidence = errors.New("client: evidence does not prove misbehaviour")

// VerifyEvidence checks that bundle is a kt-evidence/v1 bundle that proves
// a fork of the log of p (design.md 15), offline, with the log key alone,
// using the shared [evidence.Verify], and returns what it proves. The
// error wraps both [ErrEvidence] and the evidence package's typed error.
// [CheckEvidence] accepts every kind of both versions.
//
// SPEC(design.md 15)
func VerifyEvidence(p *Params, bundle []byte) (*evidence.Fork, error) {
	if p.LogVerifier == nil || p.LogVerifier.Name() != p.Origin {
		return nil, fmt.Errorf("%w: the log verifier is not named by the origin %q", ErrEvidence, p.Origin)
	}
	f, err := evidence.Verify(bundle, p.LogVerifier)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEvidence, err)
	}
	return f, nil
}
