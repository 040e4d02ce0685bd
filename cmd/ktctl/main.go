// Command ktctl is the operator and researcher CLI of a key transparency
// directory: it shows the log's checkpoint and who cosigned it, decodes
// entries, verifies inclusion and consistency proofs, shows the history of
// a VRF index or (with the directory's VRF key) of a handle, diffs a
// handle's device set between two epochs, and administers Trillian trees.
// Everything it shows is verified against pinned keys first.
//
// Usage:
//
//	ktctl COMMAND [flags] [ARGS]
//
// Output is a human-readable table, or JSON with --json. Exit status: 0
// success; 1 a verification failure (evidence of misbehaviour, or wrong
// pinned keys); 2 a usage error; 3 an I/O or network error. See
// docs/ktctl.md and `ktctl help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
