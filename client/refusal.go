package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/log/evidence"
)

// ErrLogRefused reports that this client holds verified evidence that its
// log misbehaved (design.md 12.2, 15.1): it refuses every later lookup,
// encryption, monitoring poll and change under these parameters. Errors
// wrapping it are [*LogRefusedError] values. There is no way back with the
// same parameters: check the evidence, and re-pin the directory with new
// parameters (a new deployment, with a new state).
var ErrLogRefused = errors.New("client: log refused: evidence of misbehaviour")

// LogRefusedError is the refusal of a log whose misbehaviour a stored
// evidence bundle proves. It wraps [ErrLogRefused].
type LogRefusedError struct {
	// Origin is the refused log's origin and KeyHash its key hash.
	Origin  string
	KeyHash uint32
	// Refusal is the stored evidence.
	*Refusal
}

func (e *LogRefusedError) Error() string {
	return fmt.Sprintf("%v: log %s (key hash %08x): %s evidence %s, stored %s: %s; check it (ktctl evidence verify) and re-pin the directory with new parameters (a new deployment needs a new state)",
		ErrLogRefused, e.Origin, e.KeyHash, e.Kind, e.ID, e.Time.UTC().Format(time.RFC3339), e.What)
}

// Unwrap returns [ErrLogRefused].
func (e *LogRefusedError) Unwrap() error { return ErrLogRefused }

// Refusal is the durable record that a log is refused: the self-verifying
// evidence bundle that proves its misbehaviour, verified before it was
// stored.
type Refusal struct {
	// Kind is the bundle's kind (an evidence.Kind: "fork" for
	// kt-evidence/v1, "records", "map-regression" or "version-conflict").
	Kind string
	// ID is evidence.ID(Bundle), the hex SHA-256 by which auditors name
	// the bundle.
	ID string
	// What says, in one line, what the bundle proves.
	What string
	// Bundle is the evidence bundle as received.
	Bundle []byte
	// Time is when the client stored it.
	Time time.Time
}

// refusalKey is the key of a log's refusal in [State.Refused]: its origin
// and log key hash, "origin+hhhhhhhh" (as a note verifier key starts).
//
// SPEC(design.md 12.2): the refusal is stored "per log: origin + log key
// hash".
func refusalKey(origin string, keyHash uint32) string {
	return fmt.Sprintf("%s+%08x", origin, keyHash)
}

func (p *Params) refusalKey() string { return refusalKey(p.Origin, p.LogVerifier.KeyHash()) }

// refused returns the [*LogRefusedError] of p's log when s holds evidence
// against it, else nil.
//
// SPEC(design.md 12.2): a client with evidence "refuses every later
// operation with ErrLogRefused".
func (s *State) refused(p *Params) error {
	r := s.Refused[p.refusalKey()]
	if r == nil {
		return nil
	}
	return &LogRefusedError{Origin: p.Origin, KeyHash: p.LogVerifier.KeyHash(), Refusal: r}
}

// CheckEvidence verifies an evidence bundle of either version
// (kt-evidence/v1 fork, or a kt-evidence/v2 kind) against the log of p,
// offline, with the shared evidence.Check, and returns its kind, a
// one-line description of what it proves, and whether it needs a replay of
// the log to be believed (map-root: such a bundle does not make a client
// refuse the log). The error wraps both [ErrEvidence] and the evidence
// package's typed error (evidence.ErrMalformed, ErrSignature, ErrProof,
// ErrNotEvidence). It is the one place the client decides what evidence
// is.
//
// SPEC(design.md 15)
// SPEC(design.md 15.1)
func CheckEvidence(p *Params, bundle []byte) (kind evidence.Kind, what string, needsReplay bool, err error) {
	if p.LogVerifier == nil || p.LogVerifier.Name() != p.Origin {
		return "", "", false, fmt.Errorf("%w: the log verifier is not named by the origin %q", ErrEvidence, p.Origin)
	}
	kind, what, needsReplay, err = evidence.Check(evidence.Params{Origin: p.Origin, LogVerifier: p.LogVerifier, RecoveryKey: p.RecoveryKey}, bundle)
	if err != nil {
		return kind, "", false, fmt.Errorf("%w: %w", ErrEvidence, err)
	}
	// SPEC(design.md 11.1): after a rotation of the recovery key the R6
	// verdict depends on the record's position, which a bundle does not
	// prove: not judged.
	if p.rot != nil && len(p.rot.recovery) > 0 && kind == evidence.KindRecords && strings.HasPrefix(what, string(api.RuleRecovery)) {
		return kind, "", false, fmt.Errorf("%w: the verdict (%s) rests on rule R6 and the recovery key was rotated", ErrEvidence, what)
	}
	return kind, what, needsReplay, nil
}

// ReportEvidence verifies an evidence bundle against this client's log,
// offline with the log's parameters alone ([CheckEvidence]), and, when it
// proves misbehaviour on its own, stores it durably: from then on every lookup, encryption,
// monitoring poll and change of this client, and of any later client on
// the same [Store] with these parameters, fails with [ErrLogRefused]. A
// bundle that does not verify ([ErrEvidence]), or that needs a replay of
// the log to be believed (map-root, also [ErrEvidence]), is not stored. Reporting evidence for a log
// already refused keeps the first bundle and returns nil.
//
// Apps call it with bundles they learn of out of band (an auditor's
// notice, a user's report); gossip stores the bundles auditors send
// itself.
//
// SPEC(design.md 12.2)
// SPEC(design.md 15.1)
func (c *Client) ReportEvidence(ctx context.Context, bundle []byte) error {
	kind, what, needsReplay, err := CheckEvidence(c.params(), bundle)
	if err != nil {
		return err
	}
	if needsReplay {
		// SPEC(design.md 15.1): "Clients do not refuse a log on a map-root
		// bundle alone (they cannot replay)."
		return fmt.Errorf("%w: a %s bundle is not self-verifying (it needs a replay of the log); not refusing the log on it", ErrEvidence, kind)
	}
	return c.storeRefusal(ctx, kind, what, bundle)
}

// storeRefusal stores a verified bundle as the refusal of this client's
// log, unless one is stored already.
//
// SPEC(design.md 12.2)
func (c *Client) storeRefusal(ctx context.Context, kind evidence.Kind, what string, bundle []byte) error {
	r := &Refusal{Kind: string(kind), ID: evidence.ID(bundle), What: what, Bundle: bytes.Clone(bundle), Time: c.cfg.Now()}
	err := c.update(ctx, func(s *State) error {
		key := c.params().refusalKey()
		if s.Refused[key] != nil {
			return nil
		}
		if s.Refused == nil {
			s.Refused = map[string]*Refusal{}
		}
		s.Refused[key] = r
		return nil
	})
	if err != nil {
		return err
	}
	c.log.ErrorContext(ctx, "log refused: evidence of misbehaviour stored", "origin", c.params().Origin, "kind", kind, "evidence", r.ID, "what", what)
	return nil
}
