package source

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the source's Prometheus metrics. A nil *Metrics is valid and
// records nothing.
type Metrics struct {
	polls           map[ErrorClass]prometheus.Counter
	pollsUnchanged  prometheus.Counter
	pollDuration    prometheus.Histogram
	agents          *prometheus.GaugeVec
	agentGauges     [numStates]prometheus.Gauge
	tokenRefreshes  prometheus.Counter
	tokenFailures   prometheus.Counter
	lastSuccess     prometheus.Gauge
	malformed       prometheus.Counter
	catalogueLoads  *prometheus.CounterVec
	clientThrottled prometheus.Gauge
	dataverseErrors map[CodeKind]prometheus.Counter
	inflightCap     prometheus.Gauge
	callerPaused    prometheus.Counter
}

// allClasses lists every ErrorClass, for pre-creating label values.
var allClasses = [...]ErrorClass{ClassOK, ClassPermanent, ClassAuth, ClassToken, ClassRateLimited, ClassServer, ClassTransport, ClassMalformed}

// NewMetrics creates the source's metrics and registers them with reg:
//
//	ccaas_bridge_polls_total{result}                  polls by outcome (an ErrorClass)
//	ccaas_bridge_polls_unchanged_total                successful polls whose answer repeated the agent's last, not decoded again
//	ccaas_bridge_poll_duration_seconds                time per poll, token and 401 retry included
//	ccaas_bridge_agents{state}                        agents by poll state
//	ccaas_bridge_token_refreshes_total                tokens obtained (fetched or re-read)
//	ccaas_bridge_token_failures_total                 failed attempts to obtain a token
//	ccaas_bridge_last_successful_poll_timestamp_seconds
//	ccaas_bridge_malformed_responses_total            bodies not of the documented shape
//	ccaas_bridge_presence_catalogue_loads_total{result}
//	ccaas_bridge_client_rate_limit_factor             1 normally, below 1 while 429s slow the client
//	ccaas_bridge_dataverse_errors_total{kind}         non-200 answers by the kind of their Dataverse code (a CodeKind)
//	ccaas_bridge_inflight_cap                         requests allowed in flight; shortened by concurrency 429s
//	ccaas_bridge_identity_pauses_total                pauses of every request of one identity after a request-count or execution-time 429
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		polls: make(map[ErrorClass]prometheus.Counter, len(allClasses)),
		pollsUnchanged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccaas_bridge_polls_unchanged_total",
			Help: "Successful polls whose answer repeated the agent's previous one (same body length and 64-bit hash): its snapshot reused, not decoded again; also counted in ccaas_bridge_polls_total{result=\"ok\"}.",
		}),
		pollDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ccaas_bridge_poll_duration_seconds",
			Help:    "Duration of one poll of one agent, token acquisition and 401 retry included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		agents: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ccaas_bridge_agents",
			Help: "Configured agents by poll state.",
		}, []string{"state"}),
		tokenRefreshes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccaas_bridge_token_refreshes_total",
			Help: "Bearer tokens obtained: fetched from Entra ID or re-read from the token file.",
		}),
		tokenFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccaas_bridge_token_failures_total",
			Help: "Failed attempts to obtain a bearer token.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccaas_bridge_last_successful_poll_timestamp_seconds",
			Help: "Unix time of the last successful poll of any agent.",
		}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccaas_bridge_malformed_responses_total",
			Help: "Presence responses that were not of the documented shape.",
		}),
		catalogueLoads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccaas_bridge_presence_catalogue_loads_total",
			Help: "Loads of the msdyn_presences table by result (ok, error).",
		}, []string{"result"}),
		clientThrottled: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccaas_bridge_client_rate_limit_factor",
			Help: "Fraction of the configured request rate the client currently allows; below 1 after many 429s.",
		}),
	}
	m.dataverseErrors = make(map[CodeKind]prometheus.Counter)
	dvErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ccaas_bridge_dataverse_errors_total",
		Help: "Non-200 answers of the organisation by the kind of their Dataverse error code (request_count, concurrency, act_on_behalf, ...).",
	}, []string{"kind"})
	for _, k := range AllCodeKinds() {
		m.dataverseErrors[k] = dvErrors.WithLabelValues(string(k))
	}
	m.inflightCap = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ccaas_bridge_inflight_cap",
		Help: "Requests the poller allows in flight; below BRIDGE_MAX_CONCURRENCY after concurrency 429s.",
	})
	m.callerPaused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ccaas_bridge_identity_pauses_total",
		Help: "Pauses of every request charged to one identity, after a request-count or execution-time 429.",
	})
	polls := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ccaas_bridge_polls_total",
		Help: "Polls of CCaaS_GetPresence by result (ok or the error class).",
	}, []string{"result"})
	for _, c := range allClasses {
		m.polls[c] = polls.WithLabelValues(string(c))
	}
	for s := State(0); s < numStates; s++ {
		m.agentGauges[s] = m.agents.WithLabelValues(s.String())
	}
	m.catalogueLoads.WithLabelValues("ok")
	m.catalogueLoads.WithLabelValues("error")
	m.clientThrottled.Set(1)
	for _, c := range []prometheus.Collector{polls, m.pollsUnchanged, m.pollDuration, m.agents, m.tokenRefreshes, m.tokenFailures, m.lastSuccess, m.malformed, m.catalogueLoads, m.clientThrottled, dvErrors, m.inflightCap, m.callerPaused} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) poll(c ErrorClass, d time.Duration, at time.Time) {
	if m == nil {
		return
	}
	if ctr, ok := m.polls[c]; ok {
		ctr.Inc()
	}
	m.pollDuration.Observe(d.Seconds())
	switch c {
	case ClassOK:
		m.lastSuccess.Set(float64(at.UnixNano()) / 1e9)
	case ClassMalformed:
		m.malformed.Inc()
	}
}

func (m *Metrics) pollUnchanged() {
	if m != nil {
		m.pollsUnchanged.Inc()
	}
}

func (m *Metrics) agentState(from, to State) {
	if m == nil {
		return
	}
	if from != stateNone {
		m.agentGauges[from].Dec()
	}
	if to != stateNone {
		m.agentGauges[to].Inc()
	}
}

func (m *Metrics) tokenRefreshed() {
	if m != nil {
		m.tokenRefreshes.Inc()
	}
}

func (m *Metrics) tokenFailure() {
	if m != nil {
		m.tokenFailures.Inc()
	}
}

func (m *Metrics) catalogueLoad(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.catalogueLoads.WithLabelValues("error").Inc()
	} else {
		m.catalogueLoads.WithLabelValues("ok").Inc()
	}
}

func (m *Metrics) rateFactor(f float64) {
	if m != nil {
		m.clientThrottled.Set(f)
	}
}

func (m *Metrics) dataverseError(k CodeKind) {
	if m == nil {
		return
	}
	if c, ok := m.dataverseErrors[k]; ok {
		c.Inc()
	}
}

func (m *Metrics) setInflightCap(n int) {
	if m != nil {
		m.inflightCap.Set(float64(n))
	}
}

func (m *Metrics) identityPaused() {
	if m != nil {
		m.callerPaused.Inc()
	}
}
