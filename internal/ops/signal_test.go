//go:build unix

package ops

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestRunStopsAtSIGTERM(t *testing.T) {
	// SIGTERM cancels the context instead of killing the process.
	got := Run("kttest", slogDiscard(), func(ctx context.Context) error {
		if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(10 * time.Second):
			return errors.New("SIGTERM did not cancel the context")
		}
	})
	if got != 0 {
		t.Errorf("Run stopped by SIGTERM: status %d, want 0", got)
	}
}
