package posix

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Backup copies the log directory to dst (created; it must not exist)
// while the log runs, and returns the size of the signed checkpoint the
// copy holds.
//
// It pauses appends: batches handed to Tessera are waited for, and new
// ones wait until the copy is done, so that the entry bundles, the hash
// tiles and the tree state are those of one integrated tree (Tessera
// writes them only in sequenceBatch). The checkpoint file is replaced
// atomically by Tessera's publisher, which signs only integrated trees, so
// the copy's checkpoint is extended by its tree state: the copy is what a
// clean stop leaves, and New's start-up checks accept it. during, when not
// nil, runs while appends are paused (ktd takes the state store's
// checkpoint there, so that the state never refers to entries the log copy
// lacks).
//
// Issue 17 item 7.
func (l *Log) Backup(dst string, during func() error) (uint64, error) {
	if err := l.Fault(); err != nil {
		return 0, fmt.Errorf("posix log: no backup of a stopped log: %w", err)
	}
	if err := os.Mkdir(dst, 0o700); err != nil {
		return 0, fmt.Errorf("posix log: backup: %w", err)
	}
	l.pause.Lock()
	defer l.pause.Unlock()
	if during != nil {
		if err := during(); err != nil {
			return 0, err
		}
	}
	err := filepath.WalkDir(l.cfg.Dir, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // a temporary file Tessera's publisher renamed
		}
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(l.cfg.Dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		out := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.Mkdir(out, 0o755)
		case rel == lockFile || strings.HasSuffix(rel, ".lock") || !d.Type().IsRegular():
			return nil // locks are per process
		}
		if err := copyFile(p, out); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("posix log: backup: %w", err)
	}
	raw, err := os.ReadFile(filepath.Join(dst, "checkpoint"))
	if err != nil {
		return 0, fmt.Errorf("posix log: backup: %w", err)
	}
	return checkpointSize(raw, l.cfg.Origin)
}

// copyFile copies a file, synced. Tessera replaces files by rename, so
// the open file is one whole version.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
