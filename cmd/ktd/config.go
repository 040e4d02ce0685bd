package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/directory/grpcserver"
	"github.com/keytrans/kt/directory/lease"
	"github.com/keytrans/kt/log/posix"
	"github.com/keytrans/kt/log/witness"

	"github.com/keytrans/kt/internal/cliconfig"
	"github.com/keytrans/kt/internal/ops"
)

// Config is ktd's configuration. Each field is set, from lowest to highest
// precedence, by its default, the configuration file (--config; YAML, TOML
// or JSON, keys as in the mapstructure tags, nested with dots; unknown keys
// are an error), the environment (KTD_ and the key upper-cased with dots as
// underscores, e.g. KTD_LOG_BACKEND), and flags (the key with dots and
// underscores as dashes, e.g. --log-backend). This documentation is the
// reference; `ktd --help` lists every key with its default.
//
// Every listener defaults to loopback and plaintext. A public deployment
// sets tls.cert_file and tls.key_file (or terminates TLS in front of ktd)
// and binds grpc_listen and http_listen to a public address.
type Config struct {
	// DataDir holds everything the embedded default stores: the log's tiles
	// (DataDir/log), the directory's state (DataDir/state) and the keys
	// created on first start (log.key, vrf.key, recovery.key,
	// enroll-token.key). Created if missing.
	DataDir string `mapstructure:"data_dir"`
	// HTTPListen is the address of the public HTTP endpoint: the log read
	// API under /log/v1/, C2SP tlog-tiles (every backend), and
	// /healthz. Default 127.0.0.1:8080. Empty disables it.
	HTTPListen string `mapstructure:"http_listen"`
	// GRPCListen is the address of the public gRPC endpoint: the Directory
	// and Log services. Default 127.0.0.1:8443.
	GRPCListen string `mapstructure:"grpc_listen"`
	// OperatorListen is the address of the private gRPC endpoint of the
	// Operator service (account recovery). Default 127.0.0.1:8444. Empty
	// disables it. A non-loopback address requires operator.client_ca_file
	// (mutual TLS).
	OperatorListen string `mapstructure:"operator_listen"`
	// MetricsListen is the address of the Prometheus endpoint (/metrics,
	// including build_info). pprof is served there too (/debug/pprof/)
	// when the address is loopback, never otherwise. Default
	// 127.0.0.1:9464. Empty disables it.
	MetricsListen string `mapstructure:"metrics_listen"`
	// AuditPolicy is the path of an audit policy file (auditor, group and
	// quorum lines: log/witness.ParseAuditPolicy; docs/design.md 14.3).
	// When set, ktd serves lookups only from epochs whose checkpoint a
	// quorum of its auditors vouched for (it asks each auditor's URL,
	// POST /kt/v1/audit) and publishes the policy in the parameters, so
	// that clients require the statements; publication still needs the
	// witness policy only. ktd refuses to start, before it creates
	// anything, with a policy that does not parse, an auditor without a
	// URL, "quorum none", or an auditor key that is also a key of the
	// witness policy. Empty: every published epoch is served at once.
	AuditPolicy string `mapstructure:"audit_policy"`

	TLS        TLSConfig        `mapstructure:"tls"`
	Operator   OperatorConfig   `mapstructure:"operator"`
	Limits     LimitsConfig     `mapstructure:"limits"`
	Directory  DirectoryConfig  `mapstructure:"directory"`
	Enrollment EnrollmentConfig `mapstructure:"enrollment"`
	Log        LogConfig        `mapstructure:"log"`
	Witness    WitnessConfig    `mapstructure:"witness"`
	Cluster    ClusterConfig    `mapstructure:"cluster"`
}

