package api

import (
	"bytes"
	"errors"
	"testing"
	"unicode/utf8"
)

// FuzzParseEntry checks that ParseEntry never panics, fails only with
// *FormatError, and that what it accepts re-encodes to the same bytes.
func FuzzParseEntry(f *testing.F) {
	for _, c := range goldenCases() {
		f.Add(c.data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEntry(b)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not a *FormatError", err)
			}
			return
		}
		out, err := e.MarshalBinary()
		if err != nil {
			t.Fatalf("parsed entry does not marshal: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("non-canonical input accepted:\n in %x\nout %x", b, out)
		}
		again, err := ParseEntry(out)
		if err != nil || again.Type() != e.Type() {
			t.Fatalf("re-parse: %v", err)
		}
	})
}

// FuzzParseDeviceSet is FuzzParseEntry for device sets.
func FuzzParseDeviceSet(f *testing.F) {
	for _, c := range goldenCases() {
		f.Add(c.data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseDeviceSet(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		out, err := s.MarshalBinary()
		if err != nil {
			t.Fatalf("parsed device set does not marshal: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("non-canonical input accepted:\n in %x\nout %x", b, out)
		}
		if _, err := ParseDeviceSet(out); err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		as := s.Authorizers()
		if len(as) > MaxAuthorizers {
			t.Fatalf("%d authorizers", len(as))
		}
		r := &ChangeRecord{Version: 1, Kind: AuthEnroll, Authorizers: as}
		if _, err := r.MarshalBinary(); err != nil {
			t.Fatalf("the set's authorizers are not canonical: %v", err)
		}
	})
}

// FuzzNormalizeHandle checks that a normalised handle is a fixed point, has
// one of the two schemes, and is valid UTF-8.
func FuzzNormalizeHandle(f *testing.F) {
	for _, s := range []string{
		"+1 (415) 555-0100", "tel:+14155550100", "Alice@Example.com",
		"mailto:bob@bücher.example", "jo\u0308rg@example.de", "用户@例子.广告",
		"alice@localhost", "+0", "a@b.c", "İ@example.com", "ǅ@example.com",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		h, err := NormalizeHandle(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidHandle) {
				t.Fatalf("error %v does not wrap ErrInvalidHandle", err)
			}
			return
		}
		if !utf8.ValidString(h) {
			t.Fatalf("%q normalised to invalid UTF-8 %q", in, h)
		}
		if !(len(h) > 5 && h[:5] == "tel:+") && !(len(h) > 7 && h[:7] == "mailto:") {
			t.Fatalf("%q normalised to %q without a scheme", in, h)
		}
		again, err := NormalizeHandle(h)
		if err != nil {
			t.Fatalf("%q normalised to %q, which is rejected: %v", in, h, err)
		}
		if again != h {
			t.Fatalf("not idempotent: %q -> %q -> %q", in, h, again)
		}
	})
}

// FuzzParseRotationRecord is FuzzParseEntry for rotation records: no
// panic, only *FormatError, canonical re-encoding, and VerifyRotation on
// any parsed record returns nil or a typed error without panicking.
func FuzzParseRotationRecord(f *testing.F) {
	for _, c := range rotationGoldenCases() {
		f.Add(c.data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRotationRecord(b)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not a *FormatError", err)
			}
			return
		}
		out, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("parsed record does not marshal: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("non-canonical input accepted:\n in %x\nout %x", b, out)
		}
		if err := VerifyRotation("example.com/kt", r, nil); err != nil && !errors.Is(err, ErrBadRotation) {
			t.Fatalf("VerifyRotation: untyped error %v", err)
		}
	})
}
