package grpcserver

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/directory"
)

// serveJSON returns a gRPC client and an HTTP/JSON base URL for one
// server built by NewWithJSON.
func serveJSON(t *testing.T, opts Options, dir ktpb.DirectoryServer) (ktpb.DirectoryClient, string) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = discardLogger()
	}
	s, h, err := NewWithJSON(opts, dir, fakeLog{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return ktpb.NewDirectoryClient(dial(t, serve(t, s), "")), hs.URL
}

// do sends an HTTP request and returns the status, the error code of an
// error answer ("" for 200) and the body.
func do(t *testing.T, method, url, contentType, body string, hdr ...string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNoContent {
		return resp.StatusCode, "", string(b)
	}
	var e jsonError
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("HTTP %d with a body that is not an error: %q", resp.StatusCode, b)
	}
	return resp.StatusCode, e.Code, e.Message
}

// TestJSONSharesRateLimit: a peer's gRPC and HTTP/JSON calls draw on one
// bucket, a batch costs one token per handle on both, and the refusal is
// resource_exhausted with 429.
func TestJSONSharesRateLimit(t *testing.T) {
	fd := &fakeDirectory{}
	m := &recordingMetrics{}
	c, url := serveJSON(t, Options{RateLimit: 1e-6, RateBurst: 4, Metrics: m}, fd)
	for i := range 2 {
		if _, err := c.GetParameters(t.Context(), &ktpb.GetParametersRequest{}); err != nil {
			t.Fatalf("gRPC call %d: %v", i, err)
		}
	}
	if st, code, msg := do(t, "POST", url+JSONPrefix+"GetParameters", "application/json", "{}"); st != 200 {
		t.Fatalf("JSON call within the burst: %d %s %s", st, code, msg)
	}
	// One token left; a batch of 2 costs 2.
	if st, code, _ := do(t, "POST", url+JSONPrefix+"BatchLookup", "application/json", `{"handles":["a","b"]}`); st != 429 || code != "resource_exhausted" {
		t.Fatalf("batch beyond the bucket over JSON: %d %s, want 429 resource_exhausted", st, code)
	}
	if st, _, _ := do(t, "POST", url+JSONPrefix+"Lookup", "application/json", `{"handle":"a"}`); st != 200 {
		t.Fatalf("last token over JSON: %d", st)
	}
	if _, err := c.GetParameters(t.Context(), &ktpb.GetParametersRequest{}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("gRPC after the JSON calls emptied the bucket: %v, want ResourceExhausted", err)
	}
	want := []string{
		"/kt.v1.Directory/GetParameters OK",
		"/kt.v1.Directory/GetParameters OK",
		"json:/kt.v1.Directory/GetParameters OK",
		"json:/kt.v1.Directory/BatchLookup ResourceExhausted",
		"json:/kt.v1.Directory/Lookup OK",
		"/kt.v1.Directory/GetParameters ResourceExhausted",
	}
	if got := m.get(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("metrics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestJSONErrorMapping: a domain error from the handler maps to the gRPC
// code in the body and the Connect HTTP status, and Internal hides its
// detail, as on gRPC.
func TestJSONErrorMapping(t *testing.T) {
	var next error
	fd := &fakeDirectory{lookup: func(context.Context, *ktpb.LookupRequest) (*ktpb.LookupResponse, error) { return nil, next }}
	c, url := serveJSON(t, Options{RateLimit: -1}, fd)
	for _, tc := range []struct {
		err      error
		code     string
		httpCode int
	}{
		{&directory.Error{Kind: directory.ErrStaleVersion, Detail: "change 0"}, "aborted", 409},
		{&directory.Error{Kind: directory.ErrInvalidArgument, Detail: "index"}, "invalid_argument", 400},
		{&directory.Error{Kind: directory.ErrUnauthorized, Detail: "cred"}, "permission_denied", 403},
		{&directory.Error{Kind: directory.ErrUnauthenticated, Detail: "auth"}, "unauthenticated", 401},
		{&directory.Error{Kind: directory.ErrOutOfRange, Detail: "size"}, "out_of_range", 400},
		{&directory.Error{Kind: directory.ErrUnavailable, Detail: "secret detail"}, "unavailable", 503},
		{io.ErrUnexpectedEOF, "internal", 500},
	} {
		next = tc.err
		st, code, msg := do(t, "POST", url+JSONPrefix+"Lookup", "application/json", `{"handle":"a"}`)
		_, gerr := c.Lookup(t.Context(), &ktpb.LookupRequest{Handle: "a"})
		if st != tc.httpCode || code != tc.code {
			t.Errorf("%v: HTTP %d %s, want %d %s", tc.err, st, code, tc.httpCode, tc.code)
		}
		if JSONCode(status.Code(gerr)) != code || status.Convert(gerr).Message() != msg {
			t.Errorf("%v: gRPC %v, JSON %s %q", tc.err, gerr, code, msg)
		}
		if strings.Contains(msg, "secret") || strings.Contains(msg, "EOF") {
			t.Errorf("%v: detail leaked: %q", tc.err, msg)
		}
	}
}

// TestJSONRequests: the HTTP framing around the methods.
func TestJSONRequests(t *testing.T) {
	fd := &fakeDirectory{}
	_, url := serveJSON(t, Options{RateLimit: -1}, fd)
	for _, tc := range []struct {
		name, method, path, ctype, body string
		hdr                             []string
		status                          int
		code                            string
	}{
		{"ok", "POST", "Lookup", "application/json", `{"handle":"tel:+1","knownSize":"7"}`, nil, 200, ""},
		{"proto field names", "POST", "Lookup", "application/json; charset=utf-8", `{"handle":"tel:+1","known_size":7}`, nil, 200, ""},
		{"empty body is the empty message", "POST", "GetParameters", "application/json", ``, nil, 200, ""},
		{"GET", "GET", "Lookup", "", ``, nil, 405, "unimplemented"},
		{"unknown method", "POST", "Recover", "application/json", `{}`, nil, 501, "unimplemented"},
		{"Log service", "POST", "../kt.v1.Log/GetCheckpoint", "application/json", `{}`, nil, 501, "unimplemented"},
		{"content type", "POST", "Lookup", "application/proto", `{}`, nil, 415, "invalid_argument"},
		{"no content type", "POST", "Lookup", "", `{}`, nil, 415, "invalid_argument"},
		{"compressed", "POST", "Lookup", "application/json", `{}`, []string{"Content-Encoding", "gzip"}, 501, "unimplemented"},
		{"bad timeout", "POST", "Lookup", "application/json", `{}`, []string{"Connect-Timeout-Ms", "-1"}, 400, "invalid_argument"},
		{"negative number", "POST", "Lookup", "application/json", `{"knownSize":-1}`, nil, 400, "invalid_argument"},
		{"bad base64", "POST", "Monitor", "application/json", `{"index":"!!"}`, nil, 400, "invalid_argument"},
		{"duplicate field", "POST", "Lookup", "application/json", `{"handle":"a","handle":"b"}`, nil, 400, "invalid_argument"},
		{"trailing garbage", "POST", "Lookup", "application/json", `{"handle":"a"} x`, nil, 400, "invalid_argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := fd.calls.Load()
			st, code, msg := do(t, tc.method, url+JSONPrefix+tc.path, tc.ctype, tc.body, tc.hdr...)
			if st != tc.status || code != tc.code {
				t.Fatalf("HTTP %d %s %q, want %d %s", st, code, msg, tc.status, tc.code)
			}
			if reached := fd.calls.Load() != before; reached != (st == 200) {
				t.Errorf("handler reached: %v", reached)
			}
		})
	}
	// CORS preflight.
	req, _ := http.NewRequest("OPTIONS", url+JSONPrefix+"Lookup", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Content-Type") {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
}

// TestJSONTimeout: Connect-Timeout-Ms bounds the call.
func TestJSONTimeout(t *testing.T) {
	fd := &fakeDirectory{lookup: func(ctx context.Context, _ *ktpb.LookupRequest) (*ktpb.LookupResponse, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	_, url := serveJSON(t, Options{RateLimit: -1}, fd)
	start := time.Now()
	st, code, _ := do(t, "POST", url+JSONPrefix+"Lookup", "application/json", `{}`, "Connect-Timeout-Ms", "50")
	if st != 504 || code != "deadline_exceeded" || time.Since(start) > 10*time.Second {
		t.Fatalf("HTTP %d %s after %v", st, code, time.Since(start))
	}
}

func TestJSONCodeNames(t *testing.T) {
	for c, want := range map[codes.Code]string{
		codes.OK: "ok", codes.Canceled: "canceled", codes.InvalidArgument: "invalid_argument",
		codes.DeadlineExceeded: "deadline_exceeded", codes.ResourceExhausted: "resource_exhausted",
		codes.FailedPrecondition: "failed_precondition", codes.DataLoss: "data_loss", codes.Unauthenticated: "unauthenticated",
	} {
		if got := JSONCode(c); got != want {
			t.Errorf("JSONCode(%v) = %q, want %q", c, got, want)
		}
	}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if ParseJSONCode(JSONCode(c)) != c {
			t.Errorf("%v does not round-trip", c)
		}
	}
	if ParseJSONCode("nope") != codes.Unknown {
		t.Error("unknown name")
	}
}

// FuzzJSONRequest: no body makes the handler answer anything but 200 or a
// well-formed error, nor panic, nor reach the directory with a message it
// did not decode.
func FuzzJSONRequest(f *testing.F) {
	for _, s := range []string{`{}`, `{"handle":"tel:+1"}`, `{"handles":["a"],"knownSize":"1"}`, `{"index":"AAAA"}`,
		`{"change":{"handle":"a","changeRecord":"AQI="},"credential":"x"}`, `{"changes":[{}]}`, `[`, `{"x":1}`, "\xff"} {
		f.Add(uint8(1), s)
		f.Add(uint8(5), s)
	}
	s, h, err := NewWithJSON(Options{RateLimit: -1, MaxRecvMsgSize: 4 << 10, Logger: discardLogger()}, &fakeDirectory{}, fakeLog{})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Stop()
	methods := ktpb.Directory_ServiceDesc.Methods
	f.Fuzz(func(t *testing.T, m uint8, body string) {
		method := methods[int(m)%len(methods)].MethodName
		req := httptest.NewRequest("POST", JSONPrefix+method, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == 200 {
			return
		}
		var e jsonError
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code == "" {
			t.Fatalf("HTTP %d with body %q", rec.Code, rec.Body.Bytes())
		}
		if e.Code == "internal" || rec.Code != HTTPStatus(ParseJSONCode(e.Code)) {
			t.Fatalf("HTTP %d %s %q for %q", rec.Code, e.Code, e.Message, body)
		}
	})
}