// TLSConfig configures TLS on the public gRPC and HTTP listeners.
type TLSConfig struct {
	// CertFile and KeyFile are a PEM certificate chain and its private key.
	// Both or neither; neither serves plaintext.
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

// OperatorConfig secures the operator listener.
type OperatorConfig struct {
	// ClientCAFile is a PEM bundle of the CAs whose client certificates may
	// call the Operator service. When set, the operator listener serves
	// mutual TLS with the tls.cert_file certificate; required when
	// operator_listen is not a loopback address.
	ClientCAFile string `mapstructure:"client_ca_file"`
}

// LimitsConfig bounds what each caller of the public gRPC service may ask.
type LimitsConfig struct {
	// MaxRequestBytes is the largest gRPC request message. Default 262144
	// (see grpcserver.Options.MaxRecvMsgSize).
	MaxRequestBytes int `mapstructure:"max_request_bytes"`
	// RequestsPerSecond is each peer address's sustained request rate (a
	// batch costs one per handle or change). Default 50. Negative
	// disables rate limiting (behind a proxy that limits instead).
	RequestsPerSecond float64 `mapstructure:"requests_per_second"`
	// Burst is how many requests a peer may make at once. Default 100.
	Burst int `mapstructure:"burst"`
	// MaxPeers bounds the peers tracked for rate limiting. Default 65536.
	MaxPeers int `mapstructure:"max_peers"`
	// MaxConnsPerPeer bounds a peer address's open gRPC connections
	// (grpcserver.LimitConnsPerPeer); further ones are closed at once.
	// Default 32; 0 or negative disables (behind a proxy).
	MaxConnsPerPeer int `mapstructure:"max_conns_per_peer"`
	// RecvTimeout bounds the time from a call's headers to its complete
	// request (grpcserver.Options.RecvTimeout). Default 10s.
	RecvTimeout time.Duration `mapstructure:"recv_timeout"`
}

// DirectoryConfig configures the directory.
type DirectoryConfig struct {
	// EpochInterval is how soon after the previous epoch a new one closes
	// when changes are pending. Default 1s.
	EpochInterval time.Duration `mapstructure:"epoch_interval"`
	// HeartbeatInterval is how often an epoch closes when nothing changed,
	// so clients can bound staleness. Default 10s; at least EpochInterval.
	HeartbeatInterval time.Duration `mapstructure:"heartbeat_interval"`
	// VRFKeyFile holds the VRF private key ("kt-vrf-private:<base64>");
	// created when missing. Default DataDir/vrf.key.
	VRFKeyFile string `mapstructure:"vrf_key_file"`
	// VRFNextKeyFile, before and during a rotation of the VRF key
	// (design.md 11.2), holds the key the rotation rotates to; created
	// when missing. Empty: no VRF rotation is possible.
	VRFNextKeyFile string `mapstructure:"vrf_next_key_file"`
	// VRFPrevKeyFile, after a rotation of the VRF key once vrf_key_file
	// holds the new key, holds the key before it (it proves absences
	// under the old key, design.md 11.2).
	VRFPrevKeyFile string `mapstructure:"vrf_prev_key_file"`
	// RecoveryKeyFile holds the recovery key: either the private key
	// ("kt-recovery-private:<base64 seed>", created when missing, for
	// operator tools that sign recoveries) or only the public key
	// ("kt-recovery-public:<base64>") when the private key is kept
	// offline, as it should be in production. Default DataDir/recovery.key.
	RecoveryKeyFile string `mapstructure:"recovery_key_file"`
	// CacheSize is the state store's block cache in bytes. Default 256 MiB.
	CacheSize int64 `mapstructure:"cache_size"`
}

// EnrollmentConfig configures how enrollments are authorized.
type EnrollmentConfig struct {
	// Mode is "token" (default: an enrollment must carry a token issued by
	// `ktd issue-token HANDLE` or by the operator's verification service
	// with the same key) or "open" (INSECURE, demos only: anyone can
	// enroll any free handle).
	Mode string `mapstructure:"mode"`
	// TokenKeyFile holds the tokens' HMAC key; created when missing.
	// Default DataDir/enroll-token.key.
	TokenKeyFile string `mapstructure:"token_key_file"`
	// TokenTTL is how long an issued token is valid. Default 15m.
	TokenTTL time.Duration `mapstructure:"token_ttl"`
}

// LogConfig configures the transparency log.
type LogConfig struct {
	// Origin names the log in its checkpoints (C2SP tlog-checkpoint): a
	// schema-less URL such as "kt.example.com/log". Default "localhost/kt".
	Origin string `mapstructure:"origin"`
	// Backend is "posix" (the embedded default: Tessera's POSIX driver in
	// DataDir/log) or "trillian" (Trillian log servers over MariaDB/MySQL).
	Backend string `mapstructure:"backend"`
	// KeyFile is the log's signing key in golang.org/x/mod/sumdb/note
	// format; created with a fresh Ed25519 key when missing. Default
	// DataDir/log.key.
	KeyFile string `mapstructure:"key_file"`
	// NextKeyFile, during a rotation of the log key (design.md 11.1), is
	// the new signing key (same format; created when missing): the log
	// signs every checkpoint with both keys, and the Operator service's
	// Rotate accepts a rotation to this key. The rotation finishes when
	// the operator moves it to KeyFile and clears this. Posix backend
	// only. Default empty: no rotation.
	NextKeyFile string `mapstructure:"next_key_file"`
	// CheckpointInterval is how often a new checkpoint is published when the
	// log has grown. Default 100ms: the directory appends nothing while it
	// waits for an epoch's checkpoint, about one interval per epoch (see
	// posix.DefaultCheckpointInterval); with witnesses, each sees up to one
	// request per interval under a sustained write load.
	CheckpointInterval time.Duration `mapstructure:"checkpoint_interval"`
	// FullCheck (posix backend): at start, recompute every hash tile from
	// the entries and compare it with the stored one, reading the whole
	// log, instead of checking only the right edge the next checkpoints
	// are built on (posix.Config.FullCheck).
	FullCheck bool `mapstructure:"full_check"`
	// Trillian configures the Trillian backend.
	Trillian TrillianConfig `mapstructure:"trillian"`
}

// TrillianConfig configures the Trillian backend.
type TrillianConfig struct {
	// Address of the trillian_log_server gRPC endpoints: one host:port
	// (a DNS name may resolve to every server; gRPC fails over between
	// its addresses), or several separated by commas: calls are then
	// balanced over them, and a server that is down leaves the rotation
	// (trillian.Dial).
	Address string `mapstructure:"address"`
	// TreeID of an existing Trillian log tree. With CreateTree and TreeID 0,
	// a tree is created and its ID is logged: put it in the configuration.
	TreeID int64 `mapstructure:"tree_id"`
	// CreateTree creates and initialises a tree when TreeID is 0.
	CreateTree bool `mapstructure:"create_tree"`
}

// ClusterConfig configures the replicated directory (docs/design.md section
// 17.1, docs/operations.md "The replicated directory"): several ktd instances
// over one Trillian tree, each with its own data directory (its own view
// of the log) and the same keys, sharing the payloads and a writer lease
// in MariaDB/MySQL. The holder of the lease writes; the others serve
// lookups and monitoring from their views and refuse changes with
// Unavailable naming the writer's cluster.advertise address. When the
// writer dies, another takes over once the lease has expired (after
// lease_duration plus margin, plus the time to drain Trillian's queue).
// A writer that loses its lease exits with status 1 ("the directory
// stopped writing"): run ktd under a supervisor that restarts it (systemd
// Restart=always, Kubernetes), and it comes back as a reader.
type ClusterConfig struct {
	// DSN enables the replicated mode: a go-sql-driver/mysql DSN
	// (user:password@tcp(host:3306)/database) of the database holding the
	// lease (kt_lease) and shared tables (kt_payload, kt_epoch), created
	// if missing. It needs log.backend "trillian" with a fixed
	// log.trillian.tree_id. Empty: a single, standalone ktd.
	DSN string `mapstructure:"dsn"`
	// TrillianDSN is a DSN of Trillian's own database, read (the
	// Unsequenced table) by a new writer to drain the queue of its
	// predecessor. Default: DSN (when both live in one database).
	TrillianDSN string `mapstructure:"trillian_dsn"`
	// LeaseName names the writer lease: one per log. Default
	// "directory-writer/" + log.origin.
	LeaseName string `mapstructure:"lease_name"`
	// LeaseDuration is how long a term lasts after each renewal (every
	// third of it), by the database's clock. Default 10s.
	LeaseDuration time.Duration `mapstructure:"lease_duration"`
	// Margin is how long before its term ends a writer stops appending,
	// by its own clock, and how long a new writer waits after acquiring
	// the lease. Generous (seconds): it must cover the longest pause of
	// a writer between its deadline check and its last queued entry.
	// Default 2s; below lease_duration.
	Margin time.Duration `mapstructure:"margin"`
	// Advertise is the gRPC address (host:port) clients reach this
	// instance at, which readers name when they refuse a change. Default
	// grpc_listen.
	Advertise string `mapstructure:"advertise"`
	// PollInterval is how often a reader looks for new log entries.
	// Default 250ms.
	PollInterval time.Duration `mapstructure:"poll_interval"`
}

// WitnessConfig configures witnessing of checkpoints.
type WitnessConfig struct {
	// PolicyFile is a Sigsum-format witness policy (witness, group and
	// quorum lines; C2SP signed-note verifier keys). When set, checkpoints
	// are published only once cosigned by a quorum. Empty: no witnesses.
	// ktd refuses to start, before it creates anything, with a policy that
	// the clients' parser (log/witness.ParsePolicy) rejects, even where
	// the embedded backend's (Tessera's) would accept it.
	PolicyFile string `mapstructure:"policy_file"`
	// Timeout bounds each round of requests to witnesses, on both
	// backends. Default 10s (log/witness.DefaultTimeout).
	Timeout time.Duration `mapstructure:"timeout"`
}

// option is one configuration key with its default and help.
type option = cliconfig.Option

var options = []option{
	{Key: "data_dir", Default: "./data", Usage: "data directory: log, state and keys"},
	{Key: "http_listen", Default: "127.0.0.1:8080", Usage: "public HTTP address (log read API, tlog-tiles, /healthz); empty disables"},
	{Key: "grpc_listen", Default: "127.0.0.1:8443", Usage: "public gRPC address (Directory and Log services)"},
	{Key: "operator_listen", Default: "127.0.0.1:8444", Usage: "private gRPC address of the Operator service; empty disables; non-loopback needs operator.client_ca_file"},
	{Key: "metrics_listen", Default: "127.0.0.1:9464", Usage: "Prometheus /metrics address (pprof too when loopback); empty disables"},
	{Key: "audit_policy", Default: "", Usage: "audit policy file (auditor lines with URLs); serve only epochs a quorum of auditors vouched for; empty: serve every published epoch"},
	{Key: "tls.cert_file", Default: "", Usage: "PEM certificate chain for the public listeners (empty: plaintext)"},
	{Key: "tls.key_file", Default: "", Usage: "PEM private key for tls.cert_file"},
	{Key: "operator.client_ca_file", Default: "", Usage: "PEM CA bundle for operator client certificates (enables mutual TLS)"},
	{Key: "limits.max_request_bytes", Default: grpcserver.DefaultMaxRecvMsgSize, Usage: "largest gRPC request message in bytes"},
	{Key: "limits.requests_per_second", Default: float64(grpcserver.DefaultRateLimit), Usage: "sustained requests per second per peer address; negative disables"},
	{Key: "limits.burst", Default: grpcserver.DefaultRateBurst, Usage: "requests a peer may make at once"},
	{Key: "limits.max_peers", Default: grpcserver.DefaultMaxPeers, Usage: "peers tracked for rate limiting"},
	{Key: "limits.max_conns_per_peer", Default: 32, Usage: "open gRPC connections per peer address; 0 disables"},
	{Key: "limits.recv_timeout", Default: grpcserver.DefaultRecvTimeout, Usage: "time a gRPC call may take to send its request after its headers"},
	{Key: "directory.epoch_interval", Default: directory.DefaultEpochInterval, Usage: "epoch interval when changes are pending"},
	{Key: "directory.heartbeat_interval", Default: directory.DefaultHeartbeatInterval, Usage: "epoch interval when idle (clients' staleness bound)"},
	{Key: "directory.vrf_key_file", Default: "", Usage: "VRF private key file (default DATA_DIR/vrf.key, created if missing)"},
	{Key: "directory.vrf_next_key_file", Default: "", Usage: "for a VRF key rotation: the new VRF private key file (created if missing)"},
	{Key: "directory.vrf_prev_key_file", Default: "", Usage: "after a VRF key rotation: the previous VRF private key file, once vrf_key_file holds the new key"},
	{Key: "directory.recovery_key_file", Default: "", Usage: "recovery key file, private or public form (default DATA_DIR/recovery.key, created if missing)"},
	{Key: "directory.cache_size", Default: int64(directory.DefaultCacheSize), Usage: "state store block cache in bytes"},
	{Key: "enrollment.mode", Default: "token", Usage: `enrollment authorization: "token" or "open" (INSECURE, demos only)`},
	{Key: "enrollment.token_key_file", Default: "", Usage: "HMAC key of enrollment tokens (default DATA_DIR/enroll-token.key, created if missing)"},
	{Key: "enrollment.token_ttl", Default: directory.DefaultTokenTTL, Usage: "validity of an issued enrollment token"},
	{Key: "log.origin", Default: "localhost/kt", Usage: "log origin in checkpoints"},
	{Key: "log.backend", Default: "posix", Usage: `log backend: "posix" (embedded) or "trillian"`},
	{Key: "log.key_file", Default: "", Usage: "log signing key file (default DATA_DIR/log.key, created if missing)"},
	{Key: "log.next_key_file", Default: "", Usage: "during a log key rotation: the new log signing key file (created if missing); checkpoints are signed by both keys (posix backend)"},
	{Key: "log.checkpoint_interval", Default: posix.DefaultCheckpointInterval, Usage: "how often to publish a checkpoint when the log grew"},
	{Key: "log.full_check", Default: false, Usage: "posix backend: at start, check every stored hash tile against the entries (reads the whole log), not only the right edge"},
	{Key: "log.trillian.address", Default: "", Usage: "trillian_log_server gRPC address (host:port)"},
	{Key: "log.trillian.tree_id", Default: int64(0), Usage: "Trillian tree ID"},
	{Key: "log.trillian.create_tree", Default: false, Usage: "create a Trillian tree when tree_id is 0"},
	{Key: "witness.policy_file", Default: "", Usage: "witness policy file (Sigsum policy format); empty: no witnesses"},
	{Key: "witness.timeout", Default: witness.DefaultTimeout, Usage: "timeout of each round of witness requests"},
	{Key: "cluster.dsn", Default: "", Usage: "replicated directory: MariaDB/MySQL DSN of the lease and shared payload tables; empty: standalone"},
	{Key: "cluster.trillian_dsn", Default: "", Usage: "DSN of Trillian's database, for the takeover's queue drain (default cluster.dsn)"},
	{Key: "cluster.lease_name", Default: "", Usage: `writer lease name (default "directory-writer/" + log.origin)`},
	{Key: "cluster.lease_duration", Default: lease.DefaultDuration, Usage: "writer lease term, renewed every third of it"},
	{Key: "cluster.margin", Default: lease.DefaultMargin(lease.DefaultDuration), Usage: "writer stops appending this long before its term ends; a new writer waits this long"},
	{Key: "cluster.advertise", Default: "", Usage: "gRPC address clients reach this instance at, named by readers (default grpc_listen)"},
	{Key: "cluster.poll_interval", Default: directory.DefaultPollInterval, Usage: "how often a reader looks for new log entries"},
}

// command is ktd's configuration table for cliconfig.
var command = &cliconfig.Command{Name: "ktd", Prefix: "KTD", Options: options, Usage: usageHeader, KeyInHelp: true}

const usageHeader = `ktd is the key transparency directory daemon.

Usage:
  ktd [flags]                      serve
  ktd issue-token [flags] HANDLE   print an enrollment token for HANDLE
  ktd backup [flags] DEST          back up the running ktd into DEST (docs/operations.md, Backups)

` + cliconfig.SourcesHelp + `
Flags:
`

// loadConfig loads ktd's Config from args (the flags, then the positional
// arguments it returns), the environment and the file, and validates it
// (see cliconfig.ParseConfig; pflag.ErrHelp after --help).
func loadConfig(args []string, out io.Writer) (*Config, []string, error) {
	return cliconfig.ParseConfig(command, args, out, (*Config).validate)
}

// validate checks the configuration and fills in the paths that default to
// the data directory.
func (c *Config) validate() error {
	var problems cliconfig.Problems
	add := problems.Add
	problems.Require("data_dir", c.DataDir)
	problems.Require("grpc_listen", c.GRPCListen)
	problems.HostPort("http_listen", c.HTTPListen)
	problems.HostPort("grpc_listen", c.GRPCListen)
	problems.HostPort("operator_listen", c.OperatorListen)
	problems.HostPort("metrics_listen", c.MetricsListen)
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		add("tls.cert_file and tls.key_file must be set together")
	}
	if c.OperatorListen != "" && !ops.IsLoopback(c.OperatorListen) && c.Operator.ClientCAFile == "" {
		add("operator_listen %q is not a loopback address: set operator.client_ca_file (and tls.cert_file, tls.key_file) to require client certificates", c.OperatorListen)
	}
	if c.Operator.ClientCAFile != "" && c.TLS.CertFile == "" {
		add("operator.client_ca_file needs tls.cert_file and tls.key_file")
	}
	if c.Limits.MaxRequestBytes < 1024 {
		add("limits.max_request_bytes %d: want at least 1024", c.Limits.MaxRequestBytes)
	}
	if c.Limits.RequestsPerSecond == 0 {
		add("limits.requests_per_second must be positive, or negative to disable rate limiting")
	}
	if c.Limits.RequestsPerSecond > 0 && c.Limits.Burst < 1 {
		add("limits.burst %d: want at least 1", c.Limits.Burst)
	}
	if c.Limits.MaxPeers < 1 {
		add("limits.max_peers %d: want at least 1", c.Limits.MaxPeers)
	}
	if c.Directory.EpochInterval <= 0 || c.Directory.HeartbeatInterval < c.Directory.EpochInterval {
		add("need 0 < directory.epoch_interval (%v) <= directory.heartbeat_interval (%v)", c.Directory.EpochInterval, c.Directory.HeartbeatInterval)
	}
	if c.Directory.CacheSize < 1<<20 {
		add("directory.cache_size %d: want at least 1 MiB", c.Directory.CacheSize)
	}
	switch c.Enrollment.Mode {
	case "token", "open":
	default:
		add("enrollment.mode %q: want \"token\" or \"open\"", c.Enrollment.Mode)
	}
	if c.Enrollment.TokenTTL <= 0 {
		add("enrollment.token_ttl must be positive")
	}
	if c.Log.Origin == "" || strings.ContainsAny(c.Log.Origin, " \t\n+") {
		add("log.origin %q must be a non-empty token without spaces or '+'", c.Log.Origin)
	}
	switch c.Log.Backend {
	case "posix":
	case "trillian":
		if c.Log.Trillian.Address == "" {
			add("log.trillian.address must be set for the trillian backend")
		}
		for _, a := range trillianAddrs(c.Log.Trillian.Address) {
			if _, _, err := net.SplitHostPort(a); err != nil {
				add("log.trillian.address %q: want host:port, or several separated by commas", a)
			}
		}
		if c.Log.Trillian.TreeID == 0 && !c.Log.Trillian.CreateTree {
			add("log.trillian.tree_id must be set, or log.trillian.create_tree to create a tree")
		}
	default:
		add("log.backend %q: want \"posix\" or \"trillian\"", c.Log.Backend)
	}
	if c.Log.CheckpointInterval <= 0 {
		add("log.checkpoint_interval must be positive")
	}
	if c.Witness.Timeout <= 0 {
		add("witness.timeout must be positive")
	}
	c.validateCluster(add)
	def := func(p *string, name string) {
		if *p == "" {
			*p = filepath.Join(c.DataDir, name)
		}
	}
	def(&c.Log.KeyFile, "log.key")
	def(&c.Directory.VRFKeyFile, "vrf.key")
	def(&c.Directory.RecoveryKeyFile, "recovery.key")
	def(&c.Enrollment.TokenKeyFile, "enroll-token.key")
	return problems.Err()
}

