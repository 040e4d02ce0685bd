package grpcserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/log"
)

// fakeDirectory answers Lookup, BatchLookup, Change and Enroll through
// funcs set by each test, and counts the calls that reached it.
type fakeDirectory struct {
	ktpb.UnimplementedDirectoryServer
	calls  atomic.Int64
	lookup func(context.Context, *ktpb.LookupRequest) (*ktpb.LookupResponse, error)
}

func (f *fakeDirectory) GetParameters(context.Context, *ktpb.GetParametersRequest) (*ktpb.Parameters, error) {
	f.calls.Add(1)
	return &ktpb.Parameters{Origin: "example.com/kt"}, nil
}

func (f *fakeDirectory) Lookup(ctx context.Context, r *ktpb.LookupRequest) (*ktpb.LookupResponse, error) {
	f.calls.Add(1)
	if f.lookup != nil {
		return f.lookup(ctx, r)
	}
	return &ktpb.LookupResponse{Handle: r.GetHandle()}, nil
}

func (f *fakeDirectory) BatchLookup(_ context.Context, r *ktpb.BatchLookupRequest) (*ktpb.BatchLookupResponse, error) {
	f.calls.Add(1)
	return &ktpb.BatchLookupResponse{Results: make([]*ktpb.LookupResponse, len(r.GetHandles()))}, nil
}

func (f *fakeDirectory) Change(_ context.Context, r *ktpb.ChangeRequest) (*ktpb.ChangeResponse, error) {
	f.calls.Add(1)
	return &ktpb.ChangeResponse{LogIndices: make([]uint64, len(r.GetChanges()))}, nil
}

func (f *fakeDirectory) Enroll(context.Context, *ktpb.EnrollRequest) (*ktpb.ChangeResponse, error) {
	f.calls.Add(1)
	return &ktpb.ChangeResponse{LogIndices: []uint64{7}}, nil
}

type fakeLog struct {
	ktpb.UnimplementedLogServer
}

func (fakeLog) GetEntries(_ context.Context, r *ktpb.GetEntriesRequest) (*ktpb.Entries, error) {
	if r.GetEnd() > 10 {
		return nil, fmt.Errorf("entries [%d, %d): %w", r.GetStart(), r.GetEnd(), log.ErrOutOfRange)
	}
	return &ktpb.Entries{Entries: [][]byte{{1}}}, nil
}

// recordingMetrics records every observation.
type recordingMetrics struct {
	mu  sync.Mutex
	obs []string
}

func (m *recordingMetrics) ObserveRPC(method string, code codes.Code, elapsed time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if elapsed < 0 {
		code = 999 // never expected: makes the test fail visibly
	}
	m.obs = append(m.obs, method+" "+code.String())
}

func (m *recordingMetrics) get() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.obs...)
}

// discardLogger keeps the expected error logs out of the test output.
func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// serve runs s on a loopback listener until the test ends and returns the
// address.
func serve(t *testing.T, s *grpc.Server) string { return serveBench(t, s) }

func serveBench(t testing.TB, s *grpc.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// dial connects to addr in plaintext, from the local IP address from (empty
// for the default).
func dial(t *testing.T, addr, from string, opts ...grpc.DialOption) *grpc.ClientConn {
	return dialBench(t, addr, from, opts...)
}

func dialBench(t testing.TB, addr, from string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	if len(opts) == 0 {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if from != "" {
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
			return d.DialContext(ctx, "tcp", a)
		}))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func start(t *testing.T, opts Options, dir ktpb.DirectoryServer) *grpc.ClientConn {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = discardLogger()
	}
	s, err := New(opts, dir, fakeLog{})
	if err != nil {
		t.Fatal(err)
	}
	return dial(t, serve(t, s), "")
}

func TestErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want codes.Code
		// wantMsg is a substring the caller must see; hidden one it must not.
		wantMsg, hidden string
	}{
		{"directory stale", &directory.Error{Kind: directory.ErrStaleVersion, Detail: "change 0", Err: &api.AuthError{Rule: "R2 version", Reason: "v"}}, codes.Aborted, "change 0", ""},
		{"directory invalid", &directory.Error{Kind: directory.ErrInvalidArgument, Detail: "index mismatch"}, codes.InvalidArgument, "index mismatch", ""},
		{"directory unauthorized", &directory.Error{Kind: directory.ErrUnauthorized, Detail: "bad credential"}, codes.PermissionDenied, "bad credential", ""},
		{"directory unauthenticated", &directory.Error{Kind: directory.ErrUnauthenticated, Detail: "no owner authorization"}, codes.Unauthenticated, "no owner authorization", ""},
		{"directory sentinel wins over its cause", &directory.Error{Kind: directory.ErrUnauthorized, Detail: "d", Err: &api.AuthError{Rule: "R3 prev"}}, codes.PermissionDenied, "", ""},
		{"directory not found", fmt.Errorf("x: %w", directory.ErrNotFound), codes.NotFound, "", ""},
		{"directory out of range", &directory.Error{Kind: directory.ErrOutOfRange, Detail: "known size 9 > 5"}, codes.OutOfRange, "known size 9", ""},
		{"directory exhausted", &directory.Error{Kind: directory.ErrResourceExhausted, Detail: "queue full"}, codes.ResourceExhausted, "queue full", ""},
		{"directory unavailable", &directory.Error{Kind: directory.ErrUnavailable, Detail: "sequencer stopped: mysql 10.1.2.3"}, codes.Unavailable, "retry", "10.1.2.3"},
		{"malformed", fmt.Errorf("change 0: %w", &api.FormatError{What: "change record", Offset: 3, Reason: "short"}), codes.InvalidArgument, "short", ""},
		{"invalid handle", &api.HandleError{Input: "bob", Reason: "no scheme"}, codes.InvalidArgument, "no scheme", ""},
		{"commitment", fmt.Errorf("x: %w", api.ErrCommitment), codes.InvalidArgument, "commitment", ""},
		{"invalid entry", fmt.Errorf("x: %w", log.ErrInvalidEntry), codes.InvalidArgument, "", ""},
		{"stale version R2", &api.AuthError{Rule: "R2 version", Reason: "version 3 does not follow 3"}, codes.Aborted, "R2", ""},
		{"replayed prev R3", fmt.Errorf("change 1: %w", &api.AuthError{Rule: "R3 prev", Reason: "prev"}), codes.Aborted, "R3", ""},
		{"unauthorized R5", &api.AuthError{Rule: "R5 device", Reason: "signer"}, codes.PermissionDenied, "R5", ""},
		{"bad signature R1", &api.AuthError{Rule: "R1 signature", Reason: "bad", Err: api.ErrBadSignature}, codes.PermissionDenied, "R1", ""},
		{"out of range", fmt.Errorf("x: %w", log.ErrOutOfRange), codes.OutOfRange, "", ""},
		{"pushback", fmt.Errorf("queue at db-7.internal: %w", log.ErrPushback), codes.Unavailable, "retry", "db-7.internal"},
		{"no checkpoint", log.ErrNoCheckpoint, codes.Unavailable, "", ""},
		{"closed", log.ErrClosed, codes.Unavailable, "", ""},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "", ""},
		{"unknown error", errors.New("disk /var/secret is full"), codes.Internal, "internal error", "secret"},
		{"backend status is not passed through", fmt.Errorf("trillian: %w", status.Error(codes.NotFound, "tree 7 at 10.0.0.3")), codes.Internal, "", "10.0.0.3"},
		{"unimplemented", status.Error(codes.Unimplemented, "method Lookup not implemented"), codes.Unimplemented, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd := &fakeDirectory{lookup: func(context.Context, *ktpb.LookupRequest) (*ktpb.LookupResponse, error) {
				return nil, tc.err
			}}
			c := ktpb.NewDirectoryClient(start(t, Options{}, fd))
			_, err := c.Lookup(t.Context(), &ktpb.LookupRequest{Handle: "tel:+1"})
			st := status.Convert(err)
			if st.Code() != tc.want {
				t.Fatalf("code = %v (%q), want %v", st.Code(), st.Message(), tc.want)
			}
			if !strings.Contains(st.Message(), tc.wantMsg) {
				t.Errorf("message %q does not contain %q", st.Message(), tc.wantMsg)
			}
			if tc.hidden != "" && strings.Contains(st.Message(), tc.hidden) {
				t.Errorf("message %q leaks %q", st.Message(), tc.hidden)
			}
		})
	}
}

