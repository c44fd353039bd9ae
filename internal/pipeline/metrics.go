package pipeline

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what the pipeline does. Poll results are counted by the
// poller (ccaas_bridge_polls_total) and change-feed rows by the feed
// (ccaas_bridge_feed_rows_total), acknowledged events by the publisher
// (ccaas_bridge_events_published_total); the pipeline counts only what
// happens in it.
type Metrics struct {
	// Conflicts counts changes dropped because the agent's history on the
	// stream had moved on.
	Conflicts prometheus.Counter
	// PublishFailures counts changes whose events could not be published.
	PublishFailures prometheus.Counter
	// StaleAgents is the number of agents currently stale.
	StaleAgents prometheus.Gauge
	// StateBehind is the number of agents whose confirmed state the view
	// could not record yet (its write failed; retried).
	StateBehind prometheus.Gauge
	// Adoptions counts readings of an agent's history from the stream after
	// a conflict or a catch-up, by result: adopted, error (retried).
	Adoptions *prometheus.CounterVec
	// CatchUps counts the checks of an agent's recorded state against its
	// last message on the stream when this process takes the agent, by
	// result: current, behind (its history is adopted), error (retried).
	CatchUps *prometheus.CounterVec
	// Foreign counts messages on agents' subjects that are not this
	// bridge's events for the agent, by reason; skipped when reading.
	Foreign *prometheus.CounterVec
}

// NewMetrics builds the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccaas_bridge_conflicts_total", Help: "Changes dropped because the agent's history on the stream had moved on (another writer); the agent is adopted from the stream. One conflict the publisher finds (ccaas_bridge_publish_errors_total{reason=\"conflict\"}) drops every change of the agent queued behind it.",
		}),
		PublishFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccaas_bridge_publish_failures_total", Help: "Changes whose events could not be published; their events are re-emitted from the agent's last state. Failed attempts, each retried, are ccaas_bridge_publish_errors_total.",
		}),
		StaleAgents: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccaas_bridge_stale_agents", Help: "Agents without a successful poll for the stale period.",
		}),
		StateBehind: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccaas_bridge_state_behind_agents", Help: "Agents whose events are on the stream but whose state the state bucket does not have yet: the write failed (ccaas_bridge_state_commits_total{result=\"error\"}) and is retried, after 1 s and then backing off up to 30 s.",
		}),
		Adoptions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccaas_bridge_adoptions_total", Help: "Readings of an agent's history from the stream after a conflict or a catch-up, by result (adopted, error).",
		}, []string{"result"}),
		CatchUps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccaas_bridge_catch_ups_total", Help: "Checks of an agent's recorded state against its last message on the stream when this process takes the agent (start, lease, agent list), by result: current, behind (the history on the stream is adopted before the agent's first poll is diffed), error (retried with backoff, 1 s to 30 s).",
		}, []string{"result"}),
		Foreign: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccaas_bridge_foreign_messages_total", Help: "Messages on agents' subjects that are not this bridge's events for the agent, skipped, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range foreignReasons {
		m.Foreign.WithLabelValues(r)
	}
	for _, r := range []string{"adopted", "error"} {
		m.Adoptions.WithLabelValues(r)
	}
	for _, r := range catchUpResults {
		m.CatchUps.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.Conflicts, m.PublishFailures, m.StaleAgents, m.StateBehind, m.Adoptions, m.CatchUps, m.Foreign} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register pipeline metrics: %w", err)
		}
	}
	return m, nil
}
