package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/keytrans/kt/cmd/ktctl/internal/ktctl"
	klog "github.com/keytrans/kt/log"
)

var verifyCmd = &command{
	name:  "verify",
	args:  "[--tiles DIR|URL] [--position FILE]",
	usage: "verify [--log-url URL | --tiles DIR|URL] [--log-key KEY | --data-dir DIR] [--recovery-key KEY] [--position FILE] [--policy FILE]",
	help: `Verify the whole log, fsck-style, with the auditor's replay engine.
Replays every entry (rules R1 to R6, epoch numbers, log sizes, timestamps,
map roots recomputed, design.md 14) and checks the checkpoint's root
against the entries. Reads the read API (--log-url) or a tlog-tiles log
(--tiles: ktd's DATA_DIR/log, or ktd's HTTP root). With --position FILE the
replay state is saved there and the next run resumes from it, after
checking that the new checkpoint extends the one verified before (if not,
a kt-evidence/v1 bundle is printed, and written to --evidence-out). Shows
a progress bar on stderr unless --quiet. Exit status 1 on any violation.`,
	keys:    append([]string{"tiles", "position", "recovery_key", "exact_signatures", "evidence_out", "quiet"}, logKeys...),
	network: true, maxArgs: 0,
	run: runVerify,
}

func runVerify(ctx context.Context, e *env) error {
	k, err := e.keys()
	if err != nil {
		return err
	}
	if k.RecoveryKey == nil {
		return usageErr("verify needs the directory's recovery public key (rule R6): set --recovery-key (ktd prints it at start as recovery_public_key) or --data-dir")
	}
	var r klog.Reader
	var tiles *ktctl.TilesReader
	if e.cfg.Tiles != "" {
		if tiles, err = ktctl.NewTilesReader(e.cfg.Tiles, nil); err != nil {
			return err
		}
		r = tiles
	} else if r, err = e.logReader(); err != nil {
		return err
	}
	cp, err := ktctl.FetchCheckpoint(ctx, r, k)
	if err != nil {
		return err
	}
	if tiles != nil {
		tiles.Size = cp.Size
	}
	var progress ktctl.Progress
	if !e.cfg.Quiet {
		progress = (&progressBar{w: e.stderr, verb: "verifying"}).update
	}
	res, err := ktctl.Fsck(ctx, r, cp, k, ktctl.FsckOptions{
		RecoveryKey: *k.RecoveryKey, Position: e.cfg.Position, Progress: progress,
		ExactSignatures: e.cfg.ExactSignatures,
	})
	if res == nil {
		return err
	}
	if res.Evidence != "" && e.cfg.EvidenceOut != "" {
		if werr := os.WriteFile(e.cfg.EvidenceOut, []byte(res.Evidence), 0o644); werr != nil {
			return errors.Join(err, fmt.Errorf("writing the evidence: %w", werr))
		}
	}
	if e.cfg.JSON {
		return errors.Join(err, e.printJSON(res))
	}
	status := "ok: no violations"
	switch {
	case res.TotalViolations > 0:
		status = fmt.Sprintf("VIOLATIONS: %d, the first at entry %d", res.TotalViolations, *res.FirstViolation)
	case err != nil:
		status = "FAILED"
	}
	from := "entry 0"
	if res.From > 0 {
		from = fmt.Sprintf("entry %d (resumed from %s)", res.From, e.cfg.Position)
	}
	fields(e.stdout,
		"checkpoint", fmt.Sprintf("%s size %d root %s", cp.Origin, cp.Size, cp.Root),
		"replayed", fmt.Sprintf("%d entries from %s to %d in %s (%.0f entries/s)", res.Size-res.From, from, res.Size, res.Elapsed, res.Rate),
		"handles", strconv.Itoa(res.Handles),
		"epochs", strconv.FormatUint(res.NextEpoch, 10),
		"map", fmt.Sprintf("root %s, %d leaves (recomputed)", res.MapRoot, res.MapSize),
		"result", status,
	)
	if len(res.Violations) > 0 {
		fmt.Fprintln(e.stdout)
		var rows [][]string
		for _, v := range res.Violations {
			rows = append(rows, []string{strconv.FormatUint(v.Index, 10), v.Rule, v.Detail})
		}
		table(e.stdout, []string{"ENTRY", "RULE", "DETAIL"}, rows)
	}
	if res.Evidence != "" {
		fmt.Fprintln(e.stdout)
		if e.cfg.EvidenceOut != "" {
			fmt.Fprintf(e.stdout, "split-view evidence written to %s:\n", e.cfg.EvidenceOut)
		} else {
			fmt.Fprintln(e.stdout, "split-view evidence (kt-evidence/v1):")
		}
		fmt.Fprint(e.stdout, res.Evidence)
	}
	return err
}

