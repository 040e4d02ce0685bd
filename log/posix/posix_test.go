package posix

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/tessera"
	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/internal/testing/logtest"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/internal/testing/testwitness"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/witness"
)

const testOrigin = "example.com/kt-test"

// newKey returns a fresh log key: signer key string, signer and verifier.
func newKey(t testing.TB, origin string) (string, note.Signer, note.Verifier) {
	t.Helper()
	skey, _, s, v := testkit.NoteKey(t, origin)
	testVerifiers.Store(s, v)
	return skey, s, v
}

// verifierOf returns the verifier of a test signer.
func verifierOf(t testing.TB, s note.Signer) note.Verifier {
	t.Helper()
	v, ok := testVerifiers.Load(s)
	if !ok {
		t.Fatal("signer not made by newKey")
	}
	return v.(note.Verifier)
}

var testVerifiers sync.Map // note.Signer -> note.Verifier, filled by newKey

// testConfig is a Config with a short checkpoint interval, for tests.
func testConfig(dir string, s note.Signer) Config {
	return Config{
		Dir:                dir,
		Origin:             s.Name(),
		Signer:             s,
		CheckpointInterval: 100 * time.Millisecond,
	}
}

func openLog(t testing.TB, cfg Config) *Log {
	t.Helper()
	l, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return l
}

func closeLog(t testing.TB, l *Log) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestLogSuite(t *testing.T) {
	base := t.TempDir()
	_, s, v := newKey(t, testOrigin)
	logtest.Run(t, logtest.Factory{
		Open: func(t *testing.T, name string) log.Log {
			return openLog(t, testConfig(filepath.Join(base, name), s))
		},
		Origin:   testOrigin,
		Verifier: v,
	})
}

func TestConfigValidation(t *testing.T) {
	_, s, _ := newKey(t, testOrigin)
	_, other, _ := newKey(t, "other.example/log")
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		edit func(c *Config)
	}{
		{"no dir", func(c *Config) { c.Dir = "" }},
		{"no origin", func(c *Config) { c.Origin = "" }},
		{"no signer", func(c *Config) { c.Signer = nil }},
		{"signer for another origin", func(c *Config) { c.Signer = other }},
		{"checkpoint interval too small", func(c *Config) { c.CheckpointInterval = 10 * time.Millisecond }},
		{"republish below checkpoint interval", func(c *Config) { c.RepublishInterval = 50 * time.Millisecond }},
		{"negative batch age", func(c *Config) { c.BatchMaxAge = -time.Second }},
		{"malformed witness policy", func(c *Config) { c.WitnessPolicy = []byte("witness w1 not-a-key http://127.0.0.1:1\nquorum w1\n") }},
		{"witness policy without quorum", func(c *Config) { c.WitnessPolicy = []byte("# nothing\n") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(dir, s)
			tc.edit(&cfg)
			if l, err := New(context.Background(), cfg); err == nil {
				closeLog(t, l)
				t.Fatal("New accepted an invalid Config")
			}
		})
	}
	// Nothing was created by the rejected configurations.
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Fatalf("rejected configurations left %d files behind (%v)", len(ents), err)
	}
}

// TestWitnessPolicyParsedLikeClients: New rejects policies that Tessera's
// parser accepts but witness.ParsePolicy, the clients' parser, rejects, and
// creates nothing.
func TestWitnessPolicyParsedLikeClients(t *testing.T) {
	_, s, _ := newKey(t, testOrigin)
	wit, err := testwitness.New("witness.example")
	if err != nil {
		t.Fatal(err)
	}
	w := "witness w1 " + wit.VerifierKey() + " http://127.0.0.1:1\n"
	w2 := "witness w2 " + wit.VerifierKey() + " http://127.0.0.1:2\n"
	dir := t.TempDir()
	for _, tc := range []struct{ name, policy string }{
		{"threshold 0", w + "group g 0 w1\nquorum g\n"},
		{"two quorum lines", w + "quorum w1\nquorum none\n"},
		{"two witnesses with one key", w + w2 + "group g any w1 w2\nquorum g\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tessera.NewWitnessGroupFromPolicy([]byte(tc.policy)); err != nil {
				t.Fatalf("Tessera rejects the policy (%v): the case tests nothing", err)
			}
			cfg := testConfig(filepath.Join(dir, "log"), s)
			cfg.WitnessPolicy = []byte(tc.policy)
			l, err := New(context.Background(), cfg)
			if err == nil {
				closeLog(t, l)
				t.Fatal("New accepted a policy witness.ParsePolicy rejects")
			}
			if _, ok := errors.AsType[*witness.ParseError](err); !ok {
				t.Fatalf("New: %v, want a *witness.ParseError", err)
			}
		})
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Fatalf("rejected policies left %d files behind (%v)", len(ents), err)
	}
}

func TestNewLogPublishesEmptyCheckpoint(t *testing.T) {
	// Without witnesses, New publishes the empty tree at once.
	_, s, v := newKey(t, testOrigin)
	l := openLog(t, testConfig(t.TempDir(), s))
	defer closeLog(t, l)
	raw, err := l.Checkpoint(testCtx(t))
	if err != nil {
		t.Fatalf("Checkpoint of a new log: %v", err)
	}
	cp, _, err := log.ParseCheckpoint(raw, testOrigin, v)
	if err != nil || cp.Size != 0 {
		t.Fatalf("new log's checkpoint: size %v, %v", cp, err)
	}
	if _, err := l.Entries(testCtx(t), 0, 1); !errors.Is(err, log.ErrOutOfRange) {
		t.Fatalf("Entries on an empty log: %v, want ErrOutOfRange", err)
	}
}

