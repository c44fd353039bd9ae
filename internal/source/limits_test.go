package source_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// TestCallerScopePacesAThousandAgents: with every call charged to the
// application user, 1,000 agents are paced under the user's budget: no
// 429 at all. The budget is scaled down (300 requests per 2 s) so the test
// covers several windows in seconds.
func TestCallerScopePacesAThousandAgents(t *testing.T) {
	const agents = 1000
	budget := source.Budget{Requests: 300, Window: 2 * time.Second}
	interval := 8 * time.Second // 125 requests/s, under 90% of 150/s
	if err := source.CheckLimits(source.LimitsConfig{Agents: agents, Interval: interval, Scope: source.ScopeCaller, CallerBudget: budget}); err != nil {
		t.Fatalf("the plan does not fit: %v", err)
	}
	if err := source.CheckLimits(source.LimitsConfig{Agents: agents, Interval: 5 * time.Second, Scope: source.ScopeCaller, CallerBudget: budget}); err == nil {
		t.Fatal("CheckLimits accepted 1,000 agents every 5 s for 150 requests/s")
	}
	r := newRig(t, agents, func(o *simulator.Options) {
		o.Quota = simulator.Quota{Requests: budget.Requests, Window: budget.Window, Scope: simulator.QuotaScopeCaller}
	}, func(o *source.PollerOptions) {
		o.Interval, o.MaxConcurrency = interval, 32
		o.QuotaScope, o.CallerBudget = source.ScopeCaller, budget
	}, nil)
	r.start(t)
	testwait.Until(t, 20*time.Second, "three windows of polls", func() bool { return r.sim.Stats().Requests >= 700 })
	st := r.sim.Stats()
	if v := st.QuotaRequestViolations + st.QuotaConcurrentViolations + st.QuotaExecutionViolations + st.QuotaPenaltyViolations; v != 0 {
		t.Fatalf("%d service-protection violations: %+v", v, st)
	}
	if st.PeakWindowRequests > budget.Requests {
		t.Errorf("peak %d requests in a window, budget %d", st.PeakWindowRequests, budget.Requests)
	}
}

// TestCallerScopePausesEveryAgentAfterA429: once the application user's
// request count is exceeded, no request for any agent arrives before the
// Retry-After (sending would extend the penalty), and polling resumes
// after it.
func TestCallerScopePausesEveryAgentAfterA429(t *testing.T) {
	var rec []simulator.Request
	var mu chan struct{} = make(chan struct{}, 1)
	mu <- struct{}{}
	r := newRig(t, 20, func(o *simulator.Options) {
		o.Quota = simulator.Quota{Requests: 30, Window: 2 * time.Second, Scope: simulator.QuotaScopeCaller}
		prev := o.OnRequest
		o.OnRequest = func(q simulator.Request) {
			prev(q)
			<-mu
			rec = append(rec, q)
			mu <- struct{}{}
		}
	}, func(o *source.PollerOptions) {
		// A budget larger than the organisation's: the bridge trips it.
		o.Interval, o.MaxConcurrency = 200*time.Millisecond, 1
		o.QuotaScope, o.CallerBudget = source.ScopeCaller, source.Budget{Requests: 1000, Window: 2 * time.Second}
	}, nil)
	r.start(t)
	testwait.Until(t, 15*time.Second, "two pauses and polls after them", func() bool {
		<-mu
		defer func() { mu <- struct{}{} }()
		n := 0
		for _, q := range rec {
			if q.Status == 429 {
				n++
			}
		}
		return n >= 2 && rec[len(rec)-1].Status == 200
	})
	r.stop()
	<-mu
	for i, q := range rec {
		if q.Status != 429 || q.RetryUntil.IsZero() {
			continue
		}
		for _, later := range rec[i+1:] {
			if later.At.Before(q.RetryUntil) {
				t.Errorf("request for %s at %s, before the Retry-After of %s", later.AgentID, later.At.Format("15:04:05.000"), q.RetryUntil.Format("15:04:05.000"))
			}
		}
	}
	if st := r.sim.Stats(); st.QuotaPenaltyViolations != 0 || st.QuotaRequestViolations == 0 {
		t.Errorf("stats %+v: want request-count 429s and no request during a penalty", st)
	}
}

