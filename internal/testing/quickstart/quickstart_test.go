package quickstart

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
)

var update = flag.Bool("update", false, "rewrite the outputs in docs/quickstart.md from this run")

// launch is the walk-through's one command; the test runs the same
// program, built first, from the same source tree.
const launch = "go run ./cmd/ktlocal"

// The addresses the documents show: ktlocal's defaults. The test runs on
// free ports instead and maps them both ways.
var defaultAddrs = []string{"127.0.0.1:8443", "127.0.0.1:8080", "127.0.0.1:8444", "127.0.0.1:8481", "127.0.0.1:8482"}

// TestWalkthrough follows docs/quickstart.md as a new user would: it
// builds ktlocal, runs it in an empty directory (ktlocal builds ktd,
// ktauditor, kt and ktctl into data/bin itself, as with go run), checks
// its banner against the document, then runs every "$ command" of the
// document with bash, in order, and checks each output against the one
// the document shows (normalize says what may differ). The commands run
// back to back, with no pause between them: a command that changes the
// log returns once the change is visible, so the next one sees it. The README's
// walk-through must be the same commands, with outputs that match (with
// "..." for elided lines). Finally it stops ktlocal with SIGINT, restarts
// it on the same data and checks the log continued.
func TestWalkthrough(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is needed (install it in .ci/run): %v", tool, err)
			}
			t.Skipf("%s not found; the walk-through needs it", tool)
		}
	}
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	guide := filepath.Join(root, "docs", "quickstart.md")
	steps, err := parseDoc(guide)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) < 2 || steps[0].cmd != launch {
		t.Fatalf("docs/quickstart.md must start with a console block running %q", launch)
	}
	readme, err := parseDoc(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}

	work := t.TempDir()
	bin := filepath.Join(t.TempDir(), "ktlocal")
	build := exec.Command("go", "build", "-o", bin, "./cmd/ktlocal")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/ktlocal: %v\n%s", err, out)
	}
	addrs := freeAddrs(t, len(defaultAddrs))
	toTest := strings.NewReplacer(pairs(defaultAddrs, addrs)...)
	toDoc := strings.NewReplacer(pairs(addrs, defaultAddrs)...)
	args := []string{"--source", root, "--grpc-listen", addrs[0], "--http-listen", addrs[1],
		"--operator-listen", addrs[2], "--auditor-listen", addrs[3] + "," + addrs[4]}

	got := map[int][]string{} // actual output by the document's command line
	kl := startLocal(t, bin, work, args)
	banner := kl.banner(t)
	// On the test's ports ktlocal's "next" commands name the addresses
	// (--directory, --log-url); mapped back to the defaults they are the
	// flags' defaults, which the document leaves out.
	got[steps[0].line] = docLines(defaultFlags, toDoc.Replace(banner))

	env := append(os.Environ(),
		"PATH="+filepath.Join(work, "data", "bin")+string(os.PathListSeparator)+os.Getenv("PATH"),
		"KT_DIRECTORY="+addrs[0], "KTCTL_GRPC="+addrs[0], "KTCTL_LOG_URL=http://"+addrs[1], "KTCTL_OPERATOR="+addrs[2], "KTLOCAL_HTTP_LISTEN="+addrs[1])
	conn, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dir := ktpb.NewDirectoryClient(conn)
	logged := regexp.MustCompile(`logged at index (\d+), visible in epoch (\d+)`)
	recovery := uint64(1 << 62)
	restarted := false
	// Every decryption names the authenticated sender (design.md 12.3):
	// Alice's handle and the device ID of her phone, from "kt init".
	sender := regexp.MustCompile(`^kt: from mailto:alice@example\.com, device ([0-9a-f]{32}) \(authenticated: signed by a device of its verified, logged device set\), to mailto:bob@example\.com$`)
	aliceDevice, decrypts := "", 0
	for _, s := range steps[1:] {
		if strings.HasPrefix(s.cmd, "export PATH=") {
			// The reader's shell keeps this; each command here gets
			// PATH with data/bin first instead.
			if s.cmd != `export PATH="$PWD/data/bin:$PATH"` {
				t.Fatalf("line %d: unexpected export %q", s.line, s.cmd)
			}
			got[s.line] = nil
			continue
		}
		if strings.HasPrefix(s.cmd, launch+" split-view") && !restarted {
			// Before the split view (which freezes an auditor for good):
			// the auditors' clean state, a second ktlocal refused,
			// Ctrl-C and a restart that continues the log.
			kl = restart(t, kl, bin, work, args, addrs, env)
			restarted = true
		}
		cmd := exec.Command("bash", "-c", strings.ReplaceAll(toTest.Replace(s.cmd), launch, bin))
		cmd.Dir, cmd.Env = work, env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		lines := docLines(toDoc, out.String())
		got[s.line] = lines
		if err != nil {
			t.Errorf("line %d: %s: %v\n%s", s.line, s.cmd, err, out.String())
			break
		}
		if ok, at := match(s.want, lines); !ok && !*update {
			t.Errorf("line %d: %s: output differs from docs/quickstart.md (first difference at its line %d)\n--- document:\n%s\n--- got:\n%s",
				s.line, s.cmd, s.line+1+at, strings.Join(s.want, "\n"), strings.Join(lines, "\n"))
		}
		if strings.HasPrefix(s.cmd, "kt --state-file data/alice/state.json init") {
			if m := regexp.MustCompile(`device ([0-9a-f]{32}) created`).FindStringSubmatch(out.String()); m != nil {
				aliceDevice = m[1]
			}
		}
		if strings.Contains(s.cmd, " decrypt ") {
			decrypts++
			m := sender.FindStringSubmatch(strings.SplitN(out.String(), "\n", 2)[0])
			if m == nil || m[1] != aliceDevice || aliceDevice == "" {
				t.Errorf("line %d: %s: no authenticated sender line naming Alice's device %q:\n%s", s.line, s.cmd, aliceDevice, out.String())
			}
		}
		if strings.HasPrefix(s.cmd, "ktctl recover ") {
			m := logged.FindStringSubmatch(out.String())
			if m == nil {
				t.Fatalf("line %d: no log index in %q", s.line, out.String())
			}
			recovery, _ = strconv.ParseUint(m[1], 10, 64)
		}
		for _, m := range logged.FindAllStringSubmatch(out.String(), -1) {
			idx, _ := strconv.ParseUint(m[1], 10, 64)
			epoch, _ := strconv.ParseUint(m[2], 10, 64)
			checkVisible(t, dir, idx, epoch)
		}
		if strings.HasSuffix(s.cmd, "/kt/v1/checkpoint") {
			// The guide says the auditor's latest audited checkpoint
			// covers the recovery entry.
			if size, err := strconv.ParseUint(lines[min(1, len(lines)-1)], 10, 64); err != nil || size <= recovery {
				t.Errorf("line %d: the auditor's checkpoint does not cover the recovery entry %d:\n%s", s.line, recovery, out.String())
			}
		}
	}
	if ok, at := match(steps[0].want, got[steps[0].line]); !ok && !*update {
		t.Errorf("ktlocal's banner differs from docs/quickstart.md line %d\n--- document:\n%s\n--- got:\n%s",
			steps[0].line+1+at, strings.Join(steps[0].want, "\n"), strings.Join(got[steps[0].line], "\n"))
	}
	if *update {
		if err := updateDoc(guide, got); err != nil {
			t.Fatal(err)
		}
		t.Log("updated docs/quickstart.md; check the diff")
	}
	checkReadme(t, readme, steps, got)
	if decrypts == 0 {
		t.Fatal("docs/quickstart.md has no decrypt step")
	}
	if !restarted {
		t.Fatal("docs/quickstart.md has no split-view step")
	}

	// Should ktlocal die without stopping them, the daemons stop too.
	kl.cmd.Process.Kill()
	<-kl.done
	deadline := time.Now().Add(60 * time.Second)
	for _, a := range addrs {
		for {
			ln, err := net.Listen("tcp", a)
			if err == nil {
				ln.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still in use a minute after ktlocal was killed: a daemon outlived it", a)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// restart checks the auditors' state before the split view, that a second
// ktlocal refuses the same addresses, stops ktlocal as Ctrl-C does, starts
// it again on the same data and checks the log continued.
func restart(t *testing.T, kl *local, bin, work string, args, addrs, env []string) *local {
	t.Helper()
	checkAuditors(t, addrs[3:])
	second := exec.Command(bin, args...)
	second.Dir = work
	if out, err := second.CombinedOutput(); err == nil || !strings.Contains(string(out), "is taken (is another ktlocal or ktd running?)") {
		t.Errorf("a second ktlocal: %v\n%s", err, out)
	}
	kl.interrupt(t)
	kl = startLocal(t, bin, work, args)
	if b := kl.banner(t); !strings.Contains(b, "(continuing the log already there)") {
		t.Errorf("restart: banner does not say it continues:\n%s", b)
	}
	cmd := exec.Command("bash", "-c", "kt --state-file data/alice/state.json lookup bob@example.com")
	cmd.Dir, cmd.Env = work, env
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "version 3 (recovery), 3 devices") {
		t.Errorf("after the restart, Alice's lookup: %v\n%s", err, out)
	}
	return kl
}

// checkReadme checks that the README's walk-through is the guide's
// commands, in order, and that what it shows matches what they printed.
func checkReadme(t *testing.T, readme, steps []*step, got map[int][]string) {
	t.Helper()
	if len(readme) == 0 {
		t.Error("README.md has no console block")
		return
	}
	j := 0
	for _, r := range readme {
		for j < len(steps) && steps[j].cmd != r.cmd {
			j++
		}
		if j == len(steps) {
			t.Errorf("README.md line %d: %q is not (in this order) a command of docs/quickstart.md", r.line, r.cmd)
			return
		}
		if ok, at := match(r.want, got[steps[j].line]); !ok {
			t.Errorf("README.md line %d: %s: output differs (first difference at README line %d)\n--- README:\n%s\n--- got:\n%s",
				r.line, r.cmd, r.line+1+at, strings.Join(r.want, "\n"), strings.Join(got[steps[j].line], "\n"))
		}
		j++
	}
}

// checkAuditors checks what the guide says of the auditors' status pages:
// the whole log audited, no violation, no evidence.
func checkAuditors(t *testing.T, addrs []string) {
	t.Helper()
	for _, a := range addrs {
		resp, err := http.Get("http://" + a + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		page := string(b)
		for _, want := range []string{`<td class="violations"><span class="ok">0</span></td>`, `<p class="noevidence">none</p>`, `<td>yes</td>`} {
			if !strings.Contains(page, want) {
				t.Errorf("auditor %s: status page lacks %s", a, want)
			}
		}
	}
}

func pairs(from, to []string) []string {
	var p []string
	for i := range from {
		p = append(p, from[i], to[i])
	}
	return p
}

// defaultFlags drops the flags that name ktlocal's default addresses.
var defaultFlags = strings.NewReplacer("--directory "+defaultAddrs[0]+" ", "", "--log-url http://"+defaultAddrs[1]+" ", "")

func docLines(toDoc *strings.Replacer, s string) []string {
	s = strings.TrimRight(toDoc.Replace(s), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

// checkVisible checks, without waiting, what a command said when it
// returned: the directory serves an epoch at least as recent as epoch,
// which includes log index idx.
func checkVisible(t *testing.T, dir ktpb.DirectoryClient, idx, epoch uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	part, err := dir.GetEpoch(ctx, &ktpb.GetEpochRequest{})
	if err != nil {
		t.Fatalf("GetEpoch: %v", err)
	}
	rec, err := api.ParseEpochRecord(part.GetEpochRecord())
	if err != nil {
		t.Fatal(err)
	}
	if rec.LogSize <= idx || rec.Epoch < epoch {
		t.Errorf("the command returned saying log index %d is visible in epoch %d, but the directory serves epoch %d of log size %d", idx, epoch, rec.Epoch, rec.LogSize)
	}
}

// local is a running ktlocal.
type local struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *bytes.Buffer
	done   chan error
}

func startLocal(t *testing.T, bin, dir string, args []string) *local {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	l := &local{cmd: cmd, lines: make(chan string, 100), stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = l.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l.lines <- sc.Text()
		}
		close(l.lines)
		l.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-l.done:
			case <-time.After(60 * time.Second):
				cmd.Process.Kill()
			}
		}
	})
	return l
}

