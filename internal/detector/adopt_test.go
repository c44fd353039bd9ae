package detector

import (
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/source"
)

// An answer is published over a history adopted from the stream only when
// its request was sent after that history's last observation: one on its
// way then may have been read before it (the other writer's newer answer
// arrived first), whenever it arrived, and publishing it could take the
// agent back to a presence that had already ended.
func TestAnswerInFlightNotPublishedOverAdoptedHistory(t *testing.T) {
	const agent = "0b7a1c2e-0000-4000-8000-00000000000a"
	t0 := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	avail := &source.Snapshot{AgentID: agent, AgentName: "Ada", PresenceID: "f523f628-c07a-e811-8162-000d3aa11f50", PresenceName: "Available",
		BaseStatus: source.BaseAvailable, LoginTime: t0.Unix(), AllowedChannels: []string{"voice"}, DisabledChannels: []string{}}
	busy := *avail
	busy.PresenceID, busy.PresenceName, busy.BaseStatus = "efdeb843-c07a-e811-8162-000d3aa11f50", "Busy", source.BaseBusy
	adoptedAt := t0.Add(10 * time.Second) // the other writer's Busy, observed then
	ms := time.Millisecond
	tests := []struct {
		name        string
		sent, at    time.Time // the Available answer's request and arrival
		adoptFirst  bool      // the answer arrives after the adoption, not before
		wantPublish bool
	}{
		{"held when adopted, sent before", adoptedAt.Add(-100 * ms), adoptedAt.Add(50 * ms), false, false},
		{"held when adopted, sent after", adoptedAt.Add(10 * ms), adoptedAt.Add(50 * ms), false, true},
		{"held when adopted, sent not known", time.Time{}, adoptedAt.Add(50 * ms), false, true},
		{"held when adopted, arrived before", adoptedAt.Add(-100 * ms), adoptedAt.Add(-50 * ms), false, false},
		{"arriving after, sent before", adoptedAt.Add(-100 * ms), adoptedAt.Add(50 * ms), true, false},
		{"arriving after, sent at its end", adoptedAt, adoptedAt.Add(50 * ms), true, true},
		{"arriving after, sent after", adoptedAt.Add(10 * ms), adoptedAt.Add(50 * ms), true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := New(Options{})
			if err != nil {
				t.Fatal(err)
			}
			first := d.Observe(source.Observation{AgentID: agent, At: t0, Sent: t0.Add(-50 * ms), Class: source.ClassOK, Snapshot: avail})
			if first == nil {
				t.Fatal("first sight made no change")
			}
			d.Confirm(first, 1)
			// The other writer's Busy, on the stream at sequence 2.
			adopted, _ := Diff(d.Base(agent), source.Snapshot{AgentID: agent, AgentName: "Ada", PresenceID: busy.PresenceID, PresenceName: busy.PresenceName,
				BaseStatus: busy.BaseStatus, LoginTime: busy.LoginTime, AllowedChannels: busy.AllowedChannels, DisabledChannels: busy.DisabledChannels, ObservedAt: adoptedAt})
			adopted.StreamSequence = 2
			answer := source.Observation{AgentID: agent, At: tc.at, Sent: tc.sent, Class: source.ClassOK, Snapshot: avail}

			var c *Change
			if tc.adoptFirst {
				if c := d.Adopt(agent, &adopted); c != nil {
					t.Fatalf("adoption with no newer answer: %d events", len(c.Events))
				}
				c = d.Observe(answer)
			} else {
				d.Observe(answer) // nothing changed against the agent's own history
				c = d.Adopt(agent, &adopted)
			}
			if published := c != nil; published != tc.wantPublish {
				t.Fatalf("Available published over the adopted Busy: %v, want %v", published, tc.wantPublish)
			}
			if !tc.wantPublish {
				// The next poll, sent after the adopted observation, tells.
				next := d.Observe(source.Observation{AgentID: agent, At: adoptedAt.Add(300 * ms), Sent: adoptedAt.Add(200 * ms), Class: source.ClassOK, Snapshot: avail})
				if next == nil || next.State.Presence.ID != avail.PresenceID {
					t.Fatalf("the next poll's Available was not published: %+v", next)
				}
			}
		})
	}
}
