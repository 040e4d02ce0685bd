package logapi_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/logapi"
)

func TestEntriesRoundTrip(t *testing.T) {
	tests := [][][]byte{
		nil,
		{{0}},
		{[]byte("a"), []byte("bc"), bytes.Repeat([]byte{0xff}, 300)},
		{make([]byte, log.MaxEntrySize), {1}},
	}
	for i, entries := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			b, err := logapi.AppendEntries(nil, entries)
			if err != nil {
				t.Fatal(err)
			}
			got, err := logapi.ParseEntries(b)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(entries) {
				t.Fatalf("%d entries, want %d", len(got), len(entries))
			}
			for j := range got {
				if !bytes.Equal(got[j], entries[j]) {
					t.Errorf("entry %d differs", j)
				}
			}
		})
	}
	for name, entries := range map[string][][]byte{
		"empty entry":     {{1}, {}},
		"oversized entry": {make([]byte, log.MaxEntrySize+1)},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := logapi.AppendEntries(nil, entries); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestParseEntriesRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"one byte":             {0},
		"length only":          {0, 1},
		"short entry":          {0, 3, 'a', 'b'},
		"trailing byte":        {0, 1, 'a', 0},
		"trailing length":      {0, 1, 'a', 0, 1},
		"empty entry":          {0, 0},
		"empty entry after ok": {0, 1, 'a', 0, 0},
		"max length, no data":  {0xff, 0xff, 1, 2, 3},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := logapi.ParseEntries(b); !errors.Is(err, logapi.ErrMalformed) {
				t.Errorf("%v, want ErrMalformed", err)
			}
		})
	}
}

func TestParseHashes(t *testing.T) {
	for n := range 70 {
		b := bytes.Repeat([]byte{9}, n)
		h, err := logapi.ParseHashes(b)
		if (err == nil) != (n%32 == 0) {
			t.Errorf("%d bytes: %v", n, err)
		}
		if err == nil && len(h) != n/32 {
			t.Errorf("%d bytes: %d hashes", n, len(h))
		}
	}
}

// TestProofSizes checks the expected proof lengths against the proofs that
// golang.org/x/mod/sumdb/tlog builds, for every index and size up to 130.
func TestProofSizes(t *testing.T) {
	const max = 130
	var store []tlog.Hash
	hr := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = store[x]
		}
		return out, nil
	})
	for i := range max {
		hs, err := tlog.StoredHashes(int64(i), []byte{byte(i)}, hr)
		if err != nil {
			t.Fatal(err)
		}
		store = append(store, hs...)
	}
	for n := int64(1); n <= max; n++ {
		for i := range n {
			p, err := tlog.ProveRecord(n, i, hr)
			if err != nil {
				t.Fatal(err)
			}
			got, err := logapi.InclusionProofSize(uint64(i), uint64(n))
			if err != nil || got != len(p) {
				t.Fatalf("InclusionProofSize(%d, %d) = %d, %v; sumdb/tlog's proof has %d", i, n, got, err, len(p))
			}
		}
		for m := int64(1); m <= n; m++ {
			p, err := tlog.ProveTree(n, m, hr)
			if err != nil {
				t.Fatal(err)
			}
			got, err := logapi.ConsistencyProofSize(uint64(m), uint64(n))
			if err != nil || got != len(p) {
				t.Fatalf("ConsistencyProofSize(%d, %d) = %d, %v; sumdb/tlog's proof has %d", m, n, got, err, len(p))
			}
		}
	}
	for _, tc := range []struct{ a, b uint64 }{{0, 0}, {1, 0}, {5, 5}} {
		if _, err := logapi.InclusionProofSize(tc.a, tc.b); err == nil {
			t.Errorf("InclusionProofSize(%d, %d): no error", tc.a, tc.b)
		}
	}
	for _, tc := range []struct{ a, b uint64 }{{0, 0}, {0, 5}, {6, 5}} {
		if _, err := logapi.ConsistencyProofSize(tc.a, tc.b); err == nil {
			t.Errorf("ConsistencyProofSize(%d, %d): no error", tc.a, tc.b)
		}
	}
	// The largest trees: 64 levels at most.
	if n, err := logapi.InclusionProofSize(0, 1<<64-1); err != nil || n != 64 {
		t.Errorf("InclusionProofSize(0, 2^64-1) = %d, %v; want 64", n, err)
	}
}

func FuzzParseEntries(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 1, 'a'})
	f.Add([]byte{0, 2, 'a', 'b', 0, 1, 'c'})
	f.Add([]byte{0, 0})
	f.Add([]byte{0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := logapi.ParseEntries(b)
		if err != nil {
			if !errors.Is(err, logapi.ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		// Accepted framing is canonical: it re-encodes to the same bytes.
		again, err := logapi.AppendEntries(nil, entries)
		if err != nil {
			t.Fatalf("accepted entries do not re-encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoded %x, input %x", again, b)
		}
	})
}

func FuzzParseHashes(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 32))
	f.Add(make([]byte, 33))
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		hashes, err := logapi.ParseHashes(b)
		if err != nil {
			if len(b)%32 == 0 || !errors.Is(err, logapi.ErrMalformed) {
				t.Fatalf("rejected %d bytes: %v", len(b), err)
			}
			return
		}
		for _, h := range hashes {
			if len(h) != 32 {
				t.Fatalf("hash of %d bytes", len(h))
			}
		}
		if !bytes.Equal(bytes.Join(hashes, nil), b) {
			t.Fatal("hashes do not concatenate to the input")
		}
	})
}

// FuzzQuery checks that no query makes the handler panic or answer 5xx: a
// malformed query is the client's fault (4xx), and a well-formed one is
// answered from the log (200 or 404 here).
func FuzzQuery(f *testing.F) {
	ml, _, _ := memLog(f, 40)
	h := logapi.NewHandler(ml)
	paths := []string{logapi.PathCheckpoint, logapi.PathEntries, logapi.PathInclusion, logapi.PathConsistency, "/other"}
	for i := range paths {
		for _, q := range []string{"", "start=0&end=1", "index=3&size=40", "old=1&new=40", "old=40&new=41", "start=-1&end=2", "a=%zz", "start=18446744073709551615&end=18446744073709551615", "index=0&size=18446744073709551615"} {
			f.Add(uint8(i), "GET", q)
		}
	}
	f.Add(uint8(1), "POST", "start=0&end=1")
	f.Add(uint8(1), "HEAD", "start=0&end=1")
	f.Fuzz(func(t *testing.T, path uint8, method, query string) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Method = method
		req.URL.Path = paths[int(path)%len(paths)]
		req.URL.RawQuery = query
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %s?%s: status %d: %s", method, req.URL.Path, query, w.Code, w.Body)
		}
		if w.Code == http.StatusOK && method != http.MethodGet && method != http.MethodHead {
			t.Fatalf("method %q answered 200", method)
		}
	})
}