func TestDirectoryLocked(t *testing.T) {
	_, s, _ := newKey(t, testOrigin)
	cfg := testConfig(t.TempDir(), s)
	l := openLog(t, cfg)
	if l2, err := New(context.Background(), cfg); err == nil {
		closeLog(t, l2)
		t.Fatal("a second New on an open directory succeeded")
	}
	closeLog(t, l)
	// Released by Close.
	closeLog(t, openLog(t, cfg))
}

func TestClosed(t *testing.T) {
	_, s, _ := newKey(t, testOrigin)
	l := openLog(t, testConfig(t.TempDir(), s))
	ctx := testCtx(t)
	if _, err := l.Append(ctx, [][]byte{[]byte("x")}); err != nil {
		t.Fatal(err)
	}
	closeLog(t, l)
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"Append", func() error { _, err := l.Append(ctx, [][]byte{[]byte("y")}); return err }},
		{"Await", func() error { _, err := l.Await(ctx, 0); return err }},
		{"Checkpoint", func() error { _, err := l.Checkpoint(ctx); return err }},
		{"Entries", func() error { _, err := l.Entries(ctx, 0, 1); return err }},
		{"InclusionProof", func() error { _, err := l.InclusionProof(ctx, 0, 1); return err }},
		{"Close", func() error { return l.Close(ctx) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, log.ErrClosed) {
				t.Fatalf("got %v, want ErrClosed", err)
			}
		})
	}
}

// TestAppendCopiesEntries: the caller may reuse its buffers once Append
// returned, and even while it runs.
func TestAppendCopiesEntries(t *testing.T) {
	_, s, _ := newKey(t, testOrigin)
	l := openLog(t, testConfig(t.TempDir(), s))
	defer closeLog(t, l)
	ctx := testCtx(t)
	buf := []byte("original")
	done := make(chan struct{})
	var idx []uint64
	var err error
	go func() { idx, err = l.Append(ctx, [][]byte{buf}); close(done) }()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	copy(buf, "modified")
	if _, err := l.Await(ctx, idx[0]); err != nil {
		t.Fatal(err)
	}
	got, err := l.Entries(ctx, idx[0], idx[0]+1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[0], []byte("original")) {
		t.Fatalf("logged %q, want %q", got[0], "original")
	}
}

// TestEntriesPaging: Entries returns at most one bundle, starting anywhere.
func TestEntriesPaging(t *testing.T) {
	_, s, _ := newKey(t, testOrigin)
	l := openLog(t, testConfig(t.TempDir(), s))
	defer closeLog(t, l)
	ctx := testCtx(t)
	const n = 700
	es := make([][]byte, n)
	for i := range es {
		es[i] = fmt.Appendf(nil, "entry %d", i)
	}
	idx, err := l.Append(ctx, es)
	if err != nil {
		t.Fatal(err)
	}
	if idx[0] != 0 || idx[n-1] != n-1 {
		t.Fatalf("a new log placed the entries at %d..%d", idx[0], idx[n-1])
	}
	if _, err := l.Await(ctx, idx[n-1]); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		start, end uint64
		want       int
	}{
		{0, n, 256},
		{10, n, 246},
		{255, 257, 1},
		{256, 600, 256},
		{600, 700, 100},
		{699, 700, 1},
		{512, 520, 8},
	} {
		t.Run(fmt.Sprintf("%d-%d", tc.start, tc.end), func(t *testing.T) {
			got, err := l.Entries(ctx, tc.start, tc.end)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.want {
				t.Fatalf("got %d entries, want %d", len(got), tc.want)
			}
			for i, e := range got {
				if want := es[tc.start+uint64(i)]; !bytes.Equal(e, want) {
					t.Fatalf("entry %d: got %q, want %q", tc.start+uint64(i), e, want)
				}
			}
		})
	}
}

// TestConcurrentAppendsStayContiguous: many concurrent multi-entry Appends
// are grouped into shared batches, yet each call's entries land in order at
// consecutive indices, no index is handed out twice, and every entry reads
// back at its index.
func TestConcurrentAppendsStayContiguous(t *testing.T) {
	_, s, _ := newKey(t, testOrigin)
	cfg := testConfig(t.TempDir(), s)
	cfg.BatchMaxSize = 100 // force groups to split across batches
	l := openLog(t, cfg)
	defer closeLog(t, l)
	ctx := testCtx(t)
	const callers, calls, per = 16, 10, 7
	var mu sync.Mutex
	got := map[uint64][]byte{}
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range calls {
				es := make([][]byte, per)
				for i := range es {
					es[i] = fmt.Appendf(nil, "caller %d call %d entry %d", c, n, i)
				}
				idx, err := l.Append(ctx, es)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for i := range idx {
					if i > 0 && idx[i] != idx[i-1]+1 {
						errs <- fmt.Errorf("one Append got indices %v", idx)
					}
					if _, dup := got[idx[i]]; dup {
						errs <- fmt.Errorf("index %d handed out twice", idx[i])
					}
					got[idx[i]] = es[i]
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(got) != callers*calls*per {
		t.Fatalf("%d indices for %d entries", len(got), callers*calls*per)
	}
	if _, err := l.Await(ctx, uint64(len(got)-1)); err != nil {
		t.Fatal(err)
	}
	for start := uint64(0); start < uint64(len(got)); {
		es, err := l.Entries(ctx, start, uint64(len(got)))
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range es {
			if want := got[start+uint64(i)]; !bytes.Equal(e, want) {
				t.Fatalf("entry %d: got %q, want %q", start+uint64(i), e, want)
			}
		}
		start += uint64(len(es))
	}
}