func TestCodeTable(t *testing.T) {
	// Code without the transport, including nil.
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{context.Canceled, codes.Canceled},
		{fmt.Errorf("a: %w", fmt.Errorf("b: %w", api.ErrInvalidHandle)), codes.InvalidArgument},
		{errors.Join(errors.New("x"), api.ErrUnauthorized), codes.PermissionDenied},
	} {
		if got := Code(tc.err); got != tc.want {
			t.Errorf("Code(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestLogService(t *testing.T) {
	c := ktpb.NewLogClient(start(t, Options{}, &fakeDirectory{}))
	if _, err := c.GetEntries(t.Context(), &ktpb.GetEntriesRequest{Start: 0, End: 1}); err != nil {
		t.Fatalf("GetEntries: %v", err)
	}
	_, err := c.GetEntries(t.Context(), &ktpb.GetEntriesRequest{Start: 0, End: 11})
	if status.Code(err) != codes.OutOfRange {
		t.Errorf("GetEntries beyond the log: %v, want OutOfRange", err)
	}
	_, err = c.GetCheckpoint(t.Context(), &ktpb.GetCheckpointRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("GetCheckpoint on the fake: %v, want Unimplemented", err)
	}
}

func TestMessageSizeLimit(t *testing.T) {
	fd := &fakeDirectory{}
	c := ktpb.NewDirectoryClient(start(t, Options{MaxRecvMsgSize: 4 << 10}, fd))
	// Just below the limit (the handle plus a few bytes of framing).
	if _, err := c.Lookup(t.Context(), &ktpb.LookupRequest{Handle: strings.Repeat("a", 4<<10-8)}); err != nil {
		t.Fatalf("request below the limit: %v", err)
	}
	_, err := c.Lookup(t.Context(), &ktpb.LookupRequest{Handle: strings.Repeat("a", 4<<10+1)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized request: %v, want ResourceExhausted", err)
	}
	if n := fd.calls.Load(); n != 1 {
		t.Errorf("handler called %d times, want 1 (the oversized request must not reach it)", n)
	}

	// The default limit is DefaultMaxRecvMsgSize.
	c = ktpb.NewDirectoryClient(start(t, Options{}, fd))
	_, err = c.Lookup(t.Context(), &ktpb.LookupRequest{Handle: strings.Repeat("a", DefaultMaxRecvMsgSize)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("request over the default limit: %v, want ResourceExhausted", err)
	}
}

// withUnknown returns b plus an unknown field number 99.
func withUnknown(b []byte) []byte {
	b = protowire.AppendTag(b, 99, protowire.BytesType)
	return protowire.AppendBytes(b, []byte("surprise"))
}

func TestUnknownFieldsRejected(t *testing.T) {
	fd := &fakeDirectory{}
	conn := start(t, Options{}, fd)
	c := ktpb.NewDirectoryClient(conn)

	top := &ktpb.LookupRequest{Handle: "tel:+1"}
	top.ProtoReflect().SetUnknown(withUnknown(nil))

	nested := &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{{Handle: "tel:+1"}, {Handle: "tel:+2"}}}
	nested.Changes[1].ProtoReflect().SetUnknown(withUnknown(nil))

	enroll := &ktpb.EnrollRequest{Change: &ktpb.HandleChange{Handle: "tel:+1"}, Credential: "c"}
	enroll.Change.ProtoReflect().SetUnknown(withUnknown(nil))

	// A field number the server knows but with the wrong wire type is
	// unknown too: known_size (2) as bytes.
	wrongType := &ktpb.LookupRequest{Handle: "tel:+1"}
	wrongType.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), []byte{1}))

	for _, tc := range []struct {
		name string
		call func() error
		path string
	}{
		{"top level", func() error { _, err := c.Lookup(t.Context(), top); return err }, "kt.v1.LookupRequest"},
		{"in a repeated message", func() error { _, err := c.Change(t.Context(), nested); return err }, "kt.v1.HandleChange"},
		{"in a message field", func() error { _, err := c.Enroll(t.Context(), enroll); return err }, "kt.v1.HandleChange"},
		{"wrong wire type", func() error { _, err := c.Lookup(t.Context(), wrongType); return err }, "kt.v1.LookupRequest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := fd.calls.Load()
			err := tc.call()
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("got %v, want InvalidArgument", err)
			}
			if !strings.Contains(status.Convert(err).Message(), tc.path) {
				t.Errorf("message %q does not name %s", status.Convert(err).Message(), tc.path)
			}
			if fd.calls.Load() != before {
				t.Error("the handler was called")
			}
		})
	}

	// The same requests without the unknown fields are served.
	if _, err := c.Change(t.Context(), &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{{Handle: "tel:+1"}, {Handle: "tel:+2"}}}); err != nil {
		t.Errorf("clean Change: %v", err)
	}
}

