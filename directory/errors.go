package directory

import (
	"errors"
	"fmt"
)

// Domain errors. Every error a method of [Directory] returns for a request
// wraps exactly one of these sentinels, so that the transport maps it to a
// status code in one switch (directory/grpcserver). Test with errors.Is, and
// switch on these sentinels before any other: an [*Error] may also wrap the
// cause (for example an *api.AuthError, which wraps api.ErrUnauthorized).
var (
	// ErrInvalidArgument: the request is malformed or breaks a limit that
	// no retry can satisfy: bad bytes, a handle that does not normalise,
	// a record whose index is not the handle's VRF index, a commitment
	// that does not open.
	ErrInvalidArgument = errors.New("directory: invalid argument")
	// ErrUnauthorized: the change is well formed but not allowed: a bad
	// signature, a signer that is not an authorizer, a bad enrollment
	// credential, a change kind that this endpoint does not accept,
	// authorizers that do not match the device set (R7), an account ID
	// changed outside enrollment and recovery.
	ErrUnauthorized = errors.New("directory: unauthorized")
	// ErrUnauthenticated: a request that needs the owner's authorization
	// (a Monitor request without records_only, design.md 13.4) carries
	// none, or one that is malformed, outside the freshness window or
	// badly signed. A well-formed authorization by a key that is not a
	// current authorizer of the index is ErrUnauthorized.
	ErrUnauthenticated = errors.New("directory: unauthenticated")
	// ErrStaleVersion: the change does not continue the handle's latest
	// record (rules R2 and R3): a replay, a change built on an old
	// version, or a version out of order. Look the handle up and rebuild
	// the change.
	ErrStaleVersion = errors.New("directory: stale or replayed version")
	// ErrNotFound: what the request names does not exist.
	ErrNotFound = errors.New("directory: not found")
	// ErrOutOfRange: a size or version beyond what the current epoch
	// proves (for example a known size larger than the epoch checkpoint),
	// or a log index or size beyond the latest checkpoint.
	ErrOutOfRange = errors.New("directory: out of range")
	// ErrUnavailable: the directory cannot answer now: no epoch is
	// published yet, it is closing, or its sequencer stopped after a
	// fatal error (then only a restart helps; the log says why).
	ErrUnavailable = errors.New("directory: unavailable")
	// ErrResourceExhausted: a request over a size limit, or too many
	// changes queued; retry later or send less.
	ErrResourceExhausted = errors.New("directory: resource exhausted")
)

// Error is a domain error: one of the sentinels above (Kind), what went
// wrong, and the underlying cause if there is one (for example an
// *api.AuthError naming the broken rule).
type Error struct {
	Kind   error
	Detail string
	Err    error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%v: %s: %v", e.Kind, e.Detail, e.Err)
	}
	return fmt.Sprintf("%v: %s", e.Kind, e.Detail)
}

// Unwrap returns the sentinel and the cause.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

func errorf(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Detail: fmt.Sprintf(format, args...)}
}

func wrapf(kind, cause error, format string, args ...any) error {
	return &Error{Kind: kind, Detail: fmt.Sprintf(format, args...), Err: cause}
}
