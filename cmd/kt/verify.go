package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/client"
)

// verify is kt verify (design.md 13.5): with HANDLE only, print the
// verification code and what it is derived from; with a code after it,
// confirm it and pin the contact; with --forget, remove the pin.
//
// SPEC(design.md 13.5)
func (a *app) verify(ctx context.Context, args []string) error {
	const form = "verify HANDLE [CODE] | verify --forget HANDLE"
	if len(args) == 0 || a.flags.forget && len(args) != 1 {
		return usagef("usage: kt %s", form)
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	handle := args[0]
	if a.flags.forget {
		had, err := c.Unverify(ctx, handle)
		if err != nil {
			return err
		}
		return a.output(map[string]any{"handle": handle, "was_verified": had}, func(w io.Writer) {
			if had {
				fmt.Fprintf(w, "%s: verification removed; run kt verify %s to compare a new code\n", handle, handle)
			} else {
				fmt.Fprintf(w, "%s was not verified\n", handle)
			}
		})
	}
	if len(args) == 1 {
		v, err := c.VerificationCode(ctx, handle)
		if err != nil {
			return err
		}
		return a.output(verificationJSON(v), func(w io.Writer) {
			fmt.Fprintf(w, "verification code of %s and %s (you):\n\n    %s\n\n", v.Contact.Handle, v.Own.Handle, v.Code)
			printDerivation(w, v)
			if v.Pin != nil {
				fmt.Fprintf(w, "%s is verified (since %s): this code is the one you compared.\n", v.Contact.Handle, v.Pin.Time.Format(time.DateOnly))
				return
			}
			fmt.Fprintf(w, "Compare it with the code %s's device shows for you, in person or on a call you trust.\n", v.Contact.Handle)
			fmt.Fprintf(w, "If they match: kt verify %s %s\n", v.Contact.Handle, strings.ReplaceAll(v.Code, " ", "-"))
		})
	}
	// The code may be one argument or its six groups as six.
	v, err := c.ConfirmVerification(ctx, handle, strings.Join(args[1:], " "))
	if err != nil {
		return err
	}
	return a.output(verificationJSON(v), func(w io.Writer) {
		fmt.Fprintf(w, "%s verified: the codes match; pinned %s\n", v.Contact.Handle, v.Contact.Identity)
		fmt.Fprintf(w, "from now on a change of it is refused (lookup, encrypt) and an alert in kt contacts check and kt monitor\n")
	})
}

// printDerivation says what a code is derived from.
func printDerivation(w io.Writer, v *client.Verification) {
	fmt.Fprintln(w, "derived from the logged identities (design.md 13.5):")
	for _, p := range []struct {
		party   api.VerifyParty
		version uint64
		who     string
	}{{v.Contact, v.ContactVersion, ""}, {v.Own, v.OwnVersion, ", you"}} {
		fmt.Fprintf(w, "  %s  %s (version %d%s)\n", p.party.Handle, p.party.Identity, p.version, p.who)
		if p.party.Identity.Kind() == api.IdentityDeviceSet {
			fmt.Fprintf(w, "    no account key: the code changes whenever a device of %s changes\n", p.party.Handle)
		}
	}
}

// verificationJSON is how kt verify shows a code in JSON.
func verificationJSON(v *client.Verification) map[string]any {
	j := map[string]any{
		"handle": v.Contact.Handle, "own": v.Own.Handle, "code": v.Code,
		"identity": hex.EncodeToString(v.Contact.Identity[:]), "own_identity": hex.EncodeToString(v.Own.Identity[:]),
		"version": v.ContactVersion, "own_version": v.OwnVersion, "epoch": v.Epoch, "verified": v.Pin != nil,
	}
	if v.Pin != nil {
		j["verified_at"] = v.Pin.Time
	}
	return j
}

// contactHandles returns the handles of the remembered and the verified
// contacts, in order.
func contactHandles(cs map[string]*client.Contact, vs map[string]*client.VerifiedPin) []string {
	hs := slices.Collect(maps.Keys(cs))
	for h := range vs {
		if cs[h] == nil {
			hs = append(hs, h)
		}
	}
	slices.Sort(hs)
	return hs
}

// verifiedJSON is a contact's verification pin in kt contacts.
type verifiedJSON struct {
	Verified   bool       `json:"verified"`
	Identity   string     `json:"identity,omitempty"`
	VerifiedAt *time.Time `json:"verified_at,omitempty"`
}

func newVerifiedJSON(v *client.VerifiedPin) verifiedJSON {
	if v == nil {
		return verifiedJSON{}
	}
	t := v.Time
	return verifiedJSON{Verified: true, Identity: v.Identity.String(), VerifiedAt: &t}
}

// text is the pin as kt contacts prints it after the handle.
func (v verifiedJSON) text() string {
	if !v.Verified {
		return "  not verified (kt verify)"
	}
	return fmt.Sprintf("  VERIFIED %s on %s", v.Identity, v.VerifiedAt.Format(time.DateOnly))
}
