package source_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/source"
)

// raceEnabled is set when the tests run with the race detector.
var raceEnabled bool

// customPresence returns a presence of the simulated organisation that is
// not one of the built-in ones.
func customPresence(t *testing.T, sim *simulator.Simulator) simulator.Presence {
	t.Helper()
	for _, p := range sim.Presences() {
		if !slices.ContainsFunc(source.BuiltinPresences(), func(b source.Presence) bool { return b.ID == p.ID }) {
			return p
		}
	}
	t.Fatal("the simulator has no custom presence")
	return simulator.Presence{}
}

// TestPollRepeatedAnswer polls one agent through Client.Poll with one
// LastAnswer, step by step: an answer repeating the last decoded one is
// shared (the same *Snapshot the last poll returned), anything else is
// decoded into a new one, which is then kept; either has ObservedAt zero.
func TestPollRepeatedAnswer(t *testing.T) {
	type step struct {
		before    func(t *testing.T, sim *simulator.Simulator, cat *source.Catalogue, agent string)
		class     source.ErrorClass
		unchanged bool
		presence  string // want PresenceID; "" any
		base      string // want BaseStatus; "-" any
	}
	poll := func(unchanged bool, presence, base string) step {
		return step{class: source.ClassOK, unchanged: unchanged, presence: presence, base: base}
	}
	set := func(presence string) func(*testing.T, *simulator.Simulator, *source.Catalogue, string) {
		return func(t *testing.T, sim *simulator.Simulator, _ *source.Catalogue, agent string) {
			if _, _, err := sim.SetPresence(agent, presence); err != nil {
				t.Fatal(err)
			}
		}
	}
	fault := func(f simulator.AgentFault) func(*testing.T, *simulator.Simulator, *source.Catalogue, string) {
		return func(t *testing.T, sim *simulator.Simulator, _ *source.Catalogue, agent string) {
			if err := sim.SetAgentFault(agent, f); err != nil {
				t.Fatal(err)
			}
		}
	}
	avail, busy := simulator.PresenceAvailable, simulator.PresenceBusy
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "a repeated answer is shared", steps: []step{
			{before: set(avail), class: source.ClassOK, presence: avail, base: source.BaseAvailable},
			poll(true, avail, source.BaseAvailable),
			poll(true, avail, source.BaseAvailable),
		}},
		{name: "a changed presence is decoded, then shared", steps: []step{
			{before: set(avail), class: source.ClassOK, presence: avail, base: source.BaseAvailable},
			poll(true, avail, source.BaseAvailable),
			{before: set(busy), class: source.ClassOK, presence: busy, base: source.BaseBusy},
			poll(true, busy, source.BaseBusy),
			{before: set(avail), class: source.ClassOK, presence: avail, base: source.BaseAvailable},
		}},
		{name: "a malformed answer makes the next decoded", steps: []step{
			{before: set(avail), class: source.ClassOK, presence: avail, base: source.BaseAvailable},
			{before: fault(simulator.AgentFault{Malformed: simulator.MalformedNotJSON, Count: 1}), class: source.ClassMalformed},
			poll(false, avail, source.BaseAvailable),
			poll(true, avail, source.BaseAvailable),
		}},
		{name: "an answer for another agent is not taken", steps: []step{
			{before: set(avail), class: source.ClassOK, presence: avail, base: source.BaseAvailable},
			{before: fault(simulator.AgentFault{Malformed: simulator.MalformedWrongAgent, Count: 1}), class: source.ClassMalformed},
			poll(false, avail, source.BaseAvailable),
		}},
		{name: "a catalogue that resolves the presence anew makes the answer decoded", steps: []step{
			{before: func(t *testing.T, sim *simulator.Simulator, _ *source.Catalogue, agent string) {
				set(customPresence(t, sim).ID)(t, sim, nil, agent)
			}, class: source.ClassOK, base: ""},
			poll(true, "", ""),
			{before: func(t *testing.T, sim *simulator.Simulator, cat *source.Catalogue, _ string) {
				p := customPresence(t, sim)
				cat.Set([]source.Presence{{ID: p.ID, Name: p.Name, BaseStatus: source.BaseAway}})
			}, class: source.ClassOK, base: source.BaseAway},
			poll(true, "", source.BaseAway),
			{before: func(t *testing.T, _ *simulator.Simulator, cat *source.Catalogue, _ string) {
				cat.Set(nil)
			}, class: source.ClassOK, base: ""},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sim, url := serveSim(t, simulator.Options{Agents: 2, Seed: 3, StaticTokens: []string{simulator.DefaultToken}})
			cat := source.NewCatalogue(nil)
			c, err := source.NewClient(source.ClientOptions{OrgURL: url, Tokens: source.StaticToken(simulator.DefaultToken), Catalogue: cat})
			if err != nil {
				t.Fatal(err)
			}
			agent := sim.AgentIDs()[0]
			var last source.LastAnswer
			var shared *source.Snapshot // the Snapshot the last poll returned
			for i, s := range tc.steps {
				if s.before != nil {
					s.before(t, sim, cat, agent)
				}
				snap, unchanged, err := c.Poll(context.Background(), agent, &last)
				if got := source.ClassOf(err); got != s.class {
					t.Fatalf("step %d: class %s (%v), want %s", i, got, err, s.class)
				}
				if err != nil {
					shared = nil
					continue
				}
				if unchanged != s.unchanged {
					t.Fatalf("step %d: unchanged %v, want %v", i, unchanged, s.unchanged)
				}
				if s.presence != "" && snap.PresenceID != s.presence {
					t.Errorf("step %d: presence %s, want %s", i, snap.PresenceID, s.presence)
				}
				if s.base != "-" && snap.BaseStatus != s.base {
					t.Errorf("step %d: base status %q, want %q", i, snap.BaseStatus, s.base)
				}
				// What the body decodes to now, through Get: the shared
				// Snapshot must say exactly that.
				fresh, err := c.Get(context.Background(), agent)
				if err != nil {
					t.Fatal(err)
				}
				if fresh.ObservedAt.IsZero() {
					t.Errorf("step %d: Get's snapshot has no ObservedAt", i)
				}
				got := *snap
				fresh.ObservedAt = time.Time{}
				if unchanged && snap != shared {
					t.Errorf("step %d: an unchanged answer did not share the Snapshot the last poll returned", i)
				}
				if !unchanged && snap == shared {
					t.Errorf("step %d: a decoded answer returned the last poll's Snapshot", i)
				}
				if !got.ObservedAt.IsZero() {
					t.Errorf("step %d: the kept Snapshot has ObservedAt %v", i, got.ObservedAt)
				}
				if !snapshotsEqual(got, fresh) {
					t.Errorf("step %d: Poll gave %+v, the body decodes to %+v", i, got, fresh)
				}
				shared = snap
			}
		})
	}
}

