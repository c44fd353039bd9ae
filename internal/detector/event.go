// Package detector keeps the last known state of every agent and turns each
// new observation from the source into the events that describe what changed.
// It holds no NATS code: durable state goes through the StateStore interface.
package detector

import "time"

// Event types, also the last tokens of the NATS subject.
const (
	TypePresenceChanged = "presence.changed"
	TypeSessionsChanged = "sessions.changed"
	TypeChannelsChanged = "channels.changed"
)

// Event is one change of one agent, ready to be encoded as a CloudEvent.
type Event struct {
	// ID is unique for the transition and stable if it is published twice:
	// derived from AgentID and Sequence.
	ID string
	// Type is the CloudEvent type, e.g. TypePresenceChanged.
	Type string
	// AgentID is the agent, lower-case GUID; the CloudEvent subject.
	AgentID string
	// Sequence is the agent's event sequence number, starting at 1, strictly
	// increasing without gaps.
	Sequence uint64
	// Time is when the bridge observed the change.
	Time time.Time
	// Data is the event payload, encoded as JSON; its shape is the type's
	// schema in schemas/.
	Data any
}
