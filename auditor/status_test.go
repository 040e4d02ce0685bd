package auditor_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/keytrans/kt/auditor"
)

// chromium returns the path of Debian's chromium. Under CI=true a missing
// browser fails the test (.ci/run installs it); elsewhere it skips.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (apt-get install -y chromium); required under CI=true")
	}
	t.Skip("chromium is not installed")
	return ""
}

// dumpDOM loads url in headless chromium and returns the DOM after the
// page ran.
func dumpDOM(t *testing.T, bin, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--no-first-run", "--disable-dev-shm-usage", "--user-data-dir="+t.TempDir(), "--dump-dom", url)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("chromium: %v\n%s", err, stderr)
	}
	return string(out)
}

// TestStatusPageInBrowser loads the status page in a real headless browser:
// it shows the latest verified checkpoint, then, after a split view, the
// evidence and that cosigning stopped.
func TestStatusPageInBrowser(t *testing.T) {
	bin := chromium(t)
	ctx := context.Background()
	la, lb, ba, _ := forkedLogs(t, 8, 60, 35)
	n := newNode(t, "auditor.example", nodeOpts{logs: []auditor.LogConfig{logConfig(la, ba)}})
	if err := n.a.AuditOnce(ctx, origin); err != nil {
		t.Fatal(err)
	}
	st := n.a.Status()[0]
	dom := dumpDOM(t, bin, n.url+"/")
	root := base64.StdEncoding.EncodeToString(st.Latest.Root[:])
	for _, want := range []string{
		"<h2>" + origin + "</h2>",
		fmt.Sprintf(`<span class="size">%d</span>`, st.Latest.Size),
		`<code class="root">` + root + "</code>",
		`<p class="noevidence">none</p>`,
	} {
		if !strings.Contains(dom, want) {
			t.Fatalf("status page lacks %q:\n%s", want, dom)
		}
	}
	if strings.Contains(dom, `id="frozen"`) {
		t.Fatal("frozen before any evidence")
	}
	// A client of the other view gossips its checkpoint: evidence.
	theirs, _ := lb.Checkpoint(ctx)
	if code, _ := post(t, n.url+auditor.PathGossip, string(theirs)); code != 409 {
		t.Fatalf("gossip: %d", code)
	}
	id := n.a.Status()[0].Evidence[0]
	dom = dumpDOM(t, bin, n.url+"/")
	for _, want := range []string{
		`<ul class="evidence"><li><a href="/kt/v1/evidence/` + id + `">` + id + "</a></li></ul>",
		`id="frozen"`,
		`<code class="root">` + root + "</code>",
	} {
		if !strings.Contains(dom, want) {
			t.Fatalf("status page lacks %q:\n%s", want, dom)
		}
	}
	// The link serves the bundle.
	if body := dumpDOM(t, bin, n.url+"/kt/v1/evidence/"+id); !strings.Contains(body, "kt-evidence/v1") {
		t.Fatalf("evidence link: %s", body)
	}
}