var evidenceInspectCmd = &command{
	name:  "evidence inspect",
	args:  "FILE",
	usage: "evidence inspect FILE",
	help: `Decode a kt-evidence/v1 bundle without verifying it.
Shows both checkpoints (origin, size, root, signature lines) and the proof.
Use "evidence verify" to check what it proves. Exit status 1 if FILE is
not a well-formed bundle.`,
	maxArgs: 1, minArgs: 1,
	run: runEvidence(false),
}

var evidenceVerifyCmd = &command{
	name:  "evidence verify",
	args:  "FILE",
	usage: "evidence verify FILE [--log-key KEY | --data-dir DIR] [--policy FILE]",
	help: `Verify a kt-evidence/v1 bundle offline with the log key alone.
Exit status 0 means the bundle proves a fork of the log: two checkpoints
signed by the log key of which neither extends the other (design.md 15).
With --policy, the witnesses that cosigned both are named. Exit status 1
if it does not prove a fork.`,
	keys:    []string{"log_key", "data_dir", "policy"},
	maxArgs: 1, minArgs: 1,
	run: runEvidence(true),
}

func runEvidence(verify bool) func(context.Context, *env) error {
	return func(ctx context.Context, e *env) error {
		raw, err := os.ReadFile(e.args[0])
		if err != nil {
			return err
		}
		var info *ktctl.EvidenceInfo
		if verify {
			k, kerr := e.keys()
			if kerr != nil {
				return kerr
			}
			info, err = ktctl.VerifyEvidence(raw, k)
		} else {
			info, err = ktctl.InspectEvidence(raw)
		}
		if info == nil {
			return err
		}
		if e.cfg.JSON {
			return errors.Join(err, e.printJSON(info))
		}
		for _, c := range []struct {
			name string
			cp   *ktctl.EvidenceCheckpoint
		}{{"A", &info.A}, {"B", &info.B}} {
			var sigs []string
			for _, s := range c.cp.Signatures {
				n := s.KeyName + "+" + s.KeyHash
				if s.Witness != "" {
					n = s.Witness + " (" + n + ")"
				}
				if verify {
					n += " " + s.Status
				}
				sigs = append(sigs, n)
			}
			fields(e.stdout, "checkpoint "+c.name, fmt.Sprintf("%s size %d root %s", c.cp.Origin, c.cp.Size, c.cp.Root),
				"  signatures", strings.Join(sigs, ", "))
		}
		kv := proofLines("proof", info.Proof)
		switch {
		case info.Fork != nil:
			both := "none"
			if len(info.Fork.CosignedBoth) > 0 {
				both = strings.Join(info.Fork.CosignedBoth, ", ")
			}
			kv = append(kv, "tree B at size A", info.Fork.RootAtA.String(),
				"result", "FORK PROVEN: the log signed two trees of which neither extends the other",
				"cosigned both", both)
		case verify:
			kv = append(kv, "result", "does not prove a fork")
		default:
			kv = append(kv, "result", "well-formed (not verified; use ktctl evidence verify)")
		}
		fields(e.stdout, kv...)
		return err
	}
}
