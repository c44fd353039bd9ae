package main

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// TestTwoBridgesWithoutLeaseKeepOneHistoryForThirtySeconds runs two bridge
// processes without the lease, both polling the same agents, for 30 s of
// changes: a round every 100 ms in which each agent changes with
// probability 0.2, so states last from a fraction of a poll interval (the
// two bridges see different states for the same sequence) to several. The
// whole stream must keep its properties (one version of every ID,
// sequences 1..n, every change following on from the previous one, bucket
// and stream ending at the organisation's state), and every presence that
// lasted 3 poll intervals must be on it. Every answer reaches its bridge
// up to 150 ms after the organisation read the agent's state, so one
// bridge's answer often arrives after the other's newer one: a presence
// that has already ended, which must not be published after its successor.
func TestTwoBridgesWithoutLeaseKeepOneHistoryForThirtySeconds(t *testing.T) {
	const (
		agents    = 8
		runFor    = 30 * time.Second
		stepEvery = 100 * time.Millisecond
		minSpan   = 3 * testInterval
		lateness  = time.Second
	)
	reqs := newRequestLog()
	h := newHarness(t, agents, 27, withSim(func(o *simulator.Options) {
		o.ChangeProbability = 0.2
		o.OnRequest = reqs.record
	}), withHandler(lateAnswers(150*time.Millisecond)))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := h.env(map[string]string{"BRIDGE_LEASE_ENABLED": "false", "GORACE": raceExitNow, "BRIDGE_POLL_INTERVAL": testInterval.String()})
	a := h.start(env, "run")
	b := h.start(env, "run")
	testwait.Until(t, waitScale*60*time.Second, "first sight of every agent", func() bool {
		failIfExited(t, a, "starting")
		failIfExited(t, b, "starting")
		return h.bucketMismatch(ctx) == ""
	})

	start := time.Now()
	stopChanges := h.changeEvery(stepEvery)
	testwait.Until(t, waitScale*(runFor+30*time.Second), "30 s of changes", func() bool {
		failIfExited(t, a, "changes")
		failIfExited(t, b, "changes")
		return time.Since(start) >= runFor
	})
	stopChanges()
	elapsed := time.Since(start)
	h.caughtUpBucket(ctx, t, 60*time.Second, "the bucket to equal the simulator's state", a, b)
	for name, p := range map[string]*proc{"a": a, "b": b} {
		if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
			t.Errorf("bridge %s: exit status %d after SIGTERM", name, code)
		}
	}
	// Both polled: about two polls per agent per interval rather than one.
	polls := 0
	for _, id := range h.sim.AgentIDs() {
		for _, at := range reqs.of(id) {
			if at.After(start) && at.Before(start.Add(elapsed)) {
				polls++
			}
		}
	}
	if perAgent := float64(polls) / agents / (elapsed.Seconds() / testInterval.Seconds()); perAgent < 1.2 {
		t.Errorf("%.2f polls per agent per interval: the two bridges did not both poll", perAgent)
	}

	events := h.streamEvents(ctx)
	by := h.checkWholeStream(ctx, events)
	missing, required := missingTransitions(h.presenceSpans(), by, minSpan, lateness, time.Now())
	changes := len(h.sim.Changes()) - agents
	t.Logf("%d changes in %s; %d events %v from two bridges; %d presences lasted %s or more", changes, elapsed.Round(time.Millisecond), len(events), countTypes(events), required, minSpan)
	if len(missing) > 0 {
		t.Errorf("presence history against the organisation's (%d presences lasted %s or more): %d problems:\n%s", required, minSpan, len(missing), strings.Join(missing, "\n"))
	}
	if required < 3*agents {
		t.Errorf("only %d presences lasted %s or more: the test would prove little", required, minSpan)
	}
}

// lateAnswers wraps the simulator's handler: every CCaaS_GetPresence answer
// is sent up to maxDelay (uniformly) after the organisation wrote it, as a
// slow network or a busy gateway would deliver it.
func lateAnswers(maxDelay time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasSuffix(strings.TrimSuffix(r.URL.Path, "()"), simulator.EndpointPresence) {
				next.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			timer := time.NewTimer(rand.N(maxDelay))
			defer timer.Stop()
			select {
			case <-timer.C:
			case <-r.Context().Done():
				return // the client gave up
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
		})
	}
}
