package auditor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/keytrans/kt/log/evidence"
)

// Gossip errors, mapped to HTTP statuses at the edge.
var (
	// ErrNoView: the auditor has not audited (or, for a log it only
	// witnesses, cosigned) any checkpoint of the log yet (503).
	ErrNoView = errors.New("auditor: no checkpoint of the log yet")
)

// ForkError is the answer to a gossiped checkpoint or bundle of a log the
// auditor holds evidence against (409): Bundle is a kt-evidence/v1 bundle
// (a split view) or a kt-evidence/v2 bundle (a rule violation).
type ForkError struct {
	Origin string
	Bundle []byte
}

func (e *ForkError) Error() string {
	if isFork(e.Bundle) {
		return "auditor: split view of " + e.Origin
	}
	return "auditor: evidence against " + e.Origin
}

// view returns the checkpoint the auditor vouches for: the latest audited
// one for an audited log, the latest cosigned one for a witnessed log.
func (ls *logState) view() []byte {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.cfg.Reader != nil {
		if ls.latest == nil {
			return nil
		}
		return ls.latest.Note
	}
	return ls.cosigned
}

// Latest returns the checkpoint the auditor vouches for (GET
// /kt/v1/checkpoint): the latest audited one, with the auditor's audit
// statement appended when it has an audit key (Config.AuditSigner) and
// found no violation below it, or for a log it only witnesses the latest
// cosigned one.
//
// SPEC(design.md 14.2)
// SPEC(design.md 15)
func (a *Auditor) Latest(origin string) ([]byte, error) {
	ls, ok := a.logs[origin]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownLog, origin)
	}
	ls.mu.Lock()
	stated := ls.stated
	ls.mu.Unlock()
	if stated != nil {
		return stated, nil
	}
	v := ls.view()
	if v == nil {
		return nil, ErrNoView
	}
	return v, nil
}

// Gossip handles a POST /kt/v1/gossip body: a checkpoint note, compared
// with the auditor's view (it returns the auditor's latest checkpoint if
// consistent, a *ForkError with the bundle if not, and a *ForkError with a
// stored bundle whenever the auditor holds evidence against the log), or
// an evidence bundle (kt-evidence/v1 or v2), verified and recorded (a
// *ForkError echoing it).
//
// SPEC(design.md 15)
// SPEC(design.md 15.1)
func (a *Auditor) Gossip(ctx context.Context, body []byte) ([]byte, error) {
	if bytes.HasPrefix(body, []byte(evidence.Header+"\n")) || bytes.HasPrefix(body, []byte(evidence.HeaderV2+"\n")) {
		return nil, a.gossipEvidence(body)
	}
	origin, _, _ := strings.Cut(string(body), "\n")
	ls, ok := a.logs[origin]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownLog, origin)
	}
	cp, err := ls.openCheckpoint(body)
	if errors.Is(err, ErrBadSignature) {
		// SPEC(design.md 15): "400 if malformed or badly signed".
		return nil, fmt.Errorf("%w: no valid log signature", ErrMalformed)
	}
	if err != nil {
		return nil, err
	}
	// SPEC(design.md 15.1): "once the log has any evidence every POST
	// /kt/v1/gossip for it answers 409 with a bundle"
	if b := a.answerBundle(ls); b != nil {
		return nil, &ForkError{Origin: origin, Bundle: b}
	}
	ls.mu.Lock()
	latest := ls.latest
	ls.mu.Unlock()
	if latest == nil && ls.cfg.Reader == nil {
		// A witnessed log: compare with the latest cosigned checkpoint.
		ls.mu.Lock()
		if ls.cosigned != nil && ls.cosSize == cp.Size && !bytes.Equal(ls.cosRoot, cp.Hash) {
			prev := ls.cosigned
			ls.mu.Unlock()
			if b, err := a.buildEvidence(ctx, ls, body, prev, nil); err != nil || b != nil {
				return nil, forkOr(origin, b, err)
			}
		} else {
			ls.mu.Unlock()
		}
	}
	if latest != nil {
		b, err := a.compare(ctx, ls, body, cp, latest)
		if err != nil || b != nil {
			return nil, forkOr(origin, b, err)
		}
	}
	v := ls.view()
	if v == nil {
		return nil, ErrNoView
	}
	return v, nil
}

