package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/streamcheck"
	"github.com/ccaas/presence-bridge/schemas"
)

// streamEvents reads the whole stream, message by message, decoding and
// validating each event; any message that fails is a test error.
func (h *harness) streamEvents(ctx context.Context) []event {
	h.t.Helper()
	return plainEvents(h.bridgeEvents(ctx, nil))
}

// streamCount is the number of messages in the stream, 0 before it exists.
func (h *harness) streamCount(ctx context.Context) uint64 {
	st, err := h.js.Stream(ctx, contract.Stream)
	if err != nil {
		return 0
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// checked is what streamcheck reads of the event.
func (ev event) checked() streamcheck.Event {
	return streamcheck.Event{ID: ev.ID, Agent: ev.Agent, Type: ev.Type, Sequence: ev.Sequence,
		Previous: canonical(ev.Data["previous"]), Current: canonical(ev.Data["current"])}
}

// checkSequences asserts that event IDs are unique and that every agent's
// events appear in the stream with sequences 1..n in order, and returns the
// events by agent.
func checkSequences(t *testing.T, events []event) map[string][]event {
	t.Helper()
	by, problems := streamcheck.Sequences(events, event.checked)
	for _, p := range problems {
		t.Error(p)
	}
	return by
}

// checkCollected reports every message the collector could not decode or
// validate, checks the sequences and chains of the events it holds, and
// returns them by agent.
func checkCollected(t *testing.T, c *collector) map[string][]event {
	t.Helper()
	events, errs := c.snapshot()
	for _, err := range errs {
		t.Error(err)
	}
	by := checkSequences(t, events)
	checkChained(t, by)
	return by
}

// checkChained asserts that every agent's changes follow on from each
// other: no event contradicts the one before it.
func checkChained(t *testing.T, by map[string][]event) {
	t.Helper()
	for _, events := range by {
		for _, p := range streamcheck.Chained(events, event.checked) {
			t.Error(p)
		}
	}
}

// canonical is v as compact JSON with sorted keys.
func canonical(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("unencodable %v", v)
	}
	return string(b)
}

// bucketStates reads every agent's value from the state bucket, each
// validated against schemas/agent-state.schema.json.
func (h *harness) bucketStates(ctx context.Context) (map[string]detector.AgentState, error) {
	kv, err := h.js.KeyValue(ctx, contract.StateBucket)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", contract.StateBucket, err)
	}
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return map[string]detector.AgentState{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list bucket keys: %w", err)
	}
	out := map[string]detector.AgentState{}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("get %s: %w", k, err)
		}
		if err := h.val.Validate(schemas.AgentState, e.Value()); err != nil {
			return nil, fmt.Errorf("bucket value of %s: %w", k, err)
		}
		var st detector.AgentState
		dec := json.NewDecoder(strings.NewReader(string(e.Value())))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&st); err != nil {
			return nil, fmt.Errorf("decode bucket value of %s: %w", k, err)
		}
		if st.AgentID != k {
			return nil, fmt.Errorf("bucket key %s holds agent %s", k, st.AgentID)
		}
		out[k] = st
	}
	return out, nil
}

// bucketMismatch compares the bucket with the simulator's current state of
// every agent and describes the first differences, or returns "" when they
// agree.
func (h *harness) bucketMismatch(ctx context.Context) string {
	states, err := h.bucketStates(ctx)
	if err != nil {
		return err.Error()
	}
	var diffs []string
	agents := h.sim.Agents()
	if len(states) != len(agents) {
		diffs = append(diffs, fmt.Sprintf("bucket has %d agents, simulator %d", len(states), len(agents)))
	}
	for _, a := range agents {
		st, ok := states[a.AgentID]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("agent %s missing from the bucket", a.AgentID))
			continue
		}
		if d := stateDiff(a, st); d != "" {
			diffs = append(diffs, fmt.Sprintf("agent %s: %s", a.AgentID, d))
		}
	}
	if len(diffs) > 5 {
		diffs = append(diffs[:5], fmt.Sprintf("and %d more", len(diffs)-5))
	}
	return strings.Join(diffs, "; ")
}

// stateDiff describes how the bridge's state st differs from the simulator's
// ground truth a.
func stateDiff(a simulator.AgentState, st detector.AgentState) string {
	var d []string
	cmp := func(what string, got, want any) {
		if fmt.Sprint(got) != fmt.Sprint(want) {
			d = append(d, fmt.Sprintf("%s %v, want %v", what, got, want))
		}
	}
	cmp("name", st.AgentName, a.AgentName)
	cmp("presence", st.Presence.ID, a.PresenceID)
	cmp("presence name", st.Presence.Name, a.PresenceName)
	cmp("base status", st.Presence.BaseStatus, simulator.BaseStatusName(a.BaseStatus))
	cmp("sessions", st.Sessions.ActiveBrowserSessions, a.ActiveBrowserSessions)
	cmp("login time", st.Sessions.LoginTime, a.Timestamp)
	cmp("allowed channels", st.Channels.Allowed, sorted(a.AllowedChannels))
	cmp("disabled channels", st.Channels.Disabled, sorted(a.DisabledChannels))
	cmp("stale", st.Stale, false)
	offline := a.ActiveBrowserSessions == 0 || simulator.BaseStatusName(a.BaseStatus) == "Offline"
	cmp("offline", st.Offline, offline)
	return strings.Join(d, ", ")
}

