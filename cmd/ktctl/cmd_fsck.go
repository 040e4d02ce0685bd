package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
against the entries. With --tiles it also recomputes every hash tile from
the entries and compares it with the stored one (proofs are served from
the tiles), naming the first damaged file. Reads the read API (--log-url) or a tlog-tiles log
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
	if tiles != nil && ctx.Err() == nil {
		// An fsck of the stored hash tiles, which proofs are built from.
		if terr := tiles.CheckTiles(ctx, cp, progress); terr != nil {
			res.Tiles = terr.Error()
			err = errors.Join(err, terr)
		} else {
			res.Tiles = "ok: every hash tile recomputed from the entries matches"
		}
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
		if errors.Is(err, ktctl.ErrVerification) && res.Tiles != "" && !strings.HasPrefix(res.Tiles, "ok") {
			status = "FAILED: damaged hash tiles"
		}
	}
	from := "entry 0"
	if res.From > 0 {
		from = fmt.Sprintf("entry %d (resumed from %s)", res.From, e.cfg.Position)
	}
	kv := []string{
		"checkpoint", fmt.Sprintf("%s size %d root %s", cp.Origin, cp.Size, cp.Root),
		"replayed", fmt.Sprintf("%d entries from %s to %d in %s (%.0f entries/s)", res.Size-res.From, from, res.Size, res.Elapsed, res.Rate),
		"handles", strconv.Itoa(res.Handles),
		"epochs", strconv.FormatUint(res.NextEpoch, 10),
		"map", fmt.Sprintf("root %s, %d leaves (recomputed)", res.MapRoot, res.MapSize),
		"result", status,
	}
	if res.Tiles != "" {
		kv = append(kv, "tiles", res.Tiles)
	}
	fields(e.stdout, kv...)
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
	help: `Decode an evidence bundle (kt-evidence/v1 or kt-evidence/v2) without
verifying it. Shows its kind, checkpoints (origin, size, root, signature
lines) and the proof or entries. Use "evidence verify" to check what it
proves. Exit status 1 if FILE is not a well-formed bundle.`,
	maxArgs: 1, minArgs: 1,
	run: runEvidence(false),
}

