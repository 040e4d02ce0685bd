// Package deploy holds what operators run (Dockerfiles, docker-compose,
// Kubernetes manifests, systemd units, example configurations); its tests
// validate them with the tools that install on a CI machine and, where no
// validator installs (kubeconform needs schemas from the internet), with
// structural checks of our own:
//
//   - every example ktd configuration is accepted by the real ktd binary
//     (Config's strict loader: unknown keys are errors);
//   - every Trillian flag used anywhere is a flag of the pinned Trillian
//     binaries;
//   - docker-compose parses the compose file (`docker-compose config`);
//   - systemd-analyze verifies the units;
//   - the Kubernetes manifests decode strictly (no duplicate keys), use
//     known apiVersion/kind pairs, and their cross-references (selectors,
//     named ports, volumes, ConfigMaps, Secrets, Services) resolve (for
//     the replicated overlay, in what kustomize renders);
//   - the replicated overlay runs ktd as several instances in cluster
//     mode with shared keys from a Secret and per-pod data.
//
// Under CI=true a missing validator is a failure, not a skip.
package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/modfile"

	"github.com/keytrans/kt/internal/cliconfig"
	"github.com/keytrans/kt/internal/testing/trilliantest"
)

// ourBinaries are the commands deploy/ packages. Only those with a
// ./cmd/<name> directory can be built today; the others are written
// elsewhere and their deploy entries wait for them.
var ourBinaries = []string{"ktd", "ktauditor", "ktctl", "kt"}

// requireTool returns the path of a validator, skipping when it is missing
// outside CI and failing under CI=true.
func requireTool(t *testing.T, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed (CI=true: this check must run); install it with %s", name, install)
	}
	t.Skipf("%s is not installed; install it with %s", name, install)
	return ""
}

// yamlDocs decodes every document of a YAML file into generic values,
// failing on syntax errors and duplicate keys.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
	return docs
}

// get walks a generic YAML value along keys ("spec", "template", ...).
func get(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func str(v any, keys ...string) string {
	s, _ := get(v, keys...).(string)
	return s
}

func list(v any, keys ...string) []any {
	l, _ := get(v, keys...).([]any)
	return l
}

func strMap(v any, keys ...string) map[string]string {
	m, _ := get(v, keys...).(map[string]any)
	out := map[string]string{}
	for k, v := range m {
		out[k] = fmt.Sprint(v)
	}
	return out
}

// buildKtd builds ./cmd/ktd once per test binary run.
func buildKtd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ktd")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/ktd")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building ktd: %v\n%s", err, out)
	}
	return bin
}

// TestKtdConfigs loads every example ktd configuration with the real ktd
// (through `ktd issue-token`, which runs the full loader and validation
// and then needs only the data directory), so that a key that Config does
// not have, a bad value or a failed validation is caught.
func TestKtdConfigs(t *testing.T) {
	ktd := buildKtd(t)
	keys := t.TempDir() // the replicated example's /etc/kt/keys
	run := func(t *testing.T, config string, env ...string) ([]byte, error) {
		cmd := exec.Command(ktd, "issue-token", "--config="+config, "+14155550100")
		cmd.Env = append(os.Environ(), append([]string{"KTD_DATA_DIR=" + t.TempDir()}, env...)...)
		return cmd.CombinedOutput()
	}
	for _, tc := range []struct {
		file string
		env  []string
	}{
		// Compose and Kubernetes set the tree ID in the environment; the
		// keys (at /etc/kt/keys in the containers) are test files here.
		{"config/ktd.yaml", []string{"KTD_LOG_TRILLIAN_TREE_ID=1",
			"KTD_LOG_KEY_FILE=" + filepath.Join(keys, "log.key"), "KTD_DIRECTORY_VRF_KEY_FILE=" + filepath.Join(keys, "vrf.key"),
			"KTD_DIRECTORY_RECOVERY_KEY_FILE=" + filepath.Join(keys, "recovery.key"), "KTD_ENROLLMENT_TOKEN_KEY_FILE=" + filepath.Join(keys, "enroll-token.key")}},
		{"config/ktd-replicated.yaml", []string{"KTD_LOG_TRILLIAN_TREE_ID=1",
			"KTD_LOG_KEY_FILE=" + filepath.Join(keys, "log.key"), "KTD_DIRECTORY_VRF_KEY_FILE=" + filepath.Join(keys, "vrf.key"),
			"KTD_DIRECTORY_RECOVERY_KEY_FILE=" + filepath.Join(keys, "recovery.key"), "KTD_ENROLLMENT_TOKEN_KEY_FILE=" + filepath.Join(keys, "enroll-token.key")}},
		{"config/ktd-embedded.yaml", []string{"KTD_ENROLLMENT_TOKEN_KEY_FILE=" + filepath.Join(keys, "enroll-token.key")}},
		// ktd@.service: the replicated file, the instance's environment
		// file (with a tree ID) and the credentials' key files.
		{"config/ktd-replicated.yaml", append(envFile(t, "systemd/ktd-replicated.env.example"), "KTD_LOG_TRILLIAN_TREE_ID=1",
			"KTD_LOG_KEY_FILE="+filepath.Join(keys, "log.key"), "KTD_DIRECTORY_VRF_KEY_FILE="+filepath.Join(keys, "vrf.key"),
			"KTD_DIRECTORY_RECOVERY_KEY_FILE="+filepath.Join(keys, "recovery.key"), "KTD_ENROLLMENT_TOKEN_KEY_FILE="+filepath.Join(keys, "enroll-token.key"))},
	} {
		t.Run(tc.file, func(t *testing.T) {
			t.Logf("environment: %q", tc.env)
			out, err := run(t, tc.file, tc.env...)
			if err != nil {
				t.Fatalf("ktd rejects %s: %v\n%s", tc.file, err, out)
			}
			if len(bytes.TrimSpace(out)) == 0 {
				t.Fatalf("ktd printed no token for %s", tc.file)
			}
		})
	}
	// The checks above can fail: an unknown key, and the Trillian config
	// without its tree ID, are refused.
	t.Run("unknown key refused", func(t *testing.T) {
		b, err := os.ReadFile("config/ktd-embedded.yaml")
		if err != nil {
			t.Fatal(err)
		}
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(bad, append(b, []byte("\nno_such_key: 1\n")...), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := run(t, bad); err == nil {
			t.Fatalf("ktd accepted an unknown key:\n%s", out)
		}
	})
	t.Run("trillian without tree id refused", func(t *testing.T) {
		if out, err := run(t, "config/ktd.yaml"); err == nil || !bytes.Contains(out, []byte("tree_id")) {
			t.Fatalf("ktd accepted the Trillian configuration without a tree ID (%v):\n%s", err, out)
		}
	})

	// Every KTD_ variable that compose or Kubernetes sets is a key of
	// ktd's: `ktd --help` lists each key with its variable.
	help, err := exec.Command(ktd, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("ktd --help: %v\n%s", err, help)
	}
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`\bKTD_[A-Z0-9_]+\b`).FindAll(help, -1) {
		known[string(m)] = true
	}
	if len(known) < 20 {
		t.Fatalf("ktd --help lists only %d variables:\n%s", len(known), help)
	}
	for _, f := range deployFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`\bKTD_[A-Z0-9_]+\b`).FindAll(b, -1) {
			if !known[string(m)] {
				t.Errorf("%s sets %s, which is not a ktd configuration variable", f, m)
			}
		}
	}
}

// envFile returns the variables a systemd EnvironmentFile sets (its
// KEY=VALUE lines; no quoting is used in ours).
func envFile(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			if !strings.Contains(line, "=") {
				t.Fatalf("%s: %q is not KEY=VALUE", path, line)
			}
			env = append(env, line)
		}
	}
	if len(env) == 0 {
		t.Fatalf("%s sets nothing", path)
	}
	return env
}

