package simulator

import (
	"fmt"
	"time"
)

// Dataverse's service-protection API limits per user, the defaults of Quota.
const (
	DefaultQuotaRequests   = 6000
	DefaultQuotaWindow     = 5 * time.Minute
	DefaultQuotaConcurrent = 52
)

// Quota is Dataverse's service-protection enforcement: every request is
// charged to the impersonated user (the MSCRMCallerID agent, or the
// application user when the header is absent). A request beyond Requests in
// the sliding Window, or beyond Concurrent in flight for that user, gets a
// 429 with Retry-After and is counted as a violation in Stats.
type Quota struct {
	// Requests is the number of requests a user may make in Window.
	// Default DefaultQuotaRequests.
	Requests int
	// Window is the length of the sliding window. Default DefaultQuotaWindow.
	Window time.Duration
	// Concurrent is the number of requests a user may have in flight.
	// Default DefaultQuotaConcurrent.
	Concurrent int
	// Disabled turns enforcement off; requests are still counted for the
	// peaks in Stats.
	Disabled bool
}

func (q Quota) withDefaults() Quota {
	if q.Requests == 0 {
		q.Requests = DefaultQuotaRequests
	}
	if q.Window == 0 {
		q.Window = DefaultQuotaWindow
	}
	if q.Concurrent == 0 {
		q.Concurrent = DefaultQuotaConcurrent
	}
	return q
}

func (q Quota) validate() error {
	if q.Requests < 0 || q.Window < 0 || q.Concurrent < 0 {
		return fmt.Errorf("quota: negative limit (requests %d, window %v, concurrent %d)", q.Requests, q.Window, q.Concurrent)
	}
	return nil
}

// Service-protection error codes of Dataverse.
const (
	codeQuotaRequests   = "0x80072322"
	codeQuotaConcurrent = "0x80072326"
)

// userQuota is one user's window and in-flight count; guarded by
// Simulator.qmu.
type userQuota struct {
	// times holds the admission times in the window (Unix nanoseconds),
	// oldest first, from index head.
	times    []int64
	head     int
	inFlight int
}

// quotaStats counts violations and peaks; guarded by Simulator.qmu.
type quotaStats struct {
	requestViolations    int
	concurrentViolations int
	byUser               map[string]int
	peakWindow           int
	peakConcurrent       int
}

func (u *userQuota) inWindow() int { return len(u.times) - u.head }

// quotaVerdict is the outcome of admitting one request.
type quotaVerdict struct {
	ok         bool
	code       string
	message    string
	retryAfter time.Duration
	reason     string
}

// admit charges one request to user at now. When the verdict is ok, the
// caller must call release once the request is answered.
func (s *Simulator) admit(user string, now time.Time) quotaVerdict {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	q := s.quota
	u := s.users[user]
	if u == nil {
		u = &userQuota{}
		s.users[user] = u
	}
	// Slide the window.
	cutoff := now.Add(-q.Window).UnixNano()
	for u.head < len(u.times) && u.times[u.head] <= cutoff {
		u.head++
	}
	if u.head > 64 && u.head > len(u.times)/2 {
		u.times = append(u.times[:0], u.times[u.head:]...)
		u.head = 0
	}
	if !q.Disabled {
		if u.inWindow() >= q.Requests {
			s.qstats.requestViolations++
			s.qstats.byUser[user]++
			retry := time.Unix(0, u.times[u.head]).Add(q.Window).Sub(now)
			return quotaVerdict{code: codeQuotaRequests, reason: "quota-requests", retryAfter: retry,
				message: fmt.Sprintf("Number of requests exceeded the limit of %d over time window of %d seconds.", q.Requests, int(q.Window.Seconds()))}
		}
		if u.inFlight >= q.Concurrent {
			s.qstats.concurrentViolations++
			s.qstats.byUser[user]++
			return quotaVerdict{code: codeQuotaConcurrent, reason: "quota-concurrent", retryAfter: time.Second,
				message: fmt.Sprintf("Number of concurrent requests exceeded the limit of %d.", q.Concurrent)}
		}
	}
	u.times = append(u.times, now.UnixNano())
	u.inFlight++
	s.qstats.peakWindow = max(s.qstats.peakWindow, u.inWindow())
	s.qstats.peakConcurrent = max(s.qstats.peakConcurrent, u.inFlight)
	return quotaVerdict{ok: true}
}

// remaining returns how many more requests user may make in the window now.
func (s *Simulator) remaining(user string) int {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	u := s.users[user]
	if u == nil {
		return s.quota.Requests
	}
	return max(0, s.quota.Requests-u.inWindow())
}

func (s *Simulator) release(user string) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	s.users[user].inFlight--
}

// SetQuota replaces the service-protection limits (zero fields take the
// defaults); counts already in the windows are kept. Safe while serving.
func (s *Simulator) SetQuota(q Quota) error {
	if err := q.validate(); err != nil {
		return fmt.Errorf("set quota: %w", err)
	}
	s.qmu.Lock()
	defer s.qmu.Unlock()
	s.quota = q.withDefaults()
	return nil
}
