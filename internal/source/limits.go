package source

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Dataverse service-protection limits, evaluated per user. Every
// CCaaS_GetPresence call is charged to the impersonated agent
// (MSCRMCallerID).
const (
	// DataverseRequestsPerWindow is the number of requests one user may
	// make in DataverseWindow.
	DataverseRequestsPerWindow = 6000
	// DataverseWindow is the sliding window of the request limit.
	DataverseWindow = 5 * time.Minute
	// DataverseConcurrentPerUser is the number of concurrent requests one
	// user may have.
	DataverseConcurrentPerUser = 52
	// requestsPerPoll is the most requests one poll makes: the first, and
	// one retry after a 401 with a refreshed token.
	requestsPerPoll = 2
)

// LimitsConfig is what CheckLimits needs to know about a configuration.
type LimitsConfig struct {
	// Agents is the number of agents polled.
	Agents int
	// Interval is BRIDGE_POLL_INTERVAL.
	Interval time.Duration
	// BackoffInitial is the first backoff after a failure (default
	// Interval);
	// with jitter the shortest gap between two polls of a failing agent is
	// half of it.
	BackoffInitial time.Duration
	// MaxRPS is BRIDGE_MAX_RPS; 0 means no cap.
	MaxRPS float64
	// MaxConcurrency is BRIDGE_MAX_CONCURRENCY.
	MaxConcurrency int
}

// CheckLimits refuses a configuration that could exceed Dataverse's
// per-user service-protection limits or that the rate cap cannot sustain.
// The error says why and what would work.
//
// Per agent, the poller makes at most one poll at a time (so at most one
// concurrent request per user, far below 52) and each poll makes at most
// two requests (a 401 is retried once with a refreshed token). Polls of an
// agent are at least Interval apart when it is healthy and at least half of
// BackoffInitial apart when it is failing (backoff with ±50% jitter; 429s
// wait for the Retry-After Dataverse asks for). The worst case of
// 2 × 5 minutes / min(Interval, BackoffInitial/2) requests must stay within
// 6,000, i.e. that minimum gap must be at least 100 ms.
func CheckLimits(c LimitsConfig) error {
	var errs []error
	if c.Interval <= 0 {
		return fmt.Errorf("poll interval %s is not positive", c.Interval)
	}
	bi := c.BackoffInitial
	if bi <= 0 {
		bi = c.Interval
	}
	minGap := min(c.Interval, bi/2)
	worst := math.Ceil(float64(DataverseWindow)/float64(minGap)) * requestsPerPoll
	if worst > DataverseRequestsPerWindow {
		need := time.Duration(requestsPerPoll * int64(DataverseWindow) / DataverseRequestsPerWindow)
		errs = append(errs, fmt.Errorf(
			"poll interval %s (BRIDGE_POLL_INTERVAL) with initial backoff %s (down to %s with jitter) lets one agent be polled every %s, up to %.0f requests per %s (a 401 is retried once), over Dataverse's limit of %d requests per user per %s charged to the impersonated agent; polls of an agent must be at least %s apart",
			c.Interval, bi, bi/2, minGap, worst, DataverseWindow, DataverseRequestsPerWindow, DataverseWindow, need))
	}
	if c.MaxConcurrency < 0 {
		errs = append(errs, fmt.Errorf("max concurrency %d (BRIDGE_MAX_CONCURRENCY) is negative", c.MaxConcurrency))
	}
	if c.MaxRPS < 0 {
		errs = append(errs, fmt.Errorf("max request rate %g (BRIDGE_MAX_RPS) is negative", c.MaxRPS))
	}
	if c.MaxRPS > 0 && c.Agents > 0 {
		needRPS := float64(c.Agents) / c.Interval.Seconds()
		if c.MaxRPS < needRPS {
			minInterval := time.Duration(math.Ceil(float64(c.Agents) / c.MaxRPS * float64(time.Second))).Round(time.Millisecond)
			errs = append(errs, fmt.Errorf(
				"max request rate %g/s (BRIDGE_MAX_RPS) cannot poll %d agents every %s, which needs %.1f requests/s: raise BRIDGE_MAX_RPS to at least %.0f or BRIDGE_POLL_INTERVAL to at least %s",
				c.MaxRPS, c.Agents, c.Interval, needRPS, math.Ceil(needRPS), minInterval))
		}
	}
	return errors.Join(errs...)
}
