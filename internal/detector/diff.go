package detector

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ccaas/presence-bridge/internal/source"
)

// Diff compares an agent's previous state (nil when the bridge has never
// seen the agent) with a new snapshot. It returns the state after the
// observation and the events that lead from prev to it, numbered from
// prev.Sequence+1, in this order: presence.resumed (when prev is stale),
// presence.changed, sessions.changed, channels.changed, agent.offline or
// agent.online, agent.unattended. On first sight it returns the three change
// types with previous null and no alert; so it does for a part prev does
// not know (its since-time zero: Rebuild leaves a part the stream lacks
// so), the stream holding no value of it to chain from. When nothing changed it returns
// prev unchanged and no event; the agent's name alone is not a change.
// Diff is pure: Apply folds the events over prev and gives the same state.
func Diff(prev *AgentState, snap source.Snapshot) (AgentState, []Event) {
	at := snap.ObservedAt.UTC()
	cur := Presence{ID: strings.ToLower(snap.PresenceID), Name: snap.PresenceName, BaseStatus: snap.BaseStatus}
	sess := Sessions{ActiveBrowserSessions: snap.ActiveBrowserSessions, LoginTime: snap.LoginTime}
	ch := Channels{Allowed: normaliseSet(snap.AllowedChannels), Disabled: normaliseSet(snap.DisabledChannels)}
	reason := offlineReason(cur, sess)
	offline, unatt := reason != "", unattended(cur, sess)

	var next AgentState
	if prev != nil {
		// Shares prev's lists and times: no state modifies them in place.
		next = *prev
		next.StreamSequence = 0 // a new position, known once published
	} else {
		next = AgentState{AgentID: snap.AgentID}
	}
	b := builder{agentID: snap.AgentID, agentName: snap.AgentName, seq: next.Sequence, at: at}

	if prev != nil && prev.Stale {
		b.add(TypePresenceResumed, PresenceResumedData{
			StaleSince:           clonePtr(prev.StaleSince),
			StaleDurationSeconds: since(prev.StaleSince, at),
			ErrorClass:           prev.StaleErrorClass,
		})
		next.Stale, next.StaleSince, next.StaleErrorClass = false, nil, ""
	}

	// A part the state does not know (no state, or one rebuilt from a
	// stream that lacks the part's events: its since-time is zero) is seen
	// for the first time: its event has no previous value, as the stream
	// holds none to chain from.
	knowsPresence := prev != nil && !prev.PresenceSince.IsZero()
	knowsSessions := prev != nil && !prev.SessionsSince.IsZero()
	knowsChannels := prev != nil && !prev.ChannelsSince.IsZero()

	if !knowsPresence || prev.Presence != cur {
		d := PresenceChangedData{Current: cur, Unattended: unatt, Offline: offline}
		if knowsPresence {
			p := prev.Presence
			d.Previous = &p
			d.PreviousSince = &prev.PresenceSince
			d.PreviousDurationSeconds = since(&prev.PresenceSince, at)
		}
		began := at
		if !snap.PresenceChangedAt.IsZero() {
			// The source's own time of the change (a feed row): previous
			// durations come from the real times.
			began = snap.PresenceChangedAt.UTC()
			d.ChangedAt = &began
			if knowsPresence {
				d.PreviousDurationSeconds = since(&prev.PresenceSince, began)
			}
		}
		b.add(TypePresenceChanged, d)
		next.Presence, next.PresenceSince = cur, began
	}

	if !knowsSessions || prev.Sessions != sess {
		d := SessionsChangedData{Change: SessionsInitial, Current: sess, Unattended: unatt, Offline: offline}
		if knowsSessions {
			p := prev.Sessions
			d.Previous = &p
			d.Change = sessionsChange(p, sess)
		}
		b.add(TypeSessionsChanged, d)
		next.Sessions, next.SessionsSince = sess, at
	}

	if !knowsChannels || !slices.Equal(prev.Channels.Allowed, ch.Allowed) || !slices.Equal(prev.Channels.Disabled, ch.Disabled) {
		d := ChannelsChangedData{
			Current: ch.clone(),
			Added:   Channels{Allowed: ch.Allowed, Disabled: ch.Disabled},
			Removed: Channels{Allowed: []string{}, Disabled: []string{}},
		}
		if knowsChannels {
			p := prev.Channels.clone()
			d.Previous = &p
			d.Added = Channels{Allowed: setDiff(ch.Allowed, p.Allowed), Disabled: setDiff(ch.Disabled, p.Disabled)}
			d.Removed = Channels{Allowed: setDiff(p.Allowed, ch.Allowed), Disabled: setDiff(p.Disabled, ch.Disabled)}
		}
		d.Added = d.Added.clone()
		b.add(TypeChannelsChanged, d)
		next.Channels, next.ChannelsSince = ch.clone(), at
	}

	wasOffline, wasUnattended := prev != nil && prev.Offline, prev != nil && prev.Unattended
	switch {
	case offline && !wasOffline:
		if prev != nil {
			b.add(TypeAgentOffline, AgentOfflineData{Reason: reason, Since: at, Presence: cur, ActiveBrowserSessions: sess.ActiveBrowserSessions})
		}
		next.OfflineSince = &at
	case !offline && wasOffline:
		b.add(TypeAgentOnline, AgentOnlineData{
			OfflineSince:           clonePtr(prev.OfflineSince),
			OfflineDurationSeconds: since(prev.OfflineSince, at),
			Presence:               cur,
			ActiveBrowserSessions:  sess.ActiveBrowserSessions,
		})
		next.OfflineSince = nil
	}
	next.Offline, next.OfflineReason = offline, reason

	switch {
	case unatt && !wasUnattended:
		if prev != nil {
			b.add(TypeAgentUnattended, AgentUnattendedData{Unattended: true, Since: at, Presence: cur, ActiveBrowserSessions: sess.ActiveBrowserSessions})
		}
		next.UnattendedSince = &at
	case !unatt:
		next.UnattendedSince = nil
	}
	next.Unattended = unatt

	if len(b.events) == 0 {
		return *prev, nil
	}
	next.AgentName, next.Sequence, next.ObservedAt = snap.AgentName, b.seq, at
	return next, b.events
}