func snapshotsEqual(a, b source.Snapshot) bool {
	return a.AgentID == b.AgentID && a.AgentName == b.AgentName && a.PresenceID == b.PresenceID && a.PresenceName == b.PresenceName &&
		a.BaseStatus == b.BaseStatus && a.ActiveBrowserSessions == b.ActiveBrowserSessions && a.LoginTime == b.LoginTime &&
		slices.Equal(a.AllowedChannels, b.AllowedChannels) && slices.Equal(a.DisabledChannels, b.DisabledChannels) &&
		a.ObservedAt.Equal(b.ObservedAt) && a.PresenceChangedAt.Equal(b.PresenceChangedAt)
}

// scriptSink counts each agent's observations, keeps the target's, and
// calls on (before returning) with the target's observations so far: the
// poller polls the target again only after Observe returns.
type scriptSink struct {
	target string
	on     func(n int, o source.Observation)

	mu      sync.Mutex
	counts  map[string]int
	twice   int            // agents observed at least twice
	decoded map[string]int // observations with a Snapshot new to the agent
	shared  int            // observations with the agent's previous Snapshot
	failed  int
	last    map[string]*source.Snapshot // the agent's latest Snapshot
	mine    []source.Observation
	kinds   []string      // of mine: "decoded", "shared" or "failed"
	changed chan struct{} // signalled after each observation
}

func newScriptSink(target string, on func(int, source.Observation)) *scriptSink {
	return &scriptSink{target: target, on: on, counts: map[string]int{}, decoded: map[string]int{}, last: map[string]*source.Snapshot{}, changed: make(chan struct{}, 1)}
}

func (s *scriptSink) Observe(_ context.Context, o source.Observation) error {
	s.mu.Lock()
	s.counts[o.AgentID]++
	if s.counts[o.AgentID] == 2 {
		s.twice++
	}
	kind := "decoded"
	switch {
	case o.Class != source.ClassOK:
		s.failed++
		kind = "failed"
	case o.Snapshot == s.last[o.AgentID]:
		s.shared++
		kind = "shared"
	default:
		s.decoded[o.AgentID]++
	}
	if o.Snapshot != nil {
		s.last[o.AgentID] = o.Snapshot
	}
	var n int
	if o.AgentID == s.target {
		s.mine = append(s.mine, o)
		s.kinds = append(s.kinds, kind)
		n = len(s.mine)
	}
	s.mu.Unlock()
	if n > 0 && s.on != nil {
		s.on(n, o)
	}
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return nil
}

