package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/cmd/ktctl/internal/ktctl"
	"github.com/keytrans/kt/internal/keyfile"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/witness"
	"github.com/keytrans/kt/vrf"
)

var keygenCmd = &command{
	name:  "keygen",
	args:  "",
	usage: "keygen --out DIR --origin ORIGIN --auditors NAME=URL,... [--quorum N]",
	help: `Create a deployment's keys and policies, once, before its first start.
Writes, under --out (deploy/README.md shows where each file is mounted):
  ktd/log.key, ktd/vrf.key, ktd/recovery.key, ktd/enroll-token.key
      the directory's private keys (ktd's log.key_file, directory.vrf_key_file,
      directory.recovery_key_file, enrollment.token_key_file)
  NAME/auditor.key, NAME/audit.key
      each auditor's cosigning key (witness key, named NAME) and audit key
      (named NAME/audit): ktauditor's key_file and audit_key
  public/witness-policy, public/audit-policy
      the policies: every auditor a witness and an auditor at its URL, a
      quorum of --quorum of them (default all)
  public/log.vkey, public/recovery.pub, public/vrf.pub
      the public keys auditors pin (ktauditor's logs[].vkey_file and
      recovery_key_file) and ktctl takes (--log-key, --recovery-key)
Existing keys are kept (never overwritten), so running it again only
rewrites the policies, e.g. after an auditor's URL changed. Private keys
are created mode 0600; move recovery.key offline (deploy/README.md).`,
	keys:    []string{"out", "origin", "auditors", "quorum"},
	maxArgs: 0,
	run:     runKeygen,
}

var paramsCmd = &command{
	name:  "params",
	args:  "",
	usage: "params [--grpc ADDR] [--log-key KEY | --data-dir DIR] [--policy FILE] [--recovery-key KEY] [--vrf-public-key KEY]",
	help: `Print the directory's client parameters, checked, for app developers.
Fetches the parameters from the directory (GetParameters), checks that the
log key is the pinned one (--log-key, --data-dir or the policy's log line),
that the witness policy is the file --policy names, the recovery key the
one --recovery-key names and the VRF key --vrf-public-key (each when
given), and that a client accepts them
(a witness quorum other than none). Prints them as kt pins them: save the
output as params.json next to kt's state file before "kt init", which then
refuses a directory whose parameters differ.`,
	keys:    []string{"grpc", "grpc_tls", "log_key", "data_dir", "policy", "recovery_key", "vrf_public_key"},
	network: true, maxArgs: 0,
	run: runParams,
}

// keygenAuditor is one auditor named on the command line.
type keygenAuditor struct{ name, url, vkey, auditVKey string }