// Stale returns the presence.stale event for an agent whose last known state
// is prev, and the state after it. lastSuccess is when the last successful
// poll finished; class is the error class of the last failed poll ("" for
// none).
func Stale(prev AgentState, at, lastSuccess time.Time, class string, staleAfter time.Duration) (AgentState, Event) {
	at = at.UTC()
	if class == "" {
		class = ErrorClassNoResult
	}
	prev = prev.Clone()
	prev.StreamSequence = 0 // a position on the stream, not part of the state events carry
	b := builder{agentID: prev.AgentID, agentName: prev.AgentName, seq: prev.Sequence, at: at}
	b.add(TypePresenceStale, PresenceStaleData{
		LastKnown:         prev.Clone(),
		LastSuccessAt:     lastSuccess.UTC(),
		ErrorClass:        class,
		StaleAfterSeconds: staleAfter.Seconds(),
	})
	next := prev.Clone()
	next.Sequence = b.seq
	next.Stale, next.StaleSince, next.StaleErrorClass = true, &at, class
	return next, b.events[0]
}

// Snapshot returns the presence.snapshot event of an agent whose state is
// prev, and the state after it.
func Snapshot(prev AgentState, at time.Time) (AgentState, Event) {
	next := prev.Clone()
	next.Sequence++
	next.StreamSequence = 0
	b := builder{agentID: prev.AgentID, agentName: prev.AgentName, seq: prev.Sequence, at: at.UTC()}
	b.add(TypePresenceSnapshot, PresenceSnapshotData{State: next.Clone()})
	return next, b.events[0]
}

// Apply folds one event over an agent's state (nil before the agent's first
// event) and returns the new state: what a consumer of the stream can
// rebuild. It fails when the event does not follow the state (wrong agent or
// sequence) or its data is not of the type's Go type.
func Apply(prev *AgentState, e Event) (AgentState, error) {
	var s AgentState
	if prev != nil {
		s = prev.Clone()
	} else {
		s = AgentState{AgentID: e.AgentID}
	}
	if s.AgentID != e.AgentID {
		return s, fmt.Errorf("apply event %s: agent %s, state of agent %s", e.ID, e.AgentID, s.AgentID)
	}
	if e.Sequence != s.Sequence+1 {
		return s, fmt.Errorf("apply event %s: sequence %d after %d", e.ID, e.Sequence, s.Sequence)
	}
	err := s.apply(e)
	return s, err
}

// Rebuild returns an agent's state as the last event of each type on the
// stream describes it (given in any order): they are folded in sequence
// order, each setting what it reports. complete is false when the presence,
// sessions or channels are not known from them (no presence.snapshot, or
// one of the three change types missing, after it).
func Rebuild(agentID string, last []Event) (s AgentState, complete bool, err error) {
	last = slices.Clone(last)
	slices.SortFunc(last, func(a, b Event) int { return cmp.Compare(a.Sequence, b.Sequence) })
	s = AgentState{AgentID: agentID}
	var presence, sessions, channels bool
	for _, e := range last {
		if e.AgentID != agentID {
			return s, false, fmt.Errorf("rebuild agent %s: event %s of agent %s", agentID, e.ID, e.AgentID)
		}
		if err := s.apply(e); err != nil {
			return s, false, fmt.Errorf("rebuild agent %s: %w", agentID, err)
		}
		switch e.Data.(type) {
		case PresenceSnapshotData:
			presence, sessions, channels = true, true, true
		case PresenceChangedData:
			presence = true
		case SessionsChangedData:
			sessions = true
		case ChannelsChangedData:
			channels = true
		}
	}
	return s, presence && sessions && channels, nil
}

