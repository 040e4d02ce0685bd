package trillian

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// dialServiceConfig balances calls over every address (round_robin: a dead
// server's connection leaves the rotation until it reconnects) and retries
// the log service's calls that found a server unavailable. Retrying is
// safe for every TrillianLog call this package makes: the reads are
// idempotent, and QueueLeaf of a leaf that is already queued or logged
// returns the earlier copy (Trillian deduplicates by leaf identity hash).
// The admin service (CreateTree) is not retried: a retried CreateTree
// could create two trees.
const dialServiceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "methodConfig": [{
    "name": [{"service": "trillian.TrillianLog"}],
    "retryPolicy": {
      "maxAttempts": 5,
      "initialBackoff": "0.05s",
      "maxBackoff": "1s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// Dial returns a connection, for [Config.Conn], that spreads calls over
// several trillian_log_server instances of one cluster (host:port each,
// all serving the same database) and fails over between them: a server
// that dies leaves the rotation, and a call that found it unavailable is
// retried on another. Several servers need nothing else: any of them
// serves any call, because all state is in the database.
//
// Without opts the connection is plaintext (insecure credentials), as
// Trillian serves without --tls_cert_file; pass
// grpc.WithTransportCredentials to override. The caller closes the
// connection.
//
// SPEC(design.md 17)
func Dial(addrs []string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if len(addrs) == 0 {
		return nil, errors.New("trillian: Dial needs at least one address")
	}
	state := resolver.State{}
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("trillian: address %q: want host:port", a)
		}
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	r := manual.NewBuilderWithScheme("kt-trillian")
	r.InitialState(state)
	all := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(dialServiceConfig),
	}, opts...)
	conn, err := grpc.NewClient(r.Scheme()+":///"+strings.Join(addrs, ","), all...)
	if err != nil {
		return nil, fmt.Errorf("trillian: dialing %v: %w", addrs, err)
	}
	return conn, nil
}
