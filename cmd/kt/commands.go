package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/cliconfig"
)

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
	exitAlert = 3
)

// usageError is a bad invocation (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// errAlert reports that kt monitor --once or kt contacts check raised
// alerts (exit status 3).
var errAlert = errors.New("alerts raised")

// app is one invocation of kt.
type app struct {
	cfg    *Config
	flags  *cmdFlags
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
	conn   *grpc.ClientConn
}

// run executes kt with args and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cfg, cf, rest, err := loadConfig(args, stderr)
	switch {
	case errors.Is(err, pflag.ErrHelp):
		return exitOK
	case err != nil:
		fmt.Fprintf(stderr, "kt: %v (see kt --help)\n", err)
		return exitUsage
	}
	a := &app{cfg: cfg, flags: cf, stdin: stdin, stdout: stdout, stderr: stderr,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	defer func() {
		if a.conn != nil {
			a.conn.Close()
		}
	}()
	err = a.dispatch(ctx, rest)
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "kt: %v (see kt --help)\n", err)
		return exitUsage
	case errors.Is(err, errAlert):
		return exitAlert
	default:
		fmt.Fprintf(stderr, "kt: %v\n", err)
		return exitFail
	}
}

func nargs(args []string, n int, form string) error {
	if len(args) != n {
		return usagef("usage: kt %s", form)
	}
	return nil
}

// nargsThen runs f if there are n args, else fails with the usage form.
func nargsThen(args []string, n int, form string, f func() error) error {
	if err := nargs(args, n, form); err != nil {
		return err
	}
	return f()
}

func (a *app) dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("no command")
	}
	cmd, args := args[0], args[1:]
	if cmd != "monitor" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.cfg.Timeout)
		defer cancel()
	}
	switch cmd {
	case "init":
		return nargsThen(args, 0, "init [--suite x25519|hybrid]", func() error { return a.init(ctx) })
	case "register":
		if err := nargs(args, 1, "register HANDLE --token TOKEN [--account-key]"); err != nil {
			return err
		}
		if a.flags.token == "" {
			return usagef("register needs --token")
		}
		return a.register(ctx, args[0])
	case "join":
		return nargsThen(args, 1, "join HANDLE", func() error { return a.join(ctx, args[0]) })
	case "device":
		if len(args) == 0 {
			return usagef("usage: kt device export|add|remove|rekey|upgrade")
		}
		sub, args := args[0], args[1:]
		switch sub {
		case "export":
			return nargsThen(args, 0, "device export", func() error { return a.deviceExport(ctx) })
		case "add":
			if err := nargs(args, 1, "device add DESCRIPTOR"); err != nil {
				return err
			}
			d, err := client.ParseDescriptor(args[0])
			if err != nil {
				return usagef("%v", err)
			}
			return a.submit(ctx, "added device "+hex.EncodeToString(d.ID[:]), func(c *client.Client) ([]*client.Submitted, error) { return c.AddDevice(ctx, d) })
		case "remove":
			if err := nargs(args, 1, "device remove DEVICE_ID"); err != nil {
				return err
			}
			id, err := hex.DecodeString(args[0])
			if err != nil || len(id) != 16 {
				return usagef("device ID %q is not 32 hex digits", args[0])
			}
			return a.submit(ctx, "removed device "+args[0], func(c *client.Client) ([]*client.Submitted, error) { return c.RemoveDevice(ctx, [16]byte(id)) })
		case "rekey":
			return nargsThen(args, 0, "device rekey", func() error {
				return a.submit(ctx, "re-keyed this device", func(c *client.Client) ([]*client.Submitted, error) { return c.Rekey(ctx) })
			})
		case "upgrade":
			// SPEC(design.md 5.3): a device upgrades by a kind-2 change
			// writing a format-0x02 set with its message-signing key.
			return nargsThen(args, 0, "device upgrade", func() error {
				c, err := a.client()
				if err != nil {
					return err
				}
				subs, err := c.UpgradeMessageKey(ctx)
				if err != nil {
					return err
				}
				if len(subs) == 0 {
					return a.output(map[string]any{"upgraded": false}, func(w io.Writer) {
						fmt.Fprintln(w, "this device's message-signing key is already in every own handle's verified device set")
					})
				}
				return a.printSubmitted(ctx, c, "logged this device's message-signing key (device set format 0x02)", subs)
			})
		default:
			return usagef("unknown command %q", "device "+sub)
		}
	case "account-key":
		if len(args) == 0 {
			return a.submit(ctx, "set a new account key", func(c *client.Client) ([]*client.Submitted, error) { return c.SetAccountKey(ctx) })
		}
		sub, args := args[0], args[1:]
		if err := nargs(args, 0, "account-key [rotate|export|import]"); err != nil {
			return err
		}
		switch sub {
		case "rotate":
			return a.submit(ctx, "rotated the account key", func(c *client.Client) ([]*client.Submitted, error) { return c.RotateAccountKey(ctx) })
		case "export":
			return a.accountExport(ctx)
		case "import":
			if a.flags.in == "-" {
				return usagef("account-key import needs --in FILE (stdin carries the passphrase)")
			}
			return a.accountImport(ctx)
		default:
			return usagef("unknown command %q", "account-key "+sub)
		}
	case "recover":
		if len(args) == 0 {
			return usagef("usage: kt recover HANDLE... [--replace]")
		}
		return a.submit(ctx, "recovered with the account key", func(c *client.Client) ([]*client.Submitted, error) {
			return c.RecoverWithAccountKey(ctx, args, a.flags.replace)
		})
	case "lookup":
		return nargsThen(args, 1, "lookup HANDLE", func() error { return a.lookup(ctx, args[0]) })
	case "encrypt":
		return nargsThen(args, 1, "encrypt HANDLE [--in FILE] [--out FILE]", func() error { return a.encrypt(ctx, args[0]) })
	case "decrypt":
		return nargsThen(args, 0, "decrypt [--in FILE] [--out FILE]", func() error { return a.decrypt(ctx) })
	case "monitor":
		return nargsThen(args, 0, "monitor [--once]", func() error { return a.monitor(ctx) })
	case "status":
		return nargsThen(args, 0, "status", func() error { return a.status(ctx) })
	case "verify":
		return a.verify(ctx, args)
	case "contacts":
		if len(args) == 0 {
			return a.contacts(ctx)
		}
		if args[0] != "check" {
			return usagef("unknown command %q", "contacts "+args[0])
		}
		return nargsThen(args[1:], 0, "contacts check", func() error { return a.contactsCheck(ctx) })
	default:
		return usagef("unknown command %q", cmd)
	}
}

