// Package trilliantest runs real Trillian for tests: it builds
// trillian_log_server and trillian_log_signer from the Trillian version that
// go.mod pins, creates a fresh MariaDB/MySQL database with Trillian's schema,
// and starts both binaries on loopback ports, stopping them and dropping the
// database when the test ends.
//
// # Environment
//
//   - KT_MYSQL_DSN: a go-sql-driver/mysql DSN of a user that may create
//     databases, without a database name (default "root@tcp(127.0.0.1:3306)/",
//     the root user without a password over TCP). When the server cannot be
//     reached, tests skip with a message saying how to enable them, or
//     fail under CI=true.
//   - KT_TRILLIAN_BIN: the directory caching the built binaries (default
//     $(go env GOCACHE)/../kt-trillian-<version>). A directory holding both
//     binaries is reused without rebuilding.
//
// Building the binaries takes about two minutes the first time; it needs
// the Go toolchain and the module proxy (or a populated module cache).
package trilliantest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const (
	trillianModule = "github.com/google/trillian"
	serverCmd      = "trillian_log_server"
	signerCmd      = "trillian_log_signer"
	defaultDSN     = "root@tcp(127.0.0.1:3306)/"
)

// Options tune the Trillian processes Start runs. The defaults favour low
// latency and high throughput on a small test machine; see each field for
// the trade-off.
type Options struct {
	// SequencerInterval is the signer's --sequencer_interval (default
	// 20ms): how often it integrates queued leaves. It is most of an
	// Append's latency (half of it on average), and, for callers that wait
	// for each Append before the next, it bounds their throughput. Each
	// pass costs the signer and the database a few queries even when
	// nothing is queued, so shorter intervals burn idle CPU.
	SequencerInterval time.Duration
	// BatchSize is the signer's --batch_size (default 1000, Trillian's):
	// the most leaves integrated per tree per pass, so throughput is at
	// most BatchSize per SequencerInterval, 50,000 entries/s with the
	// defaults, far above what QueueLeaf sustains on a test machine. A
	// pass is one database transaction: larger batches make longer passes
	// (and longer waits for the Appends in them) only when a backlog
	// builds up.
	BatchSize int
	// NumSequencers is the signer's --num_sequencers (default 1): how many
	// trees it integrates in parallel. One tree is always integrated by
	// one sequencer, so more only helps tests with several busy trees.
	NumSequencers int
	// MaxConns is the server's --mysql_max_conns (default 64): the most
	// database connections it opens; requests beyond wait for one. It
	// keeps a test from exhausting a shared server's max_connections
	// (MariaDB's default is 151).
	MaxConns int
	// MaxIdleConns is the server's --mysql_max_idle_conns (default 32):
	// the database connections it keeps open between requests. Below the
	// number of concurrent QueueLeaf calls (trillian.Config's
	// QueueParallelism, default 32), the server opens and closes a
	// connection for many calls; Go's database/sql default is 2.
	MaxIdleConns int
	// QuotaSystem is both binaries' --quota_system (default "mysql", which
	// refuses writes once the queue is long, at the price of extra queries
	// per write; "noop" saves them).
	QuotaSystem string
}

// Env is a running Trillian. It is not safe for concurrent use.
type Env struct {
	// Addr is the gRPC address of trillian_log_server, on 127.0.0.1.
	Addr string
	// Conn is a connection to Addr, closed when the test ends.
	Conn *grpc.ClientConn
	// DSN is the database's DSN, as the binaries use it.
	DSN string

	tb                   testing.TB
	opts                 Options
	serverBin, signerBin string
	logDir               string
	procs                []*process // running, in start order
}

// module describes the pinned Trillian module.
type module struct {
	Version string
	Dir     string
}

var (
	modOnce sync.Once
	mod     module
	modErr  error
)

// trillianModuleInfo finds the Trillian version go.mod pins and its source
// directory, downloading it into the module cache if needed.
func trillianModuleInfo() (module, error) {
	modOnce.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-json", trillianModule).Output()
		if err != nil {
			modErr = fmt.Errorf("go list -m %s: %w%s", trillianModule, err, stderrOf(err))
			return
		}
		if err := json.Unmarshal(out, &mod); err != nil {
			modErr = fmt.Errorf("go list -m %s: %w", trillianModule, err)
			return
		}
		if mod.Dir == "" {
			out, err := exec.Command("go", "mod", "download", "-json", trillianModule+"@"+mod.Version).Output()
			if err != nil {
				modErr = fmt.Errorf("go mod download %s: %w%s", trillianModule, err, stderrOf(err))
				return
			}
			if err := json.Unmarshal(out, &mod); err != nil {
				modErr = err
			}
		}
	})
	return mod, modErr
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return ": " + strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}

