package grpcserver

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/log"
)

// Code returns the gRPC code for a handler's error. It is the one place
// where domain errors meet transport codes; see the package documentation
// for the choices. The sentinels of package directory come first (its
// errors may also wrap a cause, such as an *api.AuthError); the api and log
// sentinels cover handlers that return those unwrapped.
func Code(err error) codes.Code {
	var authErr *api.AuthError
	switch {
	case err == nil:
		return codes.OK

	case isStatus(err, codes.Unimplemented):
		// Returned by the generated Unimplemented* stubs.
		return codes.Unimplemented

	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded

	case errors.Is(err, directory.ErrStaleVersion):
		// A failed read-modify-write: look up, rebuild, retry.
		return codes.Aborted
	case errors.Is(err, directory.ErrInvalidArgument):
		return codes.InvalidArgument
	case errors.Is(err, directory.ErrUnauthorized):
		return codes.PermissionDenied
	case errors.Is(err, directory.ErrUnauthenticated):
		return codes.Unauthenticated
	case errors.Is(err, directory.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, directory.ErrOutOfRange):
		return codes.OutOfRange
	case errors.Is(err, directory.ErrResourceExhausted):
		return codes.ResourceExhausted
	case errors.Is(err, directory.ErrUnavailable):
		return codes.Unavailable

	// Stale or replayed changes: checked before the general authorization
	// errors that also wrap them.
	case errors.As(err, &authErr) && (authErr.Rule == api.RuleVersion || authErr.Rule == api.RulePrev):
		return codes.Aborted
	case errors.Is(err, api.ErrMalformed),
		errors.Is(err, api.ErrInvalidHandle),
		errors.Is(err, api.ErrCommitment),
		errors.Is(err, log.ErrInvalidEntry):
		return codes.InvalidArgument
	case errors.Is(err, api.ErrUnauthorized),
		errors.Is(err, api.ErrBadSignature):
		return codes.PermissionDenied
	case errors.Is(err, log.ErrOutOfRange):
		// Beyond the latest checkpoint: valid once the log grows.
		return codes.OutOfRange
	case errors.Is(err, log.ErrNoCheckpoint),
		errors.Is(err, log.ErrPushback),
		errors.Is(err, log.ErrClosed):
		return codes.Unavailable
	}
	return codes.Internal
}

// isStatus reports whether err itself (not something it wraps, which could
// come from a backend such as Trillian) is a gRPC status with code c.
func isStatus(err error, c codes.Code) bool {
	s, ok := err.(interface{ GRPCStatus() *status.Status })
	return ok && s.GRPCStatus().Code() == c
}

// toStatus converts a handler's error into the status returned to the
// caller. Codes whose detail may describe the server's internals
// (Internal, Unavailable) get a generic message; the detail is logged.
func (e *edge) toStatus(ctx context.Context, method string, err error) error {
	c := Code(err)
	switch c {
	case codes.OK:
		return nil
	case codes.Internal:
		e.logger.ErrorContext(ctx, "internal error", "method", method, "peer", peerAddr(ctx), "err", err)
		return status.Error(c, "internal error")
	case codes.Unavailable:
		var nw *directory.NotWriterError
		if errors.As(err, &nw) {
			// A replicated directory's reader: the message names the
			// writer, for the client.
			return status.Error(c, nw.Error())
		}
		e.logger.WarnContext(ctx, "unavailable", "method", method, "err", err)
		return status.Error(c, "service unavailable, retry later")
	case codes.Canceled, codes.DeadlineExceeded:
		return status.Error(c, c.String())
	}
	return status.Error(c, err.Error())
}
