package simulator

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"
)

// MalformedKind names one way a 200 response body can be broken.
type MalformedKind string

// Malformed body kinds.
const (
	// MalformedNotJSON is an HTML error page, as a proxy would send.
	MalformedNotJSON MalformedKind = "not-json"
	// MalformedTruncated is the valid body cut in the middle.
	MalformedTruncated MalformedKind = "truncated"
	// MalformedMissingKey lacks one of the documented keys.
	MalformedMissingKey MalformedKind = "missing-key"
	// MalformedWrongType has one documented key with a value of the wrong
	// JSON type.
	MalformedWrongType MalformedKind = "wrong-type"
	// MalformedWrongAgent carries the state of a different AgentId.
	MalformedWrongAgent MalformedKind = "wrong-agent"
	// MalformedEmpty is an empty body.
	MalformedEmpty MalformedKind = "empty"
	// MalformedOversize is a valid body padded beyond 1 MiB.
	MalformedOversize MalformedKind = "oversize"
)

// AllMalformedKinds returns every MalformedKind.
func AllMalformedKinds() []MalformedKind {
	return []MalformedKind{MalformedNotJSON, MalformedTruncated, MalformedMissingKey, MalformedWrongType, MalformedWrongAgent, MalformedEmpty, MalformedOversize}
}

// Faults are the randomised faults of CCaaS_GetPresence. Each rate is a
// probability per request in [0, 1]; the zero value injects nothing. They
// apply after authentication, the MSCRMCallerID check and the
// service-protection limits, before the agent is looked up.
type Faults struct {
	// Rate429 is the probability of a 429 with Retry-After RetryAfter.
	Rate429 float64
	// RetryAfter is the Retry-After of an injected 429 (rounded up to whole
	// seconds, at least 1 s). Default 1 s.
	RetryAfter time.Duration
	// RetryAfterDate sends Retry-After as an HTTP date instead of seconds.
	RetryAfterDate bool
	// Burst429Every and Burst429Length make bursts: in the last
	// Burst429Length of every Burst429Every since New, every request (of the
	// agents in Burst429Agents, or all when it is empty) gets a 429 whose
	// Retry-After is the time left in the burst. Both zero: no bursts.
	Burst429Every  time.Duration
	Burst429Length time.Duration
	// Burst429Agents limits bursts to these agent IDs.
	Burst429Agents []string
	// Rate5xx is the probability of a server error, its status drawn from
	// Statuses5xx.
	Rate5xx float64
	// Statuses5xx are the statuses Rate5xx draws from. Default 500, 502,
	// 503, 504.
	Statuses5xx []int
	// Latency delays every response by this much plus a uniformly random
	// part in [0, LatencyJitter). The delay holds the request's
	// service-protection concurrency slot, as a slow server would.
	Latency       time.Duration
	LatencyJitter time.Duration
	// RateMalformed is the probability of a 200 with a broken body, its kind
	// drawn from MalformedKinds.
	RateMalformed float64
	// MalformedKinds are the kinds RateMalformed draws from. Default all.
	MalformedKinds []MalformedKind
	// PresencesStatus, when not zero, is the status of every msdyn_presences
	// request (e.g. 403 for an organisation that does not grant the read).
	PresencesStatus int
	// FeedStatus, when not zero, is the status of every request to the
	// agent-status tables (msdyn_agentstatuses, msdyn_agentstatushistories):
	// 403 for a missing read privilege, 404 for a table the organisation
	// does not have, 429 with Retry-After RetryAfter, or a 5xx.
	FeedStatus int
}

func (f Faults) withDefaults() Faults {
	if f.RetryAfter <= 0 {
		f.RetryAfter = time.Second
	}
	if len(f.Statuses5xx) == 0 {
		f.Statuses5xx = []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout}
	}
	if len(f.MalformedKinds) == 0 {
		f.MalformedKinds = AllMalformedKinds()
	}
	f.Burst429Agents = lowerAll(f.Burst429Agents)
	return f
}

