package grpcserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api/ktpb"
)

// The HTTP/JSON mapping of the Directory service (design.md 10.1).
//
// Every method is `POST /kt.v1.Directory/<Method>` with the request
// message in the body as protobuf JSON (protojson: lowerCamelCase or
// proto field names, bytes as standard base64, 64-bit integers as
// decimal strings or numbers), answered with 200 and the response message
// as protobuf JSON, or with an error status and
// {"code": "<snake_case gRPC code>", "message": "..."}: the Connect
// protocol's unary JSON form, so Connect clients in other languages can
// call it. Each call runs through the interceptor chain of the gRPC server
// it was built with (one rate limiter per peer for both, the same metrics,
// unknown-field rejection and error mapping); the size limit applies to
// the decoded message, as on gRPC.

// JSONPrefix is the path prefix of the HTTP/JSON Directory methods.
const JSONPrefix = "/" + "kt.v1.Directory" + "/"

// jsonBodyFactor bounds a JSON body at this many times MaxRecvMsgSize
// (plus jsonBodySlack): base64 takes 4/3 of the bytes, field names and
// quotes the rest. The decoded message is then held to MaxRecvMsgSize.
const (
	jsonBodyFactor = 2
	jsonBodySlack  = 4 << 10
)

// chain is the interceptor chain of a gRPC server, which its HTTP/JSON
// handler also runs every call through.
type chain struct {
	codec        undecodableCodec
	maxRecv      int
	interceptors []grpc.UnaryServerInterceptor
}

// JSONMethodPrefix prefixes the method names of HTTP/JSON calls in
// metrics and logs ("json:/kt.v1.Directory/Lookup"), so that operators
// tell them from gRPC calls.
const JSONMethodPrefix = "json:"

// intercept runs the chain around h, for a call over HTTP/JSON.
func (c *chain) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	info = &grpc.UnaryServerInfo{Server: info.Server, FullMethod: JSONMethodPrefix + info.FullMethod}
	next := h
	for i := len(c.interceptors) - 1; i >= 0; i-- {
		ic, inner := c.interceptors[i], next
		next = func(ctx context.Context, req any) (any, error) { return ic(ctx, req, info, inner) }
	}
	return next(ctx, req)
}

// NewWithJSON returns the public gRPC server, as [New] does, and an
// http.Handler serving the Directory service as HTTP/JSON under
// [JSONPrefix] through the same interceptors: the two share one rate
// limiter (a peer's HTTP and gRPC calls draw on one bucket), the size
// limit, the error mapping and the metrics (observed under the gRPC method
// names with [JSONMethodPrefix]). TLS is the HTTP server's business; Options.TLS applies to gRPC
// only.
func NewWithJSON(opts Options, dir ktpb.DirectoryServer, logsrv ktpb.LogServer) (*grpc.Server, http.Handler, error) {
	if dir == nil || logsrv == nil {
		return nil, nil, errors.New("grpcserver: nil Directory or Log service")
	}
	s, c, err := newServer(opts)
	if err != nil {
		return nil, nil, err
	}
	ktpb.RegisterDirectoryServer(s, dir)
	ktpb.RegisterLogServer(s, logsrv)
	return s, newJSONHandler(c, &ktpb.Directory_ServiceDesc, dir), nil
}

type jsonHandler struct {
	c       *chain
	srv     any
	methods map[string]grpc.MethodDesc // by method name
	service string
}

func newJSONHandler(c *chain, sd *grpc.ServiceDesc, srv any) *jsonHandler {
	h := &jsonHandler{c: c, srv: srv, methods: map[string]grpc.MethodDesc{}, service: sd.ServiceName}
	for _, m := range sd.Methods {
		h.methods[m.MethodName] = m
	}
	return h
}

