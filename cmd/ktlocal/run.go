package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/internal/keyfile"
	"github.com/keytrans/kt/log"
)

// origin is the directory's log origin: ktd's default.
const origin = "localhost/kt"

// stopTimeout bounds each daemon's graceful shutdown before it is killed.
const stopTimeout = 40 * time.Second

// auditor is one auditor of the deployment.
type auditor struct {
	name, dir, listen, config string
	vkey                      string // tlog-cosignature/v1 verifier key
	auditKey, auditVKey       string // audit mode: the audit key file and its verifier key
}

// deployment is the laid-out data directory.
type deployment struct {
	cfg         *Config
	bin         string
	ktdDir      string
	policy      string
	auditPolicy string // "" without audit mode
	logs        string
	logVKey     string
	recoveryPub ed25519.PublicKey
	auditors    []*auditor
}

// run sets up the data directory, starts the auditors and the directory,
// prints what runs, and waits until ctx is done or a daemon exits.
func run(ctx context.Context, cfg *Config, logger *slog.Logger, out io.Writer) error {
	d := &deployment{cfg: cfg, ktdDir: filepath.Join(cfg.DataDir, "ktd"),
		policy: filepath.Join(cfg.DataDir, "witness-policy"), logs: filepath.Join(cfg.DataDir, "logs")}
	if cfg.Audit {
		d.auditPolicy = filepath.Join(cfg.DataDir, "audit-policy")
	}
	for _, dir := range []string{cfg.DataDir, d.ktdDir, d.logs} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	continuing := exists(filepath.Join(d.ktdDir, "log"))
	if err := d.checkFree(); err != nil {
		return err
	}
	if err := d.binaries(ctx, out); err != nil {
		return err
	}
	if err := d.keys(); err != nil {
		return err
	}
	if err := d.writeConfigs(); err != nil {
		return err
	}

	var procs []*proc
	defer func() {
		// The directory first (it publishes through the auditors), then
		// the auditors.
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop(logger)
		}
	}()
	exited := make(chan *proc, 3)
	for _, a := range d.auditors {
		p, err := d.start(a.name, exited, "ktauditor", "--config", a.config)
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	args := []string{
		"--data-dir", d.ktdDir,
		"--grpc-listen", cfg.GRPCListen,
		"--http-listen", cfg.HTTPListen,
		"--operator-listen", cfg.OperatorListen,
		"--metrics-listen=",
		"--witness-policy-file", d.policy,
		"--directory-epoch-interval", cfg.EpochInterval.String(),
		"--directory-heartbeat-interval", cfg.HeartbeatInterval.String(),
	}
	if d.auditPolicy != "" {
		args = append(args, "--audit-policy", d.auditPolicy)
	}
	p, err := d.start("ktd", exited, "ktd", args...)
	if err != nil {
		return err
	}
	procs = append(procs, p)

	params, err := d.waitReady(ctx, exited)
	if err != nil {
		return err
	}
	d.banner(out, params, continuing)
	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "\nstopping: the directory, then the auditors")
		return nil
	case p := <-exited:
		return p.failure()
	}
}

// checkFree fails when a listen address is taken: most likely another
// ktlocal or ktd is running, whose answers must not be mistaken for ours.
func (d *deployment) checkFree() error {
	for _, a := range append([]string{d.cfg.GRPCListen, d.cfg.HTTPListen, d.cfg.OperatorListen}, d.cfg.AuditorListen...) {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("%s is taken (is another ktlocal or ktd running?): %w", a, err)
		}
		ln.Close()
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// binaries finds or builds ktd, ktauditor, kt and ktctl.
func (d *deployment) binaries(ctx context.Context, out io.Writer) error {
	names := []string{"ktd", "ktauditor", "kt", "ktctl"}
	if d.cfg.BinDir != "" {
		d.bin = d.cfg.BinDir
		for _, n := range names {
			if !exists(filepath.Join(d.bin, n)) {
				return fmt.Errorf("bin_dir %s has no %s", d.bin, n)
			}
		}
		return nil
	}
	d.bin = filepath.Join(d.cfg.DataDir, "bin")
	mod, err := os.ReadFile(filepath.Join(d.cfg.Source, "go.mod"))
	if err != nil || !bytes.HasPrefix(mod, []byte("module github.com/keytrans/kt\n")) {
		return fmt.Errorf("%s is not the kt source tree (no go.mod of github.com/keytrans/kt): run ktlocal from the repository root, or set --source or --bin-dir", d.cfg.Source)
	}
	abs, err := filepath.Abs(d.bin)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "building %s into %s (the first build takes a minute or two)\n", strings.Join(names, ", "), d.bin)
	args := []string{"build", "-o", abs + string(filepath.Separator)}
	for _, n := range names {
		args = append(args, "./cmd/"+n)
	}
	cmd := exec.CommandContext(ctx, goTool(), args...)
	cmd.Dir = d.cfg.Source
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build: %w", err)
	}
	return nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	return "go"
}

