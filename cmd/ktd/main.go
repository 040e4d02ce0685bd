// Command ktd is the key transparency directory daemon. On its embedded
// default it needs nothing but a data directory: the transparency log runs
// in-process on Tessera's POSIX driver, the directory's state sits next to
// it, and the keys are created on first start.
//
// Usage:
//
//	ktd [--config FILE] [flags]                  serve
//	ktd issue-token [--config FILE] [flags] HANDLE   print an enrollment token
//	ktd backup [--config FILE] [flags] DEST          back up the running ktd (docs/operations.md, Backups)
//
// It serves the public gRPC API (Directory and Log services), the public
// HTTP endpoint (log read API, C2SP tlog-tiles, /healthz), the private
// Operator gRPC service and Prometheus metrics, each on its own listener.
// See Config for every setting, and `ktd --help`.
//
// # The Operator listener
//
// The Operator service (Recover: kind-4 changes signed by the recovery
// key) is served only on operator_listen, never on the public gRPC
// listener (which answers it with Unimplemented). Its access is restricted
// by where it listens: by default 127.0.0.1:8444, reachable only from the
// machine itself. ktd refuses to start with a non-loopback operator_listen
// unless operator.client_ca_file is set, in which case the listener serves
// mutual TLS (with tls.cert_file) and accepts only clients whose
// certificate chains to that CA. An empty operator_listen disables it.
// Recover requests still carry the recovery key's signature: the listener
// restriction keeps the endpoint from the public, the signature decides
// what is logged, and every recovery is in the log as kind 4 for owners'
// monitors to report.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"k8s.io/klog/v2"

	"github.com/keytrans/kt/internal/cliconfig"
	"github.com/keytrans/kt/internal/ops"
)

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	slog.SetDefault(logger)
	// Tessera and Trillian log through klog; quietHandler lowers the
	// benign start-up messages that read like errors.
	klog.SetSlogLogger(slog.New(quietHandler{logger.Handler()}))
	args := os.Args[1:]
	issue := len(args) > 0 && args[0] == "issue-token"
	backup := len(args) > 0 && args[0] == "backup"
	if issue || backup {
		args = args[1:]
	}
	cfg, rest, err := loadConfig(args, os.Stderr)
	if status, exit := cliconfig.Exit("ktd", err, os.Stderr); exit {
		os.Exit(status)
	}
	if backup {
		if len(rest) != 1 {
			fmt.Fprintln(os.Stderr, "usage: ktd backup [--config FILE] [flags] DEST")
			os.Exit(2)
		}
		if err := runBackup(cfg, rest[0]); err != nil {
			fmt.Fprintf(os.Stderr, "ktd: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if issue {
		if len(rest) != 1 {
			fmt.Fprintln(os.Stderr, "usage: ktd issue-token [flags] HANDLE")
			os.Exit(2)
		}
		tok, err := issueToken(cfg, logger, rest[0])
		if err != nil {
			fmt.Fprintf(os.Stderr, "ktd: %v\n", err)
			os.Exit(1)
		}
		fmt.Println(tok)
		return
	}
	if len(rest) > 0 {
		fmt.Fprintf(os.Stderr, "ktd: unexpected arguments %q (see ktd --help)\n", rest)
		os.Exit(2)
	}
	os.Exit(ops.Run("ktd", logger, func(ctx context.Context) error { return run(ctx, cfg, logger, nil) }))
}
