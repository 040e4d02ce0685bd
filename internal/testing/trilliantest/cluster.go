package trilliantest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Etcd is a single-member etcd for the signers' master election, on
// loopback, stopped when the test ends.
type Etcd struct {
	// Addr is the client address, host:port (what --etcd_servers takes).
	Addr string
	proc *process
}

// EtcdBinary finds etcd: KT_ETCD_BIN, else etcd on PATH (Debian's
// etcd-server package). Missing, it skips the test, or fails it under
// CI=true, where .ci/run installs it.
func EtcdBinary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("KT_ETCD_BIN"); p != "" {
		return p
	}
	p, err := exec.LookPath("etcd")
	if err == nil {
		return p
	}
	msg := "etcd is not installed: `apt-get install -y etcd-server` (Debian 12), or set KT_ETCD_BIN"
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg + " (CI=true: this test must run)")
	}
	tb.Skip(msg)
	return ""
}

// StartEtcd runs a fresh single-member etcd in a temporary directory and
// waits until it is healthy.
func StartEtcd(tb testing.TB) *Etcd {
	tb.Helper()
	bin := EtcdBinary(tb)
	dir := tb.TempDir()
	client, peer := freePort(tb), freePort(tb)
	p := startProcess(tb, dir, bin, []string{
		"--name=kt-test",
		"--data-dir=" + filepath.Join(dir, "data"),
		"--listen-client-urls=http://" + client,
		"--advertise-client-urls=http://" + client,
		"--listen-peer-urls=http://" + peer,
		"--initial-advertise-peer-urls=http://" + peer,
		"--initial-cluster=kt-test=http://" + peer,
		"--log-level=warn",
	})
	tb.Cleanup(p.kill)
	waitHTTP(tb, "etcd", "http://"+client+"/health", `"health":"true"`)
	return &Etcd{Addr: client, proc: p}
}

// ClusterOptions configure StartCluster.
type ClusterOptions struct {
	// Options tune every server and signer, as for Start.
	Options
	// Servers and Signers are how many trillian_log_server and
	// trillian_log_signer processes to start (default 2 each).
	Servers, Signers int
	// MasterHoldInterval is the signers' --master_hold_interval: how long
	// a master keeps a tree before it resigns on its own, to let another
	// instance take a turn (default 1h, so that only a death moves
	// mastership during a test; Trillian's default is 60s plus up to
	// 120s of jitter, set to 0 here).
	MasterHoldInterval time.Duration
}

// Cluster is a Trillian cluster on loopback: several log servers and
// several log signers over one database, the signers electing one master
// per tree through etcd.
//
// A master that dies keeps its mastership until its etcd session's lease
// runs out: Trillian v1.8.0 uses etcd's default session TTL of 60 seconds
// and has no flag for it, so a takeover after SIGKILL takes up to a minute.
// A signer that stops cleanly (SIGTERM) resigns at once.
type Cluster struct {
	// DSN is the database's DSN.
	DSN string
	// Etcd runs the election.
	Etcd *Etcd
	// Servers and Signers are the processes, in start order.
	Servers, Signers []*Process

	tb                   testing.TB
	opts                 ClusterOptions
	serverBin, signerBin string
	logDir               string
	lockPath             string
}

// Process is one Trillian binary of a Cluster.
type Process struct {
	// Name is "server-N" or "signer-N".
	Name string
	// RPC and HTTP are its gRPC and HTTP (/healthz, /metrics) addresses.
	RPC, HTTP string
	// PID is its process ID.
	PID  int
	proc *process
}

// Kill kills the process with SIGKILL, as a crash would, and waits for it
// to exit. Killing twice is a no-op.
func (p *Process) Kill() { p.proc.kill() }

// Exited reports whether the process has exited (killed or crashed).
func (p *Process) Exited() bool {
	select {
	case <-p.proc.exited:
		return true
	default:
		return false
	}
}

// IsMaster reports whether this signer is master for the tree, from its
// is_master metric.
func (p *Process) IsMaster(ctx context.Context, treeID int64) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTP+"/metrics", nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("%s /metrics: %s", p.Name, resp.Status)
	}
	want := fmt.Sprintf(`is_master{logid="%d"}`, treeID)
	s := bufio.NewScanner(resp.Body)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), want+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return err == nil && f == 1, err
		}
	}
	return false, s.Err()
}

