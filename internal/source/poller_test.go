package source_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/testlog"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// serveSim builds a simulator with opts and serves it over HTTP until the
// test ends; it returns the simulator and its URL.
func serveSim(t *testing.T, opts simulator.Options) (*simulator.Simulator, string) {
	t.Helper()
	sim, err := simulator.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	return sim, srv.URL
}

// recorder is a Sink keeping every observation, and the simulator's
// requests by agent.
type recorder struct {
	mu       sync.Mutex
	obs      map[string][]source.Observation
	requests map[string][]simulator.Request
}

func newRecorder() *recorder {
	return &recorder{obs: map[string][]source.Observation{}, requests: map[string][]simulator.Request{}}
}

func (r *recorder) Observe(_ context.Context, o source.Observation) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.obs[o.AgentID] = append(r.obs[o.AgentID], o)
	return nil
}

func (r *recorder) onRequest(req simulator.Request) {
	if req.Endpoint != simulator.EndpointPresence {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests[req.AgentID] = append(r.requests[req.AgentID], req)
}

func (r *recorder) observations(agent string) []source.Observation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]source.Observation(nil), r.obs[agent]...)
}

func (r *recorder) requestsOf(agent string) []simulator.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]simulator.Request(nil), r.requests[agent]...)
}

// rig is a simulator, a client and a running poller.
type rig struct {
	sim     *simulator.Simulator
	rec     *recorder
	poller  *source.Poller
	reg     *prometheus.Registry
	logs    *testlog.Buffer
	tokens  source.TokenProvider
	client  *source.Client
	stop    func()
	healthy string // an agent without faults
	faulty  string // the agent tests break
}

func newRig(t *testing.T, agents int, simOpts func(*simulator.Options), pollOpts func(*source.PollerOptions), tokens func(*simulator.Simulator) source.TokenProvider) *rig {
	t.Helper()
	return newRigWith(t, agents, simOpts, nil, pollOpts, tokens)
}

// newRigWith is newRig with the client's options adjusted by clientOpts.
func newRigWith(t *testing.T, agents int, simOpts func(*simulator.Options), clientOpts func(*source.ClientOptions), pollOpts func(*source.PollerOptions), tokens func(*simulator.Simulator) source.TokenProvider) *rig {
	t.Helper()
	r := &rig{rec: newRecorder(), reg: prometheus.NewRegistry(), logs: &testlog.Buffer{}}
	opts := simulator.DefaultOptions()
	opts.Agents = agents
	opts.OnRequest = r.rec.onRequest
	if simOpts != nil {
		simOpts(&opts)
	}
	sim, simURL := serveSim(t, opts)
	r.sim = sim
	metrics, err := source.NewMetrics(r.reg)
	if err != nil {
		t.Fatal(err)
	}
	r.tokens = source.StaticToken(simulator.DefaultToken)
	if tokens != nil {
		r.tokens = tokens(sim)
	}
	co := source.ClientOptions{OrgURL: simURL, Tokens: r.tokens, Metrics: metrics,
		Logger: slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	if clientOpts != nil {
		clientOpts(&co)
	}
	client, err := source.NewClient(co)
	if err != nil {
		t.Fatal(err)
	}
	r.client = client
	po := source.PollerOptions{
		Getter: client, Sink: r.rec, Interval: 100 * time.Millisecond, MaxConcurrency: 8,
		BackoffInitial: 50 * time.Millisecond, BackoffMax: 400 * time.Millisecond, PermanentRetry: 400 * time.Millisecond,
		Logger:  slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Metrics: metrics,
	}
	if pollOpts != nil {
		pollOpts(&po)
	}
	p, err := source.NewPoller(po)
	if err != nil {
		t.Fatal(err)
	}
	r.poller = p
	ids := sim.AgentIDs()
	r.healthy, r.faulty = ids[0], ids[1]
	p.SetAgents(ids)
	return r
}

func (r *rig) start(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.poller.Run(ctx) }()
	r.stop = sync.OnceFunc(func() {
		cancel()
		<-done
	})
	t.Cleanup(r.stop)
}

func (r *rig) state() map[string]int { return r.poller.StateCounts() }

func countLines(logs, substr, agent string) int {
	n := 0
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, substr) && strings.Contains(l, agent) {
			n++
		}
	}
	return n
}