func sorted(s []string) []string {
	out := append([]string{}, s...)
	sort.Strings(out)
	return out
}

// checkBucketFollowsStream asserts that each agent's stored sequence is the
// sequence of its last event on the stream: everything published was
// committed, and nothing was committed that is not on the stream.
func checkBucketFollowsStream(t *testing.T, states map[string]detector.AgentState, by map[string][]event) {
	t.Helper()
	for agent, events := range by {
		st, ok := states[agent]
		last := events[len(events)-1].Sequence
		if !ok {
			t.Errorf("agent %s has %d events on the stream but no state in the bucket", agent, last)
			continue
		}
		if st.Sequence != last {
			t.Errorf("agent %s: bucket sequence %d, last stream sequence %d", agent, st.Sequence, last)
		}
	}
	for agent, st := range states {
		if _, ok := by[agent]; !ok {
			t.Errorf("agent %s has state sequence %d in the bucket but no event on the stream", agent, st.Sequence)
		}
	}
}

// checkBucket asserts that the state bucket follows the stream's events
// (by agent) and equals the simulator's state.
func (h *harness) checkBucket(ctx context.Context, by map[string][]event) {
	h.t.Helper()
	states, err := h.bucketStates(ctx)
	if err != nil {
		h.t.Errorf("state bucket: %v", err)
	} else {
		checkBucketFollowsStream(h.t, states, by)
	}
	if d := h.bucketMismatch(ctx); d != "" {
		h.t.Errorf("bucket differs from the simulator: %s", d)
	}
}

// countTypes counts events by type, for logs.
func countTypes(events []event) map[string]int {
	out := map[string]int{}
	for _, ev := range events {
		out[ev.Type]++
	}
	return out
}

// requestLog records when the simulator answered each agent's presence
// successfully; install it with simulator.Options.OnRequest.
type requestLog struct {
	mu    sync.Mutex
	times map[string][]time.Time
	last  time.Time
}

func newRequestLog() *requestLog { return &requestLog{times: map[string][]time.Time{}} }

func (l *requestLog) record(r simulator.Request) {
	if r.Endpoint != "CCaaS_GetPresence" || r.Status != http.StatusOK || r.Malformed != "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.times[r.AgentID] = append(l.times[r.AgentID], r.At)
	if r.At.After(l.last) {
		l.last = r.At
	}
}

// answeredSince reports whether any presence request arrived after t.
func (l *requestLog) answeredSince(t time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last.After(t)
}

// of returns the arrival times of an agent's successful requests.
func (l *requestLog) of(agent string) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.times[agent])
}

// presenceSpan is one stretch of an agent's ground-truth presence.
type presenceSpan struct {
	presence   string
	start, end time.Time // end is zero for the current presence
}

// presenceSpans returns every agent's ground-truth presence history as
// spans, consecutive repeats merged.
func (h *harness) presenceSpans() map[string][]presenceSpan {
	out := map[string][]presenceSpan{}
	for _, c := range h.sim.Changes() {
		spans := out[c.AgentID]
		if n := len(spans); n > 0 && spans[n-1].presence == c.State.PresenceID {
			continue
		}
		if n := len(spans); n > 0 {
			spans[n-1].end = c.At
		}
		out[c.AgentID] = append(spans, presenceSpan{presence: c.State.PresenceID, start: c.At})
	}
	return out
}

// streamPresence is one presence.changed of an agent as the stream has it.
type streamPresence struct {
	at       time.Time
	presence string
}

func presenceEvents(events []event) []streamPresence {
	var out []streamPresence
	for _, ev := range events {
		if ev.Type != detector.TypePresenceChanged {
			continue
		}
		cur, _ := ev.Data["current"].(map[string]any)
		id, _ := cur["id"].(string)
		out = append(out, streamPresence{at: ev.Time, presence: id})
	}
	return out
}

// isSubsequence reports whether the stream's presences appear, in order,
// among the ground truth's spans.
func isSubsequence(got []streamPresence, spans []presenceSpan) bool {
	i := 0
	for _, s := range spans {
		if i < len(got) && got[i].presence == s.presence {
			i++
		}
	}
	return i == len(got)
}

// shownDuring reports whether the stream showed presence p at some instant
// of [from, to]: either the presence in force at from, or one published
// within the range.
func shownDuring(got []streamPresence, p string, from, to time.Time) bool {
	current := ""
	for _, g := range got {
		if g.at.After(to) {
			break
		}
		if !g.at.After(from) {
			current = g.presence
			continue
		}
		if g.presence == p {
			return true
		}
	}
	return current == p
}

// uncommitted counts the agents whose last event on the stream is beyond
// the sequence stored in the bucket: published, not yet committed.
func (h *harness) uncommitted(ctx context.Context) int {
	h.t.Helper()
	states, err := h.bucketStates(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	last := map[string]uint64{}
	for _, ev := range h.streamEvents(ctx) {
		last[ev.Agent] = max(last[ev.Agent], ev.Sequence)
	}
	n := 0
	for agent, seq := range last {
		if seq > states[agent].Sequence {
			n++
		}
	}
	return n
}

// testInterval is the poll interval of these tests: the shortest the
// service-protection check accepts (two requests per poll, 6,000 per agent
// in five minutes, backoff jitter down to half an interval).
const testInterval = 200 * time.Millisecond

// raceExitNow is the GORACE setting that spares a race-enabled bridge
// binary the race detector's default one-second sleep at exit.
const raceExitNow = "atexit_sleep_ms=0"
