package witness_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/keytrans/kt/log/witness"
	fnote "github.com/transparency-dev/formats/note"
)

func TestParsePolicy(t *testing.T) {
	ws := make([]*cosigner, 6)
	for i := range ws {
		ws[i] = newCosigner(t, fmt.Sprintf("w%d.example", i))
	}
	lg := newTestLog(t, "localhost/kt")
	for _, tc := range []struct {
		name      string
		policy    string
		witnesses []string
		urls      []string
		logs      int
		quorum    string
		none      bool
	}{
		{
			name:      "single witness",
			policy:    fmt.Sprintf("witness A %s https://a.example/w\nquorum A\n", ws[0].VKey()),
			witnesses: []string{"A"},
			urls:      []string{"https://a.example/w"},
			quorum:    "witness A",
		},
		{
			name:   "none",
			policy: "quorum none\n",
			quorum: "none",
			none:   true,
		},
		{
			name: "comments, blank lines, tabs, no final newline, log lines",
			policy: fmt.Sprintf("# a policy\n\nlog %s http://log.example # the log\n\twitness\tA\t%s   # no URL\nwitness B %s\ngroup g any A B\nquorum g",
				lg.vkey, ws[0].VKey(), ws[1].VKey()),
			witnesses: []string{"A", "B"},
			urls:      []string{"", ""},
			logs:      1,
			quorum:    "g = 1 of {A, B}",
		},
		{
			name: "nested groups, all and k",
			policy: fmt.Sprintf(`witness X1 %s
witness X2 %s
witness X3 %s
group X 2 X1 X2 X3
witness Y1 %s
witness Y2 %s
witness Y3 %s
group Y any Y1 Y2 Y3
group XY all X Y
quorum XY
`, ws[0].VKey(), ws[1].VKey(), ws[2].VKey(), ws[3].VKey(), ws[4].VKey(), ws[5].VKey()),
			witnesses: []string{"X1", "X2", "X3", "Y1", "Y2", "Y3"},
			urls:      []string{"", "", "", "", "", ""},
			quorum:    "XY = 2 of {X, Y}; Y = 1 of {Y1, Y2, Y3}; X = 2 of {X1, X2, X3}",
		},
		{
			name:      "definitions after the quorum line",
			policy:    fmt.Sprintf("witness A %s\nquorum A\nwitness B %s\n", ws[0].VKey(), ws[1].VKey()),
			witnesses: []string{"A", "B"},
			urls:      []string{"", ""},
			quorum:    "witness A",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := witness.ParsePolicy([]byte(tc.policy))
			if err != nil {
				t.Fatalf("ParsePolicy: %v", err)
			}
			var names, urls []string
			for _, w := range p.Witnesses() {
				names = append(names, w.Name)
				urls = append(urls, w.URL)
			}
			if diff := cmp.Diff(tc.witnesses, names); diff != "" {
				t.Errorf("witnesses (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.urls, urls); diff != "" {
				t.Errorf("URLs (-want +got):\n%s", diff)
			}
			if got := len(p.Logs()); got != tc.logs {
				t.Errorf("%d logs, want %d", got, tc.logs)
			}
			if got := p.Quorum(); got != tc.quorum {
				t.Errorf("Quorum() = %q, want %q", got, tc.quorum)
			}
			if got := p.QuorumNone(); got != tc.none {
				t.Errorf("QuorumNone() = %v, want %v", got, tc.none)
			}
		})
	}
}

// TestParsePolicyTessera checks that a policy in the shape Tessera's
// NewWitnessGroupFromPolicy takes parses here too.
func TestParsePolicyTessera(t *testing.T) {
	a, b := newCosigner(t, "a.example"), newCosigner(t, "b.example")
	pol := fmt.Sprintf("witness a %s https://a.example\nwitness b %s https://b.example/prefix\ngroup g all a b\nquorum g\n", a.VKey(), b.VKey())
	if _, err := witness.ParsePolicy([]byte(pol)); err != nil {
		t.Fatal(err)
	}
}