// banner reads ktlocal's output up to its last banner line.
func (l *local) banner(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	deadline := time.After(5 * time.Minute) // includes building the binaries
	for {
		select {
		case s, ok := <-l.lines:
			if !ok {
				t.Fatalf("ktlocal exited before it was up:\n%s%s", b.String(), l.stderr.String())
			}
			b.WriteString(s + "\n")
			if strings.HasPrefix(s, "Ctrl-C stops everything") {
				return b.String()
			}
		case <-deadline:
			t.Fatalf("ktlocal not up after 5 minutes:\n%s%s", b.String(), l.stderr.String())
		}
	}
}

// interrupt sends SIGINT, as Ctrl-C does, and expects a clean exit.
func (l *local) interrupt(t *testing.T) {
	t.Helper()
	l.cmd.Process.Signal(os.Interrupt)
	var rest []string
	for s := range l.lines {
		rest = append(rest, s)
	}
	select {
	case err := <-l.done:
		if err != nil {
			t.Errorf("ktlocal after SIGINT: %v\n%s", err, l.stderr.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatal("ktlocal did not stop after SIGINT")
	}
	if !strings.Contains(strings.Join(rest, "\n"), "stopping: the directory, then the auditors") {
		t.Errorf("ktlocal after SIGINT printed %q", rest)
	}
	if s := l.stderr.String(); s != "" {
		t.Errorf("ktlocal wrote to stderr:\n%s", s)
	}
}