// StartCluster starts etcd, opts.Servers log servers and opts.Signers log
// signers with etcd election over a fresh database, and waits until all
// are healthy. Everything is stopped and removed when the test ends. It
// skips like Start when MariaDB is unreachable, and when etcd is missing
// (failing instead under CI=true).
func StartCluster(tb testing.TB, opts ClusterOptions) *Cluster {
	tb.Helper()
	opts.Options = opts.Options.withDefaults()
	if opts.Servers == 0 {
		opts.Servers = 2
	}
	if opts.Signers == 0 {
		opts.Signers = 2
	}
	if opts.MasterHoldInterval == 0 {
		opts.MasterHoldInterval = time.Hour
	}
	c := &Cluster{tb: tb, opts: opts}
	c.DSN = NewDatabase(tb) // first: skips before the slow build
	c.Etcd = StartEtcd(tb)
	c.serverBin, c.signerBin = Binaries(tb)
	c.logDir = tb.TempDir()
	// One election directory per database, so that clusters of parallel
	// tests never share an election.
	c.lockPath = "/kt-test/" + filepath.Base(c.logDir) + "/election"
	tb.Cleanup(func() {
		for _, p := range c.Signers {
			p.Kill()
		}
		for _, p := range c.Servers {
			p.Kill()
		}
	})
	for range opts.Servers {
		c.StartServer()
	}
	for range opts.Signers {
		c.StartSigner()
	}
	return c
}

// common are the flags of both binaries.
func (c *Cluster) common() []string {
	return []string{
		"--storage_system=mysql",
		"--quota_system=" + c.opts.QuotaSystem,
		"--mysql_uri=" + c.DSN,
		"--logtostderr",
	}
}

// StartServer starts one more log server and waits until it is healthy.
func (c *Cluster) StartServer() *Process {
	c.tb.Helper()
	p := &Process{Name: fmt.Sprintf("server-%d", len(c.Servers)+1), RPC: freePort(c.tb), HTTP: freePort(c.tb)}
	p.proc = startProcess(c.tb, c.logDir, c.serverBin, append([]string{
		"--rpc_endpoint=" + p.RPC,
		"--http_endpoint=" + p.HTTP,
		"--tree_gc=false",
	}, append(c.common(), c.opts.serverFlags()...)...))
	p.PID = p.proc.pid
	waitHealthy(c.tb, p.Name, p.HTTP)
	c.Servers = append(c.Servers, p)
	return p
}

// StartSigner starts one more log signer, taking part in the election,
// and waits until it is healthy (not until it is master of anything).
func (c *Cluster) StartSigner() *Process {
	c.tb.Helper()
	p := &Process{Name: fmt.Sprintf("signer-%d", len(c.Signers)+1), RPC: freePort(c.tb), HTTP: freePort(c.tb)}
	p.proc = startProcess(c.tb, c.logDir, c.signerBin, append([]string{
		"--rpc_endpoint=" + p.RPC,
		"--http_endpoint=" + p.HTTP,
		"--election_system=etcd",
		"--etcd_servers=" + c.Etcd.Addr,
		"--lock_file_path=" + c.lockPath,
		"--pre_election_pause=10ms",
		"--master_hold_interval=" + c.opts.MasterHoldInterval.String(),
		"--master_hold_jitter=0s",
	}, append(c.common(), c.opts.signerFlags()...)...))
	p.PID = p.proc.pid
	waitHealthy(c.tb, p.Name, p.HTTP)
	c.Signers = append(c.Signers, p)
	return p
}

// ServerAddrs returns the gRPC addresses of the servers that have not
// exited.
func (c *Cluster) ServerAddrs() []string {
	var addrs []string
	for _, p := range c.Servers {
		if !p.Exited() {
			addrs = append(addrs, p.RPC)
		}
	}
	return addrs
}

// Master waits, within ctx, until exactly one live signer reports
// mastership of the tree, and returns it. Two live masters at once would
// break Trillian's single-writer assumption and fail the test.
func (c *Cluster) Master(ctx context.Context, treeID int64) (*Process, error) {
	for {
		var masters []*Process
		var lastErr error
		for _, p := range c.Signers {
			if p.Exited() {
				continue
			}
			ok, err := p.IsMaster(ctx, treeID)
			if err != nil {
				lastErr = err
				continue
			}
			if ok {
				masters = append(masters, p)
			}
		}
		if len(masters) > 1 {
			return nil, fmt.Errorf("tree %d has %d masters at once: %s and %s", treeID, len(masters), masters[0].Name, masters[1].Name)
		}
		if len(masters) == 1 {
			return masters[0], nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no signer became master of tree %d: %w (last error: %v)", treeID, ctx.Err(), lastErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitHTTP waits until url answers 200 with a body containing want.
func waitHTTP(tb testing.TB, name, url, want string) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			var b strings.Builder
			_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(b.String(), want) {
				return
			}
			err = fmt.Errorf("status %s, body %q", resp.Status, b.String())
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatalf("%s did not become healthy at %s: %v", name, url, last)
}
