package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/keytrans/kt/internal/testing/ktctltest"
)

// result is one ktctl run.
type result struct {
	stdout, stderr string
	code           int
}

// runCLI runs the CLI in-process with args.
func runCLI(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return result{out.String(), errb.String(), code}
}

// want checks the exit status and that stdout and stderr contain the given
// substrings ("!" prefix: must not contain).
func (r result) want(t *testing.T, code int, stdout []string, stderr ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	check := func(name, text string, subs []string) {
		for _, s := range subs {
			if neg, ok := strings.CutPrefix(s, "!"); ok {
				if strings.Contains(text, neg) {
					t.Errorf("%s contains %q:\n%s", name, neg, text)
				}
			} else if !strings.Contains(text, s) {
				t.Errorf("%s does not contain %q:\n%s", name, s, text)
			}
		}
	}
	check("stdout", r.stdout, stdout)
	check("stderr", r.stderr, stderr)
}

// decode parses the JSON stdout into v.
func (r result) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s\nstderr: %s", err, r.stdout, r.stderr)
	}
}

// logFlags points ktctl at the fixture through its data directory.
func logFlags(f *ktctltest.Fixture) []string {
	return []string{"--log-url", f.LogURL, "--data-dir", f.DataDir}
}

// tamperProxy serves the read API of upstream, passing each 200 response
// body of a path through fn first.
func tamperProxy(t *testing.T, upstream string, fn func(path string, q url.Values, body []byte) []byte) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := http.Get(upstream + r.URL.RequestURI())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for k, vs := range resp.Header {
			for _, v := range vs {
				w.Header().Add(k, v)
			}
		}
		if resp.StatusCode == http.StatusOK {
			body = fn(r.URL.Path, r.URL.Query(), body)
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s.URL
}
