package main

import (
	"context"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/testwait"
)

// TestSIGTERMPublishesEveryAnswerInFlight sends SIGTERM while 30 or more
// slow CCaaS_GetPresence answers (1-2 s each) are in flight, just after
// every agent's presence changed. The bridge must let the polls in flight
// finish rather than give them up, exit 0, and reflect every answer the
// organisation sent (before the signal, and those in flight at it) in the
// stream: each agent's last presence on the stream is what its last
// answered poll said. A second process then catches up and the whole
// stream keeps its properties.
func TestSIGTERMPublishesEveryAnswerInFlight(t *testing.T) {
	const (
		agents          = 40
		minInFlight     = 30
		shutdownTimeout = 15 * time.Second
	)
	answers := &answerLog{delay: func() time.Duration { return time.Second + rand.N(time.Second) }}
	h := newHarness(t, agents, 23, withHandler(answers.wrap))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := h.env(map[string]string{
		"GORACE":                  raceExitNow,
		"BRIDGE_POLL_INTERVAL":    "1s",
		"BRIDGE_MAX_CONCURRENCY":  "64",
		"BRIDGE_REQUEST_TIMEOUT":  "5s",
		"BRIDGE_SHUTDOWN_TIMEOUT": shutdownTimeout.String(),
	})
	p := h.start(env, "run")
	testwait.Until(t, waitScale*90*time.Second, "first sight of every agent", func() bool {
		failIfExited(t, p, "starting")
		return h.bucketMismatch(ctx) == ""
	})

	changed := h.changeEveryPresence(t)
	inFlight := 0
	testwait.Until(t, waitScale*30*time.Second, "answers with the new presences sent and 30 more in flight", func() bool {
		sent, n := answers.snapshot()
		inFlight = n
		newer := 0
		for _, a := range sent {
			if a.at.After(changed) {
				newer++
			}
		}
		return newer >= 3 && n >= minInFlight
	})
	signalled := time.Now()
	code := p.stop(t, syscall.SIGTERM, shutdownTimeout+10*time.Second)
	took := time.Since(signalled)
	if code != 0 {
		t.Errorf("exit status %d after SIGTERM", code)
	}

	all, _ := answers.snapshot()
	last := lastAnswers(all, time.Time{})
	beforeSignal := lastAnswers(all, signalled)
	events := h.streamEvents(ctx)
	latest := latestPresence(events)
	var lost []string
	inFlightAnswered := 0
	for agent, a := range last {
		if a.at.After(signalled) {
			inFlightAnswered++
		}
		if latest[agent] == a.presence {
			continue
		}
		when := "before the signal"
		if a.at.After(signalled) {
			when = "while the bridge shut down (in flight at the signal)"
		}
		lost = append(lost, "agent "+agent+": last answer "+when+" said "+a.presence+", the stream's last presence is "+latest[agent])
	}
	t.Logf("SIGTERM with %d answers in flight; %d agents answered last while shutting down; exit %d after %s; %d of %d agents' last answers not on the stream",
		inFlight, inFlightAnswered, code, took.Round(time.Millisecond), len(lost), len(last))
	if len(beforeSignal) != agents {
		t.Errorf("only %d of %d agents were answered before the signal", len(beforeSignal), agents)
	}
	if n := answers.abandonedBefore(signalled); n > 0 {
		t.Errorf("the bridge gave up on %d polls in flight at the signal instead of letting them finish", n)
	}
	if len(lost) > 0 {
		t.Errorf("%d answers the organisation sent are not on the stream:\n%s", len(lost), strings.Join(lost, "\n"))
	}
	by := checkSequences(t, events)
	checkChained(t, by)
	if states, err := h.bucketStates(ctx); err != nil {
		t.Errorf("state bucket: %v", err)
	} else {
		checkBucketFollowsStream(t, states, by)
	}

	// A new process catches up with whatever was not polled.
	p = h.start(env, "run")
	failIfExited(t, p, "catching up")
	h.caughtUpBucket(ctx, t, 90*time.Second, "the bucket to equal the simulator's state", p)
	if code := p.stop(t, syscall.SIGTERM, shutdownTimeout+10*time.Second); code != 0 {
		t.Errorf("second process: exit status %d after SIGTERM", code)
	}
	h.checkWholeStream(ctx, h.streamEvents(ctx))
}