func TestPollerErrorClasses(t *testing.T) {
	tests := []struct {
		name   string
		fault  simulator.AgentFault
		opts   func(*source.PollerOptions)
		tokens func(*simulator.Simulator) source.TokenProvider
		check  func(t *testing.T, r *rig)
	}{
		{
			name:  "404 marks the agent unpollable and retries it slowly",
			fault: simulator.AgentFault{Status: 404},
			check: func(t *testing.T, r *rig) {
				testwait.Until(t, 3*time.Second, "two polls of the unknown agent", func() bool { return len(r.rec.requestsOf(r.faulty)) >= 2 })
				if r.state()["unpollable"] != 1 {
					t.Errorf("states = %v, want 1 unpollable", r.state())
				}
				reqs := r.rec.requestsOf(r.faulty)
				if gap := reqs[1].At.Sub(reqs[0].At); gap < 300*time.Millisecond {
					t.Errorf("unpollable agent retried after %s, want about PermanentRetry (400ms)", gap)
				}
				if n := len(r.rec.requestsOf(r.healthy)); n < 2*len(reqs) {
					t.Errorf("healthy agent polled %d times, unpollable %d: not slower", n, len(reqs))
				}
				r.sim.ClearAgentFault(r.faulty)
				testwait.Until(t, 2*time.Second, "agent fixed and healthy", func() bool { return r.state()["unpollable"] == 0 })
				if got := countLines(r.logs.String(), "agent poll failing", r.faulty); got != 1 {
					t.Errorf("%d failing lines for the agent, want 1 per state change:\n%s", got, r.logs.String())
				}
			},
		},
		{
			name:   "persistent 401 retries once with a refreshed token then backs off",
			fault:  simulator.AgentFault{Status: 401},
			tokens: func(sim *simulator.Simulator) source.TokenProvider { return &simTokens{sim: sim} },
			check: func(t *testing.T, r *rig) {
				testwait.Until(t, 3*time.Second, "backoff", func() bool { return r.state()["backing_off"] == 1 })
				testwait.Until(t, 3*time.Second, "3 polls", func() bool { return len(r.rec.observations(r.faulty)) >= 3 })
				obs := r.rec.observations(r.faulty)
				if obs[0].Class != source.ClassAuth {
					t.Fatalf("class = %s", obs[0].Class)
				}
				// Each poll is a request and its retry: requests = 2 × polls
				// (± the poll in flight).
				reqs, polls := len(r.rec.requestsOf(r.faulty)), len(r.rec.observations(r.faulty))
				if reqs < 2*polls || reqs > 2*polls+2 {
					t.Errorf("%d requests for %d polls, want 2 each", reqs, polls)
				}
			},
		},
		{
			name:  "5xx backs off and recovers on success",
			fault: simulator.AgentFault{Status: 503, Count: 4},
			check: func(t *testing.T, r *rig) {
				testwait.Until(t, 5*time.Second, "recovery", func() bool {
					o := r.rec.observations(r.faulty)
					return len(o) > 5 && o[len(o)-1].Class == source.ClassOK
				})
				reqs := r.rec.requestsOf(r.faulty)
				// Four failures: backoff gaps of 50ms·2^k ±50% capped at
				// 400ms; the 4th is at least 200ms.
				if last := reqs[4].At.Sub(reqs[3].At); last < 150*time.Millisecond {
					t.Errorf("4th backoff was %s, want exponential growth (>= 150ms)", last)
				}
				if got := countLines(r.logs.String(), "agent poll failing", r.faulty); got != 1 {
					t.Errorf("%d failing lines, want 1", got)
				}
				if got := countLines(r.logs.String(), "agent recovered", r.faulty); got != 1 {
					t.Errorf("%d recovered lines, want 1", got)
				}
				if n := testutil.ToFloat64(testutilCounter(t, r.reg, "ccaas_bridge_polls_total", "server_error")); n != 4 {
					t.Errorf("polls_total{result=server_error} = %v, want 4", n)
				}
			},
		},
		{
			name:  "timeouts are transport errors and back off",
			fault: simulator.AgentFault{Latency: 300 * time.Millisecond, Count: 2},
			opts:  func(o *source.PollerOptions) { o.RequestTimeout = 80 * time.Millisecond },
			check: func(t *testing.T, r *rig) {
				testwait.Until(t, 5*time.Second, "recovery", func() bool {
					o := r.rec.observations(r.faulty)
					return len(o) >= 3 && o[len(o)-1].Class == source.ClassOK
				})
				o := r.rec.observations(r.faulty)
				if o[0].Class != source.ClassTransport || o[1].Class != source.ClassTransport {
					t.Errorf("classes %s, %s, want transport", o[0].Class, o[1].Class)
				}
			},
		},
		{
			name:  "an observation spans its request: sent before the organisation read it, at after its answer came",
			fault: simulator.AgentFault{Latency: 60 * time.Millisecond, Count: 2},
			check: func(t *testing.T, r *rig) {
				testwait.Until(t, 5*time.Second, "4 polls", func() bool { return len(r.rec.observations(r.faulty)) >= 4 })
				obs, reqs := r.rec.observations(r.faulty), r.rec.requestsOf(r.faulty)
				for i, o := range obs {
					if o.Sent.IsZero() || i >= len(reqs) || reqs[i].At.Before(o.Sent) || o.At.Before(reqs[i].At) {
						t.Fatalf("poll %d sent %s, answered at %s, request read at the organisation at %v",
							i, o.Sent.Format("15:04:05.000"), o.At.Format("15:04:05.000"), reqs[i].At.Format("15:04:05.000"))
					}
					if i < 2 && (o.Class != source.ClassOK || o.At.Sub(o.Sent) < 60*time.Millisecond) {
						t.Errorf("poll %d answered after 60ms: %s, spans %s", i, o.Class, o.At.Sub(o.Sent))
					}
					if i > 0 && o.Sent.Before(obs[i-1].At) {
						t.Errorf("poll %d sent before poll %d was answered", i, i-1)
					}
				}
			},
		},
		{
			name:  "malformed bodies are counted, logged once and polled on schedule",
			fault: simulator.AgentFault{Malformed: simulator.MalformedWrongType},
			check: func(t *testing.T, r *rig) {
				testwait.Until(t, 3*time.Second, "6 polls", func() bool { return len(r.rec.observations(r.faulty)) >= 6 })
				obs := r.rec.observations(r.faulty)
				for i := 1; i < len(obs); i++ {
					if obs[i].Class != source.ClassMalformed {
						t.Fatalf("class = %s", obs[i].Class)
					}
				}
				// On schedule, not backed off: the mean gap is the interval
				// (backoff would double it each time). One gap alone can be
				// short or long on a busy machine, when a poll is sent late.
				gaps := len(obs) - 2
				if mean := obs[len(obs)-1].At.Sub(obs[1].At) / time.Duration(gaps); mean < 80*time.Millisecond || mean > 250*time.Millisecond {
					t.Errorf("mean gap %s over %d malformed polls, want the 100ms interval", mean, gaps)
				}
				if r.state()["malformed"] != 1 {
					t.Errorf("states = %v", r.state())
				}
				logs := r.logs.String()
				if countLines(logs, "agent poll failing", r.faulty) != 1 || !strings.Contains(logs, "body starts") {
					t.Errorf("want one line with the agent and an excerpt:\n%s", logs)
				}
				if n := testutil.ToFloat64(testutilCounter(t, r.reg, "ccaas_bridge_malformed_responses_total", "")); n < 5 {
					t.Errorf("malformed counter = %v", n)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, 3, nil, tt.opts, tt.tokens)
			if err := r.sim.SetAgentFault(r.faulty, tt.fault); err != nil {
				t.Fatal(err)
			}
			r.start(t)
			tt.check(t, r)
		})
	}
}

