package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/internal/testing/ktctltest"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"ktctl": func() { os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs the ktctl binary end to end from the scripts in
// testdata/script against a running directory. Scripts see:
//
//	LOG_URL, GRPC     the read API and gRPC addresses
//	OPERATOR          the Operator service's gRPC address
//	DATA_DIR, POLICY  the data directory (ktd's layout) and witness policy
//	LOG_VKEY          the log's verifier key
//	OTHER_VKEY        another key for the same origin
//	SIZE              the log's size
//	ALICE, ALICE_INDEX  alice's handle and VRF index
//	ALICE_V1 .. ALICE_V4  log indices of alice's versions
//	ALICE_E1 .. ALICE_E4  the epochs that published them
//
// and a command "exits N PROGRAM ARGS..." that runs PROGRAM and checks
// its exit status.
func TestScripts(t *testing.T) {
	f := ktctltest.Start(t)
	size := f.Size(t)
	_, other, err := note.GenerateKey(rand.Reader, ktctltest.Origin)
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(e *testscript.Env) error {
			e.Setenv("LOG_URL", f.LogURL)
			e.Setenv("GRPC", f.GRPCAddr)
			e.Setenv("OPERATOR", f.OperatorAddr)
			e.Setenv("DATA_DIR", f.DataDir)
			e.Setenv("POLICY", f.PolicyFile)
			e.Setenv("LOG_VKEY", f.LogVkey)
			e.Setenv("OTHER_VKEY", other)
			e.Setenv("SIZE", strconv.FormatUint(size, 10))
			e.Setenv("ALICE", f.Alice.Name)
			e.Setenv("ALICE_INDEX", hex.EncodeToString(f.Alice.Index[:]))
			for i, v := range f.Alice.Versions {
				n := strconv.Itoa(i + 1)
				e.Setenv("ALICE_V"+n, strconv.FormatUint(v.LogIndex, 10))
				e.Setenv("ALICE_E"+n, strconv.FormatUint(v.Epoch, 10))
			}
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) < 2 {
					ts.Fatalf("usage: exits N PROGRAM [ARGS...]")
				}
				want, err := strconv.Atoi(args[0])
				if err != nil {
					ts.Fatalf("exits: %v", err)
				}
				err = ts.Exec(args[1], args[2:]...)
				got := 0
				var ee *exec.ExitError
				switch {
				case errors.As(err, &ee):
					got = ee.ExitCode()
				case err != nil:
					ts.Fatalf("exits: %v", err)
				}
				if got != want {
					ts.Fatalf("exit status %d, want %d", got, want)
				}
			},
		},
	})
}
