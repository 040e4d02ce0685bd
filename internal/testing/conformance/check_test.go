package conformance_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/internal/testing/conformance"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/logapi"
)

const origin = "example.com/kt-test"

// filledLog returns a memory log with n distinct entries.
func filledLog(t testing.TB, n int) (*conformance.MemoryLog, [][]byte, note.Signer, note.Verifier) {
	t.Helper()
	s, v := newKey(t, origin)
	ml := conformance.NewMemoryLog(origin, s)
	if err := ml.PublishEmpty(); err != nil {
		t.Fatal(err)
	}
	var entries [][]byte
	for i := range n {
		// Distinct entries of varied lengths, one of the largest size.
		e := fmt.Appendf(nil, "entry %d ", i)
		e = append(e, bytes.Repeat([]byte{byte(i)}, (i*7919)%512)...)
		if i == 5 {
			e = append(e, make([]byte, log.MaxEntrySize-len(e))...)
		}
		entries = append(entries, e)
	}
	// Append in batches of varied sizes.
	for i := 0; i < n; {
		k := min(n-i, 1+i%13)
		idx, err := ml.Append(context.Background(), entries[i:i+k])
		if err != nil {
			t.Fatal(err)
		}
		if idx[0] != uint64(i) {
			t.Fatalf("Append at %d returned index %d", i, idx[0])
		}
		i += k
	}
	return ml, entries, s, v
}

func TestCheckReader(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 7, 8, 9, 100, 257, 1000} {
		ml, entries, _, v := filledLog(t, n)
		srv := httptest.NewServer(logapi.NewHandler(ml, logapi.WithMaxEntries(37)))
		t.Cleanup(srv.Close)
		for name, check := range map[string]func(t *testing.T) [][]byte{
			"memory": func(t *testing.T) [][]byte { return conformance.CheckReader(t, ml, origin, v) },
			"http":   func(t *testing.T) [][]byte { return conformance.CheckHTTP(t, ml, origin, v) },
			"http, small pages": func(t *testing.T) [][]byte {
				return conformance.CheckReader(t, logapi.NewClient(srv.URL, srv.Client()), origin, v)
			},
		} {
			t.Run(fmt.Sprintf("%s/%d", name, n), func(t *testing.T) {
				got := check(t)
				if len(got) != len(entries) {
					t.Fatalf("CheckReader returned %d entries, want %d", len(got), len(entries))
				}
				for i := range got {
					if !bytes.Equal(got[i], entries[i]) {
						t.Fatalf("entry %d differs from what was appended", i)
					}
				}
			})
		}
	}
}

// tampered wraps a reader; each non-nil hook replaces a method.
type tampered struct {
	log.Reader
	checkpoint  func(ctx context.Context) ([]byte, error)
	entries     func(ctx context.Context, start, end uint64) ([][]byte, error)
	inclusion   func(ctx context.Context, index, size uint64) ([][]byte, error)
	consistency func(ctx context.Context, oldSize, newSize uint64) ([][]byte, error)
}

func (r *tampered) Checkpoint(ctx context.Context) ([]byte, error) {
	if r.checkpoint != nil {
		return r.checkpoint(ctx)
	}
	return r.Reader.Checkpoint(ctx)
}

func (r *tampered) Entries(ctx context.Context, start, end uint64) ([][]byte, error) {
	if r.entries != nil {
		return r.entries(ctx, start, end)
	}
	return r.Reader.Entries(ctx, start, end)
}

func (r *tampered) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	if r.inclusion != nil {
		return r.inclusion(ctx, index, size)
	}
	return r.Reader.InclusionProof(ctx, index, size)
}

func (r *tampered) ConsistencyProof(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
	if r.consistency != nil {
		return r.consistency(ctx, oldSize, newSize)
	}
	return r.Reader.ConsistencyProof(ctx, oldSize, newSize)
}

// recorder is a testing.TB that records failures instead of failing the
// test, so that CheckReader itself can be tested.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	failed bool
	msgs   []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = true
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}
func (r *recorder) Error(args ...any) { r.Errorf("%s", fmt.Sprint(args...)) }
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }
func (r *recorder) Fail()             { r.Errorf("Fail") }
func (r *recorder) FailNow()          { r.Fatalf("FailNow") }
func (r *recorder) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}
func (r *recorder) Log(args ...any)                 {}
func (r *recorder) Logf(format string, args ...any) {}

