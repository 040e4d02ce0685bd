package grpcserver

import (
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/keytrans/kt/api/ktpb"
)

// BenchmarkUnaryLoopback measures Lookups through every interceptor, over
// a real loopback connection, against a fake that answers at once; client
// and server share the machine. ns/op is the inverse of throughput.
func BenchmarkUnaryLoopback(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts *Options // nil: a bare grpc.Server, for the baseline
	}{
		{"bare-grpc", nil},
		{"edge", &Options{RateLimit: 1e9, RateBurst: 1 << 30}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var s *grpc.Server
			if bc.opts == nil {
				s = grpc.NewServer()
				ktpb.RegisterDirectoryServer(s, &fakeDirectory{})
			} else {
				bc.opts.Logger = discardLogger()
				var err error
				if s, err = New(*bc.opts, &fakeDirectory{}, fakeLog{}); err != nil {
					b.Fatal(err)
				}
			}
			c := ktpb.NewDirectoryClient(dialBench(b, serveBench(b, s), ""))
			req := &ktpb.LookupRequest{Handle: "tel:+15551234567", KnownSize: 12345}
			b.ReportAllocs()
			b.SetParallelism(8) // 16 callers in flight on 2 cores: throughput, not latency
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.Lookup(b.Context(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func BenchmarkFindUnknown(b *testing.B) {
	req := &ktpb.ChangeRequest{}
	for range 16 {
		req.Changes = append(req.Changes, &ktpb.HandleChange{Handle: "tel:+15551234567", ChangeRecord: make([]byte, 237), Opening: make([]byte, 32), DeviceSet: make([]byte, 115)})
	}
	m := req.ProtoReflect()
	b.ReportAllocs()
	for b.Loop() {
		if _, found := findUnknown(m); found {
			b.Fatal("found")
		}
	}
}

func BenchmarkLimiterAllow(b *testing.B) {
	l := newLimiter(1e9, 1<<30, DefaultMaxPeers)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		l.allow("192.0.2.1", 1, now)
	}
}