func (f Faults) validate() error {
	for _, r := range []struct {
		name string
		v    float64
	}{{"Rate429", f.Rate429}, {"Rate5xx", f.Rate5xx}, {"RateMalformed", f.RateMalformed}} {
		if math.IsNaN(r.v) || r.v < 0 || r.v > 1 {
			return fmt.Errorf("fault %s %v: not a probability in [0, 1]", r.name, r.v)
		}
	}
	if f.Rate429+f.Rate5xx+f.RateMalformed > 1 {
		return fmt.Errorf("fault rates add up to %v, more than 1", f.Rate429+f.Rate5xx+f.RateMalformed)
	}
	if (f.Burst429Every > 0) != (f.Burst429Length > 0) || f.Burst429Length > f.Burst429Every {
		return fmt.Errorf("fault Burst429Length %v and Burst429Every %v: both or neither must be set and the length must not exceed the period", f.Burst429Length, f.Burst429Every)
	}
	if f.Latency < 0 || f.LatencyJitter < 0 || f.RetryAfter < 0 {
		return fmt.Errorf("fault durations must not be negative")
	}
	for _, st := range f.Statuses5xx {
		if st < 500 || st > 599 {
			return fmt.Errorf("fault Statuses5xx: %d is not a 5xx status", st)
		}
	}
	for _, k := range f.MalformedKinds {
		if !slices.Contains(AllMalformedKinds(), k) {
			return fmt.Errorf("fault MalformedKinds: unknown kind %q", k)
		}
	}
	if f.FeedStatus != 0 && (f.FeedStatus < 400 || f.FeedStatus > 599) {
		return fmt.Errorf("fault FeedStatus %d: not an error status", f.FeedStatus)
	}
	if f.PresencesStatus != 0 && (f.PresencesStatus < 400 || f.PresencesStatus > 599) {
		return fmt.Errorf("fault PresencesStatus %d: not an error status", f.PresencesStatus)
	}
	return nil
}

func lowerAll(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = strings.ToLower(id)
	}
	return out
}

// AgentFault is a fault forced on one agent's requests with SetAgentFault;
// it takes precedence over the randomised Faults.
type AgentFault struct {
	// Status, when not zero, is returned instead of the presence: any error
	// status (400, 401, 404, 429, 500, 503, ...) with a Dataverse-shaped
	// error body.
	Status int
	// RetryAfter is sent with a 429 or 503 Status (rounded up to whole
	// seconds); zero sends no Retry-After with a 503 and 1 s with a 429.
	RetryAfter time.Duration
	// RetryAfterDate sends Retry-After as an HTTP date.
	RetryAfterDate bool
	// RetryAfterRaw, when set, is sent verbatim as Retry-After (e.g. an
	// HTTP date in year 9999), instead of RetryAfter.
	RetryAfterRaw string
	// Code is the Dataverse error code of the body: for a 429 one of
	// 0x80072322 (request count, the default), 0x80072321 (execution time)
	// or 0x80072326 (concurrency); for a 403 the privilege code.
	Code string
	// Malformed, when Status is zero, breaks the 200 body this way.
	Malformed MalformedKind
	// Latency delays the response by this much.
	Latency time.Duration
	// Count is how many requests the fault applies to before it clears
	// itself; zero applies it until ClearAgentFault.
	Count int
}

// decision is what the fault layer decided for one request.
type decision struct {
	status     int
	retryAfter time.Duration // 0: no Retry-After header
	retryDate  bool
	retryRaw   string
	code       string
	malformed  MalformedKind
	latency    time.Duration
	reason     string
}

