package main

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/keytrans/kt/directory"
	"github.com/keytrans/kt/internal/ops"
)

// metrics holds ktd's Prometheus collectors in their own registry. It
// implements grpcserver.Metrics and directory.Metrics.
type metrics struct {
	reg *prometheus.Registry

	rpcs       *prometheus.CounterVec
	rpcErrors  *prometheus.CounterVec
	rpcLatency *prometheus.HistogramVec

	changes  prometheus.Counter
	rejected *prometheus.CounterVec
	epochs   prometheus.Counter
	epoch    prometheus.Gauge
	epochDur prometheus.Histogram
	lookups  prometheus.Counter

	auditStatements *prometheus.CounterVec
	auditWait       prometheus.Histogram
}

func newMetrics() *metrics {
	reg := ops.NewRegistry("ktd") // ktd_build_info, Go and process collectors
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &metrics{reg: reg}

	m.rpcs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ktd_grpc_requests_total", Help: "Directory API requests by method and code (gRPC; HTTP/JSON calls have methods prefixed json:).",
	}, []string{"method", "code"})
	m.rpcErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ktd_grpc_errors_total", Help: "gRPC requests that failed, by method and code.",
	}, []string{"method", "code"})
	m.rpcLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ktd_grpc_request_duration_seconds",
		Help:    "gRPC request latency by method.",
		Buckets: prometheus.ExponentialBuckets(50e-6, 2.5, 14), // 50µs .. ~7.5s
	}, []string{"method"})
	m.changes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ktd_directory_changes_accepted_total", Help: "Handle changes appended to the log.",
	})
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ktd_directory_changes_rejected_total", Help: "Rejected change requests by reason.",
	}, []string{"reason"})
	m.epochs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ktd_directory_epochs_total", Help: "Epochs closed by this process.",
	})
	m.epoch = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ktd_directory_epoch", Help: "Number of the latest closed epoch.",
	})
	m.epochDur = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ktd_directory_epoch_close_seconds",
		Help:    "Time to close an epoch (append, map, checkpoint).",
		Buckets: prometheus.ExponentialBuckets(1e-3, 2, 14), // 1ms .. ~8s
	})
	m.lookups = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ktd_directory_lookups_total", Help: "Handles looked up.",
	})
	m.auditStatements = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ktd_audit_statements_total",
		Help: "Answers of auditors to requests for audit statements, by auditor (its name in the audit policy) and result (ok, invalid, unavailable, refused, error).",
	}, []string{"auditor", "result"})
	m.auditWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ktd_epoch_audit_seconds",
		Help:    "Time from an epoch's publication until it was served with a quorum of audit statements (audit mode).",
		Buckets: []float64{.025, .05, .1, .25, .5, 1, 2, 5, 10, 30},
	})
	for _, c := range []prometheus.Collector{m.rpcs, m.rpcErrors, m.rpcLatency, m.changes, m.rejected, m.epochs, m.epoch, m.epochDur, m.lookups, m.auditStatements, m.auditWait} {
		f(c)
	}
	return m
}

// ObserveRPC implements grpcserver.Metrics.
func (m *metrics) ObserveRPC(method string, code codes.Code, elapsed time.Duration) {
	m.rpcs.WithLabelValues(method, code.String()).Inc()
	if code != codes.OK {
		m.rpcErrors.WithLabelValues(method, code.String()).Inc()
	}
	m.rpcLatency.WithLabelValues(method).Observe(elapsed.Seconds())
}

// ChangesAccepted implements directory.Metrics.
func (m *metrics) ChangesAccepted(n int) { m.changes.Add(float64(n)) }

// ChangeRejected implements directory.Metrics.
func (m *metrics) ChangeRejected(kind error) {
	reason := "other"
	for _, k := range []struct {
		err  error
		name string
	}{
		{directory.ErrInvalidArgument, "invalid_argument"},
		{directory.ErrUnauthorized, "unauthorized"},
		{directory.ErrStaleVersion, "stale_version"},
		{directory.ErrNotFound, "not_found"},
		{directory.ErrOutOfRange, "out_of_range"},
		{directory.ErrUnavailable, "unavailable"},
		{directory.ErrResourceExhausted, "resource_exhausted"},
	} {
		if errors.Is(kind, k.err) {
			reason = k.name
			break
		}
	}
	m.rejected.WithLabelValues(reason).Inc()
}

// EpochClosed implements directory.Metrics.
func (m *metrics) EpochClosed(epoch uint64, _ int, took time.Duration) {
	m.epochs.Inc()
	m.epoch.Set(float64(epoch))
	m.epochDur.Observe(took.Seconds())
}

// Lookups implements directory.Metrics.
func (m *metrics) Lookups(n int) { m.lookups.Add(float64(n)) }

// AuditStatement implements directory.AuditMetrics.
func (m *metrics) AuditStatement(auditor, result string) {
	m.auditStatements.WithLabelValues(auditor, result).Inc()
}

// EpochServed implements directory.AuditMetrics.
func (m *metrics) EpochServed(_ uint64, wait time.Duration) { m.auditWait.Observe(wait.Seconds()) }

// watchDirectory adds the directory's gauges: with an audit policy, the
// audit lag; replicated, the role (1 for the current one) and, for a
// reader, how many log entries its view lags.
func (m *metrics) watchDirectory(d *directory.Directory, audit bool) {
	if audit {
		// SPEC(design.md 14.3)
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ktd_audit_lag_seconds",
			Help: "Timestamp of the latest published epoch minus that of the served (audited) one; before the first audited epoch, the time since start.",
		}, func() float64 { return d.AuditLag().Seconds() }))
	}
	if d.Role() == directory.RoleStandalone {
		return
	}
	for _, role := range []string{directory.RoleReader, directory.RoleTakeover, directory.RoleWriter, directory.RoleStopped} {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "ktd_directory_role",
			Help:        "Role of this replicated directory instance: 1 for the current one.",
			ConstLabels: prometheus.Labels{"role": role},
		}, func() float64 {
			if d.Role() == role {
				return 1
			}
			return 0
		}))
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ktd_directory_replication_lag_entries",
		Help: "Log entries beyond this instance's view, as of its last poll of the log.",
	}, func() float64 {
		applied, size := d.Lag()
		if size < applied {
			return 0
		}
		return float64(size - applied)
	}))
}

// watchWrites exports whether writes are refused until a restart (issue
// 17 item 2): the directory's sequencer stopped (a full or read-only disk
// refused a log write), or the log stopped (corrupt or unwritable storage,
// behind its witnesses). ktd exits in both cases; the gauge shows it to
// the last scrape and explains a restart loop.
func (m *metrics) watchWrites(s *server) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ktd_writes_refused",
		Help: "1 when writes are refused until a restart: the log's storage failed (full, read-only, corrupt) or the log is behind its witnesses; see docs/operations.md, Faults.",
	}, func() float64 {
		if fl, ok := s.log.(faultingLog); ok && fl.Fault() != nil {
			return 1
		}
		if s.d.Role() == directory.RoleStopped {
			return 1
		}
		return 0
	}))
}