// keys creates, on first start, the keys other daemons must know before
// they start: the auditors' cosigning keys (for the witness policy) and,
// in audit mode, their audit keys (for the audit policy), and the
// directory's log and recovery keys (for the auditors). ktd creates its
// VRF and enrollment-token keys itself.
func (d *deployment) keys() error {
	for i, listen := range d.cfg.AuditorListen {
		name := fmt.Sprintf("auditor-%d", i+1)
		a := &auditor{name: name, dir: filepath.Join(d.cfg.DataDir, name), listen: listen}
		a.config = filepath.Join(a.dir, "ktauditor.json")
		if err := os.MkdirAll(a.dir, 0o700); err != nil {
			return err
		}
		var err error
		if a.vkey, err = log.LoadOrCreateCosignerKey(filepath.Join(a.dir, "auditor.key"), "localhost/"+name); err != nil {
			return fmt.Errorf("%s key: %w", name, err)
		}
		if d.cfg.Audit {
			// SPEC(design.md 14.1): the audit key is distinct from the
			// witness key, named after it + "/audit".
			a.auditKey = filepath.Join(a.dir, "audit.key")
			if a.auditVKey, err = log.LoadOrCreateCosignerKey(a.auditKey, "localhost/"+name+"/audit"); err != nil {
				return fmt.Errorf("%s audit key: %w", name, err)
			}
		}
		d.auditors = append(d.auditors, a)
	}
	logKey := filepath.Join(d.ktdDir, "log.key")
	if _, _, err := log.LoadOrCreateSigner(logKey, origin); err != nil {
		return err
	}
	skey, err := os.ReadFile(logKey)
	if err != nil {
		return err
	}
	if d.logVKey, err = log.VerifierKey(string(skey)); err != nil {
		return fmt.Errorf("%s: %w", logKey, err)
	}
	// The format of ktd's directory.recovery_key_file.
	recKey := filepath.Join(d.ktdDir, "recovery.key")
	text, _, err := keyfile.LoadOrCreate(recKey, func() (string, error) {
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return "", err
		}
		return "kt-recovery-private:" + base64.StdEncoding.EncodeToString(seed), nil
	})
	if err != nil {
		return err
	}
	text = strings.TrimSpace(text)
	if s, ok := strings.CutPrefix(text, "kt-recovery-private:"); ok {
		seed, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil || len(seed) != ed25519.SeedSize {
			return fmt.Errorf("%s: malformed private key", recKey)
		}
		d.recoveryPub = ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	} else if s, ok := strings.CutPrefix(text, "kt-recovery-public:"); ok {
		b, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return fmt.Errorf("%s: malformed public key", recKey)
		}
		d.recoveryPub = b
	} else {
		return fmt.Errorf("%s: not a recovery key file", recKey)
	}
	return nil
}

