package ktctl

import (
	"errors"
	"fmt"
)

// ErrVerification is wrapped by every [*VerifyError].
var ErrVerification = errors.New("verification failed")

// A VerifyError reports a check that failed: the log or the directory
// served something that does not verify against the pinned keys or the
// verified checkpoint.
type VerifyError struct {
	// What names the check, for example "checkpoint signature" or
	// "inclusion proof".
	What string
	// Detail says what was found.
	Detail string
	// Err is the underlying error, if any.
	Err error
}

func (e *VerifyError) Error() string {
	s := e.What + ": " + e.Detail
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns ErrVerification and the underlying error.
func (e *VerifyError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrVerification}
	}
	return []error{ErrVerification, e.Err}
}

func verifyErr(what string, err error, format string, args ...any) *VerifyError {
	return &VerifyError{What: what, Detail: fmt.Sprintf(format, args...), Err: err}
}

// ErrArgument is wrapped by errors about the caller's input that only the
// log's state reveals, such as an index beyond the checkpoint.
var ErrArgument = errors.New("invalid argument")

func argErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrArgument, fmt.Sprintf(format, args...))
}
