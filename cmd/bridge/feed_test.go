package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// feedEnv is the bridge's environment with the change feed on.
func feedEnv(h *harness, poll string) map[string]string {
	return h.env(map[string]string{
		"BRIDGE_FEED":          "on",
		"BRIDGE_FEED_INTERVAL": "300ms",
		"BRIDGE_POLL_INTERVAL": poll,
	})
}

// checkEveryPresence asserts that every agent's presence.changed events on
// the stream are exactly its ground-truth presences from the first one the
// bridge saw on, in order (none missing, none repeated, none reverted),
// and that a change the feed reported carries changedAt, the second it
// happened at the source. It returns how many changes carried changedAt.
func checkEveryPresence(t *testing.T, h *harness, by map[string][]event) int {
	t.Helper()
	spans := h.presenceSpans()
	timed := 0
	for agent, evs := range by {
		var got []event
		for _, ev := range evs {
			if ev.Type == detector.TypePresenceChanged {
				got = append(got, ev)
			}
		}
		truth := spans[agent]
		first := presenceEvents(got)
		if len(first) == 0 {
			t.Errorf("agent %s: no presence on the stream", agent)
			continue
		}
		// The span in force when the bridge first saw the agent.
		k := -1
		for i, s := range truth {
			if s.presence == first[0].presence && !s.start.After(first[0].at) {
				k = i
			}
		}
		if k < 0 {
			t.Errorf("agent %s: first presence %s on the stream is not in the ground truth", agent, first[0].presence)
			continue
		}
		want := truth[k:]
		var gotIDs, wantIDs []string
		for _, p := range first {
			gotIDs = append(gotIDs, p.presence)
		}
		for _, s := range want {
			wantIDs = append(wantIDs, s.presence)
		}
		if strings.Join(gotIDs, ",") != strings.Join(wantIDs, ",") {
			t.Errorf("agent %s presences on the stream:\n got %v\nwant %v", agent, gotIDs, wantIDs)
			continue
		}
		for i, ev := range got[1:] {
			at, ok := ev.Data["changedAt"].(string)
			if !ok {
				continue
			}
			timed++
			if wantAt := want[i+1].start.UTC().Truncate(time.Second).Format(time.RFC3339); at != wantAt {
				t.Errorf("agent %s: %s changedAt %s, the change happened at %s", agent, ev.ID, at, wantAt)
			}
		}
	}
	return timed
}

// firstSight waits until every agent's presence is on the stream.
func firstSight(t *testing.T, h *harness, c *collector) {
	t.Helper()
	testwait.Until(t, waitScale*30*time.Second, "first sight of every agent", func() bool { return h.caughtUp(c) })
}

