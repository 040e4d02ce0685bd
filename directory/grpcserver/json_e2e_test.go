package grpcserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/directory/grpcserver"
	"github.com/keytrans/kt/internal/testing/fixture"
)

// jsonDirectory is a ktpb.DirectoryClient over the HTTP/JSON API, so that
// the client package runs over it unchanged.
type jsonDirectory struct {
	url string
	hc  *http.Client
}

func (j *jsonDirectory) call(ctx context.Context, method string, in, out proto.Message) error {
	body, err := protojson.Marshal(in)
	if err != nil {
		return err
	}
	resp, err := postJSON(ctx, j.hc, j.url+grpcserver.JSONPrefix+method, body)
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	if resp.StatusCode != http.StatusOK {
		return decodeJSONError(resp.StatusCode, b)
	}
	return protojson.Unmarshal(b, out)
}

func postJSON(ctx context.Context, hc *http.Client, url string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return hc.Do(req)
}

// decodeJSONError turns an error answer into a status, checking that the
// HTTP status is the one its code maps to.
func decodeJSONError(httpStatus int, b []byte) error {
	var e struct{ Code, Message string }
	if err := json.Unmarshal(b, &e); err != nil {
		return fmt.Errorf("HTTP %d with a body that is not an error: %q", httpStatus, b)
	}
	c := grpcserver.ParseJSONCode(e.Code)
	if want := grpcserver.HTTPStatus(c); want != httpStatus {
		return fmt.Errorf("HTTP %d for code %s, want %d", httpStatus, e.Code, want)
	}
	return status.Error(c, e.Message)
}

func (j *jsonDirectory) GetParameters(ctx context.Context, in *ktpb.GetParametersRequest, _ ...grpc.CallOption) (*ktpb.Parameters, error) {
	out := new(ktpb.Parameters)
	return out, j.call(ctx, "GetParameters", in, out)
}
func (j *jsonDirectory) Lookup(ctx context.Context, in *ktpb.LookupRequest, _ ...grpc.CallOption) (*ktpb.LookupResponse, error) {
	out := new(ktpb.LookupResponse)
	return out, j.call(ctx, "Lookup", in, out)
}
func (j *jsonDirectory) BatchLookup(ctx context.Context, in *ktpb.BatchLookupRequest, _ ...grpc.CallOption) (*ktpb.BatchLookupResponse, error) {
	out := new(ktpb.BatchLookupResponse)
	return out, j.call(ctx, "BatchLookup", in, out)
}
func (j *jsonDirectory) Monitor(ctx context.Context, in *ktpb.MonitorRequest, _ ...grpc.CallOption) (*ktpb.MonitorResponse, error) {
	out := new(ktpb.MonitorResponse)
	return out, j.call(ctx, "Monitor", in, out)
}
func (j *jsonDirectory) GetEpoch(ctx context.Context, in *ktpb.GetEpochRequest, _ ...grpc.CallOption) (*ktpb.EpochPart, error) {
	out := new(ktpb.EpochPart)
	return out, j.call(ctx, "GetEpoch", in, out)
}
func (j *jsonDirectory) GetRotations(ctx context.Context, in *ktpb.GetRotationsRequest, _ ...grpc.CallOption) (*ktpb.Rotations, error) {
	out := new(ktpb.Rotations)
	return out, j.call(ctx, "GetRotations", in, out)
}
func (j *jsonDirectory) Enroll(ctx context.Context, in *ktpb.EnrollRequest, _ ...grpc.CallOption) (*ktpb.ChangeResponse, error) {
	out := new(ktpb.ChangeResponse)
	return out, j.call(ctx, "Enroll", in, out)
}
func (j *jsonDirectory) Change(ctx context.Context, in *ktpb.ChangeRequest, _ ...grpc.CallOption) (*ktpb.ChangeResponse, error) {
	out := new(ktpb.ChangeResponse)
	return out, j.call(ctx, "Change", in, out)
}

// countingDirectory counts the calls that reach the directory, by method.
type countingDirectory struct {
	ktpb.DirectoryServer
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingDirectory) count(m string) {
	c.mu.Lock()
	c.calls[m]++
	c.mu.Unlock()
}

