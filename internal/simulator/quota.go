package simulator

import (
	"fmt"
	"strconv"
	"time"
)

// Dataverse's service-protection API limits per user, the defaults of Quota.
const (
	DefaultQuotaRequests      = 6000
	DefaultQuotaWindow        = 5 * time.Minute
	DefaultQuotaConcurrent    = 52
	DefaultQuotaExecutionTime = 20 * time.Minute
	DefaultPenaltyExtension   = time.Second
)

// Quota scopes: who a CCaaS_GetPresence request is charged to.
const (
	// QuotaScopeAgent charges every request to the impersonated agent
	// (MSCRMCallerID), as the CCaaS_GetPresence contract says; requests
	// without the header are charged to the application user.
	QuotaScopeAgent = "agent"
	// QuotaScopeCaller charges every request to the calling application
	// user, as Dataverse's generic service-protection documentation
	// describes limits "per user" of the authenticated caller.
	QuotaScopeCaller = "caller"
)

// callerUser is the identity every request is charged to with
// QuotaScopeCaller (and requests without MSCRMCallerID in either scope).
const callerUser = ""

// Quota is Dataverse's service-protection enforcement per user (see the
// scopes). A user gets a 429 with Retry-After when, in the sliding Window,
// it made Requests requests (0x80072322), or its requests' combined
// execution time reached ExecutionTime (0x80072321), or it has Concurrent
// requests in flight (0x80072326). After a request-count or execution-time
// 429 the user is blocked until its Retry-After; every request it sends
// while blocked is refused again and pushes the end of the block
// PenaltyExtension further, as Dataverse extends the penalty of a client
// that keeps sending. Every violation is counted in Stats.
type Quota struct {
	// Requests is the number of requests a user may make in Window.
	// Default DefaultQuotaRequests.
	Requests int
	// Window is the length of the sliding window. Default DefaultQuotaWindow.
	Window time.Duration
	// Concurrent is the number of requests a user may have in flight.
	// Default DefaultQuotaConcurrent.
	Concurrent int
	// ExecutionTime is the combined execution time a user's requests may
	// take in Window. Default DefaultQuotaExecutionTime.
	ExecutionTime time.Duration
	// PenaltyExtension is how much each request sent while blocked extends
	// the block. Default DefaultPenaltyExtension.
	PenaltyExtension time.Duration
	// Scope is QuotaScopeAgent (default) or QuotaScopeCaller.
	Scope string
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
	if q.ExecutionTime == 0 {
		q.ExecutionTime = DefaultQuotaExecutionTime
	}
	if q.PenaltyExtension == 0 {
		q.PenaltyExtension = DefaultPenaltyExtension
	}
	if q.Scope == "" {
		q.Scope = QuotaScopeAgent
	}
	return q
}

func (q Quota) validate() error {
	if q.Requests < 0 || q.Window < 0 || q.Concurrent < 0 || q.ExecutionTime < 0 || q.PenaltyExtension < 0 {
		return fmt.Errorf("quota: negative limit (requests %d, window %v, concurrent %d, execution time %v, penalty extension %v)",
			q.Requests, q.Window, q.Concurrent, q.ExecutionTime, q.PenaltyExtension)
	}
	switch q.Scope {
	case "", QuotaScopeAgent, QuotaScopeCaller:
	default:
		return fmt.Errorf("quota: scope %q is not %s or %s", q.Scope, QuotaScopeAgent, QuotaScopeCaller)
	}
	return nil
}

// Service-protection error codes of Dataverse.
const (
	codeQuotaRequests   = "0x80072322"
	codeQuotaExecution  = "0x80072321"
	codeQuotaConcurrent = "0x80072326"
)

// userQuota is one user's window, execution time, block and in-flight
// count; guarded by Simulator.qmu.
type userQuota struct {
	// times holds the admission times in the window (Unix nanoseconds),
	// oldest first, from index head.
	times []int64
	head  int
	// execs holds (end, duration) of finished requests in the window, from
	// index execHead; execSum is their total.
	execs    []execEntry
	execHead int
	execSum  time.Duration
	inFlight int
	// blockedUntil is the end of the penalty after a request-count or
	// execution-time 429; blockCode is its error code.
	blockedUntil time.Time
	blockCode    string
}

type execEntry struct {
	end int64
	d   time.Duration
}

// quotaStats counts violations and peaks; guarded by Simulator.qmu.
type quotaStats struct {
	requestViolations    int
	executionViolations  int
	concurrentViolations int
	penaltyViolations    int
	byUser               map[string]int
	peakWindow           int
	peakConcurrent       int
}

func (u *userQuota) inWindow() int { return len(u.times) - u.head }

// slide drops what left the window ending at now.
func (u *userQuota) slide(now time.Time, window time.Duration) {
	cutoff := now.Add(-window).UnixNano()
	for u.head < len(u.times) && u.times[u.head] <= cutoff {
		u.head++
	}
	if u.head > 64 && u.head > len(u.times)/2 {
		u.times = append(u.times[:0], u.times[u.head:]...)
		u.head = 0
	}
	for u.execHead < len(u.execs) && u.execs[u.execHead].end <= cutoff {
		u.execSum -= u.execs[u.execHead].d
		u.execHead++
	}
	if u.execHead > 64 && u.execHead > len(u.execs)/2 {
		u.execs = append(u.execs[:0], u.execs[u.execHead:]...)
		u.execHead = 0
	}
}

