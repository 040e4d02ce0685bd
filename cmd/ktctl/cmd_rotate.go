package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"strings"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/cmd/ktctl/internal/ktctl"
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

// rotationKeys are the two keys of a rotation: their public halves and
// the step that proves the record with both (Ed25519 signatures, or ECVRF
// proofs for the VRF key).
type rotationKeys struct {
	old, new [32]byte
	newText  string // the new public key in its text form, if the kind has one of its own
	prove    func(origin string, rec *api.RotationRecord) error
}

// SPEC(design.md 11.1)
// SPEC(design.md 11.2)
func runRotate(ctx context.Context, e *env) error {
	var kind api.KeyKind
	switch e.args[0] {
	case "log":
		kind = api.KeyLog
	case "recovery":
		kind = api.KeyRecovery
	case "vrf":
		kind = api.KeyVRF
	default:
		return usageErr("rotate %q: the key kinds are log, recovery and vrf", e.args[0])
	}
	if e.cfg.OldKey == "" || e.cfg.NewKey == "" {
		return usageErr("rotate needs --old-key and --new-key")
	}
	var keys rotationKeys
	var err error
	if kind == api.KeyVRF {
		keys, err = readVRFRotationKeys(e.cfg.OldKey, e.cfg.NewKey)
	} else {
		keys, err = readEd25519RotationKeys(kind, e.cfg.OldKey, e.cfg.NewKey)
	}
	if err != nil {
		return err
	}
	if keys.old == keys.new {
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
	if keys.old != cur.Key {
		return usageErr("--old-key is not the directory's current %s key (rotation %d): %s", kind, cur.Sequence, base64.StdEncoding.EncodeToString(cur.Key[:]))
	}
	seq := cur.Sequence + 1
	if e.cfg.Sequence != 0 {
		seq = e.cfg.Sequence
	}
	rec := &api.RotationRecord{Kind: kind, Sequence: seq}
	if err := keys.prove(pb.GetOrigin(), rec); err != nil {
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
	var newText, next string
	switch kind {
	case api.KeyLog:
		newText = log.Ed25519VerifierKey(pb.GetOrigin(), keys.new)
		next = "once the witnesses know the new key, make it log.key_file, clear log.next_key_file and restart ktd"
	case api.KeyRecovery:
		newText = "kt-recovery-public:" + base64.StdEncoding.EncodeToString(keys.new[:])
		next = "configure it as ktd's directory.recovery_key_file (public form) before ktd restarts"
	case api.KeyVRF:
		newText = keys.newText
		next = "make it directory.vrf_key_file, the old key directory.vrf_prev_key_file, clear directory.vrf_next_key_file, and restart ktd"
	}
	if e.cfg.JSON {
		newJSON := base64.StdEncoding.EncodeToString(keys.new[:])
		if kind == api.KeyVRF {
			newJSON = newText
		}
		return e.printJSON(map[string]any{"kind": kind.String(), "sequence": seq, "log_index": resp.GetLogIndex(),
			"new_key": newJSON, "handover_checkpoint": string(resp.GetCheckpoint())})
	}
	moved := ""
	if kind == api.KeyVRF {
		moved = "every handle is moved and "
	}
	fmt.Fprintf(e.stdout, "rotated the %s key: rotation %d logged at index %d; %sthe handover epoch is published\n", kind, seq, resp.GetLogIndex(), moved)
	fmt.Fprintf(e.stdout, "  new %s key %s\n", kind, newText)
	fmt.Fprintf(e.stdout, "  next: %s\n", next)
	return nil
}

// readEd25519RotationKeys reads the old and new private keys of a log or
// recovery key rotation.
func readEd25519RotationKeys(kind api.KeyKind, oldPath, newPath string) (rotationKeys, error) {
	oldKey, err := readRotationKey(kind, oldPath)
	if err != nil {
		return rotationKeys{}, err
	}
	newKey, err := readRotationKey(kind, newPath)
	if err != nil {
		return rotationKeys{}, err
	}
	return rotationKeys{
		old: [32]byte(oldKey.Public().(ed25519.PublicKey)),
		new: [32]byte(newKey.Public().(ed25519.PublicKey)),
		prove: func(origin string, rec *api.RotationRecord) error {
			return rec.SignRotation(origin, oldKey, newKey)
		},
	}, nil
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

// readRotationKey reads a private key of kind from path: a note signer
// key for the log key, "kt-recovery-private:..." for the recovery key.
func readRotationKey(kind api.KeyKind, path string) (ed25519.PrivateKey, error) {
	if kind == api.KeyRecovery {
		k, err := ktctl.LoadRecoveryPrivateKey(path)
		if err != nil {
			return nil, usageErr("%s key: %v", kind, err)
		}
		return k, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usageErr("%s key: %v", kind, err)
	}
	k, err := log.Ed25519PrivateKey(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, usageErr("%s does not hold a note signer key (PRIVATE+KEY+...): %v", path, err)
	}
	return k, nil
}

// readVRFRotationKeys reads the old and new VRF private keys of a VRF key
// rotation (design.md 11.2: ECVRF proofs over the rotation statement).
func readVRFRotationKeys(oldPath, newPath string) (rotationKeys, error) {
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
	oldKey, err := read(oldPath)
	if err != nil {
		return rotationKeys{}, err
	}
	newKey, err := read(newPath)
	if err != nil {
		return rotationKeys{}, err
	}
	k := rotationKeys{old: [32]byte(oldKey.Public().Bytes()), new: [32]byte(newKey.Public().Bytes()), newText: newKey.Public().String()}
	k.prove = func(origin string, rec *api.RotationRecord) error {
		return rec.ProveVRFRotation(origin, k.old, k.new, oldKey.ProveRotation, newKey.ProveRotation)
	}
	return k, nil
}
