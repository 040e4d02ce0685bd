package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/auditor"

	"github.com/keytrans/kt/internal/cliconfig"
	"github.com/keytrans/kt/log/witness"
)

// Config is ktauditor's configuration. Each scalar field is set, from
// lowest to highest precedence, by its default, the configuration file
// (--config; YAML, TOML or JSON, keys as in the mapstructure tags, nested
// with dots; unknown keys are an error), the environment (KTAUDITOR_ and
// the key upper-cased with dots as underscores, e.g. KTAUDITOR_LISTEN),
// and flags (the key with dots and underscores as dashes, e.g.
// --poll-interval). The lists (logs, peers) are set in the file only. This
// documentation is the reference; `ktauditor --help` lists every flag.
//
// Every listener defaults to loopback. A public auditor binds listen to a
// public address, usually behind a TLS-terminating proxy.
type Config struct {
	// DataDir holds the state store (DataDir/state), the cosigning key
	// created on first start (DataDir/auditor.key) and, by default, the
	// evidence files (DataDir/evidence). Created if missing.
	DataDir string `mapstructure:"data_dir"`
	// Listen is the HTTP address of the public endpoints: C2SP tlog-witness
	// POST /add-checkpoint, POST /kt/v1/audit, GET /kt/v1/checkpoint,
	// POST /kt/v1/gossip, GET /kt/v1/evidence and the status page at /.
	// Default 127.0.0.1:8480.
	Listen string `mapstructure:"listen"`
	// MetricsListen is the address of the Prometheus endpoint (/metrics,
	// including ktauditor_build_info); pprof is served there too when the
	// address is loopback. Default 127.0.0.1:9465. Empty disables it.
	MetricsListen string `mapstructure:"metrics_listen"`
	// Name is the name of the cosigning key (C2SP signed-note key name),
	// e.g. "auditor.example.org". Used only when the key is created.
	// Default "localhost/ktauditor".
	Name string `mapstructure:"name"`
	// KeyFile is the cosigning key in golang.org/x/mod/sumdb/note signer
	// format; created when missing. Default DataDir/auditor.key.
	// `ktauditor vkey` prints its tlog-cosignature/v1 verifier key, which
	// goes into witness policies.
	KeyFile string `mapstructure:"key_file"`
	// Witness enables the add-checkpoint endpoint. Default true.
	Witness bool `mapstructure:"witness"`
	// AuditKey is the audit key file, in the format of KeyFile: the key
	// that signs audit statements (design.md 14.1), the answers of POST
	// /kt/v1/audit, which directories collect before serving an epoch.
	// Created when missing, named after the cosigning key: NAME/audit.
	// It must not be the cosigning key (a key makes one kind of
	// statement). `ktauditor audit-vkey` prints its verifier key, which
	// goes into audit policies as `auditor NAME VKEY URL`. Empty (the
	// default): no audit statements (POST /kt/v1/audit answers 404).
	AuditKey string `mapstructure:"audit_key"`
	// AuditWait is how long POST /kt/v1/audit waits for the audit of a
	// checkpoint beyond the audited size (it starts an audit step at once)
	// before answering 503 with Retry-After. Default 5s.
	AuditWait time.Duration `mapstructure:"audit_wait"`
	// CosignAudited is the removed option cosign_audited (cosign only
	// audited checkpoints): a log that needed that cosignature to publish
	// could never be audited. Setting it, to any value, is an error that
	// says to use audit_key instead.
	CosignAudited *bool `mapstructure:"cosign_audited"`
	// PollInterval is how often each log's checkpoint is polled. Default 2s.
	PollInterval time.Duration `mapstructure:"poll_interval"`
	// GossipInterval is how often checkpoints are exchanged with each peer.
	// Default 30s.
	GossipInterval time.Duration `mapstructure:"gossip_interval"`
	// ProgressInterval is how often a long catch-up logs its speed and ETA
	// and saves its state. Default 10s.
	ProgressInterval time.Duration `mapstructure:"progress_interval"`
	// EvidenceDir receives each evidence bundle as a file. Default
	// DataDir/evidence.
	EvidenceDir string `mapstructure:"evidence_dir"`
	// WebhookURL, when set, receives each evidence bundle in a POST.
	WebhookURL string `mapstructure:"webhook_url"`
	// MaxBodyBytes bounds request bodies (larger: 413). Default 65536.
	MaxBodyBytes int64 `mapstructure:"max_body_bytes"`
	// Logs are the logs to audit or witness (file only). At least one.
	Logs []LogConfig `mapstructure:"logs"`
	// Peers are the auditors to gossip with (file only).
	Peers []PeerConfig `mapstructure:"peers"`
}

