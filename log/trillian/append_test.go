package trillian

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	tpb "github.com/google/trillian"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/log"
)

// queueConn passes calls to Trillian, letting a test intercept QueueLeaf
// before it reaches Trillian.
type queueConn struct {
	grpc.ClientConnInterface
	// before runs before each QueueLeaf with the leaf's value; an error
	// fails the call without queueing anything.
	before func(ctx context.Context, value []byte) error
}

func (c *queueConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if method == tpb.TrillianLog_QueueLeaf_FullMethodName && c.before != nil {
		if err := c.before(ctx, args.(*tpb.QueueLeafRequest).Leaf.LeafValue); err != nil {
			return err
		}
	}
	return c.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
}

// pendingCount is the number of registered waiters.
func (l *Log) pendingCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.npending
}

// TestIdenticalEntriesInOneCall checks that identical entries of one call
// are logged once and share an index, even on Trillian's memory storage,
// which does not deduplicate.
func TestIdenticalEntriesInOneCall(t *testing.T) {
	env := newMemEnv(t)
	l := openLog(t, testConfig(t, env.ClientConn, 0))
	ctx := ctxT(t)
	idx, err := l.Append(ctx, [][]byte{[]byte("x"), []byte("y"), []byte("x"), []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if idx[0] != idx[2] || idx[0] != idx[3] || idx[0] == idx[1] || max(idx[0], idx[1]) != 1 {
		t.Fatalf("Append(x, y, x, x) = %v, want x's index thrice and y's distinct, within [0, 2)", idx)
	}
	// A later entry lands at 2: nothing else was logged.
	later, err := l.Append(ctx, [][]byte{[]byte("z")})
	if err != nil {
		t.Fatal(err)
	}
	if later[0] != 2 {
		t.Fatalf("next entry got index %d, want 2: a duplicate was logged", later[0])
	}
}

// TestQueueParallelism checks that Append queues concurrently, and that
// Config.QueueParallelism bounds the QueueLeaf calls in flight over all
// Appends of the Log.
func TestQueueParallelism(t *testing.T) {
	const limit = 4
	env := newMemEnv(t)
	var (
		mu       sync.Mutex
		inflight int
		most     int
		calls    int
		reached  = make(chan struct{}) // closed when limit calls are in flight
		over     = make(chan struct{}) // closed when more than limit are
	)
	conn := &queueConn{ClientConnInterface: env.ClientConn}
	conn.before = func(ctx context.Context, _ []byte) error {
		mu.Lock()
		inflight++
		calls++
		most = max(most, inflight)
		switch inflight {
		case limit:
			select {
			case <-reached:
			default:
				close(reached)
			}
		case limit + 1:
			select {
			case <-over:
			default:
				close(over)
			}
		}
		first := calls <= limit
		mu.Unlock()
		// Hold each call so that others pile up: the first wave until it
		// is complete (a serial Append never completes it), later calls
		// for a moment, long enough for an unbounded Append to exceed the
		// limit.
		wait := 200 * time.Millisecond
		if first {
			wait = 5 * time.Second
		}
		select {
		case <-reached:
			if !first {
				select {
				case <-over:
				case <-time.After(wait):
				}
			}
		case <-over:
		case <-time.After(wait):
		}
		mu.Lock()
		inflight--
		mu.Unlock()
		return nil
	}
	cfg := testConfig(t, conn, 0)
	cfg.QueueParallelism = limit
	l := openLog(t, cfg)
	ctx := ctxT(t)

	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for c := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			es := make([][]byte, 6)
			for i := range es {
				es[i] = fmt.Appendf(nil, "caller %d entry %d", c, i)
			}
			if _, err := l.Append(ctx, es); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if most != limit {
		t.Errorf("at most %d QueueLeaf calls were in flight, want exactly QueueParallelism = %d", most, limit)
	}
	if calls != 18 {
		t.Errorf("%d QueueLeaf calls for 18 entries", calls)
	}
}

// TestQueueFailures makes QueueLeaf fail and checks what Append reports,
// that no waiter is left behind, and that the Log stays usable.
func TestQueueFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		// fail decides the error for the attempt-th QueueLeaf (from 0)
		// of the entry "b".
		fail    func(attempt int) error
		wantErr error  // nil: Append succeeds
		wantMsg string // part of the error message
	}{
		{
			name: "aborted once is retried",
			fail: func(attempt int) error {
				if attempt == 0 {
					return status.Error(codes.Aborted, "deadlock")
				}
				return nil
			},
		},
		{
			name:    "aborted always is pushback",
			fail:    func(int) error { return status.Error(codes.Aborted, "deadlock") },
			wantErr: log.ErrPushback,
			wantMsg: "queueing entry 1 of 3",
		},
		{
			name:    "unavailable is pushback",
			fail:    func(int) error { return status.Error(codes.Unavailable, "down") },
			wantErr: log.ErrPushback,
			wantMsg: "queueing entry 1 of 3",
		},
		{
			name:    "internal error fails the call",
			fail:    func(int) error { return status.Error(codes.Internal, "boom") },
			wantMsg: "boom",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newMemEnv(t)
			var (
				mu       sync.Mutex
				attempts int
			)
			conn := &queueConn{ClientConnInterface: env.ClientConn, before: func(_ context.Context, v []byte) error {
				if string(v) != "b" {
					return nil
				}
				mu.Lock()
				defer mu.Unlock()
				attempts++
				return tc.fail(attempts - 1)
			}}
			l := openLog(t, testConfig(t, conn, 0))
			ctx := ctxT(t)
			idx, err := l.Append(ctx, [][]byte{[]byte("a"), []byte("b"), []byte("c")})
			switch {
			case tc.wantMsg == "" && err != nil:
				t.Fatalf("Append: %v", err)
			case tc.wantMsg == "" && (len(idx) != 3 || max(idx[0], idx[1], idx[2]) != 2 || idx[0] == idx[1] || idx[1] == idx[2] || idx[0] == idx[2]):
				t.Fatalf("Append = %v, want a permutation of 0..2", idx)
			case tc.wantMsg != "" && err == nil:
				t.Fatalf("Append succeeded, want an error containing %q", tc.wantMsg)
			case tc.wantMsg != "" && !strings.Contains(err.Error(), tc.wantMsg):
				t.Fatalf("Append: %v, want an error containing %q", err, tc.wantMsg)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("Append: %v, want %v", err, tc.wantErr)
			}
			if n := l.pendingCount(); n != 0 {
				t.Errorf("%d waiters left registered", n)
			}
			// The Log still works. On failure, a and c may have been
			// queued anyway: the next entry comes after whatever was.
			conn.before = nil
			if _, err := l.Append(ctx, [][]byte{[]byte("d")}); err != nil {
				t.Fatalf("Append after the failure: %v", err)
			}
		})
	}
}

