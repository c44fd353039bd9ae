package detector_test

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/source"
	"github.com/ccaas/presence-bridge/schemas"
)

const (
	agentA    = "394382b6-a4d4-ee11-904c-00224808a166"
	available = "f523f628-c07a-e811-8162-000d3aa11f50"
	busy      = "efdeb843-c07a-e811-8162-000d3aa11f50"
	dnd       = "08971864-c07a-e811-8162-000d3aa11f50"
	away      = "3dacae76-c07a-e811-8162-000d3aa11f50"
	offline   = "70139190-c07a-e811-8162-000d3aa11f50"
	meeting   = "4c0e2b1a-7f3d-ef11-8409-6045bd0a1b01"
)

// presences the generator draws from: out-of-box ones, a custom one, and
// ones the catalogue does not know (empty base status).
var presences = [...]detector.Presence{
	{ID: available, Name: "Available", BaseStatus: "Available"},
	{ID: busy, Name: "Busy", BaseStatus: "Busy"},
	{ID: dnd, Name: "Busy - DND", BaseStatus: "Busy - DND"},
	{ID: away, Name: "Away", BaseStatus: "Away"},
	{ID: offline, Name: "Offline", BaseStatus: "Offline"},
	{ID: meeting, Name: "In a meeting", BaseStatus: "Away"},
	{ID: offline, Name: "OFFLINE", BaseStatus: ""},
	{ID: available, Name: "available", BaseStatus: ""},
	{ID: meeting, Name: "In a meeting", BaseStatus: ""},
}

var channelPool = [...]string{"voice", "chat", "sms", "email", "teams"}

// gen draws test values from a byte string (the fuzzer's input); it yields
// zeros when the input runs out.
type gen struct{ b []byte }

func (g *gen) next() int {
	if len(g.b) == 0 {
		return 0
	}
	v := int(g.b[0])
	g.b = g.b[1:]
	return v
}

func (g *gen) channels() []string {
	n := g.next() % 5
	var out []string
	for range n {
		out = append(out, channelPool[g.next()%len(channelPool)]) // may repeat, any order
	}
	return out
}

func (g *gen) snapshot(at time.Time) source.Snapshot {
	p := presences[g.next()%len(presences)]
	return source.Snapshot{
		AgentID:               agentA,
		AgentName:             []string{"Ada", "Ada Lovelace"}[g.next()%2],
		PresenceID:            p.ID,
		PresenceName:          p.Name,
		BaseStatus:            p.BaseStatus,
		ActiveBrowserSessions: g.next() % 4,
		LoginTime:             1700000000 + int64(g.next()%3),
		AllowedChannels:       g.channels(),
		DisabledChannels:      g.channels(),
		ObservedAt:            at,
	}
}

// previous builds a random previous state (or nil) by running observations,
// stale marks and snapshots through Diff, Stale and Snapshot.
func (g *gen) previous(t0 time.Time) *detector.AgentState {
	var prev *detector.AgentState
	at := t0
	for range g.next() % 4 {
		at = at.Add(time.Duration(1+g.next()) * time.Second)
		switch g.next() % 5 {
		case 0:
			if prev != nil {
				s, _ := detector.Stale(*prev, at, at.Add(-time.Minute), "server_error", time.Minute)
				prev = &s
			}
		case 1:
			if prev != nil {
				s, _ := detector.Snapshot(*prev, at)
				prev = &s
			}
		default:
			s, _ := detector.Diff(prev, g.snapshot(at))
			prev = &s
		}
	}
	return prev
}

