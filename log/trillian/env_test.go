package trillian

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	tpb "github.com/google/trillian"
	"github.com/google/trillian/extension"
	"github.com/google/trillian/quota"
	"github.com/google/trillian/storage"
	"github.com/google/trillian/storage/memory"
	"github.com/google/trillian/testonly/integration"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/keytrans/kt/internal/testing/logtest"
	"github.com/keytrans/kt/internal/testing/trilliantest"
	"github.com/keytrans/kt/log"
)

const testOrigin = "example.com/kt-trillian-test"

func init() {
	// The in-process signer runs at this interval; set before any
	// environment is created.
	integration.SequencerInterval = 20 * time.Millisecond
}

// newMemEnv starts Trillian in-process over its memory storage: a log
// server, an admin server and a sequencer.
func newMemEnv(t testing.TB) *integration.LogEnv {
	t.Helper()
	ts := memory.NewTreeStorage()
	reg := extension.Registry{
		AdminStorage: memory.NewAdminStorage(ts),
		LogStorage: initCheckingStorage{
			LogStorage:  cloningStorage{memory.NewLogStorage(ts, nil)},
			initialised: new(sync.Map),
		},
		QuotaManager: quota.Noop(),
	}
	// Trillian's memory storage races when read-only transactions commit
	// concurrently (each writes the tree's shared store pointer under a
	// read lock); serve one RPC at a time.
	var serial sync.Mutex
	one := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		serial.Lock()
		defer serial.Unlock()
		return h(ctx, req)
	}
	env, err := integration.NewLogEnvWithRegistryAndGRPCOptions(context.Background(), 1, reg,
		[]grpc.ServerOption{grpc.ChainUnaryInterceptor(one)}, nil)
	if err != nil {
		t.Fatalf("starting in-process Trillian: %v", err)
	}
	t.Cleanup(func() { closeWithin(t, envCloseTimeout, env.Close) })
	return env
}

// envCloseTimeout bounds the shutdown of an in-process Trillian. Close
// cancels the sequencer and drains the gRPC server, which takes
// milliseconds; a sequencer or handler stuck on a tree lock would instead
// make it wait forever, and the whole test binary with it until go test's
// -timeout (45 minutes in CI).
const envCloseTimeout = time.Minute

// closeWithin runs closeFn and fails the test, with every goroutine's
// stack, if it has not returned within d. The stuck goroutine is left
// behind: nothing can unblock it, but the test reports where it is.
func closeWithin(t testing.TB, d time.Duration, closeFn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		closeFn()
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		var buf bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
		t.Errorf("in-process Trillian did not shut down within %v; goroutines:\n%s", d, buf.Bytes())
	}
}

// cloningStorage works around a data race in Trillian's memory storage:
// its QueueLeaves keeps the very LogLeaf it returns to the server, and the
// sequencer then writes to that leaf while the server marshals its
// response (the race detector reports it, and gRPC sometimes fails with
// "size mismatch"). The wrapper stores copies instead.
type cloningStorage struct{ storage.LogStorage }

func (s cloningStorage) QueueLeaves(ctx context.Context, tree *tpb.Tree, leaves []*tpb.LogLeaf, ts time.Time) ([]*tpb.QueuedLogLeaf, error) {
	copies := make([]*tpb.LogLeaf, len(leaves))
	for i, l := range leaves {
		copies[i] = proto.Clone(l).(*tpb.LogLeaf)
	}
	ret, err := s.LogStorage.QueueLeaves(ctx, tree, copies, ts)
	for i, r := range ret {
		if i < len(copies) && r != nil && r.Leaf == copies[i] {
			r.Leaf = leaves[i]
		}
	}
	return ret, err
}

// initCheckingStorage works around a lock leak in Trillian's memory
// storage (v1.8.0): SnapshotForTree on a tree that InitLog has not
// initialised returns (nil, storage.ErrTreeNeedsInit) with the tree's
// read lock still held, and no transaction to release it with (the RPC
// server closes the transaction on that error only when one is returned,
// as the MySQL storage does). Any read RPC on an uninitialised tree leaks
// the lock; every later writer of that tree (InitLog, the sequencer's
// IntegrateBatch) then blocks in sync.RWMutex.Lock, which no context
// cancels, and LogEnv.Close, which waits for the sequencer, hangs with it.
// TestNewRejectsUnusableTrees reads an uninitialised tree on purpose; the
// test binary hung whenever a sequencer pass reached that tree before
// Close cancelled the sequencer. TestUninitialisedTreeRecovers shows the
// leak deterministically.
//
// The wrapper first looks, in a read-write transaction (which the memory
// storage does release when the tree needs init, and which it rolls
// back), whether the tree has a root, and returns ErrTreeNeedsInit itself
// when it has none. A tree once initialised stays so: the check is made
// once per tree.
type initCheckingStorage struct {
	storage.LogStorage
	initialised *sync.Map // tree ID → struct{}, trees known to have a root
}

