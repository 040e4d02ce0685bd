package posix

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keytrans/kt/log"
)

// Environment of the crash child: the data directory, the log key and the
// round number (to make entries unique across rounds).
const (
	crashEnvDir   = "KT_POSIX_CRASH_DIR"
	crashEnvKey   = "KT_POSIX_CRASH_KEY"
	crashEnvRound = "KT_POSIX_CRASH_ROUND"
	ackPrefix     = "ACK "
)

// TestMain runs the writer process of TestCrashRecovery when started as
// one, and the tests otherwise.
func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnvDir); dir != "" {
		crashChild(dir)
		os.Exit(5) // unreachable: crashChild appends until killed
	}
	os.Exit(m.Run())
}

// crashChild appends to the log in dir from several goroutines and prints
// an acknowledgement line for each entry once its Append returned.
func crashChild(dir string) {
	s, err := note.NewSigner(os.Getenv(crashEnvKey))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cfg := testConfig(dir, s)
	cfg.BatchMaxSize = 512
	l, err := New(context.Background(), cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	round := os.Getenv(crashEnvRound)
	var outMu sync.Mutex
	const writers = 8
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				es := make([][]byte, 1+mrand.IntN(40))
				for i := range es {
					// Unique, variable-size entries.
					e := fmt.Appendf(nil, "round %s writer %d batch %d entry %d ", round, w, n, i)
					pad := make([]byte, mrand.IntN(300))
					rand.Read(pad)
					es[i] = append(e, pad...)
				}
				idx, err := l.Append(context.Background(), es)
				if err != nil {
					fmt.Fprintf(os.Stderr, "Append: %v\n", err)
					os.Exit(3)
				}
				// Acknowledge only now that Append returned, in one write.
				var buf bytes.Buffer
				for i, e := range es {
					h := sha256.Sum256(e)
					fmt.Fprintf(&buf, "%s%d %x\n", ackPrefix, idx[i], h)
				}
				outMu.Lock()
				_, err = os.Stdout.Write(buf.Bytes())
				outMu.Unlock()
				if err != nil {
					os.Exit(4)
				}
			}
		}()
	}
	wg.Wait() // never returns: the parent kills this process
}

// verifiedCheckpoint is a checkpoint whose signature was verified.
type verifiedCheckpoint struct {
	size uint64
	root tlog.Hash
}

func parseVerified(t *testing.T, raw []byte, v note.Verifier) verifiedCheckpoint {
	t.Helper()
	cp, _, err := log.ParseCheckpoint(raw, testOrigin, v)
	if err != nil {
		t.Fatalf("checkpoint does not verify: %v\n%s", err, raw)
	}
	var h tlog.Hash
	copy(h[:], cp.Hash)
	return verifiedCheckpoint{size: cp.Size, root: h}
}

// TestCrashRecovery kills a writer process with SIGKILL while it appends
// under load, reopens the log and checks that nothing acknowledged was lost
// or changed and that the tree is sound, over several kill/restart rounds.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test starts child processes")
	}
	dir := t.TempDir()
	skey, _, v := newKey(t, testOrigin)

	acked := map[uint64]string{} // index -> hex SHA-256 of the entry, across rounds
	var seen []verifiedCheckpoint
	const rounds = 4
	for round := range rounds {
		killAfter := 1500 + mrand.IntN(3000)
		n, pre := runAndKill(t, dir, skey, round, killAfter, acked, v)
		if pre != nil {
			seen = append(seen, *pre)
		}
		t.Logf("round %d: %d acknowledged before SIGKILL (killed after %d acks), %d in total", round, n, killAfter, len(acked))
		seen = append(seen, verifyRecovered(t, dir, skey, v, acked, seen))
	}
}