// readPolicy reads the witness policy file (nil when path is empty) and
// checks it with witness.ParsePolicy, the parser of the clients, auditors
// and ktctl, which is stricter than Tessera's: ktd must not publish under a
// policy its clients would reject.
//
// SPEC(design.md 9.1)
func readPolicy(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("witness.policy_file: %w", err)
	}
	// SPEC(design.md 9.1): the policy format is "exactly as parsed by
	// log/witness.ParsePolicy", and "ktd refuses at start-up a policy it
	// rejects".
	if _, err := witness.ParsePolicy(b); err != nil {
		return nil, fmt.Errorf("witness.policy_file %s: %w", path, err)
	}
	return b, nil
}

// readAuditPolicy reads the audit policy file (nil when path is empty)
// and checks it as the directory does (directory.CheckAuditPolicy)
// against the witness policy, before anything is created.
//
// SPEC(design.md 14.3)
func readAuditPolicy(path string, witnessPolicy []byte) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit_policy: %w", err)
	}
	if _, err := directory.CheckAuditPolicy(b, witnessPolicy); err != nil {
		return nil, fmt.Errorf("audit_policy %s: %w", path, err)
	}
	return b, nil
}

// trillianAddrs splits log.trillian.address at commas.
func trillianAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// validateCluster checks the cluster keys and fills in their defaults.
func (c *Config) validateCluster(add func(string, ...any)) {
	cl := &c.Cluster
	if cl.DSN == "" {
		if cl.TrillianDSN != "" || cl.Advertise != "" || cl.LeaseName != "" {
			add("cluster.trillian_dsn, cluster.advertise and cluster.lease_name need cluster.dsn (the replicated mode)")
		}
		return
	}
	if c.Log.Backend != "trillian" {
		add("cluster.dsn (the replicated directory) needs log.backend \"trillian\": every instance must append to and read one shared log, which the embedded posix backend is not")
	}
	if c.Log.Trillian.CreateTree || c.Log.Trillian.TreeID == 0 {
		add("cluster.dsn needs a fixed log.trillian.tree_id, not log.trillian.create_tree: every instance must use the same tree (create it once, e.g. with a first standalone start or Trillian's createtree)")
	}
	for _, d := range []struct{ key, dsn string }{{"cluster.dsn", cl.DSN}, {"cluster.trillian_dsn", cl.TrillianDSN}} {
		if d.dsn == "" {
			continue
		}
		if _, err := mysql.ParseDSN(d.dsn); err != nil {
			add("%s: %v", d.key, err)
		}
	}
	if cl.LeaseDuration < time.Second {
		add("cluster.lease_duration %v: want at least 1s", cl.LeaseDuration)
	}
	if cl.Margin <= 0 || cl.Margin >= cl.LeaseDuration {
		add("need 0 < cluster.margin (%v) < cluster.lease_duration (%v)", cl.Margin, cl.LeaseDuration)
	}
	if cl.PollInterval <= 0 {
		add("cluster.poll_interval must be positive")
	}
	if cl.TrillianDSN == "" {
		cl.TrillianDSN = cl.DSN
	}
	if cl.LeaseName == "" {
		cl.LeaseName = "directory-writer/" + c.Log.Origin
	}
	if len(cl.LeaseName) > 150 {
		add("cluster.lease_name %q: at most 150 bytes", cl.LeaseName)
	}
	if cl.Advertise == "" {
		cl.Advertise = c.GRPCListen
	}
	if strings.ContainsAny(cl.Advertise, " \t\n") || len(cl.Advertise) > 120 {
		add("cluster.advertise %q: want an address without spaces, at most 120 bytes", cl.Advertise)
	}
}
