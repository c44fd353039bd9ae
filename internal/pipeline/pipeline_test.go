package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/pipeline"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

const (
	agentA = "394382b6-a4d4-ee11-904c-00224808a166"
	agentB = "cc05cf62-6242-ee11-be6e-6045bdd7ac2c"
)

// TestAlertsStaleAndResumed drives two agents through the pipeline on a real
// JetStream server: agent A logs out and back in (agent.offline,
// agent.unattended, agent.online); polling agent B fails past the stale
// period (presence.stale) and then succeeds (presence.resumed first). A
// consumer then reads the stream: sequences 1..n, every event valid against
// its schema, and the bucket holds each agent's last state.
func TestAlertsStaleAndResumed(t *testing.T) {
	url := startServer(t)
	now := time.Now()
	var clock atomic.Int64 // the stale loop's clock, moved on by the test
	clock.Store(now.UnixNano())
	b := startBridge(t, url, time.Minute, func() time.Time { return time.Unix(0, clock.Load()) })

	steps := []struct {
		name  string
		obs   source.Observation
		want  []string // events the step publishes
		stale float64  // ccaas_bridge_stale_agents after it
	}{
		{"A first sight", snap{agentA, "Ada", available, "Available", "Available", 1, 0, now}.ok(),
			[]string{"presence.changed", "sessions.changed", "channels.changed"}, 0},
		{"A busy", snap{agentA, "Ada", busy, "Busy", "Busy", 1, 0, now.Add(time.Second)}.ok(),
			[]string{"presence.changed"}, 0},
		{"A closes every tab while Busy", snap{agentA, "Ada", busy, "Busy", "Busy", 0, 0, now.Add(2 * time.Second)}.ok(),
			[]string{"sessions.changed", "agent.offline", "agent.unattended"}, 0},
		{"A logs in again", snap{agentA, "Ada", available, "Available", "Available", 1, 1700000900, now.Add(3 * time.Second)}.ok(),
			[]string{"presence.changed", "sessions.changed", "agent.online"}, 0},
		{"A unchanged", snap{agentA, "Ada", available, "Available", "Available", 1, 1700000900, now.Add(4 * time.Second)}.ok(), nil, 0},
		{"B first sight", snap{agentB, "Bo", away, "Away", "Away", 1, 0, now}.ok(),
			[]string{"presence.changed", "sessions.changed", "channels.changed"}, 0},
		// A minute and 3 s later B is stale, A (last success at 4 s) is not.
		{"B poll fails", failed(agentB, source.ClassServer, now.Add(time.Minute+3*time.Second)), []string{"presence.stale"}, 1},
		{"B poll succeeds with a new presence", snap{agentB, "Bo", offline, "Offline", "Offline", 1, 0, now.Add(time.Minute + 5*time.Second)}.ok(),
			[]string{"presence.resumed", "presence.changed", "agent.offline"}, 0},
	}
	for _, s := range steps {
		observe(t, b.pipe, s.obs)
		if s.obs.Class != source.ClassOK {
			clock.Store(s.obs.At.UnixNano())
		}
		var got []string
		for range s.want {
			select {
			case e := <-b.published:
				got = append(got, e.Type)
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: published %v, want %v", s.name, got, s.want)
			}
		}
		if !slices.Equal(got, s.want) {
			t.Fatalf("%s: published %v, want %v", s.name, got, s.want)
		}
		testwait.Until(t, 10*time.Second, fmt.Sprintf("%s: %v stale agents", s.name, s.stale), func() bool {
			return testutil.ToFloat64(b.metrics.StaleAgents) == s.stale
		})
		if s.want == nil {
			continue
		}
		agent := s.obs.AgentID
		testwait.Until(t, 10*time.Second, s.name+" committed", func() bool {
			st, ok, err := b.store.Get(t.Context(), agent)
			cur, _ := b.det.State(agent)
			return err == nil && ok && st.Sequence == cur.Sequence
		})
	}
	b.stop(t)

	by := checkSequences(t, readStream(t, url))
	for _, agent := range []string{agentA, agentB} {
		var want []string
		for _, s := range steps {
			if s.obs.AgentID == agent {
				want = append(want, s.want...)
			}
		}
		if got := typesOf(by[agent]); !slices.Equal(got, want) {
			t.Errorf("agent %s stream %v, want %v", agent, got, want)
		}
		st, ok, err := b.store.Get(t.Context(), agent)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		if st.Sequence != uint64(len(by[agent])) || st.Stale {
			t.Errorf("agent %s bucket state %+v after %d events", agent, st, len(by[agent]))
		}
	}
	var stale detector.PresenceStaleData
	for _, e := range by[agentB] {
		if e.typ == detector.TypePresenceStale {
			if err := json.Unmarshal(e.data, &stale); err != nil {
				t.Fatal(err)
			}
		}
	}
	if stale.ErrorClass != string(source.ClassServer) || stale.LastKnown.Presence.ID != away {
		t.Errorf("presence.stale data %+v", stale)
	}
	st := b.pipe.Stats()
	if st.Observations != uint64(len(steps)) || st.Errors != 1 || st.Events[detector.TypeAgentOffline] != 2 || st.Commits == 0 || st.Conflicts != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestCrashBetweenPublishAndCommit: a bridge that published a change but
// died before recording it leaves the bucket behind the stream. Its
// successor, taking the agent, finds the stream ahead of the recorded
// position, adopts the orphan change and diffs its observation against it,
// rather than storing other content under the orphan's IDs (a first change
// made before that check is fenced on the recorded position and finds the
// history moved on: TestTwoBridgesSameAgents). Whether the agent stayed as the orphan says, changed again
// or went back to where the bucket left it, the stream holds each
// transition once, each following on from the one before, ends where the
// agent is, and the bucket follows the stream.
func TestCrashBetweenPublishAndCommit(t *testing.T) {
	awaySnap := snap{agentA, "Ada", away, "Away", "Away", 1, 0, time.Time{}}
	tests := []struct {
		name     string
		crashed  snap     // what the crashed bridge observed and published
		now      snap     // what the successor observes
		want     []string // the agent's event types on the stream
		presence string   // the final presence
	}{
		{"agent as the orphan says", awaySnap, snap{agentA, "Ada", away, "Away", "Away", 1, 0, time.Time{}},
			[]string{"presence.changed", "sessions.changed", "channels.changed", "presence.changed"}, away},
		// Nothing differs from the recorded state: the catch-up of the
		// agent taken finds the stream ahead of it.
		{"agent back where the bucket left it", awaySnap, snap{agentA, "Ada", available, "Available", "Available", 1, 0, time.Time{}},
			[]string{"presence.changed", "sessions.changed", "channels.changed", "presence.changed", "presence.changed"}, available},
		{"agent changed again", awaySnap, snap{agentA, "Ada", busy, "Busy", "Busy", 1, 0, time.Time{}},
			[]string{"presence.changed", "sessions.changed", "channels.changed", "presence.changed", "presence.changed"}, busy},
		{"agent logged out since", awaySnap, snap{agentA, "Ada", offline, "Offline", "Offline", 0, 0, time.Time{}},
			[]string{"presence.changed", "sessions.changed", "channels.changed", "presence.changed", "presence.changed", "sessions.changed", "agent.offline"}, offline},
		{"orphans of a logout, agent back", snap{agentA, "Ada", offline, "Offline", "Offline", 0, 0, time.Time{}},
			snap{agentA, "Ada", available, "Available", "Available", 1, 1700000900, time.Time{}},
			[]string{"presence.changed", "sessions.changed", "channels.changed", "presence.changed", "sessions.changed", "agent.offline",
				"presence.changed", "sessions.changed", "agent.online"}, available},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := startServer(t)
			now := time.Now()
			first := startBridge(t, url, 0, nil)
			observe(t, first.pipe, snap{agentA, "Ada", available, "Available", "Available", 1, 0, now}.ok())
			first.stop(t)

			tt.crashed.at = now.Add(time.Second)
			publishWithoutRecording(t, url, tt.crashed.ok())

			next := startBridge(t, url, 0, nil)
			next.pipe.SetAgents([]string{agentA}) // as the bridge takes its agents
			testwait.Until(t, time.Minute, "the agent taken found behind the stream", func() bool {
				return testutil.ToFloat64(next.metrics.CatchUps.WithLabelValues("behind")) == 1
			})
			tt.now.at = now.Add(2 * time.Second)
			observe(t, next.pipe, tt.now.ok())
			next.stop(t)

			events := readStream(t, url)
			by := checkSequences(t, events)
			checkFollowOn(t, events)
			if got := typesOf(by[agentA]); !slices.Equal(got, tt.want) {
				t.Fatalf("stream %v, want %v", got, tt.want)
			}
			st, ok, err := next.store.Get(t.Context(), agentA)
			if err != nil || !ok || st.Sequence != uint64(len(tt.want)) || st.Presence.ID != tt.presence {
				t.Fatalf("bucket %+v, %v, %v; want sequence %d, presence %s", st, ok, err, len(tt.want), tt.presence)
			}
		})
	}
}

