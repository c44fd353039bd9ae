package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// TestNATSOutageWithDefaultLeaseLosesNoTransition stops NATS for 5 s under
// the default configuration (leases on, one replica) while the organisation
// keeps changing, each state lasting at least 3 poll intervals, and starts
// it again on the same address with the same store. Every presence that
// lasted 3 poll intervals, during the outage too, must be on the stream,
// and the whole stream must keep its properties.
//
// The outage starts most of a renewal period after the lease was last
// renewed, so that it covers both the next renewal and the moment a holder
// that cannot renew would give the lease up: the worst case of the default
// lease timing, taken every time rather than by chance.
func TestNATSOutageWithDefaultLeaseLosesNoTransition(t *testing.T) {
	const (
		agents    = 8
		outage    = 5 * time.Second
		stepEvery = 7 * testInterval / 2 // each state lasts at least 3.5 poll intervals
		minSpan   = 3 * testInterval
		lateness  = time.Second // observation time after the simulator answered
		// renewEvery is the default lease's renewal period (a third of
		// BRIDGE_LEASE_TTL's default 15s).
		renewEvery = 5 * time.Second
	)
	h := newHarness(t, agents, 41, withSim(func(o *simulator.Options) { o.ChangeProbability = 0.5 }))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The default configuration apart from the test's short poll interval
	// and backoff: no BRIDGE_LEASE_* variable is set.
	p := h.start(h.env(map[string]string{"GORACE": raceExitNow}), "run")
	ops := opsAddr(t, p)
	testwait.Until(t, waitScale*60*time.Second, "the bridge to lead and publish every agent", func() bool {
		failIfExited(t, p, "starting")
		return leaderMetric(ops, 0) == "1" && h.bucketMismatch(ctx) == ""
	})

	stopChanges := h.changeEvery(stepEvery)
	// Place the outage 4 s after a renewal: the renewal due 1 s into it
	// fails, and half a TTL after the last one falls 3.5 s into it.
	rev := h.leaseRevision(ctx, 0)
	testwait.Until(t, waitScale*3*renewEvery, "a lease renewal", func() bool { return h.leaseRevision(ctx, 0) > rev })
	renewed := time.Now()
	select {
	case <-time.After(renewEvery - time.Second - time.Since(renewed)): // scenario timing, not a synchronisation
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}

	h.ns.Stop()
	down := time.Now()
	select {
	case <-time.After(outage): // the outage's length is the scenario
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	h.ns.Restart()
	up := time.Now()
	t.Logf("NATS down from %s to %s, %s after the last lease renewal", down.Format("15:04:05.000"), up.Format("15:04:05.000"), down.Sub(renewed).Round(time.Millisecond))
	failIfExited(t, p, "NATS was down")

	// A few more rounds with NATS back, then the organisation rests and the
	// bridge catches up.
	testwait.Until(t, waitScale*30*time.Second, "a few rounds of changes after the outage", func() bool { return time.Since(up) >= 4*stepEvery })
	stopChanges()
	failIfExited(t, p, "catching up after the outage")
	h.caughtUpBucket(ctx, t, 60*time.Second, "the bucket to equal the simulator's state after the outage", p)
	if got := leaderMetric(ops, 0); got != "1" {
		t.Errorf("after the outage the only replica reports ccaas_bridge_leader{shard=\"0\"} %q, want 1", got)
	}
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM", code)
	}

	events := h.streamEvents(ctx)
	by := h.checkWholeStream(ctx, events)
	spans := h.presenceSpans()
	missing, required := missingTransitions(spans, by, minSpan, lateness, time.Now())
	during := 0
	for _, agentSpans := range spans {
		for _, s := range agentSpans {
			if s.start.After(down) && s.start.Before(up) {
				during++
			}
		}
	}
	t.Logf("%d events %v; %d presences lasted %s or more, %d began during the outage", len(events), countTypes(events), required, minSpan, during)
	if during < agents {
		t.Fatalf("only %d presences began during the outage: the test would prove little", during)
	}
	if len(missing) > 0 {
		t.Errorf("presence history against the organisation's (%d presences lasted %s or more): %d problems:\n%s", required, minSpan, len(missing), strings.Join(missing, "\n"))
	}
	// The organisation answered every poll: "the bridge cannot see the
	// agent" would be a false alarm.
	if n := countTypes(events)[detector.TypePresenceStale]; n > 0 {
		t.Errorf("%d presence.stale events, though the API answered every poll during the NATS outage", n)
	}
}

