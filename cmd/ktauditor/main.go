// Command ktauditor is the key transparency auditor daemon: it follows
// directories' logs through their read API and replays them
// (docs/design.md section 14), serves C2SP tlog-witness add-checkpoint,
// makes audit statements with a separate audit key (POST /kt/v1/audit,
// section 14.2), gossips checkpoints with peer auditors and clients, and
// records split-view evidence (section 15). See Config for every setting
// and auditor/README.md for operations.
//
// Usage:
//
//	ktauditor [--config FILE] [flags]              serve
//	ktauditor vkey [--config FILE] [flags]         print the cosignature vkey
//	ktauditor audit-vkey [--config FILE] [flags]   print the audit vkey (audit_key)
//	ktauditor unfreeze [--config FILE] ORIGIN      resume cosigning after evidence
//	ktauditor reset-witness [--config FILE] ORIGIN forget the last cosigned checkpoint
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/keytrans/kt/internal/cliconfig"
	"github.com/keytrans/kt/internal/ops"
)

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	slog.SetDefault(logger)
	os.Exit(cli(os.Args[1:], logger))
}

func cli(args []string, logger *slog.Logger) int {
	cmd := ""
	if len(args) > 0 {
		switch args[0] {
		case "vkey", "audit-vkey", "unfreeze", "reset-witness":
			cmd, args = args[0], args[1:]
		}
	}
	cfg, rest, err := loadConfig(args, os.Stderr)
	if status, exit := cliconfig.Exit("ktauditor", err, os.Stderr); exit {
		return status
	}
	switch cmd {
	case "vkey":
		_, vkey, err := loadKey(cfg)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ktauditor: %v\n", err)
			return 1
		}
		fmt.Println(vkey)
		return 0
	case "audit-vkey":
		_, vkey, err := loadAuditKey(cfg)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ktauditor: %v\n", err)
			return 1
		}
		fmt.Println(vkey)
		return 0
	case "unfreeze", "reset-witness":
		if len(rest) != 1 {
			fmt.Fprintf(os.Stderr, "usage: ktauditor %s [flags] ORIGIN\n", cmd)
			return 2
		}
		if err := admin(cfg, cmd, rest[0]); err != nil {
			fmt.Fprintf(os.Stderr, "ktauditor: %v\n", err)
			return 1
		}
		return 0
	}
	if len(rest) > 0 {
		fmt.Fprintf(os.Stderr, "ktauditor: unexpected arguments %q (see ktauditor --help)\n", rest)
		return 2
	}
	return ops.Run("ktauditor", logger, func(ctx context.Context) error { return run(ctx, cfg, logger, nil) })
}
