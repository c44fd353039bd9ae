package source_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// holdingOrg is the simulated organisation behind a gate: presence requests
// wait until the test releases them, then get the simulator's answer.
type holdingOrg struct {
	sim      *simulator.Simulator
	srv      *httptest.Server
	release  chan struct{}
	once     sync.Once
	arrived  atomic.Int64 // presence requests received
	answered atomic.Int64 // presence requests answered
}

func newHoldingOrg(t *testing.T, agents int) *holdingOrg {
	t.Helper()
	opts := simulator.DefaultOptions()
	opts.Agents = agents
	sim, err := simulator.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h := &holdingOrg{sim: sim, release: make(chan struct{})}
	inner := sim.Handler()
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, simulator.EndpointPresence) {
			h.arrived.Add(1)
			select {
			case <-h.release:
			case <-r.Context().Done():
				return
			}
			defer h.answered.Add(1)
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(h.srv.Close)
	t.Cleanup(h.releaseAll) // before the server closes
	return h
}

func (h *holdingOrg) releaseAll() { h.once.Do(func() { close(h.release) }) }

// drainSink records every observation and whether its context was already
// done when it was handed over.
type drainSink struct {
	mu        sync.Mutex
	obs       []source.Observation
	cancelled int
}

func (s *drainSink) Observe(ctx context.Context, o source.Observation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.obs = append(s.obs, o)
	if ctx.Err() != nil {
		s.cancelled++
	}
	return nil
}

func (s *drainSink) counts() (total, ok, cancelled int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.obs {
		if o.Class == source.ClassOK {
			ok++
		}
	}
	return len(s.obs), ok, s.cancelled
}

// TestRunFinishesRequestsInFlight: when Run's context ends with answers
// outstanding, the requests already sent complete and every answer reaches
// the Sink, with a live context, before Run returns; polls not started by
// then (waiting for a worker or on the rate limiter) never start.
func TestRunFinishesRequestsInFlight(t *testing.T) {
	tests := []struct {
		name     string
		agents   int
		workers  int
		maxRPS   float64
		inFlight int64 // wait for this many requests held before cancelling
	}{
		{name: "every worker busy, agents waiting for one", agents: 48, workers: 32, inFlight: 32},
		{name: "agents waiting on the rate limiter", agents: 60, workers: 64, maxRPS: 40, inFlight: 32},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			org := newHoldingOrg(t, tt.agents)
			sink := &drainSink{}
			p := mustPoller(t, source.PollerOptions{
				Getter: newClient(t, org.srv.URL, source.StaticToken(simulator.DefaultToken)), Sink: sink,
				Interval: time.Second, RequestTimeout: 20 * time.Second, MaxConcurrency: tt.workers, MaxRPS: tt.maxRPS,
			})
			p.SetAgents(org.sim.AgentIDs())
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			var returnedWith struct{ total, ok, cancelled int }
			go func() {
				defer close(done)
				_ = p.Run(ctx)
				returnedWith.total, returnedWith.ok, returnedWith.cancelled = sink.counts()
			}()

			testwait.Until(t, 10*time.Second, "requests held by the organisation", func() bool { return org.arrived.Load() >= tt.inFlight })
			cancel()
			select {
			case <-done:
				t.Fatalf("Run returned with %d requests in flight", org.arrived.Load())
			case <-time.After(200 * time.Millisecond):
			}
			if n, _, _ := sink.counts(); n != 0 {
				t.Fatalf("%d observations before any answer was released", n)
			}
			sent := org.arrived.Load()
			org.releaseAll()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after the answers were released")
			}

			arrived, answered := org.arrived.Load(), org.answered.Load()
			if int64(returnedWith.total) != answered || int64(returnedWith.ok) != answered {
				t.Errorf("when Run returned the sink had %d observations (%d OK); the organisation answered %d requests",
					returnedWith.total, returnedWith.ok, answered)
			}
			if answered != arrived {
				t.Errorf("organisation answered %d of %d requests", answered, arrived)
			}
			if returnedWith.cancelled != 0 {
				t.Errorf("%d observations handed over with a cancelled context", returnedWith.cancelled)
			}
			if arrived < tt.inFlight || arrived >= int64(tt.agents) {
				t.Errorf("organisation received %d requests, want at least %d and fewer than the %d agents: polls not started must not start",
					arrived, tt.inFlight, tt.agents)
			}
			if tt.maxRPS == 0 && arrived != sent {
				t.Errorf("organisation received %d requests, %d after the cancel", arrived, arrived-sent)
			}
			if got := int64(org.sim.Stats().Requests); got < answered {
				t.Errorf("simulator saw %d requests, fewer than the %d answered", got, answered)
			}
		})
	}
}

