package vectors

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tsDir is the independent TypeScript verifier (design.md 21).
const tsDir = "../../../verifier-ts"

// nodeTools returns the paths of node and npm. Under CI=true missing tools
// fail the test (the second implementation must run in CI); elsewhere it skips.
func nodeTools(t *testing.T) (node, npm string) {
	t.Helper()
	node, errNode := exec.LookPath("node")
	npm, errNpm := exec.LookPath("npm")
	if errNode == nil && errNpm == nil {
		return node, npm
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("node and npm are required under CI=true (Node 20 or later): the TypeScript verifier in verifier-ts must pass the vectors")
	}
	t.Skip("node or npm is not installed: skipping the TypeScript verifier (verifier-ts) against the vectors")
	return "", ""
}

// run runs a command in dir and fails the test with its output on error.
func run(t *testing.T, ctx context.Context, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NO_UPDATE_NOTIFIER=1", "npm_config_fund=false", "npm_config_audit=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s in %s: %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}

// TestTypeScriptVerifier installs verifier-ts's locked dependencies (npm ci,
// preferring the npm cache) and runs its tests under Node's test runner:
// every vector file must pass in the second implementation too, so that a
// changed encoding or outcome fails CI until both implementations agree.
func TestTypeScriptVerifier(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: not running npm")
	}
	_, npm := nodeTools(t)
	dir, err := filepath.Abs(tsDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	v := strings.TrimSpace(run(t, ctx, dir, "node", "--version"))
	if major, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(v, "v"), ".", 2)[0]); err != nil || major < 20 {
		t.Fatalf("node %s: verifier-ts needs Node 20 or later", v)
	}
	run(t, ctx, dir, npm, "ci", "--prefer-offline", "--no-audit", "--no-fund")
	out := run(t, ctx, dir, "node", "--test", "test/")
	// The runner's summary: every test passed, none skipped or cancelled.
	for _, want := range []string{"# fail 0", "# cancelled 0", "# skipped 0"} {
		if !strings.Contains(out, want) {
			t.Fatalf("node --test: want %q in the summary:\n%s", want, out)
		}
	}
	for _, file := range Names {
		// Each vector file's tests are named after it (test/*.test.mjs).
		prefix := strings.TrimSuffix(file, ".json") + ": "
		if !strings.Contains(out, "ok ") || !strings.Contains(out, "- "+prefix) {
			t.Errorf("no TypeScript test ran the vectors of %s (want test names starting %q)", file, prefix)
		}
	}
	t.Log(out[strings.LastIndex(out, "# tests"):])
}