// deployFiles lists every file under deploy/ except the tests.
func deployFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && !strings.HasSuffix(p, "_test.go") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// trillianFlagUses returns, for each Trillian binary, the flags that deploy/
// passes to it anywhere (compose, Kubernetes, systemd), with where.
func trillianFlagUses(t *testing.T) map[string]map[string][]string {
	t.Helper()
	uses := map[string]map[string][]string{}
	add := func(bin, flag, where string) {
		if uses[bin] == nil {
			uses[bin] = map[string][]string{}
		}
		uses[bin][flag] = append(uses[bin][flag], where)
	}
	flagRE := regexp.MustCompile(`--([a-z0-9_]+)`)
	binRE := regexp.MustCompile(`(trillian_log_server|trillian_log_signer|createtree|updatetree)`)
	for _, f := range deployFiles(t) {
		switch {
		case strings.HasSuffix(f, ".yaml"):
			for _, doc := range yamlDocs(t, f) {
				// Compose services and Kubernetes containers alike:
				// an entrypoint/command naming the binary, then args.
				var visit func(v any)
				visit = func(v any) {
					switch v := v.(type) {
					case map[string]any:
						var argv []any
						argv = append(argv, list(v, "entrypoint")...)
						argv = append(argv, list(v, "command")...)
						argv = append(argv, list(v, "args")...)
						var bin string
						for _, a := range argv {
							s, _ := a.(string)
							if m := binRE.FindString(s); m != "" && !strings.HasPrefix(s, "-") {
								bin = m
							}
						}
						if bin != "" {
							for _, a := range argv {
								s, _ := a.(string)
								if m := flagRE.FindStringSubmatch(s); m != nil && strings.HasPrefix(s, "--") {
									add(bin, m[1], f)
								}
							}
						}
						for _, c := range v {
							visit(c)
						}
					case []any:
						for _, c := range v {
							visit(c)
						}
					}
				}
				visit(doc)
			}
		case strings.HasSuffix(f, ".service"):
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			exec := strings.ReplaceAll(string(b), "\\\n", " ")
			for _, line := range strings.Split(exec, "\n") {
				if !strings.HasPrefix(line, "ExecStart=") {
					continue
				}
				bin := binRE.FindString(line)
				if bin == "" {
					continue
				}
				for _, m := range flagRE.FindAllStringSubmatch(line, -1) {
					add(bin, m[1], f)
				}
			}
		}
	}
	return uses
}

