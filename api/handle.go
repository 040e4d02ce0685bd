package api

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

// Handle schemes.
const (
	TelScheme    = "tel:"
	MailtoScheme = "mailto:"
)

// Limits of handles.
const (
	maxHandleInput   = 1024 // bytes of input considered at all
	minPhoneDigits   = 8
	maxPhoneDigits   = 15 // ITU-T E.164
	maxLocalPartLen  = 64 // RFC 5321 section 4.5.3.1.1
	maxDomainLen     = 253
	maxAddressLength = 254 // RFC 5321 path limit without the angle brackets
)

// idnaProfile maps a domain to its ASCII form: UTS #46 nontransitional
// processing with STD3 rules, hyphen, joiner and bidi checks and DNS length
// verification.
var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.Transitional(false),
	idna.BidiRule(),
	idna.VerifyDNSLength(true),
)

// NormalizeHandle returns the canonical form of a handle, the only form that
// the VRF, the directory and the client use:
//
//   - a phone number becomes "tel:+" followed by its 8 to 15 E.164 digits,
//     the first of which is not 0. Accepted inputs: "+14155550100",
//     "+1 (415) 555-0100", "tel:+1-415-555-0100" (spaces, hyphens, dots and
//     parentheses are dropped). A number without its "+" and country code is
//     rejected: it is ambiguous.
//   - an email address becomes "mailto:" followed by the address in Unicode
//     NFC, lowercased, with its domain in IDNA ASCII form. Accepted inputs:
//     "Alice@Example.com", "mailto:alice@example.com". The local part is a
//     dot-atom (RFC 5322 atext, plus non-ASCII letters, marks and digits);
//     quoted local parts, comments and address literals are rejected.
//
// Anything else fails with a [*HandleError] that says why. NormalizeHandle is
// idempotent: a canonical handle normalises to itself.
//
// SPEC(design.md 3.1)
func NormalizeHandle(s string) (string, error) {
	in := s
	fail := func(format string, args ...any) (string, error) {
		if len(in) > 64 {
			in = in[:64] + "..."
		}
		return "", &HandleError{Input: in, Reason: fmt.Sprintf(format, args...)}
	}
	if len(s) > maxHandleInput {
		return fail("longer than %d bytes", maxHandleInput)
	}
	if !utf8.ValidString(s) {
		return fail("not valid UTF-8")
	}
	s = strings.TrimSpace(s)
	switch {
	case hasPrefixFold(s, TelScheme):
		rest := s[len(TelScheme):]
		if !strings.HasPrefix(rest, "+") {
			return fail("a tel: handle must be a global number starting with +")
		}
		return normalizePhone(rest, fail)
	case hasPrefixFold(s, MailtoScheme):
		return normalizeEmail(s[len(MailtoScheme):], fail)
	case strings.HasPrefix(s, "+"):
		return normalizePhone(s, fail)
	case strings.Contains(s, "@"):
		return normalizeEmail(s, fail)
	case s == "":
		return fail("empty")
	case strings.IndexFunc(s, func(r rune) bool { return !isPhoneChar(r) }) < 0:
		return fail("a phone number needs its country code: write it as +<country code><number>")
	default:
		return fail("neither a phone number (+<country code><number>) nor an email address")
	}
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func isPhoneChar(r rune) bool {
	return r >= '0' && r <= '9' || r == ' ' || r == '-' || r == '.' || r == '(' || r == ')'
}

// normalizePhone handles "+" followed by digits and visual separators.
func normalizePhone(s string, fail func(string, ...any) (string, error)) (string, error) {
	var digits []byte
	for _, r := range s[1:] {
		switch {
		case r >= '0' && r <= '9':
			digits = append(digits, byte(r))
		case r == ' ' || r == '-' || r == '.' || r == '(' || r == ')':
		case r == ';':
			return fail("phone number parameters and extensions are not supported")
		case unicode.IsDigit(r):
			return fail("phone numbers use ASCII digits only, found %q", r)
		default:
			return fail("character %q is not allowed in a phone number", r)
		}
	}
	switch {
	case len(digits) < minPhoneDigits:
		return fail("a phone number has at least %d digits after the +, this one has %d", minPhoneDigits, len(digits))
	case len(digits) > maxPhoneDigits:
		return fail("an E.164 number has at most %d digits after the +, this one has %d", maxPhoneDigits, len(digits))
	case digits[0] == '0':
		return fail("country codes do not start with 0")
	}
	return TelScheme + "+" + string(digits), nil
}

// normalizeEmail handles an address without its scheme.
func normalizeEmail(s string, fail func(string, ...any) (string, error)) (string, error) {
	s = norm.NFC.String(strings.ToLower(norm.NFC.String(s)))
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return fail("an email address needs an @")
	}
	local, domain := s[:at], s[at+1:]
	switch {
	case local == "":
		return fail("empty local part before the @")
	case len(local) > maxLocalPartLen:
		return fail("local part longer than %d bytes", maxLocalPartLen)
	case strings.HasPrefix(local, "\""):
		return fail("quoted local parts are not supported")
	case local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, ".."):
		return fail("the local part has a leading, trailing or double dot")
	}
	for _, r := range local {
		if r == '@' {
			return fail("more than one @")
		}
		if !isLocalChar(r) {
			return fail("character %q is not allowed in the local part of an email address", r)
		}
	}
	if domain == "" {
		return fail("empty domain after the @")
	}
	if strings.HasPrefix(domain, "[") {
		return fail("address literals are not supported")
	}
	if strings.HasSuffix(domain, ".") {
		return fail("the domain ends with a dot")
	}
	ascii, err := idnaProfile.ToASCII(domain)
	if err != nil {
		return fail("invalid domain: %v", err)
	}
	ascii = strings.ToLower(ascii)
	labels := strings.Split(ascii, ".")
	if len(labels) < 2 {
		return fail("the domain %q has no dot", ascii)
	}
	for _, l := range labels {
		if err := checkLDHLabel(l); err != "" {
			return fail("invalid domain label %q: %s", l, err)
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return fail("the top-level domain is numeric (IP addresses are not supported)")
	}
	if len(ascii) > maxDomainLen {
		return fail("domain longer than %d bytes", maxDomainLen)
	}
	addr := local + "@" + ascii
	if len(addr) > maxAddressLength {
		return fail("address longer than %d bytes", maxAddressLength)
	}
	return MailtoScheme + addr, nil
}

// isLocalChar reports whether r may appear in a dot-atom local part: RFC 5322
// atext, the dot, or (RFC 6531) a non-ASCII letter, mark or digit.
func isLocalChar(r rune) bool {
	if r < utf8.RuneSelf {
		return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			strings.ContainsRune("!#$%&'*+-/=?^_`{|}~.", r)
	}
	return unicode.IsLetter(r) || unicode.IsMark(r) || unicode.IsDigit(r)
}

// checkLDHLabel checks a DNS label in ASCII form: letters, digits and
// hyphens, 1 to 63 bytes, no hyphen at either end.
func checkLDHLabel(l string) string {
	if l == "" {
		return "empty label"
	}
	if len(l) > 63 {
		return "longer than 63 bytes"
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return "starts or ends with a hyphen"
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Sprintf("character %q is not a letter, digit or hyphen", c)
		}
	}
	return ""
}
