// Package logapi serves a [log.Reader] over HTTP and reads it back: the one
// read API of the log, whatever the backend.
//
// [NewHandler] serves any [log.Reader]; [NewClient] implements [log.Reader]
// over that API, so code written against [log.Reader] runs unchanged against
// an embedded backend, a Trillian backend, or a remote server.
//
// # Endpoints
//
// All endpoints answer GET and HEAD only (405 otherwise, with Allow).
//
//	GET /log/v1/checkpoint
//	    200 text/plain; charset=utf-8: the latest published checkpoint, a
//	    C2SP tlog-checkpoint signed note with its cosignatures.
//	GET /log/v1/entries?start=N&end=M
//	    200 application/octet-stream: entries N, N+1, ... (at least one, at
//	    most min(M-N, the server's page size)), each as a big-endian uint16
//	    length followed by the entry (the C2SP tlog-tiles entry-bundle
//	    framing). Requires N < M; M beyond the checkpoint is out of range
//	    even when the page would stop before it.
//	GET /log/v1/proof/inclusion?index=I&size=S
//	    200 application/octet-stream: the RFC 6962 inclusion proof for entry
//	    I in the tree of size S, concatenated 32-byte hashes. Requires I < S.
//	GET /log/v1/proof/consistency?old=A&new=B
//	    200 application/octet-stream: the RFC 6962 consistency proof between
//	    trees of sizes A and B, concatenated 32-byte hashes (empty when
//	    A == B). Requires 0 < A <= B.
//
// Parameters are parsed strictly: each listed parameter exactly once, no
// other parameter, values in canonical decimal (digits only, no sign, no
// leading zero, at most 2^64-1, no percent-encoding). Anything else is 400.
//
// # Errors
//
// Errors are plain text (a one-line message) with the status below, and
// the header Kt-Log-Error naming the error, so that the client can turn it
// back into the [log] package's sentinel error without confusing it with a
// 404 or 503 from a proxy or a mistyped base URL.
//
//	400 bad-request     malformed query, or a range that can never be valid
//	                    (start >= end, index >= size, old = 0 or old > new)
//	404 out-of-range    [log.ErrOutOfRange]: beyond the latest published
//	                    checkpoint. 404 rather than 400: the request is well
//	                    formed and names a resource that does not exist yet
//	                    but may once the log grows (RFC 9110, 15.5.5), as a
//	                    tlog-tiles tile beyond the tree does.
//	503 no-checkpoint   [log.ErrNoCheckpoint], with Retry-After: the log has
//	                    not published anything yet, a transient condition of
//	                    the whole service.
//	503 pushback        [log.ErrPushback] and [log.ErrClosed], with
//	                    Retry-After: overloaded or shutting down; retry.
//	500 internal        anything else, with a generic message; the detail is
//	                    logged with log/slog, never sent.
//
// # Caching
//
// The checkpoint is mutable: Cache-Control max-age of a second by default
// (C2SP tlog-tiles: "headers SHOULD prevent caching beyond a few seconds").
// Entries and proofs name fixed indices and tree sizes, so their content
// never changes: Cache-Control public, one year, immutable. Errors are
// no-store.
package logapi

// Paths of the read API, relative to the server's base URL.
const (
	PathCheckpoint  = "/log/v1/checkpoint"
	PathEntries     = "/log/v1/entries"
	PathInclusion   = "/log/v1/proof/inclusion"
	PathConsistency = "/log/v1/proof/consistency"
)

// HeaderError is the response header that names the error of a non-2xx
// response from [NewHandler].
const HeaderError = "Kt-Log-Error"

// Values of [HeaderError].
const (
	errCodeBadRequest   = "bad-request"
	errCodeOutOfRange   = "out-of-range"
	errCodeNoCheckpoint = "no-checkpoint"
	errCodePushback     = "pushback"
	errCodeInternal     = "internal"
)

// MaxEntriesPerRequest is the default and largest page of entries: the
// handler returns at most this many entries per request, and the client
// never asks for more. Its body is then at most 1024 * (2 + 65535) bytes,
// 64 MiB.
const MaxEntriesPerRequest = 1024

// MaxCheckpointSize bounds a checkpoint note, with all its cosignatures. A
// checkpoint is about 150 bytes plus about 100 per signature.
const MaxCheckpointSize = 64 << 10
