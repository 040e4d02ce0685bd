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
// example [RuleVersion], "R2 version"), so that directory and auditor
// reports agree.
type AuthError struct {
	Rule   Rule
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

// EpochError reports a log entry that breaks a rule of the log's epoch
// sequence or map (docs/design.md sections 7 and 14), as [CheckEpoch] finds
// it. Anyone can reproduce it by replaying the log up to Index.
type EpochError struct {
	// Index is the log index of the entry.
	Index uint64
	// Rule is one of RuleFirstEntry, RuleEpochNumber, RuleEpochLogSize,
	// RuleEpochTimestamp, RuleMapRoot and RuleMapSize.
	Rule Rule
	// Reason says what the entry claims and what was expected, for people.
	Reason string
}

func (e *EpochError) Error() string {
	return fmt.Sprintf("api: log entry %d breaks rule %s: %s", e.Index, e.Rule, e.Reason)
}