// dial connects to the directory.
func (a *app) dial() (*grpc.ClientConn, error) {
	if a.conn != nil {
		return a.conn, nil
	}
	creds := insecure.NewCredentials()
	if a.cfg.TLS || a.cfg.TLSCAFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if a.cfg.TLSCAFile != "" {
			pem, err := os.ReadFile(a.cfg.TLSCAFile)
			if err != nil {
				return nil, fmt.Errorf("tls_ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("tls_ca_file %s: no certificates", a.cfg.TLSCAFile)
			}
			tc.RootCAs = pool
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(a.cfg.Directory, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("directory %s: %w", a.cfg.Directory, err)
	}
	a.conn = conn
	return conn, nil
}

// client returns the verifying client over the pinned parameters.
func (a *app) client() (*client.Client, error) {
	b, err := os.ReadFile(a.cfg.ParamsFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no pinned parameters at %s: run kt init first", a.cfg.ParamsFile)
	}
	if err != nil {
		return nil, err
	}
	var pb ktpb.Parameters
	if err := (protojson.UnmarshalOptions{}).Unmarshal(b, &pb); err != nil {
		return nil, fmt.Errorf("pinned parameters %s: %w", a.cfg.ParamsFile, err)
	}
	p, err := client.NewParams(&pb, client.Options{MaxAge: a.cfg.MaxAge, Skew: a.cfg.Skew, MaxAuditLag: a.cfg.MaxAuditLag, InsecureNoWitnesses: a.cfg.InsecureNoWitnesses})
	if err != nil {
		return nil, fmt.Errorf("pinned parameters %s: %w", a.cfg.ParamsFile, err)
	}
	conn, err := a.dial()
	if err != nil {
		return nil, err
	}
	return client.New(ktpb.NewDirectoryClient(conn), p, &client.FileStore{Path: a.cfg.StateFile}, client.Config{
		Strict:         a.cfg.Strict,
		Log:            ktpb.NewLogClient(conn),
		Auditors:       a.cfg.Auditors,
		GossipOnLookup: a.cfg.GossipOnLookup,
		Logger:         a.log,
		// The replay cache of received messages, apart from the state
		// (design.md 12.3, 16): one small binary file per message.
		Replay: &client.FileStore{Path: a.cfg.StateFile + ".replay"},
	})
}

// output prints v as JSON, or human text made by human.
func (a *app) output(v any, human func(w io.Writer)) error {
	if a.cfg.JSON {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	human(a.stdout)
	return nil
}

func (a *app) init(ctx context.Context) error {
	var suite api.HPKESuite
	switch a.flags.suite {
	case "x25519":
		suite = api.SuiteX25519
	case "hybrid":
		suite = api.SuiteHybrid
	default:
		return usagef("--suite %q: want x25519 or hybrid", a.flags.suite)
	}
	if err := os.MkdirAll(filepath.Dir(a.cfg.StateFile), 0o700); err != nil {
		return err
	}
	conn, err := a.dial()
	if err != nil {
		return err
	}
	pb, err := ktpb.NewDirectoryClient(conn).GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		return fmt.Errorf("fetching the directory's parameters: %w", err)
	}
	np, err := client.NewParams(pb, client.Options{Skew: a.cfg.Skew, InsecureNoWitnesses: a.cfg.InsecureNoWitnesses})
	if err != nil {
		return fmt.Errorf("the directory's parameters: %w", err)
	}
	if old, err := os.ReadFile(a.cfg.ParamsFile); err == nil {
		var prev ktpb.Parameters
		if err := protojson.Unmarshal(old, &prev); err != nil || !proto.Equal(&prev, pb) {
			return fmt.Errorf("the directory's parameters differ from those pinned in %s; refusing (a new deployment needs a new state)", a.cfg.ParamsFile)
		}
	} else {
		b, err := protojson.MarshalOptions{Multiline: true}.Marshal(pb)
		if err != nil {
			return err
		}
		if err := os.WriteFile(a.cfg.ParamsFile, b, 0o600); err != nil {
			return err
		}
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	k, err := c.Init(ctx, suite)
	if err != nil {
		return err
	}
	return a.output(map[string]any{
		"device_id": hex.EncodeToString(k.ID[:]), "suite": a.flags.suite, "descriptor": k.Descriptor(),
		"origin": pb.GetOrigin(), "log_public_key": pb.GetLogPublicKey(), "witness_policy": pb.GetWitnessPolicy(),
		"audit_policy": pb.GetAuditPolicy(),
	}, func(w io.Writer) {
		fmt.Fprintf(w, "device %x created (%s)\n", k.ID, a.flags.suite)
		fmt.Fprintf(w, "pinned directory %s, log key %s\n", pb.GetOrigin(), pb.GetLogPublicKey())
		if np.Audit != nil {
			fmt.Fprintf(w, "audit mode: every epoch must carry audit statements of quorum %s\n", np.Audit.Quorum())
		}
		fmt.Fprintf(w, "compare these with the operator's published parameters before relying on them\n")
	})
}

func (a *app) register(ctx context.Context, handle string) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	s, err := c.Enroll(ctx, handle, a.flags.token, a.flags.accountKey)
	if err != nil {
		return err
	}
	return a.printSubmitted(ctx, c, "registered "+s.Handle, []*client.Submitted{s})
}

// printSubmitted waits until lookups show the accepted changes, so that the
// next command sees them (the user adds a device right after registering),
// and prints them with the epoch that made each visible.
func (a *app) printSubmitted(ctx context.Context, c *client.Client, what string, subs []*client.Submitted) error {
	if a.flags.noWait {
		return a.printAccepted(what, subs)
	}
	seen, err := c.AwaitVisible(ctx, subs...)
	if err != nil {
		return fmt.Errorf("%s, but: %w", what, err)
	}
	type out struct {
		Handle   string `json:"handle"`
		Version  uint64 `json:"version"`
		LogIndex uint64 `json:"log_index"`
		Epoch    uint64 `json:"epoch"`
	}
	var js []out
	for i, s := range subs {
		js = append(js, out{s.Handle, s.Version, s.LogIndex, seen[i].Epoch.Record.Epoch})
	}
	return a.output(map[string]any{"action": what, "changes": js}, func(w io.Writer) {
		fmt.Fprintln(w, what)
		for _, s := range js {
			fmt.Fprintf(w, "  %s: version %d logged at index %d, visible in epoch %d\n", s.Handle, s.Version, s.LogIndex, s.Epoch)
		}
	})
}

// printAccepted prints changes the directory accepted without waiting for
// them to be visible (--no-wait).
func (a *app) printAccepted(what string, subs []*client.Submitted) error {
	type out struct {
		Handle   string `json:"handle"`
		Version  uint64 `json:"version"`
		LogIndex uint64 `json:"log_index"`
	}
	var js []out
	for _, s := range subs {
		js = append(js, out{s.Handle, s.Version, s.LogIndex})
	}
	return a.output(map[string]any{"action": what, "changes": js, "visible": false}, func(w io.Writer) {
		fmt.Fprintln(w, what)
		for _, s := range js {
			fmt.Fprintf(w, "  %s: version %d logged at index %d, visible from the next epoch (not waited for: --no-wait)\n", s.Handle, s.Version, s.LogIndex)
		}
	})
}

func (a *app) submit(ctx context.Context, what string, f func(*client.Client) ([]*client.Submitted, error)) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	subs, err := f(c)
	if err != nil {
		return err
	}
	return a.printSubmitted(ctx, c, what, subs)
}

func (a *app) join(ctx context.Context, handle string) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	res, err := c.Join(ctx, handle)
	if err != nil {
		return err
	}
	return a.output(map[string]any{"handle": res.Handle, "version": res.Version}, func(w io.Writer) {
		fmt.Fprintf(w, "joined %s at version %d (%s); monitoring from here\n", res.Handle, res.Version, cliconfig.Count(len(res.DeviceSet.Devices), "device"))
	})
}

