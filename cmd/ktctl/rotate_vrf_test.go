package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/internal/testing/ktctltest"
	"github.com/keytrans/kt/internal/testing/ktlog"
	"github.com/keytrans/kt/vrf"
)

// TestRotateVRF rotates the fixture directory's VRF key with ktctl rotate
// vrf (design.md 11.2) after the refusals (a wrong old key, a new key the
// directory is not configured to rotate to, a bad key file), then replays
// the re-indexed log with ktctl verify.
func TestRotateVRF(t *testing.T) {
	f := ktctltest.Start(t)
	dir := t.TempDir()
	write := func(name string, k *vrf.PrivateKey) string {
		p := filepath.Join(dir, name)
		text, _ := k.MarshalText()
		if err := os.WriteFile(p, append(text, '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	other, _ := vrf.GenerateKey(nil)
	cur, next, wrong := filepath.Join(f.DataDir, "vrf.key"), write("next", f.NextVRF), write("other", other)
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("nope"), 0o600)
	net := []string{"--grpc", f.GRPCAddr, "--operator", f.OperatorAddr, "--timeout", "10s"}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no keys", append([]string{"rotate", "vrf"}, net...), exitUsage, "--old-key and --new-key"},
		{"bad key file", append([]string{"rotate", "vrf", "--old-key", garbage, "--new-key", next}, net...), exitUsage, "does not hold a VRF private key"},
		{"same key", append([]string{"rotate", "vrf", "--old-key", cur, "--new-key", cur}, net...), exitUsage, "same key"},
		{"old key not current", append([]string{"rotate", "vrf", "--old-key", wrong, "--new-key", next}, net...), exitUsage, "not the directory's current vrf key"},
		{"new key not the next", append([]string{"rotate", "vrf", "--old-key", cur, "--new-key", wrong}, net...), exitIO, "next VRF key"},
		{"skipped sequence", append([]string{"rotate", "vrf", "--old-key", cur, "--new-key", next, "--sequence", "2"}, net...), exitIO, "rotation sequence"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runCLI(t, tc.args...).want(t, tc.code, nil, tc.stderr)
		})
	}
	runCLI(t, append([]string{"rotate", "vrf", "--old-key", cur, "--new-key", next}, net...)...).want(t, exitOK, []string{"rotated the vrf key: rotation 1"})
	// The rotated-out key is refused now.
	runCLI(t, append([]string{"rotate", "vrf", "--old-key", cur, "--new-key", wrong}, net...)...).want(t, exitUsage, nil, "not the directory's current vrf key (rotation 1)")
	// ktctl verify replays the rotation and the moves.
	runCLI(t, "verify", "--quiet", "--tiles", f.LogURL, "--data-dir", f.DataDir).want(t, exitOK, []string{"ok: no violations"})
}

// TestVerifyForgedVRFRotation: ktctl verify reports a rotation of the VRF
// key whose proof is by another key, and a move that breaks a re-indexing
// rule; the control, an honest rotation and move, passes.
func TestVerifyForgedVRFRotation(t *testing.T) {
	m := newMemDeployment(t)
	k1, _ := vrf.GenerateKey(nil)
	k2, _ := vrf.GenerateKey(nil)
	mallory, _ := vrf.GenerateKey(nil)
	for _, tc := range []struct {
		name    string
		prove   *vrf.PrivateKey
		badMove bool
		want    string
	}{{"control", k1, false, ""}, {"forged proof", mallory, false, "rotation old proof"}, {"move twice", k1, true, "move old index"}} {
		t.Run(tc.name, func(t *testing.T) {
			b := ktlog.New("mem.example/kt")
			b.Honest(2, 1)
			r := &api.RotationRecord{Kind: api.KeyVRF, Sequence: 1}
			if err := r.ProveVRFRotation(b.Origin, [32]byte(k1.Public().Bytes()), [32]byte(k2.Public().Bytes()), tc.prove.ProveRotation, k2.ProveRotation); err != nil {
				t.Fatal(err)
			}
			raw, _ := r.MarshalBinary()
			b.Raw(raw)
			b.Move(1, ktlog.Index("h0"), ktlog.Index("h0 new"))
			b.Move(1, ktlog.Index("h1"), ktlog.Index("h1 new"))
			if tc.badMove {
				b.Move(1, ktlog.Index("h0"), ktlog.Index("h0 elsewhere"))
			}
			b.Epoch()
			url := m.serve(t, b.Entries())
			rk := ktlog.Pub(b.Recovery)
			res := runCLI(t, "verify", "--quiet", "--log-url", url, "--log-key", m.vkey, "--recovery-key", base64.StdEncoding.EncodeToString(rk[:]))
			if tc.want != "" {
				res.want(t, exitVerify, []string{tc.want})
			} else {
				res.want(t, exitOK, []string{"ok: no violations"})
			}
		})
	}
}