// decide draws the faults of one CCaaS_GetPresence request for agentID.
func (s *Simulator) decide(agentID string, now time.Time) decision {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	f := s.faults
	var d decision
	d.latency = f.Latency
	if f.LatencyJitter > 0 {
		d.latency += time.Duration(s.frng.Int64N(int64(f.LatencyJitter)))
	}
	if af, ok := s.agentFaults[agentID]; ok {
		if af.Count > 0 {
			af.Count--
			if af.Count == 0 {
				delete(s.agentFaults, agentID)
			} else {
				s.agentFaults[agentID] = af
			}
		}
		d.latency += af.Latency
		d.status, d.malformed, d.retryDate = af.Status, af.Malformed, af.RetryAfterDate
		d.retryAfter, d.retryRaw, d.code = af.RetryAfter, af.RetryAfterRaw, af.Code
		if af.Status == http.StatusTooManyRequests && d.retryAfter <= 0 {
			d.retryAfter = time.Second
		}
		d.reason = "agent-fault"
		return d
	}
	if f.Burst429Every > 0 {
		into := now.Sub(s.start) % f.Burst429Every
		if left := f.Burst429Every - into; left <= f.Burst429Length &&
			(len(f.Burst429Agents) == 0 || slices.Contains(f.Burst429Agents, agentID)) {
			d.status, d.retryAfter, d.retryDate, d.reason = http.StatusTooManyRequests, left, f.RetryAfterDate, "burst-429"
			return d
		}
	}
	x := s.frng.Float64()
	switch {
	case x < f.Rate429:
		d.status, d.retryAfter, d.retryDate, d.reason = http.StatusTooManyRequests, f.RetryAfter, f.RetryAfterDate, "rate-429"
	case x < f.Rate429+f.Rate5xx:
		d.status, d.reason = f.Statuses5xx[s.frng.IntN(len(f.Statuses5xx))], "rate-5xx"
	case x < f.Rate429+f.Rate5xx+f.RateMalformed:
		d.malformed, d.reason = f.MalformedKinds[s.frng.IntN(len(f.MalformedKinds))], "rate-malformed"
	}
	return d
}

// drawIntN draws from the fault generator.
func (s *Simulator) drawIntN(n int) int {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return s.frng.IntN(n)
}

// SetFaults replaces the randomised faults; safe while serving.
func (s *Simulator) SetFaults(f Faults) error {
	if err := f.validate(); err != nil {
		return fmt.Errorf("set faults: %w", err)
	}
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.faults = f.withDefaults()
	return nil
}

// Faults returns the randomised faults in force, defaults filled in.
func (s *Simulator) Faults() Faults {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	f := s.faults
	f.Statuses5xx = slices.Clone(f.Statuses5xx)
	f.MalformedKinds = slices.Clone(f.MalformedKinds)
	f.Burst429Agents = slices.Clone(f.Burst429Agents)
	return f
}

// SetAgentFault forces a fault on every request for one agent (matched
// case-insensitively, known or not) until ClearAgentFault or until
// f.Count requests have had it.
func (s *Simulator) SetAgentFault(agentID string, f AgentFault) error {
	if f.Status != 0 && (f.Status < 400 || f.Status > 599) {
		return fmt.Errorf("set agent fault: status %d is not an error status", f.Status)
	}
	if f.Malformed != "" && !slices.Contains(AllMalformedKinds(), f.Malformed) {
		return fmt.Errorf("set agent fault: unknown malformed kind %q", f.Malformed)
	}
	if f.Count < 0 || f.Latency < 0 || f.RetryAfter < 0 {
		return fmt.Errorf("set agent fault: negative count or duration")
	}
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.agentFaults[strings.ToLower(agentID)] = f
	return nil
}

// ClearAgentFault removes the fault forced on one agent.
func (s *Simulator) ClearAgentFault(agentID string) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	delete(s.agentFaults, strings.ToLower(agentID))
}

// retryAfterHeader renders a Retry-After of d from now, rounded up to whole
// seconds and at least one, and returns the instant before which the client
// must not retry.
func retryAfterHeader(now time.Time, d time.Duration, date bool) (string, time.Time) {
	secs := int64(math.Ceil(d.Seconds()))
	if secs < 1 {
		secs = 1
	}
	if date {
		// An HTTP date has whole seconds: round the instant up.
		until := now.Add(time.Duration(secs) * time.Second).Truncate(time.Second)
		if until.Before(now.Add(time.Duration(secs) * time.Second)) {
			until = until.Add(time.Second)
		}
		return until.UTC().Format(http.TimeFormat), until
	}
	return fmt.Sprint(secs), now.Add(time.Duration(secs) * time.Second)
}
