package log

import "fmt"

// errorf wraps a sentinel error with a message: errors.Is(err, sentinel)
// holds for the result.
func errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}

// Errorf is errorf for backends: it wraps one of this package's sentinel
// errors with a message.
func Errorf(sentinel error, format string, args ...any) error {
	return errorf(sentinel, format, args...)
}
