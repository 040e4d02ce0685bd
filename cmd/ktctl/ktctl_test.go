package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/cmd/ktctl/internal/ktctl"
	"github.com/keytrans/kt/internal/testing/ktctltest"
	"github.com/keytrans/kt/internal/testing/testwitness"
	"github.com/keytrans/kt/vrf"
)

func TestUsage(t *testing.T) {
	dir := t.TempDir()
	badConfig := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badConfig, []byte("log_url: [\n"), 0o600)
	unknownKey := filepath.Join(dir, "unknown.yaml")
	os.WriteFile(unknownKey, []byte("no_such_key: 1\n"), 0o600)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr []string
	}{
		{"no arguments", nil, exitUsage, nil, []string{"Commands:", "checkpoint", "Exit status"}},
		{"help", []string{"help"}, exitOK, []string{"Commands:", "proof inclusion", "tree create"}, nil},
		{"help of a command", []string{"help", "proof", "inclusion"}, exitOK, []string{"Usage: ktctl proof inclusion", "--size"}, nil},
		{"--help of a command", []string{"entries", "--help"}, exitOK, []string{"--skip-proofs", "KTCTL_SKIP_PROOFS"}, nil},
		{"help of an unknown command", []string{"help", "frobnicate"}, exitUsage, nil, []string{`unknown command "frobnicate"`}},
		{"unknown command", []string{"frobnicate"}, exitUsage, nil, []string{`unknown command "frobnicate"`}},
		{"incomplete subcommand", []string{"proof"}, exitUsage, nil, []string{`unknown command "proof"`}},
		{"unknown flag", []string{"checkpoint", "--frobnicate"}, exitUsage, nil, []string{"unknown flag: --frobnicate"}},
		{"flag of another command", []string{"checkpoint", "--size", "3"}, exitUsage, nil, []string{"unknown flag: --size"}},
		{"extra argument", []string{"checkpoint", "extra"}, exitUsage, nil, []string{"wrong number of arguments"}},
		{"missing argument", []string{"proof", "consistency", "1"}, exitUsage, nil, []string{"wrong number of arguments"}},
		{"entries not a number", []string{"entries", "x"}, exitUsage, nil, []string{`START "x": want a non-negative decimal integer`}},
		{"entries negative", []string{"entries", "--", "-1"}, exitUsage, nil, []string{`START "-1"`}},
		{"entries inverted", []string{"entries", "5", "5"}, exitUsage, nil, []string{"END (5) must be greater than START (5)"}},
		{"inclusion not a number", []string{"proof", "inclusion", "0x10"}, exitUsage, nil, []string{`INDEX "0x10"`}},
		{"consistency zero", []string{"proof", "consistency", "0", "5"}, exitUsage, nil, []string{"need 0 < OLD <= NEW"}},
		{"consistency inverted", []string{"proof", "consistency", "6", "5"}, exitUsage, nil, []string{"need 0 < OLD <= NEW"}},
		{"size not a number", []string{"proof", "inclusion", "1", "--size", "big"}, exitUsage, nil, []string{"invalid argument \"big\""}},
		{"no log key", []string{"checkpoint"}, exitUsage, nil, []string{"no log key: set --log-key"}},
		{"bad log key", []string{"checkpoint", "--log-key", "a+b+c"}, exitUsage, nil, []string{"neither a valid verifier key nor a readable file"}},
		{"missing log key file", []string{"checkpoint", "--log-key", filepath.Join(dir, "nope")}, exitUsage, nil, []string{"no such file"}},
		{"empty data dir", []string{"checkpoint", "--data-dir", dir}, exitUsage, nil, []string{"log.key"}},
		{"missing policy", []string{"checkpoint", "--policy", filepath.Join(dir, "nope")}, exitUsage, nil, []string{"witness policy"}},
		{"bad policy", []string{"checkpoint", "--policy", badConfig}, exitUsage, nil, []string{"witness policy"}},
		{"bad URL", []string{"checkpoint", "--log-key", "x.example+01234567+AQ==", "--log-url", "ftp://x"}, exitUsage, nil, []string{}},
		{"zero timeout", []string{"checkpoint", "--timeout", "0s"}, exitUsage, nil, []string{"--timeout must be positive"}},
		{"bad configuration file", []string{"checkpoint", "--config", badConfig}, exitUsage, nil, []string{"reading configuration file"}},
		{"unknown configuration key", []string{"checkpoint", "--config", unknownKey}, exitUsage, nil, []string{"no_such_key"}},
		{"history without index", []string{"history", "--log-key", "x"}, exitUsage, nil, []string{"give --index HEX or --handle HANDLE"}},
		{"history with both", []string{"history", "--index", "00", "--handle", "a@b.example"}, exitUsage, nil, []string{"not both"}},
		{"history bad index", []string{"history", "--index", "abc"}, exitUsage, nil, []string{"want 64 hexadecimal digits"}},
		{"history handle without key", []string{"history", "--handle", "+14155550100"}, exitUsage, nil, []string{"--handle needs the VRF private key"}},
		{"diff bad epoch", []string{"diff", "+14155550100", "one", "2"}, exitUsage, nil, []string{`EPOCH_A "one"`}},
		{"diff handle without key", []string{"diff", "+14155550100", "1", "2"}, exitUsage, nil, []string{"--handle needs the VRF private key"}},
		{"tree show not a number", []string{"tree", "show", "abc"}, exitUsage, nil, []string{`TREE_ID "abc"`}},
		{"tree show zero", []string{"tree", "show", "0"}, exitUsage, nil, []string{`TREE_ID "0"`}},
		{"tree bad address", []string{"tree", "list", "--trillian", "http://x:1"}, exitUsage, nil, []string{"want host:port"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runCLI(t, tc.args...).want(t, tc.code, tc.stdout, tc.stderr...)
		})
	}
}

