package simulator_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// recorder collects the Request records of a simulator.
type recorder struct {
	mu   sync.Mutex
	reqs []simulator.Request
}

func (r *recorder) hook(q simulator.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, q)
}

func (r *recorder) last(t *testing.T) simulator.Request {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) == 0 {
		t.Fatal("no request recorded")
	}
	return r.reqs[len(r.reqs)-1]
}

func TestInjectedFaults(t *testing.T) {
	documented := []string{"ActiveBrowserSessions", "AgentId", "AgentName", "Timestamp", "AllowedChannels", "CurrentPresenceStatusInfo", "DisabledChannels", "PresenceId"}
	type check func(t *testing.T, agent string, resp *http.Response, body []byte, rec simulator.Request)
	tests := []struct {
		name       string
		faults     simulator.Faults
		agentFault *simulator.AgentFault
		wantStatus int
		wantReason string
		check      check
	}{
		{name: "429 with Retry-After in seconds", faults: simulator.Faults{Rate429: 1, RetryAfter: 2500 * time.Millisecond}, wantStatus: 429, wantReason: "rate-429",
			check: func(t *testing.T, _ string, resp *http.Response, body []byte, rec simulator.Request) {
				if got := resp.Header.Get("Retry-After"); got != "3" {
					t.Errorf("Retry-After %q, want 3", got)
				}
				if !rec.RetryUntil.Equal(rec.At.Add(3 * time.Second)) {
					t.Errorf("RetryUntil %v, want arrival + 3 s", rec.RetryUntil)
				}
				if code, _ := dataverseError(t, body); code != "0x80072322" {
					t.Errorf("code %s", code)
				}
			}},
		{name: "429 with Retry-After as a date", faults: simulator.Faults{Rate429: 1, RetryAfter: 4 * time.Second, RetryAfterDate: true}, wantStatus: 429, wantReason: "rate-429",
			check: func(t *testing.T, _ string, resp *http.Response, _ []byte, rec simulator.Request) {
				at, err := http.ParseTime(resp.Header.Get("Retry-After"))
				if err != nil {
					t.Fatalf("Retry-After %q: %v", resp.Header.Get("Retry-After"), err)
				}
				if !at.Equal(rec.At.Add(4*time.Second)) || !at.Equal(rec.RetryUntil) {
					t.Errorf("Retry-After %v, arrival %v, RetryUntil %v", at, rec.At, rec.RetryUntil)
				}
			}},
		{name: "502", faults: simulator.Faults{Rate5xx: 1, Statuses5xx: []int{502}}, wantStatus: 502, wantReason: "rate-5xx",
			check: func(t *testing.T, _ string, _ *http.Response, body []byte, _ simulator.Request) {
				dataverseError(t, body)
			}},
		{name: "agent 503 with Retry-After", agentFault: &simulator.AgentFault{Status: 503, RetryAfter: 5 * time.Second}, wantStatus: 503, wantReason: "agent-fault",
			check: func(t *testing.T, _ string, resp *http.Response, _ []byte, _ simulator.Request) {
				if got := resp.Header.Get("Retry-After"); got != "5" {
					t.Errorf("Retry-After %q", got)
				}
			}},
		{name: "agent 500 without Retry-After", agentFault: &simulator.AgentFault{Status: 500}, wantStatus: 500, wantReason: "agent-fault",
			check: func(t *testing.T, _ string, resp *http.Response, _ []byte, _ simulator.Request) {
				if got := resp.Header.Get("Retry-After"); got != "" {
					t.Errorf("Retry-After %q", got)
				}
			}},
		{name: "agent 404 for a known agent", agentFault: &simulator.AgentFault{Status: 404}, wantStatus: 404, wantReason: "agent-fault"},
		{name: "agent 429 defaults to 1 s", agentFault: &simulator.AgentFault{Status: 429}, wantStatus: 429, wantReason: "agent-fault",
			check: func(t *testing.T, _ string, resp *http.Response, _ []byte, _ simulator.Request) {
				if got := resp.Header.Get("Retry-After"); got != "1" {
					t.Errorf("Retry-After %q", got)
				}
			}},
		{name: "not JSON", agentFault: &simulator.AgentFault{Malformed: simulator.MalformedNotJSON}, wantStatus: 200, wantReason: "agent-fault",
			check: func(t *testing.T, _ string, resp *http.Response, body []byte, _ simulator.Request) {
				if json.Valid(body) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
					t.Errorf("body %q, content type %q", body, resp.Header.Get("Content-Type"))
				}
			}},
		{name: "truncated", faults: simulator.Faults{RateMalformed: 1, MalformedKinds: []simulator.MalformedKind{simulator.MalformedTruncated}}, wantStatus: 200, wantReason: "rate-malformed",
			check: func(t *testing.T, _ string, _ *http.Response, body []byte, rec simulator.Request) {
				if json.Valid(body) || len(body) < 20 || !strings.HasPrefix(string(body), "{") || rec.Malformed != simulator.MalformedTruncated {
					t.Errorf("body %q, malformed %q", body, rec.Malformed)
				}
			}},
		{name: "empty", agentFault: &simulator.AgentFault{Malformed: simulator.MalformedEmpty}, wantStatus: 200, wantReason: "agent-fault",
			check: func(t *testing.T, _ string, _ *http.Response, body []byte, _ simulator.Request) {
				if len(body) != 0 {
					t.Errorf("body %q", body)
				}
			}},
		{name: "missing key", agentFault: &simulator.AgentFault{Malformed: simulator.MalformedMissingKey}, wantStatus: 200, wantReason: "agent-fault",
			check: func(t *testing.T, _ string, _ *http.Response, body []byte, _ simulator.Request) {
				var m map[string]any
				if err := json.Unmarshal(body, &m); err != nil {
					t.Fatal(err)
				}
				missing := 0
				for _, k := range documented {
					if _, ok := m[k]; !ok {
						missing++
					}
				}
				if missing != 1 {
					t.Errorf("%d keys missing from %s", missing, body)
				}
			}},
		{name: "wrong type", agentFault: &simulator.AgentFault{Malformed: simulator.MalformedWrongType}, wantStatus: 200, wantReason: "agent-fault",
			check: func(t *testing.T, _ string, _ *http.Response, body []byte, _ simulator.Request) {
				var m map[string]any
				if err := json.Unmarshal(body, &m); err != nil {
					t.Fatal(err)
				}
				var strict presenceBody
				var typeErr *json.UnmarshalTypeError
				if err := json.Unmarshal(body, &strict); !errors.As(err, &typeErr) || len(m) != len(documented)+1 {
					t.Errorf("decoding %s gave %v, want a type error", body, err)
				}
			}},
		{name: "wrong agent", agentFault: &simulator.AgentFault{Malformed: simulator.MalformedWrongAgent}, wantStatus: 200, wantReason: "agent-fault",
			check: func(t *testing.T, agent string, _ *http.Response, body []byte, _ simulator.Request) {
				var b struct{ AgentId string }
				if err := json.Unmarshal(body, &b); err != nil || b.AgentId == agent || !guidRE.MatchString(b.AgentId) {
					t.Errorf("AgentId %q for agent %s (%v)", b.AgentId, agent, err)
				}
			}},
		{name: "oversize", agentFault: &simulator.AgentFault{Malformed: simulator.MalformedOversize}, wantStatus: 200, wantReason: "agent-fault",
			check: func(t *testing.T, _ string, _ *http.Response, body []byte, _ simulator.Request) {
				if len(body) <= 1<<20 || !json.Valid(body) {
					t.Errorf("body of %d bytes, valid %v", len(body), json.Valid(body))
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec recorder
			e := newEnv(t, func(o *simulator.Options) { o.OnRequest = rec.hook })
			agent := e.sim.AgentIDs()[1]
			if err := e.sim.SetFaults(tt.faults); err != nil {
				t.Fatal(err)
			}
			if tt.agentFault != nil {
				if err := e.sim.SetAgentFault(strings.ToUpper(agent), *tt.agentFault); err != nil {
					t.Fatal(err)
				}
			}
			resp, body := e.get(t, agent, simulator.DefaultToken)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %.200s", resp.StatusCode, tt.wantStatus, body)
			}
			r := rec.last(t)
			if r.Status != tt.wantStatus || r.Reason != tt.wantReason || r.AgentID != agent {
				t.Errorf("recorded %+v", r)
			}
			if tt.check != nil {
				tt.check(t, agent, resp, body, r)
			}
			// Faults off: back to normal.
			e.sim.ClearAgentFault(agent)
			if err := e.sim.SetFaults(simulator.Faults{}); err != nil {
				t.Fatal(err)
			}
			if resp, _ := e.get(t, agent, simulator.DefaultToken); resp.StatusCode != 200 {
				t.Errorf("after clearing faults: status %d", resp.StatusCode)
			}
		})
	}
}

