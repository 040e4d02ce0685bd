package trillian

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	tpb "github.com/google/trillian"
	"github.com/google/trillian/types"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/internal/testing/testwitness"
	"github.com/keytrans/kt/internal/testing/trilliantest"
	"github.com/keytrans/kt/log"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestConfigValidation(t *testing.T) {
	env := newMemEnv(t)
	s, _ := testKey(t)
	base := func() Config { return testConfig(t, env.ClientConn, 0) }
	w, err := testwitness.New("w1.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"no conn", func(c *Config) { c.Conn = nil }, "Conn is required"},
		{"no origin", func(c *Config) { c.Origin = "" }, "Origin is required"},
		{"no signer", func(c *Config) { c.Signer = nil }, "Signer is required"},
		{"no tree", func(c *Config) { c.CreateTree = false }, "TreeID is required"},
		{"tree and create", func(c *Config) { c.TreeID = 42 }, "set only one"},
		{"negative tree", func(c *Config) { c.TreeID, c.CreateTree = -1, false }, "negative"},
		{"interval too short", func(c *Config) { c.CheckpointInterval = time.Millisecond }, "below 10ms"},
		{"negative interval", func(c *Config) { c.CheckpointInterval = -time.Second }, "below 10ms"},
		{"negative poll", func(c *Config) { c.MaxPollInterval = -time.Second }, "negative"},
		{"long display name", func(c *Config) { c.DisplayName = strings.Repeat("x", 21) }, "longer than 20"},
		{"malformed witness policy", func(c *Config) { c.WitnessPolicy = []byte("quorum nobody\n") }, "witness policy"},
		{"witness without URL", func(c *Config) {
			c.WitnessPolicy = fmt.Appendf(nil, "witness w1 %s\nquorum w1\n", w.VerifierKey())
		}, "without a URL"},
		{"policy for another log", func(c *Config) {
			_, other, err := note.GenerateKey(rand.Reader, testOrigin)
			if err != nil {
				t.Fatal(err)
			}
			c.WitnessPolicy = fmt.Appendf(nil, "log %s\nquorum none\n", other)
		}, "not this log's key"},
		{"negative witness timeout", func(c *Config) { c.WitnessTimeout = -time.Second }, "negative"},
		{"negative queue parallelism", func(c *Config) { c.QueueParallelism = -1 }, "QueueParallelism -1 is negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base()
			cfg.Signer = s
			tc.modify(&cfg)
			l, err := New(ctxT(t), cfg)
			if err == nil {
				l.Close(context.Background())
				t.Fatalf("New succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestNewRejectsUnusableTrees(t *testing.T) {
	env := newMemEnv(t)
	for _, tc := range []struct {
		name string
		tree func(t *testing.T) int64
		want string
	}{
		{"unknown tree", func(t *testing.T) int64 { return 12345 }, "tree 12345"},
		{"preordered tree", func(t *testing.T) int64 { return createRawTree(t, env, tpb.TreeType_PREORDERED_LOG, true) }, "needs a tree of type LOG"},
		{"uninitialised tree", func(t *testing.T) int64 { return createRawTree(t, env, tpb.TreeType_LOG, false) }, "not initialised"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := New(ctxT(t), testConfig(t, env.ClientConn, tc.tree(t)))
			if err == nil {
				l.Close(context.Background())
				t.Fatalf("New succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestUninitialisedTreeRecovers checks that a New rejected for an
// uninitialised tree leaves the tree usable: after InitLog, New succeeds
// and the sequencer integrates appended entries. Trillian's memory storage
// leaks a tree's read lock when a read finds the tree uninitialised (see
// initCheckingStorage); without that guard InitLog here blocks forever.
func TestUninitialisedTreeRecovers(t *testing.T) {
	env := newMemEnv(t)
	id := createRawTree(t, env, tpb.TreeType_LOG, false)
	if l, err := New(ctxT(t), testConfig(t, env.ClientConn, id)); err == nil {
		l.Close(context.Background())
		t.Fatal("New succeeded on an uninitialised tree")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := env.Log.InitLog(ctx, &tpb.InitLogRequest{LogId: id}); err != nil {
		t.Fatalf("InitLog after a rejected New: %v", err)
	}
	l := openLog(t, testConfig(t, env.ClientConn, id))
	idx, err := l.Append(ctx, [][]byte{[]byte("after InitLog")})
	if err != nil {
		t.Fatalf("Append after InitLog: %v", err)
	}
	if idx[0] != 0 {
		t.Errorf("first entry at index %d, want 0", idx[0])
	}
}

// TestAppendReturnsOnceSequenced checks that Append returns only when
// Trillian has sequenced the entries at the returned indices: reading them
// straight from Trillian right afterwards finds them there.
func TestAppendReturnsOnceSequenced(t *testing.T) {
	env := newMemEnv(t)
	l := openLog(t, testConfig(t, env.ClientConn, 0))
	ctx := ctxT(t)
	for round := range 5 {
		es := [][]byte{fmt.Appendf(nil, "round %d a", round), fmt.Appendf(nil, "round %d b", round), fmt.Appendf(nil, "round %d c", round)}
		idx, err := l.Append(ctx, es)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range es {
			resp, err := env.Log.GetLeavesByRange(ctx, &tpb.GetLeavesByRangeRequest{LogId: l.TreeID(), StartIndex: int64(idx[i]), Count: 1})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Leaves) != 1 {
				t.Fatalf("round %d: Append returned %v, but Trillian has no leaf at %d", round, idx, idx[i])
			}
			if leaf := resp.Leaves[0]; uint64(leaf.LeafIndex) != idx[i] || !bytes.Equal(leaf.LeafValue, e) {
				t.Fatalf("round %d: Trillian has %q at %d, Append said %q at %d", round, leaf.LeafValue, leaf.LeafIndex, e, idx[i])
			}
		}
	}
}

func TestEntriesPages(t *testing.T) {
	env := newMemEnv(t)
	l := openLog(t, testConfig(t, env.ClientConn, 0))
	ctx := ctxT(t)
	es := make([][]byte, maxEntriesPerCall+10)
	for i := range es {
		es[i] = fmt.Appendf(nil, "entry %d", i)
	}
	idx, err := l.Append(ctx, es)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Await(ctx, uint64(len(es)-1)); err != nil {
		t.Fatal(err)
	}
	got, err := l.Entries(ctx, 0, uint64(len(es)))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != maxEntriesPerCall {
		t.Fatalf("Entries returned %d entries, want a page of %d", len(got), maxEntriesPerCall)
	}
	rest, err := l.Entries(ctx, uint64(len(got)), uint64(len(es)))
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, rest...)
	for i, e := range es {
		if !bytes.Equal(got[idx[i]], e) {
			t.Fatalf("entry %d: got %q, want %q", idx[i], got[idx[i]], e)
		}
	}
}

func TestClosed(t *testing.T) {
	env := newMemEnv(t)
	l := openLog(t, testConfig(t, env.ClientConn, 0))
	ctx := ctxT(t)
	if _, err := l.Append(ctx, [][]byte{[]byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"Append", func() error { _, err := l.Append(ctx, [][]byte{[]byte("y")}); return err }},
		{"Await", func() error { _, err := l.Await(ctx, 0); return err }},
		{"Checkpoint", func() error { _, err := l.Checkpoint(ctx); return err }},
		{"Entries", func() error { _, err := l.Entries(ctx, 0, 1); return err }},
		{"InclusionProof", func() error { _, err := l.InclusionProof(ctx, 0, 1); return err }},
		{"ConsistencyProof", func() error { _, err := l.ConsistencyProof(ctx, 1, 1); return err }},
		{"Close", func() error { return l.Close(ctx) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, log.ErrClosed) {
				t.Fatalf("got %v, want ErrClosed", err)
			}
		})
	}
}

// tamperConn passes calls to Trillian and lets a test rewrite replies.
type tamperConn struct {
	grpc.ClientConnInterface
	mu    sync.Mutex
	hooks map[string]func(reply any) error
}

func newTamperConn(cc grpc.ClientConnInterface) *tamperConn {
	return &tamperConn{ClientConnInterface: cc, hooks: map[string]func(any) error{}}
}

func (c *tamperConn) set(method string, hook func(reply any) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hooks[method] = hook
}

func (c *tamperConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if err := c.ClientConnInterface.Invoke(ctx, method, args, reply, opts...); err != nil {
		return err
	}
	c.mu.Lock()
	hook := c.hooks[method]
	c.mu.Unlock()
	if hook != nil {
		return hook(reply)
	}
	return nil
}

// rewriteRoot returns a hook that rewrites the log root in
// GetLatestSignedLogRoot replies.
func rewriteRoot(f func(r *types.LogRootV1)) func(reply any) error {
	return func(reply any) error {
		resp := reply.(*tpb.GetLatestSignedLogRootResponse)
		var r types.LogRootV1
		if err := r.UnmarshalBinary(resp.SignedLogRoot.LogRoot); err != nil {
			return err
		}
		f(&r)
		b, err := r.MarshalBinary()
		if err != nil {
			return err
		}
		resp.SignedLogRoot.LogRoot = b
		return nil
	}
}

// TestForkDetected makes Trillian report trees that do not extend the
// published checkpoint and checks the Log stops with a *ForkError carrying
// the evidence, keeps serving its last good checkpoint and refuses appends.
func TestForkDetected(t *testing.T) {
	flip := func(h []byte) []byte { h = bytes.Clone(h); h[0] ^= 1; return h }
	for _, tc := range []struct {
		name   string
		tamper func(published uint64) func(r *types.LogRootV1)
		// grow appends an entry after arming the tamper.
		grow      bool
		wantProof bool
	}{
		{
			name: "same size different root",
			tamper: func(uint64) func(r *types.LogRootV1) {
				return func(r *types.LogRootV1) { r.RootHash = flip(r.RootHash) }
			},
		},
		{
			name: "tree shrank",
			tamper: func(published uint64) func(r *types.LogRootV1) {
				return func(r *types.LogRootV1) { r.TreeSize = published - 1 }
			},
		},
		{
			name: "grown tree inconsistent",
			tamper: func(published uint64) func(r *types.LogRootV1) {
				return func(r *types.LogRootV1) {
					if r.TreeSize > published {
						r.RootHash = flip(r.RootHash)
					}
				}
			},
			grow:      true,
			wantProof: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newMemEnv(t)
			conn := newTamperConn(env.ClientConn)
			l := openLog(t, testConfig(t, conn, 0))
			ctx := ctxT(t)
			idx, err := l.Append(ctx, [][]byte{[]byte("a"), []byte("b"), []byte("c")})
			if err != nil {
				t.Fatal(err)
			}
			good, err := l.Await(ctx, idx[2])
			if err != nil {
				t.Fatal(err)
			}
			_, verifier := testKey(t)
			cp, _, err := log.ParseCheckpoint(good, testOrigin, verifier)
			if err != nil {
				t.Fatal(err)
			}

			conn.set(tpb.TrillianLog_GetLatestSignedLogRoot_FullMethodName, rewriteRoot(tc.tamper(cp.Size)))
			next := cp.Size // an index no good checkpoint covers yet
			if tc.grow {
				if _, err := l.Append(ctx, [][]byte{[]byte("d")}); err != nil {
					t.Fatal(err)
				}
			}
			_, err = l.Await(ctx, next)
			var fork *ForkError
			if !errors.As(err, &fork) {
				t.Fatalf("Await after the fork: %v, want a *ForkError", err)
			}
			if fork.OldSize != cp.Size || !bytes.Equal(fork.OldRoot, cp.Hash) {
				t.Errorf("fork evidence names old tree %d/%x, want the published %d/%x", fork.OldSize, fork.OldRoot, cp.Size, cp.Hash)
			}
			if tc.wantProof && len(fork.Proof) == 0 {
				t.Errorf("fork evidence carries no consistency proof")
			}
			if _, err := l.Append(ctx, [][]byte{[]byte("e")}); !errors.As(err, &fork) {
				t.Errorf("Append after the fork: %v, want a *ForkError", err)
			}
			latest, err := l.Checkpoint(ctx)
			if err != nil || !bytes.Equal(latest, good) {
				t.Errorf("after the fork Checkpoint returned %q, %v; want the last good checkpoint", latest, err)
			}
		})
	}
}

// TestForkNotDetectedForHonestGrowth guards the fork test: the same setup
// without tampering publishes normally.
func TestForkNotDetectedForHonestGrowth(t *testing.T) {
	env := newMemEnv(t)
	conn := newTamperConn(env.ClientConn)
	l := openLog(t, testConfig(t, conn, 0))
	ctx := ctxT(t)
	for i := range 5 {
		idx, err := l.Append(ctx, [][]byte{fmt.Appendf(nil, "entry %d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Await(ctx, idx[0]); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMalformedProofsRejected makes Trillian return malformed proofs.
func TestMalformedProofsRejected(t *testing.T) {
	env := newMemEnv(t)
	conn := newTamperConn(env.ClientConn)
	l := openLog(t, testConfig(t, conn, 0))
	ctx := ctxT(t)
	idx, err := l.Append(ctx, [][]byte{[]byte("a"), []byte("b"), []byte("c")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Await(ctx, idx[2]); err != nil {
		t.Fatal(err)
	}
	conn.set(tpb.TrillianLog_GetInclusionProof_FullMethodName, func(reply any) error {
		reply.(*tpb.GetInclusionProofResponse).Proof.Hashes[0] = []byte("short")
		return nil
	})
	if _, err := l.InclusionProof(ctx, 0, 3); err == nil {
		t.Errorf("InclusionProof accepted a proof with a 5-byte hash")
	}
	conn.set(tpb.TrillianLog_GetInclusionProof_FullMethodName, func(reply any) error {
		reply.(*tpb.GetInclusionProofResponse).Proof.LeafIndex = 1
		return nil
	})
	if _, err := l.InclusionProof(ctx, 0, 3); err == nil {
		t.Errorf("InclusionProof accepted a proof for another index")
	}
	conn.set(tpb.TrillianLog_GetConsistencyProof_FullMethodName, func(reply any) error {
		reply.(*tpb.GetConsistencyProofResponse).Proof.Hashes[0] = nil
		return nil
	})
	if _, err := l.ConsistencyProof(ctx, 1, 3); err == nil {
		t.Errorf("ConsistencyProof accepted a proof with an empty hash")
	}
	conn.set(tpb.TrillianLog_GetLeavesByRange_FullMethodName, func(reply any) error {
		r := reply.(*tpb.GetLeavesByRangeResponse)
		r.Leaves[0], r.Leaves[1] = r.Leaves[1], r.Leaves[0]
		return nil
	})
	if _, err := l.Entries(ctx, 0, 3); err == nil {
		t.Errorf("Entries accepted leaves out of order")
	}
}

// TestCloseStopsWaitingAppend holds back sequenced leaves from an Append
// and checks that Close ends it with ErrClosed once its context expires.
func TestCloseStopsWaitingAppend(t *testing.T) {
	env := newMemEnv(t)
	conn := newTamperConn(env.ClientConn)
	l, err := New(ctxT(t), testConfig(t, conn, 0))
	if err != nil {
		t.Fatal(err)
	}
	hide := func(reply any) error { reply.(*tpb.GetLeavesByRangeResponse).Leaves = nil; return nil }
	conn.set(tpb.TrillianLog_GetLeavesByRange_FullMethodName, hide)
	appendErr := make(chan error, 1)
	go func() {
		_, err := l.Append(context.Background(), [][]byte{[]byte("never acknowledged")})
		appendErr <- err
	}()
	// Wait until the Append is waiting for its index.
	for {
		l.mu.Lock()
		n := l.npending
		l.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := l.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with a waiting Append: %v, want DeadlineExceeded", err)
	}
	if err := <-appendErr; !errors.Is(err, log.ErrClosed) {
		t.Errorf("Append during Close: %v, want ErrClosed", err)
	}
}

func TestGRPCErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		code codes.Code
		want error
	}{
		{codes.OutOfRange, log.ErrOutOfRange},
		{codes.ResourceExhausted, log.ErrPushback},
		{codes.Unavailable, log.ErrPushback},
		{codes.Aborted, log.ErrPushback},
		{codes.DeadlineExceeded, context.DeadlineExceeded},
		{codes.Canceled, context.Canceled},
		{codes.NotFound, nil},
		{codes.Internal, nil},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			err := grpcError("Op", status.Error(tc.code, "boom"))
			if grpcCode(err) != tc.code {
				t.Errorf("gRPC code lost: %v", err)
			}
			sentinels := []error{log.ErrOutOfRange, log.ErrPushback, log.ErrInvalidEntry, log.ErrNoCheckpoint, log.ErrClosed, context.Canceled, context.DeadlineExceeded}
			for _, s := range sentinels {
				if errors.Is(err, s) != (s == tc.want) {
					t.Errorf("errors.Is(%v, %v) = %v", err, s, errors.Is(err, s))
				}
			}
		})
	}
	if grpcError("Op", nil) != nil {
		t.Errorf("grpcError(nil) is not nil")
	}
}

// TestDuplicatesMariaDB checks the deduplication of Trillian's MySQL
// storage: appending an entry that is already logged returns its index.
func TestDuplicatesMariaDB(t *testing.T) {
	env := trilliantest.Start(t, trilliantest.Options{SequencerInterval: 20 * time.Millisecond})
	l := openLog(t, testConfig(t, env.Conn, 0))
	ctx := ctxT(t)
	first, err := l.Append(ctx, [][]byte{[]byte("a"), []byte("b")})
	if err != nil {
		t.Fatal(err)
	}
	again, err := l.Append(ctx, [][]byte{[]byte("b")})
	if err != nil {
		t.Fatal(err)
	}
	if again[0] != first[1] {
		t.Errorf("appending a logged entry again returned index %d, want its index %d", again[0], first[1])
	}
	mixed, err := l.Append(ctx, [][]byte{[]byte("c"), []byte("a"), []byte("d"), []byte("d")})
	if err != nil {
		t.Fatal(err)
	}
	// c and d are new: indices 2 and 3, in either order; a is logged; the
	// second d is the first.
	if mixed[1] != first[0] || mixed[2] != mixed[3] || min(mixed[0], mixed[2]) != 2 || max(mixed[0], mixed[2]) != 3 {
		t.Errorf("Append(c, a, d, d) = %v, want [2|3 %d 3|2 3|2]", mixed, first[0])
	}
	raw, err := l.Await(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	_, v := testKey(t)
	cp, _, err := log.ParseCheckpoint(raw, testOrigin, v)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != 4 {
		t.Fatalf("checkpoint size %d, want 4: duplicates were logged", cp.Size)
	}
	all, err := l.Entries(ctx, 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"a": first[0], "b": first[1], "c": mixed[0], "d": mixed[2]}
	for e, i := range want {
		if string(all[i]) != e {
			t.Errorf("log holds %q at %d, want %q (log: %s)", all[i], i, e, all)
		}
	}
}

// TestQueueDeadline: an Append whose queue deadline has passed queues
// nothing; one with a future deadline appends, and Sequenced reports the
// tree's size.
func TestQueueDeadline(t *testing.T) {
	env := newMemEnv(t)
	l := openLog(t, testConfig(t, env.ClientConn, 0))
	ctx := ctxT(t)
	past := log.WithQueueDeadline(ctx, time.Now().Add(-time.Second))
	if _, err := l.Append(past, [][]byte{[]byte("late a"), []byte("late b")}); !errors.Is(err, ErrQueueDeadline) {
		t.Fatalf("Append after the queue deadline: %v, want ErrQueueDeadline", err)
	}
	future := log.WithQueueDeadline(ctx, time.Now().Add(time.Minute))
	idx, err := l.Append(future, [][]byte{[]byte("in time")})
	if err != nil {
		t.Fatal(err)
	}
	if idx[0] != 0 {
		t.Fatalf("the entry appended in time got index %d, want 0: the late entries were queued", idx[0])
	}
	if n, err := l.Sequenced(ctx); err != nil || n != 1 {
		t.Fatalf("Sequenced: %d, %v; want 1", n, err)
	}
}
