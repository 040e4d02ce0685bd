// Command ktauditor is the key transparency auditor daemon: it follows
// directories' logs through their read API and replays them
// (docs/design.md section 14), serves C2SP tlog-witness add-checkpoint,
// gossips checkpoints with peer auditors and clients, and records
// split-view evidence (section 15). See Config for every setting and
// auditor/README.md for operations.
//
// Usage:
//
//	ktauditor [--config FILE] [flags]              serve
//	ktauditor vkey [--config FILE] [flags]         print the cosignature vkey
//	ktauditor unfreeze [--config FILE] ORIGIN      resume cosigning after evidence
//	ktauditor reset-witness [--config FILE] ORIGIN forget the last cosigned checkpoint
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
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
		case "vkey", "unfreeze", "reset-witness":
			cmd, args = args[0], args[1:]
		}
	}
	cfg, rest, err := loadConfig(args, os.Stderr)
	switch {
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintf(os.Stderr, "ktauditor: %v\n", err)
		return 2
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal kills at once
	}()
	if err := run(ctx, cfg, logger, nil); err != nil {
		logger.Error("ktauditor stopped", "err", err)
		return 1
	}
	logger.Info("ktauditor stopped")
	return 0
}
