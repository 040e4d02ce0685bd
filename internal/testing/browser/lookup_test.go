// Package browser drives the TypeScript verifier's lookup page
// (verifier-ts/web) in headless Chromium against a live directory.
package browser

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/directory/grpcserver"
	"github.com/keytrans/kt/internal/testing/fixture"
)

const tsDir = "../../../verifier-ts"

// need returns the path of the first of names found, failing under
// CI=true (.ci/run installs chromium; node and npm are required there) and
// skipping elsewhere.
func need(t *testing.T, names ...string) string {
	t.Helper()
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed; required under CI=true", names[0])
	}
	t.Skipf("%s is not installed: skipping the browser lookup page test", names[0])
	return ""
}

// nodeModules installs verifier-ts's locked dependencies into a temporary
// directory (so that it never races TestTypeScriptVerifier's npm ci in
// verifier-ts) and returns the node_modules path.
func nodeModules(t *testing.T, npm string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"package.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join(tsDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--omit=optional")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NO_UPDATE_NOTIFIER=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}
	return filepath.Join(dir, "node_modules")
}

// dumpDOM loads url in headless chromium and returns the DOM once the
// page's fetches and verification ran (virtual time waits for them).
func dumpDOM(t *testing.T, bin, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--no-first-run", "--disable-dev-shm-usage", "--user-data-dir="+t.TempDir(),
		"--virtual-time-budget=30000", "--dump-dom", url)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	return string(out)
}

// tamper wraps the JSON API and flips one bit of every Lookup answer's
// VRF proof: the page must reject the answer at the "vrf" step.
func tamper(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/Lookup") {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body, _ := io.ReadAll(rec.Result().Body)
		var m map[string]any
		if rec.Code == http.StatusOK && json.Unmarshal(body, &m) == nil {
			if s, ok := m["vrfProof"].(string); ok {
				if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) > 40 {
					b[40] ^= 1
					m["vrfProof"] = base64.StdEncoding.EncodeToString(b)
					body, _ = json.Marshal(m)
				}
			}
		}
		for k, v := range rec.Header() {
			if k != "Content-Length" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
	})
}

// TestLookupPageInBrowser serves the lookup page and the HTTP/JSON API of a
// live directory, and loads the page in headless Chromium: an honest
// lookup is shown verified, step by step; an answer with a tampered VRF
// proof is rejected, naming the step.
func TestLookupPageInBrowser(t *testing.T) {
	bin := need(t, "chromium", "chromium-browser")
	npm := need(t, "npm")
	modules := nodeModules(t, npm)
	ctx := t.Context()

	d := fixture.New(t, fixture.Options{})
	alice, _, err := d.NewDevice(ctx, d.Dir, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Enroll(ctx, alice, "alice@example.com", false); err != nil {
		t.Fatal(err)
	}
	if _, err := fixture.AwaitVersion(ctx, alice, "alice@example.com", 1); err != nil {
		t.Fatal(err)
	}
	_, api, err := grpcserver.NewWithJSON(grpcserver.Options{RateLimit: -1, Logger: fixture.Quiet}, d.Directory, d.Directory)
	if err != nil {
		t.Fatal(err)
	}
	src, err := filepath.Abs(tsDir)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", http.StripPrefix("/api", api))
	mux.Handle("/tampered/api/", http.StripPrefix("/tampered/api", tamper(api)))
	mux.Handle("/verifier/src/", http.StripPrefix("/verifier/src/", http.FileServer(http.Dir(filepath.Join(src, "src")))))
	mux.Handle("/verifier/web/", http.StripPrefix("/verifier/web/", http.FileServer(http.Dir(filepath.Join(src, "web")))))
	mux.Handle("/verifier/node_modules/", http.StripPrefix("/verifier/node_modules/", http.FileServer(http.Dir(modules))))
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	page := hs.URL + "/verifier/web/lookup.html?handle=Alice@Example.com&api="

	dom := dumpDOM(t, bin, page+hs.URL+"/api")
	if os.Getenv("KT_SHOW_DOM") != "" {
		t.Log(dom)
	}
	for _, want := range []string{
		`<p id="result" class="verified"`,
		`verified: version 1, 1 device,`,
		`<li class="ok" data-step="epoch">`,
		`<li class="ok" data-step="vrf">`,
		`<li class="ok" data-step="map proof">`,
		`<li class="ok" data-step="commitment">`,
		`<li class="ok" data-step="hpke keys">`,
	} {
		if !strings.Contains(dom, want) {
			t.Fatalf("honest lookup: the page lacks %q:\n%s", want, dom)
		}
	}

	dom = dumpDOM(t, bin, page+hs.URL+"/tampered/api")
	for _, want := range []string{
		`<p id="result" class="rejected" data-step="vrf"`,
		`<li class="fail" data-step="vrf">`,
	} {
		if !strings.Contains(dom, want) {
			t.Fatalf("tampered lookup: the page lacks %q:\n%s", want, dom)
		}
	}
	if strings.Contains(dom, `class="verified"`) {
		t.Fatalf("tampered lookup shown as verified:\n%s", dom)
	}
}
