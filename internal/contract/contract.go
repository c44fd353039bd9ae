// Package contract owns the names of the bridge's public contract: the
// stream, the subject prefix and the subjects built from it, the key-value
// buckets, and where the event schemas are published. Configuration,
// publishing, reading history, the operator commands and the tests all take
// these names from here; the standalone examples under examples/ keep their
// own copies on purpose (they use public libraries only).
//
// The stream, prefix and bucket names are defaults: BRIDGE_STREAM,
// BRIDGE_SUBJECT_PREFIX and the BRIDGE_*_BUCKET variables change them, and a
// test in internal/config keeps those variables' defaults equal to these.
package contract

// Names of the contract's defaults.
const (
	// Stream is the JetStream stream capturing every event (BRIDGE_STREAM).
	Stream = "CCAAS_AGENTS"
	// SubjectPrefix is the first tokens of every event subject
	// (BRIDGE_SUBJECT_PREFIX): <prefix>.<agentId>.<type>.
	SubjectPrefix = "ccaas.agents"
	// StateBucket is the key-value bucket holding every agent's current
	// state, keyed by agent ID (BRIDGE_STATE_BUCKET).
	StateBucket = "ccaas_agents"
	// LeaseBucket is the key-value bucket of the shard leases
	// (BRIDGE_LEASE_BUCKET).
	LeaseBucket = "ccaas_bridge_leases"
	// FeedBucket is the key-value bucket of the change feed's watermark
	// (BRIDGE_FEED_BUCKET).
	FeedBucket = "ccaas_bridge_feed"
	// SchemaBaseURL is where the JSON Schemas of schemas/ are published: an
	// event's dataschema, and each schema's $id, is SchemaBaseURL + name +
	// ".schema.json".
	SchemaBaseURL = "https://raw.githubusercontent.com/ccaas/presence-bridge/main/schemas/"
)

// Subject returns the subject of one event: <prefix>.<agentId>.<type>.
func Subject(prefix, agentID, eventType string) string {
	return prefix + "." + agentID + "." + eventType
}

// AgentSubjects returns the filter of every event of one agent:
// <prefix>.<agentId>.>.
func AgentSubjects(prefix, agentID string) string { return prefix + "." + agentID + ".>" }

// Filter returns the subject filter of one agent's events of one type; an
// empty agent matches every agent and an empty type every type.
func Filter(prefix, agentID, eventType string) string {
	if agentID == "" {
		agentID = "*"
	}
	if eventType == "" {
		eventType = ">"
	}
	return Subject(prefix, agentID, eventType)
}

// StreamSubjects returns the filter the stream captures: <prefix>.>.
func StreamSubjects(prefix string) string { return prefix + ".>" }

// DataSchema returns the URL of the JSON Schema of an event type's data (or
// of the state bucket's values, "agent-state").
func DataSchema(name string) string { return SchemaBaseURL + name + ".schema.json" }
