package grpcserver

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

// grpc-go answers a request body that does not decode with codes.Internal,
// before any interceptor runs, which tells the caller the server failed
// when the caller sent garbage. The server's codec therefore never fails
// to decode: it records the decoding error against the request message,
// and rejectUndecodable, the first interceptor after the ones that only
// observe, answers InvalidArgument for that message before any handler
// sees it. Every method of the API is unary, so each recorded message
// reaches the interceptor exactly once and is removed there.

// undecodableCodec is grpc-go's protobuf codec with decoding errors
// deferred to rejectUndecodable.
type undecodableCodec struct {
	encoding.CodecV2
	failed *sync.Map // request message → decoding error
}

func newUndecodableCodec() undecodableCodec {
	return undecodableCodec{CodecV2: encoding.GetCodecV2(proto.Name), failed: new(sync.Map)}
}

func (c undecodableCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if err := c.CodecV2.Unmarshal(data, v); err != nil {
		c.failed.Store(v, err)
	}
	return nil
}

// rejectUndecodable answers InvalidArgument for a request whose body did
// not decode; nothing of it reaches a handler.
func (c undecodableCodec) rejectUndecodable(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err, ok := c.failed.LoadAndDelete(req); ok {
		return nil, status.Error(codes.InvalidArgument, fmt.Sprintf("malformed request: the body is not a valid %T: %v", req, err))
	}
	return h(ctx, req)
}
