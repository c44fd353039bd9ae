package pipeline_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/pipeline"
	"github.com/ccaas/presence-bridge/internal/publish"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// TestJournalFollow reads an agent's history back the ways the pipeline
// needs it after a conflict: folded over a known position, rebuilt from the
// last event of each type when the position is unknown, with foreign
// messages on the agent's subjects skipped (and counted) but their stream
// sequences counted for the fence.
func TestJournalFollow(t *testing.T) {
	url := startServer(t)
	b := startBridge(t, url, 0, nil)
	t0 := time.Now()
	observe(t, b.pipe, snap{agentA, "Ada", available, "Available", "Available", 1, 0, t0}.ok())
	testwait.Until(t, 10*time.Second, "first sight recorded", func() bool {
		st, ok, err := b.store.Get(t.Context(), agentA)
		return err == nil && ok && st.Sequence == 3
	})
	base, _, err := b.store.Get(t.Context(), agentA)
	if err != nil {
		t.Fatal(err)
	}
	observe(t, b.pipe, snap{agentA, "Ada", busy, "Busy", "Busy", 2, 0, t0.Add(time.Second)}.ok())
	testwait.Until(t, 10*time.Second, "the change recorded", func() bool {
		st, ok, err := b.store.Get(t.Context(), agentA)
		return err == nil && ok && st.Sequence == 5
	})
	want, _, err := b.store.Get(t.Context(), agentA)
	if err != nil {
		t.Fatal(err)
	}
	// Foreign messages after the bridge's events: junk on the agent's
	// presence subject and another agent's event on its sessions subject.
	js := connect(t, url)
	var lastForeign uint64
	for _, m := range []*nats.Msg{
		{Subject: contract.Subject(contract.SubjectPrefix, agentA, detector.TypePresenceChanged), Data: []byte("not an event")},
		foreignEvent(t, agentA, agentB),
	} {
		ack, err := js.PublishMsg(t.Context(), m)
		if err != nil {
			t.Fatal(err)
		}
		lastForeign = ack.Sequence
	}

	m, err := pipeline.NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	j := pipeline.NewStreamJournal(pipeline.JournalOptions{JetStream: js, Stream: streamName, SubjectPrefix: contract.SubjectPrefix, Metrics: m})
	tests := []struct {
		name string
		base *detector.AgentState
	}{
		{"folded over a known position", &base},
		{"in step", func() *detector.AgentState { s := want; return &s }()},
		{"position unknown (a value without streamSequence)", func() *detector.AgentState { s := base; s.StreamSequence = 0; return &s }()},
		{"no base (value missing or unusable)", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := j.Follow(t.Context(), agentA, tt.base)
			if err != nil {
				t.Fatalf("Follow: %v", err)
			}
			if got == nil {
				t.Fatal("Follow = nil, want the agent's state")
			}
			if got.Sequence != want.Sequence || got.Presence != want.Presence || got.Sessions != want.Sessions {
				t.Errorf("state at sequence %d, presence %+v, sessions %+v; want %d, %+v, %+v",
					got.Sequence, got.Presence, got.Sessions, want.Sequence, want.Presence, want.Sessions)
			}
			if got.StreamSequence != lastForeign {
				t.Errorf("stream sequence %d, want %d (the last message on the agent's subjects, foreign or not)", got.StreamSequence, lastForeign)
			}
		})
	}
	// Another writer going on while a rebuild reads: the state is the
	// history up to the position Follow read (here first sight, before the
	// change), never a later event of some type under that position.
	early, err := j.RebuildUpTo(t.Context(), agentA, base.StreamSequence)
	if err != nil {
		t.Fatalf("rebuild up to stream sequence %d: %v", base.StreamSequence, err)
	}
	if early.Sequence != base.Sequence || early.Presence != base.Presence || early.Sessions != base.Sessions {
		t.Errorf("rebuilt up to stream sequence %d: sequence %d, presence %+v, sessions %+v; want %d, %+v, %+v",
			base.StreamSequence, early.Sequence, early.Presence, early.Sessions, base.Sequence, base.Presence, base.Sessions)
	}
	if got := testutil.ToFloat64(m.Foreign.WithLabelValues("undecodable")); got == 0 {
		t.Error("the junk message was not counted")
	}
	if got := testutil.ToFloat64(m.Foreign.WithLabelValues("other_agent")); got == 0 {
		t.Error("the other agent's event was not counted")
	}
	if got, err := j.Follow(t.Context(), "0a6c4f1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b", nil); err != nil || got != nil {
		t.Errorf("Follow of an agent without events = %+v, %v; want nil", got, err)
	}
}

// foreignEvent is a well-formed event of agent other, published on agent's
// sessions subject.
func foreignEvent(t *testing.T, agent, other string) *nats.Msg {
	t.Helper()
	enc, err := publish.NewEncoder(publish.EncoderOptions{Source: "https://contoso.crm.dynamics.com", BridgeVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := enc.Encode(detector.Event{
		ID: detector.EventID(other, 1), Type: detector.TypeSessionsChanged, AgentID: other, AgentName: "Other", Sequence: 1,
		Time: time.Now(), Data: detector.SessionsChangedData{AgentID: other, Change: detector.SessionsInitial},
	})
	if err != nil {
		t.Fatal(err)
	}
	msg.Subject = contract.Subject(contract.SubjectPrefix, agent, detector.TypeSessionsChanged)
	return msg
}
