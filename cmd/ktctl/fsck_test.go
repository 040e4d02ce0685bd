package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/cmd/ktctl/internal/ktctl"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/ktctltest"
	"github.com/keytrans/kt/internal/testing/testonly"
	"github.com/keytrans/kt/log/evidence"
	"github.com/keytrans/kt/log/logapi"
)

func TestVerify(t *testing.T) {
	f := ktctltest.Start(t)
	flags := logFlags(f)

	var res ktctl.FsckResult
	r := runCLI(t, append([]string{"verify", "--json"}, flags...)...)
	r.decode(t, &res)
	if r.code != exitOK || res.Size != f.Size(t) || res.From != 0 || res.Handles != 2 || res.MapSize != 2 || len(res.Violations) != 0 || res.TotalViolations != 0 {
		t.Fatalf("verify: exit %d %+v\n%s", r.code, res, r.stderr)
	}
	runCLI(t, append([]string{"verify"}, flags...)...).want(t, exitOK,
		[]string{"result      ok: no violations", "handles     2", "from entry 0"}, "verifying [", "100.0%")
	runCLI(t, append([]string{"verify", "--quiet", "--exact-signatures"}, flags...)...).want(t, exitOK, []string{"ok: no violations"}, "!verifying")

	// The same log read as tlog-tiles, from the data directory and over
	// HTTP.
	runCLI(t, "verify", "--quiet", "--tiles", filepath.Join(f.DataDir, "log"), "--data-dir", f.DataDir).want(t, exitOK, []string{"ok: no violations"})
	runCLI(t, "verify", "--quiet", "--tiles", f.LogURL, "--data-dir", f.DataDir).want(t, exitOK, []string{"ok: no violations"})

	// Resuming: the second run starts where the first stopped, and
	// replays only what the log gained.
	pos := filepath.Join(t.TempDir(), "position")
	runCLI(t, append([]string{"verify", "--quiet", "--position", pos}, flags...)...).want(t, exitOK, []string{"from entry 0"})
	size := f.Size(t)
	f.Grow(t)
	grown := f.Size(t)
	r = runCLI(t, append([]string{"verify", "--quiet", "--json", "--position", pos}, flags...)...)
	r.decode(t, &res)
	if r.code != exitOK || res.From != size || res.Size != grown || res.Handles != 2 {
		t.Fatalf("resumed verify: exit %d, from %d to %d, want from %d to %d\n%s", r.code, res.From, res.Size, size, grown, r.stderr)
	}
	runCLI(t, append([]string{"verify", "--quiet", "--position", pos}, flags...)...).
		want(t, exitOK, []string{"replayed    0 entries from entry " + strconv.FormatUint(grown, 10) + " (resumed from " + pos + ")"})

	// Bad arguments.
	runCLI(t, "verify", "--log-url", f.LogURL, "--log-key", f.LogVkey).want(t, exitUsage, nil, "needs the directory's recovery public key")
	garbage := filepath.Join(t.TempDir(), "garbage")
	os.WriteFile(garbage, []byte("not a state"), 0o600)
	runCLI(t, append([]string{"verify", "--position", garbage}, flags...)...).want(t, exitUsage, nil, "position file")
	runCLI(t, "verify", "--tiles", filepath.Join(t.TempDir(), "nothing"), "--data-dir", f.DataDir).want(t, exitIO, nil, "fetching the checkpoint")
}

// memDeployment is a log signed by the log key, with arbitrary entries,
// served over the read API.
type memDeployment struct {
	signer   note.Signer
	skey     string
	vkey     string
	recovery string
}

func newMemDeployment(t *testing.T) *memDeployment {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "mem.example/kt")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	pub, _, _ := ed25519.GenerateKey(nil)
	return &memDeployment{signer: s, skey: skey, vkey: vkey, recovery: base64.StdEncoding.EncodeToString(pub)}
}

