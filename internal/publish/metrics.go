package publish

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what the connection and the publisher do. Build it once with
// [NewMetrics]; a nil *Metrics is valid and counts nothing.
type Metrics struct {
	published       *prometheus.CounterVec
	duplicates      prometheus.Counter
	latency         prometheus.Histogram
	windowInUse     prometheus.Gauge
	oldestAge       prometheus.Gauge
	reconnects      prometheus.Counter
	disconnects     prometheus.Counter
	errors          *prometheus.CounterVec
	retries         prometheus.Counter
	asyncErrors     prometheus.Counter
	publishedByType sync.Map // type -> prometheus.Counter, avoids label hashing per event
}

// Publish error reasons, the values of the reason label of
// ccaas_bridge_publish_errors_total.
const (
	reasonTimeout      = "timeout"
	reasonDisconnected = "disconnected"
	reasonNoStream     = "no_stream"
	reasonRejected     = "rejected"
	reasonFenced       = "fenced"   // never counted: decided by reading the stored message
	reasonConflict     = "conflict" // the agent's history on the stream moved on
	reasonOther        = "other"
)

// NewMetrics registers the publish metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccaas_bridge_events_published_total",
			Help: "Events acknowledged by JetStream, by CloudEvent type (duplicates included).",
		}, []string{"type"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccaas_bridge_publish_duplicates_total",
			Help: "Publishes JetStream acknowledged as duplicates of an already stored message ID.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ccaas_bridge_publish_latency_seconds",
			Help:    "Time from enqueueing an event to its JetStream acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14),
		}),
		windowInUse: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccaas_bridge_publish_window_in_use",
			Help: "Events held by the publisher (queued or awaiting acknowledgement).",
		}),
		oldestAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccaas_bridge_publish_oldest_unpublished_seconds",
			Help: "Age of the oldest event not yet acknowledged, 0 when none.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccaas_bridge_nats_reconnects_total",
			Help: "Reconnections to NATS.",
		}),
		disconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccaas_bridge_nats_disconnects_total",
			Help: "Losses of the NATS connection.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccaas_bridge_publish_errors_total",
			Help: "Failed publish attempts, by reason (timeout, disconnected, no_stream, rejected, conflict, other).",
		}, []string{"reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccaas_bridge_publish_retries_total",
			Help: "Publish attempts repeated after a failure (same message ID).",
		}),
		asyncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccaas_bridge_nats_async_errors_total",
			Help: "Asynchronous errors reported by the NATS connection.",
		}),
	}
	for _, c := range []prometheus.Collector{m.published, m.duplicates, m.latency, m.windowInUse, m.oldestAge,
		m.reconnects, m.disconnects, m.errors, m.retries, m.asyncErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register publish metrics: %w", err)
		}
	}
	for _, r := range []string{reasonTimeout, reasonDisconnected, reasonNoStream, reasonRejected, reasonConflict, reasonOther} {
		m.errors.WithLabelValues(r)
	}
	return m, nil
}

func (m *Metrics) incPublished(eventType string) {
	if m == nil {
		return
	}
	c, ok := m.publishedByType.Load(eventType)
	if !ok {
		c, _ = m.publishedByType.LoadOrStore(eventType, m.published.WithLabelValues(eventType))
	}
	c.(prometheus.Counter).Inc()
}

func (m *Metrics) incDuplicate() {
	if m != nil {
		m.duplicates.Inc()
	}
}

func (m *Metrics) observeLatency(seconds float64) {
	if m != nil {
		m.latency.Observe(seconds)
	}
}

func (m *Metrics) setWindow(n int) {
	if m != nil {
		m.windowInUse.Set(float64(n))
	}
}

func (m *Metrics) setOldestAge(seconds float64) {
	if m != nil {
		m.oldestAge.Set(seconds)
	}
}

func (m *Metrics) incReconnect() {
	if m != nil {
		m.reconnects.Inc()
	}
}

func (m *Metrics) incDisconnect() {
	if m != nil {
		m.disconnects.Inc()
	}
}

func (m *Metrics) incError(reason string) {
	if m != nil {
		m.errors.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) incRetry() {
	if m != nil {
		m.retries.Inc()
	}
}

func (m *Metrics) incAsyncError() {
	if m != nil {
		m.asyncErrors.Inc()
	}
}
