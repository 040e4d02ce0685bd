package attacks

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/client"
	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/logapi"
)

// rawCodec sends pre-encoded request bytes, so that a request can carry
// what no generated type would produce (unknown fields).
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = bytes.Clone(b)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// HostileCase is one hostile request and what it got.
type HostileCase struct {
	Interface, Request string
	// Got is the gRPC code or HTTP status returned; OK whether it is the
	// clear rejection expected.
	Got string
	OK  bool
}

// countChanges reads the whole log and counts its change records.
func countChanges(ctx context.Context, r log.Reader) (int, uint64, error) {
	raw, err := r.Checkpoint(ctx)
	if err != nil {
		return 0, 0, err
	}
	size, err := parseSize(raw)
	if err != nil {
		return 0, 0, err
	}
	n := 0
	for i := uint64(0); i < size; {
		es, err := r.Entries(ctx, i, size)
		if err != nil {
			return 0, 0, err
		}
		for _, e := range es {
			if len(e) > 0 {
				if en, err := api.ParseEntry(e); err == nil && en.Type() == api.TypeChange {
					n++
				}
			}
		}
		i += uint64(len(es))
	}
	return n, size, nil
}

func parseSize(cp []byte) (uint64, error) {
	lines := strings.SplitN(string(cp), "\n", 3)
	if len(lines) < 3 {
		return 0, fmt.Errorf("malformed checkpoint")
	}
	var n uint64
	_, err := fmt.Sscan(lines[1], &n)
	return n, err
}

