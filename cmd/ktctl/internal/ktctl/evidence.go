package ktctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	fmtlog "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/auditor/replay"
	klog "github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/evidence"
	"github.com/keytrans/kt/vrf"
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

// EvidenceInfo describes an evidence bundle: a kt-evidence/v1 fork bundle
// (A, B, Proof, Fork) or a kt-evidence/v2 bundle (Checkpoint, Entries).
type EvidenceInfo struct {
	// Kind is the bundle's kind: "fork" (v1), "records",
	// "map-regression", "version-conflict" or "map-root".
	Kind  string              `json:"kind"`
	A     *EvidenceCheckpoint `json:"a,omitempty"`
	B     *EvidenceCheckpoint `json:"b,omitempty"`
	Proof []Hex               `json:"proof"`
	// Fork is set when a v1 bundle was verified.
	Fork *Fork `json:"fork,omitempty"`
	// Checkpoint is a v2 bundle's checkpoint C, and Entries its entries.
	Checkpoint *EvidenceCheckpoint `json:"checkpoint,omitempty"`
	Entries    []EvidenceEntry     `json:"entries,omitempty"`
	// What is the one-line description of what a verified bundle proves
	// (for map-root: what it claims).
	What string `json:"what,omitempty"`
	// NeedsReplay is set for a verified map-root bundle: its claim holds
	// only if a replay of the log shows it (Replay, when one was run).
	NeedsReplay bool           `json:"needs_replay,omitempty"`
	Replay      *MapRootReplay `json:"replay,omitempty"`
}

// EvidenceEntry is one entry of a v2 bundle.
type EvidenceEntry struct {
	Index uint64 `json:"index"`
	// Type is "change", "epoch" or "unparsable"; Summary says what the
	// entry is.
	Type      string `json:"type"`
	Summary   string `json:"summary"`
	Inclusion int    `json:"inclusion_hashes"`
	// Map is the value the map proof after an epoch entry proves:
	// "absent" or a summary of the record.
	Map string `json:"map,omitempty"`
}

// InspectEvidence decodes a bundle of either version without verifying
// it: the checkpoints' origins, sizes, roots and signature lines, and the
// proof or entries. A bundle that does not decode is a [*VerifyError].
func InspectEvidence(raw []byte) (*EvidenceInfo, error) {
	b, err := evidence.Parse(raw)
	if err != nil {
		what := "kt-evidence/v1 or kt-evidence/v2"
		for _, h := range []string{evidence.Header, evidence.HeaderV2} {
			if bytes.HasPrefix(raw, []byte(h+"\n")) {
				what = h
			}
		}
		return nil, verifyErr("evidence", err, "not a valid %s bundle", what)
	}
	if b.Kind != evidence.KindFork {
		return inspectV2(b)
	}
	info := &EvidenceInfo{Kind: string(evidence.KindFork), Proof: hexes(b.Proof)}
	for i, dst := range []**EvidenceCheckpoint{&info.A, &info.B} {
		c, err := inspectNote([][]byte{b.A, b.B}[i])
		if err != nil {
			return nil, verifyErr("evidence", err, "checkpoint %c", 'A'+i)
		}
		*dst = c
	}
	return info, nil
}

func inspectV2(b *evidence.Bundle) (*EvidenceInfo, error) {
	info := &EvidenceInfo{Kind: string(b.Kind)}
	c, err := inspectNote(b.Checkpoint)
	if err != nil {
		return nil, verifyErr("evidence", err, "checkpoint C")
	}
	info.Checkpoint = c
	maps := b.Maps
	for _, e := range b.Entries {
		ee := EvidenceEntry{Index: e.Index, Inclusion: len(e.Inclusion), Type: "unparsable", Summary: "does not parse"}
		ent, err := api.ParseEntry(e.Data)
		switch r := ent.(type) {
		case *api.ChangeRecord:
			ee.Type, ee.Summary = "change", recordSummary(r)
		case *api.EpochRecord:
			ee.Type = "epoch"
			ee.Summary = fmt.Sprintf("epoch %d, map root %x size %d", r.Epoch, r.MapRoot, r.MapSize)
			if len(maps) > 0 {
				ee.Map = "absent"
				if maps[0].Record != nil {
					ee.Map = "does not parse"
					if r, err := api.ParseChangeRecord(maps[0].Record); err == nil {
						ee.Map = recordSummary(r)
					}
				}
				maps = maps[1:]
			}
		default:
			ee.Summary = err.Error()
		}
		info.Entries = append(info.Entries, ee)
	}
	return info, nil
}

