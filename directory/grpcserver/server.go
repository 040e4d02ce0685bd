// Package grpcserver is the gRPC edge of the key transparency directory: it
// serves the Directory and Log services (docs/design.md sections 10 to 13)
// on a public listener and the Operator service on a private one, in front
// of implementations that know nothing about gRPC.
//
// # What the edge adds
//
// Every call passes through the same interceptors, outermost first (the
// services have only unary methods; a streaming method would need stream
// interceptors to match):
//
//  1. metrics: one [Metrics] observation per call, with the final code;
//  2. panic recovery: a panicking handler answers codes.Internal and the
//     server keeps serving (the stack goes to the log, never to the caller);
//  3. per-peer rate limiting: a token bucket per peer address, answering
//     codes.ResourceExhausted when empty;
//  4. unknown-field rejection: a request carrying fields this server does
//     not know (at any depth) answers codes.InvalidArgument, so that a newer
//     client never believes an older server honoured a field it ignored;
//  5. error mapping: the handler's domain error becomes a gRPC status in
//     one switch ([Code]).
//
// Requests larger than [Options.MaxRecvMsgSize] are refused by gRPC itself
// with codes.ResourceExhausted before they are decoded.
//
// # HTTP/JSON
//
// [NewWithJSON] also returns an http.Handler serving the Directory service
// as HTTP/JSON (design.md 10.1): `POST /kt.v1.Directory/<Method>` with the
// request as protobuf JSON, answered with the response as protobuf JSON
// or {"code", "message"} (the Connect protocol's unary form). Each call
// runs the generated method handler through the same interceptor chain,
// with the caller's address as its peer: one rate limiter for both
// protocols, the same error mapping, and bodies that do not decode or
// carry unknown fields refused with InvalidArgument before any handler.
// The size limit applies to the decoded message.
//
// # Error codes
//
// Handlers return domain errors (the sentinels of package directory, and
// of packages api and log, wrapped with %w); [Code] maps them. A stale or
// replayed change (directory.ErrStaleVersion: wrong version or prev, rules
// R2/R3) maps to codes.Aborted, as gRPC prescribes for a failed
// read-modify-write: the client must look its handle up again, rebuild the
// change and retry; FailedPrecondition would tell it not to retry until the
// system changed, which is wrong here. Every authorization failure
// (directory.ErrUnauthorized: a bad signature, a signer that is not an
// authorizer, a bad enrollment credential) maps to codes.PermissionDenied:
// the public service has no transport-level authentication. The one
// request-level credential, the owner's authorization of a Monitor request
// (design.md 13.4), maps to codes.Unauthenticated when it is missing,
// malformed, stale or badly signed (directory.ErrUnauthenticated), and to
// codes.PermissionDenied when its signer is not a current authorizer.
// Errors the switch does not know map to codes.Internal with a generic
// message; their detail is logged only, as is the detail of
// codes.Unavailable.
package grpcserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/keytrans/kt/api/ktpb"
)

// Defaults of [Options].
const (
	DefaultMaxRecvMsgSize       = 256 << 10
	DefaultRateLimit            = 50
	DefaultRateBurst            = 100
	DefaultMaxPeers             = 1 << 16
	DefaultMaxConcurrentStreams = 100
	DefaultRecvTimeout          = 10 * time.Second
)

// Options configures a server. The zero value is valid: every zero field
// takes its default.
type Options struct {
	// MaxRecvMsgSize is the largest request message, in bytes, the server
	// accepts; larger requests fail with codes.ResourceExhausted before they
	// are decoded. Default 256 KiB: room for a change carrying a device set
	// of 64 devices with hybrid ML-KEM-768+X25519 keys (about 82 KB), or
	// for 16 handles of about a dozen such devices each; ordinary requests
	// are well under 4 KiB.
	MaxRecvMsgSize int
	// RateLimit is the sustained number of requests per second each peer
	// may make; a batch request costs one token per handle or change (at
	// most RateBurst). Default 50. Negative: no rate limiting.
	//
	// Peers are keyed by the transport's remote IP address (IPv6 by /64
	// prefix). Behind a proxy or load balancer every caller shares the
	// proxy's address: rate-limit at the proxy instead, and disable this.
	RateLimit float64
	// RateBurst is the bucket size of each peer: how many requests a peer
	// may make at once after being idle. Default 100.
	RateBurst int
	// MaxPeers bounds the number of peers whose buckets are tracked. When
	// the table is full and no idle bucket can be dropped, the peers not in
	// it share one bucket. Default 65536.
	MaxPeers int
	// MaxConcurrentStreams bounds the concurrent calls on one connection.
	// Default 100.
	MaxConcurrentStreams uint32
	// RecvTimeout bounds the time from a call's headers to its complete
	// request message; a call that takes longer is cancelled (its stream
	// reset) and its goroutine freed. Default 10s. Connections per peer
	// are bounded by wrapping the listener with LimitConnsPerPeer.
	RecvTimeout time.Duration
	// TLS, when set, serves TLS with this configuration; nil serves
	// plaintext (for loopback and tests only).
	TLS *tls.Config
	// Metrics receives one observation per call. Default: none.
	Metrics Metrics
	// Logger receives internal errors and recovered panics. Default
	// slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.MaxRecvMsgSize == 0 {
		o.MaxRecvMsgSize = DefaultMaxRecvMsgSize
	}
	if o.RateLimit == 0 {
		o.RateLimit = DefaultRateLimit
	}
	if o.RateBurst == 0 {
		o.RateBurst = DefaultRateBurst
	}
	if o.MaxPeers == 0 {
		o.MaxPeers = DefaultMaxPeers
	}
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if o.RecvTimeout == 0 {
		o.RecvTimeout = DefaultRecvTimeout
	}
	if o.Metrics == nil {
		o.Metrics = nopMetrics{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	var errs []error
	if o.MaxRecvMsgSize < 0 {
		errs = append(errs, fmt.Errorf("MaxRecvMsgSize %d is negative", o.MaxRecvMsgSize))
	}
	if o.RateLimit > 0 && o.RateBurst < 1 {
		errs = append(errs, fmt.Errorf("RateBurst %d must be at least 1", o.RateBurst))
	}
	if o.RecvTimeout < 0 {
		errs = append(errs, fmt.Errorf("RecvTimeout %v is negative", o.RecvTimeout))
	}
	if o.MaxPeers < 1 {
		errs = append(errs, fmt.Errorf("MaxPeers %d must be at least 1", o.MaxPeers))
	}
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("grpcserver: %w", err)
	}
	return o, nil
}

