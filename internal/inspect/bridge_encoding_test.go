package inspect

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/examples/eventstest"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/publish"
)

// TestReadsTheBridgesEncoding publishes events encoded by the bridge's own
// encoder (internal/publish) and reads them with Tail and Replay.
func TestReadsTheBridgesEncoding(t *testing.T) {
	js := startJetStream(t)
	enc, err := publish.NewEncoder(publish.EncoderOptions{Source: "https://contoso.crm.dynamics.com", BridgeVersion: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 3, 4, 9, 30, 0, 0, time.UTC)
	busy := detector.Presence{ID: "efdeb843-c07a-e811-8162-000d3aa11f50", Name: "Busy", BaseStatus: "Busy"}
	avail := detector.Presence{ID: "f523f628-c07a-e811-8162-000d3aa11f50", Name: "Available", BaseStatus: "Available"}
	events := []detector.Event{
		{ID: detector.EventID(alice, 7), Type: detector.TypePresenceChanged, AgentID: alice, AgentName: "Alice Adams", Sequence: 7, Time: at,
			Data: detector.PresenceChangedData{AgentID: alice, AgentName: "Alice Adams", Previous: &avail, Current: busy}},
		{ID: detector.EventID(alice, 8), Type: detector.TypeChannelsChanged, AgentID: alice, AgentName: "Alice Adams", Sequence: 8, Time: at.Add(time.Second),
			Data: detector.ChannelsChangedData{AgentID: alice, AgentName: "Alice Adams",
				Previous: &detector.Channels{Allowed: []string{"chat", "voice"}, Disabled: []string{}},
				Current:  detector.Channels{Allowed: []string{"chat"}, Disabled: []string{}},
				Added:    detector.Channels{Allowed: []string{}, Disabled: []string{}},
				Removed:  detector.Channels{Allowed: []string{"voice"}, Disabled: []string{}}}},
	}
	for _, ev := range events {
		msg, err := enc.Encode(ev)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		if _, err := js.PublishMsg(t.Context(), msg); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}

	want := "2025-03-04T09:30:00Z  Alice Adams  presence.changed  Available → Busy\n" +
		"2025-03-04T09:30:01Z  Alice Adams  channels.changed  channels [chat voice] → [chat] (-voice)\n"
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := eventstest.NewLineBuffer()
	done := make(chan error, 1)
	go func() { done <- Tail(ctx, js, TailOptions{Since: at.Add(-24 * time.Hour), Agent: alice}, out) }()
	out.WaitLines(t, 2)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Tail: %v", err)
	}
	if got := out.String(); got != want {
		t.Errorf("Tail output:\n%s\nwant:\n%s", got, want)
	}

	var nd bytes.Buffer
	if _, err := Replay(t.Context(), js, ReplayOptions{}, &nd, &nd); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	for _, frag := range []string{`"id":"` + alice + `-7"`, `"bridgeversion":"1.2.3"`, `"sequence":"00000000000000000007"`, `"data":{"agentId":"` + alice + `"`} {
		if !strings.Contains(nd.String(), frag) {
			t.Errorf("replay output lacks %s:\n%s", frag, nd.String())
		}
	}
}
