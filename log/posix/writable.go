package posix

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ErrUnwritable is matched (errors.Is) by the fault of a log whose
// storage stopped taking writes (a read-only remount, lost permissions).
var ErrUnwritable = errors.New("log storage not writable")

// UnwritableError names the file that could not be opened for writing.
type UnwritableError struct {
	Path string // relative to the log directory
	Err  error
}

func (e *UnwritableError) Error() string {
	return fmt.Sprintf("%v: %s: %v", ErrUnwritable, e.Path, e.Err)
}

// Is makes errors.Is(err, ErrUnwritable) true.
func (e *UnwritableError) Is(target error) bool { return target == ErrUnwritable }

func (e *UnwritableError) Unwrap() error { return e.Err }

// tesseraLocks are the lock files Tessera v1.0.4's POSIX driver opens
// with O_CREAT|O_RDWR before every write (storage/posix/files.go,
// Storage.lockFile). When that open fails in appender.sequenceBatch it
// panics, in its own goroutine, where no caller can recover: so the log
// opens them the same way first and stops cleanly instead.
var tesseraLocks = []string{
	filepath.Join(".state", "treeState.lock"),
	filepath.Join(".state", "publish.lock"),
}

// writableInterval is how often the log re-checks its storage while idle.
const writableInterval = 250 * time.Millisecond

// checkWritable opens Tessera's lock files for writing, as Tessera does.
//
// Issue 17 item 3: a read-only data directory must give a clean error and
// exit, not a panic inside Tessera.
func (l *Log) checkWritable() error {
	for _, name := range tesseraLocks {
		f, err := os.OpenFile(filepath.Join(l.cfg.Dir, name), os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, 0o644)
		if err != nil {
			return &UnwritableError{Path: name, Err: err}
		}
		_ = f.Close()
	}
	return nil
}

// watchWritable stops the log (setFault) as soon as its storage turns
// unwritable, so that the next batch never reaches Tessera's panic.
func (l *Log) watchWritable() {
	t := time.NewTicker(writableInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := l.checkWritable(); err != nil {
				l.setFault(err)
				return
			}
		case <-l.ctx.Done():
			return
		}
	}
}