// TestTwoBridgesSameAgents: two bridges poll the same agents at the same
// time; the stream holds every agent's sequences once, without gap, and the
// bucket ends at each agent's final state and last sequence.
func TestTwoBridgesSameAgents(t *testing.T) {
	url := startServer(t)
	agents := []string{agentA, agentB, "0a6c4f1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b"}
	script := []struct {
		presence, name string
		sessions       int
	}{
		{available, "Available", 1}, {busy, "Busy", 1}, {busy, "Busy", 2}, {away, "Away", 2},
		{away, "Away", 0}, {offline, "Offline", 0}, {available, "Available", 1}, {busy, "Busy", 0},
	}
	bridges := []*bridge{startBridge(t, url, 0, nil), startBridge(t, url, 0, nil)}
	t0 := time.Now()
	var wg sync.WaitGroup
	for bi, br := range bridges {
		for ai, agent := range agents {
			wg.Go(func() {
				for round := range 3 {
					for i, s := range script {
						at := t0.Add(time.Duration(round*len(script)+i)*time.Second + time.Duration(bi)*time.Millisecond)
						o := snap{agent, "Agent", s.presence, s.name, s.name, s.sessions, int64(1700000000 + ai), at}.ok()
						if err := br.pipe.Observe(context.Background(), o); err != nil {
							t.Error(err)
							return
						}
					}
				}
			})
		}
	}
	wg.Wait()
	// One more poll of each agent by each bridge, as the next interval
	// brings: a bridge that lost a race adopts what the stream holds.
	final := script[len(script)-1]
	for _, br := range bridges {
		for ai, agent := range agents {
			observe(t, br.pipe, snap{agent, "Agent", final.presence, final.name, final.name, final.sessions, int64(1700000000 + ai), time.Now()}.ok())
		}
	}
	for _, br := range bridges {
		br.stop(t)
	}
	events := readStream(t, url)
	by := checkSequences(t, events)
	checkFollowOn(t, events)
	last := script[len(script)-1]
	for _, agent := range agents {
		st, ok, err := bridges[0].store.Get(t.Context(), agent)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		if st.Sequence != uint64(len(by[agent])) || st.Presence.ID != last.presence || st.Sessions.ActiveBrowserSessions != last.sessions {
			t.Errorf("agent %s: bucket %+v, %d events in the stream", agent, st, len(by[agent]))
		}
	}
	conflicts := bridges[0].pipe.Stats().Conflicts + bridges[1].pipe.Stats().Conflicts
	t.Logf("events %d, conflicts resolved %d", len(by[agentA])+len(by[agentB]), conflicts)
}

