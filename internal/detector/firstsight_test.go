package detector_test

import (
	"slices"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/detector"
)

// TestFirstSight pins down what docs/contract.md says about an agent the
// bridge first sees offline or unattended: no alert at first sight, the
// state counts the agent offline (unattended) since the first sight, and
// the agent.online that ends it has no agent.offline before it and
// measures the offline time from the first sight.
func TestFirstSight(t *testing.T) {
	tests := []struct {
		name       string
		first      obs
		later      obs
		wantLater  []string
		unattended bool
	}{
		{
			name:      "first seen logged out",
			first:     obs{presence: pOffline, sessions: 0},
			later:     obs{presence: pAvailable, sessions: 1, login: 1700000100},
			wantLater: []string{detector.TypePresenceChanged, detector.TypeSessionsChanged, detector.TypeAgentOnline},
		},
		{
			name:       "first seen unattended (Available, no browser session)",
			first:      obs{presence: pAvailable, sessions: 0},
			later:      obs{presence: pAvailable, sessions: 1},
			wantLater:  []string{detector.TypeSessionsChanged, detector.TypeAgentOnline},
			unattended: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, events := detector.Diff(nil, tt.first.at(t0))
			want := []string{detector.TypePresenceChanged, detector.TypeSessionsChanged, detector.TypeChannelsChanged}
			if got := types(events); !slices.Equal(got, want) {
				t.Fatalf("first sight emitted %v, want %v (no agent.offline, no agent.unattended)", got, want)
			}
			p := events[0].Data.(detector.PresenceChangedData)
			if !p.Offline || p.Unattended != tt.unattended {
				t.Errorf("first sight presence.changed offline=%v unattended=%v", p.Offline, p.Unattended)
			}
			if !state.Offline || state.OfflineSince == nil || !state.OfflineSince.Equal(t0) {
				t.Fatalf("state after first sight: offline %v since %v, want since the first sight", state.Offline, state.OfflineSince)
			}

			later := t0.Add(90 * time.Second)
			_, events = detector.Diff(&state, tt.later.at(later))
			if got := types(events); !slices.Equal(got, tt.wantLater) {
				t.Fatalf("coming online emitted %v, want %v", got, tt.wantLater)
			}
			on := events[len(events)-1].Data.(detector.AgentOnlineData)
			if on.OfflineSince == nil || !on.OfflineSince.Equal(t0) || on.OfflineDurationSeconds == nil || *on.OfflineDurationSeconds != 90 {
				t.Errorf("agent.online offlineSince %v, duration %v; want the first sight and 90 s", on.OfflineSince, on.OfflineDurationSeconds)
			}
		})
	}
}
