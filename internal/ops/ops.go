// Package ops holds what the binaries in cmd/ share around their own
// run function: the signals they stop at, and the Prometheus endpoint of
// the long-running ones (a registry with build_info, /metrics, and pprof
// on loopback only). Libraries never import it: they take their metrics
// through their own small interfaces, which the binaries implement.
package ops

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// StopContext returns a context cancelled at the first SIGINT or SIGTERM,
// the signals every binary stops at. Calling stop restores their default
// action.
func StopContext() (ctx context.Context, stop context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// Run runs a daemon: run gets a context cancelled at the first SIGINT or
// SIGTERM, after which a second signal kills the process at once. Run
// logs "NAME stopped" (at error level with the error when run failed) and
// returns the exit status: 0, or 1 when run failed.
func Run(name string, logger *slog.Logger, run func(ctx context.Context) error) int {
	ctx, stop := StopContext()
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal kills at once
	}()
	if err := run(ctx); err != nil {
		logger.Error(name+" stopped", "err", err)
		return 1
	}
	logger.Info(name + " stopped")
	return 0
}

// IsLoopback reports whether addr (host:port) binds only to loopback:
// host "localhost" or a loopback IP address.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// NewRegistry returns a Prometheus registry of a binary's own collectors
// that already holds NAME_build_info (always 1; labels version, revision
// and goversion from the binary's build information, "unknown" when
// absent) and the Go runtime and process collectors.
func NewRegistry(name string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	version, revision, goVersion := "unknown", "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		version, goVersion = bi.Main.Version, bi.GoVersion
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	bi := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        name + "_build_info",
		Help:        "Build information; always 1.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion},
	})
	bi.Set(1)
	reg.MustRegister(bi, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// MetricsHandler serves reg at GET /metrics and, when withPprof, the
// pprof profiles at /debug/pprof/.
func MetricsHandler(reg *prometheus.Registry, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// MetricsServer returns the HTTP server of a metrics listener at addr
// (the key metrics_listen): MetricsHandler of reg, with pprof only when
// addr is a loopback address (IsLoopback; logged otherwise), and its
// errors logged by logger.
func MetricsServer(reg *prometheus.Registry, addr string, logger *slog.Logger) *http.Server {
	withPprof := IsLoopback(addr)
	if !withPprof {
		logger.Info("pprof disabled: metrics_listen is not a loopback address")
	}
	return &http.Server{
		Handler:           MetricsHandler(reg, withPprof),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// Serve serves s on ln until s is shut down, which is not an error.
func Serve(s *http.Server, ln net.Listener) error {
	if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
