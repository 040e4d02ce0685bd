package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/ktctltest"
)

// TestRecover checks every way ktctl recover refuses, against the fixture
// directory. The successful path (a recovery through ktd's real Operator
// listener, and the owner's alert) runs in internal/testing/quickstart.
func TestRecover(t *testing.T) {
	f := ktctltest.Start(t)
	dev, err := client.GenerateDevice(api.SuiteX25519, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	desc := dev.Descriptor()
	// An address nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	_, other, _ := ed25519.GenerateKey(nil)
	otherKey := write("other.key", "kt-recovery-private:"+base64.StdEncoding.EncodeToString(other.Seed()))
	publicOnly := write("public.key", "kt-recovery-public:"+base64.StdEncoding.EncodeToString(f.Recovery.Public().(ed25519.PublicKey)))
	_, otherLog, err := note.GenerateKey(rand.Reader, ktctltest.Origin)
	if err != nil {
		t.Fatal(err)
	}
	net := []string{"--grpc", f.GRPCAddr, "--operator", dead, "--timeout", "5s"}
	bob := f.Bob.Name

	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no arguments", []string{"recover"}, exitUsage, "wrong number of arguments"},
		{"no descriptor", []string{"recover", bob, "--data-dir", f.DataDir}, exitUsage, "wrong number of arguments"},
		{"bad descriptor", []string{"recover", bob, "kt-device:AAAA", "--data-dir", f.DataDir}, exitUsage, "descriptor"},
		{"no recovery key", []string{"recover", bob, desc, "--log-key", f.LogVkey}, exitUsage, "no recovery private key"},
		{"public recovery key only", append([]string{"recover", bob, desc, "--data-dir", f.DataDir, "--recovery-key", publicOnly}, net...), exitUsage, "does not hold a recovery private key"},
		{"missing key file", append([]string{"recover", bob, desc, "--data-dir", f.DataDir, "--recovery-key", filepath.Join(dir, "nope")}, net...), exitUsage, "recovery private key"},
		{"another recovery key", append([]string{"recover", bob, desc, "--data-dir", f.DataDir, "--recovery-key", otherKey}, net...), exitUsage, "does not match the directory's recovery public key"},
		{"malformed log key", append([]string{"recover", bob, desc, "--data-dir", f.DataDir, "--log-key", "ktctl.test/kt+00000000+AUWxNm/r4W5MaKmyJ5xq4YmVU8ZX+EkW/ROPEPcwXrpM"}, net...), exitUsage, "log key"},
		{"another log key", append([]string{"recover", bob, desc, "--data-dir", f.DataDir, "--log-key", otherLog}, net...), exitVerify, "not the pinned"},
		{"unregistered handle", append([]string{"recover", "nobody@example.com", desc, "--data-dir", f.DataDir}, net...), exitUsage, "is not registered"},
		{"operator unreachable", append([]string{"recover", bob, desc, "--data-dir", f.DataDir}, net...), exitIO, "recover:"},
		{"directory unreachable", []string{"recover", bob, desc, "--data-dir", f.DataDir, "--grpc", dead, "--timeout", "2s"}, exitIO, "parameters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runCLI(t, tc.args...).want(t, tc.code, nil, tc.stderr)
		})
	}
}