// serve serves a log of entries; it returns the read API's URL.
func (m *memDeployment) serve(t *testing.T, entries [][]byte) string {
	t.Helper()
	l := conformance.NewMemoryLog("mem.example/kt", m.signer)
	if _, err := l.AppendUnchecked(entries); err != nil {
		t.Fatal(err)
	}
	s := httptest.NewServer(logapi.NewHandler(l))
	t.Cleanup(s.Close)
	return s.URL
}

func (m *memDeployment) flags(url string) []string {
	return []string{"--log-url", url, "--log-key", m.vkey, "--recovery-key", m.recovery}
}

// TestVerifyViolations replays logs that break the rules, and a fork
// between two runs.
func TestVerifyViolations(t *testing.T) {
	m := newMemDeployment(t)
	good := [][]byte{epochRec(0, 0, [32]byte{}, 0), epochRec(1, 1, [32]byte{}, 0)}

	// A6: a published map root that no change record yields.
	bad := [][]byte{epochRec(0, 0, [32]byte{}, 0), epochRec(1, 1, [32]byte{9}, 0), epochRec(3, 2, [32]byte{}, 0)}
	r := runCLI(t, append([]string{"verify", "--quiet"}, m.flags(m.serve(t, bad))...)...)
	r.want(t, exitVerify, []string{"VIOLATIONS: 2, the first at entry 1", "ENTRY", "map root", "epoch number"}, "2 violations")
	var res ktctl.FsckResult
	r = runCLI(t, append([]string{"verify", "--quiet", "--json"}, m.flags(m.serve(t, bad))...)...)
	r.decode(t, &res)
	if r.code != exitVerify || len(res.Violations) != 2 || res.Violations[0].Index != 1 || res.Violations[0].Rule != "map root" {
		t.Errorf("violations %+v", res.Violations)
	}

	// A fork between two runs: the position records a checkpoint of one
	// tree, the log then serves a larger tree that does not extend it.
	pos := filepath.Join(t.TempDir(), "position")
	runCLI(t, append([]string{"verify", "--quiet", "--position", pos}, m.flags(m.serve(t, good))...)...).want(t, exitOK, nil)
	// Epoch 1 with another timestamp, then epoch 2.
	forked := [][]byte{epochRec(0, 0, [32]byte{}, 0), epochRec(1, 1, [32]byte{}, 0), epochRec(2, 2, [32]byte{}, 0)}
	forked[1][17]++
	evFile := filepath.Join(t.TempDir(), "fork.evidence")
	r = runCLI(t, append([]string{"verify", "--quiet", "--position", pos, "--evidence-out", evFile}, m.flags(m.serve(t, forked))...)...)
	r.want(t, exitVerify, []string{"split-view evidence written to " + evFile, "kt-evidence/v1"}, "does not extend the one of size 2")
	ev, err := os.ReadFile(evFile)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("evidence", func(t *testing.T) {
		runCLI(t, "evidence", "verify", evFile, "--log-key", m.vkey).want(t, exitOK,
			[]string{"checkpoint A  mem.example/kt size 2", "checkpoint B  mem.example/kt size 3", "FORK PROVEN", "cosigned both     none"})
		var info ktctl.EvidenceInfo
		r := runCLI(t, "evidence", "verify", evFile, "--log-key", m.vkey, "--json")
		r.decode(t, &info)
		if info.Fork == nil || info.A.Size != 2 || info.B.Size != 3 || len(info.Fork.RootAtA) != 32 {
			t.Errorf("evidence JSON %+v", info)
		}
		runCLI(t, "evidence", "inspect", evFile).want(t, exitOK, []string{"size 2", "size 3", "well-formed (not verified"})

		_, other, _ := note.GenerateKey(rand.Reader, "mem.example/kt")
		runCLI(t, "evidence", "verify", evFile, "--log-key", other).want(t, exitVerify, []string{"does not prove a fork"}, "does not prove a fork")

		// A bundle whose proof is tampered with proves nothing.
		lines := strings.Split(string(ev), "\n")
		for i, l := range lines {
			if strings.HasPrefix(l, "proof ") {
				h, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(l, "proof "))
				h[0] ^= 1
				lines[i] = "proof " + base64.StdEncoding.EncodeToString(h)
				break
			}
		}
		tampered := filepath.Join(t.TempDir(), "tampered")
		os.WriteFile(tampered, []byte(strings.Join(lines, "\n")), 0o600)
		runCLI(t, "evidence", "verify", tampered, "--log-key", m.vkey).want(t, exitVerify, nil, "does not prove a fork")

		garbage := filepath.Join(t.TempDir(), "garbage")
		os.WriteFile(garbage, []byte("kt-evidence/v1\ncheckpoint !!!\n"), 0o600)
		runCLI(t, "evidence", "inspect", garbage).want(t, exitVerify, nil, "not a valid kt-evidence/v1 bundle")
		runCLI(t, "evidence", "verify", garbage, "--log-key", m.vkey).want(t, exitVerify, nil, "not a valid kt-evidence/v1 bundle")
		runCLI(t, "evidence", "inspect", filepath.Join(t.TempDir(), "missing")).want(t, exitIO, nil, "no such file")
		runCLI(t, "evidence", "verify", evFile).want(t, exitUsage, nil, "no log key")
		runCLI(t, "evidence", "inspect").want(t, exitUsage, nil, "wrong number of arguments")
	})
}