// TestConcurrency429ShortensTheInflightCap: concurrency 429s make the
// poller allow fewer requests in flight, until they stop.
func TestConcurrency429ShortensTheInflightCap(t *testing.T) {
	r := newRig(t, 60, func(o *simulator.Options) {
		o.Quota = simulator.Quota{Requests: 1_000_000, Concurrent: 3, Scope: simulator.QuotaScopeCaller}
		o.Faults.Latency = 50 * time.Millisecond
	}, func(o *source.PollerOptions) {
		o.Interval, o.MaxConcurrency = 300*time.Millisecond, 12
		o.QuotaScope, o.CallerBudget = source.ScopeCaller, source.Budget{Requests: 1_000_000}
	}, nil)
	if r.poller.InflightCap() != 12 {
		t.Fatalf("cap %d before any answer, want 12", r.poller.InflightCap())
	}
	r.start(t)
	testwait.Until(t, 10*time.Second, "the cap shortened to the organisation's 3", func() bool { return r.poller.InflightCap() <= 3 })
	before := r.sim.Stats().QuotaConcurrentViolations
	if before == 0 {
		t.Fatal("no concurrency 429 seen")
	}
	// With the cap shortened, concurrency 429s become rare: count them
	// over the next stretch of polls.
	start := r.sim.Stats().Requests
	testwait.Until(t, 10*time.Second, "200 more requests", func() bool { return r.sim.Stats().Requests >= start+200 })
	if after := r.sim.Stats().QuotaConcurrentViolations - before; after > 20 {
		t.Errorf("%d concurrency 429s in 200 requests after the cap shortened", after)
	}
}

// TestCallerScopePacesTheExecutionTime: with slow answers, the poller
// lowers its rate so the application user's combined execution time stays
// within its budget: once the window has slid past the first answers (sent
// before any response time was known), no execution-time 429 follows.
func TestCallerScopePacesTheExecutionTime(t *testing.T) {
	budget := source.Budget{Requests: 1_000_000, Window: time.Second, ExecutionTime: 500 * time.Millisecond}
	r := newRig(t, 40, func(o *simulator.Options) {
		o.Quota = simulator.Quota{Requests: budget.Requests, Window: budget.Window, ExecutionTime: budget.ExecutionTime, Scope: simulator.QuotaScopeCaller}
		o.Faults.Latency = 50 * time.Millisecond
	}, func(o *source.PollerOptions) {
		// 40 requests/s of 50 ms each: 2 s of execution per second, four
		// times the budget of 0.5 s per second.
		o.Interval, o.MaxConcurrency = time.Second, 8
		o.QuotaScope, o.CallerBudget = source.ScopeCaller, budget
	}, nil)
	r.start(t)
	begin := time.Now()
	// Warm-up: three windows, the measured period three more. The waits
	// are the measurement periods themselves, not synchronisation.
	testwait.Until(t, 10*time.Second, "three windows of warm-up", func() bool { return time.Since(begin) >= 3*budget.Window })
	settled := r.sim.Stats()
	testwait.Until(t, 10*time.Second, "three measured windows", func() bool { return time.Since(begin) >= 6*budget.Window })
	st := r.sim.Stats()
	// At most one: the organisation charges wall time, and a machine busy
	// with other work can lengthen answers beyond the mean the pacing has
	// measured so far, once, before the mean catches up.
	if n := st.QuotaExecutionViolations - settled.QuotaExecutionViolations; n > 1 {
		t.Errorf("%d execution-time 429s after the warm-up (%d during it)", n, settled.QuotaExecutionViolations)
	}
	if polled := st.Requests - settled.Requests; polled < 15 {
		t.Errorf("only %d requests in %s: paced to a stop", polled, 3*budget.Window)
	}
	t.Logf("requests %d in the measured %s, %d execution-time 429s during the warm-up", st.Requests-settled.Requests, 3*budget.Window, settled.QuotaExecutionViolations)
}