func TestEnvironment(t *testing.T) {
	t.Setenv("KTCTL_TIMEOUT", "-1s")
	runCLI(t, "checkpoint").want(t, exitUsage, nil, "--timeout must be positive")
	// A flag overrides the environment.
	runCLI(t, "checkpoint", "--timeout", "1s").want(t, exitUsage, nil, "no log key")
}

// TestNetworkErrors checks that an unreachable server exits with status 3.
func TestNetworkErrors(t *testing.T) {
	_, vkey, _ := note.GenerateKey(rand.Reader, "down.example/kt")
	dead := "http://127.0.0.1:1"
	runCLI(t, "checkpoint", "--log-url", dead, "--log-key", vkey).want(t, exitIO, nil, "fetching the checkpoint")
	runCLI(t, "entries", "0", "--log-url", dead, "--log-key", vkey).want(t, exitIO, nil, "fetching the checkpoint")
	runCLI(t, "diff", hex.EncodeToString(make([]byte, 32)), "0", "1", "--grpc", "127.0.0.1:1", "--operator", "127.0.0.1:1", "--log-key", vkey, "--timeout", "2s").
		want(t, exitIO, nil, "Operator History")
	runCLI(t, "tree", "list", "--trillian", "127.0.0.1:1", "--timeout", "2s").want(t, exitIO, nil, "ListTrees")
}

// TestCommands runs every log and directory command against a running
// directory with a known history.
func TestCommands(t *testing.T) {
	f := ktctltest.Start(t)
	size := f.Size(t)
	alice := f.Alice
	aliceIndex := hex.EncodeToString(alice.Index[:])

	t.Run("checkpoint", func(t *testing.T) { testCheckpoint(t, f, size) })
	t.Run("entries", func(t *testing.T) { testEntries(t, f, size) })
	t.Run("proof inclusion", func(t *testing.T) { testInclusion(t, f, size) })
	t.Run("proof consistency", func(t *testing.T) { testConsistency(t, f, size) })
	t.Run("history", func(t *testing.T) { testHistory(t, f, aliceIndex) })
	t.Run("diff", func(t *testing.T) { testDiff(t, f, aliceIndex) })
}

