package main

import (
	"context"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// nextEvent waits for the agent's first event of type typ with a sequence
// above after, and returns it.
func nextEvent(t *testing.T, c *collector, agent, typ string, after uint64) event {
	t.Helper()
	var found event
	testwait.Until(t, waitScale*15*time.Second, fmt.Sprintf("%s of agent %s after sequence %d", typ, agent, after), func() bool {
		events, _ := c.snapshot()
		for _, ev := range events {
			if ev.Agent == agent && ev.Type == typ && ev.Sequence > after {
				found = ev
				return true
			}
		}
		return false
	})
	return found
}

// eventsOf returns the agent's events with sequences in (after, upTo].
func eventsOf(c *collector, agent string, after, upTo uint64) []event {
	events, _ := c.snapshot()
	var out []event
	for _, ev := range events {
		if ev.Agent == agent && ev.Sequence > after && ev.Sequence <= upTo {
			out = append(out, ev)
		}
	}
	return out
}

func lastSequence(c *collector, agent string) uint64 {
	events, _ := c.snapshot()
	var n uint64
	for _, ev := range events {
		if ev.Agent == agent {
			n = max(n, ev.Sequence)
		}
	}
	return n
}

// TestAlertsDrivenBySimulator drives the alerting events through the bridge
// binary with the simulator: agents going offline in each of the three ways
// (logout, an Offline presence, every tab closed) and coming back, and the
// API failing for one agent until presence.stale, then recovering with
// presence.resumed before the change it missed. An agent left alone gets no
// alert.
func TestAlertsDrivenBySimulator(t *testing.T) {
	h := newHarness(t, 5, 21)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ids := h.sim.AgentIDs()
	for _, id := range ids {
		if _, _, err := h.sim.Login(id); err != nil { // Available, one tab
			t.Fatal(err)
		}
	}
	p := h.start(h.env(map[string]string{"BRIDGE_LEASE_ENABLED": "false", "GORACE": raceExitNow, "BRIDGE_POLL_INTERVAL": testInterval.String(), "BRIDGE_STALE_AFTER": "1s"}), "run")
	c := h.collect(ctx)
	testwait.Until(t, waitScale*20*time.Second, "first sight of every agent", func() bool { return h.caughtUp(c) })

	offline := []struct {
		name       string
		agent      string
		goOffline  func(id string) (simulator.Change, bool, error)
		reason     string
		comeBack   func(id string) (simulator.Change, bool, error)
		presenceOn string
	}{
		{"logout", ids[0], h.sim.Logout, detector.ReasonPresenceAndLogout, h.sim.Login, simulator.PresenceAvailable},
		{"offline presence while logged in", ids[1],
			func(id string) (simulator.Change, bool, error) {
				return h.sim.SetPresence(id, simulator.PresenceOffline)
			},
			detector.ReasonPresence,
			func(id string) (simulator.Change, bool, error) { return h.sim.SetPresence(id, simulator.PresenceBusy) },
			simulator.PresenceBusy},
		{"every tab closed", ids[2],
			func(id string) (simulator.Change, bool, error) { return h.sim.SetSessions(id, 0) },
			detector.ReasonLogout,
			func(id string) (simulator.Change, bool, error) { return h.sim.SetSessions(id, 2) },
			simulator.PresenceAvailable},
	}
	for _, tt := range offline {
		t.Run(tt.name, func(t *testing.T) {
			before := lastSequence(c, tt.agent)
			mustSim(t)(tt.goOffline(tt.agent))
			off := nextEvent(t, c, tt.agent, detector.TypeAgentOffline, before)
			if got := off.Data["reason"]; got != tt.reason {
				t.Errorf("agent.offline reason %v, want %s", got, tt.reason)
			}
			st, _ := h.sim.State(tt.agent)
			if got := off.Data["presence"].(map[string]any)["id"]; got != st.PresenceID {
				t.Errorf("agent.offline presence %v, simulator %s", got, st.PresenceID)
			}
			if got := off.Data["activeBrowserSessions"]; got != float64(st.ActiveBrowserSessions) {
				t.Errorf("agent.offline sessions %v, simulator %d", got, st.ActiveBrowserSessions)
			}
			// The change that made the agent offline comes in the same
			// batch, before the alert, and says so.
			changes := eventsOf(c, tt.agent, before, off.Sequence-1)
			if len(changes) == 0 {
				t.Fatal("agent.offline without the change that caused it")
			}
			for _, ev := range changes {
				if v, ok := ev.Data["offline"]; ok && v != true {
					t.Errorf("%s before agent.offline says offline %v", ev.Type, v)
				}
			}

			mustSim(t)(tt.comeBack(tt.agent))
			on := nextEvent(t, c, tt.agent, detector.TypeAgentOnline, off.Sequence)
			if got := on.Data["presence"].(map[string]any)["id"]; got != tt.presenceOn {
				t.Errorf("agent.online presence %v, want %s", got, tt.presenceOn)
			}
			if since, _ := on.Data["offlineSince"].(string); since == "" {
				t.Errorf("agent.online without offlineSince: %v", on.Data)
			}
			if d, _ := on.Data["offlineDurationSeconds"].(float64); d <= 0 {
				t.Errorf("agent.online offlineDurationSeconds %v", on.Data["offlineDurationSeconds"])
			}
			for _, ev := range eventsOf(c, tt.agent, off.Sequence, on.Sequence-1) {
				if ev.Type == detector.TypeAgentOffline || ev.Type == detector.TypeAgentOnline {
					t.Errorf("unexpected %s %s between the alerts", ev.Type, ev.ID)
				}
			}
		})
	}

	t.Run("api failing for one agent", func(t *testing.T) {
		agent := ids[3]
		before := lastSequence(c, agent)
		if err := h.sim.SetAgentFault(agent, simulator.AgentFault{Status: http.StatusInternalServerError, Count: 100000}); err != nil {
			t.Fatal(err)
		}
		stale := nextEvent(t, c, agent, detector.TypePresenceStale, before)
		if got := stale.Data["errorClass"]; got != "server_error" {
			t.Errorf("presence.stale errorClass %v, want server_error", got)
		}
		st, _ := h.sim.State(agent)
		last := stale.Data["lastKnown"].(map[string]any)
		if got := last["presence"].(map[string]any)["id"]; got != st.PresenceID {
			t.Errorf("presence.stale lastKnown presence %v, simulator %s", got, st.PresenceID)
		}
		if stale.Sequence != before+1 {
			t.Errorf("presence.stale has sequence %d, want %d (nothing in between)", stale.Sequence, before+1)
		}
		// The current-state view says the agent is stale.
		testwait.Until(t, waitScale*10*time.Second, "the bucket to mark the agent stale", func() bool {
			states, err := h.bucketStates(ctx)
			return err == nil && states[agent].Stale && states[agent].StaleErrorClass == "server_error"
		})

		// The agent changes while the bridge cannot see it, then the API
		// recovers: presence.resumed first, then the change.
		mustSim(t)(h.sim.SetPresence(agent, simulator.PresenceAway))
		h.sim.ClearAgentFault(agent)
		changed := nextEvent(t, c, agent, detector.TypePresenceChanged, stale.Sequence)
		resumed := nextEvent(t, c, agent, detector.TypePresenceResumed, stale.Sequence)
		if resumed.Sequence != stale.Sequence+1 || changed.Sequence <= resumed.Sequence {
			t.Errorf("presence.stale %d, presence.resumed %d, presence.changed %d: resumed must come right after stale and before the change",
				stale.Sequence, resumed.Sequence, changed.Sequence)
		}
		if got := resumed.Data["errorClass"]; got != "server_error" {
			t.Errorf("presence.resumed errorClass %v, want server_error", got)
		}
		if got := changed.Data["current"].(map[string]any)["id"]; got != simulator.PresenceAway {
			t.Errorf("presence.changed after resuming to %v, want Away", got)
		}
		testwait.Until(t, waitScale*10*time.Second, "the bucket to clear the stale flag", func() bool {
			states, err := h.bucketStates(ctx)
			return err == nil && !states[agent].Stale
		})
	})

	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM", code)
	}
	by := checkCollected(t, c)
	for _, ev := range by[ids[4]] {
		if !ev.isFirstSight() {
			t.Errorf("agent %s was left alone but got %s %s", ids[4], ev.Type, ev.ID)
		}
	}
}

// isFirstSight reports whether ev is one of the events of an agent's first
// sight (a change with previous null).
func (ev event) isFirstSight() bool {
	v, ok := ev.Data["previous"]
	return ok && v == nil
}