func TestParsePolicyErrors(t *testing.T) {
	a, b := newCosigner(t, "a.example"), newCosigner(t, "b.example")
	lg := newTestLog(t, "localhost/kt")
	// The same Ed25519 key under another key name.
	aRenamed := &cosigner{Name: "other.example", Priv: a.Priv, Pub: a.Pub}
	// A plain Ed25519 note key (type 0x01) for a witness.
	plain := lg.vkey
	// A cosignature key whose key hash is wrong.
	badHash := strings.Replace(a.VKey(), fmt.Sprintf("+%08x+", a.KeyHash()), fmt.Sprintf("+%08x+", a.KeyHash()^1), 1)
	wa := "witness A " + a.VKey() + "\n"
	wb := "witness B " + b.VKey() + "\n"
	for _, tc := range []struct {
		name   string
		policy string
		line   int
		msg    string
	}{
		{"no quorum", wa, 0, "no quorum line"},
		{"empty", "", 0, "no quorum line"},
		{"unknown keyword", wa + "witnesses B x\nquorum A\n", 2, `unknown keyword "witnesses"`},
		{"witness without key", "witness A\nquorum A\n", 1, "want \"witness NAME VKEY [URL]\""},
		{"witness extra item", "witness A " + a.VKey() + " https://a.example extra\nquorum A\n", 1, "got 5 items"},
		{"malformed key", "witness A a.example+00000000+BAAA\nquorum A\n", 1, "malformed verifier key"}, {"unsupported key type", "witness A a.example+00000000+AAAA\nquorum A\n", 1, "unsupported signature type 0x00"},
		{"plain Ed25519 key", "witness A " + plain + "\nquorum A\n", 1, "type 0x01"},
		{"wrong key hash", "witness A " + badHash + "\nquorum A\n", 1, "does not match the key"},
		{"duplicate name", wa + "witness A " + b.VKey() + "\nquorum A\n", 2, `name "A" is already defined`},
		{"duplicate key under another name", wa + "witness C " + aRenamed.VKey() + "\nquorum A\n", 2, "same public key as the witness on line 1"},
		{"keyword as name", "witness all " + a.VKey() + "\nquorum none\n", 1, "is a keyword"},
		{"group undefined member", wa + "group g any A B\nquorum g\n", 2, `member "B" is not defined`},
		{"group forward reference", wa + "group g any A B\n" + wb + "quorum g\n", 2, `member "B" is not defined`},
		{"group duplicate member", wa + wb + "group g 2 A A B\nquorum g\n", 3, "lists A more than once"},
		{"group zero threshold", wa + wb + "group g 0 A B\nquorum g\n", 3, "threshold \"0\""},
		{"group threshold leading zero", wa + wb + "group g 02 A B\nquorum g\n", 3, "threshold \"02\""},
		{"group threshold sign", wa + wb + "group g +1 A B\nquorum g\n", 3, "threshold \"+1\""},
		{"group threshold too large", wa + wb + "group g 3 A B\nquorum g\n", 3, "threshold 3 is more than its 2 members"},
		{"group without members", wa + "group g all\nquorum g\n", 2, "want \"group NAME"},
		{"group keyword member", wa + "group g any A none\nquorum g\n", 2, "keyword"},
		{"group name clash", wa + "group A any A\nquorum A\n", 2, "already defined"},
		{"quorum undefined", wa + "quorum B\n", 2, `quorum "B" is not a witness or group`},
		{"quorum before definition", "quorum A\n" + wa, 1, `quorum "A" is not a witness or group`},
		{"two quorums", wa + "quorum A\nquorum none\n", 3, "second quorum line (the first is line 2)"},
		{"quorum extra item", wa + "quorum A B\n", 2, "want \"quorum NAME\""},
		{"control character", wa + "quorum A\r\n", 2, "control character 0x0d"},
		{"NUL", "quorum\x00 none\n", 1, "control character 0x00"},
		{"bad witness URL", "witness A " + a.VKey() + " ftp://a.example\nquorum A\n", 1, "not an http or https URL"},
		{"URL without host", "witness A " + a.VKey() + " https:///x\nquorum A\n", 1, "has no host"},
		{"bad log key", "log nonsense\nquorum none\n", 1, "invalid log verifier key"},
		{"duplicate log", "log " + lg.vkey + "\nlog " + lg.vkey + " https://x.example\nquorum none\n", 2, "log key already listed on line 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := witness.ParsePolicy([]byte(tc.policy))
			if err == nil {
				t.Fatalf("ParsePolicy succeeded (quorum %q), want an error", p.Quorum())
			}
			var pe *witness.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is a %T, want *ParseError", err, err)
			}
			if pe.Line != tc.line {
				t.Errorf("error line %d, want %d (%v)", pe.Line, tc.line, err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not contain %q", err, tc.msg)
			}
		})
	}
}

