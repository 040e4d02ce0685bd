package api

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// verifyVector is the verification code test vector of design.md 13.5:
// Alice with an account key (deviceset-strict), Bob without one
// (deviceset-two).
func verifyVector(t *testing.T) (origin string, a, b VerifyParty) {
	t.Helper()
	devA, _ := testDevice("a", false)
	devB, _ := testDevice("b", true)
	acctPriv, _ := testKey("account")
	aliceIdx := seeded32("vrf index alice")
	setA := testSet(devA)
	setA.SignAccount(testOrigin, aliceIdx, 1, acctPriv)
	idA, err := IdentityOf(testOrigin, aliceIdx, 1, setA)
	if err != nil {
		t.Fatal(err)
	}
	setB := testSet(devA, devB)
	idB, err := IdentityOf(testOrigin, seeded32("vrf index bob"), 2, setB)
	if err != nil {
		t.Fatal(err)
	}
	return testOrigin, VerifyParty{"mailto:alice@example.com", idA}, VerifyParty{"tel:+14155550100", idB}
}

// TestVerificationCodeGolden pins the code of fixed keys in
// testdata/verifycode.golden, a text file another implementation can read:
// it checks the file's code from the file's own fields too.
func TestVerificationCodeGolden(t *testing.T) {
	origin, a, b := verifyVector(t)
	in, err := VerificationCodeInput(origin, a, b)
	if err != nil {
		t.Fatal(err)
	}
	code, err := VerificationCode(origin, a, b)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "# Verification code vector (design.md 13.5). Regenerate: go test ./api -run TestVerificationCodeGolden -update\n")
	fmt.Fprintf(&sb, "# party 1: account key of deviceset-strict; party 2: no account key, the digest of deviceset-two\n")
	fmt.Fprintf(&sb, "origin %s\n", origin)
	fmt.Fprintf(&sb, "handle %s\nidentity %x\n", a.Handle, a.Identity[:])
	fmt.Fprintf(&sb, "handle %s\nidentity %x\n", b.Handle, b.Identity[:])
	fmt.Fprintf(&sb, "input %x\n", in)
	fmt.Fprintf(&sb, "code %s\n", code)
	got := sb.String()
	path := filepath.Join("testdata", "verifycode.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(strings.Split(string(want), "\n"), strings.Split(got, "\n")); diff != "" {
		t.Errorf("verification code vector changed (-golden +now); if intended, update docs/design.md 13.5 and run with -update:\n%s", diff)
	}

	// From the file alone, as another implementation would.
	var fOrigin, fCode string
	var parties []VerifyParty
	sc := bufio.NewScanner(bytes.NewReader(want))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		switch k {
		case "origin":
			fOrigin = v
		case "handle":
			parties = append(parties, VerifyParty{Handle: v})
		case "identity":
			raw, err := hex.DecodeString(v)
			if err != nil || len(raw) != len(Identity{}) || len(parties) == 0 {
				t.Fatalf("identity line %q", v)
			}
			parties[len(parties)-1].Identity = Identity(raw)
		case "code":
			fCode = v
		}
	}
	if len(parties) != 2 {
		t.Fatalf("%d parties in the file", len(parties))
	}
	for _, order := range [][2]int{{0, 1}, {1, 0}} {
		c, err := VerificationCode(fOrigin, parties[order[0]], parties[order[1]])
		if err != nil || c != fCode {
			t.Errorf("code from the file's fields, order %v: %q, %v; the file says %q", order, c, err, fCode)
		}
	}
	if !regexp.MustCompile(`^[0-9]{5}( [0-9]{5}){5}$`).MatchString(fCode) {
		t.Errorf("code %q is not six groups of five digits", fCode)
	}
}

