package witness

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// Limits on policy files, to bound the work hostile or broken input causes.
// Sigsum recommends supporting at least 32 logs, 32 witnesses and 32 groups.
const (
	maxPolicyBytes = 1 << 20
	maxNames       = 1024 // witnesses plus groups
	maxLogs        = 256
)

// Signature types of C2SP signed-note verifier keys.
// SPEC(tlog-cosignature): "Ed25519 public keys MAY be encoded as vkeys with
// signature type 0x04 ... ML-DSA-44 public keys MAY be encoded as vkeys with
// signature type 0x06".
const (
	algEd25519            = 0x01
	algCosignatureEd25519 = 0x04
	algCosignatureMLDSA44 = 0x06
)

// A Policy is a parsed witness policy: the known logs, the known witnesses,
// and the quorum rule. It is immutable and safe for concurrent use.
type Policy struct {
	logs      []*Log
	witnesses []*Witness
	// nodes holds the witnesses and groups in definition order, which is
	// also a topological order: a group only refers to earlier nodes.
	nodes  []node
	byName map[string]int // node index by name
	// byKey finds the witnesses whose key has a given key name and key hash
	// (normally at most one).
	byKey map[keyID][]int
	// quorum is the index of the quorum node, or -1 for "quorum none".
	quorum     int
	quorumDesc string
}

// A Witness is one witness of a policy.
type Witness struct {
	// Name is the witness's name in the policy file. It need not equal the
	// key name of its verifier key.
	Name string
	// VerifierKey is the witness's C2SP signed-note verifier key, as written
	// in the policy.
	VerifierKey string
	// URL is the witness's submission prefix, or "" when the policy gives
	// none (policies for offline verification need none).
	URL string

	verifier note.Verifier
	index    int
}

// Verifier returns the witness's cosignature/v1 verifier.
func (w *Witness) Verifier() note.Verifier { return w.verifier }

// A Log is a log listed in a policy.
type Log struct {
	// VerifierKey is the log's signed-note verifier key (Ed25519, type 0x01).
	VerifierKey string
	// URL is the log's URL, or "" when the policy gives none.
	URL string

	verifier note.Verifier
}

// Verifier returns the log's checkpoint signature verifier.
func (l *Log) Verifier() note.Verifier { return l.verifier }

type keyID struct {
	name string
	hash uint32
}

// node is a witness (witness >= 0) or a group.
type node struct {
	name    string
	witness int
	k       int
	members []int
}

// A ParseError reports a malformed policy. Line is the 1-based line number,
// or 0 for an error about the policy as a whole.
type ParseError struct {
	Line int
	Msg  string
	// Err is the underlying error Msg reports, if any (such as a
	// malformed key or URL); Unwrap returns it.
	Err error
}

func (e *ParseError) Unwrap() error { return e.Err }

func (e *ParseError) Error() string {
	if e.Line == 0 {
		return "witness policy: " + e.Msg
	}
	return fmt.Sprintf("witness policy line %d: %s", e.Line, e.Msg)
}

// keywords cannot be used as witness or group names.
var keywords = map[string]bool{
	"log": true, "witness": true, "auditor": true, "group": true, "quorum": true,
	"any": true, "all": true, "none": true,
}

// ReadPolicyFile reads the policy file at path and parses it with
// [ParsePolicy]. Errors name the file: "witness policy: " and the read
// error, or "witness policy PATH: " and the [*ParseError].
func ReadPolicyFile(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("witness policy: %w", err)
	}
	p, err := ParsePolicy(b)
	if err != nil {
		return nil, fmt.Errorf("witness policy %s: %w", path, err)
	}
	return p, nil
}

// ParsePolicy parses a policy in the Sigsum policy format with C2SP
// signed-note verifier keys (see the package documentation).
//
// SPEC(design.md 9.1)
func ParsePolicy(text []byte) (*Policy, error) { return parsePolicy(text, "witness") }

// ReadAuditPolicyFile reads the audit policy file at path and parses it
// with [ParseAuditPolicy]. Errors name the file as [ReadPolicyFile]'s do.
func ReadAuditPolicyFile(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit policy: %w", err)
	}
	p, err := ParseAuditPolicy(b)
	if err != nil {
		return nil, fmt.Errorf("audit policy %s: %w", path, err)
	}
	return p, nil
}

// ParseAuditPolicy parses an audit policy: the grammar of [ParsePolicy]
// with "auditor NAME VKEY [URL]" member lines in place of "witness" lines
// (a witness line is an error here, and an auditor line in a witness
// policy), so that the two files cannot be swapped by mistake. The
// members' keys sign audit statements (tlog-cosignature/v1 by a key that
// makes only that statement); URL is the auditor's base URL, to which a
// directory posts /kt/v1/audit. The result's Witnesses are the auditors
// and [Policy.Check] counts audit statements.
//
// SPEC(design.md 14.1)
func ParseAuditPolicy(text []byte) (*Policy, error) { return parsePolicy(text, "auditor") }

