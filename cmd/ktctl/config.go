package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/spf13/pflag"

	"github.com/keytrans/kt/internal/cliconfig"
)

// Config is ktctl's configuration. Each field is set, from lowest to
// highest precedence, by its default, the configuration file (--config;
// YAML, TOML or JSON, keys as in the mapstructure tags; unknown keys are an
// error), the environment (KTCTL_ and the key upper-cased, e.g.
// KTCTL_LOG_URL), and flags (the key with underscores as dashes, e.g.
// --log-url). Each command accepts the flags it uses (`ktctl help
// COMMAND`); the file and the environment may set any key.
type Config struct {
	// LogURL is the base URL of the log read API (design.md 10), as ktd
	// serves it on its http_listen address. Default http://127.0.0.1:8080.
	LogURL string `mapstructure:"log_url"`
	// LogKey pins the log's checkpoint key: a C2SP signed-note vkey
	// ("origin+hash+base64"), or a file holding a vkey or ktd's log.key.
	// Empty: DataDir/log.key, else the policy's only log line.
	LogKey string `mapstructure:"log_key"`
	// DataDir is a ktd data directory (ktd's data_dir): the source of the
	// log key, the recovery key and, for --handle, the VRF private key.
	DataDir string `mapstructure:"data_dir"`
	// Policy is a witness policy file (Sigsum format, design.md 9.1). With
	// it, cosignatures are named and checked, and a checkpoint must meet
	// its quorum.
	Policy string `mapstructure:"policy"`
	// GRPC is the address of the directory's public gRPC API. Default
	// 127.0.0.1:8443.
	GRPC string `mapstructure:"grpc"`
	// GRPCTLS connects to GRPC with TLS (system roots) instead of
	// plaintext.
	GRPCTLS bool `mapstructure:"grpc_tls"`
	// RecoveryKey is the directory's recovery public key (base64,
	// "kt-recovery-public:...", or a file holding either form or ktd's
	// recovery.key). Empty: DataDir/recovery.key when it exists. Without
	// it, rule R6 of recovery changes is reported as unchecked.
	RecoveryKey string `mapstructure:"recovery_key"`
	// VRFKeyFile is the VRF private key file for --handle. Default
	// DataDir/vrf.key.
	VRFKeyFile string `mapstructure:"vrf_key_file"`
	// VRFPublicKey is the directory's VRF public key
	// ("kt-vrf-public:<base64>", as ktd prints it at start): with it,
	// --handle learns the index from a lookup whose VRF proof is verified,
	// instead of computing it with the private key.
	VRFPublicKey string `mapstructure:"vrf_public_key"`
	// Timeout bounds each network request. Default 30s.
	Timeout time.Duration `mapstructure:"timeout"`
	// JSON prints JSON instead of tables.
	JSON bool `mapstructure:"json"`
	// Full prints hashes and keys in full instead of abbreviated.
	Full bool `mapstructure:"full"`
	// SkipProofs lists entries without verifying each one's inclusion.
	SkipProofs bool `mapstructure:"skip_proofs"`
	// Size is the tree size of `proof inclusion` (0: the checkpoint's).
	Size uint64 `mapstructure:"size"`
	// Index is the VRF index of `history`, 64 hexadecimal digits.
	Index string `mapstructure:"index"`
	// Handle is the handle of `history`, whose index is computed with the
	// VRF private key.
	Handle string `mapstructure:"handle"`
	// Progress forces the progress display on stderr even when stderr is
	// not a terminal.
	Progress bool `mapstructure:"progress"`
	// Trillian is the address of trillian_log_server's gRPC API (admin and
	// log services). Default 127.0.0.1:8090.
	Trillian string `mapstructure:"trillian"`
	// DisplayName is the display name of a tree `tree create` makes.
	// Default "kt".
	DisplayName string `mapstructure:"display_name"`
	// ShowDeleted lists deleted trees too (`tree list`).
	ShowDeleted bool `mapstructure:"show_deleted"`
	// Operator is the address of the directory's private Operator gRPC
	// service (ktd's operator_listen), for `recover`. Default
	// 127.0.0.1:8444.
	Operator string `mapstructure:"operator"`
	// Replace makes `recover` set the device set to exactly the given
	// devices instead of adding them.
	Replace bool `mapstructure:"replace"`
	// Tiles makes `verify` read a C2SP tlog-tiles log instead of the read
	// API: a directory (ktd's DATA_DIR/log) or an http(s) URL (ktd's HTTP
	// root).
	Tiles string `mapstructure:"tiles"`
	// Position is the file `verify` keeps its replay state in, to resume.
	Position string `mapstructure:"position"`
	// ExactSignatures makes `verify` check every signature with
	// crypto/ed25519 instead of in batches.
	ExactSignatures bool `mapstructure:"exact_signatures"`
	// EvidenceOut is where `verify` writes a split-view evidence bundle.
	EvidenceOut string `mapstructure:"evidence_out"`
	// Quiet turns off `verify`'s progress bar.
	Quiet bool `mapstructure:"quiet"`
	// OldKey and NewKey are the private key files of `rotate`; Sequence,
	// when not 0, its rotation sequence number.
	OldKey   string `mapstructure:"old_key"`
	NewKey   string `mapstructure:"new_key"`
	Sequence uint64 `mapstructure:"sequence"`

	// given says which keys were set by a flag or the environment rather
	// than left at their defaults.
	given map[string]bool
}