// testutilCounter finds a counter by name and (optional) result label.
func testutilCounter(t *testing.T, reg *prometheus.Registry, name, result string) prometheus.Collector {
	t.Helper()
	return collectorFunc(func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				ok := result == ""
				for _, l := range m.GetLabel() {
					if l.GetName() == "result" && l.GetValue() == result {
						ok = true
					}
				}
				if ok {
					if m.GetCounter() != nil {
						return m.GetCounter().GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
		t.Fatalf("metric %s{result=%q} not found", name, result)
		return 0
	})
}

func collectorFunc(f func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "probe", Help: "probe"}, f)
}

func TestNoRequestBeforeRetryAfter(t *testing.T) {
	r := newRig(t, 40, func(o *simulator.Options) {
		// Every request in the last 400ms of each 2s gets a 429 whose
		// Retry-After (whole seconds) points past the burst.
		o.Faults.Burst429Every = 2 * time.Second
		o.Faults.Burst429Length = 400 * time.Millisecond
		o.RequestLogSize = 1000
	}, func(o *source.PollerOptions) { o.Interval = 200 * time.Millisecond }, nil)
	r.start(t)
	testwait.Until(t, 8*time.Second, "a burst of 429s and a request after each", func() bool {
		if r.sim.Stats().ByReason["burst-429"] < 40 {
			return false
		}
		for _, id := range r.sim.AgentIDs() {
			reqs := r.rec.requestsOf(id)
			if len(reqs) == 0 || reqs[len(reqs)-1].Status == 429 {
				return false
			}
		}
		return true
	})
	r.stop()
	n429 := 0
	for _, id := range r.sim.AgentIDs() {
		reqs := r.rec.requestsOf(id)
		for i, q := range reqs {
			if q.Status != 429 || q.RetryUntil.IsZero() {
				continue
			}
			n429++
			if i+1 < len(reqs) && reqs[i+1].At.Before(q.RetryUntil) {
				t.Errorf("agent %s: request at %s, before Retry-After %s", id, reqs[i+1].At.Format("15:04:05.000"), q.RetryUntil.Format("15:04:05.000"))
			}
		}
	}
	if n429 < 40 {
		t.Fatalf("only %d 429s seen", n429)
	}
	if !strings.Contains(r.logs.String(), "client request rate changed after 429 responses") {
		t.Errorf("many agents got 429 at once but the client did not slow down:\n%s", r.logs.String())
	}
	if st := r.sim.Stats(); st.QuotaRequestViolations+st.QuotaConcurrentViolations != 0 {
		t.Errorf("service protection tripped: %+v", st)
	}
}