// CheckDisjoint returns an error if a key of audit is also a key of
// witnesses: a witness cosignature states consistency only, and one key
// must make one kind of statement (design.md 14.1).
func CheckDisjoint(witnesses, audit *Policy) error {
	if witnesses == nil || audit == nil {
		return nil
	}
	keys := make(map[string]string)
	for _, w := range witnesses.witnesses {
		raw, _ := vkeyKey(w.VerifierKey)
		keys[string(raw)] = w.Name
	}
	for _, a := range audit.witnesses {
		raw, _ := vkeyKey(a.VerifierKey)
		if w, ok := keys[string(raw)]; ok {
			return fmt.Errorf("auditor %s uses the public key of witness %s: an audit key must not be a witness key", a.Name, w)
		}
	}
	return nil
}

func parsePolicy(text []byte, member string) (*Policy, error) {
	if len(text) > maxPolicyBytes {
		return nil, &ParseError{Msg: fmt.Sprintf("policy has %d bytes, more than the limit of %d", len(text), maxPolicyBytes)}
	}
	p := &Policy{
		byName: make(map[string]int),
		byKey:  make(map[keyID][]int),
		quorum: -1,
	}
	var (
		quorumLine int
		logKeys    = make(map[string]int) // raw public key -> line
		witKeys    = make(map[string]int) // raw public key -> line
		lineNo     int
	)
	for len(text) > 0 {
		lineNo++
		var line []byte
		line, text, _ = bytes.Cut(text, []byte("\n"))
		errf := func(format string, args ...any) error {
			err := fmt.Errorf(format, args...)
			return &ParseError{Line: lineNo, Msg: err.Error(), Err: errors.Unwrap(err)}
		}
		// SPEC(sigsum policy): "The only allowed control characters are tab
		// (0x09) and newline (0x0a)."
		for _, c := range line {
			if (c < 0x20 && c != '\t') || c == 0x7f {
				return nil, errf("control character 0x%02x (only tab and newline are allowed)", c)
			}
		}
		// SPEC(sigsum policy): "Comments are written with "#" and extend to
		// the end of the line."
		if i := bytes.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		// SPEC(sigsum policy): "each line consist of items separated by
		// ASCII space and tab characters."
		fields := strings.FieldsFunc(string(line), func(r rune) bool { return r == ' ' || r == '\t' })
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case "log":
			// log <vkey> [<url>]
			if len(fields) < 2 || len(fields) > 3 {
				return nil, errf("want \"log VKEY [URL]\", got %d items", len(fields))
			}
			if len(p.logs) >= maxLogs {
				return nil, errf("more than %d logs", maxLogs)
			}
			v, err := note.NewVerifier(fields[1])
			if err != nil {
				return nil, errf("invalid log verifier key %q: %w", fields[1], err)
			}
			raw, _ := vkeyKey(fields[1])
			// SPEC(sigsum policy): "Duplicate logs, i.e., multiple log lines
			// with the same public key, are not allowed."
			if prev, ok := logKeys[string(raw)]; ok {
				return nil, errf("log key already listed on line %d", prev)
			}
			logKeys[string(raw)] = lineNo
			l := &Log{VerifierKey: fields[1], verifier: v}
			if len(fields) == 3 {
				if err := checkURL(fields[2]); err != nil {
					return nil, errf("log URL: %w", err)
				}
				l.URL = fields[2]
			}
			p.logs = append(p.logs, l)

		case "witness", "auditor":
			// witness|auditor <name> <vkey> [<url>]
			if fields[0] != member {
				return nil, errf("%q line in %s policy (want %q lines)", fields[0], map[string]string{"witness": "a witness", "auditor": "an audit"}[member], member)
			}
			if len(fields) < 3 || len(fields) > 4 {
				return nil, errf("want \"%s NAME VKEY [URL]\", got %d items", member, len(fields))
			}
			name := fields[1]
			if err := p.checkNewName(name); err != nil {
				return nil, errf("%w", err)
			}
			if len(p.nodes) >= maxNames {
				return nil, errf("more than %d witnesses and groups", maxNames)
			}
			v, raw, err := cosignatureVerifier(fields[2])
			if err != nil {
				return nil, errf("%s %s: %w", member, name, err)
			}
			// SPEC(sigsum policy): "Duplicate witnesses, i.e., multiple
			// witness lines with the same public key, are not allowed."
			// This matters for security: an Ed25519 cosignature/v1 does not
			// commit to the key name, so one key listed under two names
			// would let one witness count twice.
			if prev, ok := witKeys[string(raw)]; ok {
				return nil, errf("%s %s has the same public key as the %s on line %d", member, name, member, prev)
			}
			witKeys[string(raw)] = lineNo
			w := &Witness{Name: name, VerifierKey: fields[2], verifier: v, index: len(p.witnesses)}
			if len(fields) == 4 {
				if err := checkURL(fields[3]); err != nil {
					return nil, errf("%s %s URL: %w", member, name, err)
				}
				w.URL = fields[3]
			}
			p.witnesses = append(p.witnesses, w)
			id := keyID{v.Name(), v.KeyHash()}
			p.byKey[id] = append(p.byKey[id], w.index)
			p.byName[name] = len(p.nodes)
			p.nodes = append(p.nodes, node{name: name, witness: w.index})

		case "group":
			// group <name> all|any|<k> <name>...
			if len(fields) < 4 {
				return nil, errf("want \"group NAME all|any|K MEMBER...\", got %d items", len(fields))
			}
			name, threshold, memberNames := fields[1], fields[2], fields[3:]
			if err := p.checkNewName(name); err != nil {
				return nil, errf("%w", err)
			}
			if len(p.nodes) >= maxNames {
				return nil, errf("more than %d witnesses and groups", maxNames)
			}
			n := node{name: name, witness: -1}
			seen := make(map[string]bool, len(memberNames))
			for _, m := range memberNames {
				// SPEC(sigsum policy): "a group definition can only refer to
				// names defined on preceding lines."
				i, ok := p.byName[m]
				if !ok {
					if keywords[m] {
						return nil, errf("group %s: %q is a keyword, not a member name", name, m)
					}
					return nil, errf("group %s: member %q is not defined on an earlier line", name, m)
				}
				// SPEC(sigsum policy): "Each defined name can be listed as a
				// member at most once."
				if seen[m] {
					return nil, errf("group %s lists %s more than once", name, m)
				}
				seen[m] = true
				n.members = append(n.members, i)
			}
			// SPEC(sigsum policy): "The any variant is a shorthand for k = 1,
			// and the all variant is a shorthand for k = n."
			switch threshold {
			case "any":
				n.k = 1
			case "all":
				n.k = len(n.members)
			default:
				k, err := parseThreshold(threshold)
				if err != nil {
					return nil, errf("group %s: %w", name, err)
				}
				if k > len(n.members) {
					return nil, errf("group %s: threshold %d is more than its %d members", name, k, len(n.members))
				}
				n.k = k
			}
			p.byName[name] = len(p.nodes)
			p.nodes = append(p.nodes, n)

		case "quorum":
			if len(fields) != 2 {
				return nil, errf("want \"quorum NAME\", got %d items", len(fields))
			}
			// SPEC(sigsum policy): "A policy file must include exactly one
			// quorum line."
			if quorumLine != 0 {
				return nil, errf("second quorum line (the first is line %d)", quorumLine)
			}
			quorumLine = lineNo
			// SPEC(sigsum policy): "To not require any cosignatures a all,
			// one can use the predefined name none"; otherwise "the name must
			// be properly defined on a line preceding the quorum definition."
			if fields[1] == "none" {
				break
			}
			i, ok := p.byName[fields[1]]
			if !ok {
				return nil, errf("quorum %q is not a witness or group defined on an earlier line", fields[1])
			}
			p.quorum = i

		default:
			return nil, errf("unknown keyword %q", fields[0])
		}
	}
	if quorumLine == 0 {
		return nil, &ParseError{Msg: "no quorum line (use \"quorum none\" to require no cosignatures)"}
	}
	p.quorumDesc = p.describeQuorum()
	return p, nil
}