// wait waits until cond holds (under s.mu) or the deadline passes.
func (s *scriptSink) wait(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(d)
	for {
		s.mu.Lock()
		ok := cond()
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-s.changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestPollerUnchangedAtScale polls many agents against the simulator: every
// agent's first answer is decoded, the repeated ones are shared and counted
// in ccaas_bridge_polls_unchanged_total, and a presence changed between
// two polls of one agent is in the very next poll's Snapshot.
func TestPollerUnchangedAtScale(t *testing.T) {
	agents := 10_000
	if raceEnabled || testing.Short() {
		agents = 2_000 // the race detector slows every request several times
	}
	sim, url := serveSim(t, simulator.Options{Agents: agents, Seed: 11, StaticTokens: []string{simulator.DefaultToken}})
	ids := sim.AgentIDs()
	target := ids[len(ids)/2]
	if _, _, err := sim.SetPresence(target, simulator.PresenceAvailable); err != nil {
		t.Fatal(err)
	}
	var changeErr error
	var changeMu sync.Mutex
	sink := newScriptSink(target, func(n int, o source.Observation) {
		if n == 2 { // the target's second answer: change its presence before its third poll
			_, _, err := sim.SetPresence(target, simulator.PresenceBusy)
			changeMu.Lock()
			changeErr = err
			changeMu.Unlock()
		}
	})
	reg := prometheus.NewRegistry()
	metrics, err := source.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	client, err := source.NewClient(source.ClientOptions{OrgURL: url, Tokens: source.StaticToken(simulator.DefaultToken),
		Catalogue: source.NewCatalogue(nil), MaxConns: 16, Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	p, err := source.NewPoller(source.PollerOptions{Getter: client, Sink: sink, Interval: time.Second, MaxConcurrency: 16,
		Metrics: metrics, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	p.SetAgents(ids)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run: %v", err)
			}
		}
	}
	defer stop()

	start := time.Now()
	// Every agent answered twice, the target four times.
	sink.wait(t, 90*time.Second, "two polls of every agent", func() bool { return sink.twice == agents && len(sink.mine) >= 4 })
	stop()
	t.Logf("%d agents polled twice in %s", agents, time.Since(start).Round(time.Millisecond))
	changeMu.Lock()
	if changeErr != nil {
		t.Fatal(changeErr)
	}
	changeMu.Unlock()

	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.failed > 0 {
		t.Fatalf("%d polls failed", sink.failed)
	}
	// The target: decoded, shared, the change decoded on the next poll, shared.
	wantPresence := []string{simulator.PresenceAvailable, simulator.PresenceAvailable, simulator.PresenceBusy, simulator.PresenceBusy}
	for i, want := range wantPresence {
		o := sink.mine[i]
		if o.Snapshot.PresenceID != want {
			t.Errorf("target's poll %d: presence %s, want %s", i+1, o.Snapshot.PresenceID, want)
		}
		if shared, wantShared := sink.kinds[i] == "shared", i == 1 || i == 3; shared != wantShared {
			t.Errorf("target's poll %d: shared %v, want %v", i+1, shared, wantShared)
		}
	}
	// Every other agent: decoded once, every later answer shared.
	total := 0
	for id, n := range sink.counts {
		total += n
		want := 1
		if id == target {
			want = 2
		}
		if sink.decoded[id] != want {
			t.Errorf("agent %s: %d answers decoded of %d, want %d", id, sink.decoded[id], n, want)
		}
	}
	if want := total - agents - 1; sink.shared != want {
		t.Errorf("%d shared answers, want %d", sink.shared, want)
	}
	if got := testutil.ToFloat64(testutilCounter(t, reg, "ccaas_bridge_polls_unchanged_total", "")); got != float64(sink.shared) {
		t.Errorf("ccaas_bridge_polls_unchanged_total %v, want %d", got, sink.shared)
	}
	if got := testutil.ToFloat64(testutilCounter(t, reg, "ccaas_bridge_polls_total", "ok")); got != float64(total) {
		t.Errorf("ccaas_bridge_polls_total{result=ok} %v, want %d: an unchanged poll is a successful poll", got, total)
	}
}

// TestPollerForgetsAfterFailure: after a failed poll or a removal and
// re-addition, an agent's next answer is decoded even when its body is the
// one decoded last.
func TestPollerForgetsAfterFailure(t *testing.T) {
	sim, url := serveSim(t, simulator.Options{Agents: 3, Seed: 5, StaticTokens: []string{simulator.DefaultToken}})
	ids := sim.AgentIDs()
	target := ids[0]
	var p *source.Poller
	sink := newScriptSink(target, func(n int, o source.Observation) {
		switch n {
		case 2: // shared; the next answer fails once
			if err := sim.SetAgentFault(target, simulator.AgentFault{Status: 500, Count: 1}); err != nil {
				t.Error(err)
			}
		case 5: // shared; the target leaves and comes back
			p.SetAgents(ids[1:])
			p.SetAgents(ids)
		}
	})
	client, err := source.NewClient(source.ClientOptions{OrgURL: url, Tokens: source.StaticToken(simulator.DefaultToken)})
	if err != nil {
		t.Fatal(err)
	}
	p, err = source.NewPoller(source.PollerOptions{Getter: client, Sink: sink, Interval: 50 * time.Millisecond, BackoffInitial: 10 * time.Millisecond,
		MaxConcurrency: 4, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	p.SetAgents(ids)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	sink.wait(t, 30*time.Second, "seven answers of the target", func() bool { return len(sink.mine) >= 7 })
	cancel()
	<-done
	sink.mu.Lock()
	defer sink.mu.Unlock()
	// decoded, shared, failed, decoded, shared, decoded (re-added), shared
	want := []string{"decoded", "shared", "failed", "decoded", "shared", "decoded", "shared"}
	for i, w := range want {
		if got := sink.kinds[i]; got != w {
			t.Errorf("target's answer %d: %s, want %s", i+1, got, w)
		}
	}
}