func (a *app) deviceExport(ctx context.Context) error {
	st, err := (&client.FileStore{Path: a.cfg.StateFile}).Load(ctx)
	if err != nil {
		return err
	}
	if st == nil {
		return fmt.Errorf("no device at %s: run kt init first", a.cfg.StateFile)
	}
	var s client.State
	if err := s.UnmarshalBinary(st); err != nil {
		return err
	}
	if s.Device == nil {
		return client.ErrNoDevice
	}
	d := s.Device.Descriptor()
	return a.output(map[string]any{"device_id": hex.EncodeToString(s.Device.ID[:]), "descriptor": d}, func(w io.Writer) {
		fmt.Fprintln(w, d)
	})
}

// passphrase reads the passphrase from the first line of stdin.
func (a *app) passphrase() ([]byte, error) {
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	p := strings.TrimRight(line, "\r\n")
	if p == "" {
		return nil, usagef("the passphrase (stdin's first line) is empty")
	}
	return []byte(p), nil
}

func (a *app) accountExport(ctx context.Context) error {
	pass, err := a.passphrase()
	if err != nil {
		return err
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	exp, err := c.ExportAccountKey(ctx, pass)
	if err != nil {
		return err
	}
	return a.writeOut([]byte(exp + "\n"))
}

func (a *app) accountImport(ctx context.Context) error {
	pass, err := a.passphrase()
	if err != nil {
		return err
	}
	in, err := a.openIn()
	if err != nil {
		return err
	}
	exp, err := io.ReadAll(io.LimitReader(in, 1<<20))
	in.Close()
	if err != nil {
		return err
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	hs, err := c.ImportAccountKey(ctx, string(exp), pass)
	if err != nil {
		return err
	}
	return a.output(map[string]any{"handles": hs}, func(w io.Writer) {
		fmt.Fprintf(w, "imported the account key; its handles: %s\n", strings.Join(hs, " "))
	})
}

type deviceJSON struct {
	ID         string `json:"id"`
	Suite      string `json:"suite"`
	SigningKey string `json:"signing_key"`
	Created    uint64 `json:"created"`
}

// newDeviceJSON is how kt shows a device, in JSON and in text.
func newDeviceJSON(d api.Device) deviceJSON {
	return deviceJSON{hex.EncodeToString(d.ID[:]), suiteName(d.Suite), hex.EncodeToString(d.SigningKey[:]), d.Created}
}

func suiteName(s api.HPKESuite) string {
	switch s {
	case api.SuiteX25519:
		return "x25519"
	case api.SuiteHybrid:
		return "hybrid"
	}
	return s.String()
}

func (a *app) lookup(ctx context.Context, handle string) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	res, err := c.Lookup(ctx, handle)
	if err != nil {
		return err
	}
	e := res.Epoch
	verified := []string{
		"VRF proof of the handle's index",
		map[bool]string{true: "map membership of the latest change record", false: "map absence proof: not registered"}[res.Registered],
		fmt.Sprintf("epoch %d record is the last entry of checkpoint size %d", e.Record.Epoch, e.Size),
	}
	if e.Reused || len(e.Cosignatures) == 0 && !a.cfg.InsecureNoWitnesses {
		verified = append(verified, "checkpoint already trusted: log signature, witness quorum and consistency verified when it was first accepted")
	} else {
		verified = append(verified, "log signature", fmt.Sprintf("witness quorum (%d cosignatures)", len(e.Cosignatures)), "consistency with the trusted checkpoint")
	}
	audited := auditedBy(c.Params(), e)
	if c.Params().Audit != nil {
		if e.Reused || e.AuditStatements == nil {
			verified = append(verified, "audit quorum verified when the checkpoint was first accepted")
		} else {
			verified = append(verified, fmt.Sprintf("audit quorum %s (%d audit statements)", c.Params().Audit.Quorum(), len(e.AuditStatements)))
		}
		verified = append(verified, fmt.Sprintf("audit lag: epoch %s old, within %s", time.Since(e.Time()).Round(time.Millisecond), auditLag(c.Params())))
	}
	verified = append(verified, fmt.Sprintf("fresh: epoch %s old", time.Since(e.Time()).Round(time.Millisecond)))
	if res.Registered {
		verified = append(verified, "commitment opens to the device set; authorizers match (R7)", "every HPKE key deserializes")
		if a.cfg.Strict && res.DeviceSet.Account != nil {
			verified = append(verified, fmt.Sprintf("strict: signed by the pinned account key %x", res.DeviceSet.Account.Key[:8]))
		}
	}
	var devs []deviceJSON
	if res.DeviceSet != nil {
		for _, d := range res.DeviceSet.Devices {
			devs = append(devs, newDeviceJSON(d))
		}
	}
	kind := ""
	if res.Registered {
		kind = res.Kind.String()
	}
	return a.output(map[string]any{
		"handle": res.Handle, "registered": res.Registered, "version": res.Version, "kind": kind,
		"devices": devs, "epoch": e.Record.Epoch, "checkpoint_size": e.Size, "verified": verified,
		"audited_by": audited,
	}, func(w io.Writer) {
		if !res.Registered {
			fmt.Fprintf(w, "%s is not registered\n", res.Handle)
		} else {
			fmt.Fprintf(w, "%s: version %d (%s), %s\n", res.Handle, res.Version, kind, cliconfig.Count(len(devs), "device"))
			if res.Kind == api.AuthRecovery {
				fmt.Fprintln(w, "  WARNING: the latest change was made by the directory's recovery path")
			}
			for _, d := range devs {
				fmt.Fprintf(w, "  device %s  %s  signing key %s…  created %s\n", d.ID, d.Suite, d.SigningKey[:16], time.Unix(int64(d.Created), 0).UTC().Format(time.RFC3339))
			}
		}
		fmt.Fprintln(w, "verified:")
		for _, v := range verified {
			fmt.Fprintf(w, "  ✓ %s\n", v)
		}
		printAudited(w, audited)
	})
}

// auditJSON is one audit statement on the epoch checkpoint.
type auditJSON struct {
	Auditor string    `json:"auditor"`
	Key     string    `json:"key"`
	Time    time.Time `json:"time"`
}

// auditedBy lists the audit statements of e: the verified ones, or, for
// an epoch reused from the trusted state (verified when it was first
// accepted), those on its checkpoint note. nil without an audit policy.
//
// SPEC(design.md 12.2 step 2.2a)
func auditedBy(p *client.Params, e *client.Epoch) []auditJSON {
	if p.Audit == nil {
		return nil
	}
	cs := e.AuditStatements
	if cs == nil {
		cs, _ = p.Audit.Check(e.Checkpoint)
	}
	out := make([]auditJSON, 0, len(cs))
	for _, c := range cs {
		out = append(out, auditJSON{Auditor: c.Witness, Key: c.Signature.Name, Time: c.Time.UTC()})
	}
	return out
}

// printAudited prints one line per audit statement.
func printAudited(w io.Writer, audited []auditJSON) {
	for _, s := range audited {
		fmt.Fprintf(w, "audited by  %s (%s) at %s\n", s.Auditor, s.Key, s.Time.Format(time.RFC3339))
	}
}

func auditLag(p *client.Params) time.Duration {
	lag := p.MaxAuditLag
	if lag == 0 {
		lag = client.DefaultMaxAuditLag
	}
	skew := p.Skew
	if skew == 0 {
		skew = client.DefaultSkew
	}
	return lag + skew
}

func (a *app) openIn() (io.ReadCloser, error) {
	if a.flags.in == "-" {
		return io.NopCloser(a.stdin), nil
	}
	return os.Open(a.flags.in)
}

// writeOut writes b to --out (stdout for -), atomically for a file.
func (a *app) writeOut(b []byte) error {
	if a.flags.out == "-" {
		_, err := a.stdout.Write(b)
		return err
	}
	tmp := a.flags.out + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, a.flags.out)
}

