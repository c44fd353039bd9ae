package inspect

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/ceheader"
	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/natstest"
)

const (
	alice = "394382b6-a4d4-ee11-904c-00224808a166"
	bob   = "cc05cf62-6242-ee11-be6e-6045bdd7ac2c"
)

// startJetStream runs an in-process JetStream server with the contract's
// stream and returns a JetStream client.
func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	js := natstest.JetStream(t)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: contract.Stream, Subjects: []string{contract.SubjectPrefix + ".>"},
	}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	return js
}

// aliceLastKnown is Alice's state after her third event.
const aliceLastKnown = `{"agentId":"` + alice + `","agentName":"Alice Adams","sequence":3,"observedAt":"2025-03-04T09:00:03Z",` +
	`"presence":{"id":"efdeb843-c07a-e811-8162-000d3aa11f50","name":"Busy","baseStatus":"Busy"},"presenceSince":"2025-03-04T09:00:03Z",` +
	`"sessions":{"activeBrowserSessions":1,"loginTime":1741078800},"sessionsSince":"2025-03-04T09:00:01Z",` +
	`"channels":{"allowed":["chat"],"disabled":[]},"channelsSince":"2025-03-04T09:00:00Z","offline":false,"unattended":false,"stale":false}`

// fixtureEvent is one known event of the test stream.
type fixtureEvent struct {
	agent, typ string
	seq        uint64
	data       string // JSON
}

// baseTime is the observation time of the first fixture event; event n is
// observed n seconds later.
var baseTime = time.Date(2025, 3, 4, 9, 0, 0, 0, time.UTC)

func fixture() []fixtureEvent {
	return []fixtureEvent{
		{alice, "presence.changed", 1, `{"agentId":"` + alice + `","agentName":"Alice Adams","previous":null,"current":{"id":"f523f628-c07a-e811-8162-000d3aa11f50","name":"Available","baseStatus":"Available"},"previousSince":null,"previousDurationSeconds":null,"unattended":false,"offline":false}`},
		{alice, "sessions.changed", 2, `{"agentId":"` + alice + `","agentName":"Alice Adams","change":"initial","previous":null,"current":{"activeBrowserSessions":1,"loginTime":1741078800},"unattended":false,"offline":false}`},
		{bob, "presence.changed", 1, `{"agentId":"` + bob + `","agentName":"Bob Brown","previous":null,"current":{"id":"6a1e4c1c-0000-4000-8000-000000000001","name":"In a meeting","baseStatus":"Away"},"previousSince":null,"previousDurationSeconds":null,"unattended":false,"offline":false}`},
		{alice, "presence.changed", 3, `{"agentId":"` + alice + `","agentName":"Alice Adams","previous":{"id":"f523f628-c07a-e811-8162-000d3aa11f50","name":"Available","baseStatus":"Available"},"current":{"id":"efdeb843-c07a-e811-8162-000d3aa11f50","name":"Busy","baseStatus":"Busy"},"previousSince":"2025-03-04T09:00:00Z","previousDurationSeconds":3,"unattended":false,"offline":false}`},
		{bob, "channels.changed", 2, `{"agentId":"` + bob + `","agentName":"Bob Brown","previous":{"allowed":["chat","voice"],"disabled":[]},"current":{"allowed":["chat","voice"],"disabled":["voice"]},"added":{"allowed":[],"disabled":["voice"]},"removed":{"allowed":[],"disabled":[]}}`},
		{bob, "agent.offline", 3, `{"agentId":"` + bob + `","agentName":"Bob Brown","reason":"logout","since":"2025-03-04T09:00:05Z","presence":{"id":"6a1e4c1c-0000-4000-8000-000000000001","name":"In a meeting","baseStatus":"Away"},"activeBrowserSessions":0}`},
		{alice, "presence.stale", 4, `{"agentId":"` + alice + `","agentName":"Alice Adams","lastKnown":` + aliceLastKnown + `,"lastSuccessAt":"2025-03-04T09:00:03Z","errorClass":"rate_limited","staleAfterSeconds":60}`},
	}
}

// toEvent builds the CloudEvent of f as the bridge would, observed at.
func (f fixtureEvent) toEvent(t *testing.T, at time.Time) event.Event {
	t.Helper()
	e := event.New()
	e.SetID(fmt.Sprintf("%s-%d", f.agent, f.seq))
	e.SetSource("https://contoso.crm.dynamics.com/api/data/v9.2/systemusers(" + f.agent + ")")
	e.SetType(f.typ)
	e.SetSubject(f.agent)
	e.SetTime(at)
	e.SetDataSchema("https://raw.githubusercontent.com/ccaas/presence-bridge/main/schemas/" + f.typ + ".schema.json")
	e.SetExtension("sequence", fmt.Sprintf("%020d", f.seq))
	e.SetExtension("bridgeversion", "test")
	if err := e.SetData(event.ApplicationJSON, []byte(f.data)); err != nil {
		t.Fatal(err)
	}
	return e
}

// publishFixture encodes events in binary content mode (header values
// percent-encoded as the NATS binding requires) and publishes them with
// their ID as Nats-Msg-Id, waiting for each ack; event i is observed at
// baseTime + offset + i seconds.
func publishFixture(t *testing.T, js jetstream.JetStream, offset time.Duration, evs ...fixtureEvent) {
	t.Helper()
	for i, f := range evs {
		e := f.toEvent(t, baseTime.Add(offset+time.Duration(i)*time.Second))
		var body bytes.Buffer
		hdr, err := cejs.WriteMsg(t.Context(), binding.ToMessage(&e), &body)
		if err != nil {
			t.Fatalf("encode event: %v", err)
		}
		for k, vs := range hdr {
			if strings.HasPrefix(k, "ce-") {
				hdr.Set(k, ceheader.Encode(vs[0]))
			}
		}
		msg := &nats.Msg{Subject: contract.SubjectPrefix + "." + f.agent + "." + f.typ, Header: hdr, Data: body.Bytes()}
		if _, err := js.PublishMsg(t.Context(), msg, jetstream.WithMsgID(e.ID())); err != nil {
			t.Fatalf("publish event: %v", err)
		}
	}
}
