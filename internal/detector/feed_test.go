package detector_test

import (
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/source"
)

// step is one observation of a feed table test: a poll (poll set) or a feed
// row (row set), handed over at t0+at.
type step struct {
	at   time.Duration
	poll *detector.Presence
	hold time.Duration // FeedHold of the poll
	row  *detector.Presence
	// began is when the row's presence began, t0+began.
	began time.Duration
}

// published is one presence.changed a table test expects.
type published struct {
	id string
	// changedAt is t0+changedAt, or nil when a poll detected the change.
	changedAt *time.Duration
	// prevSeconds is previousDurationSeconds, or -1 for null.
	prevSeconds float64
}

func dur(d time.Duration) *time.Duration { return &d }

// TestFeedOrdering checks how the detector merges feed rows and polls: every
// presence the feed reports is published in the order it happened, with the
// source's times; a late row never takes the agent back; a poll never hides a
// presence the feed reports, and still publishes one the feed missed.
func TestFeedOrdering(t *testing.T) {
	const hold = 30 * time.Second
	tests := []struct {
		name  string
		steps []step
		want  []published
	}{
		{
			name: "rows become changes in order with the source's times",
			steps: []step{
				{at: 0, poll: &pAvailable, hold: hold},
				{at: 5 * time.Second, row: &pBusy, began: 4 * time.Second},
				{at: 6 * time.Second, row: &pAway, began: 4500 * time.Millisecond},
			},
			want: []published{
				{id: pAvailable.ID, prevSeconds: -1},
				{id: pBusy.ID, changedAt: dur(4 * time.Second), prevSeconds: 4},
				{id: pAway.ID, changedAt: dur(4500 * time.Millisecond), prevSeconds: 0.5},
			},
		},
		{
			name: "a poll holds a presence the feed has not reported; the rows then come in order",
			steps: []step{
				{at: 0, poll: &pAvailable, hold: hold},
				{at: 3 * time.Second, poll: &pAway, hold: hold}, // Busy lasted 0.5 s before Away: the poll missed it
				{at: 4 * time.Second, row: &pBusy, began: 2 * time.Second},
				{at: 4 * time.Second, row: &pAway, began: 2500 * time.Millisecond},
				{at: 5 * time.Second, poll: &pAway, hold: hold},
			},
			want: []published{
				{id: pAvailable.ID, prevSeconds: -1},
				{id: pBusy.ID, changedAt: dur(2 * time.Second), prevSeconds: 2},
				{id: pAway.ID, changedAt: dur(2500 * time.Millisecond), prevSeconds: 0.5},
			},
		},
		{
			name: "a late row never takes the agent back past a newer poll",
			steps: []step{
				{at: 0, poll: &pAvailable},
				{at: 10 * time.Second, poll: &pAway}, // feed unreadable: the poll publishes
				{at: 12 * time.Second, row: &pBusy, began: 8 * time.Second},
				{at: 12 * time.Second, row: &pAway, began: 9 * time.Second},
				{at: 13 * time.Second, row: &pDND, began: 12 * time.Second},
			},
			want: []published{
				{id: pAvailable.ID, prevSeconds: -1},
				{id: pAway.ID, prevSeconds: 10},
				{id: pDND.ID, changedAt: dur(12 * time.Second), prevSeconds: 2},
			},
		},
		{
			name: "a repeated row is published once",
			steps: []step{
				{at: 0, poll: &pAvailable, hold: hold},
				{at: 2 * time.Second, row: &pBusy, began: time.Second},
				{at: 3 * time.Second, row: &pBusy, began: time.Second},
			},
			want: []published{
				{id: pAvailable.ID, prevSeconds: -1},
				{id: pBusy.ID, changedAt: dur(time.Second), prevSeconds: 1},
			},
		},
		{
			name: "a presence the feed missed is published once polls have seen it for the hold",
			steps: []step{
				{at: 0, poll: &pAvailable, hold: hold},
				{at: 10 * time.Second, poll: &pAway, hold: hold},
				{at: 30 * time.Second, poll: &pAway, hold: hold},
				{at: 40 * time.Second, poll: &pAway, hold: hold},
			},
			want: []published{
				{id: pAvailable.ID, prevSeconds: -1},
				{id: pAway.ID, prevSeconds: 40},
			},
		},
		{
			name: "a row of the same second as a polled presence is taken as after it",
			steps: []step{
				{at: 1500 * time.Millisecond, poll: &pAvailable, hold: hold},
				{at: 2 * time.Second, row: &pBusy, began: time.Second}, // Busy began in the second Available was seen
				{at: 2100 * time.Millisecond, poll: &pBusy, hold: hold},
			},
			want: []published{
				{id: pAvailable.ID, prevSeconds: -1},
				{id: pBusy.ID, changedAt: dur(time.Second), prevSeconds: 0},
			},
		},
		{
			name: "a row of a second before a polled presence is ignored",
			steps: []step{
				{at: 1500 * time.Millisecond, poll: &pAvailable, hold: hold},
				{at: 2 * time.Second, row: &pBusy, began: 0},
				{at: 2100 * time.Millisecond, poll: &pAvailable, hold: hold},
			},
			want: []published{{id: pAvailable.ID, prevSeconds: -1}},
		},
		{
			name: "rows before the agent's first poll wait for it",
			steps: []step{
				{at: 0, row: &pBusy, began: -time.Second},
				{at: time.Second, poll: &pBusy, hold: hold},
			},
			want: []published{{id: pBusy.ID, prevSeconds: -1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := detector.New(detector.Options{})
			if err != nil {
				t.Fatal(err)
			}
			var got []detector.Event
			for _, s := range tt.steps {
				o := source.Observation{AgentID: agentA, At: t0.Add(s.at), Class: source.ClassOK}
				if s.poll != nil {
					snap := obs{presence: *s.poll, sessions: 1}.at(t0.Add(s.at))
					o.Snapshot, o.FeedHold = &snap, s.hold
				} else {
					o.Row = &source.PresenceRow{RowID: "r", PresenceID: s.row.ID, PresenceName: s.row.Name, BaseStatus: s.row.BaseStatus, ChangedAt: t0.Add(s.began)}
				}
				if c := d.Observe(o); c != nil {
					got = append(got, c.Events...)
					d.Confirm(c, uint64(len(got)))
				}
			}
			var changes []detector.PresenceChangedData
			for _, e := range got {
				if p, ok := e.Data.(detector.PresenceChangedData); ok {
					changes = append(changes, p)
				}
			}
			if len(changes) != len(tt.want) {
				t.Fatalf("got %d presence.changed, want %d: %+v", len(changes), len(tt.want), changes)
			}
			for i, w := range tt.want {
				c := changes[i]
				if c.Current.ID != w.id {
					t.Errorf("change %d: presence %s, want %s", i, c.Current.ID, w.id)
				}
				switch {
				case w.changedAt == nil && c.ChangedAt != nil:
					t.Errorf("change %d: changedAt %v, want none", i, c.ChangedAt)
				case w.changedAt != nil && (c.ChangedAt == nil || !c.ChangedAt.Equal(t0.Add(*w.changedAt))):
					t.Errorf("change %d: changedAt %v, want %v", i, c.ChangedAt, t0.Add(*w.changedAt))
				}
				switch {
				case w.prevSeconds < 0 && c.PreviousDurationSeconds != nil:
					t.Errorf("change %d: previousDurationSeconds %v, want null", i, *c.PreviousDurationSeconds)
				case w.prevSeconds >= 0 && (c.PreviousDurationSeconds == nil || *c.PreviousDurationSeconds != w.prevSeconds):
					t.Errorf("change %d: previousDurationSeconds %v, want %v", i, c.PreviousDurationSeconds, w.prevSeconds)
				}
			}
			// What a consumer rebuilds from the events is the detector's state.
			var st *detector.AgentState
			for _, e := range got {
				next, err := detector.Apply(st, e)
				if err != nil {
					t.Fatal(err)
				}
				st = &next
			}
			if want, ok := d.State(agentA); ok && st != nil && !st.PresenceSince.Equal(want.PresenceSince) {
				t.Errorf("rebuilt presenceSince %v, detector's %v", st.PresenceSince, want.PresenceSince)
			}
		})
	}
}
