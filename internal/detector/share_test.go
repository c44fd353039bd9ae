package detector

import (
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/ccaas/presence-bridge/internal/source"
)

func sameString(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }

// The Detector holds one copy of a confirmed state as both its base and
// its latest state, and agents with equal channels share the lists; a
// later change, its confirmation or its abandonment never alters what was
// held before.
func TestHeldStatesShared(t *testing.T) {
	const agentA, agentB = "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "3f2504e0-4f89-11d3-9a0c-0305e82c3302"
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	snap := func(id, presence string, at time.Time) *source.Snapshot {
		return &source.Snapshot{
			AgentID: id, AgentName: "Agent " + id[len(id)-1:], PresenceID: strings.Clone(presence), PresenceName: "P " + presence[:4], BaseStatus: "Available",
			ActiveBrowserSessions: 1, LoginTime: 1_796_000_000,
			AllowedChannels: []string{strings.Clone("voice"), strings.Clone("chat")}, DisabledChannels: []string{strings.Clone("sms")},
			ObservedAt: at,
		}
	}
	const available, busy = "f523f628-c07a-e811-8162-000d3aa11f50", "efdeb843-c07a-e811-8162-000d3aa11f50"
	d, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	var stream uint64
	confirm := func(c *Change) AgentState {
		t.Helper()
		if c == nil {
			t.Fatal("no change")
		}
		stream += uint64(len(c.Events))
		return d.Confirm(c, stream)
	}
	confirm(d.Observe(source.Observation{AgentID: agentA, At: at, Class: source.ClassOK, Snapshot: snap(agentA, available, at)}))
	confirm(d.Observe(source.Observation{AgentID: agentB, At: at, Class: source.ClassOK, Snapshot: snap(agentB, available, at)}))
	a, b := d.known(agentA), d.known(agentB)
	if a.state != a.base || b.state != b.base {
		t.Fatal("a confirmed state with nothing after it is held twice")
	}
	if unsafe.SliceData(a.state.Channels.Allowed) != unsafe.SliceData(b.state.Channels.Allowed) || !sameString(a.state.Presence.ID, b.state.Presence.ID) {
		t.Error("equal channels or presences of two agents are not shared")
	}
	if !slices.Equal(a.state.Channels.Allowed, []string{"chat", "voice"}) {
		t.Errorf("allowed channels %q, want the sorted set", a.state.Channels.Allowed)
	}

	// A change: the base stays, the latest state moves on.
	at2 := at.Add(10 * time.Second)
	c := d.Observe(source.Observation{AgentID: agentA, At: at2, Class: source.ClassOK, Snapshot: snap(agentA, busy, at2)})
	if c == nil {
		t.Fatal("no change for a new presence")
	}
	if base := d.Base(agentA); base == nil || base.Presence.ID != available || base.Sequence != 3 || base.StreamSequence != 3 {
		t.Fatalf("base after a change: %+v", base)
	}
	if st, _ := d.State(agentA); st.Presence.ID != busy || st.Sequence != 4 || st.Channels.Allowed[0] != "chat" {
		t.Fatalf("latest state after a change: %+v", st)
	}

	// Abandoned: back to the base.
	if !d.Abandon(c) {
		t.Fatal("Abandon did nothing")
	}
	if st, _ := d.State(agentA); st.Presence.ID != available || st.Sequence != 3 {
		t.Fatalf("latest state after Abandon: %+v", st)
	}

	// Produced again and confirmed: one copy again, at the new position.
	c = d.Observe(source.Observation{AgentID: agentA, At: at2.Add(time.Second), Class: source.ClassOK, Snapshot: snap(agentA, busy, at2.Add(time.Second))})
	st := confirm(c)
	if a.state != a.base || a.state.Presence.ID != busy || a.state.Sequence != st.Sequence || a.state.StreamSequence != stream {
		t.Fatalf("after the second confirmation: base %p state %p, %+v", a.base, a.state, a.state)
	}

	// Two changes in flight: confirming the first keeps the second as the
	// latest state.
	at3 := at2.Add(20 * time.Second)
	c1 := d.Observe(source.Observation{AgentID: agentA, At: at3, Class: source.ClassOK, Snapshot: snap(agentA, available, at3)})
	at4 := at3.Add(10 * time.Second)
	c2 := d.Observe(source.Observation{AgentID: agentA, At: at4, Class: source.ClassOK, Snapshot: snap(agentA, busy, at4)})
	confirm(c1)
	if a.state == a.base || a.base.Presence.ID != available || a.state.Presence.ID != busy {
		t.Fatalf("first of two confirmed: base %+v, state %+v", a.base.Presence, a.state.Presence)
	}
	confirm(c2)
	if a.state != a.base || a.state.Presence.ID != busy {
		t.Fatalf("second of two confirmed: base %+v, state %+v", a.base.Presence, a.state.Presence)
	}
}
