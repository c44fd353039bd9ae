package main

import (
	"context"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/examples/eventstest"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	alice = "394382b6-a4d4-ee11-904c-00224808a166"
	bob   = "cc05cf62-6242-ee11-be6e-6045bdd7ac2c"
	carol = "0e5a3f7e-0000-4000-8000-000000000003"
)

const (
	available = `{"id":"f523f628-c07a-e811-8162-000d3aa11f50","name":"Available","baseStatus":"Available"}`
	busy      = `{"id":"efdeb843-c07a-e811-8162-000d3aa11f50","name":"Busy","baseStatus":"Busy"}`
	meeting   = `{"id":"6a1e4c1c-0000-4000-8000-000000000001","name":"In a meeting","baseStatus":"Away"}`
	offline   = `{"id":"70139190-c07a-e811-8162-000d3aa11f50","name":"Offline","baseStatus":"Offline"}`
)

func changed(agent, name string, seq uint64, prev, cur string) eventstest.Event {
	return eventstest.Event{
		Agent: agent, Type: "presence.changed", Seq: seq,
		Time: time.Date(2025, 3, 4, 9, 0, int(seq), 0, time.UTC),
		Data: `{"agentId":"` + agent + `","agentName":"` + name + `","previous":` + prev + `,"current":` + cur + `}`,
	}
}

func TestRun(t *testing.T) {
	nc, js := eventstest.StartJetStream(t)
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: eventstest.StateBucket})
	if err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	// The bucket: Alice up to her sequence 4, Bob up to 3.
	for k, v := range map[string]string{
		alice: `{"agentId":"` + alice + `","agentName":"Alice Adams","sequence":4,"presence":` + busy + `,"stale":true}`,
		bob:   `{"agentId":"` + bob + `","agentName":"Bob Brown","sequence":3,"presence":` + meeting + `}`,
	} {
		if _, err := kv.Put(t.Context(), k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	// The stream before start: events the bucket reflects, and Bob's
	// sequence 4, published but not yet committed to the bucket.
	eventstest.Publish(t, js,
		changed(alice, "Alice Adams", 1, "null", available),
		changed(bob, "Bob Brown", 1, "null", meeting),
		changed(alice, "Alice Adams", 3, available, busy),
		changed(bob, "Bob Brown", 4, meeting, offline),
	)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := eventstest.NewLineBuffer()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nc, options{Stream: eventstest.Stream, SubjectPrefix: eventstest.SubjectPrefix, Bucket: eventstest.StateBucket}, out)
	}()

	out.WaitLines(t, 5) // the loaded view and Bob's uncommitted change
	eventstest.WaitConsumers(t, js, 1)
	// Live: a new agent, a newer change for Alice, a repeat of it (dropped by
	// JetStream as a duplicate ID), and a type the view does not follow.
	eventstest.Publish(t, js,
		changed(carol, "Carol Chen", 1, "null", available),
		changed(alice, "Alice Adams", 5, busy, available),
		changed(alice, "Alice Adams", 5, busy, available),
		eventstest.Event{Agent: alice, Type: "sessions.changed", Seq: 6, Time: time.Date(2025, 3, 4, 9, 0, 6, 0, time.UTC), Data: `{"agentName":"Alice Adams"}`},
		changed(bob, "Bob Brown", 7, offline, available),
	)
	out.WaitLines(t, 8)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	want := "2 agents\n" +
		"Alice Adams  Busy  seq 4\n" +
		"Bob Brown  In a meeting (Away)  seq 3\n" +
		"live:\n" +
		"Bob Brown  In a meeting (Away) → Offline  seq 4\n" +
		"Carol Chen  (none) → Available  seq 1\n" +
		"Alice Adams  Busy → Available  seq 5\n" +
		"Bob Brown  Offline → Available  seq 7\n"
	if got := out.String(); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
}

func TestRunMissingBucket(t *testing.T) {
	nc, _ := eventstest.StartJetStream(t)
	err := run(t.Context(), nc, options{Stream: eventstest.Stream, SubjectPrefix: eventstest.SubjectPrefix, Bucket: "nope"}, eventstest.NewLineBuffer())
	if err == nil || err.Error() != "open bucket nope: nats: bucket not found" {
		t.Fatalf("run = %v, want the bucket error", err)
	}
}
