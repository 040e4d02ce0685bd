package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"strings"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/vrf"
)

var rotateCmd = &command{
	name: "rotate", usage: "rotate log|recovery|vrf --old-key FILE --new-key FILE [--operator ADDR] [--grpc ADDR] [--sequence N]",
	args: "log|recovery|vrf",
	help: `Rotate the directory's log signing key, recovery key or VRF key (design.md
11.1, 11.2).
Signs a rotation record with the old and the new private key and sends it to
the Operator service (--operator, ktd's operator_listen), which appends it and
closes the handover epoch. For the log key, --old-key and --new-key are note
signer key files (ktd's log.key_file and log.next_key_file; ktd must already
sign with both, see the operations guide); for the recovery key, files holding
"kt-recovery-private:..."; for the VRF key, files holding "kt-vrf-private:..."
(ktd's directory.vrf_key_file and directory.vrf_next_key_file: ktd must
have the new key configured, it moves every handle to its index under the
new key before the handover epoch). The old key must be the directory's
current key of that kind and the sequence the next one, which ktctl reads
from the directory (--grpc) unless --sequence is given; the rotation records
the directory lists are checked on the way (a forged one is refused).`,
	keys:    []string{"grpc", "grpc_tls", "operator", "old_key", "new_key", "sequence"},
	network: true, minArgs: 1, maxArgs: 1,
	run: runRotate,
}

