package grpcserver

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/keytrans/kt/api/ktpb"
)

// serveLimited runs a public server with opts on a loopback listener
// limited to perPeer connections per peer and returns its address.
func serveLimited(t *testing.T, opts Options, perPeer int) string {
	t.Helper()
	opts.Logger = discardLogger()
	s, err := New(opts, &fakeDirectory{}, fakeLog{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(LimitConnsPerPeer(ln, perPeer))
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

// halfOpen opens an HTTP/2 connection and sends HEADERS for n Lookup calls
// and no DATA: the calls' requests never arrive.
func halfOpen(t *testing.T, addr string, n int) (net.Conn, *http2.Framer) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for i := range n {
		hb.Reset()
		for _, f := range [][2]string{
			{":method", "POST"}, {":scheme", "http"}, {":path", ktpb.Directory_Lookup_FullMethodName},
			{":authority", addr}, {"content-type", "application/grpc"}, {"te", "trailers"},
		} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	return c, fr
}

// endedStreams reads frames until d passes and counts the streams the
// server ended (RST_STREAM, or trailers with END_STREAM).
func endedStreams(t *testing.T, c net.Conn, fr *http2.Framer, d time.Duration) int {
	t.Helper()
	ended := map[uint32]bool{}
	c.SetReadDeadline(time.Now().Add(d))
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, io.EOF) {
			return len(ended)
		}
		if err != nil {
			t.Fatalf("reading frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			ended[f.StreamID] = true
		case *http2.HeadersFrame:
			if f.StreamEnded() {
				ended[f.StreamID] = true
			}
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		}
	}
}

// TestHalfOpenCallsAreCut is issue 17 item 6: calls that send their
// headers and never their request (half-open) are cancelled after
// RecvTimeout, and a connection carries at most MaxConcurrentStreams of
// them; with a long RecvTimeout (the control) they are still held.
func TestHalfOpenCallsAreCut(t *testing.T) {
	addr := serveLimited(t, Options{RateLimit: -1, RecvTimeout: 300 * time.Millisecond, MaxConcurrentStreams: 20}, 4)
	c, fr := halfOpen(t, addr, 20)
	if n := endedStreams(t, c, fr, 2*time.Second); n != 20 {
		t.Fatalf("%d of 20 half-open calls ended within 2s, want all (receive timeout 300ms)", n)
	}

	control := serveLimited(t, Options{RateLimit: -1, RecvTimeout: time.Hour}, 4)
	c, fr = halfOpen(t, control, 20)
	if n := endedStreams(t, c, fr, time.Second); n != 0 {
		t.Fatalf("control: %d half-open calls ended with a 1h receive timeout", n)
	}
}

// TestConnsPerPeerLimited: a peer's connections beyond the limit are
// closed at once; those within it stay open.
func TestConnsPerPeerLimited(t *testing.T) {
	addr := serveLimited(t, Options{RateLimit: -1}, 3)
	var conns []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
		time.Sleep(20 * time.Millisecond) // accepted in order
	}
	for i, c := range conns {
		closed := isClosed(c)
		if i < 3 && closed {
			t.Errorf("connection %d (within the limit of 3) was closed", i)
		}
		if i >= 3 && !closed {
			t.Errorf("connection %d (beyond the limit of 3) is open", i)
		}
	}
	// Closing one frees its slot.
	conns[0].Close()
	time.Sleep(100 * time.Millisecond)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if isClosed(c) {
		t.Fatal("a new connection after one closed was closed, want it held open")
	}
}

// isClosed reads what the server sends (its HTTP/2 settings, if it serves
// the connection) for 300ms and reports whether it closed the connection.
func isClosed(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 1024)
	for {
		_, err := c.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return false
		}
		if err != nil {
			return true
		}
	}
}