func runKeygen(_ context.Context, e *env) error {
	c := e.cfg
	if c.Out == "" {
		return usageErr("--out must name the directory to write the keys to")
	}
	if c.Origin == "" || strings.ContainsAny(c.Origin, " \t\n+") {
		return usageErr("--origin %q: want the log's origin (ktd's log.origin), without spaces or '+'", c.Origin)
	}
	if len(c.Auditors) == 0 {
		return usageErr("--auditors: name at least one auditor as NAME=URL (a directory without witnesses is refused by its clients)")
	}
	var auds []*keygenAuditor
	seen := map[string]bool{}
	for _, a := range c.Auditors {
		name, u, ok := strings.Cut(a, "=")
		pu, err := url.Parse(u)
		if !ok || name == "" || strings.ContainsAny(name, " \t\n+/") || seen[name] || err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return usageErr("--auditors %q: want NAME=URL, a unique name without spaces, '+' or '/', and an http(s) URL", a)
		}
		seen[name] = true
		auds = append(auds, &keygenAuditor{name: name, url: strings.TrimSuffix(u, "/")})
	}
	q := c.Quorum
	if q == 0 {
		q = len(auds)
	}
	if q < 1 || q > len(auds) {
		return usageErr("--quorum %d: want 1 to %d (the number of auditors)", c.Quorum, len(auds))
	}
	ktdDir, pub := filepath.Join(c.Out, "ktd"), filepath.Join(c.Out, "public")
	if err := os.MkdirAll(ktdDir, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(pub, 0o755); err != nil {
		return err
	}

	// The directory's keys, in ktd's formats (cmd/ktd/keys.go).
	_, _, err := log.LoadOrCreateSigner(filepath.Join(ktdDir, "log.key"), c.Origin)
	if err != nil {
		return err
	}
	skey, err := os.ReadFile(filepath.Join(ktdDir, "log.key"))
	if err != nil {
		return err
	}
	logVKey, err := log.VerifierKey(string(skey))
	if err != nil {
		return err
	}
	vrfText, _, err := keyfile.LoadOrCreate(filepath.Join(ktdDir, "vrf.key"), func() (string, error) {
		k, err := vrf.GenerateKey(nil)
		if err != nil {
			return "", err
		}
		b, err := k.MarshalText()
		return string(b), err
	})
	if err != nil {
		return fmt.Errorf("VRF key: %w", err)
	}
	vk, err := vrf.ParsePrivateKey(strings.TrimSpace(vrfText))
	if err != nil {
		return fmt.Errorf("VRF key %s: %w", filepath.Join(ktdDir, "vrf.key"), err)
	}
	vrfPub, err := vk.Public().MarshalText()
	if err != nil {
		return err
	}
	recPath := filepath.Join(ktdDir, "recovery.key")
	if _, _, err := keyfile.LoadOrCreate(recPath, func() (string, error) {
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return "", err
		}
		return "kt-recovery-private:" + base64.StdEncoding.EncodeToString(seed), nil
	}); err != nil {
		return fmt.Errorf("recovery key: %w", err)
	}
	rec, err := ktctl.ParseRecoveryKey(recPath)
	if err != nil {
		return err
	}
	if _, _, err := keyfile.LoadOrCreate(filepath.Join(ktdDir, "enroll-token.key"), func() (string, error) {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return "", err
		}
		return "kt-enroll-token-key:" + base64.StdEncoding.EncodeToString(k), nil
	}); err != nil {
		return fmt.Errorf("enrollment token key: %w", err)
	}

	// The auditors' keys, in ktauditor's format (key_file, audit_key).
	for _, a := range auds {
		dir := filepath.Join(c.Out, a.name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if a.vkey, err = log.LoadOrCreateCosignerKey(filepath.Join(dir, "auditor.key"), a.name); err != nil {
			return fmt.Errorf("auditor %s: %w", a.name, err)
		}
		// SPEC(design.md 14.1): the audit key is not the witness key; it
		// is named after it + "/audit".
		if a.auditVKey, err = log.LoadOrCreateCosignerKey(filepath.Join(dir, "audit.key"), a.name+"/audit"); err != nil {
			return fmt.Errorf("auditor %s: %w", a.name, err)
		}
	}

	var wp, ap strings.Builder
	names := make([]string, len(auds))
	fmt.Fprintf(&wp, "# Written by ktctl keygen: the directory publishes a checkpoint once %d of\n# these auditors cosigned it, and clients accept only such checkpoints.\n", q)
	fmt.Fprintf(&wp, "log %s\n", logVKey)
	fmt.Fprintf(&ap, "# Written by ktctl keygen: the directory serves an epoch once %d of these\n# auditors vouched for it (audit statements), and clients require them.\n", q)
	for i, a := range auds {
		names[i] = a.name
		fmt.Fprintf(&wp, "witness %s %s %s\n", a.name, a.vkey, a.url)
		fmt.Fprintf(&ap, "auditor %s %s %s\n", a.name, a.auditVKey, a.url)
	}
	group := fmt.Sprintf("group auditors %d %s\nquorum auditors\n", q, strings.Join(names, " "))
	wp.WriteString(group)
	ap.WriteString(group)
	// SPEC(design.md 9.1, 14.3): written only as the parsers accept them.
	wpol, err := witness.ParsePolicy([]byte(wp.String()))
	if err != nil {
		return fmt.Errorf("witness policy: %w", err)
	}
	apol, err := witness.ParseAuditPolicy([]byte(ap.String()))
	if err != nil {
		return fmt.Errorf("audit policy: %w", err)
	}
	if err := witness.CheckDisjoint(wpol, apol); err != nil {
		return err
	}
	files := []struct{ name, text string }{
		{"witness-policy", wp.String()},
		{"audit-policy", ap.String()},
		{"log.vkey", logVKey + "\n"},
		{"recovery.pub", "kt-recovery-public:" + base64.StdEncoding.EncodeToString(rec[:]) + "\n"},
		{"vrf.pub", string(vrfPub) + "\n"},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(pub, f.name), []byte(f.text), 0o644); err != nil {
			return err
		}
	}
	out := map[string]any{"out": c.Out, "origin": c.Origin, "log_vkey": logVKey, "vrf_public_key": string(vrfPub),
		"recovery_public_key": strings.TrimSpace(files[3].text), "quorum": q}
	var list []map[string]string
	for _, a := range auds {
		list = append(list, map[string]string{"name": a.name, "url": a.url, "cosignature_vkey": a.vkey, "audit_vkey": a.auditVKey})
	}
	out["auditors"] = list
	if c.JSON {
		return e.printJSON(out)
	}
	kv := []string{"keys and policies", c.Out, "origin", c.Origin, "log key", logVKey,
		"VRF key", string(vrfPub), "recovery key", strings.TrimSpace(files[3].text)}
	for _, a := range auds {
		kv = append(kv, a.name+" cosigning", a.vkey, a.name+" audit", a.auditVKey)
	}
	kv = append(kv, "quorum", fmt.Sprintf("%d of %d", q, len(auds)))
	fields(e.stdout, kv...)
	return nil
}