// SPEC(design.md 11.1)
func runRotate(ctx context.Context, e *env) error {
	var kind api.KeyKind
	switch e.args[0] {
	case "log":
		kind = api.KeyLog
	case "recovery":
		kind = api.KeyRecovery
	case "vrf":
		return runRotateVRF(ctx, e)
	default:
		return usageErr("rotate %q: the key kinds are log, recovery and vrf", e.args[0])
	}
	if e.cfg.OldKey == "" || e.cfg.NewKey == "" {
		return usageErr("rotate needs --old-key and --new-key")
	}
	oldKey, err := readRotationKey(kind, e.cfg.OldKey)
	if err != nil {
		return err
	}
	newKey, err := readRotationKey(kind, e.cfg.NewKey)
	if err != nil {
		return err
	}
	if bytes.Equal(oldKey.Public().(ed25519.PublicKey), newKey.Public().(ed25519.PublicKey)) {
		return usageErr("--old-key and --new-key hold the same key")
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
	cur, err := currentKey(ctx, dc, pb, kind)
	if err != nil {
		return err
	}
	if [32]byte(oldKey.Public().(ed25519.PublicKey)) != cur.Key {
		return usageErr("--old-key is not the directory's current %s key (rotation %d): %s", kind, cur.Sequence, base64.StdEncoding.EncodeToString(cur.Key[:]))
	}
	seq := cur.Sequence + 1
	if e.cfg.Sequence != 0 {
		seq = e.cfg.Sequence
	}
	rec := &api.RotationRecord{Kind: kind, Sequence: seq}
	if err := rec.SignRotation(pb.GetOrigin(), oldKey, newKey); err != nil {
		return usageErr("%v", err)
	}
	raw, err := rec.MarshalBinary()
	if err != nil {
		return usageErr("%v", err)
	}
	oconn, err := e.dial(e.cfg.Operator, false)
	if err != nil {
		return err
	}
	defer oconn.Close()
	resp, err := ktpb.NewOperatorClient(oconn).Rotate(ctx, &ktpb.RotateRequest{Record: raw})
	if err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	newPub := newKey.Public().(ed25519.PublicKey)
	if e.cfg.JSON {
		return e.printJSON(map[string]any{"kind": kind.String(), "sequence": seq, "log_index": resp.GetLogIndex(),
			"new_key": base64.StdEncoding.EncodeToString(newPub), "handover_checkpoint": string(resp.GetCheckpoint())})
	}
	fmt.Fprintf(e.stdout, "rotated the %s key: rotation %d logged at index %d; the handover epoch is published\n", kind, seq, resp.GetLogIndex())
	switch kind {
	case api.KeyLog:
		fmt.Fprintf(e.stdout, "  new log key %s\n", log.Ed25519VerifierKey(pb.GetOrigin(), [32]byte(newPub)))
		fmt.Fprintln(e.stdout, "  next: once the witnesses know the new key, make it log.key_file, clear log.next_key_file and restart ktd")
	case api.KeyRecovery:
		fmt.Fprintf(e.stdout, "  new recovery key kt-recovery-public:%s\n", base64.StdEncoding.EncodeToString(newPub))
		fmt.Fprintln(e.stdout, "  next: configure it as ktd's directory.recovery_key_file (public form) before ktd restarts")
	}
	return nil
}

// currentKey returns the directory's current key of kind: the key of the
// parameters followed through the rotation records it lists. It checks
// the chain (not the inclusion proofs: the directory's Rotate checks the
// new record against its own view, and clients check the proofs).
func currentKey(ctx context.Context, dc ktpb.DirectoryClient, pb *ktpb.Parameters, kind api.KeyKind) (api.RotationChain, error) {
	c := api.RotationChain{Kind: kind}
	switch kind {
	case api.KeyLog:
		parts := strings.SplitN(pb.GetLogPublicKey(), "+", 3)
		raw, err := base64.StdEncoding.DecodeString(parts[len(parts)-1])
		if len(parts) != 3 || err != nil || len(raw) != 33 {
			return c, fmt.Errorf("the directory's log key %q is not an Ed25519 vkey", pb.GetLogPublicKey())
		}
		c.Key = [32]byte(raw[1:])
	case api.KeyRecovery:
		if len(pb.GetRecoveryPublicKey()) != 32 {
			return c, fmt.Errorf("the directory's recovery key has %d bytes", len(pb.GetRecoveryPublicKey()))
		}
		c.Key = [32]byte(pb.GetRecoveryPublicKey())
	case api.KeyVRF:
		k, err := vrf.ParsePublicKey(pb.GetVrfPublicKey())
		if err != nil {
			return c, fmt.Errorf("the directory's VRF key: %w", err)
		}
		c.Key = [32]byte(k.Bytes())
	}
	rs, err := dc.GetRotations(ctx, &ktpb.GetRotationsRequest{})
	if err != nil {
		return c, fmt.Errorf("the directory's rotations: %w", err)
	}
	for _, r := range rs.GetRotations() {
		rec, err := api.ParseRotationRecord(r.GetRecord())
		if err != nil {
			return c, fmt.Errorf("the directory's rotation at %d: %w", r.GetLogIndex(), err)
		}
		if rec.Kind != kind {
			continue
		}
		if c, err = c.Next(pb.GetOrigin(), rec, vrf.VerifyRotationProof); err != nil {
			return c, fmt.Errorf("the directory's rotation at %d: %w", r.GetLogIndex(), err)
		}
	}
	return c, nil
}

// readRotationKey reads a private key of kind from path.
func readRotationKey(kind api.KeyKind, path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usageErr("%s key: %v", kind, err)
	}
	text := strings.TrimSpace(string(b))
	if kind == api.KeyLog {
		k, err := log.Ed25519PrivateKey(text)
		if err != nil {
			return nil, usageErr("%s does not hold a note signer key (PRIVATE+KEY+...): %v", path, err)
		}
		return k, nil
	}
	s, ok := strings.CutPrefix(text, "kt-recovery-private:")
	seed, err := base64.StdEncoding.Strict().DecodeString(s)
	if !ok || err != nil || len(seed) != ed25519.SeedSize {
		return nil, usageErr("%s does not hold a recovery private key (kt-recovery-private:<base64 seed>)", path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// runRotateVRF is "ktctl rotate vrf" (design.md 11.2): a rotation record of
// the VRF key proved by both keys (ECVRF proofs over the rotation
// statement), checked against the directory's current VRF key, sent to
// Operator.Rotate.
//
// SPEC(design.md 11.2)
func runRotateVRF(ctx context.Context, e *env) error {
	if e.cfg.OldKey == "" || e.cfg.NewKey == "" {
		return usageErr("rotate needs --old-key and --new-key")
	}
	read := func(path string) (*vrf.PrivateKey, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, usageErr("vrf key: %v", err)
		}
		k, err := vrf.ParsePrivateKey(string(b))
		if err != nil {
			return nil, usageErr("%s does not hold a VRF private key (kt-vrf-private:<base64 seed>): %v", path, err)
		}
		return k, nil
	}
	oldKey, err := read(e.cfg.OldKey)
	if err != nil {
		return err
	}
	newKey, err := read(e.cfg.NewKey)
	if err != nil {
		return err
	}
	if oldKey.Public().Equal(newKey.Public()) {
		return usageErr("--old-key and --new-key hold the same key")
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
	cur, err := currentKey(ctx, dc, pb, api.KeyVRF)
	if err != nil {
		return err
	}
	oldPub, newPub := [32]byte(oldKey.Public().Bytes()), [32]byte(newKey.Public().Bytes())
	if oldPub != cur.Key {
		return usageErr("--old-key is not the directory's current vrf key (rotation %d): %s", cur.Sequence, base64.StdEncoding.EncodeToString(cur.Key[:]))
	}
	seq := cur.Sequence + 1
	if e.cfg.Sequence != 0 {
		seq = e.cfg.Sequence
	}
	rec := &api.RotationRecord{Kind: api.KeyVRF, Sequence: seq}
	if err := rec.ProveVRFRotation(pb.GetOrigin(), oldPub, newPub, oldKey.ProveRotation, newKey.ProveRotation); err != nil {
		return usageErr("%v", err)
	}
	raw, err := rec.MarshalBinary()
	if err != nil {
		return usageErr("%v", err)
	}
	oconn, err := e.dial(e.cfg.Operator, false)
	if err != nil {
		return err
	}
	defer oconn.Close()
	resp, err := ktpb.NewOperatorClient(oconn).Rotate(ctx, &ktpb.RotateRequest{Record: raw})
	if err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	if e.cfg.JSON {
		return e.printJSON(map[string]any{"kind": "vrf", "sequence": seq, "log_index": resp.GetLogIndex(),
			"new_key": newKey.Public().String(), "handover_checkpoint": string(resp.GetCheckpoint())})
	}
	fmt.Fprintf(e.stdout, "rotated the vrf key: rotation %d logged at index %d; every handle is moved and the handover epoch is published\n", seq, resp.GetLogIndex())
	fmt.Fprintf(e.stdout, "  new VRF key %s\n", newKey.Public())
	fmt.Fprintln(e.stdout, "  next: make it directory.vrf_key_file, the old key directory.vrf_prev_key_file, clear directory.vrf_next_key_file, and restart ktd")
	return nil
}