// TestFeedAndPollsOneHistory runs the bridge with the change feed and polls
// for a minute against an organisation whose rows lag its changes, whose
// presence API answers 429s and server errors, and whose tables are
// throttled and fail for moments: every presence of the ground truth is on
// the stream, in order, once, timed at the source; sequences are gapless.
func TestFeedAndPollsOneHistory(t *testing.T) {
	h := newHarness(t, 8, 11, withSim(func(o *simulator.Options) {
		o.FeedLag = 700 * time.Millisecond
		o.Faults.Rate429, o.Faults.Rate5xx = 0.03, 0.03
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := h.start(feedEnv(h, "2s"), "run")
	c := h.collect(ctx)
	firstSight(t, h, c)
	ops := opsAddr(t, p)

	changes, stopChanges := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.sim.Run(changes, 400*time.Millisecond) }()
	for _, fault := range []struct {
		at     time.Duration
		status int
	}{{20 * time.Second, 429}, {40 * time.Second, 500}} {
		time.Sleep(fault.at / 2) // the scenario's time passing, not a synchronisation
		setFeedStatus(t, h, fault.status)
		testwait.Until(t, waitScale*10*time.Second, "a failed read", func() bool {
			return metricSum(scrape(ops, "/metrics"), "ccaas_bridge_feed_reads_total{result=\"ok\"}") > 0 &&
				metricSum(scrape(ops, "/metrics"), "ccaas_bridge_feed_reads_total")-metricSum(scrape(ops, "/metrics"), "ccaas_bridge_feed_reads_total{result=\"ok\"}") > 0
		})
		time.Sleep(2 * time.Second) // the fault lasts two seconds: less than the fallback
		setFeedStatus(t, h, 0)
	}
	time.Sleep(20 * time.Second) // the rest of the minute of changes
	stopChanges()
	<-done
	testwait.Until(t, waitScale*60*time.Second, "the stream to catch up with the organisation", func() bool { return h.caughtUp(c) })
	metrics := scrape(ops, "/metrics")
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("bridge exit status %d after SIGTERM", code)
	}

	by := checkCollected(t, c)
	timed := checkEveryPresence(t, h, by)
	if timed < 50 {
		t.Errorf("only %d presence changes carried changedAt: the feed reported too little to prove anything", timed)
	}
	if n := metricSum(metrics, "ccaas_bridge_feed_fallbacks_total"); n != 0 {
		t.Errorf("%v fallbacks: two-second faults must not stop the feed", n)
	}
	if n := metricSum(metrics, "ccaas_bridge_feed_rows_total{outcome=\"delivered\"}"); n < float64(timed) {
		t.Errorf("%v rows delivered, fewer than the %d timed changes", n, timed)
	}
}

func setFeedStatus(t *testing.T, h *harness, status int) {
	t.Helper()
	f := h.sim.Faults()
	f.FeedStatus = status
	if err := h.sim.SetFaults(f); err != nil {
		t.Fatal(err)
	}
}

// cycle returns the next out-of-box presence after id, never Offline.
func cycle(id string) string {
	order := []string{simulator.PresenceAvailable, simulator.PresenceBusy, simulator.PresenceBusyDND, simulator.PresenceAway}
	for i, p := range order {
		if p == id {
			return order[(i+1)%len(order)]
		}
	}
	return order[0]
}

// changeAll switches every agent to its next presence.
func changeAll(t *testing.T, h *harness) {
	t.Helper()
	for _, st := range h.sim.Agents() {
		if _, _, err := h.sim.SetPresence(st.AgentID, cycle(st.PresenceID)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFeedUnreadableThenBack makes the agent-status tables unreadable for
// ten seconds: the bridge falls back to polling alone (one log line, the
// fallback metric, a /readyz detail while still ready), loses no presence
// the polls can see, reads the feed again and catches up from its
// watermark, and says so.
func TestFeedUnreadableThenBack(t *testing.T) {
	h := newHarness(t, 4, 12, withSim(func(o *simulator.Options) { o.FeedLag = 300 * time.Millisecond }))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := h.start(feedEnv(h, "500ms"), "run")
	c := h.collect(ctx)
	firstSight(t, h, c)
	ops := opsAddr(t, p)

	changeAll(t, h)
	testwait.Until(t, waitScale*20*time.Second, "the change before the outage", func() bool { return h.caughtUp(c) })
	setFeedStatus(t, h, 403)
	outage := time.Now()
	testwait.Until(t, waitScale*20*time.Second, "the fallback", func() bool {
		return metricSum(scrape(ops, "/metrics"), "ccaas_bridge_feed_fallbacks_total") == 1
	})
	ready := scrape(ops, "/readyz")
	if !strings.Contains(ready, `"status":"ready"`) || !strings.Contains(ready, "polling alone") {
		t.Errorf("/readyz in fallback: %s", ready)
	}
	if m := scrape(ops, "/metrics"); metricSum(m, "ccaas_bridge_feed_up") != 0 {
		t.Error("ccaas_bridge_feed_up is not 0 in fallback")
	}
	for time.Since(outage) < 10*time.Second {
		changeAll(t, h) // every presence lasts two seconds: the polls see each
		testwait.Until(t, waitScale*10*time.Second, "polls to see the change", func() bool { return h.caughtUp(c) })
		time.Sleep(2 * time.Second) // the scenario's time passing: each presence lasts two seconds
	}
	setFeedStatus(t, h, 0)
	testwait.Until(t, waitScale*20*time.Second, "the feed to read again", func() bool {
		return metricSum(scrape(ops, "/metrics"), "ccaas_bridge_feed_up") == 1
	})
	changeAll(t, h)
	testwait.Until(t, waitScale*40*time.Second, "the change after the outage", func() bool { return h.caughtUp(c) })
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("bridge exit status %d after SIGTERM", code)
	}
	by := checkCollected(t, c)
	checkEveryPresence(t, h, by)
	logs := p.output()
	if n := strings.Count(logs, "change feed unreadable; polling alone"); n != 1 {
		t.Errorf("%d fallback log lines, want 1", n)
	}
	if n := strings.Count(logs, "change feed readable again; catching up"); n != 1 {
		t.Errorf("%d recovery log lines, want 1", n)
	}
	// The changes after the outage came from the feed, timed at the source.
	for agent, evs := range by {
		last := evs[len(evs)-1]
		for i := len(evs) - 1; i >= 0 && last.Type != detector.TypePresenceChanged; i-- {
			last = evs[i]
		}
		if _, ok := last.Data["changedAt"]; !ok {
			t.Errorf("agent %s: the change after the outage has no changedAt", agent)
		}
	}
}

// TestFeedWatermarkSurvivesRestart stops the bridge, changes presences
// while it is down (each a second long, so no poll could see them all) and
// starts it again: the feed resumes from its watermark in the feed bucket
// and every change made meanwhile is on the stream once, in order, timed at
// the source.
func TestFeedWatermarkSurvivesRestart(t *testing.T) {
	h := newHarness(t, 4, 13, withSim(func(o *simulator.Options) { o.FeedLag = 300 * time.Millisecond }))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := h.start(feedEnv(h, "2s"), "run")
	c := h.collect(ctx)
	firstSight(t, h, c)
	changeAll(t, h)
	testwait.Until(t, waitScale*20*time.Second, "the change before the restart", func() bool { return h.caughtUp(c) })
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("bridge exit status %d after SIGTERM", code)
	}
	for i := 0; i < 3; i++ {
		changeAll(t, h)
		time.Sleep(time.Second) // the scenario's time passing: each presence lasts a second
	}
	p2 := h.start(feedEnv(h, "2s"), "run")
	testwait.Until(t, waitScale*40*time.Second, "the changes made while stopped", func() bool { return h.caughtUp(c) })
	changeAll(t, h)
	testwait.Until(t, waitScale*20*time.Second, "a change after the restart", func() bool { return h.caughtUp(c) })
	if code := p2.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("bridge exit status %d after SIGTERM", code)
	}
	by := checkCollected(t, c)
	if timed := checkEveryPresence(t, h, by); timed < 4*4 {
		t.Errorf("%d changes timed at the source, want at least the 16 made after the first sight", timed)
	}
	if !strings.Contains(p2.output(), "change feed resumes from its watermark") {
		t.Error("the restarted bridge did not resume from its watermark")
	}
}
