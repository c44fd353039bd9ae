// Package detector keeps the last known state of every agent and turns each
// new observation from the source into the events that describe what changed.
// It holds memory only: no NATS code, no I/O under its locks.
//
// The pure part is Diff (previous state + snapshot -> next state + events),
// Stale and Snapshot; Apply folds an event over a state, so a consumer of the
// stream can rebuild every agent's state, and Diff is tested by that
// property; Rebuild does the same from the last event of each type.
// Detector is the stateful part used by the pipeline; the package example
// shows how the pipeline drives it (Restore, Observe, Confirm or Abandon).
//
// Sequences are per agent, start at 1, have no gaps and continue across
// restarts; an event's ID is "<agentId>-<sequence>" (EventID). The stream
// is the authority on each agent's history: the pipeline publishes every
// event fenced on the stream sequence of the agent's previous one, and when
// the fence finds the history moved on, Adopt takes the stream's version
// and diffs the latest observation against it.
package detector

import (
	"strconv"
	"time"
)

// Event types, also the last tokens of the NATS subject.
const (
	TypePresenceChanged  = "presence.changed"
	TypeSessionsChanged  = "sessions.changed"
	TypeChannelsChanged  = "channels.changed"
	TypeAgentOffline     = "agent.offline"
	TypeAgentOnline      = "agent.online"
	TypeAgentUnattended  = "agent.unattended"
	TypePresenceStale    = "presence.stale"
	TypePresenceResumed  = "presence.resumed"
	TypePresenceSnapshot = "presence.snapshot"
)

// Types returns every event type the detector can emit.
func Types() []string {
	return []string{
		TypePresenceChanged, TypeSessionsChanged, TypeChannelsChanged,
		TypeAgentOffline, TypeAgentOnline, TypeAgentUnattended,
		TypePresenceStale, TypePresenceResumed, TypePresenceSnapshot,
	}
}

// EventID returns the ID of an agent's event with the given sequence:
// "<agentId>-<sequence>", also used as Nats-Msg-Id.
func EventID(agentID string, sequence uint64) string {
	var b [20]byte
	return agentID + "-" + string(strconv.AppendUint(b[:0], sequence, 10))
}

// Event is one change of one agent, ready to be encoded as a CloudEvent.
type Event struct {
	// ID is unique for the transition and stable if it is published twice:
	// derived from AgentID and Sequence.
	ID string
	// Type is the CloudEvent type, e.g. TypePresenceChanged.
	Type string
	// AgentID is the agent, lower-case GUID; the CloudEvent subject.
	AgentID string
	// AgentName is the agent's display name when the event was observed.
	AgentName string
	// Sequence is the agent's event sequence number, starting at 1, strictly
	// increasing without gaps.
	Sequence uint64
	// Time is when the bridge observed the change.
	Time time.Time
	// Data is the event payload, encoded as JSON; its shape is the type's
	// schema in schemas/. It is one of the *Data types of this package (a
	// value, not a pointer), e.g. PresenceChangedData.
	Data any
}