func (p *Policy) checkNewName(name string) error {
	if keywords[name] {
		return fmt.Errorf("%q is a keyword and cannot be a name", name)
	}
	if _, ok := p.byName[name]; ok {
		return fmt.Errorf("name %q is already defined", name)
	}
	return nil
}

// parseThreshold parses a group threshold: a decimal number at least 1, with
// no sign and no leading zeros.
func parseThreshold(s string) (int, error) {
	if s == "" || s[0] < '1' || s[0] > '9' || len(s) > 4 {
		return 0, fmt.Errorf("threshold %q is not all, any, or a number from 1 to the number of members", s)
	}
	k, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("threshold %q is not all, any, or a number from 1 to the number of members", s)
	}
	return k, nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q is not an http or https URL", s)
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q has a query or fragment", s)
	}
	return nil
}

// vkeyKey returns the key material of a vkey (name+hash+base64(type||key))
// and its declared key hash.
func vkeyKey(vkey string) ([]byte, uint32) {
	_, rest, _ := strings.Cut(vkey, "+")
	hash16, key64, _ := strings.Cut(rest, "+")
	raw, err := base64.StdEncoding.DecodeString(key64)
	if err != nil {
		return nil, 0
	}
	h, err := strconv.ParseUint(hash16, 16, 32)
	if err != nil || len(hash16) != 8 {
		return raw, 0
	}
	return raw, uint32(h)
}