func forkOr(origin string, b []byte, err error) error {
	if err != nil {
		return err
	}
	return &ForkError{Origin: origin, Bundle: b}
}

// SPEC(design.md 15)
func (a *Auditor) gossipEvidence(body []byte) error {
	if bytes.HasPrefix(body, []byte(evidence.HeaderV2+"\n")) {
		return a.gossipEvidenceV2(body)
	}
	b, err := evidence.Parse(body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	origin, _, _ := strings.Cut(string(b.A), "\n")
	ls, ok := a.logs[origin]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownLog, origin)
	}
	if _, err := b.Verify(ls.logVerifier()); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	raw := b.Marshal()
	if err := a.recordEvidence(ls, raw); err != nil {
		return err
	}
	return &ForkError{Origin: origin, Bundle: raw}
}

// PeerStatus is the outcome of the latest exchange with a peer.
type PeerStatus struct {
	Name, URL string
	// Last is when the last exchange ended; Result is "ok", "evidence" or
	// the error.
	Last   time.Time
	Result string
}

// Peers returns the status of every peer.
func (a *Auditor) Peers() []PeerStatus {
	a.peerMu.Lock()
	defer a.peerMu.Unlock()
	var out []PeerStatus
	for _, p := range a.cfg.Peers {
		out = append(out, *a.peers[p.Name])
	}
	return out
}

func (a *Auditor) gossipLoop(ctx context.Context, ls *logState) {
	t := time.NewTicker(a.cfg.GossipInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.GossipRound(ctx, ls.cfg.Origin)
	}
}

// GossipRound exchanges the auditor's view of origin with every peer once:
// it posts its checkpoint; a 200 answer (the peer's checkpoint) is
// compared with its own view, and a fork found that way is posted back to
// the peer as a bundle, so that both hold the same evidence after the
// round; a 409 answer (a bundle) is verified and recorded.
//
// SPEC(design.md 15)
func (a *Auditor) GossipRound(ctx context.Context, origin string) {
	ls, ok := a.logs[origin]
	if !ok {
		return
	}
	for _, p := range a.cfg.Peers {
		res := a.exchange(ctx, ls, p)
		metric := "error"
		if res == "ok" || res == "evidence" {
			metric = res
		}
		a.m.Gossip(p.Name, metric)
		a.peerMu.Lock()
		a.peers[p.Name].Last, a.peers[p.Name].Result = time.Now(), res
		a.peerMu.Unlock()
	}
}

// SPEC(design.md 15)
func (a *Auditor) exchange(ctx context.Context, ls *logState, p Peer) string {
	a.gossipBundles(ctx, ls, p)
	mine := ls.view()
	if mine == nil {
		return "nothing to gossip yet"
	}
	status, body, err := evidence.Post(ctx, a.cfg.HTTPClient, p.URL, mine)
	if err != nil {
		return err.Error()
	}
	switch status {
	case http.StatusOK:
		_, err := a.Gossip(ctx, body)
		if fe, ok := errors.AsType[*ForkError](err); ok {
			// Tell the peer, which may not be able to build the bundle
			// (it holds the smaller tree).
			if st, _, err := evidence.Post(ctx, a.cfg.HTTPClient, p.URL, fe.Bundle); err != nil || st != http.StatusConflict {
				a.log.Warn("peer did not take the evidence", "peer", p.Name, "status", st, "err", err)
			}
			return "evidence"
		}
		if err != nil {
			return "peer's checkpoint: " + err.Error()
		}
		return "ok"
	case http.StatusConflict:
		if err := a.gossipEvidence(body); err != nil {
			if _, ok := errors.AsType[*ForkError](err); ok {
				return "evidence"
			}
			return "peer's evidence: " + err.Error()
		}
		return "evidence"
	default:
		return fmt.Sprintf("HTTP %d: %s", status, strings.TrimSpace(string(body[:min(len(body), 200)])))
	}
}