func (a *app) encrypt(ctx context.Context, handle string) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	in, err := a.openIn()
	if err != nil {
		return err
	}
	pt, err := io.ReadAll(io.LimitReader(in, client.MaxPlaintext+1))
	in.Close()
	if err != nil {
		return err
	}
	envs, err := c.Encrypt(ctx, handle, pt)
	if err != nil {
		return err
	}
	// One envelope per line, base64: the per-device ciphertexts a
	// messenger would route to each device.
	var lines strings.Builder
	type envJSON struct {
		Device   string `json:"device"`
		Owner    string `json:"owner"`
		Envelope []byte `json:"envelope"`
	}
	var js []envJSON
	for _, e := range envs {
		b, err := e.MarshalBinary()
		if err != nil {
			return err
		}
		lines.WriteString(base64.StdEncoding.EncodeToString(b))
		lines.WriteByte('\n')
		js = append(js, envJSON{hex.EncodeToString(e.Device[:]), e.Owner, b})
	}
	if a.cfg.JSON && a.flags.out == "-" {
		return a.output(map[string]any{"to": envs[0].To, "envelopes": js}, nil)
	}
	if err := a.writeOut([]byte(lines.String())); err != nil {
		return err
	}
	mine := 0
	for _, e := range envs {
		if e.Owner != e.To {
			mine++
		}
	}
	if a.cfg.JSON {
		return a.output(map[string]any{"to": envs[0].To, "envelopes": js}, nil)
	}
	fmt.Fprintf(a.stderr, "kt: encrypted to %d verified devices of %s and %d of your other devices\n", len(envs)-mine, envs[0].To, mine)
	return nil
}

