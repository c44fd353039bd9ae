package pipeline

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what the pipeline does.
type Metrics struct {
	// Observations counts poll results by result (source.ErrorClass).
	Observations *prometheus.CounterVec
	// Events counts acknowledged events by type.
	Events *prometheus.CounterVec
	// StateCommits counts state commits by result: ok, conflict (another
	// writer won), discarded (superseded), error.
	StateCommits *prometheus.CounterVec
	// Conflicts counts commits lost to another writer.
	Conflicts prometheus.Counter
	// PublishFailures counts changes whose events could not be published.
	PublishFailures prometheus.Counter
	// StaleAgents is the number of agents currently stale.
	StaleAgents prometheus.Gauge
	// Reconciles counts reconciliations of an agent with the stream by
	// result: in_step (nothing beyond the stored state), adopted (the
	// stream was ahead and its events were adopted), error.
	Reconciles *prometheus.CounterVec
}

// NewMetrics builds the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Observations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccaas_bridge_observations_total", Help: "Poll results taken by the pipeline, by result.",
		}, []string{"result"}),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccaas_bridge_events_total", Help: "Events acknowledged by JetStream, by type.",
		}, []string{"type"}),
		StateCommits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccaas_bridge_state_commits_total", Help: "Agent state commits to the state bucket, by result.",
		}, []string{"result"}),
		Conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccaas_bridge_state_conflicts_total", Help: "State commits lost to another writer of the same agent.",
		}),
		PublishFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccaas_bridge_publish_failures_total", Help: "Changes whose events could not be published.",
		}),
		StaleAgents: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccaas_bridge_stale_agents", Help: "Agents without a successful poll for the stale period.",
		}),
		Reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccaas_bridge_reconciles_total", Help: "Reconciliations of an agent's state with its events on the stream, by result.",
		}, []string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.Observations, m.Events, m.StateCommits, m.Conflicts, m.PublishFailures, m.StaleAgents, m.Reconciles} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register pipeline metrics: %w", err)
		}
	}
	return m, nil
}
