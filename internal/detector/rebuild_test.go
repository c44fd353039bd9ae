package detector_test

import (
	"slices"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/detector"
)

// TestRebuiltPartsTheStreamLacksStartAfresh: an agent's history adopted
// from a stream that holds only some of its first-sight events (another
// bridge's first events partly stored, or retention that dropped a part)
// leaves the missing part unknown, and the next observation's event for
// that part has previous null, as at first sight, so that every event's
// previous is the current of the stream's prior event of its type. A part
// the stream holds chains as usual.
func TestRebuiltPartsTheStreamLacksStartAfresh(t *testing.T) {
	first := obs{presence: pAvailable, sessions: 1, allowed: []string{"chat"}}
	_, firstEvents := detector.Diff(nil, first.at(t0))
	later := obs{presence: pBusy, sessions: 2, allowed: []string{"chat", "voice"}}
	tests := []struct {
		name    string
		missing string // the type of the first-sight event the stream lacks
	}{
		{"presence missing", detector.TypePresenceChanged},
		{"sessions missing", detector.TypeSessionsChanged},
		{"channels missing", detector.TypeChannelsChanged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var held []detector.Event
			for _, e := range firstEvents {
				if e.Type != tt.missing {
					held = append(held, e)
				}
			}
			st, complete, err := detector.Rebuild(agentA, held)
			if err != nil {
				t.Fatal(err)
			}
			if complete {
				t.Fatalf("rebuilt from %v: complete, want a part missing", types(held))
			}
			for _, o := range []obs{first, later} {
				_, events := detector.Diff(&st, o.at(t0.Add(time.Minute)))
				if !slices.Contains(types(events), tt.missing) {
					t.Fatalf("observation %+v after the rebuild emitted %v, without the missing %s", o, types(events), tt.missing)
				}
				for _, e := range events {
					prev, hasPrev := previousOf(e)
					if !hasPrev {
						continue
					}
					if e.Type == tt.missing && prev {
						t.Errorf("%s of the part the stream lacks has a previous value; want null (nothing on the stream to follow on from)", e.Type)
					}
					if e.Type != tt.missing && !prev {
						t.Errorf("%s of a part the stream holds has previous null; want the stream's current", e.Type)
					}
				}
			}
		})
	}
}

// previousOf reports whether a change event carries a previous value, and
// whether it is a change event at all.
func previousOf(e detector.Event) (previous, change bool) {
	switch d := e.Data.(type) {
	case detector.PresenceChangedData:
		return d.Previous != nil, true
	case detector.SessionsChangedData:
		return d.Previous != nil, true
	case detector.ChannelsChangedData:
		return d.Previous != nil, true
	}
	return false, false
}
