// Package publish puts the detector's events on NATS JetStream as CloudEvents:
// the NATS connection (servers, authentication, TLS, reconnects), the stream
// (created, verified or updated), the CloudEvents encoding (binary content
// mode), and the [Publisher], an asynchronous publisher with a bounded window
// that keeps every agent's events in sequence order through retries, server
// restarts and stream leader changes.
//
// Wiring, in cmd/bridge:
//
//	metrics := publish.NewMetrics(reg)
//	nc, err := publish.Connect(ctx, publish.ConnOptions{URL: cfg.NATSURL, CredsFile: ..., Logger: log, Metrics: metrics})
//	js, err := jetstream.New(nc)
//	err = publish.EnsureStream(ctx, js, publish.StreamOptions{Name: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, Manage: cfg.StreamManage, ...})
//	enc, err := publish.NewEncoder(publish.EncoderOptions{Source: cfg.OrgURL, SubjectPrefix: cfg.SubjectPrefix, BridgeVersion: version})
//	pub, err := publish.NewPublisher(nc, publish.Options{Encoder: enc, Stream: cfg.Stream, MaxPending: cfg.PublishMaxPending, Logger: log, Metrics: metrics})
//	...
//	err = pub.Enqueue(ctx, events, func(err error) { /* commit state when err == nil */ })
//	...
//	err = pub.Close(shutdownCtx) // waits for what is in flight
//	nc.Drain()
//
// Publisher guarantees: per agent one event in flight, so events are stored
// in sequence order; every ack is awaited with Options.PublishTimeout; a
// failed, timed-out or disconnected publish is retried with backoff and the
// same Nats-Msg-Id before the agent's next event (other agents go on); while
// NATS is down the agents are parked and the window fills, so Enqueue blocks
// (the source pauses); a duplicate ack counts as success
// (ccaas_bridge_publish_duplicates_total) once the stored message is read
// back and found to be this very event; if another writer's event holds the
// ID, the agent's queued events fail with detector.ErrConflict. Errors JetStream gives for good
// (message too large, a failed expectation header) fail the agent's queued
// batches with ErrRejected so no gap is published. Expected-last-subject-
// sequence fencing is not offered: fence writers with the state bucket's
// revision check.
//
// Readiness: Publisher.Status(ctx).Ready() (connected and stream present);
// Status also gives the window in use and the oldest unpublished event's age.
//
// Message format: subject <prefix>.<agentId>.<type>; headers ce-specversion,
// ce-id, ce-source (the agent's Dataverse URI,
// <org>/api/data/v9.2/systemusers(<agentId>)), ce-type, ce-subject, ce-time,
// ce-datacontenttype, ce-dataschema, ce-sequence (20-digit zero-padded),
// ce-bridgeversion, as the CloudEvents SDK's nats_jetstream WriteMsg writes
// them and then percent-encoded as the NATS binding requires (package
// ceheader; the SDK does not encode), and Nats-Msg-Id = the event ID; body =
// the JSON of Event.Data. [Decode] percent-decodes before the SDK reads them.
package publish