func (a *app) decrypt(ctx context.Context) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	st, err := c.State(ctx)
	if err != nil {
		return err
	}
	if st.Device == nil {
		return client.ErrNoDevice
	}
	in, err := a.openIn()
	if err != nil {
		return err
	}
	defer in.Close()
	sc := bufio.NewScanner(in)
	sc.Buffer(nil, 2*client.MaxPlaintext+4096)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return fmt.Errorf("line %d: not base64: %w", n, err)
		}
		e, err := client.ParseEnvelope(b)
		if err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		if e.Device != st.Device.ID {
			continue
		}
		// SPEC(design.md 12.3): Decrypt authenticates the sender or
		// refuses with a typed error, and shows no plaintext then.
		pt, e, err := c.Decrypt(ctx, b)
		if err != nil {
			return fmt.Errorf("line %d: refused: %w", n, err)
		}
		if a.cfg.JSON {
			return a.output(map[string]any{"from": e.From, "from_device": hex.EncodeToString(e.SenderDevice[:]), "authenticated": true,
				"sent": time.UnixMilli(int64(min(e.Timestamp, math.MaxInt64))).UTC(), "to": e.To, "plaintext": pt}, nil)
		}
		fmt.Fprintf(a.stderr, "kt: from %s, device %x (authenticated: signed by a device of its verified, logged device set), to %s\n", e.From, e.SenderDevice, e.To)
		return a.writeOut(pt)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return fmt.Errorf("no envelope for this device (%x)", st.Device.ID)
}

