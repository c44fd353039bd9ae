package detector_test

import (
	"slices"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/source"
)

var t0 = time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)

// obs is a compact snapshot description for table tests.
type obs struct {
	presence detector.Presence
	sessions int
	login    int64
	allowed  []string
	disabled []string
}

func (o obs) at(at time.Time) source.Snapshot {
	login := o.login
	if login == 0 {
		login = 1700000000
	}
	return source.Snapshot{
		AgentID: agentA, AgentName: "Ada", PresenceID: o.presence.ID, PresenceName: o.presence.Name, BaseStatus: o.presence.BaseStatus,
		ActiveBrowserSessions: o.sessions, LoginTime: login, AllowedChannels: o.allowed, DisabledChannels: o.disabled, ObservedAt: at,
	}
}

var (
	pAvailable = presences[0]
	pBusy      = presences[1]
	pDND       = presences[2]
	pAway      = presences[3]
	pOffline   = presences[4]
	pOfflineNm = presences[6] // unknown to the catalogue, named "OFFLINE"
	pAvailNm   = presences[7] // unknown to the catalogue, named "available"
)

// TestDiffSemantics checks what each transition emits and what its data says.
func TestDiffSemantics(t *testing.T) {
	v := validator(t)
	tests := []struct {
		name   string
		prev   *obs // nil: first sight
		stale  bool
		cur    obs
		types  []string
		verify func(t *testing.T, events []detector.Event, next detector.AgentState)
	}{
		{
			name:  "first sight emits the three types with previous null and no alert",
			cur:   obs{presence: pAvailable, sessions: 0},
			types: []string{detector.TypePresenceChanged, detector.TypeSessionsChanged, detector.TypeChannelsChanged},
			verify: func(t *testing.T, ev []detector.Event, next detector.AgentState) {
				p := ev[0].Data.(detector.PresenceChangedData)
				s := ev[1].Data.(detector.SessionsChangedData)
				c := ev[2].Data.(detector.ChannelsChangedData)
				if p.Previous != nil || s.Previous != nil || c.Previous != nil || s.Change != detector.SessionsInitial {
					t.Fatalf("first sight with a previous value: %+v %+v %+v", p, s, c)
				}
				if !p.Offline || !p.Unattended || !next.Offline || !next.Unattended || next.OfflineReason != detector.ReasonLogout {
					t.Fatalf("flags of an Available agent without sessions: %+v, state %+v", p, next)
				}
			},
		},
		{
			name: "presence change carries previous, current and duration",
			prev: &obs{presence: pAvailable, sessions: 1}, cur: obs{presence: pBusy, sessions: 1},
			types: []string{detector.TypePresenceChanged},
			verify: func(t *testing.T, ev []detector.Event, _ detector.AgentState) {
				d := ev[0].Data.(detector.PresenceChangedData)
				if d.Previous == nil || *d.Previous != pAvailable || d.Current != pBusy {
					t.Fatalf("previous %+v current %+v", d.Previous, d.Current)
				}
				if d.PreviousDurationSeconds == nil || *d.PreviousDurationSeconds != 90 {
					t.Fatalf("duration %v, want 90 s", d.PreviousDurationSeconds)
				}
			},
		},
		{
			name: "a rename of the presence is a change",
			prev: &obs{presence: pAway, sessions: 1}, cur: obs{presence: detector.Presence{ID: away, Name: "Away (renamed)", BaseStatus: "Away"}, sessions: 1},
			types: []string{detector.TypePresenceChanged},
		},
		{
			name: "login: the Timestamp changed",
			prev: &obs{presence: pAway, sessions: 1}, cur: obs{presence: pAway, sessions: 1, login: 1700000500},
			types:  []string{detector.TypeSessionsChanged},
			verify: sessionsKind(detector.SessionsLogin),
		},
		{
			name: "tabs: more tabs, same login",
			prev: &obs{presence: pAway, sessions: 1}, cur: obs{presence: pAway, sessions: 2},
			types:  []string{detector.TypeSessionsChanged},
			verify: sessionsKind(detector.SessionsTabs),
		},
		{
			name: "logout of an Away agent: offline by logout",
			prev: &obs{presence: pAway, sessions: 2}, cur: obs{presence: pAway, sessions: 0},
			types: []string{detector.TypeSessionsChanged, detector.TypeAgentOffline},
			verify: func(t *testing.T, ev []detector.Event, _ detector.AgentState) {
				sessionsKind(detector.SessionsLogout)(t, ev, detector.AgentState{})
				if d := ev[1].Data.(detector.AgentOfflineData); d.Reason != detector.ReasonLogout || !d.Since.Equal(t0.Add(90*time.Second)) {
					t.Fatalf("offline data %+v", d)
				}
			},
		},
		{
			name: "logout of an Available agent: offline and unattended",
			prev: &obs{presence: pAvailable, sessions: 1}, cur: obs{presence: pAvailable, sessions: 0},
			types: []string{detector.TypeSessionsChanged, detector.TypeAgentOffline, detector.TypeAgentUnattended},
			verify: func(t *testing.T, ev []detector.Event, next detector.AgentState) {
				d := ev[2].Data.(detector.AgentUnattendedData)
				if !d.Unattended || !d.Since.Equal(t0.Add(90*time.Second)) || next.UnattendedSince == nil {
					t.Fatalf("unattended data %+v, state %+v", d, next)
				}
			},
		},
		{
			name: "presence Offline with a session open: offline by presence",
			prev: &obs{presence: pBusy, sessions: 1}, cur: obs{presence: pOffline, sessions: 1},
			types:  []string{detector.TypePresenceChanged, detector.TypeAgentOffline},
			verify: offlineReason(detector.ReasonPresence),
		},
		{
			name: "offline by name when the catalogue does not know the presence",
			prev: &obs{presence: pBusy, sessions: 1}, cur: obs{presence: pOfflineNm, sessions: 1},
			types:  []string{detector.TypePresenceChanged, detector.TypeAgentOffline},
			verify: offlineReason(detector.ReasonPresence),
		},
		{
			name: "Offline and logged out at once",
			prev: &obs{presence: pBusy, sessions: 1}, cur: obs{presence: pOffline, sessions: 0},
			types:  []string{detector.TypePresenceChanged, detector.TypeSessionsChanged, detector.TypeAgentOffline},
			verify: offlineReason(detector.ReasonPresenceAndLogout),
		},
		{
			name: "back online with the offline duration",
			prev: &obs{presence: pOffline, sessions: 0}, cur: obs{presence: pAvailable, sessions: 1, login: 1700000900},
			types: []string{detector.TypePresenceChanged, detector.TypeSessionsChanged, detector.TypeAgentOnline},
			verify: func(t *testing.T, ev []detector.Event, next detector.AgentState) {
				if k := ev[1].Data.(detector.SessionsChangedData).Change; k != detector.SessionsLogin {
					t.Fatalf("sessions change %s, want login", k)
				}
				d := ev[2].Data.(detector.AgentOnlineData)
				if d.OfflineDurationSeconds == nil || *d.OfflineDurationSeconds != 90 || next.Offline || next.OfflineSince != nil {
					t.Fatalf("online data %+v, state %+v", d, next)
				}
			},
		},
		{
			name: "unattended ends with presence.changed carrying the flag cleared",
			prev: &obs{presence: pAvailable, sessions: 0}, cur: obs{presence: pAway, sessions: 0},
			types: []string{detector.TypePresenceChanged},
			verify: func(t *testing.T, ev []detector.Event, next detector.AgentState) {
				if d := ev[0].Data.(detector.PresenceChangedData); d.Unattended || !d.Offline || next.Unattended || next.UnattendedSince != nil {
					t.Fatalf("data %+v, state %+v", d, next)
				}
			},
		},
		{
			name: "Busy - DND without sessions is not unattended",
			prev: &obs{presence: pAway, sessions: 0}, cur: obs{presence: pDND, sessions: 0},
			types: []string{detector.TypePresenceChanged},
		},
		{
			name: "unattended by name when the catalogue does not know the presence",
			prev: &obs{presence: pAway, sessions: 0}, cur: obs{presence: pAvailNm, sessions: 0},
			types: []string{detector.TypePresenceChanged, detector.TypeAgentUnattended},
		},
		{
			name: "channels compared as sets: order and duplicates are no change",
			prev: &obs{presence: pAway, sessions: 1, allowed: []string{"voice", "chat"}},
			cur:  obs{presence: pAway, sessions: 1, allowed: []string{"chat", "voice", "chat"}},
		},
		{
			name:  "channels added and removed",
			prev:  &obs{presence: pBusy, sessions: 1, allowed: []string{"voice", "chat"}},
			cur:   obs{presence: pBusy, sessions: 1, allowed: []string{"chat", "sms"}, disabled: []string{"voice"}},
			types: []string{detector.TypeChannelsChanged},
			verify: func(t *testing.T, ev []detector.Event, _ detector.AgentState) {
				d := ev[0].Data.(detector.ChannelsChangedData)
				if !slices.Equal(d.Added.Allowed, []string{"sms"}) || !slices.Equal(d.Removed.Allowed, []string{"voice"}) ||
					!slices.Equal(d.Added.Disabled, []string{"voice"}) || len(d.Removed.Disabled) != 0 ||
					!slices.Equal(d.Current.Allowed, []string{"chat", "sms"}) || !slices.Equal(d.Previous.Allowed, []string{"chat", "voice"}) {
					t.Fatalf("channels data %+v", d)
				}
			},
		},
		{
			name: "resumed comes before the changes of the poll that ends staleness",
			prev: &obs{presence: pAway, sessions: 1}, stale: true, cur: obs{presence: pBusy, sessions: 1},
			types: []string{detector.TypePresenceResumed, detector.TypePresenceChanged},
			verify: func(t *testing.T, ev []detector.Event, next detector.AgentState) {
				d := ev[0].Data.(detector.PresenceResumedData)
				if d.ErrorClass != "server_error" || d.StaleDurationSeconds == nil || next.Stale {
					t.Fatalf("resumed data %+v, state %+v", d, next)
				}
			},
		},
		{
			name: "resumed alone when nothing changed",
			prev: &obs{presence: pAway, sessions: 1}, stale: true, cur: obs{presence: pAway, sessions: 1},
			types: []string{detector.TypePresenceResumed},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var prev *detector.AgentState
			if tt.prev != nil {
				s, _ := detector.Diff(nil, tt.prev.at(t0))
				if tt.stale {
					s, _ = detector.Stale(s, t0.Add(time.Minute), t0, "server_error", time.Minute)
				}
				prev = &s
			}
			events := checkDiff(t, v, prev, tt.cur.at(t0.Add(90*time.Second)))
			if !slices.Equal(types(events), tt.types) {
				t.Fatalf("events %v, want %v", types(events), tt.types)
			}
			if tt.verify != nil {
				next, _ := detector.Diff(prev, tt.cur.at(t0.Add(90*time.Second)))
				tt.verify(t, events, next)
			}
		})
	}
}

