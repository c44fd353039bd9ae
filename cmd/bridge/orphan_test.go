package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/publish"
	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// TestRestartAfterUncommittedPublishOfAnotherChange reproduces, without
// relying on a lucky kill, what a bridge killed between publishing and
// committing leaves behind: an event on the stream beyond the bucket's
// sequence. Meanwhile the agent changed again, so the restarted bridge
// observes something else than what the orphan event says. The stream must
// still tell a consistent story: the orphan stays (consumers may have acted
// on it), the next events follow on from it, and the stream's last presence
// is the simulator's.
func TestRestartAfterUncommittedPublishOfAnotherChange(t *testing.T) {
	h := newHarness(t, 2, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := h.env(map[string]string{"BRIDGE_LEASE_ENABLED": "false", "GORACE": raceExitNow, "BRIDGE_POLL_INTERVAL": testInterval.String()})
	agent := h.sim.AgentIDs()[0]
	mustSim(t)(h.sim.Login(agent)) // Available, one session

	p := h.start(env, "run")
	testwait.Until(t, waitScale*20*time.Second, "first sight of every agent", func() bool { return h.bucketMismatch(ctx) == "" })
	if !strings.Contains(scrape(opsAddr(t, p), "/metrics"), "ccaas_bridge_adoptions_total") {
		t.Fatal("the bridge does not adopt agents' histories from the stream (pipeline.Options.Journal not wired)")
	}
	if code := p.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM", code)
	}

	// The killed bridge had observed Busy and published it, not committed.
	states, err := h.bucketStates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stored := states[agent]
	busy := presenceOf(t, simulator.PresenceBusy)
	_, orphans := detector.Diff(&stored, source.Snapshot{
		AgentID: agent, AgentName: stored.AgentName, PresenceID: busy.ID, PresenceName: busy.Name,
		BaseStatus: simulator.BaseStatusName(busy.BaseStatus), ActiveBrowserSessions: stored.Sessions.ActiveBrowserSessions,
		LoginTime: stored.Sessions.LoginTime, AllowedChannels: stored.Channels.Allowed, DisabledChannels: stored.Channels.Disabled,
		ObservedAt: time.Now(),
	})
	if len(orphans) == 0 {
		t.Fatal("no orphan event built")
	}
	enc, err := publish.NewEncoder(publish.EncoderOptions{Source: h.simURL, BridgeVersion: "test-build"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range orphans {
		msg, err := enc.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.js.PublishMsg(ctx, msg); err != nil {
			t.Fatalf("publish orphan %s: %v", e.ID, err)
		}
	}
	// While no bridge ran, the agent went Away instead.
	mustSim(t)(h.sim.SetPresence(agent, simulator.PresenceAway))

	p = h.start(env, "run")
	testwait.Until(t, waitScale*20*time.Second, "the bucket to equal the simulator's state", func() bool { return h.bucketMismatch(ctx) == "" })
	mustSim(t)(h.sim.SetPresence(agent, simulator.PresenceAvailable))
	testwait.Until(t, waitScale*20*time.Second, "the bucket to equal the simulator's state", func() bool { return h.bucketMismatch(ctx) == "" })
	if code := p.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM", code)
	}

	events := h.streamEvents(ctx)
	by := checkSequences(t, events)
	checkChained(t, by)
	got := presenceEvents(by[agent])
	var ids []string
	for _, g := range got {
		ids = append(ids, g.presence)
	}
	want := []string{simulator.PresenceAvailable, simulator.PresenceBusy, simulator.PresenceAway, simulator.PresenceAvailable}
	if strings.Join(ids, ",") != strings.Join(want, ",") {
		t.Errorf("presences on the stream %v, want %v (initial, orphan, the change seen after the restart, the last change)", ids, want)
	}
	states, err = h.bucketStates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkBucketFollowsStream(t, states, by)
}
