// Command kt is the key transparency client: it sets up a device,
// registers handles, adds and removes devices, looks handles up showing
// what was verified, encrypts to every verified device of a handle,
// decrypts, monitors this device's own handles with alerts, and checks
// the contacts it encrypted to (kt contacts check) and compares
// verification codes with contacts (kt verify). All logic
// is in package client; this command only parses arguments and prints.
// See `kt --help` and Config for every setting.
package main

import (
	"os"

	"github.com/keytrans/kt/internal/ops"
)

func main() {
	ctx, stop := ops.StopContext()
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