// apply sets what e reports on s, whatever s held before.
func (s *AgentState) apply(e Event) error {
	at := e.Time.UTC()
	observed := true
	switch d := e.Data.(type) {
	case PresenceChangedData:
		s.Presence, s.PresenceSince = d.Current, at
		if d.ChangedAt != nil {
			s.PresenceSince = d.ChangedAt.UTC()
		}
		s.setFlags(d.Offline, d.Unattended, at)
	case SessionsChangedData:
		s.Sessions, s.SessionsSince = d.Current, at
		s.setFlags(d.Offline, d.Unattended, at)
	case ChannelsChangedData:
		s.Channels, s.ChannelsSince = d.Current.clone(), at
	case AgentOfflineData:
		s.setFlags(true, s.Unattended, at)
	case AgentOnlineData:
		s.setFlags(false, s.Unattended, at)
	case AgentUnattendedData:
		s.setFlags(s.Offline, true, at)
		since := d.Since.UTC()
		s.UnattendedSince = &since
	case PresenceStaleData:
		s.Stale, s.StaleSince, s.StaleErrorClass = true, &at, d.ErrorClass
		observed = false
	case PresenceResumedData:
		s.Stale, s.StaleSince, s.StaleErrorClass = false, nil, ""
	case PresenceSnapshotData:
		if d.State.AgentID != e.AgentID {
			return fmt.Errorf("apply event %s: snapshot of agent %q in an event of agent %s", e.ID, d.State.AgentID, e.AgentID)
		}
		*s = d.State.Clone()
		observed = false
	default:
		return fmt.Errorf("apply event %s: data of type %T", e.ID, e.Data)
	}
	s.AgentName, s.Sequence, s.StreamSequence = e.AgentName, e.Sequence, 0
	if observed {
		s.ObservedAt = at
	}
	s.OfflineReason = ""
	if s.Offline {
		s.OfflineReason = offlineReason(s.Presence, s.Sessions)
	}
	return nil
}

// setFlags sets the offline and unattended flags, starting or clearing their
// since-times at a transition.
func (s *AgentState) setFlags(offline, unatt bool, at time.Time) {
	if offline && !s.Offline {
		s.OfflineSince = &at
	}
	if !offline {
		s.OfflineSince = nil
	}
	if unatt && !s.Unattended {
		s.UnattendedSince = &at
	}
	if !unatt {
		s.UnattendedSince = nil
	}
	s.Offline, s.Unattended = offline, unatt
}

func (c Channels) clone() Channels {
	return Channels{Allowed: append([]string{}, c.Allowed...), Disabled: append([]string{}, c.Disabled...)}
}

// sessionsChange classifies a change of sessions.
func sessionsChange(prev, cur Sessions) string {
	switch {
	case cur.ActiveBrowserSessions == 0 && prev.ActiveBrowserSessions > 0:
		return SessionsLogout
	case cur.LoginTime != prev.LoginTime || (prev.ActiveBrowserSessions == 0 && cur.ActiveBrowserSessions > 0):
		return SessionsLogin
	}
	return SessionsTabs
}

// since returns the seconds from *from to at, or nil when from is nil or
// zero.
func since(from *time.Time, at time.Time) *float64 {
	if from == nil || from.IsZero() {
		return nil
	}
	s := max(at.Sub(*from).Seconds(), 0) // clocks of observations may disagree slightly
	return &s
}

// builder numbers the events of one observation.
type builder struct {
	agentID, agentName string
	seq                uint64
	at                 time.Time
	events             []Event
}

func (b *builder) add(typ string, data any) {
	b.seq++
	data = withAgent(data, b.agentID, b.agentName)
	b.events = append(b.events, Event{
		ID:        EventID(b.agentID, b.seq),
		Type:      typ,
		AgentID:   b.agentID,
		AgentName: b.agentName,
		Sequence:  b.seq,
		Time:      b.at,
		Data:      data,
	})
}

// withAgent fills the agent ID and name every data type carries. One case
// per type: each event type's data is a struct of its own, as its schema is.
func withAgent(data any, id, name string) any {
	switch d := data.(type) {
	case PresenceChangedData:
		d.AgentID, d.AgentName = id, name
		return d
	case SessionsChangedData:
		d.AgentID, d.AgentName = id, name
		return d
	case ChannelsChangedData:
		d.AgentID, d.AgentName = id, name
		return d
	case AgentOfflineData:
		d.AgentID, d.AgentName = id, name
		return d
	case AgentOnlineData:
		d.AgentID, d.AgentName = id, name
		return d
	case AgentUnattendedData:
		d.AgentID, d.AgentName = id, name
		return d
	case PresenceStaleData:
		d.AgentID, d.AgentName = id, name
		return d
	case PresenceResumedData:
		d.AgentID, d.AgentName = id, name
		return d
	case PresenceSnapshotData:
		d.AgentID, d.AgentName = id, name
		return d
	}
	return data
}
