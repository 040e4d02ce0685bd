package evidence_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keytrans/kt/log/evidence"
)

func TestPost(t *testing.T) {
	var answer []byte
	var got struct {
		method, path, ctype string
		body                []byte
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.method, got.path, got.ctype = r.Method, r.URL.Path, r.Header.Get("Content-Type")
		got.body, _ = io.ReadAll(r.Body)
		w.WriteHeader(http.StatusConflict)
		w.Write(answer)
	}))
	defer srv.Close()
	ctx := context.Background()

	answer = []byte(evidence.Header + "\n")
	code, ans, err := evidence.Post(ctx, srv.Client(), srv.URL+"/", []byte("note\n"))
	if err != nil {
		t.Fatal(err)
	}
	if code != http.StatusConflict || !bytes.Equal(ans, answer) {
		t.Errorf("Post = %d %q, want 409 %q", code, ans, answer)
	}
	if got.method != http.MethodPost || got.path != evidence.PathGossip || got.ctype != "text/plain; charset=utf-8" || string(got.body) != "note\n" {
		t.Errorf("request: %s %s %q %q", got.method, got.path, got.ctype, got.body)
	}

	// An answer of MaxSize bytes is read; one byte more is refused.
	answer = bytes.Repeat([]byte("x"), evidence.MaxSize)
	if _, ans, err := evidence.Post(ctx, srv.Client(), srv.URL, nil); err != nil || len(ans) != evidence.MaxSize {
		t.Errorf("answer of MaxSize bytes: %d bytes, %v", len(ans), err)
	}
	answer = append(answer, 'x')
	if _, _, err := evidence.Post(ctx, srv.Client(), srv.URL, nil); err == nil || !strings.Contains(err.Error(), "answer larger than") {
		t.Errorf("answer of MaxSize+1 bytes: %v, want answer larger than", err)
	}

	srv.Close()
	if _, _, err := evidence.Post(ctx, srv.Client(), srv.URL, nil); err == nil {
		t.Error("Post to a closed server succeeded")
	}
}
