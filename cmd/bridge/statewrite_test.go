package main

import (
	"context"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// TestRefusedStateWritesLandOnceAllowed tries README's promise that a
// failed state write is retried until it lands, through the binary in its
// default configuration (leases on): for a while the state bucket refuses
// every write (its stream's largest message is set below any state's
// size, as a wrong limit change would do), while the stream still takes
// the events. Every agent changes once in that time, so every agent's
// bucket value falls behind its last event. Then the limit returns and the
// organisation rests: without any further change, every agent's bucket
// value must reach its last event, ccaas_bridge_state_behind_agents must
// fall back to 0, the lease must never have moved, and the stream must
// hold each event once, in order.
func TestRefusedStateWritesLandOnceAllowed(t *testing.T) {
	const agents = 6
	h := newHarness(t, agents, 47)
	ctx, cancel := context.WithTimeout(context.Background(), 13*time.Minute) // outlasts every wait below
	defer cancel()

	// allowStateWrites sets the largest message the state bucket's stream
	// takes: unlimited, or 16 bytes, which no state fits in.
	allowStateWrites := func(allow bool) {
		t.Helper()
		st, err := h.js.Stream(ctx, "KV_"+contract.StateBucket)
		if err != nil {
			t.Fatalf("look up the state bucket's stream: %v", err)
		}
		cfg := st.CachedInfo().Config
		cfg.MaxMsgSize = 16
		if allow {
			cfg.MaxMsgSize = -1
		}
		if _, err := h.js.UpdateStream(ctx, cfg); err != nil {
			t.Fatalf("set the state bucket's largest message to %d: %v", cfg.MaxMsgSize, err)
		}
	}

	p := h.start(h.env(map[string]string{"GORACE": raceExitNow}), "run")
	ops := opsAddr(t, p)
	testwait.Until(t, waitScale*60*time.Second, "the bridge to lead and record every agent", func() bool {
		failIfExited(t, p, "starting")
		return leaderMetric(ops, 0) == "1" && h.bucketMismatch(ctx) == ""
	})
	lease := h.leaseHolder(ctx, 0)

	allowStateWrites(false)
	h.changeEveryPresence(t)
	behind := func() float64 { return metricSum(scrape(ops, "/metrics"), "ccaas_bridge_state_behind_agents") }
	testwait.UntilStated(t, waitScale*60*time.Second, "every agent's state write to fail and wait for a retry", func() (bool, string) {
		failIfExited(t, p, "state writes refused")
		n := behind()
		return n == agents, "ccaas_bridge_state_behind_agents " + strconv.FormatFloat(n, 'f', -1, 64)
	})
	if h.bucketMismatch(ctx) == "" {
		t.Fatal("the bucket equals the organisation while its writes are refused: the test would prove nothing")
	}
	latest := latestPresence(h.streamEvents(ctx))
	for _, a := range h.sim.Agents() {
		if latest[a.AgentID] != a.PresenceID {
			t.Errorf("agent %s: last presence on the stream %s while state writes are refused, organisation %s", a.AgentID, latest[a.AgentID], a.PresenceID)
		}
	}

	allowStateWrites(true)
	// Nothing changes any more: only the retries can bring the bucket up.
	h.caughtUpBucket(ctx, t, waitScale*90*time.Second, "the bucket to reach every agent's last event once writes are allowed", p)
	testwait.Until(t, waitScale*30*time.Second, "ccaas_bridge_state_behind_agents to fall to 0", func() bool { return behind() == 0 })
	if got := h.leaseHolder(ctx, 0); got != lease {
		t.Errorf("shard 0's lease moved from %q to %q while state writes were refused", lease, got)
	}
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM", code)
	}
	h.checkWholeStream(ctx, h.streamEvents(ctx))
}