// binDir is where the binaries of version are cached.
func binDir(version string) (string, error) {
	if d := os.Getenv("KT_TRILLIAN_BIN"); d != "" {
		return d, nil
	}
	out, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOCACHE: %w", err)
	}
	cache := strings.TrimSpace(string(out))
	if cache == "" || cache == "off" {
		return "", errors.New("GOCACHE is off; set KT_TRILLIAN_BIN to a directory for the Trillian binaries")
	}
	return filepath.Join(filepath.Dir(cache), "kt-trillian-"+version), nil
}

var buildMu sync.Mutex

// Binaries returns the paths of trillian_log_server and trillian_log_signer,
// building them first unless the cache directory holds both.
func Binaries(tb testing.TB) (server, signer string) {
	tb.Helper()
	m, err := trillianModuleInfo()
	if err != nil {
		tb.Fatalf("finding the pinned Trillian version: %v", err)
	}
	dir, err := binDir(m.Version)
	if err != nil {
		tb.Fatal(err)
	}
	server, signer = filepath.Join(dir, serverCmd), filepath.Join(dir, signerCmd)
	buildMu.Lock()
	defer buildMu.Unlock()
	if isFile(server) && isFile(signer) {
		return server, signer
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	// Build into a private directory and rename, so that a concurrent
	// build (another test package) never sees a half-written binary. `go
	// install pkg@version` builds with Trillian's own go.mod, so the
	// binaries are exactly those of the pinned release.
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		tb.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	tb.Logf("building Trillian %s binaries into %s (once; about two minutes)", m.Version, dir)
	start := time.Now()
	// -s -w: no symbol tables or DWARF, which makes linking the two
	// 100 MB binaries noticeably faster.
	cmd := exec.Command("go", "install", "-ldflags=-s -w",
		trillianModule+"/cmd/"+serverCmd+"@"+m.Version,
		trillianModule+"/cmd/"+signerCmd+"@"+m.Version)
	cmd.Dir = tmp // outside any module
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=-buildvcs=false", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("building Trillian %s: %v\n%s", m.Version, err, out)
	}
	for _, name := range []string{serverCmd, signerCmd} {
		if err := os.Rename(filepath.Join(tmp, name), filepath.Join(dir, name)); err != nil {
			tb.Fatal(err)
		}
	}
	tb.Logf("built Trillian %s in %v", m.Version, time.Since(start).Round(time.Second))
	return server, signer
}

func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// adminDSN is the DSN of a user that can create databases, and whether it
// came from KT_MYSQL_DSN.
func adminDSN() (*mysql.Config, bool, error) {
	dsn, fromEnv := os.LookupEnv("KT_MYSQL_DSN")
	if !fromEnv || dsn == "" {
		dsn, fromEnv = defaultDSN, false
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fromEnv, fmt.Errorf("KT_MYSQL_DSN %q: %w", dsn, err)
	}
	if cfg.Net != "tcp" {
		return nil, fromEnv, fmt.Errorf("KT_MYSQL_DSN %q: Trillian's binaries need a TCP address, not %q", dsn, cfg.Net)
	}
	cfg.DBName = ""
	cfg.Timeout = 3 * time.Second
	return cfg, fromEnv, nil
}

// socketPaths are where Debian's MariaDB and MySQL put their socket.
var socketPaths = []string{"/run/mysqld/mysqld.sock", "/var/run/mysqld/mysqld.sock"}

// skipMessage says how to enable the tests that need MariaDB.
func skipMessage(cfg *mysql.Config, err error) string {
	return fmt.Sprintf("MariaDB/MySQL is not reachable at %s as user %q (%v). "+
		"To run this test, start MariaDB on 127.0.0.1:3306 with a root user without password "+
		"(e.g. `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd`, "+
		"or `apt-get install -y mariadb-server`), or set KT_MYSQL_DSN to a user that may create databases, "+
		"e.g. KT_MYSQL_DSN='kt:secret@tcp(127.0.0.1:3306)/'", cfg.Addr, cfg.User, err)
}