func (c *countingDirectory) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]int{}
	for k, v := range c.calls {
		m[k] = v
	}
	return m
}

func (c *countingDirectory) GetParameters(ctx context.Context, r *ktpb.GetParametersRequest) (*ktpb.Parameters, error) {
	c.count("GetParameters")
	return c.DirectoryServer.GetParameters(ctx, r)
}
func (c *countingDirectory) Lookup(ctx context.Context, r *ktpb.LookupRequest) (*ktpb.LookupResponse, error) {
	c.count("Lookup")
	return c.DirectoryServer.Lookup(ctx, r)
}
func (c *countingDirectory) BatchLookup(ctx context.Context, r *ktpb.BatchLookupRequest) (*ktpb.BatchLookupResponse, error) {
	c.count("BatchLookup")
	return c.DirectoryServer.BatchLookup(ctx, r)
}
func (c *countingDirectory) Monitor(ctx context.Context, r *ktpb.MonitorRequest) (*ktpb.MonitorResponse, error) {
	c.count("Monitor")
	return c.DirectoryServer.Monitor(ctx, r)
}
func (c *countingDirectory) GetEpoch(ctx context.Context, r *ktpb.GetEpochRequest) (*ktpb.EpochPart, error) {
	c.count("GetEpoch")
	return c.DirectoryServer.GetEpoch(ctx, r)
}
func (c *countingDirectory) Enroll(ctx context.Context, r *ktpb.EnrollRequest) (*ktpb.ChangeResponse, error) {
	c.count("Enroll")
	return c.DirectoryServer.Enroll(ctx, r)
}
func (c *countingDirectory) Change(ctx context.Context, r *ktpb.ChangeRequest) (*ktpb.ChangeResponse, error) {
	c.count("Change")
	return c.DirectoryServer.Change(ctx, r)
}

// capturingDirectory forwards to a directory client but keeps Enroll
// requests instead of sending them.
type capturingDirectory struct {
	ktpb.DirectoryClient
	enroll *ktpb.EnrollRequest
}

func (c *capturingDirectory) Enroll(_ context.Context, r *ktpb.EnrollRequest, _ ...grpc.CallOption) (*ktpb.ChangeResponse, error) {
	c.enroll = r
	return nil, status.Error(codes.Unavailable, "captured")
}

// rawCodec sends a request's bytes as they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}
func (rawCodec) Name() string { return "proto" }

const testMaxRecv = 16 << 10

