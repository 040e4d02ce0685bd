package conformance

import (
	"bytes"
	"log/slog"
	"net/http/httptest"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/keytrans/kt/log"
	"github.com/keytrans/kt/log/logapi"
)

// CheckHTTP runs [CheckReader] on r as HTTP clients see it: served by
// [logapi.NewHandler] on a loopback test server and read back with
// [logapi.Client]. A backend's tests call both CheckReader and CheckHTTP.
func CheckHTTP(t testing.TB, r log.Reader, origin string, v note.Verifier) [][]byte {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	srv := httptest.NewServer(logapi.NewHandler(r, logapi.WithLogger(logger)))
	defer srv.Close()
	return CheckReader(t, logapi.NewClient(srv.URL, srv.Client()), origin, v)
}

// testWriter sends the handler's log to the test's log. The server is
// closed before the test ends, so nothing logs after it.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimSuffix(p, []byte("\n")))
	return len(p), nil
}
