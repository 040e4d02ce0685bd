package witness

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// A Cosignature is a verified cosignature of a policy witness.
type Cosignature struct {
	// Witness is the witness's name in the policy.
	Witness string
	// Time is the cosignature's timestamp: the witness states that as of this
	// time the checkpoint was the largest consistent one it had seen for the
	// log.
	Time time.Time
	// Signature is the note signature line.
	Signature note.Signature
}

// A PolicyError reports cosignatures that do not satisfy a policy.
type PolicyError struct {
	// Quorum describes what the policy needs (see [Policy.Quorum]).
	Quorum string
	// Cosigned lists, in policy order, the witnesses with a valid
	// cosignature.
	Cosigned []string
	// Invalid lists the witnesses with a cosignature line (matching their key
	// name and key hash) that does not verify. A checkpoint carrying one is
	// rejected even when the others meet the quorum: honest logs verify
	// cosignatures before publishing them.
	Invalid []string
	// Failures holds, when the error comes from [Witnesser.Witness], why
	// each witness that was asked failed, in policy order.
	Failures []*WitnessError
}

func (e *PolicyError) Error() string {
	var b strings.Builder
	if len(e.Invalid) > 0 {
		fmt.Fprintf(&b, "invalid cosignature from witness %s", strings.Join(e.Invalid, ", "))
	} else {
		fmt.Fprintf(&b, "witness policy not satisfied: quorum %s", e.Quorum)
	}
	if len(e.Cosigned) == 0 {
		b.WriteString("; no valid cosignatures")
	} else {
		fmt.Fprintf(&b, "; valid cosignatures from %s", strings.Join(e.Cosigned, ", "))
	}
	for _, f := range e.Failures {
		fmt.Fprintf(&b, "; %v", f)
	}
	return b.String()
}

// Unwrap returns the witnesses' failures, so that errors.Is finds, for
// example, [ErrConflict] or context.DeadlineExceeded.
func (e *PolicyError) Unwrap() []error {
	errs := make([]error, len(e.Failures))
	for i, f := range e.Failures {
		errs[i] = f
	}
	return errs
}

// signedNote is a parsed signed note whose signatures are not yet verified.
type signedNote struct {
	text string // including the final newline
	sigs []note.Signature
}

// parseNote splits a signed note into its text and signature lines, with the
// syntax checks of note.Open (UTF-8, no control characters, a blank line
// before the signatures, well-formed lines, at most 100 signatures).
// Identical signature lines are reported once.
func parseNote(raw []byte) (*signedNote, error) {
	_, err := note.Open(raw, note.VerifierList())
	var unverified *note.UnverifiedNoteError
	if !errors.As(err, &unverified) {
		if err == nil {
			err = errors.New("unexpected verified signature")
		}
		return nil, fmt.Errorf("malformed signed note: %w", err)
	}
	return &signedNote{text: unverified.Note.Text, sigs: unverified.Note.UnverifiedSigs}, nil
}

func (n *signedNote) bytes() []byte {
	var b strings.Builder
	b.WriteString(n.text)
	b.WriteString("\n")
	for _, s := range n.sigs {
		fmt.Fprintf(&b, "— %s %s\n", s.Name, s.Base64)
	}
	return []byte(b.String())
}

// verification is the result of checking a note's signatures against the
// policy's witnesses.
type verification struct {
	// best holds, per witness index, its valid cosignature with the latest
	// timestamp, or nil.
	best []*Cosignature
	// invalid marks the witnesses with a cosignature line that does not
	// verify.
	invalid []bool
	// others are the signatures not matching any policy witness key.
	others []note.Signature
}