// connect opens an administrative connection. It returns the connection,
// and the configuration that Trillian's binaries use (over TCP) and that
// removes the database afterwards. When root cannot log in over TCP (as
// with Debian's default unix_socket authentication), it falls back to root
// over the local socket and creates a user with a password for the
// binaries. ok is false, with the reason, when MariaDB is not reachable.
func connect(ctx context.Context) (admin *sql.DB, adminCfg, tcpCfg *mysql.Config, ok bool, reason string, err error) {
	cfg, fromEnv, err := adminDSN()
	if err != nil {
		return nil, nil, nil, false, "", err
	}
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, nil, nil, false, "", err
	}
	pingErr := db.PingContext(ctx)
	if pingErr == nil {
		return db, cfg, cfg, true, "", nil
	}
	db.Close()
	var myErr *mysql.MySQLError
	if fromEnv || !errors.As(pingErr, &myErr) {
		return nil, nil, nil, false, skipMessage(cfg, pingErr), nil
	}
	// The server answered over TCP but refused root: try the socket.
	for _, path := range socketPaths {
		sc := mysql.NewConfig()
		sc.User, sc.Net, sc.Addr, sc.Timeout = "root", "unix", path, 3*time.Second
		db, err := sql.Open("mysql", sc.FormatDSN())
		if err != nil {
			continue
		}
		if db.PingContext(ctx) == nil {
			return db, sc, nil, true, "", nil
		}
		db.Close()
	}
	return nil, nil, nil, false, skipMessage(cfg, pingErr), nil
}

// NewDatabase creates a database with a unique name, loads Trillian's MySQL
// schema into it, and returns the DSN (over TCP) that Trillian's binaries
// use; the database (and a user created for it) is dropped when the test
// ends. The test is skipped when MariaDB/MySQL cannot be reached.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, adminCfg, tcpCfg, ok, reason, err := connect(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if !ok {
		if os.Getenv("CI") == "true" {
			// .ci/run starts MariaDB: under CI a missing database is a
			// failure, never a skip.
			tb.Fatal(reason + " (CI=true: this test must run)")
		}
		tb.Skip(reason)
	}
	defer admin.Close()

	m, err := trillianModuleInfo()
	if err != nil {
		tb.Fatalf("finding the pinned Trillian version: %v", err)
	}
	schema, err := os.ReadFile(filepath.Join(m.Dir, "storage", "mysql", "schema", "storage.sql"))
	if err != nil {
		tb.Fatalf("reading Trillian's schema: %v", err)
	}

	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	name := "kt_trillian_" + hex.EncodeToString(suffix[:])
	var cleanup []string
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		db, err := sql.Open("mysql", adminCfg.FormatDSN())
		if err != nil {
			tb.Errorf("dropping database %s: %v", name, err)
			return
		}
		defer db.Close()
		for _, stmt := range cleanup {
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				tb.Errorf("%s: %v", stmt, err)
			}
		}
	})
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("creating database: %v", err)
	}
	cleanup = append(cleanup, "DROP DATABASE IF EXISTS "+name)

	if tcpCfg == nil {
		// Root only logs in over the socket: a user of this database,
		// with a password, for the binaries.
		var pw [16]byte
		_, _ = rand.Read(pw[:])
		password := hex.EncodeToString(pw[:])
		user := fmt.Sprintf("'%s'@'%%'", name)
		for _, stmt := range []string{
			fmt.Sprintf("CREATE USER %s IDENTIFIED BY '%s'", user, password),
			fmt.Sprintf("GRANT ALL PRIVILEGES ON %s.* TO %s", name, user),
		} {
			if _, err := admin.ExecContext(ctx, stmt); err != nil {
				tb.Fatalf("creating a database user for Trillian: %v", err)
			}
			if strings.HasPrefix(stmt, "CREATE USER") {
				cleanup = append([]string{"DROP USER IF EXISTS " + user}, cleanup...)
			}
		}
		tcpCfg = mysql.NewConfig()
		tcpCfg.User, tcpCfg.Passwd, tcpCfg.Net, tcpCfg.Addr = name, password, "tcp", "127.0.0.1:3306"
	}

	loadCfg := adminCfg.Clone()
	loadCfg.DBName = name
	loadCfg.MultiStatements = true
	db, err := sql.Open("mysql", loadCfg.FormatDSN())
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, string(schema)); err != nil {
		tb.Fatalf("loading Trillian's schema into %s: %v", name, err)
	}

	dbCfg := tcpCfg.Clone()
	dbCfg.DBName = name
	dbCfg.Timeout = 0
	return dbCfg.FormatDSN()
}

// Start runs trillian_log_server and trillian_log_signer (with
// --force_master) over a fresh database and waits until both are healthy.
// Everything is stopped and removed when the test ends. The test is skipped
// when MariaDB/MySQL cannot be reached.
func Start(tb testing.TB, opts Options) *Env {
	tb.Helper()
	opts = opts.withDefaults()
	e := &Env{tb: tb, opts: opts}
	e.DSN = NewDatabase(tb) // first: skips before the slow build
	e.serverBin, e.signerBin = Binaries(tb)
	e.logDir = tb.TempDir() // before Kill's cleanup, so it outlives it
	tb.Cleanup(e.Kill)
	e.start()
	return e
}

