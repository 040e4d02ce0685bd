package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/cliconfig"
)

// Config is kt's configuration. Each field is set, from lowest to highest
// precedence, by its default, the configuration file (--config; YAML, TOML
// or JSON, keys as in the mapstructure tags; unknown keys are an error),
// the environment (KT_ and the key upper-cased, e.g. KT_DIRECTORY), and
// flags (the key with underscores as dashes, e.g. --state-file). This
// documentation is the reference; `kt --help` lists every key.
type Config struct {
	// Directory is the gRPC address of the directory (host:port). Default
	// 127.0.0.1:8443.
	Directory string `mapstructure:"directory"`
	// StateFile is this device's state: its private keys, the trusted
	// checkpoint, its handles and monitoring positions, strict-mode pins.
	// Written atomically, mode 0600. Default: USER_CONFIG_DIR/kt/state.json.
	StateFile string `mapstructure:"state_file"`
	// ParamsFile holds the pinned directory parameters (protobuf JSON),
	// written by `kt init` from the directory's answer, which the user should
	// compare with the operator's published parameters. Default:
	// params.json next to StateFile.
	ParamsFile string `mapstructure:"params_file"`
	// TLS connects to the directory with TLS (system roots, or TLSCAFile).
	// Default false: plaintext, for a directory on loopback.
	TLS bool `mapstructure:"tls"`
	// TLSCAFile is a PEM CA bundle for the directory's certificate; implies
	// TLS.
	TLSCAFile string `mapstructure:"tls_ca_file"`
	// Strict turns on strict mode: contacts' account keys are pinned on
	// first use and sets they did not sign are refused.
	Strict bool `mapstructure:"strict"`
	// MaxAge is the oldest epoch accepted (0: client.DefaultMaxAge, 60 s).
	MaxAge time.Duration `mapstructure:"max_age"`
	// MaxAuditLag is, when the pinned parameters have an audit policy, the
	// oldest (audited) epoch accepted (0: client.DefaultMaxAuditLag, 30 s).
	MaxAuditLag time.Duration `mapstructure:"max_audit_lag"`
	// Auditors are auditor base URLs to gossip with during `kt monitor`.
	Auditors []string `mapstructure:"auditors"`
	// GossipOnLookup also gossips each newly trusted checkpoint with the
	// Auditors during lookups and encryption, before trusting it; a split
	// view then fails the command. Default false.
	GossipOnLookup bool `mapstructure:"gossip_on_lookup"`
	// MonitorInterval is how often `kt monitor` polls. Default 60s.
	MonitorInterval time.Duration `mapstructure:"monitor_interval"`
	// Skew is the clock skew allowed between this machine and the
	// directory and witnesses (0: client.DefaultSkew).
	Skew time.Duration `mapstructure:"skew"`
	// InsecureNoWitnesses accepts checkpoints without witness cosignatures
	// (development directories only).
	InsecureNoWitnesses bool `mapstructure:"insecure_no_witnesses"`
	// JSON prints machine-readable output.
	JSON bool `mapstructure:"json"`
	// Timeout bounds each command's network calls (not `kt monitor`'s
	// loop). Default 30s.
	Timeout time.Duration `mapstructure:"timeout"`
}

// option is one configuration key with its default and help.
type option = cliconfig.Option