// runAndKill runs one child, records its acknowledgements in acked, and
// kills it after killAfter acknowledgements plus a random delay. It returns
// the number of acknowledgements and a checkpoint read from disk just
// before the kill.
func runAndKill(t *testing.T, dir, skey string, round, killAfter int, acked map[uint64]string, v note.Verifier) (int, *verifiedCheckpoint) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnvDir+"="+dir, crashEnvKey+"="+skey, crashEnvRound+"="+strconv.Itoa(round))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill := func() {
		if !killed {
			killed = true
			_ = cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	timer := time.AfterFunc(60*time.Second, kill) // a hung child must not hang the test
	defer timer.Stop()

	var pre *verifiedCheckpoint
	r := bufio.NewReader(stdout)
	count := 0
	for {
		line, err := r.ReadString('\n')
		if err == io.EOF {
			// A line cut by the kill has no newline; it was never complete,
			// so its entry does not count as acknowledged.
			break
		}
		if err != nil {
			t.Fatalf("reading child output: %v", err)
		}
		rest, ok := strings.CutPrefix(line, ackPrefix)
		if !ok {
			continue // test framework output
		}
		idxStr, hash, ok := strings.Cut(strings.TrimSpace(rest), " ")
		idx, perr := strconv.ParseUint(idxStr, 10, 64)
		if !ok || perr != nil || len(hash) != 64 {
			t.Fatalf("malformed acknowledgement %q", line)
		}
		if prev, dup := acked[idx]; dup && prev != hash {
			t.Fatalf("index %d acknowledged for two different entries", idx)
		}
		acked[idx] = hash
		count++
		if count == killAfter && !killed {
			// The published checkpoint as a reader would see it right now,
			// to check consistency with it after the crash.
			if raw, err := os.ReadFile(filepath.Join(dir, "checkpoint")); err == nil {
				cp := parseVerified(t, raw, v)
				pre = &cp
			}
			time.AfterFunc(time.Duration(mrand.IntN(50))*time.Millisecond, kill)
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child exited by itself after %d acknowledgements: %v\n%s", count, err, stderr.Bytes())
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v\n%s", err, stderr.Bytes())
	}
	if count < killAfter {
		t.Fatalf("child acknowledged only %d entries", count)
	}
	return count, pre
}

// verifyRecovered reopens the log after a crash and checks it against
// everything acknowledged and every checkpoint seen before. It returns the
// recovered checkpoint.
func verifyRecovered(t *testing.T, dir, skey string, v note.Verifier, acked map[uint64]string, seen []verifiedCheckpoint) verifiedCheckpoint {
	t.Helper()
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	l := openLog(t, testConfig(dir, s))
	defer closeLog(t, l)
	ctx := testCtx(t)

	var maxIdx uint64
	for i := range acked {
		maxIdx = max(maxIdx, i)
	}
	raw, err := l.Await(ctx, maxIdx)
	if err != nil {
		t.Fatalf("Await(%d) after restart: %v", maxIdx, err)
	}
	cp := parseVerified(t, raw, v)
	if cp.size <= maxIdx {
		t.Fatalf("recovered checkpoint has size %d, but index %d was acknowledged", cp.size, maxIdx)
	}

	// Every entry, read through the Log.
	all := make([][]byte, 0, cp.size)
	for uint64(len(all)) < cp.size {
		es, err := l.Entries(ctx, uint64(len(all)), cp.size)
		if err != nil {
			t.Fatalf("Entries(%d, %d): %v", len(all), cp.size, err)
		}
		all = append(all, es...)
	}
	// Every acknowledged entry, byte for byte (by hash) at its index.
	for i, want := range acked {
		if got := sha256.Sum256(all[i]); hex.EncodeToString(got[:]) != want {
			t.Fatalf("entry %d changed after the crash: hash %x, acknowledged %s", i, got, want)
		}
	}

	// The root, recomputed independently with golang.org/x/mod/sumdb/tlog.
	var stored []tlog.Hash
	reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	for i, e := range all {
		hs, err := tlog.StoredHashes(int64(i), e, reader)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
	}
	root, err := tlog.TreeHash(int64(cp.size), reader)
	if err != nil {
		t.Fatal(err)
	}
	if root != cp.root {
		t.Fatalf("checkpoint root %x, entries hash to %x", cp.root, root)
	}

	// Consistent with every checkpoint published before, in every round.
	for _, old := range seen {
		if old.size == 0 {
			continue
		}
		if old.size > cp.size {
			t.Fatalf("checkpoint went back from %d to %d", old.size, cp.size)
		}
		if r, err := tlog.TreeHash(int64(old.size), reader); err != nil || r != old.root {
			t.Fatalf("earlier checkpoint of size %d has root %x, the entries give %x (%v)", old.size, old.root, r, err)
		}
		p, err := l.ConsistencyProof(ctx, old.size, cp.size)
		if err != nil {
			t.Fatalf("ConsistencyProof(%d, %d): %v", old.size, cp.size, err)
		}
		if err := tlog.CheckTree(toTreeProof(p), int64(cp.size), cp.root, int64(old.size), old.root); err != nil {
			t.Fatalf("consistency %d -> %d does not verify: %v", old.size, cp.size, err)
		}
	}

	// Inclusion proofs from the Log verify for a sample of acknowledged entries.
	n := 0
	for i := range acked {
		if n++; n > 50 {
			break
		}
		p, err := l.InclusionProof(ctx, i, cp.size)
		if err != nil {
			t.Fatalf("InclusionProof(%d, %d): %v", i, cp.size, err)
		}
		if err := tlog.CheckRecord(toRecordProof(p), int64(cp.size), cp.root, int64(i), tlog.RecordHash(all[i])); err != nil {
			t.Fatalf("inclusion of %d in %d does not verify: %v", i, cp.size, err)
		}
	}
	return cp
}

func toHashes(p [][]byte) []tlog.Hash {
	out := make([]tlog.Hash, len(p))
	for i, h := range p {
		copy(out[i][:], h)
	}
	return out
}

func toTreeProof(p [][]byte) tlog.TreeProof     { return toHashes(p) }
func toRecordProof(p [][]byte) tlog.RecordProof { return toHashes(p) }
