package main

import (
	"context"
	"fmt"
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
	h.publishOrphan(ctx, t, agent, simulator.PresenceBusy)
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
	states, err := h.bucketStates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkBucketFollowsStream(t, states, by)
}

// TestRestartAfterUncommittedPublishTheOrganisationUndid is the same kill,
// but while no bridge ran the agent went back to where the bucket left it:
// the restarted bridge's polls find nothing new against the bucket, yet the
// stream must not keep saying the agent is where it no longer is. The
// bridge checks every agent it takes against the stream, adopts the
// history of one whose recorded state is behind, and its first poll
// publishes the way back. With the lease (the default) and without.
func TestRestartAfterUncommittedPublishTheOrganisationUndid(t *testing.T) {
	for _, tc := range []struct{ name, leases string }{{"leases on", "true"}, {"leases off", "false"}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 2, 3)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // longer than the waits below
			defer cancel()
			env := h.env(map[string]string{"BRIDGE_LEASE_ENABLED": tc.leases, "GORACE": raceExitNow, "BRIDGE_POLL_INTERVAL": testInterval.String()})
			agent := h.sim.AgentIDs()[0]
			mustSim(t)(h.sim.Login(agent)) // Available, one session

			p := h.start(env, "run")
			testwait.Until(t, waitScale*20*time.Second, "first sight of every agent", func() bool { return h.bucketMismatch(ctx) == "" })
			if code := p.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
				t.Fatalf("exit status %d after SIGTERM", code)
			}
			// The killed bridge had observed Busy and published it, not
			// committed; the agent is Available again.
			h.publishOrphan(ctx, t, agent, simulator.PresenceBusy)

			p = h.start(env, "run")
			ops := opsAddr(t, p)
			testwait.UntilStated(t, waitScale*10*time.Second, "the stream to say the agent is Available again", func() (bool, string) {
				got := presenceEvents(agentEvents(h.streamEvents(ctx), agent))
				return len(got) == 3 && got[2].presence == simulator.PresenceAvailable, fmt.Sprintf("%d presence.changed events of the agent: %v", len(got), got)
			})
			if m := scrape(ops, "/metrics"); !strings.Contains(m, `ccaas_bridge_catch_ups_total{result="behind"} 1`) {
				t.Errorf("metrics do not count the one agent found behind the stream:\n%s", grepLines(m, "ccaas_bridge_catch_ups_total"))
			}
			testwait.UntilStated(t, waitScale*10*time.Second, "the bucket to follow the stream", func() (bool, string) {
				states, err := h.bucketStates(ctx)
				events := agentEvents(h.streamEvents(ctx), agent)
				if err != nil || len(events) == 0 {
					return false, fmt.Sprint(err)
				}
				st := states[agent]
				return st.Sequence == events[len(events)-1].Sequence, fmt.Sprintf("bucket at sequence %d, the stream's last event %d", st.Sequence, events[len(events)-1].Sequence)
			})
			if code := p.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
				t.Fatalf("exit status %d after SIGTERM", code)
			}

			by := checkSequences(t, h.streamEvents(ctx))
			checkChained(t, by)
			states, err := h.bucketStates(ctx)
			if err != nil {
				t.Fatal(err)
			}
			checkBucketFollowsStream(t, states, by)
		})
	}
}

// agentEvents keeps the events of one agent.
func agentEvents(events []event, agent string) []event {
	var out []event
	for _, ev := range events {
		if ev.Agent == agent {
			out = append(out, ev)
		}
	}
	return out
}

// grepLines keeps the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// publishOrphan puts on the stream what a bridge killed between publishing
// and recording leaves there: the agent's change to presence, following on
// from the bucket's state of it, with no state recorded.
func (h *harness) publishOrphan(ctx context.Context, t *testing.T, agent, presence string) {
	t.Helper()
	states, err := h.bucketStates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stored := states[agent]
	p := presenceOf(t, presence)
	_, orphans := detector.Diff(&stored, source.Snapshot{
		AgentID: agent, AgentName: stored.AgentName, PresenceID: p.ID, PresenceName: p.Name,
		BaseStatus: simulator.BaseStatusName(p.BaseStatus), ActiveBrowserSessions: stored.Sessions.ActiveBrowserSessions,
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
}