// checkDiff asserts the properties of one Diff: applying its events to prev
// gives next, sequences and IDs follow prev, presence.resumed comes first
// when prev was stale, every event's data and the state validate against
// their schemas, and observing the same snapshot again emits nothing.
func checkDiff(t *testing.T, v *schemas.Validator, prev *detector.AgentState, s source.Snapshot) []detector.Event {
	t.Helper()
	var before *detector.AgentState
	if prev != nil {
		c := prev.Clone()
		before = &c
	}
	next, events := detector.Diff(prev, s)
	if !reflect.DeepEqual(prev, before) {
		t.Fatalf("Diff changed its input: %+v, was %+v", prev, before)
	}
	state := prev
	var seq0 uint64
	if prev != nil {
		seq0 = prev.Sequence
	}
	for i, e := range events {
		if e.Sequence != seq0+uint64(i)+1 || e.ID != detector.EventID(agentA, e.Sequence) || e.AgentID != agentA || e.AgentName != s.AgentName {
			t.Fatalf("event %d: sequence %d id %s agent %s/%s after sequence %d", i, e.Sequence, e.ID, e.AgentID, e.AgentName, seq0)
		}
		if !e.Time.Equal(s.ObservedAt) {
			t.Fatalf("event %d time %v, observed at %v", i, e.Time, s.ObservedAt)
		}
		validateEvent(t, v, e)
		got, err := detector.Apply(state, e)
		if err != nil {
			t.Fatal(err)
		}
		state = &got
	}
	if prev != nil && prev.Stale && (len(events) == 0 || events[0].Type != detector.TypePresenceResumed) {
		t.Fatalf("a stale agent's first events %v lack a leading presence.resumed", types(events))
	}
	if len(events) == 0 {
		if prev == nil || !reflect.DeepEqual(next, *prev) {
			t.Fatalf("no events, but the state changed:\n%+v\n%+v", prev, next)
		}
		return nil
	}
	if !reflect.DeepEqual(*state, next) {
		t.Fatalf("applying %v to\n%+v\ngives\n%+v\nwant\n%+v", types(events), prev, *state, next)
	}
	b, err := json.Marshal(next)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Validate(schemas.AgentState, b); err != nil {
		t.Fatalf("state %s: %v", b, err)
	}
	var decoded detector.AgentState
	if err := json.Unmarshal(b, &decoded); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(decoded, next) {
		t.Fatalf("state does not survive JSON:\n%+v\n%+v", decoded, next)
	}
	s.ObservedAt = s.ObservedAt.Add(time.Second)
	if _, again := detector.Diff(&next, s); len(again) != 0 {
		t.Fatalf("observing the same snapshot again emits %v", types(again))
	}
	return events
}

func validateEvent(t *testing.T, v *schemas.Validator, e detector.Event) {
	t.Helper()
	b, err := json.Marshal(e.Data)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Validate(e.Type, b); err != nil {
		t.Fatalf("%s data %s: %v", e.Type, b, err)
	}
}

func types(events []detector.Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.Type)
	}
	return out
}

func validator(t testing.TB) *schemas.Validator {
	t.Helper()
	v, err := schemas.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// FuzzDiff: for any previous state and snapshot, applying the emitted events
// to the old state gives the new one.
func FuzzDiff(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3, 0, 1, 2, 0, 1, 0, 4, 1, 2, 3, 9, 1})
	f.Add([]byte{2, 5, 0, 0, 3, 0, 2, 7, 1, 1, 0, 0, 0, 1, 0, 2, 0})
	v := validator(f)
	t0 := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, b []byte) {
		g := &gen{b: b}
		prev := g.previous(t0)
		checkDiff(t, v, prev, g.snapshot(t0.Add(time.Hour)))
	})
}

// TestDiffProperty runs the fuzz property over many pseudo-random inputs
// and checks that every event type the diff can emit was seen.
func TestDiffProperty(t *testing.T) {
	v := validator(t)
	r := rand.New(rand.NewPCG(1, 2))
	t0 := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
	seen := map[string]bool{}
	for range 3000 {
		b := make([]byte, 64)
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		g := &gen{b: b}
		prev := g.previous(t0)
		for _, e := range checkDiff(t, v, prev, g.snapshot(t0.Add(time.Hour))) {
			seen[e.Type] = true
		}
	}
	for _, typ := range detector.Types() {
		if typ != detector.TypePresenceStale && typ != detector.TypePresenceSnapshot && !seen[typ] {
			t.Errorf("the property never exercised %s", typ)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
