package deploytest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/keytrans/kt/internal/testing/testkit"
)

// keygen runs `ktctl keygen` into a new directory and returns it with
// the auditors' verifier keys (name to cosignature and audit vkeys).
func keygen(t *testing.T, ours string, auditors string) (string, map[string][2]string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "keys")
	js := run(t, os.Environ(), filepath.Join(ours, "ktctl"), "keygen", "--json", "--out", out, "--origin", "kt.example.com/log", "--auditors", auditors)
	var raw struct {
		Auditors []map[string]string `json:"auditors"`
	}
	if err := json.Unmarshal([]byte(js), &raw); err != nil {
		t.Fatalf("ktctl keygen --json: %v\n%s", err, js)
	}
	keys := map[string][2]string{}
	for _, a := range raw.Auditors {
		keys[a["name"]] = [2]string{a["cosignature_vkey"], a["audit_vkey"]}
	}
	return out, keys
}

// unit is what this test reads of a systemd unit.
type unit struct {
	exec  []string          // ExecStart, split at spaces
	env   map[string]string // Environment=
	creds map[string]string // LoadCredential=NAME:PATH
}

func readUnit(t *testing.T, name string) unit {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "deploy", "systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	u := unit{env: map[string]string{}, creds: map[string]string{}}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if !ok || strings.HasPrefix(l, "#") {
			continue
		}
		switch k {
		case "ExecStart":
			u.exec = strings.Fields(v)
		case "Environment":
			ek, ev, _ := strings.Cut(v, "=")
			u.env[ek] = ev
		case "LoadCredential":
			n, p, _ := strings.Cut(v, ":")
			u.creds[n] = p
		}
	}
	if len(u.exec) == 0 {
		t.Fatalf("%s has no ExecStart", name)
	}
	return u
}