type checkFunc func(t testing.TB, r log.Reader, origin string, v note.Verifier) [][]byte

// runCheck runs check against r and returns its failure messages.
func runCheck(t *testing.T, check checkFunc, r log.Reader, v note.Verifier) []string {
	rec := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		check(rec, r, origin, v)
	}()
	<-done
	return rec.msgs
}

func flip(p [][]byte, i int) [][]byte {
	out := make([][]byte, len(p))
	for j := range p {
		out[j] = bytes.Clone(p[j])
	}
	out[i][31] ^= 0x80
	return out
}

func TestCheckReaderCatchesTampering(t *testing.T) {
	const n = 300
	ml, _, s, v := filledLog(t, n)
	other, _ := newKey(t, origin) // same name, another key
	good, err := ml.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	text := func() string {
		nt, err := note.Open(good, note.VerifierList(v))
		if err != nil {
			t.Fatal(err)
		}
		return nt.Text
	}()
	signed := func(signer note.Signer, text string) func(context.Context) ([]byte, error) {
		cp, err := note.Sign(&note.Note{Text: text}, signer)
		if err != nil {
			t.Fatal(err)
		}
		return func(context.Context) ([]byte, error) { return cp, nil }
	}
	lines := strings.SplitN(text, "\n", 4)

	tests := []struct {
		name string
		r    *tampered
		want string // a substring of one failure message
		// The HTTP client enforces this part of the contract itself, so
		// the tampered backend is never asked and CheckHTTP passes.
		clientEnforces bool
	}{{
		name: "checkpoint signed by another key",
		r:    &tampered{checkpoint: signed(other, text)},
		want: "transparency-dev/formats",
	}, {
		name: "checkpoint for another origin",
		r:    &tampered{checkpoint: signed(s, "example.com/other\n"+strings.Join(lines[1:], "\n"))},
		want: "transparency-dev/formats",
	}, {
		name: "checkpoint size with a leading zero",
		r:    &tampered{checkpoint: signed(s, lines[0]+"\n0"+lines[1]+"\n"+lines[2]+"\n")},
		want: "sumdb/tlog",
	}, {
		name: "checkpoint with a short root",
		r:    &tampered{checkpoint: signed(s, lines[0]+"\n"+lines[1]+"\nAAAA\n")},
		want: "sumdb/tlog",
	}, {
		name: "checkpoint for a smaller size, same root",
		r:    &tampered{checkpoint: signed(s, lines[0]+"\n299\n"+lines[2]+"\n")},
		want: "root of the 299 entries",
	}, {
		name: "one entry altered",
		r: &tampered{entries: func(ctx context.Context, start, end uint64) ([][]byte, error) {
			es, err := ml.Entries(ctx, start, end)
			if err == nil && start <= 17 && 17 < start+uint64(len(es)) {
				es[17-start] = append(es[17-start], 'x')
			}
			return es, err
		}},
		want: "root of the 300 entries",
	}, {
		name: "entries returned out of order",
		r: &tampered{entries: func(ctx context.Context, start, end uint64) ([][]byte, error) {
			es, err := ml.Entries(ctx, start, end)
			if err == nil && len(es) > 1 {
				es[0], es[1] = es[1], es[0]
			}
			return es, err
		}},
		want: "root of the 300 entries",
	}, {
		name: "no entries",
		r: &tampered{entries: func(ctx context.Context, start, end uint64) ([][]byte, error) {
			if end <= n {
				return nil, nil
			}
			return ml.Entries(ctx, start, end)
		}},
		want: "returned 0 entries",
	}, {
		name: "entries served beyond the checkpoint",
		r: &tampered{entries: func(ctx context.Context, start, end uint64) ([][]byte, error) {
			if end > n {
				return [][]byte{{1}}, nil
			}
			return ml.Entries(ctx, start, end)
		}},
		want: "want log.ErrOutOfRange",
	}, {
		name: "inclusion proof with a hash altered",
		r: &tampered{inclusion: func(ctx context.Context, index, size uint64) ([][]byte, error) {
			p, err := ml.InclusionProof(ctx, index, size)
			if err == nil && index == 0 && size == n {
				p = flip(p, len(p)-1)
			}
			return p, err
		}},
		want: "InclusionProof(0, 300) rejected by sumdb/tlog",
	}, {
		name: "inclusion proof for another index",
		r: &tampered{inclusion: func(ctx context.Context, index, size uint64) ([][]byte, error) {
			if index == 0 && size == n {
				index = 1
			}
			return ml.InclusionProof(ctx, index, size)
		}},
		want: "InclusionProof(0, 300) rejected by transparency-dev/merkle",
	}, {
		name: "inclusion proof too short",
		r: &tampered{inclusion: func(ctx context.Context, index, size uint64) ([][]byte, error) {
			p, err := ml.InclusionProof(ctx, index, size)
			if err == nil && size == n && len(p) > 0 {
				p = p[:len(p)-1]
			}
			return p, err
		}},
		want: "rejected by sumdb/tlog",
	}, {
		name: "inclusion proof with a 31-byte hash",
		r: &tampered{inclusion: func(ctx context.Context, index, size uint64) ([][]byte, error) {
			p, err := ml.InclusionProof(ctx, index, size)
			if err == nil && size == n && len(p) > 0 {
				p[0] = p[0][:31]
			}
			return p, err
		}},
		want: "has 31 bytes",
	}, {
		name: "inclusion beyond the checkpoint with another error",
		r: &tampered{inclusion: func(ctx context.Context, index, size uint64) ([][]byte, error) {
			if size > n {
				return nil, errors.New("nope")
			}
			return ml.InclusionProof(ctx, index, size)
		}},
		want: "InclusionProof in a tree beyond the checkpoint",
	}, {
		name: "consistency proof with a hash altered",
		r: &tampered{consistency: func(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
			p, err := ml.ConsistencyProof(ctx, oldSize, newSize)
			if err == nil && oldSize == 1 && newSize == n {
				p = flip(p, 0)
			}
			return p, err
		}},
		want: "ConsistencyProof(1, 300) rejected by sumdb/tlog",
	}, {
		name: "consistency proof with an extra hash",
		r: &tampered{consistency: func(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
			p, err := ml.ConsistencyProof(ctx, oldSize, newSize)
			if err == nil && newSize == n && len(p) > 0 {
				p = append(p, p[0])
			}
			return p, err
		}},
		want: "rejected by transparency-dev/merkle",
	}, {
		name: "consistency proof for old > new served",
		r: &tampered{consistency: func(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
			if oldSize > newSize {
				return nil, nil
			}
			return ml.ConsistencyProof(ctx, oldSize, newSize)
		}},
		want:           "ConsistencyProof with old > new",
		clientEnforces: true,
	}}
	for _, tc := range tests {
		tc.r.Reader = ml
		t.Run(tc.name, func(t *testing.T) {
			msgs := runCheck(t, conformance.CheckReader, tc.r, v)
			if len(msgs) == 0 {
				t.Fatal("CheckReader passed a tampered reader")
			}
			for _, m := range msgs {
				if strings.Contains(m, tc.want) {
					return
				}
			}
			t.Errorf("no failure mentions %q; failures: %q", tc.want, msgs)
		})
		// Through the read API the failure may come from the handler or
		// the client instead (a 500, ErrMalformed), but it must come.
		t.Run(tc.name+"/http", func(t *testing.T) {
			msgs := runCheck(t, conformance.CheckHTTP, tc.r, v)
			if tc.clientEnforces && len(msgs) != 0 {
				t.Errorf("CheckHTTP failed, but the client should have hidden the backend's fault: %q", msgs)
			}
			if !tc.clientEnforces && len(msgs) == 0 {
				t.Fatal("CheckHTTP passed a tampered reader")
			}
		})
	}

	// And the same harness passes the untampered log, so the failures
	// above come from the tampering.
	for name, check := range map[string]checkFunc{"direct": conformance.CheckReader, "http": conformance.CheckHTTP} {
		t.Run("untampered/"+name, func(t *testing.T) {
			if msgs := runCheck(t, check, &tampered{Reader: ml}, v); len(msgs) != 0 {
				t.Errorf("the check failed the untampered log: %q", msgs)
			}
		})
	}
}