func (a *app) monitor(ctx context.Context) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	for {
		alerts, err := a.pollOnce(ctx, c)
		if a.flags.once {
			if err != nil {
				return err
			}
			if alerts > 0 {
				return errAlert
			}
			return nil
		}
		if err != nil {
			fmt.Fprintf(a.stderr, "kt: %s: %v\n", time.Now().UTC().Format(time.RFC3339), err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(a.cfg.MonitorInterval):
		}
	}
}

type changeJSON struct {
	Handle  string       `json:"handle"`
	Version uint64       `json:"version"`
	By      string       `json:"by"`
	Added   []deviceJSON `json:"added,omitempty"`
	Removed []deviceJSON `json:"removed,omitempty"`
	Alerts  []string     `json:"alerts,omitempty"`
}

// pollOnce polls every handle and gossips; it returns the number of alerts.
//
// SPEC(design.md 15)
func (a *app) pollOnce(ctx context.Context, c *client.Client) (int, error) {
	pctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	reps, err := c.Monitor(pctx)
	alerts := 0
	for _, r := range reps {
		for _, ch := range r.Changes {
			j := changeJSON{Handle: r.Handle, Version: ch.Version, By: ch.By.String()}
			for _, d := range ch.Added {
				j.Added = append(j.Added, newDeviceJSON(d))
			}
			for _, d := range ch.Removed {
				j.Removed = append(j.Removed, newDeviceJSON(d))
			}
			for _, al := range ch.Alerts {
				j.Alerts = append(j.Alerts, al.Kind.String()+": "+al.Message)
			}
			a.output(j, func(w io.Writer) {
				fmt.Fprintf(w, "%s version %d by %s", r.Handle, ch.Version, j.By)
				removed := map[string]bool{}
				for _, d := range j.Removed {
					removed[d.ID] = true
				}
				for _, d := range j.Added {
					if removed[d.ID] {
						fmt.Fprintf(w, ", re-keyed %s", d.ID)
						delete(removed, d.ID)
					} else {
						fmt.Fprintf(w, ", added %s", d.ID)
					}
				}
				for _, d := range j.Removed {
					if removed[d.ID] {
						fmt.Fprintf(w, ", removed %s", d.ID)
					}
				}
				fmt.Fprintln(w)
				for _, al := range j.Alerts {
					fmt.Fprintf(w, "  ALERT %s\n", al)
				}
			})
		}
		for _, al := range r.Alerts {
			alerts++
			if al.Kind == client.AlertTransientDevice {
				msg := al.Kind.String() + ": " + al.Message
				a.output(map[string]any{"handle": r.Handle, "alert": msg}, func(w io.Writer) {
					fmt.Fprintf(w, "%s ALERT %s\n", r.Handle, msg)
				})
			}
		}
	}
	// SPEC(design.md 13.4): a device none of whose keys authorizes its
	// handle any more sees the public records; being locked out is itself
	// an alert.
	var lo *client.LockedOutError
	if errors.As(err, &lo) {
		for _, ch := range lo.Changes {
			j := changeJSON{Handle: lo.Handle, Version: ch.Version, By: ch.By.String()}
			a.output(j, func(w io.Writer) {
				fmt.Fprintf(w, "%s version %d by %s (records only)\n", lo.Handle, ch.Version, j.By)
			})
		}
		for _, al := range append(lo.Alerts, client.Alert{Message: "this device is no longer an authorizer of the handle: the directory refuses it the device sets"}) {
			alerts++
			msg := al.Message
			if al.Kind != 0 {
				msg = al.Kind.String() + ": " + msg
			} else {
				msg = "locked out: " + msg
			}
			a.output(map[string]any{"handle": lo.Handle, "alert": msg}, func(w io.Writer) {
				fmt.Fprintf(w, "%s ALERT %s\n", lo.Handle, msg)
			})
		}
		err = nil
	}
	if err != nil {
		return alerts, err
	}
	// SPEC(design.md 13.3): "kt monitor runs it too".
	creps, cerr := c.CheckContacts(pctx)
	calerts, werr := a.printContactReports(creps)
	alerts += calerts
	if werr != nil {
		return alerts, werr
	}
	if calerts > 0 {
		cerr = nil // reported as alerts
	}
	if len(a.cfg.Auditors) > 0 {
		rs, gerr := c.Gossip(pctx)
		for _, r := range rs {
			j := map[string]any{"gossip": r.Auditor}
			if r.Err != nil {
				j["error"] = r.Err.Error()
			} else {
				j["size"] = r.Size
			}
			a.output(j, func(w io.Writer) {
				if r.Err != nil {
					fmt.Fprintf(w, "gossip %s: %v\n", r.Auditor, r.Err)
				} else {
					fmt.Fprintf(w, "gossip %s: consistent (auditor at size %d)\n", r.Auditor, r.Size)
				}
			})
		}
		if gerr != nil {
			alerts++
			a.output(map[string]any{"alert": gerr.Error()}, func(w io.Writer) { fmt.Fprintf(w, "ALERT %v\n", gerr) })
		}
	}
	return alerts, cerr
}

