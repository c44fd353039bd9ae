package main

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// TestLeaseMoveLeavesNoEventsFromTheReplicaThatGaveUp runs one replica with
// two shards, snapshots every second and a short BRIDGE_STALE_AFTER, then a
// second replica that joins and takes one shard over. The two are builds
// with different versions, so every event's ce-bridgeversion says which
// process wrote it, and each polls with its own token, so the organisation
// sees who polls whom. After the move the replica that gave the shard up
// must publish nothing for that shard's agents (no presence.stale, no
// presence.snapshot, nothing), no agent may be reported stale at all since
// someone polls every agent throughout, and the whole stream keeps its
// properties.
func TestLeaseMoveLeavesNoEventsFromTheReplicaThatGaveUp(t *testing.T) {
	const (
		agents     = 12
		ttl        = 2 * time.Second
		staleAfter = 3 * time.Second
		snapshots  = time.Second
		// watch is how long after the move the stream is watched: well past
		// the stale threshold and several snapshot rounds.
		watch     = 2*staleAfter + 3*snapshots
		stepEvery = 5 * testInterval
		versionA  = "test-build"
		versionB  = "test-build-joiner"
	)
	binB := bridgeBinaryVersion(t, versionB) // before anything runs: the build takes a while
	polls := newPollersLog()
	h := newHarness(t, agents, 7, withSim(func(o *simulator.Options) {
		o.StaticTokens = []string{"token-a", "token-b"}
		o.ChangeProbability = 0.3
	}), withHandler(polls.wrap))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := func(id, token string) map[string]string {
		return h.env(map[string]string{
			"BRIDGE_INSTANCE_ID": id, "BRIDGE_TOKEN": token, "BRIDGE_SHARD_COUNT": "2", "BRIDGE_LEASE_TTL": ttl.String(),
			"BRIDGE_STALE_AFTER": staleAfter.String(), "BRIDGE_SNAPSHOT_INTERVAL": snapshots.String(), "GORACE": raceExitNow,
		})
	}
	a := h.start(env("bridge-a", "token-a"), "run")
	aOps := opsAddr(t, a)
	testwait.Until(t, waitScale*60*time.Second, "bridge-a to hold both shards and publish every agent", func() bool {
		failIfExited(t, a, "starting")
		return leaderMetric(aOps, 0) == "1" && leaderMetric(aOps, 1) == "1" && h.bucketMismatch(ctx) == ""
	})
	stopChanges := h.changeEvery(stepEvery)

	b := h.startBinary(binB, env("bridge-b", "token-b"), "run")
	bOps := opsAddr(t, b)
	moved := -1
	testwait.Until(t, waitScale*60*time.Second, "bridge-b to take one shard over and bridge-a to report it gave it up", func() bool {
		failIfExited(t, a, "the lease moved")
		failIfExited(t, b, "joining")
		for k := range 2 {
			if leaderMetric(bOps, k) == "1" && leaderMetric(aOps, k) == "0" && leaderMetric(aOps, 1-k) == "1" {
				moved = k
				return true
			}
		}
		return false
	})
	movedAt := time.Now()
	testwait.Until(t, waitScale*60*time.Second, "a watch of the stream after the move", func() bool { return time.Since(movedAt) >= watch })
	until := time.Now()
	stable := leaderMetric(bOps, moved) == "1" && leaderMetric(aOps, moved) == "0" && leaderMetric(aOps, 1-moved) == "1"
	stopChanges()
	h.caughtUpBucket(ctx, t, 30*time.Second, "the bucket to equal the simulator's state", a, b)

	// The moved shard's agents are those bridge-b polled; bridge-a polled
	// the others and, after the move, none of them.
	movedAgents := polls.polledSince("token-b", movedAt)
	keptAgents := polls.polledSince("token-a", movedAt.Add(ttl))
	for _, id := range h.sim.AgentIDs() {
		switch {
		case movedAgents[id] && keptAgents[id]:
			t.Errorf("agent %s polled by both replicas after the move", id)
		case !movedAgents[id] && !keptAgents[id]:
			t.Errorf("agent %s polled by nobody after the move", id)
		}
	}
	if len(movedAgents) == 0 || len(keptAgents) == 0 {
		t.Errorf("after the move bridge-a polled %d agents and bridge-b %d: the shards did not split", len(keptAgents), len(movedAgents))
	}

	for name, p := range map[string]*proc{"bridge-a": a, "bridge-b": b} {
		if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
			t.Errorf("%s: exit status %d after SIGTERM", name, code)
		}
	}
	written := h.bridgeEvents(ctx, nil)
	var fromGiver, stale []event
	for _, ev := range written {
		if ev.Type == detector.TypePresenceStale {
			stale = append(stale, ev.event)
		}
		if ev.writer == versionA && movedAgents[ev.Agent] && ev.Time.After(movedAt) && ev.Time.Before(until) {
			fromGiver = append(fromGiver, ev.event)
		}
	}
	if len(fromGiver) > 0 {
		t.Errorf("after giving shard %d up at %s, bridge-a published %d events %v for its agents, e.g.\n%s",
			moved, movedAt.Format("15:04:05.000"), len(fromGiver), countTypes(fromGiver), describe(fromGiver, 5))
	}
	if len(stale) > 0 {
		t.Errorf("%d presence.stale events though every agent was polled throughout, e.g.\n%s", len(stale), describe(stale, 5))
	}
	if !stable {
		t.Errorf("the shards moved again during the watch; the assignment is not stable")
	}
	events := plainEvents(written)
	h.checkWholeStream(ctx, events)
	t.Logf("shard %d moved (%d agents) at %s; %d events %v", moved, len(movedAgents), movedAt.Format("15:04:05.000"), len(events), countTypes(events))
}
