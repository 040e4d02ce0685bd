package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/keytrans/kt/log/posix"
)

// The backup service is served on the operator listener only (like
// Operator.Recover): `ktd backup DEST` asks the running ktd to write a
// consistent copy of its data directory to DEST, on ktd's machine. Its
// messages are protobuf well-known types, so it needs no .proto of its
// own: the request is DEST (StringValue), the answer a summary.
const backupMethod = "/kt.ops.v1.Backup/Backup"

type backupServer interface {
	backup(ctx context.Context, dest string) (string, error)
}

var backupServiceDesc = grpc.ServiceDesc{
	ServiceName: "kt.ops.v1.Backup",
	HandlerType: (*backupServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Backup",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			out, err := srv.(backupServer).backup(ctx, in.GetValue())
			if err != nil {
				return nil, status.Error(codes.FailedPrecondition, err.Error())
			}
			return wrapperspb.String(out), nil
		},
	}},
}

// backup writes DEST/log (the log, appends paused), DEST/state (the state
// store's Pebble checkpoint, taken while appends are paused) and a copy of
// every key file, and reports the signed size the copy holds. Restore:
// docs/operations.md, Backups.
func (s *server) backup(ctx context.Context, dest string) (string, error) {
	pl, ok := s.log.(*posix.Log)
	if !ok {
		return "", errors.New("ktd backup covers the embedded log only; back up Trillian's database with its own tools")
	}
	if !filepath.IsAbs(dest) {
		return "", fmt.Errorf("backup destination %q: want an absolute path on ktd's machine", dest)
	}
	if err := os.Mkdir(dest, 0o700); err != nil {
		return "", fmt.Errorf("backup destination: %w", err)
	}
	start := time.Now()
	size, err := pl.Backup(filepath.Join(dest, "log"), func() error {
		return s.d.BackupState(filepath.Join(dest, "state"))
	})
	if err != nil {
		return "", err
	}
	for _, f := range []string{s.cfg.Log.KeyFile, s.cfg.Directory.VRFKeyFile, s.cfg.Directory.RecoveryKeyFile, s.cfg.Enrollment.TokenKeyFile} {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("backup: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dest, filepath.Base(f)), b, 0o600); err != nil {
			return "", fmt.Errorf("backup: %w", err)
		}
	}
	msg := fmt.Sprintf("backup of log size %d written to %s in %v; it holds private keys: keep it as safe as the data directory", size, dest, time.Since(start).Round(time.Millisecond))
	s.logger.Info("ktd: " + msg)
	return msg, nil
}

// runBackup is `ktd backup DEST`: it asks the ktd on operator_listen.
func runBackup(cfg *Config, dest string) error {
	if cfg.OperatorListen == "" {
		return errors.New("ktd backup needs operator_listen (the running ktd serves backups there)")
	}
	if cfg.Operator.ClientCAFile != "" {
		return errors.New("ktd backup does not speak mutual TLS yet: run it against a loopback operator_listen")
	}
	abs, err := filepath.Abs(dest)
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient(cfg.OperatorListen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	out := new(wrapperspb.StringValue)
	if err := cc.Invoke(ctx, backupMethod, wrapperspb.String(abs), out); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	fmt.Println(out.GetValue())
	return nil
}