// TestCutOffLeaderRejoinsAfterTakeoverWithoutContradiction cuts the leading
// replica off from NATS (a proxy between it and NATS drops its connections
// and refuses new ones) for three times a test-shortened duplicate window
// while the organisation changes and it keeps polling; the other replica
// takes the lease over and publishes. When the connection comes back, the
// ex-leader's held observations must not store anything contradictory (no
// second version of an ID, every change following on from the stream's
// previous one, no agent sent back to a presence it had left) and it must
// step down (ccaas_bridge_leader 0, /readyz standby), while the stream ends
// equal to the organisation. Answers arrive up to 100 ms after the
// organisation read them, so the two replicas' answers cross.
func TestCutOffLeaderRejoinsAfterTakeoverWithoutContradiction(t *testing.T) {
	const (
		agents    = 6
		ttl       = 2 * time.Second
		window    = 2 * time.Second // BRIDGE_DUPLICATE_WINDOW, shortened
		cutFor    = 3 * window
		stepEvery = 7 * testInterval / 2
	)
	polls := newPollersLog()
	h := newHarness(t, agents, 31, withSim(func(o *simulator.Options) {
		o.StaticTokens = []string{"token-a", "token-b"}
		o.ChangeProbability = 0.5
	}), withHandler(func(next http.Handler) http.Handler { return polls.wrap(lateAnswers(100 * time.Millisecond)(next)) }))
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute) // longer than any one wait below
	defer cancel()
	proxy := newTCPProxy(t, h.ns.Addr())
	env := func(id, token, natsURL string) map[string]string {
		return h.env(map[string]string{
			"BRIDGE_INSTANCE_ID": id, "BRIDGE_TOKEN": token, "BRIDGE_NATS_URL": natsURL,
			"BRIDGE_LEASE_TTL": ttl.String(), "BRIDGE_DUPLICATE_WINDOW": window.String(), "GORACE": raceExitNow,
		})
	}
	a := h.start(env("bridge-a", "token-a", "nats://"+proxy.addr()), "run")
	aOps := opsAddr(t, a)
	testwait.UntilStated(t, waitScale*60*time.Second, "bridge-a to lead and publish every agent", func() (bool, string) {
		failIfExited(t, a, "starting")
		holder, mismatch := h.leaseHolder(ctx, 0), h.bucketMismatch(ctx)
		return holder == "bridge-a" && mismatch == "", fmt.Sprintf("lease holder %q, bucket against the organisation: %q", holder, mismatch)
	})
	b := h.start(env("bridge-b", "token-b", h.ns.ClientURL()), "run")
	bOps := opsAddr(t, b)
	testwait.Until(t, waitScale*30*time.Second, "bridge-b ready but idle", func() bool {
		return strings.Contains(scrape(bOps, "/readyz"), `"status":"standby"`) && leaderMetric(bOps, 0) == "0"
	})

	proxy.setCut(true)
	cut := time.Now()
	// A change the cut-off leader observes and holds...
	changed := h.changeEveryPresence(t)
	testwait.Until(t, waitScale*20*time.Second, "bridge-a to poll every agent after a change while cut off", func() bool {
		return len(polls.polledSince("token-a", changed)) == agents
	})
	// ...and another before bridge-b polls: whoever publishes first, the two
	// replicas hold different versions of the agents' next events.
	h.changeEveryPresence(t)
	stopChanges := h.changeEvery(stepEvery)
	testwait.UntilStated(t, waitScale*60*time.Second, "bridge-b to take the lease and poll every agent while bridge-a is cut off", func() (bool, string) {
		failIfExited(t, a, "cut off")
		holder, polled := h.leaseHolder(ctx, 0), len(polls.polledSince("token-b", cut))
		return holder == "bridge-b" && polled == agents, fmt.Sprintf("lease holder %q, bridge-b polled %d agents", holder, polled)
	})
	testwait.Until(t, waitScale*60*time.Second, "the cut to last three duplicate windows", func() bool { return time.Since(cut) >= cutFor })
	polledWhileCut := len(polls.polledSince("token-a", time.Now().Add(-2*time.Second)))
	stopChanges()
	testwait.UntilStated(t, waitScale*60*time.Second, "bridge-b to publish the organisation's state", func() (bool, string) {
		mismatch := h.bucketMismatch(ctx)
		return mismatch == "", mismatch
	})
	proxy.setCut(false)
	rejoined := time.Now()
	t.Logf("bridge-a cut off for %s; it polled %d of %d agents in the last 2 s of the cut", rejoined.Sub(cut).Round(time.Millisecond), polledWhileCut, agents)

	testwait.Eventually(t, 60*time.Second, "bridge-a to reconnect, publish what it held and stand by", func() bool {
		failIfExited(t, a, "reconnecting")
		return proxy.openConns() > 0 && metricSum(scrape(aOps, "/metrics"), "ccaas_bridge_publish_window_in_use") == 0 &&
			strings.Contains(scrape(aOps, "/readyz"), `"status":"standby"`)
	})
	if got := leaderMetric(aOps, 0); got != "0" {
		t.Errorf("the ex-leader reports ccaas_bridge_leader{shard=\"0\"} %q after rejoining, want 0", got)
	}
	if got := h.leaseHolder(ctx, 0); got != "bridge-b" {
		t.Errorf("lease holder %q after bridge-a rejoined, want bridge-b", got)
	}
	// A few changes after the rejoin, published by the new leader.
	for i := range 3 {
		h.sim.Step()
		if !h.caughtUpBucket(ctx, t, 30*time.Second, fmt.Sprintf("round %d after the rejoin on the stream and in the bucket", i+1), a, b) {
			break
		}
	}
	for name, p := range map[string]*proc{"bridge-a": a, "bridge-b": b} {
		if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
			t.Errorf("%s: exit status %d after SIGTERM", name, code)
		}
	}
	events := h.streamEvents(ctx)
	by := h.checkWholeStream(ctx, events)
	for _, e := range presenceOrderErrors(h.presenceSpans(), by) {
		t.Error(e)
	}
	t.Logf("%d events %v", len(events), countTypes(events))
}
