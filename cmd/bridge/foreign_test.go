package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// TestForeignContentOnAgentSubjectsAndInTheBucketIsSkipped plants, while no
// bridge runs, what the bridge did not write on the subjects of agents it
// has a history for: bytes that are no CloudEvent, a CloudEvent of another
// agent (ce-subject and data), one whose data names another agent, and an
// event type this version does not know; and in the state bucket a value
// that is not JSON and a value of one agent under another agent's key. The
// bridge must start, keep publishing for those agents with their sequences
// continuing, and keep doing so when junk arrives again while it runs. Only
// the bridge's own events count for the stream's properties: the planted
// messages are left out by their stream sequence. The stream's and the
// bucket's foreign content are tried apart and together, so that a failure
// says which one the bridge does not survive.
func TestForeignContentOnAgentSubjectsAndInTheBucketIsSkipped(t *testing.T) {
	tests := []struct {
		name           string
		stream, bucket bool
	}{
		{"on agent subjects", true, false},
		{"in the state bucket", false, true},
		{"both", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { testForeignContent(t, tt.stream, tt.bucket) })
	}
}

// testForeignContent runs the scenario with the stream's foreign content,
// the bucket's, or both.
func testForeignContent(t *testing.T, onStream, inBucket bool) {
	reqs := newRequestLog()
	h := newHarness(t, 3, 17, withSim(func(o *simulator.Options) { o.OnRequest = reqs.record }))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := h.env(map[string]string{"GORACE": raceExitNow})
	ids := h.sim.AgentIDs()
	x, y, z := ids[0], ids[1], ids[2]

	// A history: every agent's first events and one change each.
	p := h.start(env, "run")
	testwait.Until(t, waitScale*60*time.Second, "first sight of every agent", func() bool {
		failIfExited(t, p, "starting")
		return h.bucketMismatch(ctx) == ""
	})
	h.changeEveryPresence(t)
	testwait.Until(t, waitScale*30*time.Second, "the change on the stream and in the bucket", func() bool { return h.bucketMismatch(ctx) == "" })
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM", code)
	}
	before := map[string]int{}
	var yChanged *writtenEvent
	history := h.bridgeEvents(ctx, nil)
	for i, ev := range history {
		before[ev.Agent]++
		if ev.Agent == y && ev.Type == detector.TypePresenceChanged {
			yChanged = &history[i]
		}
	}
	if yChanged == nil {
		t.Fatalf("no presence.changed of agent %s on the stream", y)
	}

	planted := map[uint64]bool{}
	plant := func(subject string, hdr nats.Header, data []byte) {
		t.Helper()
		ack, err := h.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: hdr, Data: data})
		if err != nil {
			t.Fatalf("plant a message on %s: %v", subject, err)
		}
		planted[ack.Sequence] = true
	}
	// ceHeaders are the binary-mode attributes of a CloudEvent on the
	// stream, as README describes them, with a sequence far beyond the
	// agent's so that none can be taken for the bridge's next event.
	ceHeaders := func(typ, subject, id string, seq int) nats.Header {
		hdr := nats.Header{}
		hdr.Set(jetstream.MsgIDHeader, id)
		hdr.Set("ce-specversion", "1.0")
		hdr.Set("ce-id", id)
		hdr.Set("ce-source", h.simURL)
		hdr.Set("ce-type", typ)
		hdr.Set("ce-subject", subject)
		hdr.Set("ce-time", time.Now().UTC().Format(time.RFC3339Nano))
		hdr.Set("ce-datacontenttype", "application/json")
		hdr.Set("ce-dataschema", contract.DataSchema(typ))
		hdr.Set("ce-sequence", fmt.Sprintf("%020d", seq))
		hdr.Set("ce-bridgeversion", "test-planted")
		return hdr
	}
	subject := func(agent, typ string) string { return contract.Subject(contract.SubjectPrefix, agent, typ) }
	junk := func(agent string) {
		plant(subject(agent, detector.TypePresenceChanged), nil, []byte("\x00\xffnot a CloudEvent {"))
	}

	future := func(agent string) []byte {
		b, err := json.Marshal(map[string]any{"agentId": agent, "agentName": "Planted", "mood": "optimistic"})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if onStream {
		junk(x)
		// Agent y's last presence.changed, word for word, on x's subject.
		plant(subject(x, detector.TypePresenceChanged), ceHeaders(detector.TypePresenceChanged, y, fmt.Sprintf("%s-%d", y, 900001), 900001), yChanged.raw)
		// On x's subject and naming x, but y's data.
		plant(subject(x, detector.TypePresenceChanged), ceHeaders(detector.TypePresenceChanged, x, fmt.Sprintf("%s-%d", x, 900002), 900002), yChanged.raw)
		// A type from a newer version.
		plant(subject(x, "presence.future"), ceHeaders("presence.future", x, fmt.Sprintf("%s-%d", x, 900003), 900003), future(x))
	}
	if inBucket {
		kv, err := h.js.KeyValue(ctx, contract.StateBucket)
		if err != nil {
			t.Fatalf("open the state bucket: %v", err)
		}
		if _, err := kv.Put(ctx, x, []byte("{not json")); err != nil {
			t.Fatalf("put garbage under %s: %v", x, err)
		}
		yState, err := kv.Get(ctx, y)
		if err != nil {
			t.Fatalf("get %s: %v", y, err)
		}
		if _, err := kv.Put(ctx, z, yState.Value()); err != nil {
			t.Fatalf("put %s's value under %s: %v", y, z, err)
		}
	}

	// The bridge starts and publishes the agents' next changes.
	restarted := time.Now()
	p = h.start(env, "run")
	ops := opsAddr(t, p)
	testwait.Until(t, waitScale*60*time.Second, "the bridge to poll and be ready in spite of the foreign content", func() bool {
		failIfExited(t, p, "starting with the foreign content")
		return reqs.answeredSince(restarted) && strings.Contains(scrape(ops, "/readyz"), `"status":"ready"`)
	})
	caughtUp := func(what string) {
		t.Helper()
		h.caughtUpBucket(ctx, t, 30*time.Second, what, p)
		latest := latestPresence(plainEvents(h.bridgeEvents(ctx, planted)))
		for _, st := range h.sim.Agents() {
			if latest[st.AgentID] != st.PresenceID {
				t.Errorf("%s: agent %s's last presence on the stream %s, simulator %s", what, st.AgentID, latest[st.AgentID], st.PresenceID)
			}
		}
	}
	h.changeEveryPresence(t)
	caughtUp("a change of every agent after the restart")

	if onStream {
		// Junk again while the bridge runs, on x's and y's subjects.
		junk(x)
		plant(subject(y, "presence.future"), ceHeaders("presence.future", y, fmt.Sprintf("%s-%d", y, 900004), 900004), future(y))
		junk(y)
	}
	h.changeEveryPresence(t)
	caughtUp("a second change of every agent")
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM", code)
	}

	events := plainEvents(h.bridgeEvents(ctx, planted))
	h.checkWholeStream(ctx, events)
	after := map[string]int{}
	for _, ev := range events {
		after[ev.Agent]++
	}
	for _, agent := range ids {
		if after[agent] < before[agent]+2 {
			t.Errorf("agent %s: %d events before the foreign content, %d after two changes: its history did not continue", agent, before[agent], after[agent])
		}
	}
	t.Logf("%d planted messages skipped; %d bridge events %v", len(planted), len(events), countTypes(events))
}