// TestQueueingHonoursContext cancels an Append while its QueueLeaf calls
// hang.
func TestQueueingHonoursContext(t *testing.T) {
	env := newMemEnv(t)
	conn := &queueConn{ClientConnInterface: env.ClientConn}
	started := make(chan struct{}, 10)
	conn.before = func(ctx context.Context, _ []byte) error {
		started <- struct{}{}
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	l := openLog(t, testConfig(t, conn, 0))
	ctx, cancel := context.WithCancel(context.Background())
	appendErr := make(chan error, 1)
	go func() {
		_, err := l.Append(ctx, [][]byte{[]byte("a"), []byte("b")})
		appendErr <- err
	}()
	<-started
	cancel()
	if err := <-appendErr; !errors.Is(err, context.Canceled) {
		t.Errorf("Append with a cancelled context: %v, want context.Canceled", err)
	}
	if n := l.pendingCount(); n != 0 {
		t.Errorf("%d waiters left registered", n)
	}
}

// TestCloseStopsQueueingAppend hangs QueueLeaf and checks that Close ends
// the Append with ErrClosed once Close's context expires.
func TestCloseStopsQueueingAppend(t *testing.T) {
	env := newMemEnv(t)
	conn := &queueConn{ClientConnInterface: env.ClientConn}
	started := make(chan struct{}, 10)
	conn.before = func(ctx context.Context, _ []byte) error {
		started <- struct{}{}
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	l, err := New(ctxT(t), testConfig(t, conn, 0))
	if err != nil {
		t.Fatal(err)
	}
	appendErr := make(chan error, 1)
	go func() {
		_, err := l.Append(context.Background(), [][]byte{[]byte("never queued")})
		appendErr <- err
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := l.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with a queueing Append: %v, want DeadlineExceeded", err)
	}
	if err := <-appendErr; !errors.Is(err, log.ErrClosed) {
		t.Errorf("Append during Close: %v, want ErrClosed", err)
	}
}