// LogConfig is one log.
type LogConfig struct {
	// Origin is the log's origin (first line of its checkpoints).
	// Default: the name of VKey, which must equal it.
	Origin string `mapstructure:"origin"`
	// VKey is the log's signed-note verifier key (ktd logs it on start;
	// name+hash+base64).
	VKey string `mapstructure:"vkey"`
	// VKeyFile is a file holding VKey instead (one line, e.g. log.vkey
	// written by `ktctl keygen`). Set VKey or VKeyFile, not both.
	VKeyFile string `mapstructure:"vkey_file"`
	// URL is the base URL of the log's read API (ktd's http_listen, e.g.
	// http://127.0.0.1:8080). Empty: the log is witnessed only, not
	// audited (for logs that are not key transparency logs).
	URL string `mapstructure:"url"`
	// Heartbeat is the directory's heartbeat interval (ktd's
	// directory.heartbeat_interval): epochs further apart than twice this
	// while changes wait are logged and counted as warnings. Default 10s;
	// 0 disables the check.
	Heartbeat *time.Duration `mapstructure:"heartbeat"`
	// WitnessPolicyFile is the log's witness policy (ktd's
	// witness.policy_file). When set, an epoch stamped more than Skew after
	// the latest valid cosignature on the checkpoint covering it is logged
	// and counted as a warning.
	WitnessPolicyFile string `mapstructure:"witness_policy_file"`
	// Skew is the clock skew tolerated by that check. Default 10s.
	Skew time.Duration `mapstructure:"skew"`
	// RecoveryKey is the directory's recovery public key, as ktd's
	// recovery.key public form ("kt-recovery-public:<base64>") or the bare
	// base64. Required when URL is set (rule R6).
	RecoveryKey string `mapstructure:"recovery_key"`
	// RecoveryKeyFile is a file holding RecoveryKey instead (its public
	// form, e.g. recovery.pub written by `ktctl keygen`). Set RecoveryKey
	// or RecoveryKeyFile, not both.
	RecoveryKeyFile string `mapstructure:"recovery_key_file"`
}

// readKeyFiles replaces vkey_file and recovery_key_file by the keys they
// hold and defaults the origin to the verifier key's name.
func (l *LogConfig) readKeyFiles(i int, add func(string, ...any)) {
	read := func(key, path string, val *string) {
		if path == "" {
			return
		}
		if *val != "" {
			add("logs[%d]: set %s or %s_file, not both", i, key, key)
			return
		}
		b, err := os.ReadFile(path)
		if err != nil {
			add("logs[%d]: %s_file: %v", i, key, err)
			return
		}
		*val = strings.TrimSpace(string(b))
	}
	read("vkey", l.VKeyFile, &l.VKey)
	read("recovery_key", l.RecoveryKeyFile, &l.RecoveryKey)
	if l.Origin == "" {
		if v, err := note.NewVerifier(l.VKey); err == nil {
			l.Origin = v.Name()
		}
	}
}

// PeerConfig is one peer auditor.
type PeerConfig struct {
	// Name identifies the peer in logs, metrics and the status page.
	Name string `mapstructure:"name"`
	// URL is the peer's base URL (its listen address).
	URL string `mapstructure:"url"`
}

// option is one configuration key with its default and help.
type option = cliconfig.Option

var options = []option{
	{Key: "data_dir", Default: "./auditor-data", Usage: "data directory: state, cosigning key, evidence"},
	{Key: "listen", Default: "127.0.0.1:8480", Usage: "HTTP address: add-checkpoint, gossip, evidence, status page"},
	{Key: "metrics_listen", Default: "127.0.0.1:9465", Usage: "Prometheus /metrics address (pprof too when loopback); empty disables"},
	{Key: "name", Default: "localhost/ktauditor", Usage: "cosigning key name (used when the key is created)"},
	{Key: "key_file", Default: "", Usage: "cosigning key file (default DATA_DIR/auditor.key, created if missing)"},
	{Key: "witness", Default: true, Usage: "serve C2SP tlog-witness add-checkpoint"},
	{Key: "audit_key", Default: "", Usage: "audit key file: signs audit statements (POST /kt/v1/audit); created if missing; empty disables"},
	{Key: "audit_wait", Default: auditor.DefaultAuditWait, Usage: "how long POST /kt/v1/audit waits for an audit beyond the audited size"},
	{Key: "poll_interval", Default: auditor.DefaultPollInterval, Usage: "how often each log's checkpoint is polled"},
	{Key: "gossip_interval", Default: auditor.DefaultGossipInterval, Usage: "how often checkpoints are exchanged with each peer"},
	{Key: "progress_interval", Default: auditor.DefaultProgressInterval, Usage: "how often a catch-up logs progress and saves state"},
	{Key: "evidence_dir", Default: "", Usage: "directory for evidence files (default DATA_DIR/evidence)"},
	{Key: "webhook_url", Default: "", Usage: "URL that receives each evidence bundle in a POST"},
	{Key: "max_body_bytes", Default: int64(auditor.DefaultMaxBodyBytes), Usage: "largest request body"},
}

// command is ktauditor's configuration table for cliconfig.
var command = &cliconfig.Command{Name: "ktauditor", Prefix: "KTAUDITOR", Options: options, Usage: usageHeader, KeyInHelp: true}