// Metrics receives one observation per call. Implementations must be safe
// for concurrent use. The method is the full gRPC method name, such as
// "/kt.v1.Directory/Lookup", or "json:/kt.v1.Directory/Lookup" for a call
// over HTTP/JSON ([JSONMethodPrefix]); only registered methods are
// observed, so its cardinality is bounded.
type Metrics interface {
	ObserveRPC(method string, code codes.Code, elapsed time.Duration)
}

type nopMetrics struct{}

func (nopMetrics) ObserveRPC(string, codes.Code, time.Duration) {}

// New returns a server for the public Directory and Log services. The caller
// serves it (Serve) on its listener and stops it (GracefulStop).
func New(opts Options, dir ktpb.DirectoryServer, logsrv ktpb.LogServer) (*grpc.Server, error) {
	if dir == nil || logsrv == nil {
		return nil, errors.New("grpcserver: nil Directory or Log service")
	}
	s, _, err := newServer(opts)
	if err != nil {
		return nil, err
	}
	ktpb.RegisterDirectoryServer(s, dir)
	ktpb.RegisterLogServer(s, logsrv)
	return s, nil
}

// NewOperator returns a server for the Operator service, to be served on a
// private listener, separate from the public one.
func NewOperator(opts Options, op ktpb.OperatorServer) (*grpc.Server, error) {
	if op == nil {
		return nil, errors.New("grpcserver: nil Operator service")
	}
	s, _, err := newServer(opts)
	if err != nil {
		return nil, err
	}
	ktpb.RegisterOperatorServer(s, op)
	return s, nil
}

// newServer returns a server without services, and the chain of
// interceptors it runs every call through (for the HTTP/JSON mapping,
// which runs its calls through the same chain).
func newServer(opts Options) (*grpc.Server, *chain, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, nil, err
	}
	e := &edge{
		metrics: opts.Metrics,
		logger:  opts.Logger,
	}
	if opts.RateLimit > 0 {
		e.limiter = newLimiter(opts.RateLimit, opts.RateBurst, opts.MaxPeers)
	}
	codec := newUndecodableCodec()
	c := &chain{
		codec:   codec,
		maxRecv: opts.MaxRecvMsgSize,
		interceptors: []grpc.UnaryServerInterceptor{
			received, e.observe, e.recoverPanic, e.rateLimit, codec.rejectUndecodable, e.rejectUnknown, e.mapErrors,
		},
	}
	so := []grpc.ServerOption{
		grpc.ForceServerCodecV2(codec),
		grpc.MaxRecvMsgSize(opts.MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(opts.MaxConcurrentStreams),
		grpc.MaxHeaderListSize(16 << 10),
		grpc.ConnectionTimeout(10 * time.Second),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             10 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: 5 * time.Minute,
		}),
		grpc.InTapHandle(recvTap(opts.RecvTimeout)),
		grpc.ChainUnaryInterceptor(c.interceptors...),
		// A fixed pool of goroutines serves calls, so a lookup runs on a
		// stack already grown by earlier ones rather than growing a fresh
		// goroutine's stack (a Pebble Get needs several KiB; growing cost
		// about a fifth of a lookup's server time). When every worker is
		// busy, for example with Change calls waiting for the log, gRPC
		// starts a goroutine per call as it does without workers.
		grpc.NumStreamWorkers(uint32(4 * runtime.GOMAXPROCS(0))),
	}
	if opts.TLS != nil {
		so = append(so, grpc.Creds(credentials.NewTLS(opts.TLS)))
	}
	return grpc.NewServer(so...), c, nil
}
