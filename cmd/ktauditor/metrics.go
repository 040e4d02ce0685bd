package main

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keytrans/kt/internal/ops"
)

// metrics implements auditor.Metrics with Prometheus collectors in their
// own registry.
type metrics struct {
	reg        *prometheus.Registry
	target     *prometheus.GaugeVec
	audited    *prometheus.GaugeVec
	entries    *prometheus.CounterVec
	violations *prometheus.CounterVec
	warnings   *prometheus.CounterVec
	evidence   *prometheus.CounterVec
	witness    *prometheus.CounterVec
	audit      *prometheus.CounterVec
	statements *prometheus.CounterVec
	gossip     *prometheus.CounterVec
}

func newMetrics() *metrics {
	reg := ops.NewRegistry("ktauditor") // ktauditor_build_info, Go and process collectors
	m := &metrics{
		reg: reg,
		target: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ktauditor_log_size",
			Help: "Size of the latest checkpoint read from the log."}, []string{"origin"}),
		audited: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ktauditor_audited_size",
			Help: "Size of the latest checkpoint verified by replay; ktauditor_log_size minus this is the lag."}, []string{"origin"}),
		entries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ktauditor_entries_replayed_total",
			Help: "Entries replayed (its rate is the catch-up speed)."}, []string{"origin"}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ktauditor_violations_total",
			Help: "Protocol violations found by replay, by rule."}, []string{"origin", "rule"}),
		warnings: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ktauditor_warnings_total",
			Help: "Anomalies found by replay that are not violations (late epochs), by kind."}, []string{"origin", "kind"}),
		evidence: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ktauditor_evidence_total",
			Help: "Split-view evidence bundles recorded."}, []string{"origin"}),
		witness: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ktauditor_witness_requests_total",
			Help: "add-checkpoint requests by HTTP status."}, []string{"origin", "code"}),
		audit: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ktauditor_audit_requests_total",
			Help: "POST /kt/v1/audit requests by HTTP status."}, []string{"origin", "code"}),
		statements: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ktauditor_audit_statements_total",
			Help: "Audit statements signed (answers to POST /kt/v1/audit and the one on the latest audited checkpoint)."}, []string{"origin"}),
		gossip: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ktauditor_gossip_total",
			Help: "Gossip exchanges with peers by result."}, []string{"peer", "result"}),
	}
	for _, c := range []prometheus.Collector{m.target, m.audited, m.entries, m.violations, m.warnings, m.evidence, m.witness, m.audit, m.statements, m.gossip} {
		reg.MustRegister(c)
	}
	return m
}

func (m *metrics) Target(o string, n uint64)  { m.target.WithLabelValues(o).Set(float64(n)) }
func (m *metrics) Audited(o string, n uint64) { m.audited.WithLabelValues(o).Set(float64(n)) }
func (m *metrics) Entries(o string, n int)    { m.entries.WithLabelValues(o).Add(float64(n)) }
func (m *metrics) Violation(o, rule string)   { m.violations.WithLabelValues(o, rule).Inc() }
func (m *metrics) Warning(o, kind string)     { m.warnings.WithLabelValues(o, kind).Inc() }
func (m *metrics) Evidence(o string)          { m.evidence.WithLabelValues(o).Inc() }
func (m *metrics) WitnessRequest(o string, code int) {
	m.witness.WithLabelValues(o, strconv.Itoa(code)).Inc()
}
func (m *metrics) AuditRequest(o string, code int) {
	m.audit.WithLabelValues(o, strconv.Itoa(code)).Inc()
}
func (m *metrics) AuditStatement(o string)    { m.statements.WithLabelValues(o).Inc() }
func (m *metrics) Gossip(peer, result string) { m.gossip.WithLabelValues(peer, result).Inc() }