var evidenceVerifyCmd = &command{
	name:  "evidence verify",
	args:  "FILE",
	usage: "evidence verify FILE [--log-key KEY | --data-dir DIR] [--recovery-key KEY] [--policy FILE] [--log-url URL | --tiles DIR|URL]",
	help: `Verify an evidence bundle offline with the pinned log key and print its
kind and what it proves (design.md 15, 15.1):
  fork              two checkpoints of which neither extends the other
                    (kt-evidence/v1; with --policy the witnesses that
                    cosigned both are named)
  records           change records that break the authorization rules
                    (R6 verdicts need the recovery key)
  map-regression    a later epoch's map that lost or rolled back a record
  version-conflict  an epoch's map and a logged record that disagree
  map-root          the claim that an epoch's map root/size is not the map
                    of the entries before it: not self-verifying. With
                    --log-url (given explicitly), --tiles, or --data-dir
                    (DATA_DIR/log), entries [0, j) are replayed with the
                    auditor's engine and checked to be the bundle's tree;
                    without, the range to replay is printed.
Exit status 0 means the bundle proves misbehaviour; 1 that it does not (or
that a map-root claim was not or could not be replayed).`,
	keys:    []string{"log_key", "data_dir", "policy", "recovery_key", "log_url", "tiles"},
	network: true, maxArgs: 1, minArgs: 1,
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
			if err == nil && info.NeedsReplay {
				info, err = e.replayMapRoot(ctx, raw, k, info)
			}
		} else {
			info, err = ktctl.InspectEvidence(raw)
		}
		if info == nil {
			return err
		}
		if e.cfg.JSON {
			return errors.Join(err, e.printJSON(info))
		}
		sigs := func(c *ktctl.EvidenceCheckpoint) string {
			var ss []string
			for _, s := range c.Signatures {
				n := s.KeyName + "+" + s.KeyHash
				if s.Witness != "" {
					n = s.Witness + " (" + n + ")"
				}
				if verify {
					n += " " + s.Status
				}
				ss = append(ss, n)
			}
			return strings.Join(ss, ", ")
		}
		kv := []string{"kind", info.Kind}
		if info.Kind != "fork" {
			kv = append(kv, "checkpoint C", fmt.Sprintf("%s size %d root %s", info.Checkpoint.Origin, info.Checkpoint.Size, info.Checkpoint.Root),
				"  signatures", sigs(info.Checkpoint))
			for _, en := range info.Entries {
				kv = append(kv, fmt.Sprintf("entry %d", en.Index), fmt.Sprintf("%s record: %s (%d inclusion hashes)", en.Type, en.Summary, en.Inclusion))
				if en.Map != "" {
					kv = append(kv, "  map value", en.Map)
				}
			}
			if rr := info.Replay; rr != nil {
				kv = append(kv, "replayed", fmt.Sprintf("entries [0, %d) from %s", rr.Index, rr.Source),
					"recomputed map", fmt.Sprintf("root %s size %d", rr.RecomputedRoot, rr.RecomputedSize),
					"published map", fmt.Sprintf("root %s size %d (epoch %d, entry %d)", rr.PublishedRoot, rr.PublishedSize, rr.Epoch, rr.Index))
			}
			switch {
			case !verify:
				kv = append(kv, "result", "well-formed (not verified; use ktctl evidence verify)")
			case errors.As(err, new(*ktctl.VerifyError)):
				kv = append(kv, "result", "does not prove misbehaviour")
			case err != nil:
				kv = append(kv, "result", "not decided: "+err.Error())
			case info.Replay != nil:
				kv = append(kv, "result", "PROVEN by replay: the published map is not the map of the entries before it")
			default:
				kv = append(kv, "result", "PROVEN: "+info.What)
			}
			fields(e.stdout, kv...)
			return err
		}
		for _, c := range []struct {
			name string
			cp   *ktctl.EvidenceCheckpoint
		}{{"A", info.A}, {"B", info.B}} {
			kv = append(kv, "checkpoint "+c.name, fmt.Sprintf("%s size %d root %s", c.cp.Origin, c.cp.Size, c.cp.Root),
				"  signatures", sigs(c.cp))
		}
		fields(e.stdout, kv...)
		kv = proofLines("proof", info.Proof)
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

// replayMapRoot checks a verified map-root bundle's claim by replaying
// entries [0, j) from --tiles, --log-url (given explicitly) or
// DATA_DIR/log; without any, it says which range needs a replay.
//
// SPEC(design.md 15.1 map-root)
func (e *env) replayMapRoot(ctx context.Context, raw []byte, k *ktctl.Keys, info *ktctl.EvidenceInfo) (*ktctl.EvidenceInfo, error) {
	var r klog.Reader
	var source string
	switch {
	case e.cfg.Tiles != "":
		source = e.cfg.Tiles
	case e.cfg.given["log_url"]:
		lr, err := e.logReader()
		if err != nil {
			return info, err
		}
		r, source = lr, "the read API at "+e.cfg.LogURL
	case e.cfg.DataDir != "" && dirExists(filepath.Join(e.cfg.DataDir, "log")):
		source = filepath.Join(e.cfg.DataDir, "log")
	default:
		return info, &ktctl.VerifyError{What: "evidence", Detail: fmt.Sprintf("%s: a replay is needed: replay entries [0, %d) of the log (give --log-url, --tiles or --data-dir)", info.What, info.Entries[0].Index)}
	}
	if r == nil {
		tr, err := ktctl.NewTilesReader(source, nil)
		if err != nil {
			return info, err
		}
		tr.Size = info.Checkpoint.Size
		r, source = tr, "the tiles at "+source
	}
	var progress ktctl.Progress
	if e.progress {
		progress = (&progressBar{w: e.stderr, verb: "replaying"}).update
	}
	return ktctl.VerifyMapRoot(ctx, raw, k, r, source, progress)
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
