package api

import (
	"errors"
	"fmt"
)

// ErrMalformed is wrapped by every [*FormatError]: the bytes are not the
// canonical encoding of a value, or a value cannot be encoded canonically.
var ErrMalformed = errors.New("api: malformed encoding")

// ErrInvalidHandle is wrapped by every [*HandleError].
var ErrInvalidHandle = errors.New("api: invalid handle")

// ErrBadSignature reports a signature that does not verify.
var ErrBadSignature = errors.New("api: signature does not verify")

// ErrUnauthorized is wrapped by every [*AuthError]: a change record that the
// authorization rules of docs/design.md do not allow.
var ErrUnauthorized = errors.New("api: change not authorized")

// FormatError describes why some bytes are not a canonical encoding (when
// parsing) or why a value has no canonical encoding (when marshalling).
type FormatError struct {
	// What is being encoded or decoded: "change record", "epoch record",
	// "device set" or "entry".
	What string
	// Offset is the byte offset at which parsing failed, or -1 when the
	// error comes from marshalling or concerns the whole input.
	Offset int
	// Reason says what is wrong, in words.
	Reason string
}

func (e *FormatError) Error() string {
	if e.Offset < 0 {
		return fmt.Sprintf("api: malformed %s: %s", e.What, e.Reason)
	}
	return fmt.Sprintf("api: malformed %s at byte %d: %s", e.What, e.Offset, e.Reason)
}

// Unwrap returns [ErrMalformed].
func (e *FormatError) Unwrap() error { return ErrMalformed }

func formatErr(what string, off int, format string, args ...any) error {
	return &FormatError{What: what, Offset: off, Reason: fmt.Sprintf(format, args...)}
}

// HandleError reports an input that is not a valid handle, and why.
type HandleError struct {
	Input  string
	Reason string
}

func (e *HandleError) Error() string {
	return fmt.Sprintf("api: invalid handle %q: %s", e.Input, e.Reason)
}

// Unwrap returns [ErrInvalidHandle].
func (e *HandleError) Unwrap() error { return ErrInvalidHandle }

// AuthError reports a change record that breaks an authorization rule. Rule
// names the rule of docs/design.md section "Authorization rules" (for
// example "R3 version"), so that directory and auditor reports agree.
type AuthError struct {
	Rule   string
	Reason string
	// Err is ErrBadSignature when the signature failed, else nil.
	Err error
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("api: change not authorized (%s): %s", e.Rule, e.Reason)
}

// Unwrap returns [ErrUnauthorized] and, for signature failures,
// [ErrBadSignature].
func (e *AuthError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrUnauthorized, e.Err}
	}
	return []error{ErrUnauthorized}
}