// errRollback ends initCheckingStorage's probe without committing.
var errRollback = errors.New("probe only: roll back")

func (s initCheckingStorage) SnapshotForTree(ctx context.Context, tree *tpb.Tree) (storage.ReadOnlyLogTreeTX, error) {
	if _, ok := s.initialised.Load(tree.TreeId); !ok {
		err := s.LogStorage.ReadWriteTransaction(ctx, tree, func(ctx context.Context, tx storage.LogTreeTX) error {
			if slr, err := tx.LatestSignedLogRoot(ctx); err != nil || slr == nil {
				return storage.ErrTreeNeedsInit
			}
			return errRollback
		})
		switch {
		case errors.Is(err, storage.ErrTreeNeedsInit):
			return nil, storage.ErrTreeNeedsInit
		case err == nil, errors.Is(err, errRollback):
			s.initialised.Store(tree.TreeId, struct{}{})
		default:
			return nil, err
		}
	}
	return s.LogStorage.SnapshotForTree(ctx, tree)
}

var (
	keyOnce  sync.Once
	signer   note.Signer
	verifier note.Verifier
	vkey     string // verifier key
)

func testKey(t testing.TB) (note.Signer, note.Verifier) {
	t.Helper()
	keyOnce.Do(func() {
		skey, v, err := note.GenerateKey(rand.Reader, testOrigin)
		if err != nil {
			panic(err)
		}
		vkey = v
		if signer, err = note.NewSigner(skey); err != nil {
			panic(err)
		}
		if verifier, err = note.NewVerifier(vkey); err != nil {
			panic(err)
		}
	})
	return signer, verifier
}

// testConfig is a Config for tests, with a short checkpoint interval.
func testConfig(t testing.TB, conn grpc.ClientConnInterface, treeID int64) Config {
	s, _ := testKey(t)
	return Config{
		Conn:               conn,
		TreeID:             treeID,
		CreateTree:         treeID == 0,
		Origin:             testOrigin,
		Signer:             s,
		CheckpointInterval: 20 * time.Millisecond,
		MaxPollInterval:    10 * time.Millisecond, // half the signer's interval
		Logger:             slog.New(slog.DiscardHandler),
	}
}

// openLog opens a Log and closes it when the test ends.
func openLog(t testing.TB, cfg Config) *Log {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l
}

// factory is a logtest.Factory over one Trillian: each log name is a tree,
// created the first time the name is opened.
func factory(t *testing.T, conn grpc.ClientConnInterface) logtest.Factory {
	_, v := testKey(t)
	var (
		mu    sync.Mutex
		trees = map[string]int64{}
	)
	return logtest.Factory{
		Origin:   testOrigin,
		Verifier: v,
		Open: func(t *testing.T, name string) log.Log {
			mu.Lock()
			defer mu.Unlock()
			cfg := testConfig(t, conn, trees[name])
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			l, err := New(ctx, cfg)
			if err != nil {
				t.Fatalf("New(%q): %v", name, err)
			}
			trees[name] = l.TreeID()
			return l
		},
	}
}

// TestSuiteMemory runs the shared backend suite against in-process Trillian
// over memory storage.
func TestSuiteMemory(t *testing.T) {
	env := newMemEnv(t)
	logtest.Run(t, factory(t, env.ClientConn))
}

// TestSuiteMariaDB runs the shared backend suite against real
// trillian_log_server and trillian_log_signer processes on MariaDB.
func TestSuiteMariaDB(t *testing.T) {
	env := trilliantest.Start(t, trilliantest.Options{SequencerInterval: 20 * time.Millisecond})
	logtest.Run(t, factory(t, env.Conn))
}

// createRawTree creates a tree of the given type, initialised or not.
func createRawTree(t *testing.T, env *integration.LogEnv, typ tpb.TreeType, init bool) int64 {
	t.Helper()
	ctx := context.Background()
	tree, err := env.Admin.CreateTree(ctx, &tpb.CreateTreeRequest{Tree: &tpb.Tree{
		TreeState: tpb.TreeState_ACTIVE, TreeType: typ, DisplayName: "test",
		MaxRootDuration: durationpb.New(0),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if init {
		if _, err := env.Log.InitLog(ctx, &tpb.InitLogRequest{LogId: tree.TreeId}); err != nil {
			t.Fatal(err)
		}
	}
	return tree.TreeId
}
