// Package detector keeps the last known state of every agent and turns each
// new observation from the source into the events that describe what changed.
// It holds no NATS code: durable state goes through the StateStore interface
// (implemented by internal/statebucket).
//
// The pure part is Diff (previous state + snapshot -> next state + events),
// Stale and Snapshot; Apply folds an event over a state, so a consumer of the
// stream can rebuild every agent's state, and Diff is tested by that
// property. Detector is the stateful part used by the pipeline:
//
//	det, err := detector.New(detector.Options{Store: store, StaleAfter: staleAfter, Logger: log})
//	n, err := det.Load(ctx)               // restore every agent's state and sequence
//	c := det.Observe(observation)         // nil, or a *Change: events to publish
//	// publish c.Events (in order per agent); once acknowledged:
//	err = det.Commit(ctx, c)              // compare-and-set; ErrConflict: another bridge won
//	// or, when publishing failed:
//	det.Abandon(c)                        // the next observation re-emits with the same IDs
//
// Sequences are per agent, start at 1, have no gaps and continue across
// restarts; an event's ID is "<agentId>-<sequence>" (EventID), so a change
// republished after a crash between publish and commit carries the same IDs
// and JetStream drops the duplicate within the stream's duplicate window
// (BRIDGE_DUPLICATE_WINDOW): that window bounds how long such a crash may
// last without a duplicate reaching consumers.
package detector

import (
	"fmt"
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

// SchemaBaseURL is where the JSON Schemas of schemas/ are published; an event
// type's schema is SchemaBaseURL + type + ".schema.json".
const SchemaBaseURL = "https://raw.githubusercontent.com/ccaas/presence-bridge/main/schemas/"

// DataSchema returns the URL of the JSON Schema of an event type's data, the
// CloudEvent dataschema attribute and the schema file's $id.
func DataSchema(eventType string) string { return SchemaBaseURL + eventType + ".schema.json" }

// EventID returns the ID of an agent's event with the given sequence:
// "<agentId>-<sequence>", also used as Nats-Msg-Id.
func EventID(agentID string, sequence uint64) string {
	return fmt.Sprintf("%s-%d", agentID, sequence)
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