// withDefaults fills in the documented defaults.
func (o Options) withDefaults() Options {
	if o.SequencerInterval == 0 {
		o.SequencerInterval = 20 * time.Millisecond
	}
	if o.BatchSize == 0 {
		o.BatchSize = 1000
	}
	if o.NumSequencers == 0 {
		o.NumSequencers = 1
	}
	if o.MaxConns == 0 {
		o.MaxConns = 64
	}
	if o.MaxIdleConns == 0 {
		o.MaxIdleConns = 32
	}
	if o.QuotaSystem == "" {
		o.QuotaSystem = "mysql"
	}
	return o
}

// serverFlags are the tuning flags of trillian_log_server.
func (o Options) serverFlags() []string {
	return []string{
		"--mysql_max_conns=" + fmt.Sprint(o.MaxConns),
		"--mysql_max_idle_conns=" + fmt.Sprint(o.MaxIdleConns),
	}
}

// signerFlags are the tuning flags of trillian_log_signer.
func (o Options) signerFlags() []string {
	return []string{
		"--sequencer_interval=" + o.SequencerInterval.String(),
		"--batch_size=" + fmt.Sprint(o.BatchSize),
		"--num_sequencers=" + fmt.Sprint(o.NumSequencers),
	}
}

// start starts both processes on fresh ports and connects to the server.
func (e *Env) start() {
	tb := e.tb
	tb.Helper()
	rpc, httpAddr := freePort(tb), freePort(tb)
	common := []string{
		"--storage_system=mysql",
		"--quota_system=" + e.opts.QuotaSystem,
		"--mysql_uri=" + e.DSN,
		"--logtostderr",
	}
	e.procs = append(e.procs, startProcess(tb, e.logDir, e.serverBin, append([]string{
		"--rpc_endpoint=" + rpc,
		"--http_endpoint=" + httpAddr,
		"--tree_gc=false",
	}, append(common, e.opts.serverFlags()...)...)))
	waitHealthy(tb, serverCmd, httpAddr)

	signerRPC, signerHTTP := freePort(tb), freePort(tb)
	e.procs = append(e.procs, startProcess(tb, e.logDir, e.signerBin, append([]string{
		"--rpc_endpoint=" + signerRPC,
		"--http_endpoint=" + signerHTTP,
		"--force_master",
	}, append(common, e.opts.signerFlags()...)...)))
	waitHealthy(tb, signerCmd, signerHTTP)

	conn, err := grpc.NewClient(rpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	e.Addr, e.Conn = rpc, conn
}

// Kill kills both processes (SIGKILL), as a crash would, and closes Conn.
// The database stays.
func (e *Env) Kill() {
	// Signer first: it is the one writing tree heads.
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.procs[i].kill()
	}
	e.procs = nil
	if e.Conn != nil {
		e.Conn.Close()
		e.Conn = nil
	}
}

// Restart kills both processes and starts them again over the same
// database, on new ports: Addr and Conn change.
func (e *Env) Restart() {
	e.tb.Helper()
	e.Kill()
	e.start()
}

// freePort returns a loopback address with a port that was free a moment
// ago.
func freePort(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// process is a running binary.
type process struct {
	pid    int
	exited chan struct{} // closed when the process has exited
	kill   func()        // SIGKILL, wait, show the log if the test failed; idempotent
}

// startProcess starts a binary whose output goes to a file; its output is
// shown if the test failed.
func startProcess(tb testing.TB, logDir, bin string, args []string) *process {
	tb.Helper()
	name := filepath.Base(bin)
	out, err := os.CreateTemp(logDir, name+"-*.log")
	if err != nil {
		tb.Fatal(err)
	}
	logPath := out.Name()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		tb.Fatalf("starting %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	// Both binaries sleep five seconds after SIGTERM before they exit; a
	// test has nothing to gain from that. Everything they acknowledged is
	// in the database.
	return &process{pid: cmd.Process.Pid, exited: exited, kill: sync.OnceFunc(func() {
		_ = cmd.Process.Kill()
		<-exited
		out.Close()
		if tb.Failed() {
			tb.Logf("%s output (last lines):\n%s", name, tail(logPath, 40))
		}
	})}
}

// waitHealthy waits until the process serves 200 on /healthz.
func waitHealthy(tb testing.TB, name, addr string) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	url := "http://" + addr + "/healthz"
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatalf("%s did not become healthy at %s: %v", name, url, last)
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var lines []string
	s := bufio.NewScanner(bytes.NewReader(b))
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		lines = append(lines, s.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// ModuleDir returns the source directory of the pinned Trillian module in
// the module cache (downloading it if needed), for tests that read its
// schema or its commands' flags.
func ModuleDir(tb testing.TB) string {
	tb.Helper()
	m, err := trillianModuleInfo()
	if err != nil {
		tb.Fatalf("finding the pinned Trillian version: %v", err)
	}
	return m.Dir
}