// TestPolicyKeyCrossCheck checks that the key hash computed here from the
// specification agrees with formats/note's cosignature/v1 verifier.
func TestPolicyKeyCrossCheck(t *testing.T) {
	c := newCosigner(t, "witness.example/w1")
	v, err := fnote.NewVerifierForCosignatureV1(c.VKey())
	if err != nil {
		t.Fatal(err)
	}
	if v.KeyHash() != c.KeyHash() {
		t.Fatalf("formats key hash %08x, spec computation %08x", v.KeyHash(), c.KeyHash())
	}
}

func FuzzParsePolicy(f *testing.F) {
	a, b := newCosigner(f, "a.example"), newCosigner(f, "b.example")
	lg := newTestLog(f, "localhost/kt")
	for _, s := range []string{
		"quorum none\n",
		"witness A " + a.VKey() + " https://a.example\nquorum A\n",
		"log " + lg.vkey + "\nwitness A " + a.VKey() + "\nwitness B " + b.VKey() + "\ngroup g 2 A B\ngroup h any g A\nquorum h\n",
		"# comment\n\tgroup g all\nquorum g # x\n",
		"witness A " + a.VKey() + "\ngroup g 1 A\ngroup h all g\nquorum h\nquorum h\n",
		"auditor A " + a.VKey() + " http://127.0.0.1:8481\nauditor B " + b.VKey() + "\ngroup auditors 2 A B\nquorum auditors\n",
		"auditor A " + a.VKey() + "\nwitness B " + b.VKey() + "\nquorum A\n",
	} {
		f.Add([]byte(s))
	}
	cp := []byte("localhost/kt\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— a.example AAAAAAAAAAAAAAAAAAAA\n")
	f.Fuzz(func(t *testing.T, text []byte) {
		// The two grammars differ only in their member keyword: a text
		// both accept names no member at all.
		ap, aerr := witness.ParseAuditPolicy(text)
		if aerr != nil {
			var pe *witness.ParseError
			if !errors.As(aerr, &pe) {
				t.Fatalf("audit policy error %v is a %T, want *ParseError", aerr, aerr)
			}
		}
		p, err := witness.ParsePolicy(text)
		if err == nil && aerr == nil && (len(p.Witnesses()) != 0 || len(ap.Witnesses()) != 0) {
			t.Fatalf("a text with members parses as both a witness and an audit policy: %q", text)
		}
		if err != nil {
			var pe *witness.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is a %T, want *ParseError", err, err)
			}
			return
		}
		if p.Quorum() == "" {
			t.Fatal("parsed policy has an empty quorum description")
		}
		for _, w := range p.Witnesses() {
			if w.Verifier() == nil {
				t.Fatalf("witness %s has no verifier", w.Name)
			}
		}
		// A checkpoint with no valid cosignature satisfies only "quorum
		// none" (no group has a zero threshold).
		_, err = p.Check(cp)
		if p.QuorumNone() != (err == nil) {
			t.Fatalf("Check with no valid cosignature: err = %v, QuorumNone = %v", err, p.QuorumNone())
		}
	})
}

// TestParsePolicyErrorWraps: a ParseError caused by another error (here the
// signed-note key parser's) wraps it, so errors.Is and errors.As reach it.
func TestParsePolicyErrorWraps(t *testing.T) {
	_, err := witness.ParsePolicy([]byte("log example.com/log+00000000+AAAA\nquorum none\n"))
	var pe *witness.ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v is a %T, want *ParseError", err, err)
	}
	if pe.Line != 1 || pe.Err == nil || !errors.Is(err, pe.Err) {
		t.Fatalf("ParseError %+v: want line 1 wrapping the key parser's error", pe)
	}
}
