package quickstart

import (
	"bufio"
	"os"
	"regexp"
	"sort"
	"strings"
)

// A step is one "$ command" line of a console block in a document and the
// output shown under it (stdout and stderr as the terminal shows them).
type step struct {
	cmd  string
	want []string
	line int // 1-based line of the command in the document
}

// parseDoc returns the steps of every ```console block of a Markdown file.
func parseDoc(path string) ([]*step, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var steps []*step
	var cur *step
	in := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		switch {
		case !in && strings.TrimSpace(l) == "```console":
			in = true
		case in && strings.TrimSpace(l) == "```":
			in, cur = false, nil
		case in && strings.HasPrefix(l, "$ "):
			cur = &step{cmd: strings.TrimPrefix(l, "$ "), line: n}
			steps = append(steps, cur)
		case in && cur != nil:
			cur.want = append(cur.want, l)
		}
	}
	return steps, sc.Err()
}

// updateDoc rewrites the output under each command of path's console
// blocks with got[command line], for -update.
func updateDoc(path string, got map[int][]string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var out []string
	in, skipping := false, false
	for i, l := range strings.Split(string(b), "\n") {
		n := i + 1
		switch {
		case !in && strings.TrimSpace(l) == "```console":
			in = true
		case in && strings.TrimSpace(l) == "```":
			in, skipping = false, false
		case in && strings.HasPrefix(l, "$ "):
			out = append(out, l)
			lines, ok := got[n]
			skipping = ok
			out = append(out, lines...)
			continue
		}
		if in && skipping {
			continue
		}
		out = append(out, l)
	}
	return os.WriteFile(path, []byte(strings.Join(out, "\n")), 0o644)
}

// Normalisation: what varies from run to run (keys, IDs, hashes, times,
// log positions) is replaced by placeholders in both the document's and
// the actual output before they are compared; everything else must be
// equal, word for word. Counts that carry the walk-through's meaning (the
// versions, how many devices, how many cosignatures, exit statuses) are
// kept.
var (
	reTime    = regexp.MustCompile(`\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z`)
	reDur     = regexp.MustCompile(`\b\d+(\.\d+)?(ns|µs|ms|s|m|h)\b`)
	reToken   = regexp.MustCompile(`[A-Za-z0-9+/=_-]{16,}`)
	reHex     = regexp.MustCompile(`\b[0-9a-f]{8,}\b`)
	reKept    = regexp.MustCompile(`version \d+|\b\d+ (verified )?devices?\b|\(\d+ cosignatures\)|\b\d+ of (your|\{)|\(\d+ before\)|exit status \d+|auditor-\d\b|quorum \(\d`)
	reNumber  = regexp.MustCompile(`\b\d+\b`)
	reSpace   = regexp.MustCompile(`\s+`)
	protected = strings.NewReplacer("0", "\x00", "1", "\x01", "2", "\x02", "3", "\x03", "4", "\x04", "5", "\x05", "6", "\x06", "7", "\x07", "8", "\x08", "9", "\x09")
	restored  = strings.NewReplacer("\x00", "0", "\x01", "1", "\x02", "2", "\x03", "3", "\x04", "4", "\x05", "5", "\x06", "6", "\x07", "7", "\x08", "8", "\x09", "9")
)

func normalize(l string) string {
	l = reTime.ReplaceAllString(l, "<time>")
	l = reDur.ReplaceAllString(l, "<duration>")
	l = reToken.ReplaceAllStringFunc(l, func(s string) string {
		if strings.HasPrefix(s, "data/") || !strings.ContainsAny(s, "0123456789") {
			return s
		}
		return "<key>"
	})
	l = reHex.ReplaceAllString(l, "<key>")
	l = reKept.ReplaceAllStringFunc(l, protected.Replace)
	l = reNumber.ReplaceAllString(l, "<n>")
	l = restored.Replace(l)
	return strings.TrimSpace(reSpace.ReplaceAllString(l, " "))
}

// match reports whether got matches want after normalisation; a want line
// "..." matches any number of lines. Adjacent lines naming an auditor
// (auditor-1, auditor-2) may come in either order: cosignatures are listed
// in the order they arrived. So may the two checkpoints of an evidence
// bundle (`ktctl evidence verify`: "checkpoint A", its "signatures", then
// B's), whose order depends on their roots. It returns the index of the first want line
// that did not match (-1 if all did).
func match(want, got []string) (bool, int) {
	w, g := normalizeAll(want), normalizeAll(got)
	var rec func(wi, gi int) (bool, int)
	rec = func(wi, gi int) (bool, int) {
		for wi < len(w) {
			if w[wi] == "..." {
				for k := gi; k <= len(g); k++ {
					if ok, _ := rec(wi+1, k); ok {
						return true, -1
					}
				}
				return false, wi
			}
			if gi >= len(g) || w[wi] != g[gi] {
				return false, wi
			}
			wi, gi = wi+1, gi+1
		}
		if gi != len(g) {
			return false, len(w)
		}
		return true, -1
	}
	return rec(0, 0)
}

var reAuditor = regexp.MustCompile(`auditor-\d\b`)

func normalizeAll(ls []string) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = normalize(l)
	}
	for i, l := range out {
		if strings.HasPrefix(l, "checkpoint A ") || strings.HasPrefix(l, "checkpoint B ") {
			out[i] = "checkpoint <A|B> " + l[len("checkpoint A "):]
		}
		if rest, ok := strings.CutPrefix(l, "signatures "); ok {
			sigs := strings.Split(rest, ", ")
			sort.Strings(sigs)
			out[i] = "signatures " + strings.Join(sigs, ", ")
		}
	}
	for i := 0; i < len(out); {
		j := i
		for j < len(out) && (reAuditor.MatchString(out[j]) && !strings.Contains(out[j], "{") && !strings.HasPrefix(out[j], "signatures ") ||
			strings.HasPrefix(out[j], "checkpoint <A|B> ") || strings.HasPrefix(out[j], "signatures ")) {
			j++
		}
		if j > i {
			sort.Strings(out[i:j])
			i = j
		} else {
			i++
		}
	}
	return out
}

// trimBlank drops trailing empty lines.
func trimBlank(ls []string) []string {
	for len(ls) > 0 && strings.TrimSpace(ls[len(ls)-1]) == "" {
		ls = ls[:len(ls)-1]
	}
	return ls
}
