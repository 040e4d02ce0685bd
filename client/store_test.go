package client_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/client"
)

func testState(t *testing.T) *client.State {
	t.Helper()
	k, err := client.GenerateDevice(api.SuiteHybrid, time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := client.GenerateDevice(api.SuiteX25519, time.Unix(1700000000, 0))
	return &client.State{
		Device:        k,
		PendingDevice: p,
		Handles:       map[string]*client.MonitorState{"mailto:a@example.com": {Index: [32]byte{1}}},
		Primary:       "mailto:a@example.com",
		Pins:          map[string][32]byte{"mailto:b@example.com": {2}},
		OwnDevices:    [][32]byte{{3}},
		Refused:       map[string]*client.Refusal{"example.com/kt+01020304": testRefusal()},
	}
}

// testRefusal is a refusal record (its bundle proves nothing; the state
// encoding does not verify it).
func testRefusal() *client.Refusal {
	b := []byte("kt-evidence/v1\n")
	h := sha256.Sum256(b)
	return &client.Refusal{Kind: "fork", ID: hex.EncodeToString(h[:]), What: "fork of example.com/kt", Bundle: b, Time: time.Unix(1700000000, 0).UTC()}
}

func TestStateRoundTrip(t *testing.T) {
	st := testState(t)
	b, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got client.State
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	b2, err := got.MarshalBinary()
	if err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("round trip differs: %v\n%s\n%s", err, b, b2)
	}
	if got.Device.Descriptor() != st.Device.Descriptor() {
		t.Fatal("device keys changed")
	}
}

// TestStateCorrupt: corrupt or unknown state is an error wrapping
// ErrState, never an empty state.
func TestStateCorrupt(t *testing.T) {
	good, _ := testState(t).MarshalBinary()
	for name, b := range map[string][]byte{
		"truncated":       good[:len(good)/2],
		"empty":           {},
		"version 2":       bytes.Replace(good, []byte(`"version": 1`), []byte(`"version": 2`), 1),
		"unknown field":   bytes.Replace(good, []byte(`"version": 1`), []byte(`"version": 1, "x": 1`), 1),
		"bad device":      bytes.Replace(good, []byte(`"device": "A`), []byte(`"device": "B`), 1),
		"non-canonical":   bytes.Replace(good, []byte(`mailto:a@example.com`), []byte(`A@example.com`), 1),
		"trailing":        append(bytes.Clone(good), "{}"...),
		"primary missing": bytes.Replace(good, []byte(`"primary": "mailto:a`), []byte(`"primary": "mailto:c`), 1),
		// A damaged refusal is an error, never a silent return to trusting
		// the log.
		"refusal id":     bytes.Replace(good, []byte(`"id": "`), []byte(`"id": "0`), 1),
		"refusal bundle": bytes.Replace(good, []byte(`"bundle": "`), []byte(`"bundle": "AA`), 1),
		"refusal kind":   bytes.Replace(good, []byte(`"kind": "fork"`), []byte(`"kind": ""`), 1),
		"refusal field":  bytes.Replace(good, []byte(`"kind": "fork"`), []byte(`"kind": "fork", "x": 1`), 1),
	} {
		var s client.State
		if err := s.UnmarshalBinary(b); !errors.Is(err, client.ErrState) {
			t.Errorf("%s: %v, want ErrState", name, err)
		}
	}

	// A client over a corrupt file fails clearly and does not reset it.
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, good[:10], 0o600); err != nil {
		t.Fatal(err)
	}
	e := &client.FileStore{Path: path}
	c, err := client.New(nilDir{}, testParams(t), e, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Init(context.Background(), api.HPKESuite{}); !errors.Is(err, client.ErrState) {
		t.Fatalf("Init over corrupt state: %v", err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, good[:10]) {
		t.Fatal("corrupt state was overwritten")
	}
}

func TestFileStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := &client.FileStore{Path: filepath.Join(dir, "state")}
	if b, err := s.Load(ctx); b != nil || err != nil {
		t.Fatalf("empty store: %q, %v", b, err)
	}
	if err := s.Update(ctx, func(old []byte) ([]byte, error) { return []byte("one"), nil }); err != nil {
		t.Fatal(err)
	}
	// A failing update stores nothing.
	boom := errors.New("boom")
	if err := s.Update(ctx, func(old []byte) ([]byte, error) { return []byte("two"), boom }); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if b, _ := s.Load(ctx); string(b) != "one" {
		t.Fatalf("after a failed update: %q", b)
	}
	// Concurrent read-modify-write updates (as from several processes)
	// are serialized by the lock: none is lost.
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			s2 := &client.FileStore{Path: s.Path}
			if err := s2.Update(ctx, func(old []byte) ([]byte, error) { return append(old, 'x'), nil }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if b, _ := s.Load(ctx); string(b) != "one"+strings.Repeat("x", 20) {
		t.Fatalf("lost updates: %q", b)
	}
	fi, err := os.Stat(s.Path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
	// No temporary files are left behind.
	es, _ := os.ReadDir(dir)
	for _, e := range es {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("left over: %s", e.Name())
		}
	}
}

// TestFileStoreCrash kills (SIGKILL) a child process in the middle of a
// stream of FileStore updates, several times, and checks that the file
// always holds one complete state, never a torn one, and that no
// acknowledged update was lost.
func TestFileStoreCrash(t *testing.T) {
	path := os.Getenv("KT_FILESTORE_CRASH_CHILD")
	if path != "" {
		crashChild(path)
		return
	}
	path = filepath.Join(t.TempDir(), "state")
	last := uint64(0)
	for round := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFileStoreCrash$")
		cmd.Env = append(os.Environ(), "KT_FILESTORE_CRASH_CHILD="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Read acknowledgements until a few arrived, then kill.
		acked := uint64(0)
		buf := make([]byte, 0, 64)
		one := make([]byte, 1)
		for n := 0; n < 20+round*10; {
			if _, err := out.Read(one); err != nil {
				t.Fatalf("child: %v", err)
			}
			if one[0] == '\n' {
				acked = parseUint(t, string(buf))
				buf = buf[:0]
				n++
				continue
			}
			buf = append(buf, one[0])
		}
		cmd.Process.Kill()
		cmd.Wait()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		v := checkBlob(t, b)
		if v < acked || v < last {
			t.Fatalf("round %d: state %d, but %d was acknowledged (previous %d)", round, v, acked, last)
		}
		last = v
	}
}

const blobSize = 64 << 10

// crashChild updates the store forever, each state a 64 KiB blob of one
// counter, printing each counter once Update returned.
func crashChild(path string) {
	s := &client.FileStore{Path: path}
	for {
		var next uint64
		err := s.Update(context.Background(), func(old []byte) ([]byte, error) {
			if len(old) >= 20 {
				fmt.Sscanf(string(old[:20]), "%d", &next)
			}
			next++
			return bytes.Repeat(fmt.Appendf(nil, "%020d", next), blobSize/20), nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%d\n", next)
	}
}

func checkBlob(t *testing.T, b []byte) uint64 {
	t.Helper()
	if len(b) != blobSize/20*20 {
		t.Fatalf("torn state: %d bytes", len(b))
	}
	if !bytes.Equal(b, bytes.Repeat(b[:20], blobSize/20)) {
		t.Fatal("torn state: mixed contents")
	}
	return parseUint(t, string(b[:20]))
}

func parseUint(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(strings.TrimLeft(s, "0"), 10, 64)
	if err != nil && s != strings.Repeat("0", len(s)) {
		t.Fatalf("bad counter %q", s)
	}
	return v
}