// TestVerificationCode: the code depends on the origin and on both
// handles and identities, and on nothing else; it is the same from either
// side; an account-key identity ignores the devices, a device-set identity
// does not.
func TestVerificationCode(t *testing.T) {
	origin, a, b := verifyVector(t)
	base, err := VerificationCode(origin, a, b)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := VerificationCode(origin, b, a); c != base {
		t.Errorf("the other side's code %q differs from %q", c, base)
	}
	flip := func(p VerifyParty) VerifyParty { p.Identity[32] ^= 1; return p }
	changed := map[string]func() (string, error){
		"other origin": func() (string, error) { return VerificationCode(origin+"2", a, b) },
		"a's identity": func() (string, error) { return VerificationCode(origin, flip(a), b) },
		"b's identity": func() (string, error) { return VerificationCode(origin, a, flip(b)) },
		"a's handle": func() (string, error) {
			a2 := a
			a2.Handle = "mailto:alicia@example.com"
			return VerificationCode(origin, a2, b)
		},
		"identities swap": func() (string, error) {
			a2, b2 := a, b
			a2.Identity, b2.Identity = b.Identity, a.Identity
			return VerificationCode(origin, a2, b2)
		},
	}
	for name, f := range changed {
		c, err := f()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c == base {
			t.Errorf("%s: the code did not change", name)
		}
	}

	// Identities: the account key alone, whatever the devices; the whole
	// set without one.
	devA, _ := testDevice("a", false)
	devB, _ := testDevice("b", true)
	acct, acctPub := testKey("account")
	idx := seeded32("vrf index")
	one, two := testSet(devA), testSet(devA, devB)
	one.SignAccount(testOrigin, idx, 1, acct)
	two.SignAccount(testOrigin, idx, 2, acct)
	i1, err1 := IdentityOf(testOrigin, idx, 1, one)
	i2, err2 := IdentityOf(testOrigin, idx, 2, two)
	if err1 != nil || err2 != nil || i1 != i2 || i1.Kind() != IdentityAccountKey || [32]byte(i1[1:]) != acctPub {
		t.Errorf("account-key identities %v (%v), %v (%v): want the account key for both", i1, err1, i2, err2)
	}
	if _, err := IdentityOf(testOrigin, idx, 3, two); !errors.Is(err, ErrBadSignature) {
		t.Errorf("account signature for another version: %v", err)
	}
	one.Account, two.Account = nil, nil
	i1, err1 = IdentityOf(testOrigin, idx, 1, one)
	i2, err2 = IdentityOf(testOrigin, idx, 2, two)
	if err1 != nil || err2 != nil || i1 == i2 || i1.Kind() != IdentityDeviceSet || i2.Kind() != IdentityDeviceSet {
		t.Errorf("device-set identities %v (%v), %v (%v): want two different ones", i1, err1, i2, err2)
	}
	// A swapped HPKE key under the same signing key changes it.
	swapped := testSet(devA)
	swapped.Devices[0].HPKEKey = x25519Key("ghost")
	if i3, err := IdentityOf(testOrigin, idx, 1, swapped); err != nil || i3 == i1 {
		t.Errorf("an HPKE key swapped under the same signing key: identity %v, %v", i3, err)
	}
	if _, err := IdentityOf(testOrigin, idx, 1, testSet()); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("tombstone: %v", err)
	}
}

func TestVerificationCodeRefused(t *testing.T) {
	origin, a, b := verifyVector(t)
	cases := map[string]func() (string, error){
		"same handle": func() (string, error) { return VerificationCode(origin, a, a) },
		"not canonical": func() (string, error) {
			a2 := a
			a2.Handle = "Alice@example.com"
			return VerificationCode(origin, a2, b)
		},
		"no identity":         func() (string, error) { a2 := a; a2.Identity = Identity{}; return VerificationCode(origin, a2, b) },
		"unknown kind":        func() (string, error) { a2 := a; a2.Identity[0] = 3; return VerificationCode(origin, a2, b) },
		"empty origin":        func() (string, error) { return VerificationCode("", a, b) },
		"origin too long":     func() (string, error) { return VerificationCode(strings.Repeat("o", 1<<16), a, b) },
		"not a handle at all": func() (string, error) { a2 := a; a2.Handle = ""; return VerificationCode(origin, a2, b) },
	}
	for name, f := range cases {
		if c, err := f(); !errors.Is(err, ErrVerificationCode) || c != "" {
			t.Errorf("%s: %q, %v; want ErrVerificationCode", name, c, err)
		}
	}
}

func TestParseVerificationCode(t *testing.T) {
	const want = "01234 56789 01234 56789 01234 56789"
	for _, in := range []string{
		want,
		"012345678901234567890123456789",
		"01234-56789-01234-56789-01234-56789",
		"  01234 56789  01234 56789 01234 56789 ",
	} {
		if got, err := ParseVerificationCode(in); err != nil || got != want {
			t.Errorf("ParseVerificationCode(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{
		"",
		"01234 56789 01234 56789 01234 5678",   // 29 digits
		"01234 56789 01234 56789 01234 567890", // 31
		"01234 56789 01234 56789 01234 5678x",  // a letter
		"01234\t56789 01234 56789 01234 56789", // a tab
		"０1234 56789 01234 56789 01234 56789",  // a full-width digit
		strings.Repeat(" ", 300) + want,        // too long
	} {
		if got, err := ParseVerificationCode(in); !errors.Is(err, ErrVerificationCode) || got != "" {
			t.Errorf("ParseVerificationCode(%q) = %q, %v; want ErrVerificationCode", in, got, err)
		}
	}
}

// FuzzParseVerificationCode: the parser never panics, accepts only what
// renders as 30 digits in six groups, and is idempotent.
func FuzzParseVerificationCode(f *testing.F) {
	f.Add("01234 56789 01234 56789 01234 56789")
	f.Add("012345678901234567890123456789")
	f.Add("0-1-2")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseVerificationCode(s)
		if err != nil {
			if !errors.Is(err, ErrVerificationCode) || c != "" {
				t.Fatalf("%q: %q, %v", s, c, err)
			}
			return
		}
		if !regexp.MustCompile(`^[0-9]{5}( [0-9]{5}){5}$`).MatchString(c) {
			t.Fatalf("%q parsed to %q", s, c)
		}
		if c2, err := ParseVerificationCode(c); err != nil || c2 != c {
			t.Fatalf("not idempotent: %q to %q, then %q, %v", s, c, c2, err)
		}
	})
}