// jsonError is the body of an error answer.
type jsonError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// SPEC(design.md 10.1 HTTP/JSON API)
func (h *jsonHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Any origin may call: the API takes no cookies or other ambient
	// credentials, and a browser verifier must be able to reach it.
	w.Header().Set("Access-Control-Allow-Origin", "*")
	if r.Method == http.MethodOptions {
		w.Header().Set("Access-Control-Allow-Methods", "POST")
		w.Header().Set("Access-Control-Allow-Headers", "Content-Type, Connect-Protocol-Version, Connect-Timeout-Ms")
		w.Header().Set("Access-Control-Max-Age", "7200")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/"+h.service+"/")
	md, known := h.methods[name]
	if !ok || !known {
		writeJSONError(w, status.New(codes.Unimplemented, fmt.Sprintf("unknown method %s", r.URL.Path)))
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST, OPTIONS")
		writeJSONErrorHTTP(w, http.StatusMethodNotAllowed, status.New(codes.Unimplemented, "use POST"))
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		w.Header().Set("Accept-Post", "application/json")
		writeJSONErrorHTTP(w, http.StatusUnsupportedMediaType, status.New(codes.InvalidArgument, "Content-Type must be application/json"))
		return
	}
	if enc := r.Header.Get("Content-Encoding"); enc != "" && enc != "identity" {
		writeJSONError(w, status.New(codes.Unimplemented, fmt.Sprintf("Content-Encoding %q is not supported", enc)))
		return
	}
	ctx := r.Context()
	if ms := r.Header.Get("Connect-Timeout-Ms"); ms != "" {
		n, err := strconv.ParseUint(ms, 10, 63)
		if err != nil || len(ms) > 10 {
			writeJSONError(w, status.New(codes.InvalidArgument, "malformed Connect-Timeout-Ms"))
			return
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(n)*time.Millisecond)
		defer cancel()
	}
	ctx = peer.NewContext(ctx, &peer.Peer{Addr: remoteAddr(r.RemoteAddr)})

	// The body, bounded before it is read; an oversized body answers
	// ResourceExhausted before the interceptors, as on gRPC.
	limit := int64(h.c.maxRecv)*jsonBodyFactor + jsonBodySlack
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeJSONError(w, status.New(codes.ResourceExhausted, fmt.Sprintf("request body larger than %d bytes", limit)))
			return
		}
		writeJSONError(w, status.New(codes.InvalidArgument, "reading the request body failed"))
		return
	}
	if len(body) == 0 {
		body = []byte("{}")
	}
	// dec never fails for a body that does not decode: it records the
	// error for rejectUndecodable, inside the chain, as the gRPC codec
	// does. Only a message over the size limit fails here, before the
	// chain, as gRPC refuses it before decoding.
	dec := func(v any) error {
		m, ok := v.(proto.Message)
		if !ok {
			return status.Errorf(codes.Internal, "request of type %T is not a protocol buffer", v)
		}
		if err := protojson.Unmarshal(body, m); err != nil {
			h.c.codec.failed.Store(v, err)
			return nil
		}
		if n := proto.Size(m); n > h.c.maxRecv {
			return status.Errorf(codes.ResourceExhausted, "received message larger than max (%d vs. %d)", n, h.c.maxRecv)
		}
		return nil
	}
	resp, err := md.Handler(h.srv, ctx, dec, h.c.intercept)
	if err != nil {
		s, ok := status.FromError(err)
		if !ok {
			// The chain maps every handler error; this is a bug.
			s = status.New(codes.Internal, "internal error")
		}
		writeJSONError(w, s)
		return
	}
	out, err := protojson.Marshal(resp.(proto.Message))
	if err != nil {
		writeJSONError(w, status.New(codes.Internal, "internal error"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// remoteAddr parses an http.Request's RemoteAddr into a *net.TCPAddr for
// peerKey; an address that does not parse is kept as it is.
func remoteAddr(s string) net.Addr {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return stringAddr(s)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return stringAddr(s)
	}
	p, _ := strconv.Atoi(port)
	return &net.TCPAddr{IP: ip, Port: p}
}

type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }

// HTTPStatus is the HTTP status of an error answer with gRPC code c: the
// Connect protocol's mapping (the one google.rpc.Code documents).
func HTTPStatus(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return 499
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// JSONCode is the name of gRPC code c in an error answer: the Connect
// protocol's, snake_case ("invalid_argument").
func JSONCode(c codes.Code) string {
	switch c {
	case codes.OK:
		return "ok"
	case codes.Canceled:
		return "canceled"
	}
	var b strings.Builder
	for i, r := range c.String() {
		if 'A' <= r && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ParseJSONCode is the inverse of [JSONCode]; unknown names are
// codes.Unknown.
func ParseJSONCode(name string) codes.Code {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if JSONCode(c) == name {
			return c
		}
	}
	return codes.Unknown
}

func writeJSONError(w http.ResponseWriter, s *status.Status) {
	writeJSONErrorHTTP(w, HTTPStatus(s.Code()), s)
}

func writeJSONErrorHTTP(w http.ResponseWriter, httpStatus int, s *status.Status) {
	if s.Code() == codes.ResourceExhausted || s.Code() == codes.Unavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	b, _ := json.Marshal(jsonError{Code: JSONCode(s.Code()), Message: s.Message()})
	_, _ = w.Write(b)
}
