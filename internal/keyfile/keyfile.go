// Package keyfile creates and reads secret key files: one line of text,
// mode 0600, created atomically and never overwritten.
package keyfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// LoadOrCreate returns the contents of the key file at path, first creating
// it with gen() if it does not exist. Creation is atomic and never
// overwrites: the key is written and synced to a temporary file that is
// then hard-linked into place, so a crash leaves either no file or a
// complete one, and two processes starting together agree on one key.
// created reports whether this call wrote the file.
func LoadOrCreate(path string, gen func() (string, error)) (text string, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return string(b), false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	key, err := gen()
	if err != nil {
		return "", false, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return "", false, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", false, err
	}
	if _, err := tmp.WriteString(key + "\n"); err != nil {
		tmp.Close()
		return "", false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", false, err
	}
	if err := tmp.Close(); err != nil {
		return "", false, err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another process won the race: use its key.
			b, err := os.ReadFile(path)
			return string(b), false, err
		}
		return "", false, err
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return "", false, err
		}
	}
	return key + "\n", true, nil
}
