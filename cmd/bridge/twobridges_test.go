package main

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// TestTwoBridgesPollingTheSameAgents runs two bridge processes without the
// lease, so both poll every agent at the same time, while the organisation
// changes. The stream must hold each agent's sequences 1..n exactly once,
// every change must follow on from the one before it (no conflicting
// version of a sequence won), and the bucket must end equal to the
// simulator with the stream's last sequence.
func TestTwoBridgesPollingTheSameAgents(t *testing.T) {
	const (
		agents = 12
		rounds = 60
	)
	reqs := newRequestLog()
	h := newHarness(t, agents, 9, withSim(func(o *simulator.Options) {
		o.ChangeProbability = 0.5
		o.OnRequest = reqs.record
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := h.env(map[string]string{"BRIDGE_LEASE_ENABLED": "false", "GORACE": raceExitNow, "BRIDGE_POLL_INTERVAL": testInterval.String()})
	start := time.Now()
	a := h.start(env, "run")
	b := h.start(env, "run")
	testwait.Until(t, waitScale*20*time.Second, "both bridges polling", func() bool { return reqs.answeredSince(start) })
	// Each process counts its own successful polls: both must poll every
	// agent while the organisation changes (counted, not timed, so a slow
	// runner changes nothing).
	const okPolls = `ccaas_bridge_polls_total{result="ok"}`
	addrs := map[string]string{"a": opsAddr(t, a), "b": opsAddr(t, b)}
	polled := map[string]float64{}
	for name, addr := range addrs {
		testwait.Until(t, waitScale*30*time.Second, "bridge "+name+" polling every agent", func() bool {
			polled[name] = metricSum(scrape(addr, "/metrics"), okPolls)
			return polled[name] >= agents
		})
	}

	// Changes come every 40 ms, several per poll interval: the two bridges
	// often see different states of an agent for the same sequence.
	tick := time.NewTicker(40 * time.Millisecond)
	defer tick.Stop()
	for range rounds {
		<-tick.C // the pace of the organisation's changes, not a synchronisation
		h.sim.Step()
	}
	for name, addr := range addrs {
		testwait.Until(t, waitScale*30*time.Second, "bridge "+name+" polling every agent during the changes", func() bool {
			return metricSum(scrape(addr, "/metrics"), okPolls) >= polled[name]+agents
		})
	}
	testwait.Until(t, waitScale*30*time.Second, "the bucket to equal the simulator's state", func() bool { return h.bucketMismatch(ctx) == "" })
	for name, p := range map[string]*proc{"a": a, "b": b} {
		if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
			t.Fatalf("bridge %s: exit status %d after SIGTERM", name, code)
		}
	}
	events := h.streamEvents(ctx)
	h.checkWholeStream(ctx, events)
	t.Logf("%d events %v from two bridges", len(events), countTypes(events))
}
