package lease

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the lease metrics:
//
//   - ccaas_bridge_leader{shard}: 1 while this process holds the shard, 0 in
//     standby;
//   - ccaas_bridge_lease_changes_total{shard,change}: acquisitions
//     ("acquired"), voluntary releases ("released") and losses ("lost").
type Metrics struct {
	leader  *prometheus.GaugeVec
	changes *prometheus.CounterVec
}

// NewMetrics builds the lease metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ccaas_bridge_leader",
			Help: "1 while this process holds the lease of the shard and polls its agents, 0 in standby.",
		}, []string{"shard"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccaas_bridge_lease_changes_total",
			Help: "Lease changes of this process by shard: acquired, released or lost.",
		}, []string{"shard", "change"}),
	}
	reg.MustRegister(m.leader, m.changes)
	return m
}

func (m *Metrics) set(shard int, leader bool, change string) {
	if m == nil {
		return
	}
	label := strconv.Itoa(shard)
	v := 0.0
	if leader {
		v = 1
	}
	m.leader.WithLabelValues(label).Set(v)
	m.changes.WithLabelValues(label, change).Inc()
}