// SPEC(design.md 9)
// SPEC(design.md 12.2 step 2.2)
func (p *Policy) verify(n *signedNote) *verification {
	v := &verification{
		best:    make([]*Cosignature, len(p.witnesses)),
		invalid: make([]bool, len(p.witnesses)),
	}
	msg := []byte(n.text)
	for _, s := range n.sigs {
		// SPEC(tlog-witness): "The client MUST ignore any cosignatures from
		// unknown keys." Keys are identified by key name and key hash.
		cands := p.byKey[keyID{s.Name, s.Hash}]
		if len(cands) == 0 {
			v.others = append(v.others, s)
			continue
		}
		t, sig, err := ParseCosignature(s)
		verified := false
		for _, wi := range cands {
			if err != nil || !p.witnesses[wi].verifier.Verify(msg, sig) {
				continue
			}
			verified = true
			// Duplicate cosignatures by one witness count once; keep the
			// most recent, which says the most about freshness.
			if b := v.best[wi]; b == nil || t.After(b.Time) {
				v.best[wi] = &Cosignature{Witness: p.witnesses[wi].Name, Time: t, Signature: s}
			}
		}
		if !verified {
			for _, wi := range cands {
				v.invalid[wi] = true
			}
		}
	}
	return v
}

func (v *verification) cosignatures() []Cosignature {
	var cs []Cosignature
	for _, c := range v.best {
		if c != nil {
			cs = append(cs, *c)
		}
	}
	return cs
}

func (p *Policy) policyError(v *verification) *PolicyError {
	e := &PolicyError{Quorum: p.quorumDesc}
	for i, w := range p.witnesses {
		if v.best[i] != nil {
			e.Cosigned = append(e.Cosigned, w.Name)
		}
		if v.invalid[i] {
			e.Invalid = append(e.Invalid, w.Name)
		}
	}
	return e
}

// Check verifies the cosignatures on a signed checkpoint (or any signed note)
// against the policy. It returns the valid cosignatures of the policy's
// witnesses, one per witness (the most recent when a witness cosigned more
// than once), and a nil error when they satisfy the quorum. Otherwise the
// error is a [*PolicyError]; a malformed note gives a plain error.
//
// Signatures by keys the policy does not list are ignored; a line that claims
// a policy witness's key but does not verify makes Check fail.
//
// Check does not verify the log's signature; see
// [github.com/keytrans/kt/log.ParseCheckpoint].
func (p *Policy) Check(signed []byte) ([]Cosignature, error) {
	n, err := parseNote(signed)
	if err != nil {
		return nil, err
	}
	return p.check(n)
}

// CheckNote is [Policy.Check] for a note already parsed by note.Open (for
// example by log.ParseCheckpoint): it checks the signatures in both n.Sigs
// and n.UnverifiedSigs.
func (p *Policy) CheckNote(n *note.Note) ([]Cosignature, error) {
	sigs := slices.Concat(n.Sigs, n.UnverifiedSigs)
	return p.check(&signedNote{text: n.Text, sigs: sigs})
}

// SPEC(design.md 9.1)
// SPEC(design.md 12.2 step 2.2)
func (p *Policy) check(n *signedNote) ([]Cosignature, error) {
	v := p.verify(n)
	cs := v.cosignatures()
	ok := p.satisfied(func(w int) bool { return v.best[w] != nil })
	if !ok || slices.Contains(v.invalid, true) {
		return cs, p.policyError(v)
	}
	return cs, nil
}

// QuorumTime returns the latest time T such that the cosignatures with
// timestamps at or after T satisfy the quorum on their own: as of T, a quorum
// of witnesses had seen no larger tree than the checkpoint. Clients bound a
// checkpoint's age by comparing T with their clock. The boolean is false when
// the cosignatures do not satisfy the quorum, and for "quorum none", which
// gives no time at all.
//
// The cosignatures must come from [Policy.Check] or [Policy.CheckNote] on
// this policy.
//
// SPEC(design.md 12.2 step 2.5)
func (p *Policy) QuorumTime(cs []Cosignature) (time.Time, bool) {
	if p.quorum < 0 {
		return time.Time{}, false
	}
	at := make(map[int]time.Time, len(cs))
	times := make([]time.Time, 0, len(cs))
	for _, c := range cs {
		i, ok := p.byName[c.Witness]
		if !ok || p.nodes[i].witness < 0 {
			continue
		}
		w := p.nodes[i].witness
		if prev, ok := at[w]; !ok || c.Time.After(prev) {
			at[w] = c.Time
		}
		times = append(times, c.Time)
	}
	// Try candidate times from the latest down: the first that leaves a
	// quorum is the answer.
	slices.SortFunc(times, func(a, b time.Time) int { return b.Compare(a) })
	for _, t := range times {
		if p.satisfied(func(w int) bool {
			wt, ok := at[w]
			return ok && !wt.Before(t)
		}) {
			return t, true
		}
	}
	return time.Time{}, false
}