func recordSummary(r *api.ChangeRecord) string {
	return fmt.Sprintf("version %d of index %x (%s, leaf %x)", r.Version, r.Index, r.Kind, leafOf(r))
}

func leafOf(r *api.ChangeRecord) []byte {
	b, err := r.MarshalBinary()
	if err != nil {
		return nil
	}
	h := api.LeafHash(b)
	return h[:]
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

// VerifyEvidence verifies a bundle of either version offline with the
// pinned keys (evidence.Check, design.md 15 and 15.1): a nil error means
// it proves misbehaviour, except for a map-root bundle, whose claim is
// returned with NeedsReplay set (see [VerifyMapRoot]). For a v1 bundle
// with a policy, the cosignatures on both checkpoints are checked and the
// witnesses that cosigned both are named. A bundle that does not prove
// anything is a [*VerifyError], returned with what could be decoded. A
// records bundle whose verdict rests on rule R6 needs k.RecoveryKey.
func VerifyEvidence(raw []byte, k *Keys) (*EvidenceInfo, error) {
	info, err := InspectEvidence(raw)
	if err != nil {
		return nil, err
	}
	if info.Kind != string(evidence.KindFork) {
		return verifyV2(raw, k, info)
	}
	f, err := evidence.Verify(raw, k.LogVerifier)
	if err != nil {
		return info, verifyErr("evidence", err, "the bundle does not prove a fork of %s", k.Origin)
	}
	fork := &Fork{Origin: f.Origin, RootAtA: f.RootAtA, CosignedBoth: []string{}}
	// Both checkpoints verify under the log key: show their signatures as
	// VerifyCheckpoint sees them (named and checked with a policy).
	var valid [2][]string
	for i, c := range []*EvidenceCheckpoint{info.A, info.B} {
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

// verifyV2 checks a kt-evidence/v2 bundle with evidence.Check.
//
// SPEC(design.md 15.1)
func verifyV2(raw []byte, k *Keys, info *EvidenceInfo) (*EvidenceInfo, error) {
	p := evidence.Params{Origin: k.Origin, LogVerifier: k.LogVerifier}
	if k.RecoveryKey != nil {
		p.RecoveryKey = *k.RecoveryKey
	}
	kind, what, replay, err := evidence.Check(p, raw)
	if err != nil {
		return info, verifyErr("evidence", err, "the %s bundle does not prove misbehaviour of %s", info.Kind, k.Origin)
	}
	if k.RecoveryKey == nil && kind == evidence.KindRecords && strings.HasPrefix(what, string(api.RuleRecovery)) {
		return info, verifyErr("evidence", nil, "the verdict (%s) rests on rule R6: give the directory's recovery key (--recovery-key or --data-dir)", what)
	}
	if v, _ := VerifyCheckpoint([]byte(info.Checkpoint.Note), k); v != nil {
		info.Checkpoint.Signatures = append([]Signature{{KeyName: k.LogVerifier.Name(), KeyHash: fmt.Sprintf("%08x", k.LogVerifier.KeyHash()), Status: "log"}}, v.Cosignatures...)
	}
	info.What, info.NeedsReplay = what, replay
	return info, nil
}

// MapRootReplay is the outcome of replaying the claim of a map-root
// bundle: the map recomputed over entries [0, Index) next to the one the
// epoch record at Index publishes.
type MapRootReplay struct {
	Epoch uint64 `json:"epoch"`
	// Index is the epoch record's log index j; entries [0, j) were
	// replayed from Source, and checked to be the tree of the bundle's
	// checkpoint.
	Index          uint64 `json:"index"`
	Source         string `json:"source"`
	PublishedRoot  Hex    `json:"published_map_root"`
	PublishedSize  uint64 `json:"published_map_size"`
	RecomputedRoot Hex    `json:"recomputed_map_root"`
	RecomputedSize uint64 `json:"recomputed_map_size"`
	// Holds is true when the published map is not the recomputed one:
	// the bundle proves misbehaviour.
	Holds bool `json:"holds"`
}

// VerifyMapRoot checks a map-root bundle's claim by replay: it verifies
// the bundle (VerifyEvidence), reads entries [0, j) from r (source names
// it in the result), replays them with the auditor's engine
// (auditor/replay) followed by the bundle's epoch record at j, and checks
// that the entries are those of the bundle's checkpoint C (their root at
// j+1 extends to C's root by r's consistency proof, or is C's root). The
// claim holds iff the replay finds the map root or map size rule broken at
// j; otherwise a [*VerifyError] says that the published map is the map of
// the entries. Entries that are not C's tree are a [*VerifyError] too.
//
// SPEC(design.md 15.1 map-root)
// SPEC(design.md 14 step 3)
func VerifyMapRoot(ctx context.Context, raw []byte, k *Keys, r klog.Reader, source string, progress Progress) (*EvidenceInfo, error) {
	info, err := VerifyEvidence(raw, k)
	if err != nil {
		return info, err
	}
	if info.Kind != string(evidence.KindMapRoot) {
		return info, fmt.Errorf("%w: a %s bundle, not map-root", ErrArgument, info.Kind)
	}
	b, err := evidence.Parse(raw)
	if err != nil {
		return info, err
	}
	cp, _, err := klog.ParseCheckpoint(b.Checkpoint, k.Origin, k.LogVerifier)
	if err != nil {
		return info, err
	}
	ent := b.Entries[0]
	er, err := api.ParseEpochRecord(ent.Data)
	if err != nil {
		return info, err
	}
	cfg := replay.Config{Origin: k.Origin, Verifier: k.LogVerifier, VerifyVRFProof: vrf.VerifyRotationProof}
	if k.RecoveryKey != nil {
		cfg.RecoveryKey = *k.RecoveryKey
	}
	e, err := replay.New(cfg)
	if err != nil {
		return info, fmt.Errorf("%w: %w", ErrArgument, err)
	}
	j := ent.Index
	for e.Size() < j {
		es, err := r.Entries(ctx, e.Size(), j)
		if err != nil {
			return info, fmt.Errorf("fetching entries from %d: %w", e.Size(), err)
		}
		if len(es) == 0 || uint64(len(es)) > j-e.Size() {
			return info, fmt.Errorf("fetching entries from %d: got %d entries", e.Size(), len(es))
		}
		e.Append(es)
		if progress != nil {
			progress(e.Size(), j)
		}
	}
	root, size := e.MapRoot()
	vs := e.Append([][]byte{ent.Data})
	rr := &MapRootReplay{Epoch: er.Epoch, Index: j, Source: source, PublishedRoot: er.MapRoot[:], PublishedSize: er.MapSize,
		RecomputedRoot: root[:], RecomputedSize: size}
	info.Replay = rr
	// The entries replayed must be those of C's tree: [0, j] (the last
	// one is the bundle's, included in C) has a root that C extends.
	got := e.Root()
	if e.Size() == cp.Size {
		if !bytes.Equal(got[:], cp.Hash) {
			return info, verifyErr("replay", nil, "the entries read from %s are not those of the bundle's checkpoint (root %x, not %x)", source, got, cp.Hash)
		}
	} else {
		p, err := r.ConsistencyProof(ctx, e.Size(), cp.Size)
		if err != nil {
			return info, fmt.Errorf("fetching the consistency proof from %d to %d: %w", e.Size(), cp.Size, err)
		}
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, e.Size(), cp.Size, p, got[:], cp.Hash); err != nil {
			return info, verifyErr("replay", err, "the entries read from %s are not those of the bundle's checkpoint", source)
		}
	}
	for _, v := range vs {
		if v.Index == j && (v.Rule == replay.RuleMapRoot || v.Rule == replay.RuleMapSize) {
			rr.Holds = true
		}
	}
	if !rr.Holds {
		return info, verifyErr("replay", nil, "the claim does not hold: the map of epoch %d (entry %d) is the map of entries [0, %d)", er.Epoch, j, j)
	}
	return info, nil
}
