package ktctl

import (
	"errors"
	"fmt"
	"slices"

	fmtlog "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/log/evidence"
)

// EvidenceCheckpoint is one checkpoint of an evidence bundle.
type EvidenceCheckpoint struct {
	Origin string `json:"origin"`
	Size   uint64 `json:"size"`
	Root   Hex    `json:"root"`
	// Signatures are the note's signature lines (key name and hash),
	// unverified unless the bundle was verified.
	Signatures []Signature `json:"signatures"`
	// Note is the signed note.
	Note string `json:"note"`
}

// Fork is what a verified bundle proves.
type Fork struct {
	Origin string `json:"origin"`
	// RootAtA is tree B's root at A's size, which differs from A's root.
	RootAtA Hex `json:"root_at_a"`
	// CosignedBoth names the policy witnesses whose valid cosignatures
	// are on both checkpoints: each signed two views that cannot both be
	// honest.
	CosignedBoth []string `json:"cosigned_both"`
}

// EvidenceInfo describes a kt-evidence/v1 bundle.
type EvidenceInfo struct {
	A     EvidenceCheckpoint `json:"a"`
	B     EvidenceCheckpoint `json:"b"`
	Proof []Hex              `json:"proof"`
	// Fork is set when the bundle was verified.
	Fork *Fork `json:"fork,omitempty"`
}

// InspectEvidence decodes a bundle without verifying it: the checkpoints'
// origins, sizes, roots and signature lines, and the proof. A bundle that
// does not decode is a [*VerifyError].
func InspectEvidence(raw []byte) (*EvidenceInfo, error) {
	b, err := evidence.Parse(raw)
	if err != nil {
		return nil, verifyErr("evidence", err, "not a valid kt-evidence/v1 bundle")
	}
	info := &EvidenceInfo{Proof: hexes(b.Proof)}
	for i, dst := range []*EvidenceCheckpoint{&info.A, &info.B} {
		c, err := inspectNote([][]byte{b.A, b.B}[i])
		if err != nil {
			return nil, verifyErr("evidence", err, "checkpoint %c", 'A'+i)
		}
		*dst = *c
	}
	return info, nil
}

func inspectNote(raw []byte) (*EvidenceCheckpoint, error) {
	_, err := note.Open(raw, note.VerifierList())
	var u *note.UnverifiedNoteError
	if !errors.As(err, &u) {
		return nil, fmt.Errorf("malformed signed note: %w", err)
	}
	var cp fmtlog.Checkpoint
	if _, err := cp.Unmarshal([]byte(u.Note.Text)); err != nil {
		return nil, fmt.Errorf("malformed checkpoint: %w", err)
	}
	c := &EvidenceCheckpoint{Origin: cp.Origin, Size: cp.Size, Root: cp.Hash, Note: string(raw), Signatures: []Signature{}}
	for _, s := range u.Note.UnverifiedSigs {
		c.Signatures = append(c.Signatures, Signature{KeyName: s.Name, KeyHash: fmt.Sprintf("%08x", s.Hash), Status: CosigUnknown})
	}
	return c, nil
}

// VerifyEvidence verifies a bundle with the pinned log key alone
// (log/evidence, design.md 15): a nil error means it proves a fork. With a
// policy, the cosignatures on both checkpoints are checked and the
// witnesses that cosigned both are named. A bundle that does not prove a
// fork is a [*VerifyError], returned with what could be decoded.
func VerifyEvidence(raw []byte, k *Keys) (*EvidenceInfo, error) {
	info, err := InspectEvidence(raw)
	if err != nil {
		return nil, err
	}
	f, err := evidence.Verify(raw, k.LogVerifier)
	if err != nil {
		return info, verifyErr("evidence", err, "the bundle does not prove a fork of %s", k.Origin)
	}
	fork := &Fork{Origin: f.Origin, RootAtA: f.RootAtA, CosignedBoth: []string{}}
	// Both checkpoints verify under the log key: show their signatures as
	// VerifyCheckpoint sees them (named and checked with a policy).
	var valid [2][]string
	for i, c := range []*EvidenceCheckpoint{&info.A, &info.B} {
		v, _ := VerifyCheckpoint([]byte(c.Note), k) // a quorum failure still lists the cosignatures
		if v == nil {
			continue
		}
		c.Signatures = append([]Signature{{KeyName: k.LogVerifier.Name(), KeyHash: fmt.Sprintf("%08x", k.LogVerifier.KeyHash()), Status: "log"}}, v.Cosignatures...)
		for _, s := range v.Cosignatures {
			if s.Status == CosigValid {
				valid[i] = append(valid[i], s.Witness)
			}
		}
	}
	for _, w := range valid[0] {
		if slices.Contains(valid[1], w) {
			fork.CosignedBoth = append(fork.CosignedBoth, w)
		}
	}
	info.Fork = fork
	return info, nil
}