// TestJSONDirectory runs the client over the HTTP/JSON API against a real
// directory, calling every Directory method, then sends each method
// malformed JSON, unknown fields, an oversized body and an oversized
// message: each answers the code gRPC answers for the same flaw in
// protobuf form, and none reaches the directory.
func TestJSONDirectory(t *testing.T) {
	ctx := t.Context()
	d := fixture.New(t, fixture.Options{})
	cd := &countingDirectory{DirectoryServer: d.Directory, calls: map[string]int{}}
	gs, hh, err := grpcserver.NewWithJSON(grpcserver.Options{RateLimit: -1, MaxRecvMsgSize: testMaxRecv, Logger: fixture.Quiet}, cd, d.Directory)
	if err != nil {
		t.Fatal(err)
	}
	_, conn, err := d.Serve(gs)
	if err != nil {
		t.Fatal(err)
	}
	viaGRPC := ktpb.NewDirectoryClient(conn)
	hs := httptest.NewServer(hh)
	t.Cleanup(hs.Close)
	jd := &jsonDirectory{url: hs.URL, hc: hs.Client()}

	// GetParameters: the same answer over both.
	pj, err := jd.GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil {
		t.Fatalf("GetParameters over JSON: %v", err)
	}
	pg, err := viaGRPC.GetParameters(ctx, &ktpb.GetParametersRequest{})
	if err != nil || !proto.Equal(pj, pg) {
		t.Fatalf("GetParameters: JSON %v, gRPC %v (%v)", pj, pg, err)
	}

	// Enroll, Lookup, Change (a linked device), Monitor, through the
	// client over JSON.
	alice, _, err := d.NewDevice(ctx, jd, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Enroll(ctx, alice, "alice@example.com", false); err != nil {
		t.Fatalf("Enroll over JSON: %v", err)
	}
	alice2, _, err := d.NewDevice(ctx, jd, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := fixture.Link(ctx, alice, alice2, "alice@example.com"); err != nil {
		t.Fatalf("Change over JSON: %v", err)
	}
	reps, err := alice.Monitor(ctx)
	if err != nil || len(reps) != 1 || len(reps[0].Changes) != 2 || len(reps[0].Alerts) != 0 {
		t.Fatalf("Monitor over JSON: %v, %+v", err, reps)
	}
	// Monitor's full answer needs the owner's authorization over JSON too
	// (design.md 13.4, 10.1): 401 without it; records_only for anyone.
	idx := reps[0].State.Index
	if _, err := jd.Monitor(ctx, &ktpb.MonitorRequest{Index: idx[:]}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("unauthorized full Monitor over JSON: %v, want Unauthenticated", err)
	}
	ro, err := jd.Monitor(ctx, &ktpb.MonitorRequest{Index: idx[:], RecordsOnly: true})
	if err != nil || len(ro.GetChanges()) != 2 || len(ro.GetChanges()[1].GetDeviceSet()) != 0 {
		t.Fatalf("records-only Monitor over JSON: %v, %v", err, ro)
	}
	// BatchLookup and GetEpoch, directly.
	br, err := jd.BatchLookup(ctx, &ktpb.BatchLookupRequest{Handles: []string{"Alice@Example.com", "nobody@example.com"}})
	if err != nil || len(br.GetResults()) != 2 || br.GetEpoch() == nil ||
		br.Results[0].GetHandle() != "mailto:alice@example.com" || len(br.Results[0].GetChangeRecord()) == 0 || len(br.Results[1].GetChangeRecord()) != 0 {
		t.Fatalf("BatchLookup over JSON: %v, %v", err, br)
	}
	ep, err := jd.GetEpoch(ctx, &ktpb.GetEpochRequest{})
	if err != nil || len(ep.GetCheckpoint()) == 0 || len(ep.GetEpochRecord()) == 0 {
		t.Fatalf("GetEpoch over JSON: %v, %v", err, ep)
	}
	for _, m := range []string{"GetParameters", "Lookup", "BatchLookup", "Monitor", "GetEpoch", "Enroll", "Change"} {
		if cd.snapshot()[m] == 0 {
			t.Errorf("%s was never called over JSON", m)
		}
	}
	// A domain error maps as on gRPC: an enrollment of a registered
	// handle with a bad credential.
	capt := &capturingDirectory{DirectoryClient: jd}
	mallory, _, err := d.NewDevice(ctx, capt, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.Enroll(ctx, "mallory@example.com", d.Keys.Token.IssueToken("mailto:mallory@example.com"), false); capt.enroll == nil {
		t.Fatalf("no enrollment captured: %v", err)
	}
	valid := capt.enroll
	badCred := proto.Clone(valid).(*ktpb.EnrollRequest)
	badCred.Credential = "not a token"
	_, errJ := jd.Enroll(ctx, badCred)
	_, errG := viaGRPC.Enroll(ctx, badCred)
	if status.Code(errJ) != codes.PermissionDenied || status.Code(errG) != codes.PermissionDenied {
		t.Errorf("bad credential: JSON %v, gRPC %v; want PermissionDenied for both", errJ, errG)
	}

	// Bad input, every method.
	requests := map[string]proto.Message{
		"GetParameters": &ktpb.GetParametersRequest{},
		"Lookup":        &ktpb.LookupRequest{Handle: "mallory@example.com", KnownSize: 3},
		"BatchLookup":   &ktpb.BatchLookupRequest{Handles: []string{"mallory@example.com"}},
		"Monitor":       &ktpb.MonitorRequest{Index: make([]byte, 32), KnownVersion: 1},
		"GetEpoch":      &ktpb.GetEpochRequest{KnownSize: 3},
		"Enroll":        valid,
		"Change":        &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{valid.GetChange()}},
	}
	// big returns m grown beyond the message limit through a string or
	// bytes field, or nil if it has none.
	big := func(m proto.Message) proto.Message {
		m = proto.Clone(m)
		pad := strings.Repeat("a", testMaxRecv)
		switch r := m.(type) {
		case *ktpb.LookupRequest:
			r.Handle = pad
		case *ktpb.BatchLookupRequest:
			r.Handles = append(r.Handles, pad)
		case *ktpb.MonitorRequest:
			r.Index = []byte(pad)
		case *ktpb.EnrollRequest:
			r.Credential = pad
		case *ktpb.ChangeRequest:
			r.Changes = []*ktpb.HandleChange{{Handle: pad}}
		default:
			return nil
		}
		return m
	}
	before := cd.snapshot()
	for method, req := range requests {
		good, err := protojson.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		good = append([]byte(nil), good...)
		wire, _ := proto.Marshal(req)
		type flaw struct {
			name     string
			json     []byte
			grpcBody []byte // nil: no gRPC counterpart
			want     codes.Code
		}
		unknownJSON := append([]byte(`{"surprise":1`), good[1:]...)
		if string(good) == "{}" {
			unknownJSON = []byte(`{"surprise":1}`)
		}
		nestedUnknown := []byte(nil)
		if method == "Enroll" || method == "Change" {
			// An unknown field inside the HandleChange.
			nestedUnknown = bytes.Replace(good, []byte(`"handle":`), []byte(`"surprise":1,"handle":`), 1)
		}
		flaws := []flaw{
			{"malformed JSON", good[:len(good)-1], []byte{0x08}, codes.InvalidArgument},
			{"not an object", []byte(`[1,2]`), []byte{0x0c}, codes.InvalidArgument},
			{"wrong type", []byte(`{"knownSize":{}}`), nil, codes.InvalidArgument},
			{"unknown field", unknownJSON, protowire.AppendBytes(protowire.AppendTag(wire, 99, protowire.BytesType), []byte("x")), codes.InvalidArgument},
			{"oversized body", append(append([]byte(nil), good...), bytes.Repeat([]byte(" "), 3*testMaxRecv)...), nil, codes.ResourceExhausted},
		}
		if nestedUnknown != nil {
			flaws = append(flaws, flaw{"unknown nested field", nestedUnknown, nil, codes.InvalidArgument})
		}
		if b := big(req); b != nil {
			bj, _ := protojson.Marshal(b)
			bw, _ := proto.Marshal(b)
			flaws = append(flaws, flaw{"oversized message", bj, bw, codes.ResourceExhausted})
		}
		for _, f := range flaws {
			t.Run(method+"/"+f.name, func(t *testing.T) {
				resp, err := postJSON(ctx, hs.Client(), hs.URL+grpcserver.JSONPrefix+method, f.json)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				errJ := decodeJSONError(resp.StatusCode, b)
				if status.Code(errJ) != f.want {
					t.Errorf("over JSON: %v, want %v", errJ, f.want)
				}
				if f.grpcBody != nil {
					var out []byte
					errG := conn.Invoke(ctx, "/kt.v1.Directory/"+method, f.grpcBody, &out, grpc.ForceCodecV2(rawCodec{}))
					if status.Code(errG) != status.Code(errJ) {
						t.Errorf("gRPC answers %v, JSON %v", errG, errJ)
					}
				}
			})
		}
	}
	if after := cd.snapshot(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("bad requests reached the directory: calls %v, then %v", before, after)
	}
	// Nothing stored: mallory is still free; then the valid enrollment,
	// over JSON, is accepted at version 1.
	res, err := alice.Lookup(ctx, "mallory@example.com")
	if err != nil || res.Registered {
		t.Fatalf("mallory after the bad requests: %v, %+v", err, res)
	}
	cr, err := jd.Enroll(ctx, valid)
	if err != nil || len(cr.GetLogIndices()) != 1 {
		t.Fatalf("the valid enrollment over JSON: %v", err)
	}
	if _, err := fixture.AwaitVersion(ctx, alice, "mallory@example.com", 1); err != nil {
		t.Fatal(err)
	}
	// A replay of it is stale: Aborted on both.
	_, errJ = jd.Enroll(ctx, valid)
	_, errG = viaGRPC.Enroll(ctx, valid)
	if status.Code(errJ) != codes.Aborted || status.Code(errG) != codes.Aborted {
		t.Errorf("replayed enrollment: JSON %v, gRPC %v; want Aborted", errJ, errG)
	}
}