func testCheckpoint(t *testing.T, f *ktctltest.Fixture, size uint64) {
	withPolicy := append([]string{"checkpoint", "--policy", f.PolicyFile}, logFlags(f)...)
	runCLI(t, withPolicy...).want(t, exitOK, []string{
		"origin         " + ktctltest.Origin, "size           " + strconv.FormatUint(size, 10),
		"log signature  valid (" + f.LogVkey + ")", "g = 1 of {w0}: satisfied",
		"COSIGNER", "w0        witness.ktctl.test", "valid",
	})

	var cp ktctl.Checkpoint
	r := runCLI(t, append(withPolicy, "--json")...)
	r.decode(t, &cp)
	if cp.Size != size || cp.Origin != ktctltest.Origin || len(cp.Root) != 32 || cp.Quorum == nil || !cp.Quorum.Satisfied {
		t.Errorf("checkpoint JSON = %+v", cp)
	}
	if len(cp.Cosignatures) != 1 || cp.Cosignatures[0].Witness != "w0" || cp.Cosignatures[0].Status != ktctl.CosigValid || cp.Cosignatures[0].Time == nil {
		t.Errorf("cosignatures = %+v", cp.Cosignatures)
	}

	t.Run("vkey on the command line", func(t *testing.T) {
		runCLI(t, "checkpoint", "--log-url", f.LogURL, "--log-key", f.LogVkey).
			want(t, exitOK, []string{"not checked (no --policy)", "(unknown)", "unknown-key"})
	})
	t.Run("log key from the policy's log line", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "policy")
		text, _ := os.ReadFile(f.PolicyFile)
		os.WriteFile(p, append([]byte("log "+f.LogVkey+"\n"), text...), 0o600)
		runCLI(t, "checkpoint", "--log-url", f.LogURL, "--policy", p).want(t, exitOK, []string{"satisfied"})
	})
	t.Run("wrong log key", func(t *testing.T) {
		_, other, _ := note.GenerateKey(rand.Reader, ktctltest.Origin)
		runCLI(t, "checkpoint", "--log-url", f.LogURL, "--log-key", other).
			want(t, exitVerify, nil, "the log signature does not verify with the pinned key")
	})
	t.Run("other origin", func(t *testing.T) {
		_, other, _ := note.GenerateKey(rand.Reader, "other.example/kt")
		runCLI(t, "checkpoint", "--log-url", f.LogURL, "--log-key", other).want(t, exitVerify, nil, "other.example/kt")
	})
	t.Run("policy of other witnesses", func(t *testing.T) {
		w, _ := testwitness.New("other-witness.example")
		p := filepath.Join(t.TempDir(), "policy")
		os.WriteFile(p, fmt.Appendf(nil, "witness x %s\nquorum x\n", w.VerifierKey()), 0o600)
		r := runCLI(t, "checkpoint", "--log-url", f.LogURL, "--data-dir", f.DataDir, "--policy", p)
		r.want(t, exitVerify, []string{"x: NOT satisfied", "(unknown)", "unknown-key"}, "witness policy not satisfied")
		// Every command refuses a checkpoint without the quorum.
		for _, args := range [][]string{{"entries", "0"}, {"proof", "inclusion", "0"}, {"proof", "consistency", "1", "2"}, {"history", "--index", hex.EncodeToString(make([]byte, 32))}} {
			runCLI(t, append(args, "--log-url", f.LogURL, "--data-dir", f.DataDir, "--policy", p)...).want(t, exitVerify, []string{"!LOG INDEX", "!verified"}, "witness policy not satisfied")
		}
		runCLI(t, "diff", hex.EncodeToString(make([]byte, 32)), "0", "latest", "--grpc", f.GRPCAddr, "--operator", f.OperatorAddr, "--data-dir", f.DataDir, "--policy", p).
			want(t, exitVerify, nil, "witness policy not satisfied")
	})
	t.Run("forged cosignature", func(t *testing.T) {
		// A line with the witness's key name and hash whose signature is
		// someone else's: invalid, and the checkpoint is refused.
		url := tamperProxy(t, f.LogURL, func(path string, _ url.Values, body []byte) []byte {
			if path != "/log/v1/checkpoint" {
				return body
			}
			return forgeCosignature(t, body, "witness.ktctl.test")
		})
		r := runCLI(t, "checkpoint", "--log-url", url, "--data-dir", f.DataDir, "--policy", f.PolicyFile)
		r.want(t, exitVerify, []string{"invalid", "NOT satisfied"}, "invalid cosignature from witness w0")
	})
	t.Run("tampered root", func(t *testing.T) {
		url := tamperProxy(t, f.LogURL, func(path string, _ url.Values, body []byte) []byte {
			if path == "/log/v1/checkpoint" {
				return tamperRoot(t, body)
			}
			return body
		})
		runCLI(t, "checkpoint", "--log-url", url, "--data-dir", f.DataDir).want(t, exitVerify, nil, "the log signature does not verify")
	})
}