func TestRateLimit(t *testing.T) {
	fd := &fakeDirectory{}
	m := &recordingMetrics{}
	// A refill rate so low that no token comes back during the test.
	s, err := New(Options{RateLimit: 1e-6, RateBurst: 4, Metrics: m, Logger: discardLogger()}, fd, fakeLog{})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, s)
	a := ktpb.NewDirectoryClient(dial(t, addr, "127.0.0.1"))

	for i := range 3 {
		if _, err := a.GetParameters(t.Context(), &ktpb.GetParametersRequest{}); err != nil {
			t.Fatalf("call %d within the burst: %v", i, err)
		}
	}
	// One token left: a batch of 3 handles costs 3.
	_, err = a.BatchLookup(t.Context(), &ktpb.BatchLookupRequest{Handles: []string{"a", "b", "c"}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("batch beyond the bucket: %v, want ResourceExhausted", err)
	}
	if _, err := a.GetParameters(t.Context(), &ktpb.GetParametersRequest{}); err != nil {
		t.Fatalf("last token: %v", err)
	}
	_, err = a.GetParameters(t.Context(), &ktpb.GetParametersRequest{})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("call beyond the burst: %v, want ResourceExhausted", err)
	}
	// A new connection from the same address shares the bucket.
	a2 := ktpb.NewDirectoryClient(dial(t, addr, "127.0.0.1"))
	if _, err := a2.GetParameters(t.Context(), &ktpb.GetParametersRequest{}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("new connection from the same address: %v, want ResourceExhausted", err)
	}
	// Another address has its own bucket.
	b := ktpb.NewDirectoryClient(dial(t, addr, "127.0.0.2"))
	if _, err := b.GetParameters(t.Context(), &ktpb.GetParametersRequest{}); err != nil {
		t.Fatalf("another peer: %v", err)
	}
	if n := fd.calls.Load(); n != 5 {
		t.Errorf("handler reached %d times, want 5", n)
	}
	want := []string{
		"/kt.v1.Directory/GetParameters OK",
		"/kt.v1.Directory/GetParameters OK",
		"/kt.v1.Directory/GetParameters OK",
		"/kt.v1.Directory/BatchLookup ResourceExhausted",
		"/kt.v1.Directory/GetParameters OK",
		"/kt.v1.Directory/GetParameters ResourceExhausted",
		"/kt.v1.Directory/GetParameters ResourceExhausted",
		"/kt.v1.Directory/GetParameters OK",
	}
	if got := m.get(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("metrics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestRateLimitDisabled(t *testing.T) {
	c := ktpb.NewDirectoryClient(start(t, Options{RateLimit: -1, RateBurst: 1}, &fakeDirectory{}))
	for i := range 20 {
		if _, err := c.GetParameters(t.Context(), &ktpb.GetParametersRequest{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
}

func TestPanicRecovered(t *testing.T) {
	var panics atomic.Int64
	fd := &fakeDirectory{lookup: func(_ context.Context, r *ktpb.LookupRequest) (*ktpb.LookupResponse, error) {
		if r.GetHandle() == "boom" {
			panics.Add(1)
			panic("secret panic detail")
		}
		return &ktpb.LookupResponse{Handle: r.GetHandle()}, nil
	}}
	m := &recordingMetrics{}
	c := ktpb.NewDirectoryClient(start(t, Options{Metrics: m}, fd))
	for i := range 3 {
		_, err := c.Lookup(t.Context(), &ktpb.LookupRequest{Handle: "boom"})
		st := status.Convert(err)
		if st.Code() != codes.Internal || strings.Contains(st.Message(), "secret") {
			t.Fatalf("panic %d: %v, want Internal without the detail", i, err)
		}
		resp, err := c.Lookup(t.Context(), &ktpb.LookupRequest{Handle: "ok"})
		if err != nil || resp.GetHandle() != "ok" {
			t.Fatalf("after panic %d: %v, %v", i, resp, err)
		}
	}
	if panics.Load() != 3 {
		t.Errorf("%d panics, want 3", panics.Load())
	}
	if got := m.get(); len(got) != 6 || got[0] != "/kt.v1.Directory/Lookup Internal" || got[1] != "/kt.v1.Directory/Lookup OK" {
		t.Errorf("metrics %q", got)
	}
}

type fakeOperator struct {
	ktpb.UnimplementedOperatorServer
}

func (fakeOperator) Recover(_ context.Context, r *ktpb.ChangeRequest) (*ktpb.ChangeResponse, error) {
	if len(r.GetChanges()) == 0 {
		return nil, &api.AuthError{Rule: "R6 recovery", Reason: "no change"}
	}
	return &ktpb.ChangeResponse{LogIndices: []uint64{1}}, nil
}

func TestOperator(t *testing.T) {
	s, err := NewOperator(Options{Logger: discardLogger()}, fakeOperator{})
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, serve(t, s), "")
	op := ktpb.NewOperatorClient(conn)
	if _, err := op.Recover(t.Context(), &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{{Handle: "tel:+1"}}}); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if _, err := op.Recover(t.Context(), &ktpb.ChangeRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Recover refused: %v, want PermissionDenied", err)
	}
	// The public services are not on the operator's server.
	_, err = ktpb.NewDirectoryClient(conn).GetParameters(t.Context(), &ktpb.GetParametersRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("Directory on the operator server: %v, want Unimplemented", err)
	}
}

func TestTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	s, err := New(Options{TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}, Logger: discardLogger()}, &fakeDirectory{}, fakeLog{})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, s)
	c := ktpb.NewDirectoryClient(dial(t, addr, "", grpc.WithTransportCredentials(credentials.NewClientTLSFromCert(pool, "localhost"))))
	p, err := c.GetParameters(t.Context(), &ktpb.GetParametersRequest{})
	if err != nil || p.GetOrigin() != "example.com/kt" {
		t.Fatalf("over TLS: %v, %v", p, err)
	}
	// A plaintext client gets nowhere.
	pc := ktpb.NewDirectoryClient(dial(t, addr, ""))
	if _, err := pc.GetParameters(t.Context(), &ktpb.GetParametersRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext to a TLS server: %v, want Unavailable", err)
	}
}

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestOptionsValidation(t *testing.T) {
	for _, o := range []Options{
		{MaxRecvMsgSize: -1},
		{RateBurst: -1},
		{MaxPeers: -5},
	} {
		if _, err := New(o, &fakeDirectory{}, fakeLog{}); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
	if _, err := New(Options{}, nil, fakeLog{}); err == nil {
		t.Error("New with a nil directory succeeded")
	}
	if _, err := NewOperator(Options{}, nil); err == nil {
		t.Error("NewOperator with nil succeeded")
	}
}

// rawCodec sends a request's bytes as they are, so a test can put a body on
// the wire that no protobuf message encodes to.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}
func (rawCodec) Name() string { return "proto" }

func TestUndecodableRequestRejected(t *testing.T) {
	fd := &fakeDirectory{}
	conn := start(t, Options{}, fd)
	for _, tc := range []struct {
		name, method string
		body         []byte
	}{
		{"truncated varint", "/kt.v1.Directory/Lookup", []byte{0x08}},
		{"length beyond the body", "/kt.v1.Directory/Change", []byte{0x0a, 0x7f, 0x01}},
		{"invalid UTF-8 in a string", "/kt.v1.Directory/Lookup", []byte{0x0a, 0x02, 0xff, 0xfe}},
		{"group end without start", "/kt.v1.Directory/Enroll", []byte{0x0c}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := fd.calls.Load()
			var out []byte
			err := conn.Invoke(t.Context(), tc.method, tc.body, &out, grpc.ForceCodecV2(rawCodec{}))
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("got %v, want InvalidArgument", err)
			}
			if !strings.Contains(status.Convert(err).Message(), "malformed request") {
				t.Errorf("message %q does not say the request is malformed", status.Convert(err).Message())
			}
			if fd.calls.Load() != before {
				t.Error("the handler was called")
			}
		})
	}
	// The server still answers well-formed requests on the same connection.
	if _, err := ktpb.NewDirectoryClient(conn).Lookup(t.Context(), &ktpb.LookupRequest{Handle: "tel:+1"}); err != nil {
		t.Errorf("a well-formed Lookup after the bad ones: %v", err)
	}
}
