// Package publish puts the detector's events on NATS JetStream as CloudEvents:
// the NATS connection (servers, authentication, TLS, reconnects), the stream
// (created, verified or updated), the CloudEvents encoding (binary content
// mode), and the [Publisher], an asynchronous publisher with a bounded window
// that keeps every agent's events in sequence order through retries, server
// restarts and stream leader changes.
//
// See the package example for the wiring cmd/bridge uses, from the
// connection to the shutdown.
//
// Publisher guarantees: per agent one event in flight, so events are stored
// in sequence order; every event is fenced with
// Nats-Expected-Last-Subject-Sequence (the stream sequence of the agent's
// previous event) on the agent's subjects <prefix>.<agentId>.>, so JetStream
// stores it only where it follows on from that event; every ack is awaited
// with Options.PublishTimeout; a failed, timed-out or disconnected publish is
// retried with backoff and the same Nats-Msg-Id before the agent's next event
// (other agents go on); while NATS is down the agents are parked and the
// window fills, so Enqueue blocks (the source pauses). A duplicate ack or a
// failed fence is decided by reading the stored message: this very event
// (an earlier attempt landed) is success (ccaas_bridge_publish_duplicates_total);
// anything else means the agent's history moved on, and the agent's queued
// events fail with detector.ErrConflict. Errors JetStream gives for good
// (message too large) fail the agent's queued batches with ErrRejected so no
// gap is published.
//
// Readiness: Publisher.Status(ctx).Ready() (connected, and the stream looked
// up on the server whatever ctx is); Status also gives the window in use and
// the oldest unpublished event's age.
//
// Message format: subject <prefix>.<agentId>.<type>; headers ce-specversion,
// ce-id, ce-source (the agent's Dataverse URI,
// <org>/api/data/v9.2/systemusers(<agentId>)), ce-type, ce-subject, ce-time,
// ce-datacontenttype, ce-dataschema, ce-sequence (20-digit zero-padded),
// ce-bridgeversion, as the CloudEvents SDK's nats_jetstream WriteMsg writes
// them and then percent-encoded as the NATS binding requires (package
// ceheader; the SDK does not encode), and Nats-Msg-Id = the event ID; body =
// the JSON of Event.Data. [Decode] percent-decodes before the SDK reads them.
// The subjects, the fence filter, the dataschema URL and the default stream
// name and prefix are internal/contract's; the defaults of [Options] and
// [StreamOptions] equal the BRIDGE_ variables' defaults (a test in cmd/bridge
// keeps them so).
package publish
