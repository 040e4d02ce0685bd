package trillian

import (
	"context"
	"net"
	"testing"
	"time"
)

func TestDialRejects(t *testing.T) {
	for _, addrs := range [][]string{nil, {}, {"no-port"}, {"127.0.0.1:8090", ""}} {
		if conn, err := Dial(addrs); err == nil {
			conn.Close()
			t.Errorf("Dial(%q) succeeded", addrs)
		}
	}
}

// TestDialFailover appends through a connection whose first server is
// dead: calls go to the live one.
func TestDialFailover(t *testing.T) {
	env := newMemEnv(t)
	// A port that nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	conn, err := Dial([]string{dead, env.Address})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	lg := openLog(t, testConfig(t, conn, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 20 {
		if _, err := lg.Append(ctx, [][]byte{[]byte{byte(i), 'x'}}); err != nil {
			t.Fatalf("append %d with one of two servers dead: %v", i, err)
		}
	}
}
