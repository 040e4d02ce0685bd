package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/log"
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
// a kt-evidence/v1 bundle, verified with [VerifyEvidence], when the auditor
// sent one (HTTP 409) or when the two checkpoints prove the fork on their
// own (equal sizes, different roots); otherwise Ours and Theirs are both
// signed by the log and the directory could not prove them consistent.
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

// maxGossipBody bounds an auditor's answer.
const maxGossipBody = 1 << 20

// Gossip posts the trusted epoch checkpoint to every configured auditor
// (design.md 15) and checks each answer: a 200 carries the auditor's
// latest audited checkpoint, which must be signed by the log and
// consistent with the trusted one in whichever direction is larger
// (checked with a consistency proof from the Log service); a 409 carries a
// kt-evidence/v1 bundle, which is verified and returned as a
// [*SplitViewError]. Gossiped checkpoints never replace the trusted one.
// The returned error is the first split view found, if any.
func (c *Client) Gossip(ctx context.Context) ([]GossipResult, error) {
	st, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	if st.Trusted == nil {
		return nil, fmt.Errorf("%w: no trusted checkpoint yet", ErrGossip)
	}
	var first error
	var out []GossipResult
	for _, a := range c.cfg.Auditors {
		r := c.gossipOne(ctx, a, st.Trusted)
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

func (c *Client) gossipOne(ctx context.Context, auditor string, t *Trusted) GossipResult {
	res := GossipResult{Auditor: auditor}
	bad := func(format string, args ...any) GossipResult {
		res.Err = fmt.Errorf("%w: %s: %s", ErrGossip, auditor, fmt.Sprintf(format, args...))
		return res
	}
	url := strings.TrimSuffix(auditor, "/") + "/kt/v1/gossip"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(t.Checkpoint))
	if err != nil {
		return bad("%v", err)
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return bad("%v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxGossipBody+1))
	if err != nil {
		return bad("reading the answer: %v", err)
	}
	if len(body) > maxGossipBody {
		return bad("answer larger than %d bytes", maxGossipBody)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusConflict:
		// SPEC(design.md 15): "409 with an evidence bundle if not".
		if err := VerifyEvidence(c.p, body); err != nil {
			return bad("409 with evidence that does not verify: %v", err)
		}
		res.Err = &SplitViewError{Auditor: auditor, Ours: t.Checkpoint, Evidence: body, Reason: "the auditor sent evidence of a fork"}
		return res
	default:
		return bad("HTTP %d: %.200s", resp.StatusCode, body)
	}
	cp, _, err := log.ParseCheckpoint(body, c.p.Origin, c.p.LogVerifier)
	if err != nil {
		return bad("the auditor's checkpoint: %v", err)
	}
	res.Size = cp.Size
	theirRoot := [32]byte(cp.Hash)
	conflict := func(reason string, evidence []byte) GossipResult {
		res.Err = &SplitViewError{Auditor: auditor, Ours: t.Checkpoint, Theirs: body, Evidence: evidence, Reason: reason}
		return res
	}
	switch {
	case cp.Size == t.Size:
		if theirRoot != t.Root {
			return conflict("same size, different root hashes", Evidence(t.Checkpoint, body, nil))
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
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, oldSize, newSize, pr.GetHashes(), oldRoot[:], newRoot[:]); err != nil {
		return conflict(fmt.Sprintf("the log cannot prove size %d consistent with size %d: %v", oldSize, newSize, err), nil)
	}
	return res
}

const evidenceHeader = "kt-evidence/v1"

// Evidence encodes a kt-evidence/v1 bundle (design.md 15) from checkpoint
// notes a and b (a's size not above b's) and the proof lines.
func Evidence(a, b []byte, pr [][]byte) []byte {
	var buf bytes.Buffer
	buf.WriteString(evidenceHeader + "\n")
	fmt.Fprintf(&buf, "checkpoint %s\n", base64.StdEncoding.EncodeToString(a))
	fmt.Fprintf(&buf, "checkpoint %s\n", base64.StdEncoding.EncodeToString(b))
	for _, h := range pr {
		fmt.Fprintf(&buf, "proof %s\n", base64.StdEncoding.EncodeToString(h))
	}
	return buf.Bytes()
}

// ErrEvidence reports a kt-evidence/v1 bundle that is malformed or does not
// prove a fork.
var ErrEvidence = errors.New("client: evidence does not prove a fork")

// VerifyEvidence checks that bundle proves a fork of the log of p
// (design.md 15), offline, with the log key alone: both checkpoints are
// signed by the log for the origin, A.size ≤ B.size, and either the sizes
// are equal with different roots and no proof, or 0 < A.size < B.size and
// the proof computed in tree B reaches B's root but not A's.
func VerifyEvidence(p *Params, bundle []byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrEvidence, fmt.Sprintf(format, args...))
	}
	var notes [][]byte
	var pr [][]byte
	sc := bufio.NewScanner(bytes.NewReader(bundle))
	sc.Buffer(nil, maxGossipBody)
	for i := 0; sc.Scan(); i++ {
		line := sc.Text()
		switch {
		case i == 0:
			if line != evidenceHeader {
				return bad("first line is not %q", evidenceHeader)
			}
		case i <= 2:
			v, ok := strings.CutPrefix(line, "checkpoint ")
			raw, err := base64.StdEncoding.DecodeString(v)
			if !ok || err != nil {
				return bad("line %d is not a checkpoint line", i+1)
			}
			notes = append(notes, raw)
		default:
			v, ok := strings.CutPrefix(line, "proof ")
			h, err := base64.StdEncoding.DecodeString(v)
			if !ok || err != nil || len(h) != sha256.Size {
				return bad("line %d is not a proof line", i+1)
			}
			if len(pr) >= maxProofHashes {
				return bad("proof too long")
			}
			pr = append(pr, h)
		}
	}
	if err := sc.Err(); err != nil {
		return bad("%v", err)
	}
	if len(notes) != 2 {
		return bad("want two checkpoints, have %d", len(notes))
	}
	a, _, err := log.ParseCheckpoint(notes[0], p.Origin, p.LogVerifier)
	if err != nil {
		return bad("checkpoint A: %v", err)
	}
	b, _, err := log.ParseCheckpoint(notes[1], p.Origin, p.LogVerifier)
	if err != nil {
		return bad("checkpoint B: %v", err)
	}
	switch {
	case a.Size > b.Size:
		return bad("A.size %d > B.size %d", a.Size, b.Size)
	case a.Size == b.Size:
		if len(pr) != 0 {
			return bad("proof lines between equal sizes")
		}
		if bytes.Equal(a.Hash, b.Hash) {
			return bad("equal checkpoints")
		}
		return nil
	case a.Size == 0:
		return bad("A is the empty tree")
	}
	fr, sr, sn, ok := consistencyRoots(a.Size, b.Size, pr)
	switch {
	case !ok || sn != 0:
		return bad("the proof does not have the shape of a proof from %d to %d", a.Size, b.Size)
	case !bytes.Equal(sr, b.Hash):
		return bad("the proof does not reach B's root")
	case bytes.Equal(fr, a.Hash):
		return bad("the proof shows A consistent with B")
	}
	return nil
}

// consistencyRoots runs RFC 9162 2.1.4.2 steps 3 to 6 on path (which
// already starts with the old subtree hash when first is a power of two)
// and returns fr, sr and sn.
func consistencyRoots(first, second uint64, path [][]byte) (fr, sr []byte, sn uint64, ok bool) {
	if len(path) == 0 {
		return nil, nil, 0, false
	}
	h := rfc6962.DefaultHasher
	fn, sn := first-1, second-1
	for fn&1 == 1 {
		fn >>= 1
		sn >>= 1
	}
	fr, sr = path[0], path[0]
	for _, c := range path[1:] {
		if sn == 0 {
			return nil, nil, 0, false
		}
		if fn&1 == 1 || fn == sn {
			fr = h.HashChildren(c, fr)
			sr = h.HashChildren(c, sr)
			if fn&1 == 0 {
				for fn&1 == 0 && fn != 0 {
					fn >>= 1
					sn >>= 1
				}
			}
		} else {
			sr = h.HashChildren(sr, c)
		}
		fn >>= 1
		sn >>= 1
	}
	return fr, sr, sn, true
}
