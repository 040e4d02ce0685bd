package deploytest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/internal/testing/trilliantest"
)

// repo is the repository root, from this package's directory.
const repo = "../../.."

// composeDir is where compose.yaml's relative paths start.
var composeDir = filepath.Join(repo, "deploy", "compose")

// service is what this test reads of a compose service.
type service struct {
	Image       string            `yaml:"image"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Profiles    []string          `yaml:"profiles"`
	Build       struct {
		Args map[string]string `yaml:"args"`
	} `yaml:"build"`
	Deploy struct {
		Replicas int `yaml:"replicas"`
	} `yaml:"deploy"`
}

// loadCompose reads compose.yaml with its variables (${VAR}, ${VAR:-def},
// ${VAR:?message}) substituted from env, as docker compose does from .env.
func loadCompose(t *testing.T, env map[string]string) map[string]*service {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(composeDir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	text := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}`).ReplaceAllStringFunc(string(b), func(m string) string {
		sm := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}`).FindStringSubmatch(m)
		v := env[sm[1]]
		switch {
		case v != "":
			return v
		case sm[2] == ":-":
			return sm[3]
		case sm[2] == ":?":
			missing = append(missing, sm[1]+": "+sm[3])
		}
		return ""
	})
	if len(missing) > 0 {
		t.Fatalf("compose.yaml needs %s", strings.Join(missing, "; "))
	}
	var doc struct {
		Services map[string]*service `yaml:"services"`
	}
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return doc.Services
}

// envExample is deploy/compose/env.example, the .env an operator copies.
func envExample(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(composeDir, "env.example"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		l := strings.TrimSpace(s.Text())
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			env[k] = v
		}
	}
	return env
}

// freeAddr is a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// topology is the one place where the compose file's world (service
// names, container ports and paths) meets the test's (loopback ports,
// temporary files).
type topology struct {
	t   *testing.T
	tmp string
	// exact are whole strings replaced first (the database DSN).
	exact map[string]string
	// dial maps what one service dials another at (compose service
	// name:container port) to the loopback address serving it.
	dial map[string]string
}

// proc is one process of a service: its own listen addresses (container
// bind address:port, e.g. 0.0.0.0:8443, to loopback) and mounts
// (container path to a host path).
type proc struct {
	name   string
	binds  map[string]string
	mounts map[string]string
}

// source maps a compose volume source to a host path: ./keys (what the
// keygen service writes) and named volumes to the test's directory, other
// relative paths to the repository's files.
func (tp *topology) source(src string) string {
	switch {
	case src == "./keys" || strings.HasPrefix(src, "./keys/"):
		return filepath.Join(tp.tmp, "keys", strings.TrimPrefix(strings.TrimPrefix(src, "./keys"), "/"))
	case strings.HasPrefix(src, "."):
		return filepath.Join(composeDir, src)
	default: // a named volume
		return filepath.Join(tp.tmp, "volumes", src)
	}
}

// fresh gives each container bind address a fresh loopback address.
func fresh(t *testing.T, binds ...string) map[string]string {
	m := map[string]string{}
	for _, b := range binds {
		m[b] = freeAddr(t)
	}
	return m
}

// newProc lays out a process of svc with its binds (container bind
// address to loopback, see fresh): each mounted file is copied to the test's directory with rewrite
// applied (the configuration files name other services and container
// paths), each mounted directory is used as it is.
func (tp *topology) newProc(name string, svc *service, binds map[string]string) *proc {
	tp.t.Helper()
	p := &proc{name: name, binds: binds, mounts: map[string]string{}}
	type file struct{ host, container string }
	var files []file
	for _, v := range svc.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			tp.t.Fatalf("%s: volume %q", name, v)
		}
		host := tp.source(parts[0])
		st, err := os.Stat(host)
		if err == nil && st.Mode().IsRegular() {
			files = append(files, file{host, parts[1]})
			continue
		}
		if err := os.MkdirAll(host, 0o700); err != nil {
			tp.t.Fatal(err)
		}
		p.mounts[parts[1]] = host
	}
	for _, f := range files {
		p.mounts[f.container] = filepath.Join(tp.tmp, "files", name, f.container)
	}
	for _, f := range files {
		b, err := os.ReadFile(f.host)
		if err != nil {
			tp.t.Fatal(err)
		}
		dst := p.mounts[f.container]
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			tp.t.Fatal(err)
		}
		if err := os.WriteFile(dst, []byte(tp.rewrite(p, string(b))), 0o600); err != nil {
			tp.t.Fatal(err)
		}
	}
	return p
}

// rewrite substitutes, in an argument, a variable or a mounted file: the
// exact strings, the process's mounts (longest container path first, as
// whole path components), its binds, and the addresses of other services.
func (tp *topology) rewrite(p *proc, s string) string {
	for from, to := range tp.exact {
		s = strings.ReplaceAll(s, from, to)
	}
	paths := slices.Collect(func(yield func(string) bool) {
		for k := range p.mounts {
			if !yield(k) {
				return
			}
		}
	})
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	for _, c := range paths {
		s = replacePath(s, c, p.mounts[c])
	}
	for from, to := range p.binds {
		s = strings.ReplaceAll(s, from, to)
	}
	for from, to := range tp.dial {
		s = regexp.MustCompile(`\b`+regexp.QuoteMeta(from)+`\b`).ReplaceAllLiteralString(s, to)
	}
	return s
}

// replacePath replaces the container path c by h where it is a whole path
// (followed by "/", the end or a character that cannot be in a path).
func replacePath(s, c, h string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, c)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		end := i + len(c)
		if end == len(s) || !regexp.MustCompile(`[A-Za-z0-9_.-]`).MatchString(s[end:end+1]) {
			b.WriteString(s[:i] + h)
		} else {
			b.WriteString(s[:end])
		}
		s = s[end:]
	}
}

// args are the process's command line (command, rewritten) and
// environment (the service's, rewritten, on top of this process's).
func (tp *topology) args(p *proc, svc *service) ([]string, []string) {
	var args []string
	for _, a := range svc.Command {
		args = append(args, tp.rewrite(p, a))
	}
	env := os.Environ()
	for k, v := range svc.Environment {
		env = append(env, k+"="+tp.rewrite(p, v))
	}
	return args, env
}

// binaries builds ktd, ktauditor, ktctl and kt into a directory.
func binaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/ktd", "./cmd/ktauditor", "./cmd/ktctl", "./cmd/kt")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// binary is the program a service runs: ours by its build argument CMD
// (deploy/docker/Dockerfile's ENTRYPOINT /app), Trillian's and etcd's by
// the entrypoint or command.
func binary(t *testing.T, name string, svc *service, ours string) (string, []string) {
	t.Helper()
	if cmd := svc.Build.Args["CMD"]; cmd != "" {
		return filepath.Join(ours, cmd), svc.Command
	}
	if len(svc.Entrypoint) == 1 {
		server, signer := trilliantest.Binaries(t)
		switch filepath.Base(svc.Entrypoint[0]) {
		case "trillian_log_server":
			return server, svc.Command
		case "trillian_log_signer":
			return signer, svc.Command
		}
	}
	if len(svc.Command) > 0 && svc.Command[0] == "etcd" {
		return trilliantest.EtcdBinary(t), svc.Command[1:]
	}
	t.Fatalf("service %s: no binary known to this test (image %s)", name, svc.Image)
	return "", nil
}

// waitOK waits until url answers 200, for at most a minute.
func waitOK(t *testing.T, url string) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	var last string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := c.Get(url)
		if err != nil {
			last = err.Error()
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return
		}
		last = resp.Status
	}
	t.Fatalf("%s not ready within a minute: %s", url, last)
}

// run runs a one-shot command and returns its standard output.
func run(t *testing.T, env []string, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(bin), strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// TestCompose starts deploy/compose/compose.yaml's topology as processes
// and runs kt against it.
func TestCompose(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole topology")
	}
	started := time.Now()
	dsn := trilliantest.NewDatabase(t) // first: skips (or fails under CI) without MariaDB
	ours := binaries(t)
	env := envExample(t)
	tp := &topology{t: t, tmp: t.TempDir(), dial: map[string]string{}, exact: map[string]string{}}

	// Tree IDs are only known after createtree: a first reading for the
	// fixed services, a second one for ktd.
	services := loadCompose(t, env)
	for _, want := range []string{"mariadb", "etcd", "trillian-log-server", "trillian-log-signer", "createtree", "keygen", "ktd", "ktauditor-1", "ktauditor-2"} {
		if services[want] == nil {
			t.Fatalf("compose.yaml has no service %s", want)
		}
	}
	// The DSN of compose's MariaDB user, as the Trillian services spell it.
	tp.exact["trillian:"+env["KT_MYSQL_PASSWORD"]+"@tcp(mariadb:3306)/trillian"] = dsn

	// Addresses each service is dialled at.
	etcdClient, etcdPeer := freeAddr(t), freeAddr(t)
	tp.dial["etcd:2379"], tp.dial["etcd:2380"] = etcdClient, etcdPeer
	var daemons []*testkit.Daemon
	launch := func(p *proc, svc *service, ready string) *testkit.Daemon {
		t.Helper()
		bin, _ := binary(t, p.name, svc, ours)
		args, e := tp.args(p, svc)
		if filepath.Base(bin) == "etcd" {
			args = args[1:] // the image's command starts with the program
		}
		cmd := exec.Command(bin, args...)
		cmd.Env = e
		d, ok, err := testkit.LaunchCmd(t, cmd, ready)
		if !ok {
			t.Fatalf("%s exited before it was ready: %v\n%s", p.name, err, d.Logs)
		}
		daemons = append(daemons, d)
		return d
	}

	// etcd.
	launch(tp.newProc("etcd", services["etcd"], map[string]string{"0.0.0.0:2379": etcdClient, "0.0.0.0:2380": etcdPeer}),
		services["etcd"], "ready to serve client requests")

	// Trillian: the replicas of each service, each on its own ports.
	var serverAddrs []string
	for i := range max(services["trillian-log-server"].Deploy.Replicas, 1) {
		p := tp.newProc(fmt.Sprintf("trillian-log-server-%d", i+1), services["trillian-log-server"], fresh(t, "0.0.0.0:8090", "0.0.0.0:8091"))
		launch(p, services["trillian-log-server"], "RPC server starting on")
		serverAddrs = append(serverAddrs, p.binds["0.0.0.0:8090"])
	}
	// ktd balances over a comma-separated list as over one name.
	tp.dial["trillian-log-server:8090"] = strings.Join(serverAddrs, ",")
	// The election directory, per run: parallel runs never share one.
	tp.exact["--lock_file_path=/kt/trillian/signer-election"] = "--lock_file_path=/kt-deploytest/" + filepath.Base(tp.tmp) + "/election"
	for i := range max(services["trillian-log-signer"].Deploy.Replicas, 1) {
		p := tp.newProc(fmt.Sprintf("trillian-log-signer-%d", i+1), services["trillian-log-signer"], fresh(t, "0.0.0.0:8090", "0.0.0.0:8091"))
		launch(p, services["trillian-log-signer"], "RPC server starting on")
	}

	// createtree (one-shot): `ktctl tree create` does what Trillian's
	// createtree does (docs/operations.md); its flags are checked against
	// the pinned createtree by deploy's TestTrillianFlags.
	out := run(t, os.Environ(), filepath.Join(ours, "ktctl"), "tree", "create", "--json", "--trillian", serverAddrs[0])
	m := regexp.MustCompile(`"(?:tree_)?id":\s*"?([0-9]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ktctl tree create printed no tree ID:\n%s", out)
	}
	env["KT_TREE_ID"] = m[1]
	services = loadCompose(t, env)

	// Everyone's addresses, then the keygen service (one-shot), which
	// writes the auditors' into the policies.
	auditors := []string{"ktauditor-1", "ktauditor-2"}
	abinds := map[string]map[string]string{}
	for _, a := range auditors {
		abinds[a] = fresh(t, "0.0.0.0:8480", "0.0.0.0:9465")
		tp.dial[a+":8480"] = abinds[a]["0.0.0.0:8480"]
	}
	kbinds := fresh(t, "0.0.0.0:8443", "0.0.0.0:8080", "0.0.0.0:9464", "127.0.0.1:8444")
	tp.dial["ktd:8080"] = kbinds["0.0.0.0:8080"]
	tp.dial["ktd:8443"] = kbinds["0.0.0.0:8443"]

	kg := tp.newProc("keygen", services["keygen"], nil)
	bin, _ := binary(t, "keygen", services["keygen"], ours)
	args, kenv := tp.args(kg, services["keygen"])
	t.Logf("keygen %s", strings.Join(args, " "))
	run(t, kenv, bin, args...)
	keys := filepath.Join(tp.tmp, "keys")

	// The auditors, then the directory (it publishes through them).
	aurls := []string{}
	for _, a := range auditors {
		launch(tp.newProc(a, services[a], abinds[a]), services[a], `msg=serving`)
		aurls = append(aurls, "http://"+abinds[a]["0.0.0.0:8480"])
	}
	kp := tp.newProc("ktd", services["ktd"], kbinds)
	ktd := launch(kp, services["ktd"], `msg="ktd serving"`)
	// Ready as an operator sees it: ktd's /healthz, and each auditor
	// serving a checkpoint it verified (so that one epoch is published,
	// cosigned and audited).
	waitOK(t, "http://"+kbinds["0.0.0.0:8080"]+"/healthz")
	for _, u := range aurls {
		waitOK(t, u+"/kt/v1/checkpoint")
	}
	t.Logf("topology up in %v", time.Since(started).Round(time.Millisecond))

	// The client parameters the operator hands out (ktctl params), then
	// kt: register, look up from another device, monitor.
	grpcAddr := kp.binds["0.0.0.0:8443"]
	ktctl, kt := filepath.Join(ours, "ktctl"), filepath.Join(ours, "kt")
	params := run(t, os.Environ(), ktctl, "params", "--grpc", grpcAddr, "--log-key", filepath.Join(keys, "public", "log.vkey"),
		"--policy", filepath.Join(keys, "public", "witness-policy"), "--recovery-key", filepath.Join(keys, "public", "recovery.pub"),
		"--vrf-public-key", filepath.Join(keys, "public", "vrf.pub"))
	ktdArgs, ktdEnv := tp.args(kp, services["ktd"])
	token := strings.TrimSpace(run(t, ktdEnv, filepath.Join(ours, "ktd"), append([]string{"issue-token"}, append(ktdArgs, "alice@example.com")...)...))
	device := func(name string) func(args ...string) string {
		dir := filepath.Join(tp.tmp, name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "params.json"), []byte(params), 0o600); err != nil {
			t.Fatal(err)
		}
		return func(args ...string) string {
			t.Helper()
			return run(t, os.Environ(), kt, append([]string{"--directory", grpcAddr, "--state-file", filepath.Join(dir, "state.json")}, args...)...)
		}
	}
	alice, bob := device("alice"), device("bob")
	if out := alice("init"); !strings.Contains(out, "audit mode") {
		t.Errorf("kt init does not pin an audit policy:\n%s", out)
	}
	alice("register", "alice@example.com", "--token", token)
	bob("init")
	out = bob("lookup", "alice@example.com")
	for _, want := range []string{"witness quorum (2 cosignatures)", "audit quorum", "(2 audit statements)"} {
		if !strings.Contains(out, want) {
			t.Errorf("kt lookup does not report %q:\n%s", want, out)
		}
	}
	out = alice("monitor", "--once", "--auditors", strings.Join(aurls, ","))
	t.Logf("kt monitor --once:\n%s", out)
	t.Logf("register, lookup and monitor done after %v", time.Since(started).Round(time.Millisecond))

	// Stop: the directory first, then the auditors, as an operator would;
	// each must exit cleanly. Trillian and etcd are killed at cleanup.
	ktd.Stop(t)
	for _, d := range daemons {
		if d != ktd && filepath.Base(d.Cmd.Path) == "ktauditor" {
			d.Stop(t)
		}
	}
}
