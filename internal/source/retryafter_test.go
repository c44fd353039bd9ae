package source

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

func TestParseRetryAfterBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		value, date string
		want        time.Duration
	}{
		{"7", "", 7 * time.Second},
		{"-3", "", 0},
		{"99999999999999999999", "", 0}, // not an int64: invalid
		{"9223372036854775807", "", RetryAfterCeiling},
		{"86400", "", RetryAfterCeiling},
		{"Fri, 31 Dec 9999 23:59:59 GMT", "", RetryAfterCeiling},
		{"Thu, 01 Jan 2099 00:00:00 GMT", "", RetryAfterCeiling},
		{"Thu, 01 Jan 2026 00:00:30 GMT", "", 30 * time.Second},
		{"Thu, 01 Jan 2026 00:00:30 GMT", "Thu, 01 Jan 2026 00:00:20 GMT", 10 * time.Second},
		{"Mon, 01 Jan 0001 00:00:00 GMT", "", 0},
		{"soon", "", 0},
	}
	for _, tt := range tests {
		h := http.Header{"Retry-After": {tt.value}}
		if tt.date != "" {
			h.Set("Date", tt.date)
		}
		if got := parseRetryAfter(h, now); got != tt.want {
			t.Errorf("Retry-After %q (Date %q) = %s, want %s", tt.value, tt.date, got, tt.want)
		}
	}
	if got := satAdd(1<<62, time.Duration(1<<62)+time.Duration(1<<62-1)); got <= 0 {
		t.Errorf("satAdd overflowed to %d", got)
	}
}

// TestFarRetryAfterDatesWaitTheCeiling: a 429 whose Retry-After is an
// HTTP date in year 9999 or 2099 gets exactly one request, then the next
// one at the ceiling, not a tight loop and not decades later.
func TestFarRetryAfterDatesWaitTheCeiling(t *testing.T) {
	for _, date := range []string{"Fri, 31 Dec 9999 23:59:59 GMT", "Thu, 01 Jan 2099 00:00:00 GMT"} {
		t.Run(date[12:16], func(t *testing.T) {
			var mu sync.Mutex
			var requests []time.Time
			clk := &fakeClock{now: time.Unix(1_700_000_000, 0)}
			opts := simulator.DefaultOptions()
			opts.Agents = 1
			opts.OnRequest = func(q simulator.Request) {
				if q.Endpoint == simulator.EndpointPresence {
					mu.Lock()
					requests = append(requests, clk.Now())
					mu.Unlock()
				}
			}
			sim, err := simulator.New(opts)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(sim.Handler())
			defer srv.Close()
			id := sim.AgentIDs()[0]
			if err := sim.SetAgentFault(id, simulator.AgentFault{Status: 429, RetryAfterRaw: date, Count: 1}); err != nil {
				t.Fatal(err)
			}
			client, err := NewClient(ClientOptions{OrgURL: srv.URL, Tokens: StaticToken(simulator.DefaultToken), Now: clk.Now})
			if err != nil {
				t.Fatal(err)
			}
			p, err := NewPoller(PollerOptions{Getter: client, Sink: SinkFunc(func(context.Context, Observation) error { return nil }),
				Interval: 10 * time.Second, BackoffMax: 30 * time.Second, Clock: clk, MaxConcurrency: 2})
			if err != nil {
				t.Fatal(err)
			}
			p.SetAgents([]string{id})
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			defer func() { cancel(); <-done }()
			count := func() int {
				mu.Lock()
				defer mu.Unlock()
				return len(requests)
			}
			// settle waits until the poller sleeps on the fake clock with
			// nothing in flight.
			settle := func() {
				t.Helper()
				testwait.Until(t, 5*time.Second, "the poller to settle", func() bool { return p.inflight.Load() == 0 && clk.pending() > 0 })
			}
			advance := func(total, step time.Duration) {
				for d := time.Duration(0); d < total; d += step {
					settle()
					clk.Advance(step)
				}
				settle()
			}
			advance(10*time.Second, 100*time.Millisecond) // the agent's first poll: the 429
			if n := count(); n != 1 {
				t.Fatalf("%d requests in the first interval, want 1", n)
			}
			mu.Lock()
			first := requests[0]
			mu.Unlock()
			// Up to just before the ceiling: no request.
			advance(first.Add(RetryAfterCeiling).Sub(clk.Now())-time.Second, time.Second)
			if n := count(); n != 1 {
				t.Fatalf("%d requests before the %s ceiling, want 1", n, RetryAfterCeiling)
			}
			advance(2*time.Second, 10*time.Millisecond)
			if n := count(); n != 2 {
				t.Fatalf("%d requests just after the ceiling, want 2", n)
			}
			mu.Lock()
			gap := requests[1].Sub(first)
			mu.Unlock()
			if gap < RetryAfterCeiling || gap > RetryAfterCeiling+time.Second {
				t.Errorf("second request %s after the first, want the %s ceiling", gap, RetryAfterCeiling)
			}
		})
	}
}

// TestRetryAfterOfServerErrorsCappedAtBackoffMax: a 503's Retry-After is
// honoured up to BackoffMax; a 429's up to RetryAfterCeiling.
func TestRetryAfterOfServerErrorsCappedAtBackoffMax(t *testing.T) {
	p, err := NewPoller(PollerOptions{Getter: GetterFunc(nil), Sink: SinkFunc(func(context.Context, Observation) error { return nil }),
		Interval: time.Second, BackoffMax: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		class ErrorClass
		after time.Duration
		want  time.Duration
	}{
		{ClassServer, time.Hour, 30 * time.Second},
		{ClassServer, 20 * time.Second, 20 * time.Second},
		{ClassRateLimited, time.Hour, RetryAfterCeiling},
		{ClassRateLimited, 7 * time.Second, 7 * time.Second},
	}
	for _, tt := range tests {
		a := &agent{id: "394382b6-a4d4-ee11-904c-00224808a166"}
		const now = int64(1e12)
		next := p.record(a, tt.class, &PollError{Class: tt.class, RetryAfter: tt.after}, now)
		if got := time.Duration(next - now); got != tt.want {
			t.Errorf("%s with Retry-After %s: next poll in %s, want %s", tt.class, tt.after, got, tt.want)
		}
	}
}

// GetterFunc adapts a function to a Getter (nil for a poller that is never run).
type GetterFunc func(ctx context.Context, agentID string) (Snapshot, error)

// Get calls f.
func (f GetterFunc) Get(ctx context.Context, id string) (Snapshot, error) { return f(ctx, id) }