func (a *app) status(ctx context.Context) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	st, err := c.State(ctx)
	if err != nil {
		return err
	}
	out := map[string]any{}
	if st.Device != nil {
		out["device_id"] = hex.EncodeToString(st.Device.ID[:])
	}
	hs := map[string]uint64{}
	for h, m := range st.Handles {
		hs[h] = m.Version
	}
	out["handles"] = hs
	if st.Trusted != nil {
		out["checkpoint_size"] = st.Trusted.Size
		out["epoch"] = st.Trusted.Epoch.Epoch
	}
	var refused []string
	for log, r := range st.Refused {
		refused = append(refused, fmt.Sprintf("log %s refused: %s evidence %s: %s", log, r.Kind, r.ID, r.What))
	}
	if refused != nil {
		out["refused"] = refused
	}
	return a.output(out, func(w io.Writer) {
		for _, r := range refused {
			fmt.Fprintf(w, "REFUSED %s\n", r)
		}
		if st.Device == nil {
			fmt.Fprintln(w, "no device keys (kt init)")
		} else {
			fmt.Fprintf(w, "device %x\n", st.Device.ID)
		}
		for h, v := range hs {
			fmt.Fprintf(w, "  %s at version %d\n", h, v)
		}
		if st.Trusted != nil {
			fmt.Fprintf(w, "trusted checkpoint: size %d, epoch %d\n", st.Trusted.Size, st.Trusted.Epoch.Epoch)
		}
	})
}