// quotaVerdict is the outcome of admitting one request.
type quotaVerdict struct {
	ok         bool
	user       string
	admittedAt time.Time
	code       string
	message    string
	retryAfter time.Duration
	reason     string
}

// userFor returns the identity a request naming agent (or none) is charged
// to.
func (q Quota) userFor(agent string) string {
	if q.Scope == QuotaScopeCaller {
		return callerUser
	}
	return agent
}

// admit charges one request naming agent at now. When the verdict is ok,
// the caller must call release with it once the request is answered.
func (s *Simulator) admit(agent string, now time.Time) quotaVerdict {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	q := s.quota
	user := q.userFor(agent)
	u := s.users[user]
	if u == nil {
		u = &userQuota{}
		s.users[user] = u
	}
	u.slide(now, q.Window)
	if !q.Disabled {
		if now.Before(u.blockedUntil) {
			// Still blocked: refused, and the penalty grows.
			s.qstats.penaltyViolations++
			s.qstats.byUser[user]++
			u.blockedUntil = u.blockedUntil.Add(q.PenaltyExtension)
			return s.refusal(user, u.blockCode, "quota-penalty", u.blockedUntil.Sub(now))
		}
		if u.inWindow() >= q.Requests {
			s.qstats.requestViolations++
			s.qstats.byUser[user]++
			retry := time.Unix(0, u.times[u.head]).Add(q.Window).Sub(now)
			u.blockedUntil, u.blockCode = now.Add(ceilSecond(retry)), codeQuotaRequests
			return s.refusal(user, codeQuotaRequests, "quota-requests", retry)
		}
		if u.execSum >= q.ExecutionTime {
			s.qstats.executionViolations++
			s.qstats.byUser[user]++
			retry := time.Unix(0, u.execs[u.execHead].end).Add(q.Window).Sub(now)
			u.blockedUntil, u.blockCode = now.Add(ceilSecond(retry)), codeQuotaExecution
			return s.refusal(user, codeQuotaExecution, "quota-execution", retry)
		}
		if u.inFlight >= q.Concurrent {
			s.qstats.concurrentViolations++
			s.qstats.byUser[user]++
			return s.refusal(user, codeQuotaConcurrent, "quota-concurrent", time.Second)
		}
	}
	u.times = append(u.times, now.UnixNano())
	u.inFlight++
	s.qstats.peakWindow = max(s.qstats.peakWindow, u.inWindow())
	s.qstats.peakConcurrent = max(s.qstats.peakConcurrent, u.inFlight)
	return quotaVerdict{ok: true, user: user, admittedAt: now}
}

// ceilSecond rounds d up to whole seconds, as Retry-After is sent.
func ceilSecond(d time.Duration) time.Duration {
	return max(time.Second, (d+time.Second-1)/time.Second*time.Second)
}

func (s *Simulator) refusal(user, code, reason string, retry time.Duration) quotaVerdict {
	q := s.quota
	var msg string
	switch code {
	case codeQuotaRequests:
		msg = fmt.Sprintf("Number of requests exceeded the limit of %d over time window of %d seconds.", q.Requests, int(q.Window.Seconds()))
	case codeQuotaExecution:
		msg = fmt.Sprintf("Combined execution time of incoming requests exceeded limit of %d milliseconds over time window of %d seconds. Decrease number of concurrent requests or reduce the duration of requests and try again later.",
			q.ExecutionTime.Milliseconds(), int(q.Window.Seconds()))
	default:
		msg = fmt.Sprintf("Number of concurrent requests exceeded the limit of %d.", q.Concurrent)
	}
	return quotaVerdict{user: user, code: code, reason: reason, retryAfter: retry, message: msg}
}

// rateLimitHeaders returns the x-ms-ratelimit-* values of the user a
// request naming agent is charged to: requests and execution seconds left
// in the window.
func (s *Simulator) rateLimitHeaders(agent string, now time.Time) (string, string) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	q := s.quota
	u := s.users[q.userFor(agent)]
	if u == nil {
		return strconv.Itoa(q.Requests), strconv.FormatFloat(q.ExecutionTime.Seconds(), 'f', 3, 64)
	}
	u.slide(now, q.Window)
	return strconv.Itoa(max(0, q.Requests-u.inWindow())), strconv.FormatFloat(max(0, (q.ExecutionTime-u.execSum).Seconds()), 'f', 3, 64)
}

// release ends a request admitted by v, charging its execution time.
func (s *Simulator) release(v quotaVerdict) {
	end := s.now()
	s.qmu.Lock()
	defer s.qmu.Unlock()
	u := s.users[v.user]
	u.inFlight--
	d := max(0, end.Sub(v.admittedAt))
	u.execs = append(u.execs, execEntry{end: end.UnixNano(), d: d})
	u.execSum += d
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
