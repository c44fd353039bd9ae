package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/publish"
	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// TestTwoBridgesPartlyStoredFirstSightChainsEveryEvent: another replica
// saw an agent first and only the first two of its three first-sight
// events are on the stream (presence.changed and sessions.changed; its
// channels.changed not stored yet, or never) when this bridge, with no
// state for the agent, polls it. The bridge's own first sight collides
// with that history, so it adopts it; the part the stream lacks
// (channels) must then be published as at first sight, with previous
// null: every event's previous is the current of the stream's prior event
// of its type, every agent's sequences run 1, 2, … once each, and the
// bucket ends at the organisation's state.
func TestTwoBridgesPartlyStoredFirstSightChainsEveryEvent(t *testing.T) {
	h := newHarness(t, 3, 53)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ids := h.sim.AgentIDs()
	x, others := ids[0], ids[1:]

	// The stream, as the bridge creates it, with the other agents' history.
	p := h.start(h.env(map[string]string{"GORACE": raceExitNow, "BRIDGE_AGENT_IDS": strings.Join(others, ",")}), "run")
	testwait.Until(t, waitScale*60*time.Second, "the other agents recorded", func() bool {
		failIfExited(t, p, "starting")
		states, err := h.bucketStates(ctx)
		return err == nil && len(states) == len(others)
	})
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM", code)
	}

	// Another replica's first sight of x, its first two events stored.
	var st simulator.AgentState
	for _, a := range h.sim.Agents() {
		if a.AgentID == x {
			st = a
		}
	}
	_, first := detector.Diff(nil, source.Snapshot{
		AgentID: x, AgentName: st.AgentName, PresenceID: st.PresenceID, PresenceName: st.PresenceName,
		BaseStatus: simulator.BaseStatusName(st.BaseStatus), ActiveBrowserSessions: st.ActiveBrowserSessions,
		LoginTime: st.Timestamp, AllowedChannels: st.AllowedChannels, DisabledChannels: st.DisabledChannels,
		ObservedAt: time.Now().Add(-time.Second),
	})
	if len(first) != 3 || first[2].Type != detector.TypeChannelsChanged {
		t.Fatalf("first sight of %s: %d events, want presence, sessions and channels", x, len(first))
	}
	enc, err := publish.NewEncoder(publish.EncoderOptions{Source: h.simURL, SubjectPrefix: contract.SubjectPrefix, BridgeVersion: "another-replica"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range first[:2] {
		msg, err := enc.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.js.PublishMsg(ctx, msg); err != nil {
			t.Fatalf("store %s: %v", ev.ID, err)
		}
	}

	// This bridge, every agent, no state for x.
	p = h.start(h.env(map[string]string{"GORACE": raceExitNow}), "run")
	h.caughtUpBucket(ctx, t, waitScale*60*time.Second, "the bucket to equal the organisation", p)
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM", code)
	}
	events := h.streamEvents(ctx)
	by := h.checkWholeStream(ctx, events)
	var types []string
	for _, ev := range by[x] {
		types = append(types, ev.Type)
	}
	if len(types) < 3 || types[0] != detector.TypePresenceChanged || types[1] != detector.TypeSessionsChanged || types[2] != detector.TypeChannelsChanged {
		t.Errorf("agent %s's history %v: want the two stored first-sight events, then the bridge's channels.changed", x, types)
	}
}