// forgeCosignature replaces the signature bytes of the cosignature line of
// the witness with vkey, keeping its key name, hash and timestamp.
func forgeCosignature(t *testing.T, cp []byte, keyName string) []byte {
	t.Helper()
	lines := splitLines(cp)
	for i, l := range lines {
		var name, sig string
		if n, _ := fmt.Sscanf(l, "— %s %s", &name, &sig); n == 2 && name == keyName {
			raw, _ := base64.StdEncoding.DecodeString(sig)
			raw[len(raw)-1] ^= 1
			lines[i] = "— " + name + " " + base64.StdEncoding.EncodeToString(raw)
		}
	}
	return joinLines(lines)
}

// tamperRoot changes the root line of a checkpoint note.
func tamperRoot(t *testing.T, cp []byte) []byte {
	t.Helper()
	lines := splitLines(cp)
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil {
		t.Fatalf("root line %q: %v", lines[2], err)
	}
	root[0] ^= 1
	lines[2] = base64.StdEncoding.EncodeToString(root)
	return joinLines(lines)
}

func testEntries(t *testing.T, f *ktctltest.Fixture, size uint64) {
	v1 := f.Alice.Versions[0]
	r := runCLI(t, append([]string{"entries", "0", strconv.FormatUint(size, 10), "--json"}, logFlags(f)...)...)
	var out struct {
		CheckpointSize uint64         `json:"checkpoint_size"`
		Entries        []*ktctl.Entry `json:"entries"`
	}
	r.decode(t, &out)
	if r.code != exitOK || uint64(len(out.Entries)) != size || out.CheckpointSize != size {
		t.Fatalf("exit %d, %d entries (checkpoint %d), want %d\n%s", r.code, len(out.Entries), out.CheckpointSize, size, r.stderr)
	}
	epochs := 0
	for i, e := range out.Entries {
		if e.LogIndex != uint64(i) || e.Included == nil || !*e.Included {
			t.Errorf("entry %d: index %d, included %v", i, e.LogIndex, e.Included)
		}
		if e.Epoch != nil {
			if e.Epoch.Epoch != uint64(epochs) || e.Epoch.LogSize != uint64(i) {
				t.Errorf("entry %d: epoch %+v, want epoch %d", i, e.Epoch, epochs)
			}
			epochs++
		}
	}
	c := out.Entries[v1.LogIndex].Change
	if c == nil || c.Version != 1 || c.Kind != "enroll" || !c.SignatureValid || hex.EncodeToString(c.Index) != hex.EncodeToString(f.Alice.Index[:]) || len(c.Authorizers) != 1 {
		t.Errorf("alice's enrollment = %+v", c)
	}
	if rec := out.Entries[f.Alice.Versions[3].LogIndex].Change; rec == nil || rec.Kind != "recovery" {
		t.Errorf("alice's recovery = %+v", rec)
	}

	runCLI(t, append([]string{"entries", strconv.FormatUint(v1.LogIndex, 10)}, logFlags(f)...)...).want(t, exitOK, []string{
		"LOG INDEX", "change", "version=1 kind=enroll", "signature=valid", "authorizers=[device:",
	})
	runCLI(t, append([]string{"entries", "0", "--full"}, logFlags(f)...)...).want(t, exitOK, []string{
		"epoch=0", "log_size=0", "map_root=" + hex.EncodeToString(make([]byte, 32)), "map_size=0",
	})
	runCLI(t, append([]string{"entries", "0", "2", "--skip-proofs"}, logFlags(f)...)...).want(t, exitOK, []string{"INCLUDED", "  -  "})
	runCLI(t, append([]string{"entries", "0", strconv.FormatUint(size+1, 10)}, logFlags(f)...)...).
		want(t, exitUsage, nil, "beyond the checkpoint's size")
	runCLI(t, append([]string{"entries", "0", "100000"}, logFlags(f)...)...).want(t, exitUsage, nil, "beyond the checkpoint's size")

	t.Run("tampered entry", func(t *testing.T) {
		// The proxy flips a byte of alice's enrollment signature: the
		// inclusion proof no longer matches, and neither does R1.
		url := tamperProxy(t, f.LogURL, func(path string, _ url.Values, body []byte) []byte {
			if path == "/log/v1/entries" {
				body[len(body)-1] ^= 1
			}
			return body
		})
		r := runCLI(t, "entries", strconv.FormatUint(v1.LogIndex, 10), "--log-url", url, "--data-dir", f.DataDir)
		r.want(t, exitVerify, []string{"NO", "signature=INVALID"}, "is not included in the checkpoint", "rule R1")
	})
	t.Run("tampered proof", func(t *testing.T) {
		url := tamperProxy(t, f.LogURL, func(path string, _ url.Values, body []byte) []byte {
			if path == "/log/v1/proof/inclusion" {
				body[0] ^= 1
			}
			return body
		})
		runCLI(t, "entries", "0", "--log-url", url, "--data-dir", f.DataDir).want(t, exitVerify, []string{"NO"}, "is not included")
	})
	t.Run("malformed entry", func(t *testing.T) {
		url := tamperProxy(t, f.LogURL, func(path string, _ url.Values, body []byte) []byte {
			if path == "/log/v1/entries" {
				body[2] = 0x07 // the format version byte of the first entry
			}
			return body
		})
		runCLI(t, "entries", "0", "--skip-proofs", "--log-url", url, "--data-dir", f.DataDir).
			want(t, exitVerify, []string{"malformed", "unknown format version 0x07"}, "entry 0 is malformed")
	})
}

