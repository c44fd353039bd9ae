package simulator

import (
	"maps"
	"slices"
	"strings"
	"time"
)

// Request is the record of one request the simulator answered, given to
// Options.OnRequest before the response is written (so a client holding the
// response knows the hook has run).
type Request struct {
	// At is when the request arrived (Options.Now).
	At time.Time
	// Method is the HTTP method.
	Method string
	// Endpoint is "CCaaS_GetPresence", "msdyn_presences", "customapis",
	// "msdyn_agentstatuses", "msdyn_agentstatushistories", or "" for any
	// other path.
	Endpoint string
	// AgentID is the MSCRMCallerID, lower-case; "" when absent or malformed.
	AgentID string
	// Status is the HTTP status answered.
	Status int
	// Reason says why the request failed or which fault was injected:
	// "method", "no-token", "token-expired", "token-refused", "bad-caller",
	// "call-form", "quota-requests", "quota-execution", "quota-concurrent",
	// "quota-penalty", "agent-fault", "burst-429", "rate-429", "rate-5xx",
	// "rate-malformed", "unknown-agent", "presences-fault",
	// "customapis-fault", "feed-fault", "bad-select", "bad-query",
	// "not-found"; "" for a plain success.
	Reason string
	// Malformed is the kind of broken body sent with a 200, if any.
	Malformed MalformedKind
	// RetryAfter is the Retry-After header sent, if any.
	RetryAfter string
	// RetryUntil is the instant Retry-After points at: no request for this
	// agent should arrive before it. Zero without Retry-After.
	RetryUntil time.Time
	// Latency is the delay injected before the response.
	Latency time.Duration
}

// Stats are the request counters of a Simulator.
type Stats struct {
	// Requests counts every request answered.
	Requests int
	// ByStatus counts requests by HTTP status.
	ByStatus map[int]int
	// ByReason counts requests by Request.Reason (successes without a fault
	// are not counted).
	ByReason map[string]int
	// QuotaRequestViolations counts 429s for exceeding the requests per
	// window of one user.
	QuotaRequestViolations int
	// QuotaConcurrentViolations counts 429s for exceeding the concurrent
	// requests of one user.
	QuotaConcurrentViolations int
	// QuotaExecutionViolations counts 429s for exceeding the combined
	// execution time of one user.
	QuotaExecutionViolations int
	// QuotaPenaltyViolations counts requests a user sent while blocked
	// after a request-count or execution-time 429 (each extended the
	// block): a client that honours Retry-After has none.
	QuotaPenaltyViolations int
	// QuotaViolationsByUser counts every kind of violation by user: agent
	// ID, or "" for the application user (every request with
	// QuotaScopeCaller).
	QuotaViolationsByUser map[string]int
	// PeakWindowRequests is the most requests one user ever had in the
	// sliding window.
	PeakWindowRequests int
	// PeakConcurrent is the most requests one user ever had in flight.
	PeakConcurrent int
	// TokensIssued counts IssueToken calls.
	TokensIssued int
}

// requestLog holds the counters and per-agent arrival times; guarded by
// Simulator.smu.
type requestLog struct {
	requests int
	byStatus map[int]int
	byReason map[string]int
	times    map[string][]time.Time
}

// arrived records the arrival of a request for agentID when per-agent
// logging is on.
func (s *Simulator) arrived(agentID string, at time.Time) {
	n := s.opts.RequestLogSize
	if n <= 0 || agentID == "" {
		return
	}
	s.smu.Lock()
	defer s.smu.Unlock()
	ts := s.rlog.times[agentID]
	if len(ts) >= n {
		ts = append(ts[:0:0], ts[len(ts)-n+1:]...)
	}
	s.rlog.times[agentID] = append(ts, at)
}

// answered counts a request and calls the hook.
func (s *Simulator) answered(r Request) {
	s.smu.Lock()
	s.rlog.requests++
	s.rlog.byStatus[r.Status]++
	if r.Reason != "" {
		s.rlog.byReason[r.Reason]++
	}
	s.smu.Unlock()
	if s.opts.OnRequest != nil {
		s.opts.OnRequest(r)
	}
}

// RequestTimes returns the arrival times of the most recent requests that
// named agentID in MSCRMCallerID (at most Options.RequestLogSize of them,
// none when it is zero), oldest first.
func (s *Simulator) RequestTimes(agentID string) []time.Time {
	s.smu.Lock()
	defer s.smu.Unlock()
	return slices.Clone(s.rlog.times[strings.ToLower(agentID)])
}

// Stats returns a copy of the request counters.
func (s *Simulator) Stats() Stats {
	s.smu.Lock()
	st := Stats{
		Requests: s.rlog.requests,
		ByStatus: maps.Clone(s.rlog.byStatus),
		ByReason: maps.Clone(s.rlog.byReason),
	}
	s.smu.Unlock()
	s.qmu.Lock()
	st.QuotaRequestViolations = s.qstats.requestViolations
	st.QuotaConcurrentViolations = s.qstats.concurrentViolations
	st.QuotaExecutionViolations = s.qstats.executionViolations
	st.QuotaPenaltyViolations = s.qstats.penaltyViolations
	st.QuotaViolationsByUser = maps.Clone(s.qstats.byUser)
	st.PeakWindowRequests = s.qstats.peakWindow
	st.PeakConcurrent = s.qstats.peakConcurrent
	s.qmu.Unlock()
	s.tmu.Lock()
	st.TokensIssued = s.tokensIssued
	s.tmu.Unlock()
	return st
}
