package deploytest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docsChecked are the documents whose commands TestDocsFlags checks.
var docsChecked = []string{"docs/operations.md", "deploy/README.md"}

// helpFlag is one flag line of pflag's usage: the name and, for a flag
// that takes a value, its type.
var helpFlag = regexp.MustCompile(`(?m)^\s+(?:-[a-zA-Z], )?--([a-z0-9][a-z0-9-]*)(?: ([a-z]+))?\s`)

// usage is what a binary's --help says it accepts.
type usage struct {
	text  string
	flags map[string]bool // name: takes a value
}

func parseUsage(text string) usage {
	u := usage{text: text, flags: map[string]bool{}}
	for _, m := range helpFlag.FindAllStringSubmatch(text, -1) {
		u.flags[m[1]] = m[2] != ""
	}
	u.flags["help"] = false
	return u
}

// helpOf runs the binary with args and returns its usage; ok is false
// when it exits with an error (an unknown command).
func helpOf(t *testing.T, bin string, args ...string) (usage, bool) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	return parseUsage(string(out)), err == nil
}

// snippets are a Markdown file's commands: each line of its code blocks
// (continuation lines joined) and each inline code span elsewhere.
func snippets(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repo, path))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	inBlock, cont := false, ""
	s := bufio.NewScanner(f)
	for s.Scan() {
		l := s.Text()
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			inBlock = !inBlock
			continue
		}
		if inBlock {
			if c, ok := strings.CutSuffix(strings.TrimRight(l, " "), `\`); ok {
				cont += c + " "
				continue
			}
			out = append(out, cont+l)
			cont = ""
			continue
		}
		for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(l, -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// invocations splits a snippet into the commands of ours it runs: the
// program's name and the words after it, up to a shell separator.
func invocations(snippet string) [][]string {
	s := snippet
	if i := strings.Index(s, " #"); i >= 0 {
		s = s[:i]
	}
	for _, sep := range []string{"|", ";", "&&", "$(", "(", ")", ">", "<", `"`, "&"} {
		s = strings.ReplaceAll(s, sep, " | ")
	}
	var out [][]string
	words := strings.Fields(s)
	for i, w := range words {
		name := w
		if b, ok := strings.CutPrefix(w, "./cmd/"); ok {
			name = b
		} else if strings.HasPrefix(w, "/usr/local/bin/") {
			name = filepath.Base(w)
		}
		switch name {
		case "ktd", "ktauditor", "ktctl", "kt":
		default:
			continue
		}
		// Only a command: the program's name, not a directory or file
		// of that name ("keys/ktd", "ktd.yaml"), and not a word of prose
		// ("`kt`"): a command either ends the span or continues.
		if i > 0 && words[i-1] != "|" && words[i-1] != "run" && words[i-1] != "sudo" && words[i-1] != "exec" {
			continue
		}
		cmd := []string{name}
		for _, a := range words[i+1:] {
			if a == "|" {
				break
			}
			cmd = append(cmd, a)
		}
		out = append(out, cmd)
	}
	return out
}

// checker holds the binaries' usages.
type checker struct {
	t    *testing.T
	bin  func(string) string
	top  map[string]usage
	subs map[string]map[string]bool
}

func newChecker(t *testing.T) *checker {
	ours := binaries(t)
	c := &checker{t: t, bin: func(n string) string { return filepath.Join(ours, n) }, top: map[string]usage{}, subs: map[string]map[string]bool{}}
	for _, n := range []string{"ktd", "ktauditor", "kt"} {
		u, _ := helpOf(t, c.bin(n), "--help")
		if len(u.flags) < 5 {
			t.Fatalf("%s --help lists %d flags:\n%s", n, len(u.flags), u.text)
		}
		c.top[n] = u
		// Subcommands: the words after the program's name in the usage lines.
		c.subs[n] = map[string]bool{}
		for _, m := range regexp.MustCompile(`(?m)^\s+`+n+` ([a-z][a-z-]*)`).FindAllStringSubmatch(u.text, -1) {
			c.subs[n][m[1]] = true
		}
	}
	return c
}