func testInclusion(t *testing.T, f *ktctltest.Fixture, size uint64) {
	v2 := f.Alice.Versions[1]
	for _, s := range []uint64{0, v2.LogIndex + 1, size - 1, size} {
		t.Run(fmt.Sprintf("size %d", s), func(t *testing.T) {
			args := append([]string{"proof", "inclusion", strconv.FormatUint(v2.LogIndex, 10), "--json"}, logFlags(f)...)
			if s != 0 {
				args = append(args, "--size", strconv.FormatUint(s, 10))
			}
			var res ktctl.InclusionResult
			r := runCLI(t, args...)
			r.decode(t, &res)
			if r.code != exitOK {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			// Cross-check with an independent implementation.
			if tlog.RecordHash(res.Entry.Raw) != tlog.Hash(res.LeafHash) {
				t.Errorf("leaf hash differs from sumdb/tlog's")
			}
			if err := tlog.CheckRecord(tlogProof(res.Proof), int64(res.Size), tlog.Hash(res.Root), int64(res.Index), tlog.Hash(res.LeafHash)); err != nil {
				t.Errorf("sumdb/tlog rejects the inclusion proof: %v", err)
			}
			if res.Size != res.CheckpointSize {
				if err := tlog.CheckTree(tlogProof(res.ConsistencyProof), int64(res.CheckpointSize), tlog.Hash(res.CheckpointRoot), int64(res.Size), tlog.Hash(res.Root)); err != nil {
					t.Errorf("sumdb/tlog rejects the consistency proof: %v", err)
				}
			} else if string(res.Root) != string(res.CheckpointRoot) {
				t.Errorf("root is not the checkpoint's")
			}
		})
	}
	runCLI(t, append([]string{"proof", "inclusion", "1"}, logFlags(f)...)...).
		want(t, exitOK, []string{"entry                1 (change)", "result               verified"})
	runCLI(t, append([]string{"proof", "inclusion", strconv.FormatUint(size, 10)}, logFlags(f)...)...).
		want(t, exitUsage, nil, "is not below size")
	runCLI(t, append([]string{"proof", "inclusion", "1", "--size", strconv.FormatUint(size+1, 10)}, logFlags(f)...)...).
		want(t, exitUsage, nil, "larger than the checkpoint's size")

	for _, tc := range []struct{ name, path string }{
		{"tampered inclusion proof", "/log/v1/proof/inclusion"},
		{"tampered entry", "/log/v1/entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := tamperProxy(t, f.LogURL, func(path string, _ url.Values, body []byte) []byte {
				if path == tc.path {
					body[len(body)-1] ^= 1
				}
				return body
			})
			for _, s := range []string{"0", strconv.FormatUint(v2.LogIndex+2, 10)} {
				runCLI(t, "proof", "inclusion", strconv.FormatUint(v2.LogIndex, 10), "--size", s, "--log-url", url, "--data-dir", f.DataDir).
					want(t, exitVerify, []string{"FAILED"}, "inclusion proof")
			}
		})
	}
	t.Run("tampered consistency to the checkpoint", func(t *testing.T) {
		url := tamperProxy(t, f.LogURL, func(path string, _ url.Values, body []byte) []byte {
			if path == "/log/v1/proof/consistency" {
				body[0] ^= 1
			}
			return body
		})
		runCLI(t, "proof", "inclusion", "1", "--size", "3", "--log-url", url, "--data-dir", f.DataDir).
			want(t, exitVerify, []string{"FAILED"}, "is not consistent with the checkpoint")
	})
}

