package main

import (
	"context"
	"net"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/internal/testing/ktctltest"
)

// lyingDirectory serves the fixture's Operator and Log services over gRPC,
// passing each History answer through edit.
type lyingDirectory struct {
	ktpb.UnimplementedOperatorServer
	ktpb.UnimplementedLogServer
	op   ktpb.OperatorClient
	log  ktpb.LogClient
	edit func(*ktpb.MonitorResponse)
}

func (l *lyingDirectory) History(ctx context.Context, req *ktpb.MonitorRequest) (*ktpb.MonitorResponse, error) {
	r, err := l.op.History(ctx, req)
	if err == nil {
		l.edit(r)
	}
	return r, err
}

func (l *lyingDirectory) GetCheckpoint(ctx context.Context, req *ktpb.GetCheckpointRequest) (*ktpb.Checkpoint, error) {
	return l.log.GetCheckpoint(ctx, req)
}

func (l *lyingDirectory) GetEntries(ctx context.Context, req *ktpb.GetEntriesRequest) (*ktpb.Entries, error) {
	return l.log.GetEntries(ctx, req)
}

func (l *lyingDirectory) GetInclusionProof(ctx context.Context, req *ktpb.GetInclusionProofRequest) (*ktpb.Proof, error) {
	return l.log.GetInclusionProof(ctx, req)
}

func (l *lyingDirectory) GetConsistencyProof(ctx context.Context, req *ktpb.GetConsistencyProofRequest) (*ktpb.Proof, error) {
	return l.log.GetConsistencyProof(ctx, req)
}

func serveLying(t *testing.T, f *ktctltest.Fixture, edit func(*ktpb.MonitorResponse)) string {
	t.Helper()
	oc, err := grpc.NewClient(f.OperatorAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { oc.Close() })
	ld := &lyingDirectory{op: ktpb.NewOperatorClient(oc), log: ktpb.NewLogClient(f.Conn), edit: edit}
	s := grpc.NewServer()
	ktpb.RegisterOperatorServer(s, ld)
	ktpb.RegisterLogServer(s, ld)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// TestDiffLyingDirectory checks that diff refuses to show a device set
// that the directory's answer (the Operator service's History) does not
// prove.
func TestDiffLyingDirectory(t *testing.T) {
	f := ktctltest.Start(t)
	for _, tc := range []struct {
		name   string
		edit   func(*ktpb.MonitorResponse)
		stderr string
	}{
		{"ghost version withheld", func(r *ktpb.MonitorResponse) { r.Changes = r.Changes[:3] }, "map proof"},
		{"version dropped from the middle", func(r *ktpb.MonitorResponse) { r.Changes = slices.Delete(r.Changes, 1, 2) }, "version chain"},
		{"device set swapped", func(r *ktpb.MonitorResponse) {
			r.Changes[3].DeviceSet, r.Changes[3].Opening = r.Changes[1].DeviceSet, r.Changes[1].Opening
		}, "does not open to the device set served"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serveLying(t, f, tc.edit)
			runCLI(t, "diff", "+14155550100", "0", "latest", "--grpc", addr, "--operator", addr, "--data-dir", f.DataDir).
				want(t, exitVerify, []string{"!added"}, tc.stderr)
		})
	}
	// Unchanged, the proxy's answers verify.
	addr := serveLying(t, f, func(*ktpb.MonitorResponse) {})
	runCLI(t, "diff", "+14155550100", "0", "latest", "--grpc", addr, "--operator", addr, "--data-dir", f.DataDir).want(t, exitOK, []string{"added"})
}
