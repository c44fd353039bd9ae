package simulator_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
)

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is a simulator served over HTTP for one test.
type env struct {
	sim   *simulator.Simulator
	srv   *httptest.Server
	clock *fakeClock
}

// newEnv builds a simulator with a fake clock and 5 agents, lets mutate
// adjust the options, and serves it.
func newEnv(t *testing.T, mutate func(*simulator.Options)) *env {
	t.Helper()
	sim, clock := build(t, func(o *simulator.Options) {
		o.Agents = 5
		if mutate != nil {
			mutate(o)
		}
	})
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	return &env{sim: sim, srv: srv, clock: clock}
}

// get calls CCaaS_GetPresence for caller ("" for no header) with token (""
// for no Authorization header) and returns the response and its body.
func (e *env) get(t *testing.T, caller, token string) (*http.Response, []byte) {
	t.Helper()
	return e.do(t, context.Background(), http.MethodGet, "/api/data/v9.2/CCaaS_GetPresence", caller, token)
}

func (e *env) do(t *testing.T, ctx context.Context, method, path, caller, token string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, e.srv.URL+path, nil)
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	if caller != "" {
		req.Header.Set("MSCRMCallerID", caller)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, body
}

// presenceBody is the body of a CCaaS_GetPresence answer, field by field as
// the contract names them.
type presenceBody struct {
	ActiveBrowserSessions     int
	AgentId                   string
	AgentName                 string
	Timestamp                 int64
	AllowedChannels           []string
	CurrentPresenceStatusInfo string
	DisabledChannels          []string
	PresenceId                string
}