// TestSnapshots: with a snapshot interval every polled agent gets
// presence.snapshot events carrying its full state.
func TestSnapshots(t *testing.T) {
	url := startServer(t)
	nc, js, store := openStore(t, url)
	det, err := detector.New(detector.Options{})
	if err != nil {
		t.Fatal(err)
	}
	published := make(chan detector.Event, 100)
	p, err := pipeline.New(pipeline.Options{
		Detector: det, Publisher: newPublisher(t, nc).Publisher, SnapshotInterval: 20 * time.Millisecond, View: store,
		Journal:     pipeline.NewStreamJournal(pipeline.JournalOptions{JetStream: js, Stream: streamName, SubjectPrefix: contract.SubjectPrefix}),
		OnPublished: func(e detector.Event) { published <- e },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	observe(t, p, snap{agentA, "Ada", busy, "Busy", "Busy", 2, 0, time.Now()}.ok())
	snapshots := 0
	for snapshots < 2 {
		select {
		case e := <-published:
			if e.Type == detector.TypePresenceSnapshot {
				snapshots++
				if d := e.Data.(detector.PresenceSnapshotData); d.State.Sequence != e.Sequence || d.State.Presence.ID != busy {
					t.Fatalf("snapshot data %+v", d)
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no snapshot published")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := p.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	by := checkSequences(t, readStream(t, url))
	if got := typesOf(by[agentA]); len(got) < 5 || got[3] != detector.TypePresenceSnapshot {
		t.Fatalf("stream %v", got)
	}
}

// TestAgentsLeavingTheSetGetNoEvents: once an agent leaves the set this
// process polls (its shard's lease moved), no stale or other event is
// produced for it, while the agents it still polls go on.
func TestAgentsLeavingTheSetGetNoEvents(t *testing.T) {
	url := startServer(t)
	now := time.Now()
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	b := startBridge(t, url, time.Minute, func() time.Time { return time.Unix(0, clock.Load()) })
	b.pipe.SetAgents([]string{agentA, agentB})
	for _, o := range []source.Observation{
		snap{agentA, "Ada", available, "Available", "Available", 1, 0, now}.ok(),
		snap{agentB, "Bo", away, "Away", "Away", 1, 0, now}.ok(),
	} {
		observe(t, b.pipe, o)
	}
	for range 6 {
		select {
		case <-b.published:
		case <-time.After(10 * time.Second):
			t.Fatal("first sight of both agents not published")
		}
	}
	b.pipe.SetAgents([]string{strings.ToUpper(agentA)}) // B moved to another replica
	// Polls in flight when B left still report; B's is dropped.
	late := now.Add(2 * time.Minute)
	observe(t, b.pipe, failed(agentA, source.ClassServer, late))
	observe(t, b.pipe, snap{agentB, "Bo", busy, "Busy", "Busy", 1, 0, late}.ok())
	clock.Store(late.UnixNano())
	select {
	case e := <-b.published:
		if e.AgentID != agentA || e.Type != detector.TypePresenceStale {
			t.Fatalf("published %s of %s, want presence.stale of A only", e.Type, e.AgentID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("A, still polled, did not go stale")
	}
	b.stop(t)
	by := checkSequences(t, readStream(t, url))
	if got := typesOf(by[agentB]); len(got) != 3 {
		t.Fatalf("agent B's events %v: only its first sight, nothing after it left the set", got)
	}
}

// failingView is the real state bucket with a fault: the first fail writes
// of each agent fail as a write to an unreachable NATS would.
type failingView struct {
	pipeline.View
	mu     sync.Mutex
	fail   int
	failed map[string]int
}

func (v *failingView) Record(ctx context.Context, st detector.AgentState) error {
	v.mu.Lock()
	if v.failed[st.AgentID] < v.fail {
		v.failed[st.AgentID]++
		v.mu.Unlock()
		return errors.New("nats: timeout")
	}
	v.mu.Unlock()
	return v.View.Record(ctx, st)
}

// RecordAsync fails as Record does, or passes the write on.
func (v *failingView) RecordAsync(st detector.AgentState, done func(error)) {
	v.mu.Lock()
	if v.failed[st.AgentID] < v.fail {
		v.failed[st.AgentID]++
		v.mu.Unlock()
		go done(errors.New("nats: timeout"))
		return
	}
	v.mu.Unlock()
	v.View.RecordAsync(st, done)
}

// TestViewCatchesUpAfterFailedWrites: the state writes after an agent's
// events were stored fail (twice, then succeed), and the agent does not
// change again; the bucket still ends holding the agent's state at its last
// event, and nothing is published twice.
func TestViewCatchesUpAfterFailedWrites(t *testing.T) {
	url := startServer(t)
	view := &failingView{fail: 2, failed: map[string]int{}}
	b := startBridgeWrapped(t, url, 0, nil, wrappers{view: func(v pipeline.View) pipeline.View { view.View = v; return view }})
	now := time.Now()
	observe(t, b.pipe, snap{agentA, "Ada", available, "Available", "Available", 1, 0, now}.ok())
	observe(t, b.pipe, snap{agentB, "Bo", busy, "Busy", "Busy", 1, 0, now}.ok())

	testwait.Until(t, time.Minute, "both agents' states recorded after two failed writes each", func() bool {
		for _, id := range []string{agentA, agentB} {
			st, ok, err := b.store.Get(t.Context(), id)
			if err != nil || !ok || st.Sequence != 3 || st.StreamSequence == 0 {
				return false
			}
		}
		return true
	})
	view.mu.Lock()
	failed := view.failed[agentA] + view.failed[agentB]
	view.mu.Unlock()
	if failed != 4 {
		t.Errorf("%d writes failed, want 4: the fault did not happen as planned", failed)
	}
	b.stop(t)
	events := readStream(t, url)
	by := checkSequences(t, events)
	if len(by[agentA]) != 3 || len(by[agentB]) != 3 {
		t.Errorf("stream holds %d and %d events of the agents, want 3 each", len(by[agentA]), len(by[agentB]))
	}
}

// TestStaleCheckFor checks the default stale check's period: a twentieth
// of the stale threshold, between MinStaleCheck and MaxStaleCheck.
func TestStaleCheckFor(t *testing.T) {
	for _, tc := range []struct {
		staleAfter, want time.Duration
	}{
		{0, pipeline.MinStaleCheck},
		{2 * time.Second, pipeline.MinStaleCheck},
		{40 * time.Second, 2 * time.Second},
		{150 * time.Second, pipeline.MaxStaleCheck},
		{time.Hour, pipeline.MaxStaleCheck},
	} {
		if got := pipeline.StaleCheckFor(tc.staleAfter); got != tc.want {
			t.Errorf("StaleCheckFor(%s) = %s, want %s", tc.staleAfter, got, tc.want)
		}
	}
}

// publishWithoutRecording is a bridge killed between publishing and
// recording: it restores the recorded states, publishes the change o makes
// and records nothing.
func publishWithoutRecording(t *testing.T, url string, o source.Observation) {
	t.Helper()
	crashed := startBridge(t, url, 0, nil)
	c := crashed.det.Observe(o)
	if c == nil {
		t.Fatal("no change")
	}
	res := make(chan error, 1)
	if err := newPublisher(t, connectConn(t, url)).Enqueue(t.Context(), c.AfterStream, c.Events, func(_ uint64, err error) { res <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatal(err)
	}
}

// failingJournal fails the first fail reads of agents' last messages.
type failingJournal struct {
	pipeline.Journal
	mu           sync.Mutex
	fail, failed int
}

func (j *failingJournal) Last(ctx context.Context, agentID string) (uint64, error) {
	j.mu.Lock()
	if j.failed < j.fail {
		j.failed++
		j.mu.Unlock()
		return 0, errors.New("nats: timeout")
	}
	j.mu.Unlock()
	return j.Journal.Last(ctx, agentID)
}

// TestCatchUpRetriesUntilTheStreamAnswers: a bridge taking an agent whose
// recorded state is behind the stream cannot read the stream at first (two
// failed reads); it retries, adopts the history, and the agent's first poll,
// back where the bucket left it, publishes the way back.
func TestCatchUpRetriesUntilTheStreamAnswers(t *testing.T) {
	url := startServer(t)
	now := time.Now()
	first := startBridge(t, url, 0, nil)
	observe(t, first.pipe, snap{agentA, "Ada", available, "Available", "Available", 1, 0, now}.ok())
	first.stop(t)
	publishWithoutRecording(t, url, snap{agentA, "Ada", away, "Away", "Away", 1, 0, now.Add(time.Second)}.ok())

	journal := &failingJournal{fail: 2}
	next := startBridgeWrapped(t, url, 0, nil, wrappers{journal: func(j pipeline.Journal) pipeline.Journal { journal.Journal = j; return journal }})
	next.pipe.SetAgents([]string{agentA})
	testwait.Until(t, time.Minute, "the orphan Away adopted and recorded", func() bool {
		st, ok, err := next.store.Get(t.Context(), agentA)
		return err == nil && ok && st.Sequence == 4 && st.Presence.ID == away
	})
	if e, b := testutil.ToFloat64(next.metrics.CatchUps.WithLabelValues("error")), testutil.ToFloat64(next.metrics.CatchUps.WithLabelValues("behind")); e != 2 || b != 1 {
		t.Errorf("catch-up checks: %v failed, %v behind; want 2 and 1", e, b)
	}
	observe(t, next.pipe, snap{agentA, "Ada", available, "Available", "Available", 1, 0, now.Add(2 * time.Second)}.ok())
	next.stop(t)

	events := readStream(t, url)
	by := checkSequences(t, events)
	checkFollowOn(t, events)
	if got, want := typesOf(by[agentA]), []string{"presence.changed", "sessions.changed", "channels.changed", "presence.changed", "presence.changed"}; !slices.Equal(got, want) {
		t.Fatalf("stream %v, want %v", got, want)
	}
}
