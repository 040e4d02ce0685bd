package main

import (
	"io"
	"net"
	"time"

	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/internal/cliconfig"
	"github.com/keytrans/kt/internal/ops"
)

// Config is ktlocal's configuration. Each field is set, from lowest to
// highest precedence, by its default, the configuration file (--config;
// YAML, TOML or JSON, keys as in the mapstructure tags; unknown keys are an
// error), the environment (KTLOCAL_ and the key upper-cased, e.g.
// KTLOCAL_DATA_DIR), and flags (the key with underscores as dashes, e.g.
// --data-dir). This documentation is the reference; `ktlocal --help` lists
// every key with its default.
type Config struct {
	// DataDir holds everything: the directory's data directory
	// (DataDir/ktd, as ktd's data_dir), each auditor's (DataDir/auditor-1,
	// DataDir/auditor-2) with its generated configuration file, the witness
	// policy (DataDir/witness-policy), the daemons' logs (DataDir/logs) and,
	// unless BinDir is set, the binaries (DataDir/bin). Created if missing;
	// a restart on the same DataDir continues the same log. Default ./data.
	DataDir string `mapstructure:"data_dir"`
	// BinDir holds prebuilt ktd, ktauditor, kt and ktctl binaries. Empty
	// (the default): they are built with `go build` from the kt source tree
	// in Source into DataDir/bin at every start (incremental after the
	// first).
	BinDir string `mapstructure:"bin_dir"`
	// Source is the kt source tree (the directory holding go.mod) the
	// binaries are built from when BinDir is empty. Default ".".
	Source string `mapstructure:"source"`
	// GRPCListen, HTTPListen and OperatorListen are the directory's public
	// gRPC, public HTTP and private operator addresses (ktd's grpc_listen,
	// http_listen, operator_listen). Defaults 127.0.0.1:8443,
	// 127.0.0.1:8080, 127.0.0.1:8444: ktd's defaults, which kt and ktctl
	// use when given no address.
	GRPCListen     string `mapstructure:"grpc_listen"`
	HTTPListen     string `mapstructure:"http_listen"`
	OperatorListen string `mapstructure:"operator_listen"`
	// AuditorListen are the two auditors' HTTP addresses (witness,
	// gossip, evidence, status page). Default 127.0.0.1:8481 and
	// 127.0.0.1:8482.
	AuditorListen []string `mapstructure:"auditor_listen"`
	// EpochInterval and HeartbeatInterval are the directory's (ktd's
	// directory.epoch_interval and directory.heartbeat_interval). Defaults
	// 1s and 10s.
	EpochInterval     time.Duration `mapstructure:"epoch_interval"`
	HeartbeatInterval time.Duration `mapstructure:"heartbeat_interval"`
	// GossipInterval is how often the auditors exchange checkpoints with
	// each other (ktauditor's gossip_interval). Default 10s.
	GossipInterval time.Duration `mapstructure:"gossip_interval"`
	// StartTimeout bounds how long the daemons may take to serve a
	// cosigned checkpoint at start. Default 60s.
	StartTimeout time.Duration `mapstructure:"start_timeout"`
	// Audit runs the directory in audit mode (docs/design.md 14.3), the
	// default: each auditor gets an audit key besides its cosigning key
	// (DataDir/auditor-N/audit.key, named localhost/auditor-N/audit,
	// ktauditor's audit_key), ktlocal writes the audit policy
	// DataDir/audit-policy (both auditors must vouch) and ktd serves only
	// epochs both auditors vouched for (ktd's audit_policy), which clients
	// then require. False: the auditors are witnesses only.
	Audit bool `mapstructure:"audit"`
}

// option is one configuration key with its default and help.
type option = cliconfig.Option

var options = []option{
	{Key: "data_dir", Default: "./data", Usage: "data directory of the whole deployment"},
	{Key: "bin_dir", Default: "", Usage: "directory of prebuilt ktd, ktauditor, kt, ktctl (default: build them into DATA_DIR/bin)"},
	{Key: "source", Default: ".", Usage: "kt source tree to build the binaries from"},
	{Key: "grpc_listen", Default: "127.0.0.1:8443", Usage: "directory public gRPC address"},
	{Key: "http_listen", Default: "127.0.0.1:8080", Usage: "directory public HTTP address (log read API, tlog-tiles)"},
	{Key: "operator_listen", Default: "127.0.0.1:8444", Usage: "directory operator gRPC address (account recovery)"},
	{Key: "auditor_listen", Default: []string{"127.0.0.1:8481", "127.0.0.1:8482"}, Usage: "the two auditors' HTTP addresses"},
	{Key: "epoch_interval", Default: directory.DefaultEpochInterval, Usage: "directory epoch interval when changes are pending"},
	{Key: "heartbeat_interval", Default: directory.DefaultHeartbeatInterval, Usage: "directory epoch interval when idle"},
	{Key: "gossip_interval", Default: 10 * time.Second, Usage: "how often the auditors gossip with each other"},
	{Key: "start_timeout", Default: 60 * time.Second, Usage: "how long the daemons may take to come up"},
	{Key: "audit", Default: true, Usage: "audit mode: the directory serves only epochs both auditors vouched for (audit keys, DATA_DIR/audit-policy)"},
}

// command is ktlocal's configuration table for cliconfig.
var command = &cliconfig.Command{Name: "ktlocal", Prefix: "KTLOCAL", Options: options, Usage: usageHeader, NoArgs: true}

const usageHeader = `ktlocal runs a complete local kt deployment in one command: the directory
(ktd, embedded backend) and two auditors (ktauditor) that are the
directory's witnesses under a 2-of-2 policy, so every published checkpoint
is cosigned by both, and (audit mode, the default) its auditors under a
2-of-2 audit policy, so lookups are served only from epochs both vouched
for. Everything lives in --data-dir. Ctrl-C stops it; a
restart on the same data directory continues. The walk-through is in
docs/quickstart.md.

Usage:
  ktlocal [flags]              run the deployment
  ktlocal split-view [flags]   print a checkpoint signed with the directory's
                               log key over another tree of the current size
                               (the directory's half of a split view)

Flags:
`

// loadConfig reads the configuration from defaults, file, environment and
// the command line args, and validates it. It refuses positional
// arguments; when help was asked for, it prints the usage to out and
// returns pflag.ErrHelp.
func loadConfig(args []string, out io.Writer) (*Config, error) {
	c, _, err := cliconfig.ParseConfig(command, args, out, (*Config).validate)
	return c, err
}

func (c *Config) validate() error {
	var problems cliconfig.Problems
	add := problems.Add
	problems.Require("data_dir", c.DataDir)
	if c.BinDir == "" && c.Source == "" {
		add("set bin_dir or source")
	}
	if len(c.AuditorListen) != 2 {
		add("auditor_listen: want exactly two addresses, got %d", len(c.AuditorListen))
	}
	for _, a := range append([]string{c.GRPCListen, c.HTTPListen, c.OperatorListen}, c.AuditorListen...) {
		if _, _, err := net.SplitHostPort(a); err != nil {
			add("address %q: want host:port", a)
			continue
		}
		if !ops.IsLoopback(a) {
			add("address %q: ktlocal serves on loopback only", a)
		}
	}
	if c.EpochInterval <= 0 || c.HeartbeatInterval < c.EpochInterval {
		add("need 0 < epoch_interval <= heartbeat_interval")
	}
	if c.GossipInterval <= 0 || c.StartTimeout <= 0 {
		add("gossip_interval and start_timeout must be positive")
	}
	return problems.Err()
}
