package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/internal/testing/ktctltest"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/log"
)

// TestRotateRecovery rotates the fixture directory's recovery key twice
// with ktctl rotate (the sequence read from the directory), after the
// refusals: a wrong old key, a skipped sequence (refused by the
// directory), a bad key file.
func TestRotateRecovery(t *testing.T) {
	f := ktctltest.Start(t)
	dir := t.TempDir()
	write := func(name string, k ed25519.PrivateKey) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("kt-recovery-private:"+base64.StdEncoding.EncodeToString(k.Seed())+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	_, k2, _ := ed25519.GenerateKey(nil)
	_, k3, _ := ed25519.GenerateKey(nil)
	_, other, _ := ed25519.GenerateKey(nil)
	cur, next, next2, wrong := filepath.Join(f.DataDir, "recovery.key"), write("k2", k2), write("k3", k3), write("other", other)
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("nope"), 0o600)
	net := []string{"--grpc", f.GRPCAddr, "--operator", f.OperatorAddr, "--timeout", "10s"}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no kind", []string{"rotate"}, exitUsage, "wrong number of arguments"},
		{"unknown kind", append([]string{"rotate", "map", "--old-key", cur, "--new-key", next}, net...), exitUsage, "key kinds"},
		{"no keys", append([]string{"rotate", "recovery"}, net...), exitUsage, "--old-key and --new-key"},
		{"bad key file", append([]string{"rotate", "recovery", "--old-key", garbage, "--new-key", next}, net...), exitUsage, "does not hold a recovery private key"},
		{"same key", append([]string{"rotate", "recovery", "--old-key", cur, "--new-key", cur}, net...), exitUsage, "same key"},
		{"old key not current", append([]string{"rotate", "recovery", "--old-key", wrong, "--new-key", next}, net...), exitUsage, "not the directory's current recovery key"},
		{"skipped sequence", append([]string{"rotate", "recovery", "--old-key", cur, "--new-key", next, "--sequence", "2"}, net...), exitIO, "rotation sequence"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runCLI(t, tc.args...).want(t, tc.code, nil, tc.stderr)
		})
	}
	runCLI(t, append([]string{"rotate", "recovery", "--old-key", cur, "--new-key", next}, net...)...).want(t, exitOK, []string{"rotated the recovery key: rotation 1"})
	runCLI(t, append([]string{"rotate", "recovery", "--old-key", next, "--new-key", next2}, net...)...).want(t, exitOK, []string{"rotated the recovery key: rotation 2"})
	// The rotated-out key is refused now.
	runCLI(t, append([]string{"rotate", "recovery", "--old-key", cur, "--new-key", wrong}, net...)...).want(t, exitUsage, nil, "not the directory's current recovery key (rotation 2)")
	rs, err := ktpb.NewDirectoryClient(f.Conn).GetRotations(context.Background(), &ktpb.GetRotationsRequest{})
	if err != nil || len(rs.GetRotations()) != 2 {
		t.Fatalf("GetRotations: %v, %d", err, len(rs.GetRotations()))
	}
	// ktctl verify replays the log across both rotations.
	runCLI(t, "verify", "--quiet", "--tiles", f.LogURL, "--data-dir", f.DataDir).want(t, exitOK, []string{"ok: no violations"})
}

// TestVerifyForgedRotation: ktctl verify reports a forged rotation record
// in the log with its rule; the control, the honest rotation, passes.
func TestVerifyForgedRotation(t *testing.T) {
	m := newMemDeployment(t)
	logKey, err := log.Ed25519PrivateKey(m.skey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		kind   api.KeyKind
		forged bool
	}{{"recovery control", api.KeyRecovery, false}, {"recovery forged", api.KeyRecovery, true}, {"log forged", api.KeyLog, true}} {
		t.Run(tc.name, func(t *testing.T) {
			b := ktlog.New("mem.example/kt")
			b.Honest(2, 1)
			old := b.Recovery
			if tc.kind == api.KeyLog {
				old = logKey
			}
			if tc.forged {
				old = ktlog.Key("mallory")
			}
			r := &api.RotationRecord{Kind: tc.kind, Sequence: 1}
			if err := r.SignRotation(b.Origin, old, ktlog.Key("r2")); err != nil {
				t.Fatal(err)
			}
			raw, _ := r.MarshalBinary()
			b.Raw(raw)
			b.Epoch()
			url := m.serve(t, b.Entries())
			rk := ktlog.Pub(b.Recovery)
			res := runCLI(t, "verify", "--quiet", "--log-url", url, "--log-key", m.vkey, "--recovery-key", base64.StdEncoding.EncodeToString(rk[:]))
			if tc.forged {
				res.want(t, exitVerify, []string{"rotation old key"})
			} else {
				res.want(t, exitOK, []string{"ok: no violations"})
			}
		})
	}
}
