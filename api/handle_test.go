package api

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizeHandle(t *testing.T) {
	valid := []struct{ in, want string }{
		{"+14155550100", "tel:+14155550100"},
		{"+1 (415) 555-0100", "tel:+14155550100"},
		{"+1.415.555.0100", "tel:+14155550100"},
		{"  +44 20 7946 0958 ", "tel:+442079460958"},
		{"tel:+1-415-555-0100", "tel:+14155550100"},
		{"TEL:+14155550100", "tel:+14155550100"},
		{"+12345678", "tel:+12345678"},
		{"+123456789012345", "tel:+123456789012345"},
		{"tel:+14155550100", "tel:+14155550100"},
		{"alice@example.com", "mailto:alice@example.com"},
		{"Alice@Example.COM", "mailto:alice@example.com"},
		{"mailto:alice@example.com", "mailto:alice@example.com"},
		{"MailTo:Bob.Smith+tag@Mail.Example.org", "mailto:bob.smith+tag@mail.example.org"},
		{"o'brien@example.ie", "mailto:o'brien@example.ie"},
		{"user@bücher.example", "mailto:user@xn--bcher-kva.example"},
		{"user@BÜCHER.example", "mailto:user@xn--bcher-kva.example"},
		{"user@xn--bcher-kva.example", "mailto:user@xn--bcher-kva.example"},
		{"JÖRG@example.de", "mailto:jörg@example.de"},
		{"jo\u0308rg@example.de", "mailto:j\u00f6rg@example.de"}, // decomposed ö becomes NFC
		{"用户@例子.广告", "mailto:用户@xn--fsqu00a.xn--4rr70v"},
	}
	for _, tt := range valid {
		t.Run("ok "+tt.in, func(t *testing.T) {
			got, err := NormalizeHandle(tt.in)
			if err != nil {
				t.Fatalf("NormalizeHandle(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("NormalizeHandle(%q) = %q, want %q", tt.in, got, tt.want)
			}
			again, err := NormalizeHandle(got)
			if err != nil || again != got {
				t.Fatalf("not idempotent: NormalizeHandle(%q) = %q, %v", got, again, err)
			}
		})
	}
	invalid := []struct{ in, reason string }{
		{"", "empty"},
		{"   ", "empty"},
		{"4155550100", "country code"},
		{"(415) 555-0100", "country code"},
		{"+1234567", "at least 8 digits"},
		{"+1234567890123456", "at most 15 digits"},
		{"+04155550100", "start with 0"},
		{"tel:14155550100", "starting with +"},
		{"+1 415 555 0100;ext=12", "extensions"},
		{"+1415555O100", "not allowed in a phone number"},
		{"+１４１５５５５０１００", "ASCII digits"},
		{"+1/415/555/0100", "not allowed"},
		{"alice", "neither"},
		{"sip:alice@example.com", "not allowed in the local part"},
		{"@example.com", "empty local part"},
		{"alice@", "empty domain"},
		{"alice@localhost", "no dot"},
		{"alice@@example.com", "more than one @"},
		{"a@b@example.com", "more than one @"},
		{".alice@example.com", "dot"},
		{"alice.@example.com", "dot"},
		{"al..ice@example.com", "dot"},
		{"\"alice\"@example.com", "quoted"},
		{"alice smith@example.com", "not allowed in the local part"},
		{"alice@[192.0.2.1]", "address literals"},
		{"alice@192.0.2.1", "numeric"},
		{"alice@example.com.", "ends with a dot"},
		{"alice@exa_mple.com", "invalid domain"},
		{"alice@-example.com", "invalid domain"},
		{"alice@example..com", "invalid domain"},
		{strings.Repeat("a", 65) + "@example.com", "local part longer"},
		{"alice@" + strings.Repeat("a", 64) + ".com", "invalid domain"},
		{"alice\x00@example.com", "not allowed"},
		{"\xff@example.com", "UTF-8"},
		{strings.Repeat("+1", 600), "longer than"},
		{"mailto:", "needs an @"},
	}
	for _, tt := range invalid {
		t.Run("bad "+tt.in, func(t *testing.T) {
			got, err := NormalizeHandle(tt.in)
			var he *HandleError
			if !errors.As(err, &he) || !errors.Is(err, ErrInvalidHandle) {
				t.Fatalf("NormalizeHandle(%q) = %q, %v; want *HandleError", tt.in, got, err)
			}
			if !strings.Contains(he.Reason, tt.reason) {
				t.Errorf("reason %q does not mention %q", he.Reason, tt.reason)
			}
		})
	}
}