// Merge returns signed with the valid cosignatures of the policy's witnesses
// found in signed and in others (notes with the same text), one per witness
// (the most recent). The signatures in signed by keys the policy does not
// list, such as the log's, are kept first and in order; those in others are
// ignored. Cosignature lines in signed that do not verify are dropped.
func (p *Policy) Merge(signed []byte, others ...[]byte) ([]byte, error) {
	n, err := parseNote(signed)
	if err != nil {
		return nil, err
	}
	all := &signedNote{text: n.text, sigs: slices.Clone(n.sigs)}
	for i, o := range others {
		on, err := parseNote(o)
		if err != nil {
			return nil, fmt.Errorf("note %d: %w", i+1, err)
		}
		if on.text != n.text {
			return nil, fmt.Errorf("note %d has a different text", i+1)
		}
		for _, s := range on.sigs {
			if len(p.byKey[keyID{s.Name, s.Hash}]) > 0 {
				all.sigs = append(all.sigs, s)
			}
		}
	}
	v := p.verify(all)
	out := &signedNote{text: n.text}
	for _, s := range n.sigs {
		if len(p.byKey[keyID{s.Name, s.Hash}]) == 0 {
			out.sigs = append(out.sigs, s)
		}
	}
	for _, c := range v.cosignatures() {
		out.sigs = append(out.sigs, c.Signature)
	}
	return out.bytes(), nil
}

// Strip returns signed with only the signatures that keep verify (typically
// the log's verifier) and the valid cosignatures of the policy's witnesses,
// one per witness (the most recent). It fails when keep is not empty and none
// of its signatures verify, or when no signature would remain.
func (p *Policy) Strip(signed []byte, keep ...note.Verifier) ([]byte, error) {
	n, err := parseNote(signed)
	if err != nil {
		return nil, err
	}
	out := &signedNote{text: n.text}
	seen := make(map[keyID]bool)
	for _, s := range n.sigs {
		id := keyID{s.Name, s.Hash}
		for _, k := range keep {
			if k.Name() != s.Name || k.KeyHash() != s.Hash || seen[id] {
				continue
			}
			raw, err := base64.StdEncoding.DecodeString(s.Base64)
			if err == nil && len(raw) > 4 && k.Verify([]byte(n.text), raw[4:]) {
				out.sigs = append(out.sigs, s)
				seen[id] = true
			}
		}
	}
	if len(keep) > 0 && len(out.sigs) == 0 {
		return nil, errors.New("no signature by the given verifiers verifies")
	}
	for _, c := range p.verify(n).cosignatures() {
		if !seen[keyID{c.Signature.Name, c.Signature.Hash}] {
			out.sigs = append(out.sigs, c.Signature)
		}
	}
	if len(out.sigs) == 0 {
		return nil, errors.New("no signature left")
	}
	return out.bytes(), nil
}

// CheckStatementTime reports whether an audit statement dated t may be
// counted for an epoch stamped epoch, at time now with clock skew skew:
// not after now + skew, and not before the epoch's time − skew. Statements
// carry whole seconds (tlog-cosignature), so the epoch's time is truncated
// to the second first: a statement made in the epoch's own second is never
// too early, whatever the skew. The error says which bound t broke.
//
// SPEC(design.md 12.2 step 2.2)
func CheckStatementTime(t, epoch, now time.Time, skew time.Duration) error {
	if upper := now.Add(skew); t.After(upper) {
		return fmt.Errorf("dated %v, after now + skew (%v)", t.UTC().Format(time.RFC3339), upper.UTC().Format(time.RFC3339))
	}
	if lower := epoch.Truncate(time.Second).Add(-skew); t.Before(lower) {
		return fmt.Errorf("dated %v, before the epoch's timestamp − skew (%v)", t.UTC().Format(time.RFC3339), lower.UTC().Format(time.RFC3339))
	}
	return nil
}
