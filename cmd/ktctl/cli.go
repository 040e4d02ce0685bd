package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keytrans/kt/cmd/ktctl/internal/ktctl"
	"github.com/keytrans/kt/log/logapi"
)

// Exit statuses.
const (
	exitOK     = 0
	exitVerify = 1 // a verification failure: evidence of misbehaviour
	exitUsage  = 2 // bad flags, arguments or configuration
	exitIO     = 3 // network, file or server errors
)

// env is what a command runs with.
type env struct {
	cfg    *Config
	args   []string
	stdout io.Writer
	stderr io.Writer
	// progress reports whether to show progress on stderr.
	progress bool
}

// command is one ktctl command.
type command struct {
	name  string // "checkpoint", "proof inclusion", ...
	usage string // after "ktctl "
	args  string // the positional arguments, for the command list
	help  string
	// keys are the options the command takes as flags (besides json).
	keys []string
	// network adds --timeout.
	network bool
	// nargs bounds the positional arguments.
	minArgs, maxArgs int
	run              func(ctx context.Context, e *env) error
}

var logKeys = []string{"log_url", "log_key", "data_dir", "policy"}

var commands []*command

func init() {
	commands = []*command{
		checkpointCmd, entriesCmd, inclusionCmd, consistencyCmd, historyCmd, diffCmd,
		verifyCmd, evidenceInspectCmd, evidenceVerifyCmd,
		treeCreateCmd, treeShowCmd, treeListCmd, recoverCmd, rotateCmd,
	}
}

const mainUsage = `ktctl inspects and verifies a key transparency directory and its log.

Usage:
  ktctl COMMAND [flags] [ARGS]

Commands:
%s
Every command prints a table, or JSON with --json. Flags can also be set in
a configuration file (--config) or the environment (KTCTL_ and the flag in
upper case with underscores, e.g. KTCTL_LOG_URL). "ktctl help COMMAND"
shows a command's flags.

Exit status: 0 success; 1 a verification failure (the log or directory
served something that does not verify: evidence of misbehaviour, or wrong
pinned keys); 2 a usage error; 3 an I/O or network error.
`

func printUsage(w io.Writer) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.name, c.args, firstLine(c.help))
	}
	tw.Flush()
	fmt.Fprintf(w, mainUsage, b.String())
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// find returns the command that args start with, and the rest of args.
func find(args []string) (*command, []string) {
	for _, c := range commands {
		words := strings.Fields(c.name)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == c.name {
			return c, args[len(words):]
		}
	}
	return nil, args
}

// run runs ktctl with args and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "--help":
		if len(args) == 1 {
			printUsage(stdout)
			return exitOK
		}
		c, rest := find(args[1:])
		if c == nil || len(rest) > 0 {
			fmt.Fprintf(stderr, "ktctl: unknown command %q (see ktctl help)\n", strings.Join(args[1:], " "))
			return exitUsage
		}
		_, _, err := loadConfig(c, []string{"--help"}, stdout)
		if !errors.Is(err, pflag.ErrHelp) {
			return report(stderr, err)
		}
		return exitOK
	}
	c, rest := find(args)
	if c == nil {
		fmt.Fprintf(stderr, "ktctl: unknown command %q (see ktctl help)\n", strings.Join(args, " "))
		return exitUsage
	}
	cfg, pos, err := loadConfig(c, rest, stdout)
	if errors.Is(err, pflag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return report(stderr, err)
	}
	if len(pos) < c.minArgs || len(pos) > c.maxArgs {
		return report(stderr, usageErr("wrong number of arguments: ktctl %s", c.usage))
	}
	e := &env{cfg: cfg, args: pos, stdout: stdout, stderr: stderr, progress: cfg.Progress || isTerminal(stderr)}
	return report(stderr, c.run(ctx, e))
}

// report prints err, if any, and returns its exit status.
func report(stderr io.Writer, err error) int {
	code := exitCode(err)
	if err != nil {
		fmt.Fprintf(stderr, "ktctl: %v\n", err)
	}
	return code
}

func exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errUsage), errors.Is(err, ktctl.ErrArgument):
		return exitUsage
	case errors.Is(err, ktctl.ErrVerification):
		return exitVerify
	default:
		return exitIO
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// keys resolves the pinned keys from the configuration.
func (e *env) keys() (*ktctl.Keys, error) {
	c := e.cfg
	k := &ktctl.Keys{}
	if c.Policy != "" {
		p, err := ktctl.LoadPolicy(c.Policy)
		if err != nil {
			return nil, usageErr("%v", err)
		}
		k.Policy = p
	}
	var err error
	switch {
	case c.LogKey != "":
		k.LogVerifier, k.LogVerifierKey, err = ktctl.ParseLogKey(c.LogKey)
	case c.DataDir != "":
		k.LogVerifier, k.LogVerifierKey, err = ktctl.DataDirLogKey(c.DataDir)
	case k.Policy != nil && len(k.Policy.Logs()) == 1:
		l := k.Policy.Logs()[0]
		k.LogVerifier, k.LogVerifierKey = l.Verifier(), l.VerifierKey
	default:
		err = errors.New("no log key: set --log-key (a vkey, or a file holding it or ktd's log.key) or --data-dir (ktd's data directory)")
	}
	if err != nil {
		return nil, usageErr("%v", err)
	}
	k.Origin = k.LogVerifier.Name()
	rk := c.RecoveryKey
	if rk == "" && c.DataDir != "" {
		if p := filepath.Join(c.DataDir, ktctl.RecoveryKeyFile); fileExists(p) {
			rk = p
		}
	}
	if rk != "" {
		key, err := ktctl.ParseRecoveryKey(rk)
		if err != nil {
			return nil, usageErr("%v", err)
		}
		k.RecoveryKey = &key
	}
	return k, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// logReader returns the HTTP read API client.
func (e *env) logReader() (*logapi.Client, error) {
	u := e.cfg.LogURL
	if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return nil, usageErr("--log-url %q: want an http:// or https:// URL", u)
	}
	return logapi.NewClient(u, &http.Client{Timeout: e.cfg.Timeout}), nil
}

// dial connects to addr with the configured transport security. The
// connection is lazy: errors show up on the first call.
func (e *env) dial(addr string, useTLS bool) (*grpc.ClientConn, error) {
	if addr == "" || strings.Contains(addr, "://") {
		return nil, usageErr("gRPC address %q: want host:port", addr)
	}
	creds := insecure.NewCredentials()
	if useTLS {
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, usageErr("gRPC address %q: %v", addr, err)
	}
	return conn, nil
}

// checkpoint fetches and verifies the latest checkpoint. A checkpoint that
// fails only its witness policy is returned with the error.
func (e *env) checkpoint(ctx context.Context) (*ktctl.Checkpoint, *ktctl.Keys, *logapi.Client, error) {
	k, err := e.keys()
	if err != nil {
		return nil, nil, nil, err
	}
	r, err := e.logReader()
	if err != nil {
		return nil, nil, nil, err
	}
	cp, err := ktctl.FetchCheckpoint(ctx, r, k)
	return cp, k, r, err
}

// printJSON writes v as indented JSON.
func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printJSONThen writes v as indented JSON and returns err, the outcome of
// the verification v reports, unless writing fails.
func (e *env) printJSONThen(v any, err error) error {
	if jerr := e.printJSON(v); jerr != nil {
		return jerr
	}
	return err
}

// short abbreviates a hash or key for tables unless --full.
func (e *env) short(h ktctl.Hex) string {
	s := h.String()
	if e.cfg.Full || len(s) <= 16 {
		return s
	}
	return s[:16] + "..."
}

// table writes rows under a header, aligned.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// fields writes name-value lines, aligned.
func fields(w io.Writer, kv ...string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(tw, "%s\t%s\n", kv[i], kv[i+1])
	}
	tw.Flush()
}

// parseUint parses a decimal argument.
func parseUint(what, s string) (uint64, error) {
	var n uint64
	if s == "" || strings.TrimLeft(s, "0123456789") != "" || len(s) > 20 {
		return 0, usageErr("%s %q: want a non-negative decimal integer", what, s)
	}
	if _, err := fmt.Sscan(s, &n); err != nil {
		return 0, usageErr("%s %q: %v", what, s, err)
	}
	return n, nil
}