// check returns what a snippet names that the binaries lack, and how many
// flags it checked.
func (c *checker) check(snip string) (problems []string, checked int) {
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	for _, inv := range invocations(snip) {
		name, args := inv[0], inv[1:]
		var u usage
		var rest []string
		if name == "ktd" || name == "ktauditor" || name == "kt" {
			u, rest = c.top[name], args
			// The subcommand: the first word that is neither a flag nor a
			// flag's value (a handle, path or name may follow it).
			for i := 0; i < len(args); i++ {
				a := args[i]
				if strings.HasPrefix(a, "-") {
					if f, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); u.flags[f] && !strings.Contains(a, "=") {
						i++
					}
					continue
				}
				if regexp.MustCompile(`^[a-z][a-z-]*$`).MatchString(a) && !c.subs[name][a] {
					bad("%s has no subcommand %q (%s --help)", name, a, name)
				}
				break
			}
		} else {
			// ktctl: the command is one or two words; ktctl help says which.
			ok := false
			for n := min(2, len(args)); n >= 1 && !ok; n-- {
				if strings.HasPrefix(args[n-1], "-") {
					continue
				}
				u, ok = helpOf(c.t, c.bin("ktctl"), append([]string{"help"}, args[:n]...)...)
				rest = args[n:]
			}
			if !ok {
				if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
					bad("ktctl has no command %q (ktctl help)", args[0])
				}
				continue
			}
		}
		for _, a := range rest {
			if !strings.HasPrefix(a, "--") {
				continue
			}
			f, _, _ := strings.Cut(a[2:], "=")
			if _, ok := u.flags[f]; !ok {
				bad("%s has no flag --%s", strings.Join(inv[:min(len(inv), 3)], " "), f)
			}
			checked++
		}
	}
	// Environment variables of ktd and ktauditor.
	for _, m := range regexp.MustCompile(`\b(KTD|KTAUDITOR)_[A-Z0-9_]*[A-Z0-9]\b`).FindAllString(snip, -1) {
		n := "ktd"
		if strings.HasPrefix(m, "KTAUDITOR_") {
			n = "ktauditor"
		}
		if !regexp.MustCompile(`\b` + m + `\b`).MatchString(c.top[n].text) {
			bad("%s is not a %s variable (%s --help)", m, n, n)
		}
	}
	return problems, checked
}

// TestDocsFlags checks that every subcommand, flag and environment
// variable of ktd, ktauditor, ktctl and kt that docs/operations.md and
// deploy/README.md name exists: the binaries' --help lists it. Its
// control: a snippet with each kind of mistake is caught, one without is
// not.
func TestDocsFlags(t *testing.T) {
	c := newChecker(t)
	total := 0
	for _, doc := range docsChecked {
		for _, snip := range snippets(t, doc) {
			problems, n := c.check(snip)
			for _, p := range problems {
				t.Errorf("%s: %q: %s", doc, snip, p)
			}
			total += n
		}
	}
	if total < 20 {
		t.Errorf("only %d flags checked: the documents' commands were not found", total)
	}
	t.Logf("%d flags checked", total)

	for _, bad := range []string{
		"ktd --no-such-flag", "ktd backup --no-such-flag DEST", "ktd frobnicate", "ktauditor --config f nosuch ORIGIN",
		"ktctl keygen --bogus", "ktctl nosuchcmd --json", "ktctl evidence verify f --nope",
		"kt --state-file s frobnicate", "kt lookup h --no-such", "KTD_NO_SUCH_KEY=1", "KTAUDITOR_NOPE",
		"go run ./cmd/ktctl keygen --bogus", "docker compose exec ktd /app issue-token --nope h",
	} {
		if p, _ := c.check(bad); len(p) == 0 {
			t.Errorf("control: %q passed", bad)
		}
	}
	for _, good := range []string{
		"ktd backup --config f DEST", "ktctl evidence verify f --log-key k", "kt --state-file s lookup alice",
		"ktauditor unfreeze --config f ORIGIN", "KTD_LOG_TRILLIAN_TREE_ID=1", "systemctl enable --now ktauditor ktd", "keys/ktd/log.key",
	} {
		if p, _ := c.check(good); len(p) > 0 {
			t.Errorf("control: %q refused: %v", good, p)
		}
	}
}
