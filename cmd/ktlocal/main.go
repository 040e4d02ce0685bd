// Command ktlocal runs a complete local kt deployment in one command, for
// the quickstart (docs/quickstart.md): the directory daemon ktd on its
// embedded default and two auditor daemons (ktauditor) that audit its log
// and are its witnesses under a 2-of-2 policy, so that every checkpoint the
// directory publishes carries both auditors' cosignatures. By default
// (--audit) the directory runs in audit mode (docs/design.md 14.3): it
// serves lookups only from epochs both auditors vouched for with their
// audit keys, under the audit policy DATA_DIR/audit-policy, which it
// publishes to clients.
//
// ktlocal runs the real binaries as child processes, built from this
// module (or taken from --bin-dir), with configurations it writes into the
// data directory on first start: the auditors' cosigning keys and audit
// keys, the directory's log and recovery keys (the rest ktd creates
// itself), the witness and audit policies, and each auditor's
// configuration file. It prints every
// listener and key and the next commands to type. Ctrl-C (or SIGTERM)
// stops the directory, then the auditors; a restart on the same data
// directory continues the same log.
//
// Usage:
//
//	ktlocal [--data-dir DIR] [flags]
//	ktlocal split-view [--data-dir DIR] [flags]
//
// split-view prints a checkpoint the directory's own log key signs over
// another tree of the current size: the directory's half of a split view,
// for the quickstart's last step (an auditor shown it records evidence).
//
// See Config for every setting, and `ktlocal --help`.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/keytrans/kt/internal/cliconfig"
	"github.com/keytrans/kt/internal/ops"
)

func main() {
	args := os.Args[1:]
	split := len(args) > 0 && args[0] == "split-view"
	if split {
		args = args[1:]
	}
	cfg, err := loadConfig(args, os.Stderr)
	if status, exit := cliconfig.Exit("ktlocal", err, os.Stderr); exit {
		os.Exit(status)
	}
	ignoreSIGPIPE()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := ops.StopContext()
	defer stop()
	if split {
		if err := splitView(ctx, cfg, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "ktlocal split-view: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, cfg, logger, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "ktlocal: %v\n", err)
		os.Exit(1)
	}
}
