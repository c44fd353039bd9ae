package main

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// TestSIGTERMMidBurstLosesNothing changes all of 200 agents at once and
// sends SIGTERM to the bridge binary while it is publishing that burst. The
// bridge must exit 0 within BRIDGE_SHUTDOWN_TIMEOUT having published and
// committed everything in flight (each agent's stored sequence is its last
// sequence on the stream), and a new process must then catch up without a
// gap: every agent's stream has sequences 1..n and ends at the simulator's
// presence.
func TestSIGTERMMidBurstLosesNothing(t *testing.T) {
	const (
		agents          = 200
		shutdownTimeout = 5 * time.Second
	)
	h := newHarness(t, agents, 13, withSim(func(o *simulator.Options) {
		o.Faults.Latency = 20 * time.Millisecond // polls are in flight at any time
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := h.env(map[string]string{
		"BRIDGE_LEASE_ENABLED":    "false",
		"GORACE":                  raceExitNow,
		"BRIDGE_POLL_INTERVAL":    "1s", // 200 requests a second, spread over the interval
		"BRIDGE_SHUTDOWN_TIMEOUT": shutdownTimeout.String(),
	})
	p := h.start(env, "run")
	testwait.Until(t, waitScale*30*time.Second, "first sight of every agent in the bucket", func() bool { return h.bucketMismatch(ctx) == "" })

	before := h.streamCount(ctx)
	for _, st := range h.sim.Agents() {
		next := simulator.PresenceAvailable
		if st.PresenceID == simulator.PresenceAvailable {
			next = simulator.PresenceBusy
		}
		mustSim(t)(h.sim.SetPresence(st.AgentID, next))
	}
	// SIGTERM once the burst is well under way: the agents' polls are
	// spread over the interval, so most of it is still to come.
	testwait.Until(t, waitScale*10*time.Second, "the burst's first events", func() bool { return h.streamCount(ctx) > before+agents/5 })
	at := h.streamCount(ctx)
	start := time.Now()
	if code := p.stop(t, syscall.SIGTERM, shutdownTimeout); code != 0 {
		t.Fatalf("exit status %d after SIGTERM mid-burst", code)
	}
	took := time.Since(start)
	after := h.streamCount(ctx)
	t.Logf("SIGTERM with %d of the burst's events on the stream; %d when the bridge exited %s later", at-before, after-before, took.Round(time.Millisecond))
	if at-before >= agents {
		t.Fatalf("%d events of the burst were published before SIGTERM: not mid-burst", at-before)
	}

	// Everything published was committed, and nothing is committed that is
	// not on the stream.
	states, err := h.bucketStates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	by := checkSequences(t, h.streamEvents(ctx))
	checkBucketFollowsStream(t, states, by)

	// A new process catches up with what the first did not poll.
	p = h.start(env, "run")
	testwait.Until(t, waitScale*30*time.Second, "the bucket to equal the simulator's state", func() bool { return h.bucketMismatch(ctx) == "" })
	if code := p.stop(t, syscall.SIGTERM, shutdownTimeout); code != 0 {
		t.Fatalf("second process: exit status %d after SIGTERM", code)
	}
	events := h.streamEvents(ctx)
	by = checkSequences(t, events)
	checkChained(t, by)
	states, err = h.bucketStates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkBucketFollowsStream(t, states, by)
	latest := latestPresence(events)
	for _, st := range h.sim.Agents() {
		if latest[st.AgentID] != st.PresenceID {
			t.Errorf("agent %s: last presence on the stream %s, simulator %s", st.AgentID, latest[st.AgentID], st.PresenceID)
		}
	}
}
