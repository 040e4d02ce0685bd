package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/cmd/ktctl/internal/ktctl"
	"github.com/keytrans/kt/internal/cliconfig"
)

var recoverCmd = &command{
	name: "recover", usage: "recover HANDLE DESCRIPTOR... --data-dir DIR [--operator ADDR] [--grpc ADDR] [--replace]",
	args: "HANDLE DESCRIPTOR...",
	help: `Add devices to a handle through the directory's recovery path (operators).
Looks HANDLE up and verifies the answer as a client does (the directory's
parameters must carry the pinned log key), adds each DESCRIPTOR (printed by
"kt device export" on the new device), signs the change with the recovery
private key (DATA_DIR/recovery.key, or --recovery-key naming a file that
holds "kt-recovery-private:..."), and sends it to the Operator service
(--operator, ktd's operator_listen). With --replace, the set becomes exactly
the given devices (account recovery after the owner lost every device). An
account key is dropped: only its holder can sign for it. The log records the
change as kind recovery, and every one of the owner's devices alerts on it.`,
	keys:    []string{"data_dir", "log_key", "grpc", "grpc_tls", "operator", "recovery_key", "replace"},
	network: true, minArgs: 2, maxArgs: 1 + api.MaxDevices,
	run: runRecover,
}

// SPEC(design.md 6.1 R6)
func runRecover(ctx context.Context, e *env) error {
	var add []api.Device
	for _, s := range e.args[1:] {
		d, err := client.ParseDescriptor(s)
		if err != nil {
			return usageErr("descriptor %.20q...: %v", s, err)
		}
		add = append(add, d)
	}
	priv, err := e.recoveryPrivate()
	if err != nil {
		return err
	}
	k, err := e.keys()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	conn, err := e.dial(e.cfg.GRPC, e.cfg.GRPCTLS)
	if err != nil {
		return err
	}
	defer conn.Close()
	dc := ktpb.NewDirectoryClient(conn)
	pb, err := dc.GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		return fmt.Errorf("the directory's parameters: %w", err)
	}
	if pb.GetLogPublicKey() != k.LogVerifierKey {
		return fmt.Errorf("%w: the directory at %s has log key %s, not the pinned %s", ktctl.ErrVerification, e.cfg.GRPC, pb.GetLogPublicKey(), k.LogVerifierKey)
	}
	if !bytes.Equal(pb.GetRecoveryPublicKey(), priv.Public().(ed25519.PublicKey)) {
		return usageErr("the recovery private key does not match the directory's recovery public key")
	}
	p, err := client.NewParams(pb, client.Options{})
	if err != nil {
		return fmt.Errorf("%w: the directory's parameters: %w", ktctl.ErrVerification, err)
	}
	c, err := client.New(dc, p, &client.MemStore{}, client.Config{Log: ktpb.NewLogClient(conn)})
	if err != nil {
		return err
	}
	res, err := c.Lookup(ctx, e.args[0])
	if err != nil {
		return fmt.Errorf("%w: looking up %s: %w", ktctl.ErrVerification, e.args[0], err)
	}
	if !res.Registered || res.DeviceSet.IsTombstone() {
		return usageErr("%s is not registered: recovery changes an existing account", res.Handle)
	}
	set := &api.DeviceSet{AccountID: res.DeviceSet.AccountID}
	if !e.cfg.Replace {
		set.Devices = slices.Clone(res.DeviceSet.Devices)
	}
	for _, d := range add {
		if slices.ContainsFunc(set.Devices, func(o api.Device) bool { return o.ID == d.ID }) {
			return usageErr("device %x is already in %s's set", d.ID, res.Handle)
		}
		set.Devices = append(set.Devices, d)
	}
	slices.SortFunc(set.Devices, func(a, b api.Device) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	hc, err := client.NewChange(pb.GetOrigin(), res, set, api.AuthRecovery, priv)
	if err != nil {
		return usageErr("%v", err)
	}
	oconn, err := e.dial(e.cfg.Operator, false)
	if err != nil {
		return err
	}
	defer oconn.Close()
	resp, err := ktpb.NewOperatorClient(oconn).Recover(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}})
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if len(resp.GetLogIndices()) != 1 {
		return fmt.Errorf("recover: %d log indices in the answer, want 1", len(resp.GetLogIndices()))
	}
	idx := resp.GetLogIndices()[0]
	// Wait until lookups show it, so that the next command sees it.
	seen, err := c.AwaitVisible(ctx, &client.Submitted{Handle: res.Handle, Version: res.Version + 1, LogIndex: idx, Record: hc.GetChangeRecord()})
	if err != nil {
		return fmt.Errorf("recovered %s at log index %d, but: %w", res.Handle, idx, err)
	}
	epoch := seen[0].Epoch.Record.Epoch
	var ids []string
	for _, d := range add {
		ids = append(ids, hex.EncodeToString(d.ID[:]))
	}
	if e.cfg.JSON {
		return e.printJSON(map[string]any{"handle": res.Handle, "version": res.Version + 1, "kind": "recovery",
			"log_index": idx, "epoch": epoch, "added": ids, "devices": len(set.Devices), "replaced": e.cfg.Replace})
	}
	fmt.Fprintf(e.stdout, "recovered %s through the recovery path: version %d (recovery) logged at index %d, visible in epoch %d\n", res.Handle, res.Version+1, idx, epoch)
	for _, id := range ids {
		fmt.Fprintf(e.stdout, "  added device %s\n", id)
	}
	fmt.Fprintf(e.stdout, "  %s now (%d before)\n", cliconfig.Count(len(set.Devices), "device"), len(res.DeviceSet.Devices))
	return nil
}

// recoveryPrivate reads the recovery private key: --recovery-key when it
// names a file holding the private form, else DATA_DIR/recovery.key.
func (e *env) recoveryPrivate() (ed25519.PrivateKey, error) {
	path := e.cfg.RecoveryKey
	if path == "" {
		if e.cfg.DataDir == "" {
			return nil, usageErr("no recovery private key: set --data-dir (ktd's data directory) or --recovery-key FILE")
		}
		path = filepath.Join(e.cfg.DataDir, ktctl.RecoveryKeyFile)
	}
	k, err := ktctl.LoadRecoveryPrivateKey(path)
	if err != nil {
		return nil, usageErr("recovery private key: %v", err)
	}
	return k, nil
}