// writeConfigs writes the witness policy, the audit policy and the
// auditors' configuration files, at every start (the addresses may have
// changed; the keys do not).
func (d *deployment) writeConfigs() error {
	var p strings.Builder
	fmt.Fprintf(&p, "# Written by ktlocal: the directory publishes a checkpoint only once both\n# auditors cosigned it, and clients accept only such checkpoints.\n")
	fmt.Fprintf(&p, "log %s\n", d.logVKey)
	var members []string
	for _, a := range d.auditors {
		fmt.Fprintf(&p, "witness %s %s http://%s\n", a.name, a.vkey, a.listen)
		members = append(members, a.name)
	}
	fmt.Fprintf(&p, "group auditors 2 %s\nquorum auditors\n", strings.Join(members, " "))
	if err := os.WriteFile(d.policy, []byte(p.String()), 0o644); err != nil {
		return err
	}
	if d.auditPolicy != "" {
		// SPEC(design.md 14.3)
		var ap strings.Builder
		fmt.Fprintf(&ap, "# Written by ktlocal: the directory serves an epoch only once both auditors\n# vouched for it (audit statements), and clients accept only such epochs.\n")
		for _, a := range d.auditors {
			fmt.Fprintf(&ap, "auditor %s %s http://%s\n", a.name, a.auditVKey, a.listen)
		}
		fmt.Fprintf(&ap, "group auditors 2 %s\nquorum auditors\n", strings.Join(members, " "))
		if err := os.WriteFile(d.auditPolicy, []byte(ap.String()), 0o644); err != nil {
			return err
		}
	}
	for _, a := range d.auditors {
		type logCfg struct {
			Origin            string `json:"origin"`
			VKey              string `json:"vkey"`
			URL               string `json:"url"`
			RecoveryKey       string `json:"recovery_key"`
			WitnessPolicyFile string `json:"witness_policy_file"`
			Heartbeat         string `json:"heartbeat"`
		}
		type peerCfg struct {
			Name string `json:"name"`
			URL  string `json:"url"`
		}
		c := map[string]any{
			"data_dir":        a.dir,
			"listen":          a.listen,
			"metrics_listen":  "",
			"name":            "localhost/" + a.name,
			"poll_interval":   "1s",
			"gossip_interval": d.cfg.GossipInterval.String(),
			"logs": []logCfg{{
				Origin: origin, VKey: d.logVKey, URL: "http://" + d.cfg.HTTPListen,
				RecoveryKey:       "kt-recovery-public:" + base64.StdEncoding.EncodeToString(d.recoveryPub),
				WitnessPolicyFile: d.policy, Heartbeat: d.cfg.HeartbeatInterval.String(),
			}},
		}
		var peers []peerCfg
		for _, o := range d.auditors {
			if o != a {
				peers = append(peers, peerCfg{o.name, "http://" + o.listen})
			}
		}
		c["peers"] = peers
		if a.auditKey != "" {
			c["audit_key"] = a.auditKey
		}
		b, err := json.MarshalIndent(c, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(a.config, append(b, '\n'), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// proc is a running daemon.
type proc struct {
	name, logFile string
	cmd           *exec.Cmd
	done          chan struct{}
	err           error // set before done is closed
}

func (d *deployment) start(name string, exited chan<- *proc, bin string, args ...string) (*proc, error) {
	logFile := filepath.Join(d.logs, name+".log")
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(d.bin, bin), args...)
	cmd.Stdout, cmd.Stderr = f, f
	ownGroup(cmd)
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, logFile: logFile, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
		exited <- p
	}()
	return p, nil
}

// stop sends SIGTERM and waits for a graceful shutdown, killing the
// process after stopTimeout.
func (p *proc) stop(logger *slog.Logger) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			logger.Warn("stopped with an error", "daemon", p.name, "err", p.err, "log", p.logFile)
		}
	case <-time.After(stopTimeout):
		logger.Warn("killed: no graceful shutdown in time", "daemon", p.name, "log", p.logFile)
		p.cmd.Process.Kill()
		<-p.done
	}
}

// failure describes a daemon that exited by itself, with its last log
// lines.
func (p *proc) failure() error {
	b, _ := os.ReadFile(p.logFile)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return fmt.Errorf("%s exited (%v); the end of %s:\n%s", p.name, p.err, p.logFile, strings.Join(lines, "\n"))
}