// command lays a unit out as a process: its credentials copied to a
// credentials directory (%d), its configuration file (the --config the
// unit names) the given file of deploy/config with rewrite applied, and
// its environment rewritten.
func (tp *topology) command(p *proc, u unit, ours, config string) *exec.Cmd {
	t := tp.t
	t.Helper()
	creds := filepath.Join(tp.tmp, "credentials", p.name)
	if err := os.MkdirAll(creds, 0o700); err != nil {
		t.Fatal(err)
	}
	for n, path := range u.creds {
		b, err := os.ReadFile(tp.rewrite(p, path))
		if err != nil {
			t.Fatalf("%s: LoadCredential=%s: %v", p.name, n, err)
		}
		if err := os.WriteFile(filepath.Join(creds, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var args []string
	for _, a := range u.exec[1:] {
		if c, ok := strings.CutPrefix(a, "--config="); ok {
			b, err := os.ReadFile(filepath.Join(repo, "deploy", "config", config))
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(tp.tmp, "files", p.name, filepath.Base(c))
			os.MkdirAll(filepath.Dir(dst), 0o700)
			if err := os.WriteFile(dst, []byte(tp.rewrite(p, string(b))), 0o600); err != nil {
				t.Fatal(err)
			}
			a = "--config=" + dst
		}
		args = append(args, tp.rewrite(p, a))
	}
	cmd := exec.Command(filepath.Join(ours, filepath.Base(u.exec[0])), args...)
	cmd.Env = os.Environ()
	for k, v := range u.env {
		cmd.Env = append(cmd.Env, k+"="+strings.ReplaceAll(tp.rewrite(p, v), "%d", creds))
	}
	return cmd
}

// TestSystemd starts the units of deploy/systemd on one host as shipped:
// ktd.service with ktd-embedded.yaml and ktauditor.service with
// ktauditor-systemd.yaml, on the keys of the keygen command the units
// document, and runs kt against them.
func TestSystemd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a deployment")
	}
	ours := binaries(t)
	tp := &topology{t: t, tmp: t.TempDir(), exact: map[string]string{}, dial: map[string]string{}}
	// The units' loopback ports (ktd's and ktauditor's defaults) are
	// fresh ones here; the paths are the test's.
	binds := fresh(t, "127.0.0.1:8443", "127.0.0.1:8080", "127.0.0.1:8444", "127.0.0.1:9464", "127.0.0.1:8480", "127.0.0.1:9465")
	keys, vkeys := keygen(t, ours, "ktauditor=http://"+binds["127.0.0.1:8480"])
	mounts := map[string]string{"/etc/kt/keys": keys, "/etc/kt/public": filepath.Join(keys, "public"),
		"/var/lib/kt": filepath.Join(tp.tmp, "kt"), "/var/lib/ktauditor": filepath.Join(tp.tmp, "ktauditor")}
	ap := &proc{name: "ktauditor", binds: binds, mounts: mounts}
	acmd := tp.command(ap, readUnit(t, "ktauditor.service"), ours, "ktauditor-systemd.yaml")
	a, ok, err := testkit.LaunchCmd(t, acmd, "msg=serving")
	if !ok {
		t.Fatalf("ktauditor: %v\n%s", err, a.Logs)
	}
	if !strings.Contains(a.Logs.String(), vkeys["ktauditor"][0]) || !strings.Contains(a.Logs.String(), vkeys["ktauditor"][1]) {
		t.Errorf("ktauditor does not run with the keys keygen made (%v):\n%s", vkeys, a.Logs)
	}
	kp := &proc{name: "ktd", binds: binds, mounts: mounts}
	ku := readUnit(t, "ktd.service")
	kcmd := tp.command(kp, ku, ours, "ktd-embedded.yaml")
	d, ok, err := testkit.LaunchCmd(t, kcmd, `msg="ktd serving"`)
	if !ok {
		t.Fatalf("ktd: %v\n%s", err, d.Logs)
	}
	waitOK(t, "http://"+binds["127.0.0.1:8080"]+"/healthz")
	waitOK(t, "http://"+binds["127.0.0.1:8480"]+"/kt/v1/checkpoint")

	grpcAddr := binds["127.0.0.1:8443"]
	params := run(t, os.Environ(), filepath.Join(ours, "ktctl"), "params", "--grpc", grpcAddr, "--log-key", filepath.Join(keys, "public", "log.vkey"),
		"--policy", filepath.Join(keys, "public", "witness-policy"))
	token := strings.TrimSpace(run(t, kcmd.Env, kcmd.Path, append([]string{"issue-token"}, append(kcmd.Args[1:], "alice@example.com")...)...))
	dir := filepath.Join(tp.tmp, "alice")
	os.MkdirAll(dir, 0o700)
	if err := os.WriteFile(filepath.Join(dir, "params.json"), []byte(params), 0o600); err != nil {
		t.Fatal(err)
	}
	kt := func(args ...string) string {
		return run(t, os.Environ(), filepath.Join(ours, "kt"), append([]string{"--directory", grpcAddr, "--state-file", filepath.Join(dir, "state.json")}, args...)...)
	}
	kt("init")
	kt("register", "alice@example.com", "--token", token)
	// A second device, so that the lookup verifies a new checkpoint.
	bdir := filepath.Join(tp.tmp, "bob")
	os.MkdirAll(bdir, 0o700)
	os.WriteFile(filepath.Join(bdir, "params.json"), []byte(params), 0o600)
	run(t, os.Environ(), filepath.Join(ours, "kt"), "--directory", grpcAddr, "--state-file", filepath.Join(bdir, "state.json"), "init")
	out := run(t, os.Environ(), filepath.Join(ours, "kt"), "--directory", grpcAddr, "--state-file", filepath.Join(bdir, "state.json"), "lookup", "alice@example.com")
	for _, want := range []string{"witness quorum (1 cosignatures)", "(1 audit statements)"} {
		if !strings.Contains(out, want) {
			t.Errorf("kt lookup does not report %q:\n%s", want, out)
		}
	}
	kt("monitor", "--once", "--auditors", "http://"+binds["127.0.0.1:8480"])
	d.Stop(t)
	a.Stop(t)
}

// TestKubernetesAuditorConfig loads deploy/config/ktauditor-kubernetes.yaml
// as the second pod of deploy/kubernetes/ktauditor.yaml does (its
// environment from the manifest, POD_NAME expanded; the Secrets' files
// laid out as the projected volume puts them) on the keys of the keygen
// command secrets.example.yaml documents, and checks that the pod uses
// its own keys.
func TestKubernetesAuditorConfig(t *testing.T) {
	ours := binaries(t)
	b, err := os.ReadFile(filepath.Join(repo, "deploy", "kubernetes", "secrets.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`--auditors (\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("secrets.example.yaml shows no ktctl keygen --auditors")
	}
	keys, vkeys := keygen(t, ours, string(m[1]))
	f, err := os.Open(filepath.Join(repo, "deploy", "kubernetes", "ktauditor.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var env []string
	dec := yaml.NewDecoder(f)
	for {
		var doc struct {
			Kind string
			Spec struct {
				Replicas int
				Template struct {
					Spec struct {
						Containers []struct {
							Env []struct{ Name, Value string }
						}
					}
				}
			}
		}
		if err := dec.Decode(&doc); err != nil {
			break
		}
		if doc.Kind != "StatefulSet" {
			continue
		}
		pod := "ktauditor-" + string(rune('0'+doc.Spec.Replicas-1))
		for _, e := range doc.Spec.Template.Spec.Containers[0].Env {
			v := e.Value
			if e.Name == "POD_NAME" {
				v = pod
			}
			v = strings.ReplaceAll(v, "$(POD_NAME)", pod)
			env = append(env, e.Name+"="+v)
		}
	}
	tp := &topology{t: t, tmp: t.TempDir(), exact: map[string]string{}, dial: map[string]string{}}
	p := &proc{name: "ktauditor-1", binds: map[string]string{}, mounts: map[string]string{"/etc/kt/keys": keys, "/etc/kt/public": filepath.Join(keys, "public"), "/var/lib/kt": filepath.Join(tp.tmp, "data")}}
	src, err := os.ReadFile(filepath.Join(repo, "deploy", "config", "ktauditor-kubernetes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(tp.tmp, "ktauditor.yaml")
	os.WriteFile(cfg, []byte(tp.rewrite(p, string(src))), 0o600)
	e := os.Environ()
	for _, kv := range env {
		e = append(e, tp.rewrite(p, kv))
	}
	// ktd is Ready only once its auditors vouched for an epoch (audit
	// mode: /healthz needs a served epoch), and they vouch after reading
	// the log: the Service they read it through must list not-ready pods.
	m = regexp.MustCompile(`(?m)^\s+url: http://([a-z0-9-]+):8080`).FindSubmatch(src)
	if m == nil {
		t.Fatal("ktauditor-kubernetes.yaml reads no log at a Service on port 8080")
	}
	ktdManifest, err := os.ReadFile(filepath.Join(repo, "deploy", "kubernetes", "ktd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	dec = yaml.NewDecoder(bytes.NewReader(ktdManifest))
	for {
		var svc struct {
			Kind     string
			Metadata struct{ Name string }
			Spec     struct {
				PublishNotReadyAddresses bool `yaml:"publishNotReadyAddresses"`
			}
		}
		if err := dec.Decode(&svc); err != nil {
			break
		}
		if svc.Kind == "Service" && svc.Metadata.Name == string(m[1]) {
			found = true
			if !svc.Spec.PublishNotReadyAddresses {
				t.Errorf("the auditors read the log through Service %s, which lists only Ready ktd pods: neither would ever start", m[1])
			}
		}
	}
	if !found {
		t.Errorf("the auditors read the log at %s, which deploy/kubernetes/ktd.yaml does not define", m[1])
	}
	for i, sub := range []string{"vkey", "audit-vkey"} {
		got := strings.TrimSpace(run(t, e, filepath.Join(ours, "ktauditor"), sub, "--config", cfg))
		if got != vkeys["ktauditor-1"][i] {
			t.Errorf("ktauditor %s of pod ktauditor-1: %q, want its own key %q", sub, got, vkeys["ktauditor-1"][i])
		}
	}
}
