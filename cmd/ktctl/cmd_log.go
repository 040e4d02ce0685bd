package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/keytrans/kt/cmd/ktctl/internal/ktctl"
)

var checkpointCmd = &command{
	name:  "checkpoint",
	args:  "",
	usage: "checkpoint [--log-url URL] [--log-key KEY | --data-dir DIR] [--policy FILE]",
	help: `Fetch the latest checkpoint and verify it.
The log signature is verified with the pinned log key; with --policy each
cosignature is named after the policy's witness, checked, and the quorum
evaluated. Exit status 1 if the log signature, a policy witness's
cosignature or the quorum fails.`,
	keys: logKeys, network: true, maxArgs: 0,
	run: runCheckpoint,
}

func runCheckpoint(ctx context.Context, e *env) error {
	cp, _, _, err := e.checkpoint(ctx)
	if cp == nil {
		return err
	}
	if e.cfg.JSON {
		return e.printJSONThen(cp, err)
	}
	quorum := "not checked (no --policy)"
	if q := cp.Quorum; q != nil {
		switch {
		case q.Satisfied && q.Time != nil:
			quorum = fmt.Sprintf("%s: satisfied, quorum time %s", q.Rule, q.Time.Format(time.RFC3339))
		case q.Satisfied:
			quorum = fmt.Sprintf("%s: satisfied", q.Rule)
		default:
			quorum = fmt.Sprintf("%s: NOT satisfied", q.Rule)
		}
	}
	fields(e.stdout,
		"origin", cp.Origin,
		"size", strconv.FormatUint(cp.Size, 10),
		"root", base64.StdEncoding.EncodeToString(cp.Root)+" (hex "+cp.Root.String()+")",
		"log signature", "valid ("+cp.LogKey+")",
		"quorum", quorum,
	)
	fmt.Fprintln(e.stdout)
	if len(cp.Cosignatures) == 0 {
		fmt.Fprintln(e.stdout, "no cosignatures")
		return err
	}
	var rows [][]string
	for _, s := range cp.Cosignatures {
		who, ts := s.Witness, "-"
		if who == "" {
			who = "(unknown)"
		}
		if s.Time != nil {
			ts = s.Time.Format(time.RFC3339)
		}
		rows = append(rows, []string{who, s.KeyName, s.KeyHash, ts, s.Status})
	}
	table(e.stdout, []string{"COSIGNER", "KEY NAME", "KEY HASH", "TIME", "STATUS"}, rows)
	return err
}

var entriesCmd = &command{
	name:  "entries",
	args:  "START [END]",
	usage: "entries START [END] [--full] [--skip-proofs] [log flags]",
	help: `List and decode the log entries START to END-1 (END defaults to START+1).
Change records show the VRF index, version, commitment, prev, kind,
authorizers and signer, and whether the signature verifies (rule R1);
epoch records show the epoch, time, log size, map root and map size. Each
entry's inclusion in the verified checkpoint is proven unless
--skip-proofs. Exit status 1 if an entry is malformed, badly signed or
not included.`,
	keys: append([]string{"full", "skip_proofs"}, logKeys...), network: true, minArgs: 1, maxArgs: 2,
	run: runEntries,
}

func runEntries(ctx context.Context, e *env) error {
	start, err := parseUint("START", e.args[0])
	if err != nil {
		return err
	}
	end := start + 1
	if len(e.args) == 2 {
		if end, err = parseUint("END", e.args[1]); err != nil {
			return err
		}
	}
	if end <= start {
		return usageErr("END (%d) must be greater than START (%d): the range is START to END-1", end, start)
	}
	cp, _, r, err := e.checkpoint(ctx)
	if err != nil {
		return err
	}
	es, err := ktctl.ListEntries(ctx, r, cp, start, end, !e.cfg.SkipProofs)
	if es == nil {
		return err
	}
	if e.cfg.JSON {
		return e.printJSONThen(struct {
			CheckpointSize uint64         `json:"checkpoint_size"`
			Entries        []*ktctl.Entry `json:"entries"`
		}{cp.Size, es}, err)
	}
	var rows [][]string
	for _, en := range es {
		incl := "-"
		if en.Included != nil {
			incl = map[bool]string{true: "yes", false: "NO"}[*en.Included]
		}
		row := []string{strconv.FormatUint(en.LogIndex, 10), en.Type, incl}
		switch {
		case en.Change != nil:
			row = append(row, e.changeDetails(en.Change))
		case en.Epoch != nil:
			row = append(row, e.epochDetails(en.Epoch))
		default:
			row = append(row, en.Error)
		}
		rows = append(rows, row)
	}
	fmt.Fprintf(e.stdout, "checkpoint %s size %d\n\n", cp.Origin, cp.Size)
	table(e.stdout, []string{"LOG INDEX", "TYPE", "INCLUDED", "DETAILS"}, rows)
	return err
}

