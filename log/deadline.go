package log

import (
	"context"
	"time"
)

type queueDeadlineKey struct{}

// WithQueueDeadline returns a context under which an [Appender] hands no
// entry to its storage after t; entries it has handed over may still be
// logged, and waiting for them is not bounded by t. A replicated
// directory's writer passes its lease's deadline, so that a writer that
// lost its lease stops appending before its successor may start
// (docs/design.md section 17.1). Backends with a single writer by
// construction (log/posix) ignore it; log/trillian bounds its QueueLeaf
// calls by it.
//
// SPEC(design.md 17.1)
func WithQueueDeadline(ctx context.Context, t time.Time) context.Context {
	return context.WithValue(ctx, queueDeadlineKey{}, t)
}

// QueueDeadline returns the deadline set by [WithQueueDeadline], if any.
func QueueDeadline(ctx context.Context) (time.Time, bool) {
	t, ok := ctx.Value(queueDeadlineKey{}).(time.Time)
	return t, ok
}