// cosignatureVerifier parses a witness vkey. It accepts only the
// cosignature/v1 signature types, and checks the vkey's key hash (which
// formats/note does not).
//
// SPEC(design.md 9)
func cosignatureVerifier(vkey string) (note.Verifier, []byte, error) {
	raw, hash := vkeyKey(vkey)
	if len(raw) == 0 {
		return nil, nil, fmt.Errorf("malformed verifier key %q", vkey)
	}
	switch raw[0] {
	case algCosignatureEd25519, algCosignatureMLDSA44:
	case algEd25519:
		return nil, nil, fmt.Errorf("verifier key %q has signature type 0x01 (a plain Ed25519 note key); witnesses need a cosignature/v1 key, type 0x04", vkey)
	default:
		return nil, nil, fmt.Errorf("verifier key %q has unsupported signature type 0x%02x (want 0x04 or 0x06)", vkey, raw[0])
	}
	v, err := fnote.NewVerifierForCosignatureV1(vkey)
	if err != nil {
		return nil, nil, fmt.Errorf("malformed verifier key %q: %w", vkey, err)
	}
	// SPEC(tlog-cosignature): "The key ID for Ed25519 cosignatures MUST be
	// computed as SHA-256(<name> || "\n" || 0x04 || 32-byte Ed25519
	// cosigner public key)[:4]".
	if v.KeyHash() != hash {
		return nil, nil, fmt.Errorf("verifier key %q: key hash %08x does not match the key (want %08x)", vkey, hash, v.KeyHash())
	}
	if raw[0] == algCosignatureEd25519 {
		// Same verdicts, with the key expanded once (fastverify.go).
		fv, err := newEd25519CosigVerifier(v.Name(), v.KeyHash(), raw[1:])
		if err != nil {
			return nil, nil, fmt.Errorf("malformed verifier key %q: %w", vkey, err)
		}
		return fv, raw, nil
	}
	return v, raw, nil
}

// Witnesses returns the policy's witnesses in the order of the policy file.
func (p *Policy) Witnesses() []*Witness {
	return append([]*Witness(nil), p.witnesses...)
}

// Logs returns the logs the policy lists, in the order of the policy file.
func (p *Policy) Logs() []*Log {
	return append([]*Log(nil), p.logs...)
}

// QuorumNone reports whether the policy requires no cosignatures at all.
func (p *Policy) QuorumNone() bool { return p.quorum < 0 }

// Quorum describes the quorum rule, for messages: for example
// "majority = 2 of {w1, w2, w3}".
func (p *Policy) Quorum() string { return p.quorumDesc }

// satisfied evaluates the quorum given which witnesses (by index) count as
// having cosigned. Nodes are evaluated once each, in definition order, so the
// cost is linear in the size of the policy even when groups share members.
//
// SPEC(design.md 9.1)
func (p *Policy) satisfied(cosigned func(w int) bool) bool {
	if p.quorum < 0 {
		return true
	}
	ok := make([]bool, p.quorum+1)
	for i := range ok {
		n := &p.nodes[i]
		if n.witness >= 0 {
			ok[i] = cosigned(n.witness)
			continue
		}
		c := 0
		for _, m := range n.members {
			if ok[m] {
				c++
			}
		}
		ok[i] = c >= n.k
	}
	return ok[p.quorum]
}

// relevant returns, for each witness, whether the quorum refers to it
// (directly or through groups).
func (p *Policy) relevant() []bool {
	rel := make([]bool, len(p.witnesses))
	if p.quorum < 0 {
		return rel
	}
	need := make([]bool, p.quorum+1)
	need[p.quorum] = true
	for i := p.quorum; i >= 0; i-- {
		if !need[i] {
			continue
		}
		n := &p.nodes[i]
		if n.witness >= 0 {
			rel[n.witness] = true
			continue
		}
		for _, m := range n.members {
			need[m] = true
		}
	}
	return rel
}

func (p *Policy) describeQuorum() string {
	if p.quorum < 0 {
		return "none"
	}
	q := &p.nodes[p.quorum]
	if q.witness >= 0 {
		return "witness " + q.name
	}
	// Describe every group the quorum depends on, outermost first.
	need := make([]bool, p.quorum+1)
	need[p.quorum] = true
	var parts []string
	for i := p.quorum; i >= 0; i-- {
		n := &p.nodes[i]
		if !need[i] || n.witness >= 0 {
			continue
		}
		names := make([]string, len(n.members))
		for j, m := range n.members {
			names[j] = p.nodes[m].name
			need[m] = true
		}
		parts = append(parts, fmt.Sprintf("%s = %d of {%s}", n.name, n.k, strings.Join(names, ", ")))
	}
	return strings.Join(parts, "; ")
}