var options = []option{
	{Key: "directory", Default: "127.0.0.1:8443", Usage: "directory gRPC address"},
	{Key: "state_file", Default: "", Usage: "device state file (default USER_CONFIG_DIR/kt/state.json)"},
	{Key: "params_file", Default: "", Usage: "pinned directory parameters (default params.json next to the state file)"},
	{Key: "tls", Default: false, Usage: "connect with TLS (system roots)"},
	{Key: "tls_ca_file", Default: "", Usage: "PEM CA bundle for the directory (implies --tls)"},
	{Key: "strict", Default: false, Usage: "strict mode: require contacts' account signatures, pinned on first use"},
	{Key: "max_age", Default: time.Duration(0), Usage: "oldest epoch accepted (0: the client's default, " + client.DefaultMaxAge.String() + "); an epoch is fresh while at most max_age + skew old"},
	{Key: "skew", Default: time.Duration(0), Usage: "clock skew allowed with the directory and witnesses (0: the client's default, " + client.DefaultSkew.String() + "); added to max_age and max_audit_lag"},
	{Key: "max_audit_lag", Default: time.Duration(0), Usage: "with an audit policy: oldest audited epoch accepted (0: the client's default, " + client.DefaultMaxAuditLag.String() + ")"},
	{Key: "auditors", Default: []string(nil), Usage: "auditor base URLs to gossip with (comma-separated)"},
	{Key: "gossip_on_lookup", Default: false, Usage: "gossip each new checkpoint with the auditors before a lookup trusts it"},
	{Key: "monitor_interval", Default: 60 * time.Second, Usage: "kt monitor polling interval"},
	{Key: "insecure_no_witnesses", Default: false, Usage: "accept checkpoints without witness cosignatures (INSECURE, development only)"},
	{Key: "json", Default: false, Usage: "print JSON"},
	{Key: "timeout", Default: 30 * time.Second, Usage: "timeout of each command's network calls"},
}

// command is kt's configuration table for cliconfig.
var command = &cliconfig.Command{Name: "kt", Prefix: "KT", Options: options, Usage: usage, KeyInHelp: true}

const usage = `kt is the key transparency client: it verifies the directory's answers
before encrypting, and monitors this device's own handles.

Usage:
  kt init [--suite x25519|hybrid]        create this device's keys, pin the directory's parameters
  kt register HANDLE --token TOKEN [--account-key]
                                         enroll HANDLE with this device as its first device
  kt device export                       print this device's descriptor (for kt device add)
  kt device add DESCRIPTOR               add a device (run on an existing device)
  kt join HANDLE                         after kt device add: start using HANDLE on this device
  kt device remove DEVICE_ID             remove a device (hex ID, see kt lookup)
  kt device rekey                        replace this device's keys
  kt device upgrade                      log this device's message-signing key (a device set
                                         written before signed messages), so it can send
  kt account-key                         set or replace the account key, signed by this device (strict-mode senders pin it)
  kt account-key rotate                  replace the account key, signed by the current one (kind 3)
  kt account-key export [--out FILE]     write the account key, encrypted under the passphrase read
                                         from stdin's first line (a secret: keep it offline)
  kt account-key import --in FILE        store the account key from an export (passphrase on stdin)
  kt recover HANDLE... [--replace]       with an imported account key: add this new device to
                                         HANDLE (--replace: as its only device), signed by the key
  kt lookup HANDLE                       show HANDLE's verified devices and what was verified
  kt encrypt HANDLE [--in FILE] [--out FILE]
                                         encrypt to every verified device: one envelope per line
  kt decrypt [--in FILE] [--out FILE]    decrypt the envelope for this device, after authenticating
                                         its sender (a device of the sender's verified device set)
  kt monitor [--once]                    poll this device's handles, print changes and alerts;
                                         check the remembered contacts too
  kt verify HANDLE                       print the verification code of HANDLE and you, to compare
                                         with HANDLE's own device (in person, or on a call you trust)
  kt verify HANDLE CODE                  confirm the code HANDLE's device shows: pin HANDLE's identity
                                         (a later change is refused, and an alert); refused if it differs
  kt verify --forget HANDLE              remove HANDLE's verification pin, to verify it again
  kt contacts                            list the contacts remembered (each kt encrypt recipient)
                                         and the verified ones
  kt contacts check                      check each remembered or verified contact against the
                                         directory's current answer; alerts write evidence next to
                                         the state file
  kt status                              show this device, its handles and the trusted checkpoint

Exit status: 0 on success, 1 on a failure (including a verification
failure), 2 on bad arguments, 3 when kt monitor --once or kt contacts
check raised an alert.

Every flag below is also a configuration key: in the file given by
--config (YAML, TOML or JSON) and in the environment (the variable in
parentheses). Flags override the environment, which overrides the file.

Flags:
`

