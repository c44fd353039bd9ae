package simulator_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// TestScenario plays one period of the demo scenario on a fast clock and
// checks, in the ground-truth log and over HTTP, that each of its agents
// went through what makes the bridge publish the alerting events: an agent
// Available with no browser session and back, a logout and a login, a
// channel disabled and enabled, and polls failing with 503 for a while.
func TestScenario(t *testing.T) {
	opts := simulator.DefaultOptions()
	opts.Agents = 5
	sim, err := simulator.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler()) // Handler only: no random changes
	t.Cleanup(srv.Close)
	e := &env{sim: sim, srv: srv}
	ids := sim.AgentIDs()
	unattended, leaving, failing, channels := ids[0], ids[1], ids[2], ids[3]

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	const unit = 20 * time.Millisecond
	go func() {
		done <- sim.RunScenario(ctx, simulator.Scenario{Unit: unit, FaultFor: 15 * unit})
	}()

	status := func() int { resp, _ := e.get(t, failing, simulator.DefaultToken); return resp.StatusCode }
	testwait.Until(t, 5*time.Second, "the failing agent's polls to fail", func() bool { return status() == http.StatusServiceUnavailable })
	testwait.Until(t, 5*time.Second, "the failing agent's polls to succeed again", func() bool { return status() == http.StatusOK })

	type seen struct {
		wentUnattended, cameBack, loggedOut, loggedIn bool
		channelFlips                                  int
	}
	check := func() seen {
		var s seen
		for _, c := range sim.Changes() {
			if !c.Forced {
				continue
			}
			st := c.State
			switch c.AgentID {
			case unattended:
				if st.ActiveBrowserSessions == 0 && st.PresenceID == simulator.PresenceAvailable {
					s.wentUnattended = true
				}
				if s.wentUnattended && st.ActiveBrowserSessions > 0 {
					s.cameBack = true
				}
			case leaving:
				if c.Kind == simulator.KindLogout {
					s.loggedOut = true
				}
				if s.loggedOut && c.Kind == simulator.KindLogin {
					s.loggedIn = true
				}
			case channels:
				if c.Kind == simulator.KindChannels {
					s.channelFlips++
				}
			}
		}
		return s
	}
	testwait.Until(t, 5*time.Second, "every step of the scenario", func() bool {
		s := check()
		return s.wentUnattended && s.cameBack && s.loggedOut && s.loggedIn && s.channelFlips >= 2
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunScenario: %v", err)
	}
	if got := status(); got != http.StatusOK {
		t.Errorf("the failing agent's fault outlived the scenario: status %d", got)
	}
}

func TestScenarioNeedsFourAgents(t *testing.T) {
	opts := simulator.DefaultOptions()
	opts.Agents = simulator.ScenarioAgents - 1
	sim, err := simulator.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.RunScenario(t.Context(), simulator.Scenario{}); err == nil {
		t.Fatal("RunScenario with 3 agents succeeded, want an error")
	}
}
