package conformance_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/log"
)

func TestMemoryLog(t *testing.T) {
	s, v := newKey(t, origin)
	ml := conformance.NewMemoryLog(origin, s)
	ctx := context.Background()

	if _, err := ml.Checkpoint(ctx); !errors.Is(err, log.ErrNoCheckpoint) {
		t.Errorf("Checkpoint before any append: %v, want ErrNoCheckpoint", err)
	}
	if _, err := ml.Entries(ctx, 0, 1); !errors.Is(err, log.ErrNoCheckpoint) {
		t.Errorf("Entries before any append: %v, want ErrNoCheckpoint", err)
	}
	for _, bad := range [][][]byte{{{}}, {make([]byte, log.MaxEntrySize+1)}} {
		if _, err := ml.Append(ctx, bad); !errors.Is(err, log.ErrInvalidEntry) {
			t.Errorf("Append(%d-byte entry): %v, want ErrInvalidEntry", len(bad[0]), err)
		}
	}

	// Await blocks until an append covers the index.
	got := make(chan error, 1)
	go func() {
		cp, err := ml.Await(ctx, 2)
		if err == nil {
			p, _, perr := log.ParseCheckpoint(cp, origin, v)
			if perr != nil || p.Size < 3 {
				err = errors.New("Await returned a checkpoint that does not cover index 2")
			}
		}
		got <- err
	}()
	if _, err := ml.Append(ctx, [][]byte{{1}, {2}}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		t.Fatalf("Await(2) returned before index 2 was appended: %v", err)
	case <-time.After(50 * time.Millisecond):
		// Not a timing assertion: only a chance to catch an early return.
	}
	idx, err := ml.Append(ctx, [][]byte{{3}})
	if err != nil || idx[0] != 2 {
		t.Fatalf("Append = %v, %v", idx, err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := ml.Await(cctx, 100); !errors.Is(err, context.Canceled) {
		t.Errorf("Await with a canceled context: %v", err)
	}

	conformance.CheckReader(t, ml, origin, v)

	if err := ml.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ml.Append(ctx, [][]byte{{4}}); !errors.Is(err, log.ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
	if _, err := ml.Checkpoint(ctx); !errors.Is(err, log.ErrClosed) {
		t.Errorf("Checkpoint after Close: %v, want ErrClosed", err)
	}
	if _, err := ml.Await(ctx, 100); !errors.Is(err, log.ErrClosed) {
		t.Errorf("Await after Close: %v, want ErrClosed", err)
	}
}
