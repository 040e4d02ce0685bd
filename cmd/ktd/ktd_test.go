package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/directory/grpcserver"
	"github.com/keytrans/kt/internal/testing/testkit"
	"github.com/keytrans/kt/log"
)

// testConfig is a configuration for a ktd on dataDir, with every listener
// on a free loopback port and fast epochs.
func testConfig(t *testing.T, dataDir string, extra ...string) *Config {
	t.Helper()
	args := append([]string{
		"--data-dir", dataDir,
		"--grpc-listen", "127.0.0.1:0",
		"--http-listen", "127.0.0.1:0",
		"--operator-listen", "127.0.0.1:0",
		"--metrics-listen", "127.0.0.1:0",
		"--log-checkpoint-interval", "100ms",
		"--directory-epoch-interval", "50ms",
		"--directory-heartbeat-interval", "200ms",
		"--directory-cache-size", "8388608",
	}, extra...)
	cfg, rest, err := loadConfig(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 0 {
		t.Fatalf("rest %q", rest)
	}
	return cfg
}

// daemon is a ktd started by startDaemon.
type daemon struct {
	addrs  addrs
	cancel context.CancelFunc
	done   chan struct{} // closed when run returned
	err    error         // run's result, set before done is closed
	logs   *testkit.SyncBuffer
}

// stop cancels the daemon and returns run's error.
func (d *daemon) stop() error {
	d.cancel()
	<-d.done
	return d.err
}

// startDaemon runs ktd until the test ends (or stop) and waits until its
// listeners are bound.
func startDaemon(t *testing.T, cfg *Config) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{cancel: cancel, done: make(chan struct{}), logs: &testkit.SyncBuffer{}}
	logger := slog.New(slog.NewTextHandler(d.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ready := make(chan addrs, 1)
	go func() {
		d.err = run(ctx, cfg, logger, ready)
		close(d.done)
	}()
	select {
	case d.addrs = <-ready:
	case <-d.done:
		cancel()
		t.Fatalf("ktd did not start: %v\nlogs:\n%s", d.err, d.logs)
	}
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Errorf("ktd stopped with %v", err)
		}
		if t.Failed() {
			t.Logf("ktd logs:\n%s", d.logs)
		}
	})
	return d
}

func grpcConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// waitEpoch polls GetEpoch until the directory serves one (the first epoch
// is closed after startup).
func waitEpoch(t *testing.T, c ktpb.DirectoryClient, knownSize uint64) *ktpb.EpochPart {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for {
		ep, err := c.GetEpoch(ctx, &ktpb.GetEpochRequest{KnownSize: knownSize})
		if err == nil {
			return ep
		}
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("GetEpoch: %v", err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no epoch served: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// verifiedEpoch checks an epoch part against the parameters: the log's
// signature on the checkpoint, the epoch record as its last leaf, and, when
// old is set, consistency with it. It returns the checkpoint size and root
// and the epoch record.
func verifiedEpoch(t *testing.T, p *ktpb.Parameters, ep *ktpb.EpochPart, oldSize uint64, oldRoot []byte) (uint64, []byte, *api.EpochRecord) {
	t.Helper()
	v, err := note.NewVerifier(p.GetLogPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	cp, _, err := log.ParseCheckpoint(ep.GetCheckpoint(), p.GetOrigin(), v)
	if err != nil {
		t.Fatalf("epoch checkpoint: %v", err)
	}
	rec, err := api.ParseEpochRecord(ep.GetEpochRecord())
	if err != nil {
		t.Fatalf("epoch record: %v", err)
	}
	if rec.LogSize != cp.Size-1 {
		t.Fatalf("epoch record log size %d, checkpoint size %d", rec.LogSize, cp.Size)
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(ep.GetEpochRecord())
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, cp.Size-1, cp.Size, leaf, ep.GetInclusionProof(), cp.Hash); err != nil {
		t.Fatalf("epoch record inclusion: %v", err)
	}
	if oldSize > 0 {
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, oldSize, cp.Size, ep.GetConsistencyProof(), oldRoot, cp.Hash); err != nil {
			t.Fatalf("consistency with the earlier checkpoint (size %d -> %d): %v", oldSize, cp.Size, err)
		}
	}
	return cp.Size, cp.Hash, rec
}

func TestDaemonEndToEnd(t *testing.T) {
	dataDir := t.TempDir()
	d := startDaemon(t, testConfig(t, dataDir))

	// Every enabled listener is bound to loopback.
	for name, a := range map[string]string{"grpc": d.addrs.GRPC, "http": d.addrs.HTTP, "operator": d.addrs.Operator, "metrics": d.addrs.Metrics} {
		if host, _, err := net.SplitHostPort(a); err != nil || host != "127.0.0.1" {
			t.Errorf("%s listener %q is not on 127.0.0.1", name, a)
		}
	}

	dc := ktpb.NewDirectoryClient(grpcConn(t, d.addrs.GRPC))
	params, err := dc.GetParameters(t.Context(), &ktpb.GetParametersRequest{})
	if err != nil {
		t.Fatalf("GetParameters: %v", err)
	}
	// The parameters are the keys in the data directory.
	skey, err := os.ReadFile(filepath.Join(dataDir, "log.key"))
	if err != nil {
		t.Fatal(err)
	}
	vkey, err := log.VerifierKey(string(skey))
	if err != nil {
		t.Fatal(err)
	}
	vrfKey, _, err := loadVRFKey(filepath.Join(dataDir, "vrf.key"))
	if err != nil {
		t.Fatal(err)
	}
	recPub, private, _, err := loadRecoveryKey(filepath.Join(dataDir, "recovery.key"))
	if err != nil {
		t.Fatal(err)
	}
	if !private {
		t.Error("the recovery key created on first start is not the private form")
	}
	if params.GetOrigin() != "localhost/kt" || params.GetLogPublicKey() != vkey ||
		params.GetVrfPublicKey() != vrfKey.Public().String() || !bytes.Equal(params.GetRecoveryPublicKey(), recPub) ||
		params.GetEpochIntervalMs() != 50 || params.GetHeartbeatIntervalMs() != 200 {
		t.Errorf("parameters %v do not match the data directory's keys and the configuration", params)
	}
	// Startup logs name the listeners and the public keys.
	for _, s := range []string{d.addrs.GRPC, d.addrs.HTTP, d.addrs.Operator, d.addrs.Metrics, vkey, vrfKey.Public().String()} {
		if !strings.Contains(d.logs.String(), s) {
			t.Errorf("startup logs do not mention %q", s)
		}
	}

	ep := waitEpoch(t, dc, 0)
	size1, root1, rec1 := verifiedEpoch(t, params, ep, 0, nil)

	// The HTTP endpoint: health, the log read API, tlog-tiles.
	if code, body := httpGet(t, "http://"+d.addrs.HTTP+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := httpGet(t, "http://"+d.addrs.HTTP+"/log/v1/checkpoint"); code != http.StatusOK || !strings.HasPrefix(body, "localhost/kt\n") {
		t.Errorf("/log/v1/checkpoint: %d %q", code, body)
	}
	if code, _ := httpGet(t, "http://"+d.addrs.HTTP+"/checkpoint"); code != http.StatusOK {
		t.Errorf("tlog-tiles /checkpoint: %d", code)
	}
	// The Directory's HTTP/JSON API on the same listener: the same
	// parameters as over gRPC.
	resp, err := http.Post("http://"+d.addrs.HTTP+grpcserver.JSONPrefix+"GetParameters", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	jb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var jp ktpb.Parameters
	if err := protojson.Unmarshal(jb, &jp); resp.StatusCode != http.StatusOK || err != nil || !proto.Equal(&jp, params) {
		t.Errorf("GetParameters over HTTP/JSON: %d %v %s", resp.StatusCode, err, jb)
	}

	// The Log service over gRPC agrees with the epoch.
	lc := ktpb.NewLogClient(grpcConn(t, d.addrs.GRPC))
	es, err := lc.GetEntries(t.Context(), &ktpb.GetEntriesRequest{Start: rec1.LogSize, End: rec1.LogSize + 1})
	if err != nil || len(es.GetEntries()) != 1 || !bytes.Equal(es.GetEntries()[0], ep.GetEpochRecord()) {
		t.Errorf("GetEntries of the epoch record: %v, %v", es, err)
	}

	// The edge is in front: an unknown field is refused.
	req := &ktpb.GetEpochRequest{}
	req.ProtoReflect().SetUnknown([]byte{0xa0, 0x06, 0x01}) // field 100, varint 1
	if _, err := dc.GetEpoch(t.Context(), req); status.Code(err) != codes.InvalidArgument {
		t.Errorf("request with an unknown field: %v, want InvalidArgument", err)
	}
	// A domain error crosses the edge with its code: a lookup of a handle
	// that does not normalise.
	if _, err := dc.Lookup(t.Context(), &ktpb.LookupRequest{Handle: "not a handle"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Lookup of a bad handle: %v, want InvalidArgument", err)
	}
	// The Operator service is on its own listener only.
	if _, err := ktpb.NewOperatorClient(grpcConn(t, d.addrs.GRPC)).Recover(t.Context(), &ktpb.ChangeRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("Recover on the public listener: %v, want Unimplemented", err)
	}
	if _, err := ktpb.NewOperatorClient(grpcConn(t, d.addrs.Operator)).Recover(t.Context(), &ktpb.ChangeRequest{}); status.Code(err) == codes.Unimplemented || err == nil {
		t.Errorf("empty Recover on the operator listener: %v, want a domain error", err)
	}

	// Metrics, build_info and pprof (loopback) on the metrics listener.
	code, body := httpGet(t, "http://"+d.addrs.Metrics+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, s := range []string{
		"ktd_build_info{",
		`ktd_grpc_requests_total{code="OK",method="/kt.v1.Directory/GetParameters"} 1`,
		`ktd_grpc_requests_total{code="InvalidArgument",method="/kt.v1.Directory/GetEpoch"} 1`,
		`ktd_grpc_requests_total{code="OK",method="json:/kt.v1.Directory/GetParameters"} 1`,
		`ktd_grpc_errors_total{code="InvalidArgument",method="/kt.v1.Directory/Lookup"} 1`,
		"ktd_grpc_request_duration_seconds_bucket{",
		"ktd_directory_epochs_total",
	} {
		if !strings.Contains(body, s) {
			t.Errorf("/metrics does not contain %q", s)
		}
	}
	if code, _ := httpGet(t, "http://"+d.addrs.Metrics+"/debug/pprof/"); code != http.StatusOK {
		t.Errorf("/debug/pprof/ on loopback: %d", code)
	}

	// Clean shutdown.
	if err := d.stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", d.addrs.GRPC, time.Second); err == nil {
		t.Error("gRPC listener still accepts after shutdown")
	}

	// Restart on the same data directory: same keys, same log, grown
	// consistently.
	d2 := startDaemon(t, testConfig(t, dataDir))
	dc2 := ktpb.NewDirectoryClient(grpcConn(t, d2.addrs.GRPC))
	params2, err := dc2.GetParameters(t.Context(), &ktpb.GetParametersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(params, params2) {
		t.Errorf("parameters changed across a restart:\n%v\n%v", params, params2)
	}
	ep2 := waitEpoch(t, dc2, size1)
	size2, _, rec2 := verifiedEpoch(t, params2, ep2, size1, root1)
	if size2 < size1 || rec2.Epoch < rec1.Epoch {
		t.Errorf("after restart: size %d epoch %d, before: size %d epoch %d", size2, rec2.Epoch, size1, rec1.Epoch)
	}
	if err := d2.stop(); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
}

func TestDaemonStartupFailureReleasesDataDir(t *testing.T) {
	dataDir := t.TempDir()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(t, dataDir, "--metrics-listen", busy.Addr().String())
	err = run(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err == nil || !strings.Contains(err.Error(), "metrics_listen") {
		t.Fatalf("run with a busy metrics port: %v, want an error naming metrics_listen", err)
	}
	// The failed start closed the log and the directory: a new start on
	// the same data directory works.
	d := startDaemon(t, testConfig(t, dataDir))
	waitEpoch(t, ktpb.NewDirectoryClient(grpcConn(t, d.addrs.GRPC)), 0)
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestDaemonRefusesSecondInstance(t *testing.T) {
	dataDir := t.TempDir()
	startDaemon(t, testConfig(t, dataDir))
	err := run(t.Context(), testConfig(t, dataDir), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err == nil {
		t.Fatal("a second ktd on the same data directory started")
	}
	t.Logf("second instance: %v", err)
}

func TestIssueToken(t *testing.T) {
	dataDir := t.TempDir()
	cfg := testConfig(t, dataDir)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	tok, err := issueToken(cfg, logger, "mailto:Alice@Example.COM")
	if err != nil {
		t.Fatal(err)
	}
	// The token is bound to the canonical handle, under the key file the
	// daemon uses.
	key, created, err := loadTokenKey(filepath.Join(dataDir, "enroll-token.key"))
	if err != nil || created {
		t.Fatalf("token key: created=%v, %v", created, err)
	}
	tc, err := directory.NewTokenCredentials(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := tc.Verify(t.Context(), "mailto:alice@example.com", tok); err != nil {
		t.Errorf("token for the canonical handle: %v", err)
	}
	if err := tc.Verify(t.Context(), "mailto:bob@example.com", tok); err == nil {
		t.Error("token accepted for another handle")
	}
	// A token from another data directory's key is refused.
	other, err := issueToken(testConfig(t, t.TempDir()), logger, "mailto:alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if err := tc.Verify(t.Context(), "mailto:alice@example.com", other); err == nil {
		t.Error("token under another key accepted")
	}

	if _, err := issueToken(cfg, logger, "alice"); !errors.Is(err, api.ErrInvalidHandle) {
		t.Errorf("invalid handle: %v", err)
	}
	open := testConfig(t, dataDir, "--enrollment-mode", "open")
	if _, err := issueToken(open, logger, "mailto:a@example.com"); err == nil {
		t.Error("token issued in open mode")
	}
}
