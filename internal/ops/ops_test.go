package ops

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestIsLoopback(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:9464", true},
		{"localhost:1", true},
		{"[::1]:1", true},
		{"127.1.2.3:1", true},
		{"0.0.0.0:9464", false},
		{":9464", false},
		{"192.0.2.1:1", false},
		{"example.com:1", false},
		{"127.0.0.1", false}, // not host:port
	} {
		if got := IsLoopback(tc.addr); got != tc.want {
			t.Errorf("IsLoopback(%q) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

func get(t *testing.T, h http.Handler, method, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestMetrics(t *testing.T) {
	reg := NewRegistry("kttest")
	for _, pprof := range []bool{false, true} {
		h := MetricsHandler(reg, pprof)
		code, body := get(t, h, "GET", "/metrics")
		if code != http.StatusOK {
			t.Fatalf("GET /metrics: %d", code)
		}
		for _, s := range []string{"kttest_build_info{", "goversion=", "revision=", "version=", "} 1\n", "go_goroutines", "process_"} {
			if !strings.Contains(body, s) {
				t.Errorf("/metrics lacks %q", s)
			}
		}
		if code, _ := get(t, h, "POST", "/metrics"); code != http.StatusMethodNotAllowed {
			t.Errorf("POST /metrics: %d, want 405", code)
		}
		want := http.StatusNotFound
		if pprof {
			want = http.StatusOK
		}
		if code, _ := get(t, h, "GET", "/debug/pprof/"); code != want {
			t.Errorf("pprof %v: GET /debug/pprof/ answered %d, want %d", pprof, code, want)
		}
	}
}

func TestMetricsServerPprofOnLoopbackOnly(t *testing.T) {
	discard := slogDiscard()
	for addr, want := range map[string]int{"127.0.0.1:0": http.StatusOK, "0.0.0.0:0": http.StatusNotFound} {
		s := MetricsServer(NewRegistry("kttest"), addr, discard)
		if code, _ := get(t, s.Handler, "GET", "/debug/pprof/"); code != want {
			t.Errorf("%s: GET /debug/pprof/ answered %d, want %d", addr, code, want)
		}
	}
}

func slogDiscard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestRun(t *testing.T) {
	if got := Run("kttest", slogDiscard(), func(context.Context) error { return nil }); got != 0 {
		t.Errorf("Run of a run that succeeds: status %d, want 0", got)
	}
	if got := Run("kttest", slogDiscard(), func(context.Context) error { return errors.New("failed") }); got != 1 {
		t.Errorf("Run of a run that fails: status %d, want 1", got)
	}
}
