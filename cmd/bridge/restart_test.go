package main

import (
	"context"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// processLife is when one bridge process ran: from its start to its
// SIGKILL (zero for the last, cleanly stopped process).
type processLife struct {
	start, kill time.Time
}

// lifeAt returns the life during which a request arriving at t was made.
func lifeAt(lives []processLife, t time.Time) (processLife, bool) {
	for _, l := range lives {
		if !t.Before(l.start) && (l.kill.IsZero() || t.Before(l.kill)) {
			return l, true
		}
	}
	return processLife{}, false
}

// TestRestartAfterSIGKILLKeepsStreamWhole runs the bridge binary against the
// simulator and an embedded JetStream, kills it with SIGKILL at random
// points several times while agents keep changing (also while it is down),
// and finally lets a clean run catch up. Then, for every agent: the stream
// holds sequences 1..n with no gap and no duplicate; each change follows on
// from the one before; the presence history is the simulator's ground truth
// with only changes missed that the bridge could not see (every presence the
// simulator served twice to a process that then lived for another two poll intervals is
// on the stream, in order); and the bucket equals the simulator's final
// state with the stream's last sequence.
func TestRestartAfterSIGKILLKeepsStreamWhole(t *testing.T) {
	const (
		agents    = 16
		kills     = 5
		stepEvery = 5 * testInterval / 2 // each random state lasts at least 2.5 poll intervals
		slack     = 2 * testInterval     // time a process needs to publish what it polled
		lateness  = time.Second          // observation time after the simulator answered
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("kill points seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	reqs := newRequestLog()
	h := newHarness(t, agents, 5, withSim(func(o *simulator.Options) {
		o.ChangeProbability = 0.5
		o.OnRequest = reqs.record
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := h.env(map[string]string{"BRIDGE_LEASE_ENABLED": "false", "GORACE": raceExitNow, "BRIDGE_POLL_INTERVAL": testInterval.String()})
	tick := time.NewTicker(stepEvery)
	defer tick.Stop()
	step := func() {
		<-tick.C // the pace of the organisation's changes, not a synchronisation
		h.sim.Step()
	}

	var lives []processLife
	uncommitted := 0 // agents whose last events were published but not committed at a kill
	for i := range kills {
		start := time.Now()
		p := h.start(env, "run")
		testwait.Until(t, waitScale*20*time.Second, "the new process's first poll", func() bool { return reqs.answeredSince(start) })
		for range 2 + rng.IntN(5) {
			step()
		}
		// A random point after a change round: anywhere from polling it,
		// through publishing, to committing, or idle.
		select {
		case <-time.After(time.Duration(rng.Int64N(int64(stepEvery)))):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
		kill := time.Now()
		if code := p.stop(t, syscall.SIGKILL, 10*time.Second); code != -int(syscall.SIGKILL) {
			t.Fatalf("process %d: exit status %d after SIGKILL", i, code)
		}
		lives = append(lives, processLife{start: start, kill: kill})
		uncommitted += h.uncommitted(ctx)
		for range rng.IntN(3) { // changes while no bridge runs
			step()
		}
	}

	// A final clean run catches up with the organisation, now at rest.
	start := time.Now()
	lives = append(lives, processLife{start: start})
	p := h.start(env, "run")
	testwait.Until(t, waitScale*20*time.Second, "the final process's first poll", func() bool { return reqs.answeredSince(start) })
	testwait.Until(t, waitScale*30*time.Second, "the bucket to equal the simulator's state", func() bool { return h.bucketMismatch(ctx) == "" })
	// A bucket value can stay behind the stream while nothing changes: a
	// predecessor killed between publishing and recording, whose agent came
	// back to the recorded state before a bridge polled it again. The next
	// change heals it (the fence finds the history moved on and the agent
	// is adopted from the stream): change every agent once more, then the
	// bucket must follow the stream.
	presences := h.sim.Presences()
	for _, a := range h.sim.Agents() {
		next := presences[0].ID
		if next == a.PresenceID {
			next = presences[1].ID
		}
		if _, _, err := h.sim.SetPresence(a.AgentID, next); err != nil {
			t.Fatal(err)
		}
	}
	testwait.Until(t, waitScale*30*time.Second, "the bucket to follow the stream and equal the simulator's state", func() bool {
		return h.bucketMismatch(ctx) == "" && h.uncommitted(ctx) == 0
	})
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("final process: exit status %d after SIGTERM", code)
	}

	events := h.streamEvents(ctx)
	by := checkSequences(t, events)
	checkChained(t, by)
	h.checkBucket(ctx, by)

	spans := h.presenceSpans()
	if len(spans) != agents {
		t.Fatalf("ground truth covers %d agents, want %d", len(spans), agents)
	}
	required, total := 0, 0
	for agent, agentSpans := range spans {
		got := presenceEvents(by[agent])
		if !isSubsequence(got, agentSpans) {
			t.Errorf("agent %s: stream presences %v are not in the ground truth's order %v", agent, got, agentSpans)
			continue
		}
		times := reqs.of(agent)
		for _, s := range agentSpans {
			total++
			if !seenTwiceInTime(times, s, lives, slack) {
				continue
			}
			required++
			to := s.end
			if to.IsZero() {
				to = time.Now()
			}
			if !shownDuring(got, s.presence, s.start, to.Add(lateness)) {
				t.Errorf("agent %s: presence %s from %s to %s, served twice to a live bridge, is missing from the stream %v",
					agent, s.presence, s.start.Format("15:04:05.000"), to.Format("15:04:05.000"), got)
			}
		}
	}
	t.Logf("%d kills (%d agents with events published but not committed at a kill), %d events %v, %d of %d ground-truth presences required on the stream",
		kills, uncommitted, len(events), countTypes(events), required, total)
	if required < total/2 || required < 3*agents {
		t.Fatalf("only %d of %d presences were observable: the test would prove little", required, total)
	}
}

// seenTwiceInTime reports whether the simulator answered two requests for
// the agent during span s, the first at least slack before the process that
// made it was killed.
func seenTwiceInTime(times []time.Time, s presenceSpan, lives []processLife, slack time.Duration) bool {
	var in []time.Time
	for _, at := range times {
		if at.Before(s.start) || (!s.end.IsZero() && !at.Before(s.end)) {
			continue
		}
		in = append(in, at)
	}
	if len(in) < 2 {
		return false
	}
	l, ok := lifeAt(lives, in[0])
	return ok && (l.kill.IsZero() || l.kill.Sub(in[0]) >= slack)
}

// mustSim returns a check that fails the test when a forced simulator
// change failed or changed nothing: mustSim(t)(h.sim.Logout(id)).
func mustSim(t *testing.T) func(simulator.Change, bool, error) {
	return func(c simulator.Change, changed bool, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if !changed {
			t.Fatalf("the simulator change of agent %s changed nothing", c.AgentID)
		}
	}
}

func presenceOf(t *testing.T, id string) simulator.Presence {
	t.Helper()
	for _, p := range simulator.OutOfBoxPresences() {
		if p.ID == id {
			return p
		}
	}
	t.Fatalf("no out-of-box presence %s", id)
	return simulator.Presence{}
}
