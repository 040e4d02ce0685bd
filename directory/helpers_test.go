package directory

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/posix"
	"github.com/keytrans/kt/vrf"
)

const testOrigin = "example.test/kt"

// keys are a deployment's keys.
type keys struct {
	signer   note.Signer
	vkey     string
	verifier note.Verifier
	vrf      *vrf.PrivateKey
	recovery ed25519.PrivateKey
	token    *TokenCredentials
}

func newKeys(t testing.TB) *keys {
	t.Helper()
	_, vkey, s, v := testkit.NoteKey(t, testOrigin)
	vk, err := vrf.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, rk, _ := ed25519.GenerateKey(nil)
	tk, err := NewTokenCredentials(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	return &keys{signer: s, vkey: vkey, verifier: v, vrf: vk, recovery: rk, token: tk}
}

// backend opens a log of one kind; opening the same dir again reopens it.
type backend struct {
	name string
	open func(t testing.TB, k *keys, dir string) log.Log
}

// memLogs keeps memory logs alive across "restarts" within a test.
var memLogs sync.Map // dir -> *conformance.MemoryLog

// reopenableMem wraps a MemoryLog so that Close does not lose it: a
// restart reopens the same in-memory log.
type reopenableMem struct{ *conformance.MemoryLog }

func (reopenableMem) Close(context.Context) error { return nil }

var backends = []backend{
	{"memory", func(t testing.TB, k *keys, dir string) log.Log {
		l, _ := memLogs.LoadOrStore(dir, conformance.NewMemoryLog(testOrigin, k.signer))
		return reopenableMem{l.(*conformance.MemoryLog)}
	}},
	{"posix", func(t testing.TB, k *keys, dir string) log.Log {
		l, err := posix.New(context.Background(), posix.Config{
			Dir: dir, Origin: testOrigin, Signer: k.signer,
			CheckpointInterval: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}},
}

// env is a running directory over a log, with its directories.
type env struct {
	t        testing.TB
	k        *keys
	b        backend
	logDir   string
	stateDir string
	log      log.Log
	d        *Directory
	params   *client.Params
	wrap     func(log.Log) log.Log // optional, applied to the log on open
	tune     func(*Config)         // optional, applied to the config on start
}

func newEnv(t testing.TB, b backend) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, k: newKeys(t), b: b, logDir: filepath.Join(dir, "log"), stateDir: filepath.Join(dir, "state")}
	e.start()
	t.Cleanup(e.stop)
	return e
}

func (e *env) config(l log.Log) Config {
	return Config{
		Log:               l,
		Origin:            testOrigin,
		LogVerifierKey:    e.k.vkey,
		VRFKey:            e.k.vrf,
		RecoveryKey:       e.k.recovery.Public().(ed25519.PublicKey),
		Credentials:       e.k.token,
		StateDir:          e.stateDir,
		EpochInterval:     20 * time.Millisecond,
		HeartbeatInterval: 200 * time.Millisecond,
		StartupWait:       time.Second,
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func (e *env) start() {
	e.t.Helper()
	e.log = e.b.open(e.t, e.k, e.logDir)
	l := e.log
	if e.wrap != nil {
		l = e.wrap(l)
	}
	cfg := e.config(l)
	if e.tune != nil {
		e.tune(&cfg)
	}
	d, err := New(context.Background(), cfg)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	e.d = d
	pb, err := d.GetParameters(context.Background(), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.params, err = client.NewParams(pb, client.Options{InsecureNoWitnesses: true, MaxAge: time.Hour})
	if err != nil {
		e.t.Fatalf("client.NewParams: %v", err)
	}
}

func (e *env) stop() {
	if e.d == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.d.Close(ctx); err != nil && !errors.Is(err, ErrUnavailable) {
		e.t.Errorf("Directory.Close: %v", err)
	}
	if err := e.log.Close(ctx); err != nil && !errors.Is(err, log.ErrClosed) {
		e.t.Errorf("log Close: %v", err)
	}
	e.d = nil
}

func (e *env) restart() {
	e.t.Helper()
	e.stop()
	e.start()
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitEpoch waits until the served epoch covers log index i (its
// checkpoint size is above i) and returns it.
func (e *env) waitEpoch(i uint64) *ktpb.EpochPart {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ep := e.d.cur.Load()
		if ep != nil && ep.size > i {
			return ep.full
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no epoch covering log index %d within 30s (fatal: %v)", i, e.d.fatal.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// handleState is what a client tracks about one handle.
type handleState struct {
	handle  string
	index   [32]byte
	version uint64
	leaf    [32]byte
}

func newHandle(t testing.TB, k *keys, input string) *handleState {
	t.Helper()
	h, err := api.NormalizeHandle(input)
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := k.vrf.Prove(api.VRFInput(h))
	return &handleState{handle: h, index: idx}
}

// change builds a signed change of h to set. accountKey, if set, signs the
// device set (strict mode).
func (h *handleState) change(kind api.AuthKind, signer ed25519.PrivateKey, set *api.DeviceSet, accountKey ed25519.PrivateKey) *ktpb.HandleChange {
	if accountKey != nil {
		set.SignAccount(testOrigin, h.index, h.version+1, accountKey)
	}
	hc, err := client.NewChange(testOrigin, h.latest(), set, kind, signer)
	if err != nil {
		panic(err)
	}
	return hc
}

// latest is h's latest state as a client's verified lookup gives it.
func (h *handleState) latest() *client.LookupResult {
	return &client.LookupResult{Handle: h.handle, Index: h.index, Version: h.version, LeafHash: h.leaf}
}

// accepted records that hc was logged.
func (h *handleState) accepted(hc *ktpb.HandleChange) {
	h.version++
	h.leaf = api.LeafHash(hc.ChangeRecord)
}

// enroll enrolls h with the token credential.
func (e *env) enroll(h *handleState, signer ed25519.PrivateKey, set *api.DeviceSet) uint64 {
	e.t.Helper()
	hc := h.change(api.AuthEnroll, signer, set, nil)
	res, err := e.d.Enroll(ctxT(e.t), &ktpb.EnrollRequest{Change: hc, Credential: e.k.token.IssueToken(h.handle)})
	if err != nil {
		e.t.Fatalf("Enroll %s: %v", h.handle, err)
	}
	h.accepted(hc)
	return res.LogIndices[0]
}

// apply submits a Change and records it.
func (e *env) apply(h *handleState, hc *ktpb.HandleChange) uint64 {
	e.t.Helper()
	res, err := e.d.Change(ctxT(e.t), &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}})
	if err != nil {
		e.t.Fatalf("Change %s: %v", h.handle, err)
	}
	h.accepted(hc)
	return res.LogIndices[0]
}

// lookup looks h up once an epoch covers log index i and verifies the
// answer with the client library.
func (e *env) lookup(handle string, i uint64) *client.LookupResult {
	e.t.Helper()
	e.waitEpoch(i)
	resp, err := e.d.Lookup(ctxT(e.t), &ktpb.LookupRequest{Handle: handle})
	if err != nil {
		e.t.Fatalf("Lookup %s: %v", handle, err)
	}
	res, err := client.VerifyLookup(e.params, nil, handle, resp, time.Now(), nil)
	if err != nil {
		e.t.Fatalf("VerifyLookup %s: %v", handle, err)
	}
	return res
}

// signingKeys returns the sorted device signing keys of a set.
func signingKeys(s *api.DeviceSet) [][32]byte {
	var out [][32]byte
	for _, d := range s.Devices {
		out = append(out, d.SigningKey)
	}
	slices.SortFunc(out, func(a, b [32]byte) int { return slices.Compare(a[:], b[:]) })
	return out
}