// binaryFlags lists the flags a Go binary defines, from its -help output.
func binaryFlags(t *testing.T, bin string) map[string]bool {
	t.Helper()
	out, _ := exec.Command(bin, "-help").CombinedOutput() // exits 0 or 2
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z0-9_]+)`).FindAllSubmatch(out, -1) {
		flags[string(m[1])] = true
	}
	if len(flags) < 10 {
		t.Fatalf("%s -help lists only %d flags:\n%s", bin, len(flags), out)
	}
	return flags
}

// sourceFlags lists the flags defined in a Trillian command's main package
// (for the tools the tests do not build).
func sourceFlags(t *testing.T, dir string) map[string]bool {
	t.Helper()
	flags := map[string]bool{"logtostderr": true, "v": true} // klog's
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in %s (%v)", dir, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`flag\.\w+\("([a-z0-9_]+)"`).FindAllSubmatch(b, -1) {
			flags[string(m[1])] = true
		}
	}
	return flags
}

// TestTrillianFlags checks every flag deploy/ passes to a Trillian binary
// against the pinned release: the real binaries' -help for the server and
// signer, the source for createtree and updatetree.
func TestTrillianFlags(t *testing.T) {
	uses := trillianFlagUses(t)
	for _, bin := range []string{"trillian_log_server", "trillian_log_signer", "createtree"} {
		if len(uses[bin]) == 0 {
			t.Errorf("no deploy file runs %s", bin)
		}
	}
	server, signer := trilliantest.Binaries(t)
	dir := trilliantest.ModuleDir(t)
	defined := map[string]map[string]bool{
		"trillian_log_server": binaryFlags(t, server),
		"trillian_log_signer": binaryFlags(t, signer),
		"createtree":          sourceFlags(t, filepath.Join(dir, "cmd", "createtree")),
		"updatetree":          sourceFlags(t, filepath.Join(dir, "cmd", "updatetree")),
	}
	for _, bin := range slices.Sorted(maps.Keys(uses)) {
		for _, flag := range slices.Sorted(maps.Keys(uses[bin])) {
			if !defined[bin][flag] {
				t.Errorf("%s has no flag --%s (used in %s)", bin, flag, strings.Join(slices.Compact(uses[bin][flag]), ", "))
			}
		}
	}
	// The check can fail.
	if defined["trillian_log_signer"]["no_such_flag"] {
		t.Fatal("flag table accepts anything")
	}
}

// TestDockerfiles checks the Dockerfiles' invariants: static builds,
// non-root users, and the Trillian version equal to go.mod's.
func TestDockerfiles(t *testing.T) {
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.Parse("go.mod", gomod, nil)
	if err != nil {
		t.Fatal(err)
	}
	var trillianVersion string
	for _, r := range mf.Require {
		if r.Mod.Path == "github.com/google/trillian" {
			trillianVersion = r.Mod.Version
		}
	}
	if trillianVersion == "" {
		t.Fatal("go.mod does not require github.com/google/trillian")
	}
	files, _ := filepath.Glob("docker/Dockerfile*")
	for _, f := range files {
		if strings.HasSuffix(f, ".dockerignore") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if m := regexp.MustCompile(`ARG TRILLIAN_VERSION=(\S+)`).FindStringSubmatch(s); m != nil && m[1] != trillianVersion {
			t.Errorf("%s builds Trillian %s; go.mod pins %s", f, m[1], trillianVersion)
		}
		if strings.Contains(s, "go build") || strings.Contains(s, "go install -ldflags") {
			if !strings.Contains(s, "CGO_ENABLED=0") {
				t.Errorf("%s builds without CGO_ENABLED=0", f)
			}
			if !regexp.MustCompile(`(?m)^USER 65532`).MatchString(s) {
				t.Errorf("%s does not run as the nonroot user", f)
			}
		}
	}
	// Compose's and Kubernetes' image versions follow the pin too.
	for _, f := range deployFiles(t) {
		b, _ := os.ReadFile(f)
		for _, m := range regexp.MustCompile(`kt/(?:trillian|mariadb-trillian):(v[0-9.]+)`).FindAllSubmatch(b, -1) {
			if string(m[1]) != trillianVersion {
				t.Errorf("%s uses image tag %s; go.mod pins Trillian %s", f, m[0], trillianVersion)
			}
		}
	}
}

// TestCompose validates the compose file with docker-compose and checks
// that every binary it builds is one of ours, listing those not written
// yet.
func TestCompose(t *testing.T) {
	const file = "compose/compose.yaml"
	docs := yamlDocs(t, file)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents", file, len(docs))
	}
	services, _ := docs[0]["services"].(map[string]any)
	for _, want := range []string{"mariadb", "etcd", "trillian-log-server", "trillian-log-signer", "createtree", "keygen", "ktd", "ktauditor-1", "ktauditor-2"} {
		if services[want] == nil {
			t.Errorf("%s has no service %s", file, want)
		}
	}
	for _, name := range []string{"trillian-log-server", "trillian-log-signer"} {
		if r := get(services[name], "deploy", "replicas"); r != 2 {
			t.Errorf("service %s has %v replicas, want 2", name, r)
		}
	}
	var missing []string
	for _, name := range slices.Sorted(maps.Keys(services)) {
		svc := services[name]
		if cmd := str(svc, "build", "args", "CMD"); cmd != "" {
			if !slices.Contains(ourBinaries, cmd) {
				t.Errorf("service %s builds unknown binary %q", name, cmd)
			}
			if _, err := os.Stat(filepath.Join("..", "cmd", cmd)); err != nil {
				missing = append(missing, cmd)
			}
		}
		if ctx := str(svc, "build", "context"); ctx != "" {
			df := str(svc, "build", "dockerfile")
			if _, err := os.Stat(filepath.Join("compose", ctx, df)); err != nil {
				t.Errorf("service %s: Dockerfile %s in context %s: %v", name, df, ctx, err)
			}
		}
		for _, p := range list(svc, "ports") {
			if s, _ := p.(string); !strings.HasPrefix(s, "127.0.0.1:") {
				t.Errorf("service %s publishes %q beyond loopback", name, s)
			}
		}
		for _, v := range list(svc, "volumes") {
			s, _ := v.(string)
			// ./keys is what the keygen service writes (not in the tree).
			if src, _, _ := strings.Cut(s, ":"); strings.HasPrefix(src, ".") && src != "./keys" && !strings.HasPrefix(src, "./keys/") {
				if _, err := os.Stat(filepath.Join("compose", src)); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
			}
		}
	}
	if len(missing) > 0 {
		t.Logf("compose builds binaries that do not exist yet in this tree: %s", strings.Join(slices.Compact(missing), ", "))
	}

	dc := requireTool(t, "docker-compose", "`apt-get install -y --no-install-recommends docker-compose`")
	cmd := exec.Command(dc, "-f", file, "--profile", "setup", "config", "-q")
	cmd.Env = append(os.Environ(), "KT_MYSQL_PASSWORD=test", "KT_TREE_ID=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	// And it does reject a broken file.
	b, _ := os.ReadFile(file)
	bad := filepath.Join(t.TempDir(), "compose.yaml")
	if err := os.WriteFile(bad, bytes.Replace(b, []byte("  ktd:\n"), []byte("  ktd:\n    no_such_option: 1\n"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(dc, "-f", bad, "config", "-q")
	cmd.Env = append(os.Environ(), "KT_MYSQL_PASSWORD=test")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("docker-compose accepted an unknown service option:\n%s", out)
	}
}

// TestComposeReplicated checks the override that replicates the directory
// over two ktd: both in cluster mode with distinct advertised addresses,
// the second reading the first's keys read-only, nothing published
// beyond loopback; and docker-compose accepts the two files together.
func TestComposeReplicated(t *testing.T) {
	const file = "compose/compose.replicated.yaml"
	docs := yamlDocs(t, file)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents", file, len(docs))
	}
	services, _ := docs[0]["services"].(map[string]any)
	advertised := map[string]bool{}
	for _, name := range []string{"ktd", "ktd-2"} {
		svc := services[name]
		if svc == nil {
			t.Fatalf("%s has no service %s", file, name)
		}
		env := strMap(svc, "environment")
		if !strings.Contains(env["KTD_CLUSTER_DSN"], "@tcp(mariadb:3306)/") {
			t.Errorf("%s: %s has KTD_CLUSTER_DSN %q", file, name, env["KTD_CLUSTER_DSN"])
		}
		a := env["KTD_CLUSTER_ADVERTISE"]
		if a == "" || advertised[a] {
			t.Errorf("%s: %s advertises %q (empty or shared)", file, name, a)
		}
		advertised[a] = true
		for _, p := range list(svc, "ports") {
			if s, _ := p.(string); !strings.HasPrefix(s, "127.0.0.1:") {
				t.Errorf("service %s publishes %q beyond loopback", name, s)
			}
		}
		for _, v := range list(svc, "volumes") {
			s, _ := v.(string)
			// ./keys is what the keygen service writes (not in the tree).
			if src, _, _ := strings.Cut(s, ":"); strings.HasPrefix(src, ".") && src != "./keys" && !strings.HasPrefix(src, "./keys/") {
				if _, err := os.Stat(filepath.Join("compose", src)); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
			}
		}
	}
	for _, name := range []string{"ktd", "ktd-2"} {
		if !slices.Contains(list(services[name], "volumes"), any("./keys/ktd:/etc/kt/keys:ro")) {
			t.Errorf("%s does not mount the keys of ktctl keygen read-only at /etc/kt/keys", name)
		}
	}
	dc := requireTool(t, "docker-compose", "`apt-get install -y --no-install-recommends docker-compose`")
	cmd := exec.Command(dc, "-f", "compose/compose.yaml", "-f", file, "config", "-q")
	cmd.Env = append(os.Environ(), "KT_MYSQL_PASSWORD=test", "KT_TREE_ID=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
}

// TestSystemdUnits runs systemd-analyze verify on every unit, with the
// binaries it starts present, and fails on any complaint (verify exits 0
// on unknown directives, so its output counts).
func TestSystemdUnits(t *testing.T) {
	sa := requireTool(t, "systemd-analyze", "`apt-get install -y systemd`")
	units, _ := filepath.Glob("systemd/*.service")
	if len(units) < 4 {
		t.Fatalf("only %d units", len(units))
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	verify := func(t *testing.T, name string, unit []byte) ([]byte, error) {
		// Point ExecStart at stand-ins for the binaries (verify checks
		// that they are executable).
		re := regexp.MustCompile(`/usr/local/bin/([a-z_]+)`)
		for _, m := range re.FindAllSubmatch(unit, -1) {
			p := filepath.Join(bin, string(m[1]))
			if _, err := os.Stat(p); err != nil {
				if err := os.Symlink(truePath, p); err != nil {
					t.Fatal(err)
				}
			}
		}
		unit = re.ReplaceAll(unit, []byte(bin+"/$1"))
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, unit, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(sa, "verify", p)
		out, err := cmd.CombinedOutput()
		// Ordering references to units that exist on real hosts
		// (mariadb.service, etcd.service) are not errors.
		var complaints []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if line != "" {
				complaints = append(complaints, line)
			}
		}
		if err == nil && len(complaints) > 0 {
			err = errors.New("complaints")
		}
		return []byte(strings.Join(complaints, "\n")), err
	}
	for _, u := range units {
		t.Run(filepath.Base(u), func(t *testing.T) {
			b, err := os.ReadFile(u)
			if err != nil {
				t.Fatal(err)
			}
			if out, err := verify(t, filepath.Base(u), b); err != nil {
				t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, out)
			}
		})
	}
	t.Run("typo detected", func(t *testing.T) {
		b, _ := os.ReadFile("systemd/ktd.service")
		b = bytes.Replace(b, []byte("ProtectHome=yes"), []byte("ProtectHomee=yes"), 1)
		if out, err := verify(t, "typo.service", b); err == nil {
			t.Fatalf("a misspelled directive passed:\n%s", out)
		}
	})
	t.Run("bad specifier detected", func(t *testing.T) {
		b, _ := os.ReadFile("systemd/ktd@.service")
		b = bytes.Replace(b, []byte("%d/log.key"), []byte("%Q/log.key"), 1)
		if out, err := verify(t, "typo@.service", b); err == nil {
			t.Fatalf("an unknown specifier passed:\n%s", out)
		}
	})
	t.Run("ktd@.service replicated", func(t *testing.T) {
		b, err := os.ReadFile("systemd/ktd@.service")
		if err != nil {
			t.Fatal(err)
		}
		if problems := checkReplicatedUnit(string(b)); len(problems) > 0 {
			t.Errorf("ktd@.service: %s", strings.Join(problems, "; "))
		}
		// The check fails on a unit that lets an instance create its own
		// key, or that does not restart a writer that lost its lease.
		for _, broken := range []string{
			strings.Replace(string(b), "Environment=KTD_DIRECTORY_VRF_KEY_FILE=%d/vrf.key\n", "", 1),
			strings.Replace(string(b), "LoadCredential=vrf.key:", "LoadCredential=vrf2.key:", 1),
			strings.Replace(string(b), "Restart=always", "Restart=no", 1),
			strings.Replace(string(b), "--config=/etc/kt/ktd-replicated.yaml", "--config=/etc/kt/ktd.yaml", 1),
		} {
			if problems := checkReplicatedUnit(broken); len(problems) == 0 {
				t.Errorf("checkReplicatedUnit passed a broken unit")
			}
		}
	})
}

// checkReplicatedUnit checks the template unit of a replicated instance:
// it runs config/ktd-replicated.yaml with a data directory per instance,
// restarts on any exit (a writer that lost its lease exits 1), and points
// every key file at a credential it loads (the same files for every
// instance, never created by ktd).
func checkReplicatedUnit(unit string) []string {
	var problems []string
	directives := map[string][]string{}
	for _, line := range strings.Split(unit, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			directives[k] = append(directives[k], v)
		}
	}
	exec := strings.Join(directives["ExecStart"], " ")
	if !strings.Contains(exec, "--config=/etc/kt/ktd-replicated.yaml") || !strings.Contains(exec, "--data-dir=/var/lib/kt-%i") {
		problems = append(problems, "ExecStart does not run /etc/kt/ktd-replicated.yaml with --data-dir=/var/lib/kt-%i")
	}
	if !slices.Contains(directives["StateDirectory"], "kt-%i") {
		problems = append(problems, "StateDirectory is not kt-%i")
	}
	if !slices.Contains(directives["Restart"], "always") {
		problems = append(problems, "Restart is not always")
	}
	creds := map[string]bool{}
	for _, c := range directives["LoadCredential"] {
		name, _, _ := strings.Cut(c, ":")
		creds[name] = true
	}
	env := map[string]string{}
	for _, e := range directives["Environment"] {
		k, v, _ := strings.Cut(e, "=")
		env[k] = v
	}
	for _, key := range []string{"log.key_file", "directory.vrf_key_file", "directory.recovery_key_file", "enrollment.token_key_file"} {
		v := env[cliconfig.EnvName("KTD", key)]
		name, ok := strings.CutPrefix(v, "%d/")
		if !ok || !creds[name] {
			problems = append(problems, fmt.Sprintf("%s is %q, not %%d/NAME of a LoadCredential=NAME", cliconfig.EnvName("KTD", key), v))
		}
	}
	return problems
}

// k8sKinds are the apiVersion/kind pairs the manifests may use.
var k8sKinds = map[string]bool{
	"v1/Namespace": true, "v1/Service": true, "v1/ConfigMap": true, "v1/Secret": true,
	"apps/v1/Deployment": true, "apps/v1/StatefulSet": true, "batch/v1/Job": true,
	"policy/v1/PodDisruptionBudget":                 true,
	"kustomize.config.k8s.io/v1beta1/Kustomization": true,
}

var dns1123 = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// workload is a pod template of a Deployment, StatefulSet or Job.
type workload struct {
	kind, name string
	labels     map[string]string
	ports      map[string]bool // named container ports
}

// TestKubernetesManifests decodes every manifest and checks its structure
// and cross-references.
func TestKubernetesManifests(t *testing.T) {
	files, _ := filepath.Glob("kubernetes/*.yaml")
	var objs []k8sObject
	names := map[string]bool{} // kind/name
	for _, f := range files {
		for _, doc := range yamlDocs(t, f) {
			av, kind, name := str(doc, "apiVersion"), str(doc, "kind"), str(doc, "metadata", "name")
			if !k8sKinds[av+"/"+kind] {
				t.Errorf("%s: unknown apiVersion/kind %s/%s", f, av, kind)
			}
			if kind != "Kustomization" && !dns1123.MatchString(name) {
				t.Errorf("%s: %s has invalid metadata.name %q", f, kind, name)
			}
			if names[kind+"/"+name] {
				t.Errorf("%s: %s/%s defined twice", f, kind, name)
			}
			names[kind+"/"+name] = true
			objs = append(objs, k8sObject{f, doc})
		}
	}

	// Kustomization: lists every manifest except the secrets example, and
	// its generated ConfigMaps come from files that exist.
	kust := yamlDocs(t, "kubernetes/kustomization.yaml")[0]
	var resources []string
	for _, r := range list(kust, "resources") {
		resources = append(resources, fmt.Sprint(r))
		if _, err := os.Stat(filepath.Join("kubernetes", fmt.Sprint(r))); err != nil {
			t.Errorf("kustomization lists %s: %v", r, err)
		}
	}
	for _, f := range files {
		b := filepath.Base(f)
		if b != "kustomization.yaml" && b != "secrets.example.yaml" && !slices.Contains(resources, b) {
			t.Errorf("kustomization.yaml does not list %s", b)
		}
	}
	for _, g := range list(kust, "configMapGenerator") {
		names["ConfigMap/"+str(g, "name")] = true
		for _, f := range list(g, "files") {
			_, src, _ := strings.Cut(fmt.Sprint(f), "=")
			if _, err := os.Stat(filepath.Join("kubernetes", src)); err != nil {
				t.Errorf("configMapGenerator %s: %v", str(g, "name"), err)
			}
		}
	}

	problems, workloads := k8sCrossRefs(t, objs, names)
	for _, p := range problems {
		t.Error(p)
	}
	sort.Slice(workloads, func(i, j int) bool { return workloads[i].name < workloads[j].name })
	var wl []string
	for _, w := range workloads {
		wl = append(wl, w.kind+"/"+w.name)
	}
	t.Logf("workloads: %s", strings.Join(wl, ", "))
}

// secretExample reports whether secrets.example.yaml defines the key (any
// key: the Secret).
func secretExample(t *testing.T, name, key string) bool {
	for _, doc := range yamlDocs(t, "kubernetes/secrets.example.yaml") {
		if str(doc, "kind") == "Secret" && str(doc, "metadata", "name") == name {
			if key == "" {
				return true
			}
			if _, ok := get(doc, "stringData", key).(string); ok {
				return true
			}
		}
	}
	return false
}

// kustomizeBuild renders a kustomization (the ConfigMaps come from
// deploy/config/, so it needs --load-restrictor=LoadRestrictionsNone, as
// docs/operations.md says) and decodes the objects.
func kustomizeBuild(t *testing.T, dir string) []k8sObject {
	t.Helper()
	kz := requireTool(t, "kustomize", "`go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1`")
	// Read what kustomize reads, so that go test's cache knows the test
	// depends on it (it does not see the files a subprocess opens).
	for _, root := range []string{"kubernetes", "config"} {
		err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				_, err = os.ReadFile(p)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(kz, "build", "--load-restrictor=LoadRestrictionsNone", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("kustomize build %s: %v\n%s", dir, err, out)
	}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	var objs []k8sObject
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("kustomize build %s output: %v", dir, err)
		}
		objs = append(objs, k8sObject{"kustomize build " + dir, doc})
	}
	return objs
}

// TestKustomizeBuild renders the Kubernetes manifests and the replicated
// overlay with kustomize and checks the result: every object in the kt
// namespace, the generated ConfigMaps carry the example configurations
// their kustomization names unchanged, and the expected objects are there.
func TestKustomizeBuild(t *testing.T) {
	for _, tc := range []struct {
		dir   string
		kinds map[string]int
	}{
		{"kubernetes", map[string]int{"Deployment": 2, "StatefulSet": 4, "Job": 1, "Service": 6, "ConfigMap": 2, "PodDisruptionBudget": 2}},
		// The overlay adds the headless Service ktd-peers and ktd's PDB.
		{"kubernetes/replicated", map[string]int{"Deployment": 2, "StatefulSet": 4, "Job": 1, "Service": 7, "ConfigMap": 2, "PodDisruptionBudget": 3}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			// ConfigMap/key -> the file its generator reads.
			sources := map[string]string{}
			for _, g := range list(yamlDocs(t, filepath.Join(tc.dir, "kustomization.yaml"))[0], "configMapGenerator") {
				for _, f := range list(g, "files") {
					key, src, _ := strings.Cut(fmt.Sprint(f), "=")
					sources[str(g, "name")+"/"+key] = filepath.Join(tc.dir, src)
				}
			}
			kinds := map[string]int{}
			for _, o := range kustomizeBuild(t, tc.dir) {
				kind, name := str(o.doc, "kind"), str(o.doc, "metadata", "name")
				kinds[kind]++
				if kind != "Namespace" && str(o.doc, "metadata", "namespace") != "kt" {
					t.Errorf("%s/%s is not in namespace kt", kind, name)
				}
				if kind == "ConfigMap" {
					for key, v := range strMap(o.doc, "data") {
						src, ok := sources[name+"/"+key]
						if !ok {
							t.Errorf("ConfigMap %s key %s: not generated by %s/kustomization.yaml", name, key, tc.dir)
							continue
						}
						want, err := os.ReadFile(src)
						if err != nil {
							t.Errorf("ConfigMap %s key %s: %v", name, key, err)
						} else if v != string(want) {
							t.Errorf("ConfigMap %s key %s differs from %s", name, key, src)
						}
					}
				}
			}
			for kind, n := range tc.kinds {
				if kinds[kind] != n {
					t.Errorf("kustomize rendered %d %s, want %d", kinds[kind], kind, n)
				}
			}
			// Without the flag, kustomize refuses, as documented.
			kz := requireTool(t, "kustomize", "")
			if out, err := exec.Command(kz, "build", tc.dir).CombinedOutput(); err == nil {
				t.Errorf("kustomize build %s without --load-restrictor succeeded; update docs/operations.md:\n%.200s", tc.dir, out)
			}
		})
	}
}

// k8sObject is one decoded Kubernetes object and the file it came from.
type k8sObject struct {
	file string
	doc  map[string]any
}

// k8sCrossRefs checks the workloads among objs and what refers to them:
// selectors match pod labels, StatefulSets name a Service, pods run as
// non-root, volumes and mounts, ConfigMaps (names holds the defined and
// generated "Kind/name"), Secret keys (shaped as in secrets.example.yaml)
// and named probe and Service ports resolve. It returns the problems
// found and the workloads.
func k8sCrossRefs(t *testing.T, objs []k8sObject, names map[string]bool) ([]string, []workload) {
	t.Helper()
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	var workloads []workload
	for _, o := range objs {
		kind, name := str(o.doc, "kind"), str(o.doc, "metadata", "name")
		if kind != "Deployment" && kind != "StatefulSet" && kind != "Job" {
			continue
		}
		where := fmt.Sprintf("%s: %s/%s", o.file, kind, name)
		tmpl := get(o.doc, "spec", "template")
		labels := strMap(tmpl, "metadata", "labels")
		if kind != "Job" {
			sel := strMap(o.doc, "spec", "selector", "matchLabels")
			if len(sel) == 0 {
				bad("%s: no spec.selector.matchLabels", where)
			}
			for k, v := range sel {
				if labels[k] != v {
					bad("%s: selector %s=%s does not match the pod template's labels", where, k, v)
				}
			}
		}
		if kind == "StatefulSet" && !names["Service/"+str(o.doc, "spec", "serviceName")] {
			bad("%s: serviceName %q is not a Service", where, str(o.doc, "spec", "serviceName"))
		}
		pod := get(tmpl, "spec")
		if get(pod, "securityContext", "runAsNonRoot") != true {
			bad("%s: pod does not set securityContext.runAsNonRoot", where)
		}
		volumes := map[string]bool{}
		for _, v := range list(pod, "volumes") {
			volumes[str(v, "name")] = true
			// A ConfigMap or Secret volume, or a projected one of them.
			cms := []string{str(v, "configMap", "name")}
			type secretRef struct {
				name  string
				items []any
			}
			secrets := []secretRef{{str(v, "secret", "secretName"), list(v, "secret", "items")}}
			for _, src := range list(v, "projected", "sources") {
				cms = append(cms, str(src, "configMap", "name"))
				secrets = append(secrets, secretRef{str(src, "secret", "name"), list(src, "secret", "items")})
			}
			for _, cm := range cms {
				if cm != "" && !names["ConfigMap/"+cm] {
					bad("%s: volume %s uses ConfigMap %q, which is not defined or generated", where, str(v, "name"), cm)
				}
			}
			for _, sr := range secrets {
				if sr.name == "" {
					continue
				}
				if len(sr.items) == 0 && !secretExample(t, sr.name, "") {
					bad("%s: volume %s uses Secret %q, which is not in secrets.example.yaml", where, str(v, "name"), sr.name)
				}
				for _, it := range sr.items {
					if !secretExample(t, sr.name, str(it, "key")) {
						bad("%s: volume %s uses Secret %s key %q, which is not in secrets.example.yaml", where, str(v, "name"), sr.name, str(it, "key"))
					}
				}
			}
		}
		for _, v := range list(o.doc, "spec", "volumeClaimTemplates") {
			volumes[str(v, "metadata", "name")] = true
		}
		w := workload{kind: kind, name: name, labels: labels, ports: map[string]bool{}}
		containers := list(pod, "containers")
		if len(containers) == 0 {
			bad("%s: no containers", where)
		}
		for _, c := range containers {
			cw := where + " container " + str(c, "name")
			if str(c, "name") == "" || str(c, "image") == "" {
				bad("%s: container without name or image", cw)
			}
			if get(c, "securityContext", "allowPrivilegeEscalation") != false {
				bad("%s: allowPrivilegeEscalation is not false", cw)
			}
			for _, p := range list(c, "ports") {
				if n := str(p, "name"); n != "" {
					w.ports[n] = true
				}
			}
			for _, m := range list(c, "volumeMounts") {
				if !volumes[str(m, "name")] {
					bad("%s: mounts undefined volume %q", cw, str(m, "name"))
				}
			}
			for _, e := range list(c, "env") {
				if s := str(e, "valueFrom", "secretKeyRef", "name"); s != "" {
					// Secrets are created by the operator, shaped as
					// in secrets.example.yaml.
					if !secretExample(t, s, str(e, "valueFrom", "secretKeyRef", "key")) {
						bad("%s: secret %s key %s is not in secrets.example.yaml", cw, s, str(e, "valueFrom", "secretKeyRef", "key"))
					}
				}
			}
			for _, probe := range []string{"startupProbe", "readinessProbe", "livenessProbe"} {
				for _, handler := range []string{"httpGet", "tcpSocket"} {
					if p, ok := get(c, probe, handler, "port").(string); ok && !w.ports[p] {
						bad("%s: %s uses unnamed port %q", cw, probe, p)
					}
				}
			}
		}
		workloads = append(workloads, w)
	}

	// Services select some workload's pods and target its named ports;
	// PodDisruptionBudgets select some workload.
	for _, o := range objs {
		kind, name := str(o.doc, "kind"), str(o.doc, "metadata", "name")
		var sel map[string]string
		switch kind {
		case "Service":
			sel = strMap(o.doc, "spec", "selector")
		case "PodDisruptionBudget":
			sel = strMap(o.doc, "spec", "selector", "matchLabels")
		default:
			continue
		}
		var matched []workload
		for _, w := range workloads {
			ok := len(sel) > 0
			for k, v := range sel {
				ok = ok && w.labels[k] == v
			}
			if ok {
				matched = append(matched, w)
			}
		}
		if len(matched) == 0 {
			bad("%s: %s/%s selects no workload", o.file, kind, name)
			continue
		}
		for _, p := range list(o.doc, "spec", "ports") {
			tp, ok := get(p, "targetPort").(string)
			if !ok {
				continue
			}
			for _, w := range matched {
				if !w.ports[tp] {
					bad("%s: Service %s targets port %q, which %s/%s does not name", o.file, name, tp, w.kind, w.name)
				}
			}
		}
	}
	return problems, workloads
}

// TestKubernetesReplicated renders the replicated overlay
// (kubernetes/replicated) and checks what running ktd as several
// instances needs, beyond the cross-references every manifest is checked
// for: see checkReplicatedKtd. Each check is shown to fail on a copy of
// the rendered objects broken in the way it guards against.
func TestKubernetesReplicated(t *testing.T) {
	// The overlay lists the base's files (kustomize refuses the base
	// directory as a resource of an overlay inside it): all of them, and
	// the base's ConfigMaps.
	base := yamlDocs(t, "kubernetes/kustomization.yaml")[0]
	overlay := yamlDocs(t, "kubernetes/replicated/kustomization.yaml")[0]
	res := list(overlay, "resources")
	for _, r := range list(base, "resources") {
		if !slices.Contains(res, any("../"+fmt.Sprint(r))) {
			t.Errorf("replicated/kustomization.yaml does not list the base's %s", r)
		}
	}
	var generated []string
	for _, g := range list(overlay, "configMapGenerator") {
		generated = append(generated, str(g, "name"))
	}
	for _, g := range list(base, "configMapGenerator") {
		if !slices.Contains(generated, str(g, "name")) {
			t.Errorf("replicated/kustomization.yaml does not generate the base's ConfigMap %s", str(g, "name"))
		}
	}

	objs := kustomizeBuild(t, "kubernetes/replicated")
	check := func(objs []k8sObject) []string {
		names := map[string]bool{}
		for _, o := range objs {
			names[str(o.doc, "kind")+"/"+str(o.doc, "metadata", "name")] = true
		}
		problems, _ := k8sCrossRefs(t, objs, names)
		return append(problems, checkReplicatedKtd(t, objs)...)
	}
	for _, p := range check(objs) {
		t.Error(p)
	}
	t.Run("ktd loads the pod's configuration", func(t *testing.T) { loadPodConfig(t, objs) })

	// Broken copies.
	copyObjs := func() []k8sObject {
		var docs []map[string]any
		for _, o := range objs {
			docs = append(docs, o.doc)
		}
		b, err := yaml.Marshal(docs)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &docs); err != nil {
			t.Fatal(err)
		}
		out := make([]k8sObject, len(objs))
		for i, o := range objs {
			out[i] = k8sObject{o.file, docs[i]}
		}
		return out
	}
	ktdOf := func(objs []k8sObject) (sts, container map[string]any) {
		for _, o := range objs {
			if str(o.doc, "kind") == "StatefulSet" && str(o.doc, "metadata", "name") == "ktd" {
				for _, c := range list(o.doc, "spec", "template", "spec", "containers") {
					if str(c, "name") == "ktd" {
						return o.doc, c.(map[string]any)
					}
				}
			}
		}
		t.Fatal("no StatefulSet ktd with a container ktd")
		return nil, nil
	}
	envEntry := func(c map[string]any, name string) map[string]any {
		for _, e := range list(c, "env") {
			if str(e, "name") == name {
				return e.(map[string]any)
			}
		}
		t.Fatalf("no env %s", name)
		return nil
	}
	for _, tc := range []struct {
		name    string
		breakIt func(objs []k8sObject) []k8sObject
	}{
		{"one replica", func(objs []k8sObject) []k8sObject {
			sts, _ := ktdOf(objs)
			get(sts, "spec").(map[string]any)["replicas"] = 1
			return objs
		}},
		{"governing Service not headless", func(objs []k8sObject) []k8sObject {
			sts, _ := ktdOf(objs)
			get(sts, "spec").(map[string]any)["serviceName"] = "ktd"
			return objs
		}},
		{"no lookup Service", func(objs []k8sObject) []k8sObject {
			return slices.DeleteFunc(objs, func(o k8sObject) bool {
				return str(o.doc, "kind") == "Service" && str(o.doc, "metadata", "name") == "ktd"
			})
		}},
		{"no PodDisruptionBudget", func(objs []k8sObject) []k8sObject {
			return slices.DeleteFunc(objs, func(o k8sObject) bool {
				return str(o.doc, "kind") == "PodDisruptionBudget" && str(o.doc, "metadata", "name") == "ktd"
			})
		}},
		{"POD_NAME defined after its use", func(objs []k8sObject) []k8sObject {
			_, c := ktdOf(objs)
			env := c["env"].([]any)
			i := slices.IndexFunc(env, func(e any) bool { return str(e, "name") == "KTD_CLUSTER_ADVERTISE" })
			env[0], env[i] = env[i], env[0]
			return objs
		}},
		{"advertise not the pod's name", func(objs []k8sObject) []k8sObject {
			_, c := ktdOf(objs)
			envEntry(c, "KTD_CLUSTER_ADVERTISE")["value"] = "ktd:8443"
			return objs
		}},
		{"DSN not from a Secret", func(objs []k8sObject) []k8sObject {
			_, c := ktdOf(objs)
			e := envEntry(c, "KTD_CLUSTER_DSN")
			delete(e, "valueFrom")
			e["value"] = "trillian:pw@tcp(mariadb:3306)/trillian"
			return objs
		}},
		{"a key in the data directory", func(objs []k8sObject) []k8sObject {
			_, c := ktdOf(objs)
			c["env"] = append(c["env"].([]any), map[string]any{"name": "KTD_DIRECTORY_VRF_KEY_FILE", "value": "/var/lib/kt/vrf.key"})
			return objs
		}},
		{"a key missing from the projection", func(objs []k8sObject) []k8sObject {
			sts, _ := ktdOf(objs)
			for _, v := range list(sts, "spec", "template", "spec", "volumes") {
				for _, src := range list(v, "projected", "sources") {
					if s, ok := get(src, "secret").(map[string]any); ok {
						s["items"] = slices.DeleteFunc(s["items"].([]any), func(it any) bool { return str(it, "key") == "vrf.key" })
					}
				}
			}
			return objs
		}},
		{"a key the Secret does not have", func(objs []k8sObject) []k8sObject {
			sts, _ := ktdOf(objs)
			for _, v := range list(sts, "spec", "template", "spec", "volumes") {
				for _, src := range list(v, "projected", "sources") {
					for _, it := range list(src, "secret", "items") {
						if str(it, "key") == "log.key" {
							it.(map[string]any)["key"] = "log-key"
						}
					}
				}
			}
			return objs
		}},
		{"keys mounted writable", func(objs []k8sObject) []k8sObject {
			_, c := ktdOf(objs)
			for _, m := range list(c, "volumeMounts") {
				if str(m, "mountPath") == "/etc/kt" {
					m.(map[string]any)["readOnly"] = false
				}
			}
			return objs
		}},
		{"data directory not per pod", func(objs []k8sObject) []k8sObject {
			_, c := ktdOf(objs)
			c["env"] = append(c["env"].([]any), map[string]any{"name": "KTD_DATA_DIR", "value": "/tmp/kt"})
			return objs
		}},
		{"readiness not on /healthz", func(objs []k8sObject) []k8sObject {
			_, c := ktdOf(objs)
			get(c, "readinessProbe", "httpGet").(map[string]any)["path"] = "/metrics"
			return objs
		}},
		{"standalone configuration", func(objs []k8sObject) []k8sObject {
			b, err := os.ReadFile("config/ktd.yaml")
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				if str(o.doc, "kind") == "ConfigMap" && str(o.doc, "metadata", "name") == "ktd-config" {
					get(o.doc, "data").(map[string]any)["ktd.yaml"] = string(b)
				}
			}
			return objs
		}},
	} {
		t.Run("detects "+tc.name, func(t *testing.T) {
			if p := check(tc.breakIt(copyObjs())); len(p) == 0 {
				t.Errorf("no problem found")
			} else {
				t.Logf("found: %s", strings.Join(p, "; "))
			}
		})
	}
}

// checkReplicatedKtd checks the StatefulSet ktd of a rendered replicated
// overlay: two or more replicas, a headless governing Service (the pods'
// stable names) and a ClusterIP Service over every replica for lookups, a
// PodDisruptionBudget that lets some but not all instances go; and, with
// the configuration file the container reads from its ConfigMap and the
// KTD_ variables that override it: cluster mode with the DSN from a
// Secret, an advertised address that is the pod's stable name and gRPC
// port (its $(VARS) defined before it), data_dir on the per-pod volume,
// every key file a read-only Secret file (the same for all pods), and
// readiness on /healthz of http_listen.
func checkReplicatedKtd(t *testing.T, objs []k8sObject) []string {
	t.Helper()
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	find := func(kind, name string) map[string]any {
		for _, o := range objs {
			if str(o.doc, "kind") == kind && str(o.doc, "metadata", "name") == name {
				return o.doc
			}
		}
		return nil
	}
	sts := find("StatefulSet", "ktd")
	if sts == nil {
		return []string{"no StatefulSet ktd"}
	}
	replicas, _ := get(sts, "spec", "replicas").(int)
	if replicas < 2 {
		bad("StatefulSet ktd has %d replicas, want 2 or more", replicas)
	}
	labels := strMap(sts, "spec", "template", "metadata", "labels")
	selects := func(sel map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	serviceName := str(sts, "spec", "serviceName")
	if gov := find("Service", serviceName); gov == nil || str(gov, "spec", "clusterIP") != "None" || !selects(strMap(gov, "spec", "selector")) {
		bad("serviceName %q is not a headless Service selecting ktd's pods (the pods' stable names)", serviceName)
	}
	lookup := false
	pdb := false
	for _, o := range objs {
		switch str(o.doc, "kind") {
		case "Service":
			if str(o.doc, "spec", "clusterIP") == "None" || !selects(strMap(o.doc, "spec", "selector")) {
				continue
			}
			for _, p := range list(o.doc, "spec", "ports") {
				lookup = lookup || str(p, "targetPort") == "grpc"
			}
		case "PodDisruptionBudget":
			if !selects(strMap(o.doc, "spec", "selector", "matchLabels")) {
				continue
			}
			pdb = true
			maxU, okMax := get(o.doc, "spec", "maxUnavailable").(int)
			minA, okMin := get(o.doc, "spec", "minAvailable").(int)
			if !(okMax && maxU >= 1 && maxU < replicas) && !(okMin && minA >= 1 && minA < replicas) {
				bad("PodDisruptionBudget %s does not keep 1..%d of %d ktd available (integers only)", str(o.doc, "metadata", "name"), replicas-1, replicas)
			}
		}
	}
	if !lookup {
		bad("no ClusterIP Service over ktd's pods with a port to grpc (lookups across the replicas)")
	}
	if !pdb {
		bad("no PodDisruptionBudget selects ktd's pods")
	}

	pod := get(sts, "spec", "template", "spec")
	var c any
	for _, x := range list(pod, "containers") {
		if str(x, "name") == "ktd" {
			c = x
		}
	}
	if c == nil {
		return append(problems, "StatefulSet ktd has no container ktd")
	}
	ports := map[string]int{}
	for _, p := range list(c, "ports") {
		ports[str(p, "name")], _ = get(p, "containerPort").(int)
	}

	// The environment, in order: $(VAR) expands only variables defined
	// earlier in the list.
	env := map[string]any{} // name -> entry
	for _, e := range list(c, "env") {
		for _, m := range regexp.MustCompile(`\$\(([A-Za-z0-9_]+)\)`).FindAllStringSubmatch(str(e, "value"), -1) {
			if env[m[1]] == nil {
				bad("env %s uses $(%s) before it is defined", str(e, "name"), m[1])
			}
		}
		env[str(e, "name")] = e
	}
	if str(env["POD_NAME"], "valueFrom", "fieldRef", "fieldPath") != "metadata.name" {
		bad("env POD_NAME is not the downward API's metadata.name")
	}
	if get(env["KTD_CLUSTER_DSN"], "valueFrom", "secretKeyRef") == nil {
		bad("KTD_CLUSTER_DSN (it holds the database password) is not from a Secret")
	}
	adv := str(env["KTD_CLUSTER_ADVERTISE"], "value")
	if !strings.HasPrefix(adv, "$(POD_NAME)."+serviceName+".") || !strings.HasSuffix(adv, fmt.Sprintf(":%d", ports["grpc"])) {
		bad("KTD_CLUSTER_ADVERTISE %q is not $(POD_NAME).%s...:%d (the pod's stable name and gRPC port)", adv, serviceName, ports["grpc"])
	}

	// Files: a path in the container resolves to the volume mounted at
	// its longest mountPath prefix.
	volumes := map[string]any{}
	for _, v := range list(pod, "volumes") {
		volumes[str(v, "name")] = v
	}
	claims := map[string]bool{}
	for _, v := range list(sts, "spec", "volumeClaimTemplates") {
		claims[str(v, "metadata", "name")] = true
	}
	configMapKeys := func(name string) []string {
		return slices.Collect(maps.Keys(strMap(find("ConfigMap", name), "data")))
	}
	secretKeys := func(name string) []string {
		for _, doc := range yamlDocs(t, "kubernetes/secrets.example.yaml") {
			if str(doc, "kind") == "Secret" && str(doc, "metadata", "name") == name {
				return slices.Collect(maps.Keys(strMap(doc, "stringData")))
			}
		}
		return nil
	}
	// files of a volume: relative path -> "ConfigMap/name/key" or "Secret/name/key".
	files := func(v any) map[string]string {
		out := map[string]string{}
		add := func(kind, name string, items []any, keys func(string) []string) {
			if name == "" {
				return
			}
			if len(items) == 0 {
				for _, k := range keys(name) {
					out[k] = kind + "/" + name + "/" + k
				}
			}
			for _, it := range items {
				out[str(it, "path")] = kind + "/" + name + "/" + str(it, "key")
			}
		}
		add("ConfigMap", str(v, "configMap", "name"), list(v, "configMap", "items"), configMapKeys)
		add("Secret", str(v, "secret", "secretName"), list(v, "secret", "items"), secretKeys)
		for _, src := range list(v, "projected", "sources") {
			add("ConfigMap", str(src, "configMap", "name"), list(src, "configMap", "items"), configMapKeys)
			add("Secret", str(src, "secret", "name"), list(src, "secret", "items"), secretKeys)
		}
		return out
	}
	type resolved struct {
		volume   string
		claim    bool   // a volumeClaimTemplate: per pod
		source   string // the ConfigMap or Secret key, for a file
		readOnly bool
	}
	resolve := func(path string) (resolved, bool) {
		var best any
		for _, m := range list(c, "volumeMounts") {
			mp := str(m, "mountPath")
			if (path == mp || strings.HasPrefix(path, mp+"/")) && (best == nil || len(mp) > len(str(best, "mountPath"))) {
				best = m
			}
		}
		if best == nil {
			return resolved{}, false
		}
		r := resolved{volume: str(best, "name"), readOnly: get(best, "readOnly") == true}
		if claims[r.volume] {
			r.claim = true
			return r, true
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(path, str(best, "mountPath")), "/")
		r.source = files(volumes[r.volume])[rel]
		return r, r.source != ""
	}

	// The configuration file and what overrides it.
	var cfgPath string
	for _, a := range list(c, "args") {
		if s, ok := strings.CutPrefix(fmt.Sprint(a), "--config="); ok {
			cfgPath = s
		}
	}
	r, ok := resolve(cfgPath)
	kind, rest, _ := strings.Cut(r.source, "/")
	cmName, cmKey, _ := strings.Cut(rest, "/")
	if !ok || kind != "ConfigMap" {
		return append(problems, fmt.Sprintf("--config=%q is not a file of a ConfigMap volume", cfgPath))
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(strMap(find("ConfigMap", cmName), "data")[cmKey]), &cfg); err != nil {
		return append(problems, fmt.Sprintf("ConfigMap %s key %s: %v", cmName, cmKey, err))
	}
	setting := func(key string) string {
		if e := env[cliconfig.EnvName("KTD", key)]; e != nil {
			if get(e, "valueFrom") != nil {
				return "(from " + cliconfig.EnvName("KTD", key) + ")"
			}
			return str(e, "value")
		}
		return fmt.Sprint(get(cfg, strings.Split(key, ".")...))
	}
	if str(cfg, "cluster", "dsn") == "" {
		bad("%s has no cluster.dsn: not the replicated configuration", cfgPath)
	}
	if v := setting("log.backend"); v != "trillian" {
		bad("log.backend is %q, want trillian", v)
	}
	if r, ok := resolve(setting("data_dir")); !ok || !r.claim || r.readOnly {
		bad("data_dir %q is not on a writable volume of the StatefulSet's volumeClaimTemplates (one per pod)", setting("data_dir"))
	}
	for _, key := range []string{"log.key_file", "directory.vrf_key_file", "directory.recovery_key_file", "enrollment.token_key_file"} {
		p := setting(key)
		r, ok := resolve(p)
		if p == "" || p == "<nil>" || !ok || !strings.HasPrefix(r.source, "Secret/") || !r.readOnly {
			bad("%s %q is not a file of a Secret mounted read-only (every instance needs the same key)", key, p)
		}
	}
	if p := get(c, "readinessProbe", "httpGet"); str(p, "path") != "/healthz" {
		bad("readinessProbe is not an HTTP GET of /healthz")
	} else if _, port, _ := strings.Cut(setting("http_listen"), ":"); fmt.Sprint(ports[str(p, "port")]) != port {
		bad("readinessProbe port %v is not http_listen %q", get(p, "port"), setting("http_listen"))
	}
	return problems
}

// TestKubeconform validates what kustomize renders of the base and the
// replicated overlay, and the secrets example, against the Kubernetes
// JSON schemas with `kubeconform -strict` (unknown fields and wrong types
// fail). The schemas are not in this repository and CI cannot download
// them: the test runs when KT_KUBE_SCHEMAS names a local copy laid out as
// github.com/yannh/kubernetes-json-schema (a directory
// v1.32.2-standalone-strict/ of <kind>-<group>-<version>.json files), and
// skips otherwise, also under CI.
func TestKubeconform(t *testing.T) {
	schemas := os.Getenv("KT_KUBE_SCHEMAS")
	if schemas == "" {
		t.Skip("KT_KUBE_SCHEMAS is not set: no local Kubernetes JSON schemas")
	}
	kc := requireTool(t, "kubeconform", "`go install github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0`")
	const version = "1.32.2"
	validate := func(t *testing.T, input []byte, args ...string) ([]byte, error) {
		cmd := exec.Command(kc, append([]string{"-strict", "-summary", "-kubernetes-version", version,
			"-schema-location", filepath.Join(schemas, "{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json")}, args...)...)
		cmd.Stdin = bytes.NewReader(input)
		return cmd.CombinedOutput()
	}
	kz := requireTool(t, "kustomize", "`go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1`")
	for _, dir := range []string{"kubernetes", "kubernetes/replicated"} {
		t.Run(dir, func(t *testing.T) {
			kustomizeBuild(t, dir) // records the files for the test cache
			rendered, err := exec.Command(kz, "build", "--load-restrictor=LoadRestrictionsNone", dir).Output()
			if err != nil {
				t.Fatal(err)
			}
			out, err := validate(t, rendered)
			if err != nil {
				t.Fatalf("kubeconform %s: %v\n%s", dir, err, out)
			}
			t.Logf("%s", bytes.TrimSpace(out))
			// A misspelled field fails.
			broken := bytes.Replace(rendered, []byte("serviceName:"), []byte("serviceNam:"), 1)
			if out, err := validate(t, broken); err == nil {
				t.Errorf("kubeconform accepted a misspelled field:\n%s", out)
			}
		})
	}
	b, err := os.ReadFile("kubernetes/secrets.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := validate(t, b); err != nil {
		t.Errorf("kubeconform secrets.example.yaml: %v\n%s", err, out)
	}
}

// loadPodConfig runs the real ktd (`issue-token`, which loads and
// validates the configuration) with what the last pod of the rendered
// StatefulSet ktd gets: the ConfigMap's ktd.yaml, and the container's
// environment as the kubelet builds it (downward API fields, Secret keys
// from secrets.example.yaml, $(VAR) expanded from earlier entries). Only
// the tree ID (the manifest's placeholder 0, set after createtree) and the
// key and data paths (the pod's mounts, checked by checkReplicatedKtd)
// are replaced.
func loadPodConfig(t *testing.T, objs []k8sObject) {
	var sts, cm map[string]any
	for _, o := range objs {
		switch {
		case str(o.doc, "kind") == "StatefulSet" && str(o.doc, "metadata", "name") == "ktd":
			sts = o.doc
		case str(o.doc, "kind") == "ConfigMap" && str(o.doc, "metadata", "name") == "ktd-config":
			cm = o.doc
		}
	}
	if sts == nil || cm == nil {
		t.Fatal("no StatefulSet ktd or ConfigMap ktd-config")
	}
	replicas, _ := get(sts, "spec", "replicas").(int)
	fields := map[string]string{
		"metadata.name":      fmt.Sprintf("ktd-%d", replicas-1),
		"metadata.namespace": "kt",
	}
	cfg := filepath.Join(t.TempDir(), "ktd.yaml")
	if err := os.WriteFile(cfg, []byte(strMap(cm, "data")["ktd.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	var env []string
	c := list(sts, "spec", "template", "spec", "containers")[0]
	for _, e := range list(c, "env") {
		name := str(e, "name")
		var v string
		switch {
		case get(e, "valueFrom", "fieldRef") != nil:
			f, ok := fields[str(e, "valueFrom", "fieldRef", "fieldPath")]
			if !ok {
				t.Fatalf("env %s: field %s not known to this test", name, str(e, "valueFrom", "fieldRef", "fieldPath"))
			}
			v = f
		case get(e, "valueFrom", "secretKeyRef") != nil:
			ref := get(e, "valueFrom", "secretKeyRef")
			for _, doc := range yamlDocs(t, "kubernetes/secrets.example.yaml") {
				if str(doc, "metadata", "name") == str(ref, "name") {
					v = str(doc, "stringData", str(ref, "key"))
				}
			}
		default:
			v = regexp.MustCompile(`\$\(([A-Za-z0-9_]+)\)`).ReplaceAllStringFunc(str(e, "value"), func(m string) string {
				if x, ok := vars[m[2:len(m)-1]]; ok {
					return x
				}
				return m
			})
		}
		vars[name] = v
		env = append(env, name+"="+v)
	}
	keys := t.TempDir()
	env = append(env, "KTD_LOG_TRILLIAN_TREE_ID=1", "KTD_DATA_DIR="+t.TempDir(),
		"KTD_LOG_KEY_FILE="+filepath.Join(keys, "log.key"), "KTD_DIRECTORY_VRF_KEY_FILE="+filepath.Join(keys, "vrf.key"),
		"KTD_DIRECTORY_RECOVERY_KEY_FILE="+filepath.Join(keys, "recovery.key"), "KTD_ENROLLMENT_TOKEN_KEY_FILE="+filepath.Join(keys, "enroll-token.key"))
	t.Logf("environment: %q", env)
	cmd := exec.Command(buildKtd(t), "issue-token", "--config="+cfg, "+14155550100")
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ktd refuses the pod's configuration: %v\n%s", err, out)
	}
	if !strings.HasSuffix(vars["KTD_CLUSTER_ADVERTISE"], ".ktd-peers.kt.svc:8443") || strings.Contains(vars["KTD_CLUSTER_ADVERTISE"], "$(") {
		t.Errorf("KTD_CLUSTER_ADVERTISE expands to %q", vars["KTD_CLUSTER_ADVERTISE"])
	}
}