func runParams(ctx context.Context, e *env) error {
	k, err := e.keys()
	if err != nil {
		return err
	}
	conn, err := e.dial(e.cfg.GRPC, e.cfg.GRPCTLS)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	pb, err := ktpb.NewDirectoryClient(conn).GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		return fmt.Errorf("the directory's parameters: %w", err)
	}
	if pb.GetOrigin() != k.Origin || pb.GetLogPublicKey() != k.LogVerifierKey {
		return fmt.Errorf("%w: the directory serves origin %q with log key %q, not the pinned %q", ktctl.ErrVerification, pb.GetOrigin(), pb.GetLogPublicKey(), k.LogVerifierKey)
	}
	if e.cfg.Policy != "" {
		b, err := os.ReadFile(e.cfg.Policy)
		if err != nil {
			return usageErr("%v", err)
		}
		if pb.GetWitnessPolicy() != string(b) {
			return fmt.Errorf("%w: the directory's witness policy is not %s", ktctl.ErrVerification, e.cfg.Policy)
		}
	}
	if k.RecoveryKey != nil && string(pb.GetRecoveryPublicKey()) != string(k.RecoveryKey[:]) {
		return fmt.Errorf("%w: the directory's recovery key is not the pinned one", ktctl.ErrVerification)
	}
	if v := e.cfg.VRFPublicKey; v != "" {
		if b, err := os.ReadFile(v); err == nil {
			v = string(b) // a file holding it, as keygen's public/vrf.pub
		}
		if pb.GetVrfPublicKey() != strings.TrimSpace(v) {
			return fmt.Errorf("%w: the directory's VRF key is %q, not the pinned one", ktctl.ErrVerification, pb.GetVrfPublicKey())
		}
	}
	if _, err := client.NewParams(pb, client.Options{}); err != nil {
		return fmt.Errorf("%w: a client refuses these parameters: %v", ktctl.ErrVerification, err)
	}
	b, err := protojson.MarshalOptions{Multiline: true}.Marshal(pb)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(e.stdout, string(b))
	return err
}