func tlogProof(p []ktctl.Hex) []tlog.Hash {
	out := make([]tlog.Hash, len(p))
	for i, h := range p {
		out[i] = tlog.Hash(h)
	}
	return out
}

func testConsistency(t *testing.T, f *ktctltest.Fixture, size uint64) {
	for _, tc := range [][2]uint64{{1, size}, {3, 7}, {4, 4}, {size - 1, size}, {1, 2}} {
		t.Run(fmt.Sprintf("%d to %d", tc[0], tc[1]), func(t *testing.T) {
			var res ktctl.ConsistencyResult
			r := runCLI(t, append([]string{"proof", "consistency", strconv.FormatUint(tc[0], 10), strconv.FormatUint(tc[1], 10), "--json"}, logFlags(f)...)...)
			r.decode(t, &res)
			if r.code != exitOK {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			if err := tlog.CheckTree(tlogProof(res.Proof), int64(res.New), tlog.Hash(res.NewRoot), int64(res.Old), tlog.Hash(res.OldRoot)); err != nil {
				t.Errorf("sumdb/tlog rejects the consistency proof: %v", err)
			}
			if res.New < size {
				if err := tlog.CheckTree(tlogProof(res.NewToCheckpoint), int64(size), tlog.Hash(res.CheckpointRoot), int64(res.New), tlog.Hash(res.NewRoot)); err != nil {
					t.Errorf("sumdb/tlog rejects the proof to the checkpoint: %v", err)
				}
			}
		})
	}
	runCLI(t, append([]string{"proof", "consistency", "2", "5"}, logFlags(f)...)...).
		want(t, exitOK, []string{"old  ", "size 2 root", "result", "verified"})
	runCLI(t, append([]string{"proof", "consistency", "2", strconv.FormatUint(size+1, 10)}, logFlags(f)...)...).
		want(t, exitUsage, nil, "larger than the checkpoint's size")
	for _, tc := range []struct {
		name string
		fn   func(path string, q url.Values, body []byte) []byte
	}{
		{"tampered proof", func(path string, q url.Values, body []byte) []byte {
			if path == "/log/v1/proof/consistency" && q.Get("old") == "2" {
				body[len(body)-1] ^= 1
			}
			return body
		}},
		{"tampered proof to the checkpoint", func(path string, q url.Values, body []byte) []byte {
			if path == "/log/v1/proof/consistency" && q.Get("old") == "5" {
				body[0] ^= 1
			}
			return body
		}},
		{"tampered old root", func(path string, q url.Values, body []byte) []byte {
			if path == "/log/v1/proof/inclusion" && q.Get("size") == "2" {
				body[0] ^= 1
			}
			return body
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := tamperProxy(t, f.LogURL, tc.fn)
			runCLI(t, "proof", "consistency", "2", "5", "--log-url", url, "--data-dir", f.DataDir).
				want(t, exitVerify, nil, "consistency proof")
		})
	}
}

func testHistory(t *testing.T, f *ktctltest.Fixture, aliceIndex string) {
	check := func(t *testing.T, r result) {
		t.Helper()
		var res ktctl.HistoryResult
		r.decode(t, &res)
		if r.code != exitOK || len(res.Records) != len(f.Alice.Versions) {
			t.Fatalf("exit %d, %d records, want %d\n%s", r.code, len(res.Records), len(f.Alice.Versions), r.stderr)
		}
		for i, hr := range res.Records {
			v := f.Alice.Versions[i]
			if hr.Change.Version != v.Version || hr.LogIndex != v.LogIndex || hr.Epoch == nil || *hr.Epoch != v.Epoch || hr.Change.Kind != v.Kind.String() || hr.Problem != "" {
				t.Errorf("record %d = %+v (epoch %v), want %+v", i, hr, hr.Epoch, v)
			}
		}
	}
	check(t, runCLI(t, append([]string{"history", "--index", aliceIndex, "--json"}, logFlags(f)...)...))
	r := runCLI(t, append([]string{"history", "--handle", "+1 (415) 555-0100", "--json"}, logFlags(f)...)...)
	check(t, r)
	if !contains(r.stdout, `"handle": "tel:+14155550100"`) {
		t.Errorf("no handle in %s", r.stdout)
	}
	runCLI(t, append([]string{"history", "--handle", "+14155550100", "--progress"}, logFlags(f)...)...).want(t, exitOK,
		[]string{"handle      tel:+14155550100", "VERSION", "recovery", "ok"}, "scanning [", "100.0%")
	// Without the VRF private key, from a lookup verified with the VRF
	// public key.
	pub := f.VRF.Public().String()
	r = runCLI(t, "history", "--handle", "+14155550100", "--vrf-public-key", pub, "--grpc", f.GRPCAddr, "--log-url", f.LogURL, "--log-key", f.LogVkey, "--json")
	check(t, r)
	otherVRF, _ := vrf.GenerateKey(nil)
	runCLI(t, "history", "--handle", "+14155550100", "--vrf-public-key", otherVRF.Public().String(), "--grpc", f.GRPCAddr, "--log-url", f.LogURL, "--log-key", f.LogVkey).
		want(t, exitVerify, nil, "VRF proof")
	runCLI(t, "history", "--handle", "+14155550100", "--vrf-public-key", "kt-vrf-public:AAAA", "--log-url", f.LogURL, "--log-key", f.LogVkey).
		want(t, exitUsage, nil, "--vrf-public-key")
	// Without the recovery key, R6 cannot be checked and says so.
	runCLI(t, "history", "--index", aliceIndex, "--log-url", f.LogURL, "--log-key", f.LogVkey).
		want(t, exitOK, []string{"ok (R6 unchecked: no recovery key)"})
	// With another recovery key, the recovery change breaks R6.
	otherKey := base64.StdEncoding.EncodeToString(make([]byte, 32))
	runCLI(t, append([]string{"history", "--index", aliceIndex, "--recovery-key", otherKey}, logFlags(f)...)...).
		want(t, exitVerify, []string{"VIOLATION: ", "(R6 recovery): the signer is not the directory's recovery key"}, "version 4")
	// An index with no records.
	runCLI(t, append([]string{"history", "--index", hex.EncodeToString(make([]byte, 32))}, logFlags(f)...)...).
		want(t, exitOK, []string{"no change records for this index"})
	runCLI(t, append([]string{"history", "--handle", "not a handle"}, logFlags(f)...)...).want(t, exitUsage, nil, `handle "not a handle"`)

	t.Run("tampered entries", func(t *testing.T) {
		// A flipped byte in the last entry of each page changes the
		// root the entries hash to.
		url := tamperProxy(t, f.LogURL, func(path string, q url.Values, body []byte) []byte {
			if path == "/log/v1/entries" {
				body[len(body)-1] ^= 1
			}
			return body
		})
		runCLI(t, "history", "--index", aliceIndex, "--log-url", url, "--data-dir", f.DataDir).
			want(t, exitVerify, nil, "but the checkpoint's root is")
	})
}

func testDiff(t *testing.T, f *ktctltest.Fixture, aliceIndex string) {
	a := f.Alice.Versions
	grpc := []string{"--grpc", f.GRPCAddr, "--operator", f.OperatorAddr, "--data-dir", f.DataDir}
	diff := func(t *testing.T, who string, ea, eb string) (*ktctl.DiffResult, result) {
		t.Helper()
		r := runCLI(t, append([]string{"diff", who, ea, eb, "--json"}, grpc...)...)
		if r.code != exitOK {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		var res ktctl.DiffResult
		r.decode(t, &res)
		return &res, r
	}
	e := func(i int) string { return strconv.FormatUint(a[i].Epoch, 10) }

	// v2 -> v4: A2 re-keyed, the ghost added, the account key added.
	res, _ := diff(t, "+14155550100", e(1), e(3))
	if res.A.Version != 2 || res.B.Version != 4 || len(res.Added) != 1 || len(res.Removed) != 0 || len(res.Rekeyed) != 1 ||
		res.Unchanged != 1 || res.AccountKey != ktctl.AccountKeyAdded || res.AccountIDChanged || len(res.Between) != 2 {
		t.Errorf("v2 to v4: %+v", res)
	}
	ghost := a[3].Set.Devices
	if len(res.Added) == 1 && !containsDevice(ghost, res.Added[0].ID) {
		t.Errorf("added %x is not in version 4", res.Added[0].ID)
	}
	// Backwards, by index: the ghost is removed.
	res, _ = diff(t, aliceIndex, e(3), e(1))
	if len(res.Removed) != 1 || len(res.Added) != 0 || res.AccountKey != ktctl.AccountKeyRemoved {
		t.Errorf("v4 to v2: %+v", res)
	}
	// Epoch 0 is before the enrollment: everything is added.
	res, _ = diff(t, aliceIndex, "0", "latest")
	if res.A.Version != 0 || res.B.Version != 4 || len(res.Added) != 3 || len(res.Between) != 4 {
		t.Errorf("0 to latest: %+v", res)
	}
	// The same epoch twice.
	res, _ = diff(t, aliceIndex, e(2), e(2))
	if len(res.Added)+len(res.Removed)+len(res.Rekeyed) != 0 || res.Unchanged != 2 || len(res.Between) != 0 {
		t.Errorf("no change: %+v", res)
	}
	// An epoch between two changes picks the earlier version (bob's
	// enrollment epoch, between alice's v2 and v3).
	res, _ = diff(t, aliceIndex, strconv.FormatUint(f.Bob.Versions[0].Epoch, 10), e(2))
	if res.A.Version != 2 || res.B.Version != 3 || len(res.Rekeyed) != 1 {
		t.Errorf("bob's epoch to v3: %+v", res)
	}

	runCLI(t, append([]string{"diff", "+14155550100", e(1), e(3)}, grpc...)...).want(t, exitOK, []string{
		"handle          tel:+14155550100", "account key     added", "added", "re-keyed", "1 device unchanged",
		"recovery", "changed by the directory's recovery path",
	})
	runCLI(t, "diff", "+14155550100", e(1), e(3), "--grpc", f.GRPCAddr, "--operator", f.OperatorAddr, "--log-key", f.LogVkey, "--vrf-public-key", f.VRF.Public().String()).
		want(t, exitOK, []string{"handle          tel:+14155550100", "account key     added"})
	runCLI(t, append([]string{"diff", aliceIndex, "0", "99"}, grpc...)...).want(t, exitUsage, nil, "epoch 99 does not exist yet")
	runCLI(t, "diff", aliceIndex, "0", "1", "--grpc", f.GRPCAddr, "--operator", f.OperatorAddr).want(t, exitUsage, nil, "no log key")
	_, other, _ := note.GenerateKey(rand.Reader, ktctltest.Origin)
	runCLI(t, "diff", aliceIndex, "0", "1", "--grpc", f.GRPCAddr, "--operator", f.OperatorAddr, "--log-key", other).want(t, exitVerify, nil, "log signature does not verify")
	runCLI(t, "diff", aliceIndex, "0", "1", "--grpc", f.GRPCAddr, "--operator", f.OperatorAddr, "--log-key", f.LogVkey, "--policy", f.PolicyFile).want(t, exitOK, nil)
	// The public Directory service does not stand in for the Operator
	// service: diff pointed at it fails, and the directory's public Monitor
	// refuses the full answer to anyone but the owner (design.md 13.4).
	runCLI(t, "diff", aliceIndex, "0", "1", "--grpc", f.GRPCAddr, "--operator", f.GRPCAddr, "--log-key", f.LogVkey).want(t, exitIO, nil, "Unimplemented")
}

func containsDevice(ds []api.Device, id []byte) bool {
	for _, d := range ds {
		if string(d.ID[:]) == string(id) {
			return true
		}
	}
	return false
}

func splitLines(b []byte) []string { return strings.Split(string(b), "\n") }

func joinLines(ls []string) []byte { return []byte(strings.Join(ls, "\n")) }

func contains(s, sub string) bool { return strings.Contains(s, sub) }