func (e *env) changeDetails(c *ktctl.Change) string {
	var as []string
	for _, a := range c.Authorizers {
		as = append(as, a.Role+":"+e.short(a.Digest))
	}
	sig := "valid"
	if !c.SignatureValid {
		sig = "INVALID"
	}
	return fmt.Sprintf("index=%s version=%d kind=%s commitment=%s prev=%s signer=%s signature=%s authorizers=[%s]",
		e.short(c.Index), c.Version, c.Kind, e.short(c.Commitment), e.short(c.Prev), e.short(c.Signer), sig, strings.Join(as, " "))
}

func (e *env) epochDetails(ep *ktctl.Epoch) string {
	return fmt.Sprintf("epoch=%d time=%s log_size=%d map_root=%s map_size=%d",
		ep.Epoch, ep.Time.Format("2006-01-02T15:04:05.000Z07:00"), ep.LogSize, e.short(ep.MapRoot), ep.MapSize)
}

var inclusionCmd = &command{
	name:  "proof inclusion",
	args:  "INDEX [--size S]",
	usage: "proof inclusion INDEX [--size S] [log flags]",
	help: `Prove that entry INDEX is in the log.
The entry is fetched and its leaf hash recomputed; the inclusion proof is
verified against the checkpoint's root, or, for --size S below the
checkpoint's size, against the root of size S that it leads to, itself
proven consistent with the checkpoint. Exit status 1 if a proof fails.`,
	keys: append([]string{"size"}, logKeys...), network: true, minArgs: 1, maxArgs: 1,
	run: runInclusion,
}

func runInclusion(ctx context.Context, e *env) error {
	index, err := parseUint("INDEX", e.args[0])
	if err != nil {
		return err
	}
	cp, _, r, err := e.checkpoint(ctx)
	if err != nil {
		return err
	}
	res, err := ktctl.VerifyInclusion(ctx, r, cp, index, e.cfg.Size)
	if res == nil {
		return err
	}
	if e.cfg.JSON {
		return e.printJSONThen(res, err)
	}
	kv := []string{
		"entry", fmt.Sprintf("%d (%s)", res.Index, res.Entry.Type),
		"leaf hash", res.LeafHash.String(),
		"tree size", strconv.FormatUint(res.Size, 10),
		"root", res.Root.String(),
	}
	kv = append(kv, proofLines("inclusion proof", res.Proof)...)
	if res.Size != res.CheckpointSize {
		kv = append(kv, proofLines("consistency to checkpoint", res.ConsistencyProof)...)
	}
	fields(e.stdout, append(kv, proofResult(res.CheckpointSize, res.CheckpointRoot, err)...)...)
	return err
}

// proofResult ends the fields of a proof command: the checkpoint the
// proofs lead to and whether they verified.
func proofResult(size uint64, root ktctl.Hex, err error) []string {
	status := "verified"
	if err != nil {
		status = "FAILED"
	}
	return []string{"checkpoint", fmt.Sprintf("size %d root %s", size, root), "result", status}
}

func proofLines(name string, p []ktctl.Hex) []string {
	if len(p) == 0 {
		return []string{name, "(empty)"}
	}
	var kv []string
	for i, h := range p {
		label := ""
		if i == 0 {
			label = fmt.Sprintf("%s (%d)", name, len(p))
		}
		kv = append(kv, label, h.String())
	}
	return kv
}

var consistencyCmd = &command{
	name:  "proof consistency",
	args:  "OLD NEW",
	usage: "proof consistency OLD NEW [log flags]",
	help: `Prove that the tree of size OLD is a prefix of the tree of size NEW.
NEW is at most the checkpoint's size. The roots of both sizes are shown;
each is bound to the verified checkpoint (NEW by a consistency proof to
the checkpoint when smaller, OLD by the proof from OLD to NEW). Exit
status 1 if a proof fails.`,
	keys: logKeys, network: true, minArgs: 2, maxArgs: 2,
	run: runConsistency,
}

func runConsistency(ctx context.Context, e *env) error {
	old, err := parseUint("OLD", e.args[0])
	if err != nil {
		return err
	}
	newSize, err := parseUint("NEW", e.args[1])
	if err != nil {
		return err
	}
	if old == 0 || old > newSize {
		return usageErr("need 0 < OLD <= NEW, have OLD %d and NEW %d", old, newSize)
	}
	cp, _, r, err := e.checkpoint(ctx)
	if err != nil {
		return err
	}
	res, err := ktctl.VerifyConsistency(ctx, r, cp, old, newSize)
	if res == nil {
		return err
	}
	if e.cfg.JSON {
		return e.printJSONThen(res, err)
	}
	kv := []string{
		"old", fmt.Sprintf("size %d root %s", res.Old, res.OldRoot),
		"new", fmt.Sprintf("size %d root %s", res.New, res.NewRoot),
	}
	kv = append(kv, proofLines("consistency proof", res.Proof)...)
	if res.New != res.CheckpointSize {
		kv = append(kv, proofLines("new to checkpoint", res.NewToCheckpoint)...)
	}
	fields(e.stdout, append(kv, proofResult(res.CheckpointSize, res.CheckpointRoot, err)...)...)
	return err
}
