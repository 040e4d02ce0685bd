package e2e

import (
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keytrans/kt/api"
	"github.com/keytrans/kt/api/ktpb"
	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/directory/grpcserver"
	"github.com/keytrans/kt/log"
)

// device is a client device: an ID, an Ed25519 signing key and an X25519
// HPKE key.
type device struct {
	id   [16]byte
	sign ed25519.PrivateKey
	hpke []byte
}

func newDevice(t testing.TB) *device {
	t.Helper()
	d := &device{}
	rand.Read(d.id[:])
	_, d.sign, _ = ed25519.GenerateKey(nil)
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d.hpke = k.PublicKey().Bytes()
	return d
}

// rekeyed returns the same device (same ID) with fresh keys.
func (d *device) rekeyed(t testing.TB) *device {
	n := newDevice(t)
	n.id = d.id
	return n
}

func (d *device) pub() [32]byte { return [32]byte(d.sign.Public().(ed25519.PublicKey)) }

func (d *device) api() api.Device {
	return api.Device{ID: d.id, Suite: api.SuiteX25519, HPKEKey: d.hpke, SigningKey: d.pub(), Created: 1700000000}
}

// deviceSet is the device set of account holding ds, sorted by ID.
func deviceSet(account [16]byte, ds ...*device) *api.DeviceSet {
	s := &api.DeviceSet{AccountID: account}
	for _, d := range ds {
		s.Devices = append(s.Devices, d.api())
	}
	slices.SortFunc(s.Devices, func(a, b api.Device) int { return slices.Compare(a.ID[:], b.ID[:]) })
	return s
}

// handleState is what the owner's client tracks about its handle: its
// canonical form, VRF index (learned from a verified lookup), and the
// latest accepted version and leaf hash.
type handleState struct {
	origin  string
	handle  string
	index   [32]byte
	version uint64
	leaf    [32]byte
}

// change builds a change of h to set, signed by signer.
func (h *handleState) change(kind api.AuthKind, signer ed25519.PrivateKey, set *api.DeviceSet) *ktpb.HandleChange {
	version := h.version + 1
	ds, err := set.MarshalBinary()
	if err != nil {
		panic(err)
	}
	var opening [32]byte
	rand.Read(opening[:])
	rec := &api.ChangeRecord{
		Index:       h.index,
		Version:     version,
		Commitment:  api.Commit(opening, h.index, version, ds),
		Prev:        h.leaf,
		Kind:        kind,
		Authorizers: set.Authorizers(),
	}
	rec.Sign(h.origin, signer)
	b, err := rec.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return &ktpb.HandleChange{Handle: h.handle, ChangeRecord: b, Opening: opening[:], DeviceSet: ds}
}

// accepted records that hc was logged.
func (h *handleState) accepted(hc *ktpb.HandleChange) {
	h.version++
	h.leaf = api.LeafHash(hc.ChangeRecord)
}

// server is a directory behind its gRPC edge on a 127.0.0.1 listener.
type server struct {
	d    *directory.Directory
	srv  *grpc.Server
	conn *grpc.ClientConn
	dir  ktpb.DirectoryClient
	logc ktpb.LogClient
	done chan error
}

// serve starts the gRPC edge for d on a fresh loopback port and connects a
// client to it.
func serve(t testing.TB, d *directory.Directory, opts grpcserver.Options) *server {
	t.Helper()
	srv, err := grpcserver.New(opts, d, d)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{d: d, srv: srv, done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		srv.Stop()
		t.Fatal(err)
	}
	s.conn, s.dir, s.logc = conn, ktpb.NewDirectoryClient(conn), ktpb.NewLogClient(conn)
	return s
}

// stop closes the client connection, the gRPC server and the directory.
func (s *server) stop(ctx context.Context) error {
	s.conn.Close()
	s.srv.GracefulStop()
	if err := <-s.done; err != nil {
		return err
	}
	return s.d.Close(ctx)
}

// grpcReader is a [log.Reader] over the public Log service: what an auditor
// outside the operator sees.
type grpcReader struct{ c ktpb.LogClient }

var _ log.Reader = grpcReader{}

func (r grpcReader) Checkpoint(ctx context.Context) ([]byte, error) {
	cp, err := r.c.GetCheckpoint(ctx, &ktpb.GetCheckpointRequest{})
	if err != nil {
		return nil, err
	}
	return cp.GetNote(), nil
}

func (r grpcReader) Entries(ctx context.Context, start, end uint64) ([][]byte, error) {
	es, err := r.c.GetEntries(ctx, &ktpb.GetEntriesRequest{Start: start, End: end})
	if err != nil {
		return nil, err
	}
	return es.GetEntries(), nil
}

func (r grpcReader) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	p, err := r.c.GetInclusionProof(ctx, &ktpb.GetInclusionProofRequest{Index: index, Size: size})
	if err != nil {
		return nil, err
	}
	return p.GetHashes(), nil
}

func (r grpcReader) ConsistencyProof(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
	p, err := r.c.GetConsistencyProof(ctx, &ktpb.GetConsistencyProofRequest{OldSize: oldSize, NewSize: newSize})
	if err != nil {
		return nil, err
	}
	return p.GetHashes(), nil
}

// signingKeys returns the sorted signing keys of a set's devices.
func signingKeys(s *api.DeviceSet) [][32]byte {
	var out [][32]byte
	for _, d := range s.Devices {
		out = append(out, d.SigningKey)
	}
	slices.SortFunc(out, func(a, b [32]byte) int { return slices.Compare(a[:], b[:]) })
	return out
}

func keysOf(ds ...*device) [][32]byte {
	var out [][32]byte
	for _, d := range ds {
		out = append(out, d.pub())
	}
	slices.SortFunc(out, func(a, b [32]byte) int { return slices.Compare(a[:], b[:]) })
	return out
}
