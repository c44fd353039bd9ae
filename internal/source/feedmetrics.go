package source

import "github.com/prometheus/client_golang/prometheus"

// FeedMetrics are the change feed's metrics:
//
//	ccaas_bridge_feed_up                          1 while the agent-status history is readable, 0 while the bridge polls alone
//	ccaas_bridge_feed_reads_total{result}         reads: ok, forbidden, missing, throttled, server_error, rejected, transport
//	ccaas_bridge_feed_fallbacks_total             times the feed became unreadable and the bridge fell back to polling alone
//	ccaas_bridge_feed_rows_total{outcome}         history rows: delivered, duplicate (read again in the overlap), other_agent, malformed
//	ccaas_bridge_feed_read_duration_seconds       duration of one read, every page included
//	ccaas_bridge_feed_row_delay_seconds           from a change at the source (msdyn_starttime) to its row being handed over
//	ccaas_bridge_feed_watermark_timestamp_seconds Unix time of the newest createdon read
//	ccaas_bridge_feed_watermark_saves_total{result} watermark writes: ok, error
type FeedMetrics struct {
	// Up is ccaas_bridge_feed_up.
	Up prometheus.Gauge
	// Reads is ccaas_bridge_feed_reads_total.
	Reads *prometheus.CounterVec
	// Fallbacks is ccaas_bridge_feed_fallbacks_total.
	Fallbacks prometheus.Counter
	// Rows is ccaas_bridge_feed_rows_total.
	Rows *prometheus.CounterVec
	// ReadSeconds is ccaas_bridge_feed_read_duration_seconds.
	ReadSeconds prometheus.Histogram
	// Latency is ccaas_bridge_feed_row_delay_seconds.
	Latency prometheus.Histogram
	// Watermark is ccaas_bridge_feed_watermark_timestamp_seconds.
	Watermark prometheus.Gauge
	// WatermarkSaves is ccaas_bridge_feed_watermark_saves_total.
	WatermarkSaves *prometheus.CounterVec
}

// NewFeedMetrics builds the feed's metrics and registers them with reg
// (nil: not registered).
func NewFeedMetrics(reg prometheus.Registerer) (*FeedMetrics, error) {
	m := &FeedMetrics{
		Up: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ccaas_bridge_feed_up",
			Help: "1 while the agent-status history is readable, 0 while the bridge polls alone."}),
		Reads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ccaas_bridge_feed_reads_total",
			Help: "Reads of the agent-status history by result."}, []string{"result"}),
		Fallbacks: prometheus.NewCounter(prometheus.CounterOpts{Name: "ccaas_bridge_feed_fallbacks_total",
			Help: "Times the change feed became unreadable and the bridge fell back to polling alone."}),
		Rows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ccaas_bridge_feed_rows_total",
			Help: "Agent-status history rows read, by outcome."}, []string{"outcome"}),
		ReadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ccaas_bridge_feed_read_duration_seconds",
			Help: "Duration of one read of the agent-status history, every page included.", Buckets: prometheus.DefBuckets}),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ccaas_bridge_feed_row_delay_seconds",
			Help:    "Time from a presence change at the source to its history row being handed over.",
			Buckets: []float64{.25, .5, 1, 2, 3, 5, 10, 30, 60, 300}}),
		Watermark: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ccaas_bridge_feed_watermark_timestamp_seconds",
			Help: "Unix time of the newest createdon the change feed read."}),
		WatermarkSaves: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ccaas_bridge_feed_watermark_saves_total",
			Help: "Writes of the change feed's watermark by result."}, []string{"result"}),
	}
	for _, r := range []string{"ok", "forbidden", "missing", "throttled", "server_error", "rejected", "transport"} {
		m.Reads.WithLabelValues(r)
	}
	for _, o := range []string{"delivered", "duplicate", "other_agent", "malformed"} {
		m.Rows.WithLabelValues(o)
	}
	m.WatermarkSaves.WithLabelValues("ok")
	m.WatermarkSaves.WithLabelValues("error")
	if reg != nil {
		for _, c := range []prometheus.Collector{m.Up, m.Reads, m.Fallbacks, m.Rows, m.ReadSeconds, m.Latency, m.Watermark, m.WatermarkSaves} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