const usageHeader = `ktauditor audits key transparency logs, witnesses their checkpoints and
gossips them with other auditors.

Usage:
  ktauditor [flags]                         serve
  ktauditor vkey [flags]                    print the cosignature verifier key
                                            (creates key_file if missing)
  ktauditor audit-vkey [flags]              print the audit verifier key
                                            (creates audit_key if missing)
  ktauditor unfreeze [flags] ORIGIN         resume cosigning ORIGIN after evidence
                                            (daemon stopped; evidence is kept)
  ktauditor reset-witness [flags] ORIGIN    forget the checkpoint last cosigned for ORIGIN

` + cliconfig.SourcesHelp + `The lists "logs" (origin, vkey or vkey_file, url, recovery_key or
recovery_key_file, heartbeat, witness_policy_file, skew) and "peers" (name,
url) are set in the file.

Flags:
`

// loadConfig is ktauditor's configuration from its command line args,
// environment and file, validated; cliconfig.ParseConfig says how.
func loadConfig(args []string, out io.Writer) (*Config, []string, error) {
	return cliconfig.ParseConfig(command, args, out, (*Config).validate)
}

// removedCosignAudited is the error for a configuration that still sets
// cosign_audited.
const removedCosignAudited = "cosign_audited was removed: audit statements are now made by a separate key; " +
	"set audit_key (a key file, created if missing), put its verifier key (ktauditor audit-vkey) in the directory's audit policy, " +
	"and keep this auditor's cosigning key in the witness policy, where it cosigns as any witness"

func (c *Config) validate() error {
	var problems cliconfig.Problems
	add := problems.Add
	// SPEC(design.md 14.2): "a config that still sets cosign_audited fails
	// at start with a message telling to use audit_key".
	if _, env := os.LookupEnv(cliconfig.EnvName(command.Prefix, "cosign_audited")); c.CosignAudited != nil || env {
		add(removedCosignAudited)
	}
	if c.AuditWait <= 0 {
		add("audit_wait must be positive")
	}
	problems.Require("data_dir", c.DataDir)
	problems.Require("listen", c.Listen)
	problems.HostPort("listen", c.Listen)
	problems.HostPort("metrics_listen", c.MetricsListen)
	if c.PollInterval <= 0 || c.GossipInterval <= 0 || c.ProgressInterval <= 0 {
		add("poll_interval, gossip_interval and progress_interval must be positive")
	}
	if c.MaxBodyBytes < 4096 {
		add("max_body_bytes %d: want at least 4096", c.MaxBodyBytes)
	}
	if c.WebhookURL != "" {
		if u, err := url.Parse(c.WebhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			add("webhook_url %q: want an http or https URL", c.WebhookURL)
		}
	}
	if len(c.Logs) == 0 {
		add("no logs configured (logs: in the configuration file)")
	}
	seen := map[string]bool{}
	for i := range c.Logs {
		c.Logs[i].readKeyFiles(i, add)
	}
	for i, l := range c.Logs {
		if l.Origin == "" || seen[l.Origin] {
			add("logs[%d]: empty or duplicate origin %q", i, l.Origin)
		}
		seen[l.Origin] = true
		if v, err := note.NewVerifier(l.VKey); err != nil {
			add("logs[%d] (%s): vkey: %v", i, l.Origin, err)
		} else if v.Name() != l.Origin {
			add("logs[%d]: vkey is named %q, not the origin %q", i, v.Name(), l.Origin)
		}
		if l.URL != "" {
			if u, err := url.Parse(l.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
				add("logs[%d] (%s): url %q: want an http or https URL", i, l.Origin, l.URL)
			}
			if _, err := parseRecoveryKey(l.RecoveryKey); err != nil {
				add("logs[%d] (%s): recovery_key: %v", i, l.Origin, err)
			}
		}
		if l.WitnessPolicyFile != "" {
			if _, err := witness.ReadPolicyFile(l.WitnessPolicyFile); err != nil {
				add("logs[%d] (%s): %v", i, l.Origin, err)
			}
		}
		if l.Skew < 0 {
			add("logs[%d] (%s): negative skew", i, l.Origin)
		}
	}
	peers := map[string]bool{}
	for i, p := range c.Peers {
		if p.Name == "" || peers[p.Name] {
			add("peers[%d]: empty or duplicate name %q", i, p.Name)
		}
		peers[p.Name] = true
		if u, err := url.Parse(p.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			add("peers[%d] (%s): url %q: want an http or https URL", i, p.Name, p.URL)
		}
	}
	if c.KeyFile == "" {
		c.KeyFile = filepath.Join(c.DataDir, "auditor.key")
	}
	if c.AuditKey != "" && filepath.Clean(c.AuditKey) == filepath.Clean(c.KeyFile) {
		add("audit_key %q is the cosigning key file (key_file): an audit key must not be a witness key", c.AuditKey)
	}
	if c.EvidenceDir == "" {
		c.EvidenceDir = filepath.Join(c.DataDir, "evidence")
	}
	return problems.Err()
}

// parseRecoveryKey accepts ktd's public recovery key file form or bare
// base64 of the 32-byte key.
func parseRecoveryKey(s string) ([32]byte, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "kt-recovery-public:")
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return [32]byte{}, errors.New(`want "kt-recovery-public:<base64>" or the base64 of a 32-byte Ed25519 key`)
	}
	return [32]byte(b), nil
}