func TestFaultRates(t *testing.T) {
	e := newEnv(t, func(o *simulator.Options) {
		o.Faults = simulator.Faults{Rate429: 0.1, Rate5xx: 0.1, RateMalformed: 0.1}
	})
	agents := e.sim.AgentIDs()
	const n = 600
	for i := range n {
		e.get(t, agents[i%len(agents)], simulator.DefaultToken)
	}
	st := e.sim.Stats()
	for _, reason := range []string{"rate-429", "rate-5xx", "rate-malformed"} {
		if got := st.ByReason[reason]; got < n/20 || got > n/5 {
			t.Errorf("%s: %d of %d requests, want about 10%%", reason, got, n)
		}
	}
	for _, status := range []int{500, 502, 503, 504} {
		if st.ByStatus[status] == 0 {
			t.Errorf("status %d never drawn: %v", status, st.ByStatus)
		}
	}
	if st.Requests != n || st.ByStatus[200]+st.ByStatus[429]+st.ByStatus[500]+st.ByStatus[502]+st.ByStatus[503]+st.ByStatus[504] != n {
		t.Errorf("stats %+v", st)
	}
}

func TestBursts(t *testing.T) {
	e := newEnv(t, nil)
	ids := e.sim.AgentIDs()
	if err := e.sim.SetFaults(simulator.Faults{Burst429Every: 10 * time.Second, Burst429Length: 3 * time.Second, Burst429Agents: []string{strings.ToUpper(ids[0])}}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		advance    time.Duration
		agent      string
		wantStatus int
		wantRetry  string
	}{
		{0, ids[0], 200, ""},
		{6900 * time.Millisecond, ids[0], 200, ""},
		{100 * time.Millisecond, ids[0], 429, "3"}, // 7 s: the burst starts
		{0, ids[1], 200, ""},                       // not in Burst429Agents
		{2500 * time.Millisecond, ids[0], 429, "1"},
		{500 * time.Millisecond, ids[0], 200, ""}, // 10 s: over
		{7 * time.Second, ids[0], 429, "3"},       // 17 s: the next one
	}
	for i, s := range steps {
		e.clock.Advance(s.advance)
		resp, _ := e.get(t, s.agent, simulator.DefaultToken)
		if resp.StatusCode != s.wantStatus || resp.Header.Get("Retry-After") != s.wantRetry {
			t.Errorf("step %d: status %d Retry-After %q, want %d %q", i, resp.StatusCode, resp.Header.Get("Retry-After"), s.wantStatus, s.wantRetry)
		}
	}
	if got := e.sim.Stats().ByReason["burst-429"]; got != 3 {
		t.Errorf("%d burst 429s, want 3", got)
	}
}

