package detector

import (
	"strings"
	"time"

	"github.com/ccaas/presence-bridge/internal/source"
)

// heldPresence is a presence a poll saw that differs from the agent's state
// while the change feed reports the agent's presence.
type heldPresence struct {
	id    string
	since time.Time // when a poll first saw it
}

// rowLocked takes a presence change the change feed read. The feed times
// each change at the source, so rows are ordered by that time: a row that
// began before the second of the agent's current presence (a late row, or
// one a newer poll already passed) says nothing new and is ignored, so it
// never takes the agent back. Dataverse times have whole seconds: a row of
// the same second as a presence a poll saw is taken as after it (two
// changes of one agent within that one second, both before the poll, would
// show the first again; rows read twice never come here, the feed drops
// them by ID). A newer row becomes the agent's presence, with the sessions
// and channels of its state, timed from the row. Rows of an agent without
// a state yet, or stale, wait for its next successful poll. a.mu is held.
func (a *agent) rowLocked(in *source.Interner, o source.Observation, produce bool) *Change {
	r := o.Row
	st := a.state
	if st == nil || st.Stale || r.PresenceID == "" || r.ChangedAt.Before(st.PresenceSince.Truncate(time.Second)) {
		return nil
	}
	id := strings.ToLower(r.PresenceID)
	if a.hold != nil && a.hold.id == id {
		a.hold = nil // the feed reports what a poll saw first
	}
	if id == st.Presence.ID {
		return nil // a capacity change, or the presence a poll already published
	}
	at := o.At
	if at.Before(st.ObservedAt) {
		at = st.ObservedAt // observed now, whatever the reader's clock says
	}
	snap := source.Snapshot{
		AgentID:               st.AgentID,
		AgentName:             st.AgentName,
		PresenceID:            in.String(id),
		PresenceName:          in.String(r.PresenceName),
		BaseStatus:            in.String(r.BaseStatus),
		ActiveBrowserSessions: st.Sessions.ActiveBrowserSessions,
		LoginTime:             st.Sessions.LoginTime,
		AllowedChannels:       st.Channels.Allowed,
		DisabledChannels:      st.Channels.Disabled,
		PresenceChangedAt:     r.ChangedAt,
	}
	a.snap, a.snapAt, a.snapTook = &snap, at, 0
	if !produce {
		return nil
	}
	return a.diffLocked(in, st.AgentID)
}

// holdLocked applies FeedHold to a poll's snapshot: while the change feed
// reports the agent's presence, a poll's presence that differs from the
// state is replaced by the state's (the feed will report the change with
// its real time, and in order with any shorter presence before it), until
// polls have seen it for hold (the feed missed it: the poll's presence
// stands). A poll's presence equal to the state's by ID keeps the state's
// name and base status. a.mu is held.
func (a *agent) holdLocked(snap *source.Snapshot, at time.Time, hold time.Duration) {
	if hold <= 0 || a.state == nil {
		a.hold = nil
		return
	}
	cur := a.state.Presence
	id := strings.ToLower(snap.PresenceID)
	if id != cur.ID {
		if a.hold == nil || a.hold.id != id {
			a.hold = &heldPresence{id: id, since: at}
		}
		if at.Sub(a.hold.since) >= hold {
			a.hold = nil
			return
		}
	} else {
		a.hold = nil
	}
	snap.PresenceID, snap.PresenceName, snap.BaseStatus = cur.ID, cur.Name, cur.BaseStatus
}