// TestEvidenceCosignedBoth checks that evidence verify names the witness
// that cosigned both sides of a fork.
func TestEvidenceCosignedBoth(t *testing.T) {
	m := newMemDeployment(t)
	ctx := context.Background()
	logOf := func(entries [][]byte) *conformance.MemoryLog {
		l := conformance.NewMemoryLog("mem.example/kt", m.signer)
		if _, err := l.Append(ctx, entries); err != nil {
			t.Fatal(err)
		}
		return l
	}
	la := logOf([][]byte{epochRec(0, 0, [32]byte{}, 0), epochRec(1, 1, [32]byte{}, 0)})
	forked := epochRec(1, 1, [32]byte{}, 0)
	forked[17]++
	lb := logOf([][]byte{epochRec(0, 0, [32]byte{}, 0), forked, epochRec(2, 2, [32]byte{}, 0)})
	both, onlyA := testonly.NewCosigner(t, "both.example"), testonly.NewCosigner(t, "only-a.example")
	cosign := func(raw []byte, cs ...*testonly.Cosigner) []byte {
		text, _, _ := strings.Cut(string(raw), "\n\n")
		for _, c := range cs {
			raw = append(raw, c.Sign(text+"\n", 1700000000)...)
		}
		return raw
	}
	a, _ := la.Checkpoint(ctx)
	b, _ := lb.Checkpoint(ctx)
	a, b = cosign(a, both, onlyA), cosign(b, both)
	v, _ := note.NewVerifier(m.vkey)
	bundle, err := evidence.Build(ctx, v, a, b, lb)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	evFile, policy := filepath.Join(dir, "fork.evidence"), filepath.Join(dir, "policy")
	os.WriteFile(evFile, bundle.Marshal(), 0o600)
	os.WriteFile(policy, []byte("witness w0 "+both.VKey()+"\nwitness w1 "+onlyA.VKey()+"\ngroup g 1 w0 w1\nquorum g\n"), 0o600)
	runCLI(t, "evidence", "verify", evFile, "--log-key", m.vkey, "--policy", policy).want(t, exitOK, []string{
		"FORK PROVEN", "cosigned both     w0\n", "w0 (both.example+", "w1 (only-a.example+",
	})
	runCLI(t, "evidence", "inspect", evFile).want(t, exitOK, []string{"both.example+", "only-a.example+"})
}
