package main

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/log"
)

// logSigners returns the key hashes of the log-named signatures on the
// served checkpoint, waiting until there are want of them.
func logSigners(t *testing.T, d *daemon, origin string, want int) []uint32 {
	t.Helper()
	dc := ktpb.NewDirectoryClient(grpcConn(t, d.addrs.GRPC))
	deadline := time.Now().Add(time.Minute)
	for {
		ep := waitEpoch(t, dc, 0)
		_, err := note.Open(ep.GetCheckpoint(), note.VerifierList())
		u, ok := errors.AsType[*note.UnverifiedNoteError](err)
		if !ok {
			t.Fatalf("checkpoint: %v", err)
		}
		var hs []uint32
		for _, s := range u.Note.UnverifiedSigs {
			if s.Name == origin {
				hs = append(hs, s.Hash)
			}
		}
		if len(hs) == want || time.Now().After(deadline) {
			return hs
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDaemonLogKeyRotation rotates the log key of a real ktd (design.md
// 11.1): log.next_key_file makes the log sign with both keys, Operator
// Rotate appends the record, and ktd restarted with the new key alone
// serves checkpoints signed by it while the parameters keep the first key.
// A restart with the rotated-out key alone is refused (the control of the
// accepted configurations).
func TestDaemonLogKeyRotation(t *testing.T) {
	const origin = "localhost/kt"
	dataDir := t.TempDir()
	keyFile, nextFile := filepath.Join(dataDir, "log.key"), filepath.Join(t.TempDir(), "next.key")
	d := startDaemon(t, testConfig(t, dataDir))
	genesis := logSigners(t, d, origin, 1)
	params, err := ktpb.NewDirectoryClient(grpcConn(t, d.addrs.GRPC)).GetParameters(t.Context(), &ktpb.GetParametersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}

	// 1. Both keys.
	d = startDaemon(t, testConfig(t, dataDir, "--log-next-key-file", nextFile))
	if got := logSigners(t, d, origin, 2); len(got) != 2 {
		t.Fatalf("checkpoint signed by %d log keys, want 2", len(got))
	}
	// 2. The record.
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	oldPriv, err := log.Ed25519PrivateKey(read(keyFile))
	if err != nil {
		t.Fatal(err)
	}
	newPriv, err := log.Ed25519PrivateKey(read(nextFile))
	if err != nil {
		t.Fatal(err)
	}
	rec := &api.RotationRecord{Kind: api.KeyLog, Sequence: 1}
	if err := rec.SignRotation(origin, oldPriv, newPriv); err != nil {
		t.Fatal(err)
	}
	raw, _ := rec.MarshalBinary()
	if _, err := ktpb.NewOperatorClient(grpcConn(t, d.addrs.Operator)).Rotate(t.Context(), &ktpb.RotateRequest{Record: raw}); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}

	// The rotated-out key alone is refused.
	err = run(t.Context(), testConfig(t, dataDir), slog.New(slog.NewTextHandler(io.Discard, nil)), make(chan addrs, 1))
	if err == nil || !strings.Contains(err.Error(), "current signing key") {
		t.Fatalf("ktd with the rotated-out log key alone: %v, want a refusal", err)
	}

	// 3. The new key alone.
	d = startDaemon(t, testConfig(t, dataDir, "--log-key-file", nextFile))
	nv, _ := log.VerifierFor(read(nextFile))
	if got := logSigners(t, d, origin, 1); len(got) != 1 || got[0] != nv.KeyHash() || got[0] == genesis[0] {
		t.Fatalf("checkpoint signed by %08x, want the new key %08x alone", got, nv.KeyHash())
	}
	p2, err := ktpb.NewDirectoryClient(grpcConn(t, d.addrs.GRPC)).GetParameters(t.Context(), &ktpb.GetParametersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if p2.GetLogPublicKey() != params.GetLogPublicKey() {
		t.Fatalf("parameters name %q after the rotation, want the first key %q", p2.GetLogPublicKey(), params.GetLogPublicKey())
	}
}