// simTokens issues simulator tokens: a new one on every refresh.
type simTokens struct {
	sim       *simulator.Simulator
	mu        sync.Mutex
	current   string
	refreshes int
}

func (p *simTokens) Token(context.Context) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current == "" {
		p.current = p.sim.IssueToken()
	}
	return p.current, nil
}

func (p *simTokens) Refresh(_ context.Context, refused string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current == refused {
		p.refreshes++
		p.current = p.sim.IssueToken()
	}
	return p.current, nil
}

func TestSetAgentsAtRuntime(t *testing.T) {
	r := newRig(t, 4, nil, func(o *source.PollerOptions) { o.Interval = 50 * time.Millisecond }, nil)
	ids := r.sim.AgentIDs()
	r.poller.SetAgents(ids[:2])
	if st := r.poller.Status(); st.Agents != 2 || r.poller.StateCounts()["pending"] != 2 || st.FirstRoundDone {
		t.Fatalf("status before start = %+v", st)
	}
	r.start(t)
	testwait.Until(t, 2*time.Second, "first round", func() bool { return r.poller.Status().FirstRoundDone })
	r.poller.SetAgents(ids[1:])
	testwait.Until(t, 2*time.Second, "added agents polled", func() bool {
		return len(r.rec.observations(ids[2])) > 0 && len(r.rec.observations(ids[3])) > 0
	})
	removedAt := len(r.rec.requestsOf(ids[0]))
	testwait.Until(t, 2*time.Second, "later polls of the others", func() bool { return len(r.rec.observations(ids[3])) > 5 })
	if n := len(r.rec.requestsOf(ids[0])); n > removedAt+1 {
		t.Errorf("removed agent polled %d more times", n-removedAt)
	}
	st := r.poller.Status()
	if st.Agents != 3 || r.poller.StateCounts()["healthy"] != 3 || !r.client.TokenObtained() {
		t.Errorf("status = %+v", st)
	}
}

func TestSinkBackpressureKeepsOnePollPerAgent(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	seen := map[string]int{}
	blocking := source.SinkFunc(func(ctx context.Context, o source.Observation) error {
		mu.Lock()
		seen[o.AgentID]++
		mu.Unlock()
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	r := newRig(t, 2, nil, func(o *source.PollerOptions) { o.Interval = 20 * time.Millisecond }, nil)
	r.poller = mustPoller(t, source.PollerOptions{Getter: clientFor(t, r), Sink: blocking, Interval: 20 * time.Millisecond})
	r.poller.SetAgents(r.sim.AgentIDs())
	r.start(t)
	testwait.Until(t, 2*time.Second, "both agents observed", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 2 })
	// While the sink is blocked nothing more is polled, for many intervals.
	before := r.sim.Stats().Requests
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
		if n := r.sim.Stats().Requests; n != before {
			t.Fatalf("%d requests while the sink was blocked", n-before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	testwait.Until(t, 2*time.Second, "polling resumes", func() bool { return r.sim.Stats().Requests > before+2 })
}

func mustPoller(t *testing.T, o source.PollerOptions) *source.Poller {
	t.Helper()
	p, err := source.NewPoller(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func clientFor(t *testing.T, r *rig) *source.Client {
	t.Helper()
	srv := httptest.NewServer(r.sim.Handler())
	t.Cleanup(srv.Close)
	return newClient(t, srv.URL, source.StaticToken(simulator.DefaultToken))
}
