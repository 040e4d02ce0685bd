package trillian

import (
	"context"
	"crypto/rand"
	"log/slog"
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

	"github.com/keytrans/kt/internal/trilliantest"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/logtest"
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
		LogStorage:   cloningStorage{memory.NewLogStorage(ts, nil)},
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
	t.Cleanup(env.Close)
	return env
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