// cmdFlags are the per-command flags; each is accepted only by the
// commands listed in cmdFlagUse.
type cmdFlags struct {
	suite      string
	token      string
	accountKey bool
	in, out    string
	once       bool
	replace    bool
	noWait     bool
	forget     bool
}

var cmdFlagUse = map[string][]string{
	"suite":       {"init"},
	"token":       {"register"},
	"account-key": {"register"},
	"in":          {"encrypt", "decrypt", "account-key"},
	"out":         {"encrypt", "decrypt", "account-key"},
	"once":        {"monitor"},
	"replace":     {"recover"},
	"no-wait":     {"register", "device", "account-key", "recover"},
	"forget":      {"verify"},
}

func loadConfig(args []string, out io.Writer) (*Config, *cmdFlags, []string, error) {
	fs := command.FlagSet(out, nil)
	cf := &cmdFlags{}
	fs.StringVar(&cf.suite, "suite", "x25519", "kt init: HPKE suite, x25519 or hybrid (MLKEM768-X25519)")
	fs.StringVar(&cf.token, "token", "", "kt register: the enrollment token the operator issued")
	fs.BoolVar(&cf.accountKey, "account-key", false, "kt register: also create an account key and sign the device set with it")
	fs.StringVar(&cf.in, "in", "-", "kt encrypt/decrypt/account-key import: input file (- for stdin)")
	fs.StringVar(&cf.out, "out", "-", "kt encrypt/decrypt/account-key export: output file (- for stdout)")
	fs.BoolVar(&cf.once, "once", false, "kt monitor: poll once and exit (status 3 on an alert)")
	fs.BoolVar(&cf.replace, "replace", false, "kt recover: make this device the handle's only device")
	fs.BoolVar(&cf.forget, "forget", false, "kt verify: remove the contact's verification pin, to verify it again")
	fs.BoolVar(&cf.noWait, "no-wait", false, "kt register/device/account-key/recover: return once the directory accepted the change, without waiting until lookups show it (the next epoch); a following command may not see it yet")
	if err := fs.Parse(args); err != nil {
		return nil, nil, nil, err
	}
	rest := fs.Args()
	cmd := ""
	if len(rest) > 0 {
		cmd = rest[0]
	}
	var bad []string
	fs.Visit(func(f *pflag.Flag) {
		if cmds, ok := cmdFlagUse[f.Name]; ok && !contains(cmds, cmd) {
			bad = append(bad, "--"+f.Name)
		}
	})
	if len(bad) > 0 {
		return nil, nil, nil, fmt.Errorf("%s not valid for %q", strings.Join(bad, ", "), cmd)
	}

	var c Config
	if err := command.Load(fs, &c); err != nil {
		return nil, nil, nil, err
	}
	if c.StateFile == "" {
		dir, err := os.UserConfigDir()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("configuration: state_file not set and no user configuration directory: %w", err)
		}
		c.StateFile = filepath.Join(dir, "kt", "state.json")
	}
	if c.ParamsFile == "" {
		c.ParamsFile = filepath.Join(filepath.Dir(c.StateFile), "params.json")
	}
	if c.Directory == "" {
		return nil, nil, nil, fmt.Errorf("configuration: directory must be set")
	}
	if c.MonitorInterval <= 0 || c.Timeout <= 0 || c.MaxAge < 0 || c.MaxAuditLag < 0 {
		return nil, nil, nil, fmt.Errorf("configuration: monitor_interval and timeout must be positive, max_age and max_audit_lag not negative")
	}
	return &c, cf, rest, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
