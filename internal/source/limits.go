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
	// DataverseExecutionTime is the combined execution time of one user's
	// requests allowed in DataverseWindow.
	DataverseExecutionTime = 20 * time.Minute
	// DailyEntitlement is the Power Platform request entitlement of one
	// licensed user per 24 hours (Dynamics 365 Enterprise licences).
	DailyEntitlement = 40000
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
	// Scope is BRIDGE_QUOTA_SCOPE; default ScopeAgent.
	Scope QuotaScope
	// CallerBudget is the application user's budget with ScopeCaller;
	// zero fields take Dataverse's limits.
	CallerBudget Budget
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
	if c.Scope == ScopeCaller && c.Agents > 0 {
		b := c.CallerBudget.withDefaults()
		perWindow := float64(c.Agents) * b.Window.Seconds() / c.Interval.Seconds()
		planned := pacingShare * float64(b.Requests)
		if perWindow > planned {
			minInterval := time.Duration(math.Ceil(float64(c.Agents) / b.RequestRate() * float64(time.Second))).Round(100 * time.Millisecond)
			maxAgents := int(b.RequestRate() * c.Interval.Seconds())
			errs = append(errs, fmt.Errorf(
				"with BRIDGE_QUOTA_SCOPE=caller every call is charged to the application user: %d agents every %s make %.0f requests per %s, over the %.0f the bridge plans (%.0f%% of Dataverse's %d per user per %s); raise BRIDGE_POLL_INTERVAL to at least %s or poll at most %d agents per replica",
				c.Agents, c.Interval, perWindow, b.Window, planned, pacingShare*100, b.Requests, b.Window, minInterval, maxAgents))
		}
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

// EntitlementWarning returns a warning when the polling plan uses more of
// the Power Platform daily request entitlement (DailyEntitlement requests
// per licensed user per 24 hours) than a user has, or "" when it fits.
// With ScopeAgent each agent's own entitlement is compared with one agent's
// polls; with ScopeCaller the application user's requests are the sum of
// all agents, drawn from the tenant's pooled entitlement.
func EntitlementWarning(c LimitsConfig) string {
	if c.Interval <= 0 || c.Agents == 0 {
		return ""
	}
	perAgent := math.Ceil(24 * float64(time.Hour) / float64(c.Interval))
	if c.Scope == ScopeCaller {
		total := perAgent * float64(c.Agents)
		if total <= DailyEntitlement {
			return ""
		}
		return fmt.Sprintf("%d agents every %s make %.0f requests per 24 hours, all charged to the application user, which draws on the tenant's pooled Power Platform request capacity rather than a licensed user's %d: check the capacity in the Power Platform admin center",
			c.Agents, c.Interval, total, DailyEntitlement)
	}
	if perAgent <= DailyEntitlement {
		return ""
	}
	return fmt.Sprintf("polling every %s makes %.0f requests per agent per 24 hours, over the Power Platform entitlement of %d per licensed user: raise BRIDGE_POLL_INTERVAL to at least %s",
		c.Interval, perAgent, DailyEntitlement, time.Duration(math.Ceil(24*float64(time.Hour)/DailyEntitlement)).Round(10*time.Millisecond))
}
