package testwitness_test

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keytrans/kt/internal/testing/testwitness"
	"github.com/keytrans/kt/log"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"
)

// TestStatuses drives the witness with raw requests and checks the status
// codes the tlog-witness specification requires.
func TestStatuses(t *testing.T) {
	const origin = "example.com/log"
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	otherSKey, _, _ := note.GenerateKey(rand.Reader, origin)
	otherSigner, _ := note.NewSigner(otherSKey)

	tree := testonly.New(rfc6962.DefaultHasher)
	for i := range 10 {
		tree.AppendData(fmt.Appendf(nil, "%d", i))
	}
	cp := func(s note.Signer, size uint64) string {
		c, err := log.SignCheckpoint(s, origin, size, tree.HashAt(size))
		if err != nil {
			t.Fatal(err)
		}
		return string(c)
	}
	proof := func(a, b uint64) string {
		p, err := tree.ConsistencyProof(a, b)
		if err != nil {
			t.Fatal(err)
		}
		var s strings.Builder
		for _, h := range p {
			s.WriteString(base64.StdEncoding.EncodeToString(h) + "\n")
		}
		return s.String()
	}

	w, err := testwitness.New("w.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddLog(origin, vkey); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(w)
	defer srv.Close()

	// The steps run in order: each depends on the witness's state.
	for _, st := range []struct {
		name   string
		method string
		body   string
		status int
		size   uint64 // the witness's size afterwards
	}{
		{"GET", "GET", "", 405, 0},
		{"garbage", "POST", "hello", 400, 0},
		{"leading zero", "POST", "old 00\n\n" + cp(signer, 3), 400, 0},
		{"missing blank line", "POST", "old 0\n" + cp(signer, 3), 400, 0},
		{"bad proof line", "POST", "old 0\nnot base64\n\n" + cp(signer, 3), 400, 0},
		{"unknown origin", "POST", "old 0\n\n" + strings.Replace(cp(signer, 3), origin, "other.example", 1), 404, 0},
		{"untrusted key", "POST", "old 0\n\n" + cp(otherSigner, 3), 403, 0},
		{"old size beyond checkpoint", "POST", "old 4\n" + "\n" + cp(signer, 3), 400, 0},
		{"wrong old size", "POST", "old 2\n" + proof(2, 3) + "\n" + cp(signer, 3), 409, 0},
		{"proof with old size 0", "POST", "old 0\n" + proof(2, 3) + "\n" + cp(signer, 3), 422, 0},
		{"first checkpoint", "POST", "old 0\n\n" + cp(signer, 3), 200, 3},
		{"stale old size", "POST", "old 0\n\n" + cp(signer, 5), 409, 3},
		{"bad proof", "POST", "old 3\n" + proof(2, 5) + "\n" + cp(signer, 5), 422, 3},
		{"good proof", "POST", "old 3\n" + proof(3, 5) + "\n" + cp(signer, 5), 200, 5},
		{"same checkpoint", "POST", "old 5\n\n" + cp(signer, 5), 200, 5},
		{"same size, another root", "POST", "old 5\n\n" + mustSign(t, signer, origin, 5, tree.HashAt(6)), 409, 5},
		{"rollback", "POST", "old 5\n\n" + cp(signer, 4), 400, 5},
	} {
		req, err := http.NewRequest(st.method, srv.URL+"/add-checkpoint", strings.NewReader(st.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != st.status {
			t.Errorf("%s: status %d, want %d", st.name, resp.StatusCode, st.status)
		}
		if resp.StatusCode == 409 && st.name != "same size, another root" {
			if ct := resp.Header.Get("Content-Type"); ct != "text/x.tlog.size" {
				t.Errorf("%s: 409 with Content-Type %q", st.name, ct)
			}
		}
		if got, _ := w.Size(origin); got != st.size {
			t.Errorf("%s: witness size %d, want %d", st.name, got, st.size)
		}
	}
}

func mustSign(t *testing.T, s note.Signer, origin string, size uint64, root []byte) string {
	t.Helper()
	c, err := log.SignCheckpoint(s, origin, size, root)
	if err != nil {
		t.Fatal(err)
	}
	return string(c)
}