// contacts lists the remembered contacts (design.md 13.3).
func (a *app) contacts(ctx context.Context) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	cs, err := c.Contacts(ctx)
	if err != nil {
		return err
	}
	vs, err := c.Verified(ctx)
	if err != nil {
		return err
	}
	type contactJSON struct {
		Handle         string `json:"handle"`
		Version        uint64 `json:"version,omitempty"`
		LeafHash       string `json:"leaf_hash,omitempty"`
		Epoch          uint64 `json:"epoch,omitempty"`
		CheckpointSize uint64 `json:"checkpoint_size,omitempty"`
		verifiedJSON
	}
	js := []contactJSON{}
	for _, h := range contactHandles(cs, vs) {
		j := contactJSON{Handle: h, verifiedJSON: newVerifiedJSON(vs[h])}
		if ct := cs[h]; ct != nil {
			j.Version, j.LeafHash, j.CheckpointSize = ct.Version, hex.EncodeToString(ct.LeafHash[:]), ct.Size
			if er, err := ct.Epoch(); err == nil {
				j.Epoch = er.Epoch
			}
		}
		js = append(js, j)
	}
	return a.output(map[string]any{"contacts": js}, func(w io.Writer) {
		if len(js) == 0 {
			fmt.Fprintln(w, "no contacts remembered yet (kt encrypt remembers its recipients, kt verify pins them)")
		}
		for _, j := range js {
			fmt.Fprintf(w, "%s", j.Handle)
			if j.LeafHash != "" {
				fmt.Fprintf(w, "  version %d  record %s…  verified in epoch %d (checkpoint size %d)", j.Version, j.LeafHash[:16], j.Epoch, j.CheckpointSize)
			}
			fmt.Fprintln(w, j.verifiedJSON.text())
		}
	})
}

// contactsCheck checks every remembered contact: exit status 3 on an
// alert, with the evidence written to a file whose path is printed.
//
// SPEC(design.md 13.3)
func (a *app) contactsCheck(ctx context.Context) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	reps, err := c.CheckContacts(ctx)
	alerts, werr := a.printContactReports(reps)
	switch {
	case werr != nil:
		return werr
	case alerts > 0:
		return errAlert
	}
	return err
}

// printContactReports prints the contact check's reports, writes the
// evidence of each alert that has some, and returns the number of alerts.
// Failures that are not alerts (the directory unreachable, say) are
// printed and left to the caller's error.
func (a *app) printContactReports(reps []client.ContactReport) (int, error) {
	alerts := 0
	for _, r := range reps {
		j := map[string]any{"contact": r.Handle, "remembered": r.Remembered, "current": r.Current, "verified": r.Verified}
		alert := errors.Is(r.Err, client.ErrContactChanged) || errors.Is(r.Err, client.ErrContactChain) ||
			errors.Is(r.Err, client.ErrVerifiedContactChanged)
		path := ""
		var cc *client.ContactChangedError
		if errors.As(r.Err, &cc) && cc.Evidence != nil {
			var err error
			if path, err = a.writeEvidence(string(cc.Kind), cc.Evidence); err != nil {
				return alerts, fmt.Errorf("writing the evidence about %s: %w", r.Handle, err)
			}
			j["evidence_kind"], j["evidence"], j["evidence_proves"] = cc.Kind, path, cc.Proves
		}
		switch {
		case alert:
			alerts++
			j["alert"] = r.Err.Error()
		case r.Err != nil:
			j["error"] = r.Err.Error()
		}
		a.output(j, func(w io.Writer) {
			switch {
			case alert:
				fmt.Fprintf(w, "contact %s ALERT %v\n", r.Handle, r.Err)
				if path != "" {
					fmt.Fprintf(w, "  %s evidence written to %s\n  it proves: %s\n", cc.Kind, path, cc.Proves)
				}
			case r.Err != nil:
				fmt.Fprintf(w, "contact %s: not checked: %v\n", r.Handle, r.Err)
			case r.Verified && r.Remembered == 0:
				// SPEC(design.md 13.5): verified, never encrypted to.
				fmt.Fprintf(w, "contact %s: version %d, verified identity unchanged\n", r.Handle, r.Current)
			case r.Current == r.Remembered:
				fmt.Fprintf(w, "contact %s: version %d, unchanged\n", r.Handle, r.Current)
			default:
				fmt.Fprintf(w, "contact %s: version %d to %d, chain verified\n", r.Handle, r.Remembered, r.Current)
			}
		})
	}
	return alerts, nil
}

// writeEvidence writes an evidence bundle to the evidence directory next
// to the state file, named by its kind and hash, and returns the path.
func (a *app) writeEvidence(kind string, bundle []byte) (string, error) {
	dir := filepath.Join(filepath.Dir(a.cfg.StateFile), "evidence")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	sum := sha256.Sum256(bundle)
	path := filepath.Join(dir, fmt.Sprintf("%s-%x.txt", kind, sum[:8]))
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, bundle, 0o600); err != nil {
		return "", err
	}
	return path, os.Rename(tmp, path)
}
