package grpcserver

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestLimiter(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	l := newLimiter(1, 2, 3) // 1 token/s, burst 2, 3 peers

	t.Run("bucket", func(t *testing.T) {
		if !l.allow("a", 1, t0) || !l.allow("a", 1, t0) {
			t.Fatal("burst refused")
		}
		if l.allow("a", 1, t0) {
			t.Fatal("empty bucket allowed a call")
		}
		if !l.allow("a", 1, t0.Add(time.Second)) {
			t.Fatal("refilled token refused")
		}
		// A cost above the burst is charged as the burst.
		if !l.allow("b", 50, t0) || l.allow("b", 1, t0) {
			t.Fatal("cost above burst not capped at the burst")
		}
	})

	t.Run("overflow shares one bucket", func(t *testing.T) {
		if !l.allow("c", 2, t0) {
			t.Fatal("c refused")
		}
		if l.size() != 3 {
			t.Fatalf("size %d, want 3", l.size())
		}
		// The table is full and no bucket is full: d and e share the
		// overflow bucket (burst 2).
		if !l.allow("d", 1, t0.Add(time.Second)) || !l.allow("e", 1, t0.Add(time.Second)) {
			t.Fatal("overflow refused its burst")
		}
		if l.allow("f", 1, t0.Add(time.Second)) {
			t.Fatal("overflow bucket not shared")
		}
		if l.size() != 3 {
			t.Fatalf("size %d, want 3", l.size())
		}
	})

	t.Run("sweep drops full buckets", func(t *testing.T) {
		// After 10 s every bucket is full again; a new peer triggers a sweep.
		later := t0.Add(10 * time.Second)
		if !l.allow("g", 1, later) {
			t.Fatal("g refused")
		}
		if l.size() != 1 {
			t.Fatalf("size %d after the sweep, want 1 (g only)", l.size())
		}
		// Dropping a's full bucket lost nothing: a has its full burst.
		if !l.allow("a", 2, later) || l.allow("a", 1, later) {
			t.Fatal("a's bucket not fresh after the sweep")
		}
	})
}

func TestFindUnknown(t *testing.T) {
	inner, err := structpb.NewStruct(map[string]any{"x": 1.0})
	if err != nil {
		t.Fatal(err)
	}
	outer := &structpb.Struct{Fields: map[string]*structpb.Value{
		"clean":  structpb.NewStringValue("v"),
		"nested": structpb.NewStructValue(inner),
	}}
	if path, found := findUnknown(outer.ProtoReflect()); found {
		t.Fatalf("clean message: unknown fields at %s", path)
	}
	inner.Fields["x"].ProtoReflect().SetUnknown(withUnknown(nil))
	path, found := findUnknown(outer.ProtoReflect())
	if !found {
		t.Fatal("unknown field in a map value not found")
	}
	const want = "google.protobuf.Struct.fields > google.protobuf.Value.struct_value > google.protobuf.Struct.fields > google.protobuf.Value"
	if path != want {
		t.Errorf("path %q, want %q", path, want)
	}
}

func TestPeerKey(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 4000}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 4000}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa::1"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:bbbb::9"), Port: 2}, "2001:db8:1:2::/64"},
		{&net.UnixAddr{Name: "/run/kt.sock", Net: "unix"}, "/run/kt.sock"},
	} {
		ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: tc.addr})
		if got := peerKey(ctx); got != tc.want {
			t.Errorf("peerKey(%v) = %q, want %q", tc.addr, got, tc.want)
		}
	}
	if got := peerKey(context.Background()); got != "unknown" {
		t.Errorf("no peer: %q", got)
	}
}