// A10: hostile input at the directory's gRPC API, the log's HTTP read API
// and the auditor's witness and gossip endpoints.
func runA10(ctx context.Context, w *World, r *Result) error {
	d, err := w.Deploy(ctx, Options{})
	if err != nil {
		return err
	}
	aud, err := w.StartAuditor(ctx, "auditor-1", d.Keys, d.LogURL, AuditorOptions{Cosign: true})
	if err != nil {
		return err
	}
	owner, err := d.NewDevice(ctx, nil, client.Config{})
	if err != nil {
		return err
	}
	if err := d.Enroll(ctx, owner, bob, false); err != nil {
		return err
	}
	sender, err := d.NewDevice(ctx, nil, client.Config{Auditors: []string{aud.URL}})
	if err != nil {
		return err
	}
	// The sender signs with a device of its handle (design.md 12.3).
	if err := d.Enroll(ctx, sender, alice, false); err != nil {
		return err
	}
	if _, err := sender.Encrypt(ctx, bob, []byte("hi")); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if err := aud.AwaitAudited(ctx, trustedSize(ctx, sender)); err != nil {
		return err
	}
	if _, err := sender.Gossip(ctx); err != nil {
		return fmt.Errorf("control: gossip: %w", err)
	}
	r.Control = "well-formed requests at each interface succeed: lookup and encrypt over gRPC, the read API (what the auditor follows), gossip with the auditor"

	reader := logapi.NewClient(d.LogURL, nil)
	changes0, _, err := countChanges(ctx, reader)
	if err != nil {
		return err
	}
	stored0, err := aud.Store.Count()
	if err != nil {
		return err
	}

	var cases []HostileCase
	add := func(iface, req, got string, ok bool) { cases = append(cases, HostileCase{iface, req, got, ok}) }

	// gRPC directory API.
	conn, err := grpc.NewClient(d.DirAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	dc := ktpb.NewDirectoryClient(conn)
	lc := ktpb.NewLogClient(conn)
	grpcCase := func(req string, err error, want ...codes.Code) {
		c := status.Code(err)
		ok := false
		for _, wc := range want {
			ok = ok || c == wc
		}
		add("gRPC Directory/Log/Operator", req, c.String(), ok)
	}
	big := bytes.Repeat([]byte{0xff}, 1<<20)
	_, err = dc.Lookup(ctx, &ktpb.LookupRequest{Handle: "bob@\x00example.com"})
	grpcCase("Lookup of a handle with a NUL byte", err, codes.InvalidArgument)
	_, err = dc.Lookup(ctx, &ktpb.LookupRequest{Handle: strings.Repeat("a", 100_000) + "@example.com"})
	grpcCase("Lookup of a 100 KB handle", err, codes.InvalidArgument)
	_, err = dc.Change(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{{Handle: bob, ChangeRecord: []byte("garbage"), Opening: make([]byte, 32), DeviceSet: []byte{1}}}})
	grpcCase("Change with a garbage change record", err, codes.InvalidArgument)
	_, err = dc.Change(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{{Handle: bob, DeviceSet: big}}})
	grpcCase("Change with a 1 MiB device set", err, codes.ResourceExhausted)
	_, err = dc.Enroll(ctx, &ktpb.EnrollRequest{Change: &ktpb.HandleChange{Handle: "mallory@example.com", ChangeRecord: big[:4000]}, Credential: "kt1.0.x"})
	grpcCase("Enroll with a 0xff-filled record and a forged token", err, codes.InvalidArgument, codes.PermissionDenied)
	_, err = dc.Monitor(ctx, &ktpb.MonitorRequest{Index: []byte{1, 2, 3}})
	grpcCase("Monitor with a 3-byte index", err, codes.InvalidArgument)
	_, err = dc.BatchLookup(ctx, &ktpb.BatchLookupRequest{Handles: slicesRepeat(bob, 1000)})
	grpcCase("BatchLookup of 1000 handles", err, codes.InvalidArgument, codes.ResourceExhausted)
	_, err = lc.GetEntries(ctx, &ktpb.GetEntriesRequest{Start: 5, End: 2})
	grpcCase("GetEntries with an inverted range", err, codes.InvalidArgument, codes.OutOfRange)
	_, err = lc.GetInclusionProof(ctx, &ktpb.GetInclusionProofRequest{Index: 1 << 62, Size: 1 << 63})
	grpcCase("GetInclusionProof beyond the log", err, codes.InvalidArgument, codes.OutOfRange)
	// The Operator service (private listener): garbage, and a well-formed
	// recovery change signed by a key that is not the recovery key.
	_, err = d.Operator.Recover(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{{Handle: bob, ChangeRecord: big[:300], Opening: make([]byte, 32), DeviceSet: []byte{0}}}})
	grpcCase("Operator Recover with a garbage record", err, codes.InvalidArgument)
	if res, err := owner.Lookup(ctx, bob); err == nil {
		_, notRecovery, _ := ed25519.GenerateKey(nil)
		hc, err := client.NewChange(Origin, res, res.DeviceSet, api.AuthRecovery, notRecovery)
		if err != nil {
			return err
		}
		_, err = d.Operator.Recover(ctx, &ktpb.ChangeRequest{Changes: []*ktpb.HandleChange{hc}})
		grpcCase("Operator Recover signed by a key that is not the recovery key", err, codes.PermissionDenied)
	} else {
		return err
	}
	// A LookupRequest with an unknown field 99 (varint 1) after the handle.
	rawReq := append([]byte{0x0a, byte(len(bob))}, bob...)
	rawReq = append(rawReq, 0x98, 0x06, 0x01)
	var rawResp []byte
	err = conn.Invoke(ctx, "/kt.v1.Directory/Lookup", &rawReq, &rawResp, grpc.ForceCodec(rawCodec{}))
	grpcCase("Lookup with an unknown field", err, codes.InvalidArgument)
	garbage := []byte{0xff, 0xff, 0xff, 0xff, 0x0f}
	err = conn.Invoke(ctx, "/kt.v1.Directory/Change", &garbage, &rawResp, grpc.ForceCodec(rawCodec{}))
	grpcCase("Change whose body is not protobuf", err, codes.InvalidArgument)

	// HTTP log read API.
	hc := &http.Client{Timeout: 5 * time.Second}
	httpCase := func(iface, desc, method, url string, body []byte, want ...int) {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, url, rd)
		if err != nil {
			add(iface, desc, err.Error(), false)
			return
		}
		resp, err := hc.Do(req)
		if err != nil {
			add(iface, desc, err.Error(), false)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		ok := false
		for _, s := range want {
			ok = ok || resp.StatusCode == s
		}
		path := url
		if i := strings.Index(strings.TrimPrefix(url, "http://"), "/"); i >= 0 {
			path = strings.TrimPrefix(url, "http://")[i:]
		}
		add(iface, fmt.Sprintf("%s (%s %s)", desc, method, short(path)), fmt.Sprint(resp.StatusCode), ok)
	}
	L := d.LogURL
	httpCase("log read API", "entries with a non-numeric start", "GET", L+logapi.PathEntries+"?start=abc&end=1", nil, 400)
	httpCase("log read API", "entries with an inverted range", "GET", L+logapi.PathEntries+"?start=5&end=2", nil, 400)
	httpCase("log read API", "entries up to 2^64-1", "GET", L+logapi.PathEntries+"?start=0&end=18446744073709551615", nil, 400, 404, 416)
	httpCase("log read API", "entries with an unknown parameter", "GET", L+logapi.PathEntries+"?start=0&end=1&extra=1", nil, 400)
	httpCase("log read API", "inclusion proof with a non-canonical number", "GET", L+logapi.PathInclusion+"?index=01&size=2", nil, 400)
	httpCase("log read API", "path traversal", "GET", L+"/log/v1/../../etc/passwd", nil, 400, 404)
	httpCase("log read API", "1 MiB POST to the checkpoint", "POST", L+logapi.PathCheckpoint, big, 405)
	httpCase("log read API", "70 KB query", "GET", L+logapi.PathEntries+"?start="+strings.Repeat("9", 70_000), nil, 400, 414, 431)

	// Auditor endpoints.
	A := aud.URL
	otherSkey, _, _ := note.GenerateKey(rand.Reader, Origin)
	otherSigner, _ := note.NewSigner(otherSkey)
	cp, _ := note.Sign(&note.Note{Text: Origin + "\n1\n" + strings.Repeat("A", 43) + "=\n"}, otherSigner)
	httpCase("auditor gossip", "gossip of a non-checkpoint", "POST", A+"/kt/v1/gossip", []byte("not a checkpoint"), 404)
	httpCase("auditor gossip", "gossip of 1 MiB", "POST", A+"/kt/v1/gossip", big, 413)
	httpCase("auditor gossip", "gossip of a checkpoint signed by another key", "POST", A+"/kt/v1/gossip", cp, 400)
	httpCase("auditor gossip", "gossip for an unknown origin", "POST", A+"/kt/v1/gossip", []byte("other.example/log\n1\nAAAA\n\n— x y\n"), 404)
	httpCase("auditor gossip", "gossip of a malformed evidence bundle", "POST", A+"/kt/v1/gossip", []byte("kt-evidence/v1\ncheckpoint !!!\n"), 400)
	httpCase("auditor witness", "add-checkpoint with a malformed body", "POST", A+"/add-checkpoint", []byte("old 1\nnot base64\n\n"), 400)
	httpCase("auditor witness", "add-checkpoint of a checkpoint signed by another key", "POST", A+"/add-checkpoint", append([]byte("old 0\n\n"), cp...), 403)
	httpCase("auditor witness", "add-checkpoint of 1 MiB", "POST", A+"/add-checkpoint", big, 413)
	httpCase("auditor", "checkpoint with a repeated parameter", "GET", A+"/kt/v1/checkpoint?origin=a&origin=b", nil, 400)
	httpCase("auditor", "evidence path traversal", "GET", A+"/kt/v1/evidence/..%2f..%2fstate", nil, 400, 404)

	// Nothing stored; every service still answers.
	var bad []string
	for _, c := range cases {
		if !c.OK {
			bad = append(bad, fmt.Sprintf("%s: %s: got %s", c.Interface, c.Request, c.Got))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("unclear rejections:\n  %s", strings.Join(bad, "\n  "))
	}
	if res, err := sender.Lookup(ctx, "mallory@example.com"); err != nil || res.Registered {
		return fmt.Errorf("after the hostile requests: mallory registered %v, %v", res != nil && res.Registered, err)
	}
	if _, err := sender.Encrypt(ctx, bob, []byte("still here")); err != nil {
		return fmt.Errorf("the directory no longer answers: %w", err)
	}
	changes1, size1, err := countChanges(ctx, reader)
	if err != nil {
		return fmt.Errorf("the read API no longer answers: %w", err)
	}
	if changes1 != changes0 {
		return fmt.Errorf("the log holds %d change records, %d before the hostile requests", changes1, changes0)
	}
	if err := aud.AwaitAudited(ctx, size1); err != nil {
		return fmt.Errorf("the auditor no longer audits: %w", err)
	}
	if _, err := sender.Gossip(ctx); err != nil {
		return fmt.Errorf("the auditor no longer answers gossip: %w", err)
	}
	st := aud.Status()[0]
	if st.Violations != 0 || len(st.Evidence) != 0 || st.Frozen != "" {
		return fmt.Errorf("the auditor recorded something: %+v", st)
	}
	stored1, err := aud.Store.Count()
	if err != nil {
		return err
	}
	by := map[string]map[string]int{}
	for _, c := range cases {
		if by[c.Interface] == nil {
			by[c.Interface] = map[string]int{}
		}
		by[c.Interface][c.Got]++
	}
	var ifaces []string
	for k := range by {
		ifaces = append(ifaces, k)
	}
	sort.Strings(ifaces)
	for _, iface := range ifaces {
		var parts []string
		n := 0
		for code, k := range by[iface] {
			parts = append(parts, fmt.Sprintf("%s×%d", code, k))
			n += k
		}
		sort.Strings(parts)
		who := ByDirectory
		switch {
		case strings.HasPrefix(iface, "auditor"):
			who = ByAuditor
		case iface == "log read API":
			who = ByLogAPI
		}
		r.detect(Detection{By: who, Polls: n, Detail: cases,
			Evidence: fmt.Sprintf("%s: %d hostile requests, each refused (%s)", iface, n, strings.Join(parts, ", "))})
	}
	r.note("after all %d requests: no change record added (%d before and after), nothing registered, the auditor's store key count is %d before and %d after (its own progress only), no violation or evidence; lookups, encryption, the read API, audit and gossip still work",
		len(cases), changes0, stored0, stored1)
	return nil
}

func slicesRepeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func short(s string) string {
	if len(s) > 80 {
		return s[:60] + fmt.Sprintf("…(%d bytes)", len(s))
	}
	return s
}