func sessionsKind(kind string) func(*testing.T, []detector.Event, detector.AgentState) {
	return func(t *testing.T, ev []detector.Event, _ detector.AgentState) {
		t.Helper()
		if got := ev[0].Data.(detector.SessionsChangedData).Change; got != kind {
			t.Fatalf("sessions change %q, want %q", got, kind)
		}
	}
}

func offlineReason(reason string) func(*testing.T, []detector.Event, detector.AgentState) {
	return func(t *testing.T, ev []detector.Event, next detector.AgentState) {
		t.Helper()
		d := ev[len(ev)-1].Data.(detector.AgentOfflineData)
		if d.Reason != reason || next.OfflineReason != reason {
			t.Fatalf("offline reason %q, state %q, want %q", d.Reason, next.OfflineReason, reason)
		}
	}
}

// TestStaleAndSnapshotEvents checks the events that do not come from a
// snapshot diff: their data, their schemas and that Apply folds them.
func TestStaleAndSnapshotEvents(t *testing.T) {
	v := validator(t)
	s0, _ := detector.Diff(nil, obs{presence: pBusy, sessions: 1}.at(t0))
	stale, e := detector.Stale(s0, t0.Add(5*time.Minute), t0, "", 3*time.Minute)
	d := e.Data.(detector.PresenceStaleData)
	if e.Type != detector.TypePresenceStale || e.Sequence != s0.Sequence+1 || d.ErrorClass != detector.ErrorClassNoResult ||
		d.LastKnown.Presence != pBusy || d.StaleAfterSeconds != 180 || !stale.Stale || stale.StaleErrorClass != detector.ErrorClassNoResult {
		t.Fatalf("stale event %+v data %+v state %+v", e, d, stale)
	}
	validateEvent(t, v, e)
	if got, err := detector.Apply(&s0, e); err != nil || !equalJSON(t, got, stale) {
		t.Fatalf("apply stale: %v\n%+v\n%+v", err, got, stale)
	}
	snapState, se := detector.Snapshot(stale, t0.Add(6*time.Minute))
	validateEvent(t, v, se)
	if sd := se.Data.(detector.PresenceSnapshotData); sd.State.Sequence != se.Sequence || !sd.State.Stale {
		t.Fatalf("snapshot data %+v", sd)
	}
	if got, err := detector.Apply(&stale, se); err != nil || !equalJSON(t, got, snapState) {
		t.Fatalf("apply snapshot: %v", err)
	}
	if _, err := detector.Apply(&s0, se); err == nil {
		t.Fatal("applying an event out of sequence succeeded")
	}
}

func equalJSON(t *testing.T, a, b detector.AgentState) bool {
	t.Helper()
	return slices.Equal(mustJSON(t, a), mustJSON(t, b))
}
