package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/natstest"
	"github.com/ccaas/presence-bridge/internal/publish"
)

func TestRunBenchSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, asJSON := range []bool{false, true} {
		var out bytes.Buffer
		res, err := RunBench(ctx, Options{Events: 3000, SDKEvents: 300, Agents: 500, MaxPending: 256, DataDir: t.TempDir(), JSON: asJSON}, &out)
		if err != nil {
			t.Fatalf("RunBench: %v", err)
		}
		for _, s := range []ScenarioResult{res.Raw, res.Bridge, res.SDK, res.SDKReused} {
			if s.EventsPerSecond <= 0 || s.LatencyP99Ms < s.LatencyP50Ms || s.Events == 0 {
				t.Errorf("implausible result %+v", s)
			}
		}
		if res.BridgeVsRaw <= 0 || res.BridgeVsSDK <= 0 {
			t.Errorf("ratios %v %v", res.BridgeVsRaw, res.BridgeVsSDK)
		}
		if asJSON {
			var back BenchResult
			if err := json.Unmarshal(out.Bytes(), &back); err != nil {
				t.Fatalf("JSON output: %v\n%s", err, out.String())
			}
			if back.Bridge.Events != 3000 {
				t.Errorf("JSON bridge events %d", back.Bridge.Events)
			}
		} else if !strings.Contains(out.String(), "bridge/raw") {
			t.Errorf("table output lacks the ratios:\n%s", out.String())
		}
	}
}

// TestRunBenchDefaultsToTheBridgeSettings: without options the bridge
// scenario publishes with the bridge's window and acknowledgement timeout.
func TestRunBenchDefaultsToTheBridgeSettings(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	res, err := RunBench(ctx, Options{Events: 500, SDKEvents: 50, Agents: 50, DataDir: t.TempDir()}, &out)
	if err != nil {
		t.Fatalf("RunBench: %v", err)
	}
	if res.MaxPending != publish.DefaultMaxPending || res.PublishTimeoutSeconds != publish.DefaultPublishTimeout.Seconds() {
		t.Errorf("window %d, ack timeout %gs; want the bridge's %d and %s", res.MaxPending, res.PublishTimeoutSeconds,
			publish.DefaultMaxPending, publish.DefaultPublishTimeout)
	}
	if res.Bridge.Events != 500 {
		t.Errorf("bridge scenario published %d events", res.Bridge.Events)
	}
}

// TestPublishContinuesAcrossCalls: MakeEvents' events published through one
// publisher in two calls are all stored, each agent's in sequence, and each
// call reports its own events and CPU.
func TestPublishContinuesAcrossCalls(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	const stream, prefix, agents = "PUBLISH_TEST", "test.agents", 40
	if _, err := publish.EnsureStream(ctx, js, publish.StreamOptions{Name: stream, SubjectPrefix: prefix, Manage: true}); err != nil {
		t.Fatal(err)
	}
	enc, err := publish.NewEncoder(publish.EncoderOptions{Source: "https://contoso.crm.dynamics.com", SubjectPrefix: prefix, BridgeVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := publish.NewPublisher(nc, publish.Options{Encoder: enc, Stream: stream})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	events := MakeEvents(5*agents, agents)
	for _, part := range [][]detector.Event{events[:agents], events[agents:]} {
		res, err := Publish(ctx, p, part, nil)
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		if res.Events != len(part) || res.CPU <= 0 || res.Seconds <= 0 {
			t.Errorf("result %+v, want %d events and a positive CPU time and duration", res, len(part))
		}
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != uint64(len(events)) {
		t.Fatalf("stream holds %v messages (%v), want %d", info, err, len(events))
	}
	last, err := s.GetLastMsgForSubject(ctx, contract.Subject(prefix, events[0].AgentID, detector.TypePresenceChanged))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := last.Header.Get("ce-id"), events[4*agents].ID; got != want {
		t.Errorf("first agent's last event %q, want %q", got, want)
	}
	if _, err := Publish(ctx, p, nil, nil); err == nil {
		t.Error("Publish of no events: no error")
	}
}