// TestRunDrainTimeoutBoundsTheEnd: with answers that never come, Run returns
// DrainTimeout after its context ended, and drops the unanswered polls.
func TestRunDrainTimeoutBoundsTheEnd(t *testing.T) {
	org := newHoldingOrg(t, 8)
	sink := &drainSink{}
	const drainTimeout = 300 * time.Millisecond
	p := mustPoller(t, source.PollerOptions{
		Getter: newClient(t, org.srv.URL, source.StaticToken(simulator.DefaultToken)), Sink: sink,
		Interval: 500 * time.Millisecond, RequestTimeout: time.Minute, MaxConcurrency: 8, DrainTimeout: drainTimeout,
	})
	p.SetAgents(org.sim.AgentIDs())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	testwait.Until(t, 5*time.Second, "every agent's request held", func() bool { return org.arrived.Load() == 8 })
	cancel()
	start := time.Now()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after DrainTimeout")
	}
	if took := time.Since(start); took < drainTimeout || took > drainTimeout+5*time.Second {
		t.Errorf("Run returned %s after cancel, want about DrainTimeout (%s)", took, drainTimeout)
	}
	if n, _, _ := sink.counts(); n != 0 {
		t.Errorf("%d observations of requests cut off by the drain timeout", n)
	}
}

// TestBeatFromTheDispatchLoop: Beat is called at least every BeatEvery by
// the dispatch loop, when idle and when every worker is held by a blocked
// Sink.
func TestBeatFromTheDispatchLoop(t *testing.T) {
	tests := []struct {
		name   string
		agents int
	}{
		{"idle, no agents", 0},
		{"sink blocked, workers busy, agents due", 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			org := newHoldingOrg(t, max(tt.agents, 1))
			org.releaseAll()
			blocked := make(chan struct{})
			var observed atomic.Int64
			sink := source.SinkFunc(func(ctx context.Context, _ source.Observation) error {
				observed.Add(1)
				select {
				case <-blocked:
				case <-ctx.Done():
				}
				return nil
			})
			var beats atomic.Int64
			p := mustPoller(t, source.PollerOptions{
				Getter: newClient(t, org.srv.URL, source.StaticToken(simulator.DefaultToken)), Sink: sink,
				Interval: 50 * time.Millisecond, MaxConcurrency: 1, DrainTimeout: time.Second,
				Beat: func() { beats.Add(1) },
			})
			if tt.agents > 0 {
				p.SetAgents(org.sim.AgentIDs()[:tt.agents])
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = p.Run(ctx) }()
			defer func() { close(blocked); cancel(); <-done }()
			if tt.agents > 0 {
				testwait.Until(t, 5*time.Second, "the only worker held by the sink", func() bool { return observed.Load() == 1 })
			}
			from := beats.Load()
			testwait.Until(t, 2*source.BeatEvery+2*time.Second, "two more beats", func() bool { return beats.Load() >= from+2 })
			if tt.agents > 0 && observed.Load() != 1 {
				t.Errorf("sink saw %d observations while blocked, want 1", observed.Load())
			}
		})
	}
}