// waitReady waits until the directory serves a cosigned checkpoint and
// both auditors have audited one, and returns the directory's parameters.
func (d *deployment) waitReady(ctx context.Context, exited <-chan *proc) (*ktpb.Parameters, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StartTimeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	ok := func(url string) bool {
		resp, err := hc.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	urls := []string{"http://" + d.cfg.HTTPListen + "/healthz"}
	for _, a := range d.auditors {
		urls = append(urls, "http://"+a.listen+"/kt/v1/checkpoint")
	}
	for len(urls) > 0 {
		if ok(urls[0]) {
			urls = urls[1:]
			continue
		}
		select {
		case p := <-exited:
			return nil, p.failure()
		case <-ctx.Done():
			return nil, fmt.Errorf("not ready after %v (waiting for %s); see the logs in %s", d.cfg.StartTimeout, urls[0], d.logs)
		case <-time.After(200 * time.Millisecond):
		}
	}
	conn, err := grpc.NewClient(d.cfg.GRPCListen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	params, err := ktpb.NewDirectoryClient(conn).GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		return nil, fmt.Errorf("the directory's parameters: %w", err)
	}
	if params.GetLogPublicKey() != d.logVKey {
		return nil, errors.New("the directory's log key is not the one in its data directory")
	}
	return params, nil
}

func (d *deployment) banner(w io.Writer, params *ktpb.Parameters, continuing bool) {
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	state := "a new log"
	if continuing {
		state = "continuing the log already there"
	}
	fmt.Fprintf(bw, "\nkt is running: a directory and two auditors, everything in %s (%s).\n\n", d.cfg.DataDir, state)
	fmt.Fprintf(bw, "directory (ktd, data %s, log %s)\n", d.ktdDir, filepath.Join(d.logs, "ktd.log"))
	fmt.Fprintf(bw, "  gRPC API          %s\n", d.cfg.GRPCListen)
	fmt.Fprintf(bw, "  HTTP read API     http://%s  (C2SP tlog-tiles at /checkpoint, read API at /log/v1/)\n", d.cfg.HTTPListen)
	fmt.Fprintf(bw, "  operator gRPC     %s  (account recovery)\n", d.cfg.OperatorListen)
	fmt.Fprintf(bw, "  origin            %s\n", params.GetOrigin())
	fmt.Fprintf(bw, "  log key           %s\n", params.GetLogPublicKey())
	fmt.Fprintf(bw, "  VRF key           %s\n", params.GetVrfPublicKey())
	fmt.Fprintf(bw, "  recovery key      kt-recovery-public:%s  (private key in %s)\n", base64.StdEncoding.EncodeToString(params.GetRecoveryPublicKey()), filepath.Join(d.ktdDir, "recovery.key"))
	for _, a := range d.auditors {
		fmt.Fprintf(bw, "%s (ktauditor, data %s, log %s)\n", a.name, a.dir, filepath.Join(d.logs, a.name+".log"))
		fmt.Fprintf(bw, "  HTTP              http://%s  (status page; witness, gossip and evidence endpoints)\n", a.listen)
		fmt.Fprintf(bw, "  cosigning key     %s\n", a.vkey)
		if a.auditVKey != "" {
			fmt.Fprintf(bw, "  audit key         %s\n", a.auditVKey)
		}
	}
	fmt.Fprintf(bw, "witness policy      %s: checkpoints need both auditors' cosignatures\n", d.policy)
	if d.auditPolicy != "" {
		fmt.Fprintf(bw, "audit policy        %s: lookups are served from epochs both auditors vouched for\n", d.auditPolicy)
	}
	fmt.Fprintln(bw)
	fmt.Fprintf(bw, "Next, in another terminal in this directory (walk-through: docs/quickstart.md):\n\n")
	bin := d.bin
	if !filepath.IsAbs(bin) {
		bin = "$PWD/" + filepath.ToSlash(filepath.Clean(bin))
	}
	ktFlags, ktctlFlags := nextFlags(d.cfg)
	fmt.Fprintf(bw, "  export PATH=\"%s:$PATH\"\n", bin)
	fmt.Fprintf(bw, "  kt%s --state-file %s init\n", ktFlags, filepath.Join(d.cfg.DataDir, "alice", "state.json"))
	fmt.Fprintf(bw, "  kt%s --state-file %s register alice@example.com --token \"$(ktd issue-token --data-dir %s alice@example.com)\"\n", ktFlags, filepath.Join(d.cfg.DataDir, "alice", "state.json"), d.ktdDir)
	fmt.Fprintf(bw, "  ktctl%s checkpoint --data-dir %s --policy %s\n\n", ktctlFlags, d.ktdDir, d.policy)
	fmt.Fprintf(bw, "Ctrl-C stops everything; running ktlocal again continues where it stopped.\n")
}

// Addresses kt and ktctl use when given none (ktd's defaults).
const (
	defaultGRPC = "127.0.0.1:8443"
	defaultHTTP = "127.0.0.1:8080"
)

// nextFlags are the flags the printed kt and ktctl commands need to reach
// a deployment on other than the default addresses (each with a leading
// space; empty on the defaults).
func nextFlags(cfg *Config) (kt, ktctl string) {
	if cfg.GRPCListen != defaultGRPC {
		kt = " --directory " + cfg.GRPCListen
	}
	if cfg.HTTPListen != defaultHTTP {
		ktctl = " --log-url http://" + cfg.HTTPListen
	}
	return kt, ktctl
}