func TestAgentFaultCount(t *testing.T) {
	e := newEnv(t, nil)
	id := e.sim.AgentIDs()[0]
	if err := e.sim.SetAgentFault(id, simulator.AgentFault{Status: 503, Count: 2}); err != nil {
		t.Fatal(err)
	}
	var got []int
	for range 3 {
		resp, _ := e.get(t, id, simulator.DefaultToken)
		got = append(got, resp.StatusCode)
	}
	if !slices.Equal(got, []int{503, 503, 200}) {
		t.Errorf("statuses %v", got)
	}
	for _, bad := range []simulator.AgentFault{{Status: 200}, {Malformed: "odd"}, {Count: -1}} {
		if err := e.sim.SetAgentFault(id, bad); err == nil {
			t.Errorf("fault %+v accepted", bad)
		}
	}
	if err := e.sim.SetFaults(simulator.Faults{Rate429: 2}); err == nil {
		t.Error("a rate of 2 was accepted")
	}
}

func TestLatency(t *testing.T) {
	var rec recorder
	e := newEnv(t, func(o *simulator.Options) {
		o.Faults.Latency = 40 * time.Millisecond
		o.Faults.LatencyJitter = 20 * time.Millisecond
		o.OnRequest = rec.hook
	})
	id := e.sim.AgentIDs()[0]
	start := time.Now()
	resp, _ := e.get(t, id, simulator.DefaultToken)
	if took := time.Since(start); resp.StatusCode != 200 || took < 40*time.Millisecond {
		t.Errorf("status %d after %v, want 200 after at least 40ms", resp.StatusCode, took)
	}
	if l := rec.last(t).Latency; l < 40*time.Millisecond || l >= 60*time.Millisecond {
		t.Errorf("recorded latency %v", l)
	}

	t.Run("client gives up", func(t *testing.T) {
		if err := e.sim.SetAgentFault(id, simulator.AgentFault{Latency: time.Minute}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/api/data/v9.2/CCaaS_GetPresence", nil)
		req.Header.Set("MSCRMCallerID", id)
		req.Header.Set("Authorization", "Bearer "+simulator.DefaultToken)
		if _, err := e.srv.Client().Do(req); err == nil {
			t.Fatal("request succeeded despite a minute of latency")
		}
		testwait.Until(t, 5*time.Second, "the handler to notice", func() bool { return e.sim.Stats().ByReason["client-gone"] == 1 })
	})
}

func TestTokens(t *testing.T) {
	e := newEnv(t, func(o *simulator.Options) {
		o.TokenTTL = time.Minute
		o.ValidateToken = func(tok string) error {
			if tok == "from-fake-entra" {
				return nil
			}
			return errors.New("unknown token")
		}
	})
	id := e.sim.AgentIDs()[0]
	tok := e.sim.IssueToken()
	steps := []struct {
		name       string
		do         func()
		token      string
		wantStatus int
		wantReason string
	}{
		{"fresh", nil, tok, 200, ""},
		{"59 s old", func() { e.clock.Advance(59 * time.Second) }, tok, 200, ""},
		{"60 s old", func() { e.clock.Advance(time.Second) }, tok, 401, "token-expired"},
		{"static never expires", nil, simulator.DefaultToken, 200, ""},
		{"validator accepts", nil, "from-fake-entra", 200, ""},
		{"validator refuses", nil, "forged", 401, "token-refused"},
		{"TTL lifted", func() { e.sim.SetTokenTTL(0) }, tok, 200, ""},
		{"expired by force", func() { e.sim.ExpireTokens() }, tok, 401, "token-expired"},
	}
	var newTok string
	steps = append(steps, struct {
		name       string
		do         func()
		token      string
		wantStatus int
		wantReason string
	}{"refreshed", func() { newTok = e.sim.IssueToken() }, "", 200, ""})
	for _, s := range steps {
		if s.do != nil {
			s.do()
		}
		token := s.token
		if token == "" {
			token = newTok
		}
		before := e.sim.Stats().ByReason[s.wantReason]
		resp, body := e.get(t, id, token)
		if resp.StatusCode != s.wantStatus {
			t.Fatalf("%s: status %d, want %d", s.name, resp.StatusCode, s.wantStatus)
		}
		if s.wantStatus == 401 {
			_, msg := dataverseError(t, body)
			if strings.Contains(msg, token) || strings.Contains(resp.Header.Get("WWW-Authenticate"), token) {
				t.Errorf("%s: the token is echoed", s.name)
			}
			if got := e.sim.Stats().ByReason[s.wantReason]; got != before+1 {
				t.Errorf("%s: reason %s not counted", s.name, s.wantReason)
			}
		}
	}
	if got := e.sim.Stats().TokensIssued; got != 2 {
		t.Errorf("TokensIssued %d, want 2", got)
	}
}

func TestQuotaWindow(t *testing.T) {
	e := newEnv(t, func(o *simulator.Options) { o.Quota = simulator.Quota{Requests: 5, Window: 10 * time.Second} })
	ids := e.sim.AgentIDs()
	for i := range 5 {
		e.clock.Advance(time.Second)
		if resp, _ := e.get(t, ids[0], simulator.DefaultToken); resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
	// 5 requests at 1..5 s: the sixth at 5.5 s is one too many until the
	// first leaves the window at 11 s.
	e.clock.Advance(500 * time.Millisecond)
	resp, body := e.get(t, ids[0], simulator.DefaultToken)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "6" {
		t.Fatalf("status %d Retry-After %q, want 429 6", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if code, msg := dataverseError(t, body); code != "0x80072322" || !strings.Contains(msg, "limit of 5 over time window of 10 seconds") {
		t.Errorf("error %s %q", code, msg)
	}
	// Another user has their own quota; the catalogue is charged to the
	// application user.
	if resp, _ := e.get(t, ids[1], simulator.DefaultToken); resp.StatusCode != 200 {
		t.Errorf("other agent: status %d", resp.StatusCode)
	}
	if resp, _ := e.do(t, t.Context(), http.MethodGet, "/api/data/v9.2/msdyn_presences", "", simulator.DefaultToken); resp.StatusCode != 200 {
		t.Errorf("catalogue: status %d", resp.StatusCode)
	}
	e.clock.Advance(6 * time.Second) // 11.5 s: Retry-After has passed, the first request left the window
	if resp, _ := e.get(t, ids[0], simulator.DefaultToken); resp.StatusCode != 200 {
		t.Errorf("after the window slid: status %d", resp.StatusCode)
	}
	resp, _ = e.get(t, ids[0], simulator.DefaultToken)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("window full again: status %d Retry-After %q, want 429 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Sending again before Retry-After extends the penalty.
	resp, _ = e.get(t, ids[0], simulator.DefaultToken)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "2" {
		t.Errorf("sent while blocked: status %d Retry-After %q, want 429 2 (extended)", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	st := e.sim.Stats()
	if st.QuotaRequestViolations != 2 || st.QuotaPenaltyViolations != 1 || st.QuotaViolationsByUser[ids[0]] != 3 || st.QuotaConcurrentViolations != 0 || st.PeakWindowRequests != 5 {
		t.Errorf("stats %+v", st)
	}
	if err := e.sim.SetQuota(simulator.Quota{Disabled: true}); err != nil {
		t.Fatal(err)
	}
	if resp, _ := e.get(t, ids[0], simulator.DefaultToken); resp.StatusCode != 200 {
		t.Errorf("quota disabled: status %d", resp.StatusCode)
	}
}

func TestQuotaConcurrent(t *testing.T) {
	e := newEnv(t, func(o *simulator.Options) { o.Quota = simulator.Quota{Concurrent: 2} })
	ids := e.sim.AgentIDs()
	if err := e.sim.SetAgentFault(ids[0], simulator.AgentFault{Latency: time.Minute}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/api/data/v9.2/CCaaS_GetPresence", nil)
			req.Header.Set("MSCRMCallerID", ids[0])
			req.Header.Set("Authorization", "Bearer "+simulator.DefaultToken)
			if resp, err := e.srv.Client().Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	testwait.Until(t, 5*time.Second, "two requests in flight", func() bool { return e.sim.Stats().PeakConcurrent == 2 })
	e.sim.ClearAgentFault(ids[0])
	resp, body := e.get(t, ids[0], simulator.DefaultToken)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third concurrent request: status %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if code, _ := dataverseError(t, body); code != "0x80072326" {
		t.Errorf("code %s", code)
	}
	if resp, _ := e.get(t, ids[1], simulator.DefaultToken); resp.StatusCode != 200 {
		t.Errorf("other agent: status %d", resp.StatusCode)
	}
	cancel()
	wg.Wait()
	testwait.Until(t, 5*time.Second, "the slots to be released", func() bool {
		resp, _ := e.get(t, ids[0], simulator.DefaultToken)
		return resp.StatusCode == 200
	})
	// The loop above may have met the slots still held once or twice more.
	if st := e.sim.Stats(); st.QuotaConcurrentViolations < 1 || st.QuotaConcurrentViolations != st.ByReason["quota-concurrent"] || st.QuotaRequestViolations != 0 || st.PeakConcurrent != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestRequestLog(t *testing.T) {
	var rec recorder
	e := newEnv(t, func(o *simulator.Options) { o.RequestLogSize = 3; o.OnRequest = rec.hook })
	id := e.sim.AgentIDs()[0]
	var want []time.Time
	for range 5 {
		e.clock.Advance(time.Second)
		want = append(want, e.clock.Now())
		e.get(t, strings.ToUpper(id), simulator.DefaultToken)
	}
	e.get(t, "", simulator.DefaultToken) // no caller: not logged per agent
	if got := e.sim.RequestTimes(id); !slices.Equal(got, want[2:]) {
		t.Errorf("request times %v, want %v", got, want[2:])
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) != 6 || rec.reqs[0].AgentID != id || rec.reqs[0].Endpoint != simulator.EndpointPresence || rec.reqs[5].Status != 400 {
		t.Errorf("hook saw %+v", rec.reqs)
	}
}

// TestConcurrentUse exercises every runtime knob while requests are served,
// for the race detector.
func TestConcurrentUse(t *testing.T) {
	e := newEnv(t, func(o *simulator.Options) { o.Agents = 20; o.Now = nil; o.RequestLogSize = 10 })
	ids := e.sim.AgentIDs()
	ctx, cancel := context.WithCancel(t.Context())
	var run, wg sync.WaitGroup
	run.Go(func() { _ = e.sim.Run(ctx, time.Millisecond) })
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/api/data/v9.2/CCaaS_GetPresence", nil)
				req.Header.Set("MSCRMCallerID", ids[(w*50+i)%len(ids)])
				req.Header.Set("Authorization", "Bearer "+simulator.DefaultToken)
				if resp, err := e.srv.Client().Do(req); err == nil {
					resp.Body.Close()
				}
			}
		})
	}
	for i := range 50 {
		_ = e.sim.SetFaults(simulator.Faults{Rate5xx: float64(i%3) / 10})
		_ = e.sim.SetAgentFault(ids[i%len(ids)], simulator.AgentFault{Status: 503, Count: 1})
		_, _, _ = e.sim.SetPresence(ids[i%len(ids)], simulator.PresenceBusy)
		_ = e.sim.SetQuota(simulator.Quota{})
		_ = e.sim.Stats()
		_ = e.sim.Changes()
		_ = e.sim.RequestTimes(ids[0])
	}
	wg.Wait()
	cancel()
	run.Wait()
	if e.sim.Stats().Requests == 0 {
		t.Fatal("no request answered")
	}
}