// option is one configuration key with its default and help.
type option = cliconfig.Option

var options = []option{
	{Key: "json", Default: false, Usage: "print JSON instead of a table"},
	{Key: "timeout", Default: 30 * time.Second, Usage: "bound on each network request"},
	{Key: "log_url", Default: "http://127.0.0.1:8080", Usage: "base URL of the log read API"},
	{Key: "log_key", Default: "", Usage: "log verifier key (vkey), or a file holding it or ktd's log.key (default DATA_DIR/log.key)"},
	{Key: "data_dir", Default: "", Usage: "ktd data directory (log.key, vrf.key, recovery.key)"},
	{Key: "policy", Default: "", Usage: "witness policy file: names and checks cosignatures"},
	{Key: "grpc", Default: "127.0.0.1:8443", Usage: "directory gRPC address"},
	{Key: "grpc_tls", Default: false, Usage: "use TLS (system roots) for --grpc"},
	{Key: "recovery_key", Default: "", Usage: "recovery public key or key file (default DATA_DIR/recovery.key if present)"},
	{Key: "vrf_key_file", Default: "", Usage: "VRF private key file (default DATA_DIR/vrf.key)"},
	{Key: "vrf_public_key", Default: "", Usage: "VRF public key (kt-vrf-public:...): learn a handle's index from a verified lookup (--grpc)"},
	{Key: "full", Default: false, Usage: "print hashes and keys in full"},
	{Key: "skip_proofs", Default: false, Usage: "do not verify each entry's inclusion proof"},
	{Key: "size", Default: uint64(0), Usage: "tree size to prove inclusion in (default: the checkpoint's)"},
	{Key: "index", Default: "", Usage: "VRF index, 64 hexadecimal digits"},
	{Key: "handle", Default: "", Usage: "handle (phone number or email); needs the VRF private key"},
	{Key: "progress", Default: false, Usage: "show progress on stderr even when it is not a terminal"},
	{Key: "trillian", Default: "127.0.0.1:8090", Usage: "trillian_log_server gRPC address"},
	{Key: "display_name", Default: "kt", Usage: "display name of the new tree"},
	{Key: "show_deleted", Default: false, Usage: "list deleted trees too"},
	{Key: "operator", Default: "127.0.0.1:8444", Usage: "directory Operator gRPC address (ktd's operator_listen)"},
	{Key: "replace", Default: false, Usage: "recover: the set becomes exactly the given devices"},
	{Key: "tiles", Default: "", Usage: "read a tlog-tiles log (directory, e.g. DATA_DIR/log, or URL) instead of the read API"},
	{Key: "position", Default: "", Usage: "file to keep the replay state in, to resume the next run"},
	{Key: "exact_signatures", Default: false, Usage: "verify each signature with crypto/ed25519 instead of in batches"},
	{Key: "evidence_out", Default: "", Usage: "file to write split-view evidence to"},
	{Key: "quiet", Default: false, Usage: "no progress bar"},
	{Key: "old_key", Default: "", Usage: "rotate: the current private key file (log: note signer key; recovery: kt-recovery-private)"},
	{Key: "new_key", Default: "", Usage: "rotate: the new private key file, same form"},
	{Key: "sequence", Default: uint64(0), Usage: "rotate: the rotation's sequence number (default: the directory's last + 1)"},
}

// loader is ktctl's configuration table for cliconfig; each command
// defines the flags of the keys it uses.
var loader = &cliconfig.Command{Name: "ktctl", Prefix: "KTCTL", Options: options}

// errUsage marks errors that exit with status 2.
var errUsage = errors.New("usage")

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

// loadConfig parses the flags of a command (the options named in keys,
// plus --config and --help) and reads the configuration file and the
// environment. It returns the positional arguments.
func loadConfig(c *command, args []string, out io.Writer) (*Config, []string, error) {
	keys := append([]string{"json"}, c.keys...)
	if c.network {
		keys = append(keys, "timeout")
	}
	fs := loader.FlagSet(io.Discard, func(key string) bool { return slices.Contains(keys, key) })
	fs.SetInterspersed(true)
	help := fs.BoolP("help", "h", false, "show this help")
	if err := fs.Parse(args); err != nil {
		return nil, nil, usageErr("%v (see ktctl help %s)", err, c.name)
	}
	if *help {
		fmt.Fprintf(out, "Usage: ktctl %s\n\n%s\n\nFlags:\n%s", c.usage, c.help, fs.FlagUsages())
		return nil, nil, pflag.ErrHelp
	}
	var cfg Config
	if err := loader.Load(fs, &cfg); err != nil {
		return nil, nil, usageErr("%v", err)
	}
	if cfg.Timeout <= 0 {
		return nil, nil, usageErr("--timeout must be positive")
	}
	cfg.given = map[string]bool{}
	for _, o := range options {
		f := fs.Lookup(cliconfig.FlagName(o.Key))
		cfg.given[o.Key] = (f != nil && f.Changed) || os.Getenv(cliconfig.EnvName(loader.Prefix, o.Key)) != ""
	}
	return &cfg, fs.Args(), nil
}