func TestCheckLimits(t *testing.T) {
	tests := []struct {
		name    string
		cfg     source.LimitsConfig
		wantErr []string
	}{
		{"10k agents at 10s", source.LimitsConfig{Agents: 10_000, Interval: 10 * time.Second, MaxRPS: 1200, MaxConcurrency: 64}, nil},
		{"interval 100ms is the edge", source.LimitsConfig{Agents: 1, Interval: 100 * time.Millisecond, BackoffInitial: time.Second}, nil},
		{"interval 200ms with default backoff", source.LimitsConfig{Agents: 1, Interval: 200 * time.Millisecond}, nil},
		{"interval under 100ms", source.LimitsConfig{Agents: 1, Interval: 60 * time.Millisecond}, []string{"poll interval 60ms", "polled every 30ms", "6000 requests per user", "at least 100ms apart"}},
		{"default backoff halves the gap", source.LimitsConfig{Agents: 1, Interval: 150 * time.Millisecond}, []string{"down to 75ms with jitter"}},
		{"short backoff", source.LimitsConfig{Agents: 1, Interval: 10 * time.Second, BackoffInitial: 150 * time.Millisecond}, []string{"initial backoff 150ms", "polled every 75ms"}},
		{"rate cap too low", source.LimitsConfig{Agents: 10_000, Interval: 10 * time.Second, MaxRPS: 500}, []string{"cannot poll 10000 agents every 10s", "needs 1000.0 requests/s", "BRIDGE_MAX_RPS to at least 1000", "BRIDGE_POLL_INTERVAL to at least 20s"}},
		{"no rate cap", source.LimitsConfig{Agents: 50_000, Interval: 10 * time.Second}, nil},
		{"zero interval", source.LimitsConfig{Agents: 1}, []string{"not positive"}},
		{"caller scope: 1,000 agents every 10s do not fit", source.LimitsConfig{Agents: 1000, Interval: 10 * time.Second, Scope: source.ScopeCaller},
			[]string{"BRIDGE_QUOTA_SCOPE=caller", "1000 agents every 10s make 30000 requests per 5m0s", "over the 5400", "6000 per user", "at least 55.6s", "at most 180 agents"}},
		{"caller scope: 1,000 agents every minute fit", source.LimitsConfig{Agents: 1000, Interval: time.Minute, Scope: source.ScopeCaller}, nil},
		{"agent scope: 1,000 agents every 10s fit", source.LimitsConfig{Agents: 1000, Interval: 10 * time.Second, Scope: source.ScopeAgent}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := source.CheckLimits(tt.cfg)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("CheckLimits: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("CheckLimits accepted the configuration")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestEntitlementWarning(t *testing.T) {
	tests := []struct {
		cfg  source.LimitsConfig
		want string
	}{
		{source.LimitsConfig{Agents: 10, Interval: 10 * time.Second}, ""},
		{source.LimitsConfig{Agents: 10, Interval: 2 * time.Second}, "43200 requests per agent per 24 hours, over the Power Platform entitlement of 40000 per licensed user: raise BRIDGE_POLL_INTERVAL to at least 2.16s"},
		{source.LimitsConfig{Agents: 1000, Interval: time.Minute, Scope: source.ScopeCaller}, "1440000 requests per 24 hours, all charged to the application user"},
		{source.LimitsConfig{Agents: 10, Interval: time.Minute, Scope: source.ScopeCaller}, ""},
	}
	for _, tt := range tests {
		got := source.EntitlementWarning(tt.cfg)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("EntitlementWarning(%+v) = %q, want %q", tt.cfg, got, tt.want)
		}
	}
}
