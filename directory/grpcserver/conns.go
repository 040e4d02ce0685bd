package grpcserver

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/tap"
)

// LimitConnsPerPeer returns a listener that accepts at most n open
// connections from one peer (keyed like the rate limiter: IPv4 address or
// IPv6 /64); a peer's further connections are closed as soon as they are
// accepted, before any byte is read. With MaxConcurrentStreams it bounds
// what one peer can hold open: n × MaxConcurrentStreams calls, each for at
// most RecvTimeout before its request arrives. n <= 0 returns ln.
//
// Behind a proxy every caller shares the proxy's address: limit at the
// proxy instead and disable this.
func LimitConnsPerPeer(ln net.Listener, n int) net.Listener {
	if n <= 0 {
		return ln
	}
	return &peerLimitListener{Listener: ln, max: n, open: map[string]int{}}
}

type peerLimitListener struct {
	net.Listener
	max  int
	mu   sync.Mutex
	open map[string]int
}

func (l *peerLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := addrKey(c.RemoteAddr())
		l.mu.Lock()
		if l.open[key] >= l.max {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.open[key]++
		l.mu.Unlock()
		return &peerConn{Conn: c, release: func() {
			l.mu.Lock()
			if l.open[key]--; l.open[key] == 0 {
				delete(l.open, key)
			}
			l.mu.Unlock()
		}}, nil
	}
}

type peerConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *peerConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// errRecvTimeout cancels a call whose request did not arrive in time.
var errRecvTimeout = errors.New("grpcserver: request not received within the receive timeout")

// recvGuard tracks one call between its headers and its request message.
type recvGuard struct {
	state atomic.Int32 // 0 waiting, 1 received, 2 expired
	timer *time.Timer
}

type recvGuardKey struct{}

// recvTap starts, for every call, a timer that cancels the call's context
// unless its request message arrived (received) within timeout. gRPC reads
// a unary call's request before any interceptor runs, with the context the
// tap returns: a call that sent its headers and no data is held by gRPC
// alone, invisible to the rate limiter, and without this only the
// client's own deadline (which a hostile client omits) would end it.
func recvTap(timeout time.Duration) tap.ServerInHandle {
	return func(ctx context.Context, _ *tap.Info) (context.Context, error) {
		ctx, cancel := context.WithCancelCause(ctx)
		g := &recvGuard{}
		g.timer = time.AfterFunc(timeout, func() {
			if g.state.CompareAndSwap(0, 2) {
				cancel(errRecvTimeout)
			}
		})
		return context.WithValue(ctx, recvGuardKey{}, g), nil
	}
}

// received is the first unary interceptor: the request has arrived, so the
// receive timer stops.
func received(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if g, ok := ctx.Value(recvGuardKey{}).(*recvGuard); ok && g.state.CompareAndSwap(0, 1) {
		g.timer.Stop()
	}
	return h(ctx, req)
}
