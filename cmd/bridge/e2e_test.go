package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/nats-io/nats.go"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/detector"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// presenceHistory returns, per agent, the presence IDs in the order the
// simulator's ground-truth log set them (consecutive repeats collapsed).
func (h *harness) presenceHistory() map[string][]string {
	out := map[string][]string{}
	for _, c := range h.sim.Changes() {
		hist := out[c.AgentID]
		if len(hist) == 0 || hist[len(hist)-1] != c.State.PresenceID {
			out[c.AgentID] = append(hist, c.State.PresenceID)
		}
	}
	return out
}

// TestEndToEndMatchesGroundTruth runs the bridge binary against the
// simulator over HTTP and an embedded JetStream, steps the simulated
// organisation round by round, and checks that the stream tells every
// agent's presence history exactly as the simulator's ground truth has it,
// with no duplicate, no gap in sequences, and every event valid against its
// schema.
func TestEndToEndMatchesGroundTruth(t *testing.T) {
	h := newHarness(t, 12, 7)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := h.start(h.env(nil), "run")
	c := h.collect(ctx)
	testwait.Until(t, waitScale*30*time.Second, "first sight of every agent", func() bool { return h.caughtUp(c) })
	const rounds = 15
	for i := 0; i < rounds; i++ {
		h.sim.Step() // a change round; the bridge polls every 100 ms
		testwait.Until(t, waitScale*20*time.Second, fmt.Sprintf("round %d on the stream", i), func() bool { return h.caughtUp(c) })
	}
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("bridge exit status %d after SIGTERM", code)
	}

	events, errs := c.snapshot()
	for _, err := range errs {
		t.Error(err)
	}
	ids := map[string]bool{}
	lastSeq := map[string]uint64{}
	got := map[string][]string{}
	for _, ev := range events {
		if ids[ev.ID] {
			t.Errorf("duplicate event %s", ev.ID)
		}
		ids[ev.ID] = true
		if ev.Sequence != lastSeq[ev.Agent]+1 {
			t.Errorf("agent %s: sequence %d after %d", ev.Agent, ev.Sequence, lastSeq[ev.Agent])
		}
		lastSeq[ev.Agent] = ev.Sequence
		if ev.Type == "presence.changed" {
			cur := ev.Data["current"].(map[string]any)
			got[ev.Agent] = append(got[ev.Agent], cur["id"].(string))
		}
	}
	want := h.presenceHistory()
	if len(want) != 12 {
		t.Fatalf("ground truth covers %d agents, want 12", len(want))
	}
	changes := 0
	for agent, hist := range want {
		changes += len(hist) - 1
		if strings.Join(got[agent], ",") != strings.Join(hist, ",") {
			t.Errorf("agent %s presence history on the stream:\n got %v\nwant %v", agent, got[agent], hist)
		}
	}
	if changes < rounds {
		t.Fatalf("only %d presence changes in %d rounds: the test would prove little", changes, rounds)
	}
}

// TestCloudEventsSDKConsumerDecodesEvents receives the bridge's events with
// a consumer built on the CloudEvents SDK's NATS JetStream protocol, as a
// downstream team would, and checks what it decodes.
func TestCloudEventsSDKConsumerDecodesEvents(t *testing.T) {
	h := newHarness(t, 3, 11)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h.start(h.env(nil), "run")
	c := h.collect(ctx) // waits for the stream
	testwait.Until(t, waitScale*30*time.Second, "first events", func() bool { return h.caughtUp(c) })

	consumer, err := cejs.NewConsumerFromConn(h.nc, contract.Stream, contract.StreamSubjects(contract.SubjectPrefix), nil, []nats.SubOpt{nats.DeliverAll()})
	if err != nil {
		t.Fatalf("cloudevents consumer: %v", err)
	}
	defer consumer.Close(ctx)
	client, err := cloudevents.NewClient(consumer)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]cloudevents.Event{}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- client.StartReceiver(rctx, func(e cloudevents.Event) {
			mu.Lock()
			seen[e.ID()] = e
			mu.Unlock()
		})
	}()
	want, _ := c.snapshot()
	testwait.Until(t, waitScale*20*time.Second, "the SDK consumer to receive every event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) >= len(want)
	})
	stop()
	<-done
	mu.Lock()
	defer mu.Unlock()
	for _, ev := range want {
		e, ok := seen[ev.ID]
		if !ok {
			t.Errorf("SDK consumer missed %s", ev.ID)
			continue
		}
		if e.SpecVersion() != "1.0" || e.Type() != ev.Type || e.Subject() != ev.Agent || e.Source() != h.simURL+"/api/data/v9.2/systemusers("+ev.Agent+")" ||
			e.DataContentType() != "application/json" || !e.Time().Equal(ev.Time) || string(e.Data()) != string(ev.raw) {
			t.Errorf("SDK decoded %s as %s", ev.ID, e.String())
		}
		if v, ok := e.Extensions()["bridgeversion"]; !ok || v != "test-build" {
			t.Errorf("event %s bridgeversion = %v, want test-build", ev.ID, v)
		}
	}
}

// TestDemoPrintsEventsAndStopsCleanly starts `bridge demo` as a new user
// would (only its ports and data directory moved aside for the test) and
// expects readable event lines, then a clean stop on Ctrl-C. How long the
// first line takes is logged, not asserted: it measures the runner.
func TestDemoPrintsEventsAndStopsCleanly(t *testing.T) {
	h := &harness{t: t}
	p := h.start(map[string]string{
		"BRIDGE_DATA_DIR":             t.TempDir(),
		"BRIDGE_EMBEDDED_NATS_LISTEN": "127.0.0.1:-1",
		"BRIDGE_HTTP_ADDR":            "127.0.0.1:0",
	}, "demo")
	start := time.Now()
	testwait.Until(t, waitScale*30*time.Second, "the demo's first event line", func() bool {
		return strings.Contains(p.output(), "presence.changed") && strings.Contains(p.output(), "→")
	})
	t.Logf("first event line after %s", time.Since(start).Round(time.Millisecond))
	if code := p.stop(t, syscall.SIGINT, 20*time.Second); code != 0 {
		t.Fatalf("demo exit status %d after Ctrl-C\n%s", code, p.output())
	}
	if !strings.Contains(p.output(), "demo: stopped cleanly") {
		t.Fatalf("demo did not report a clean stop:\n%s", p.output())
	}
}

// TestDemoShowsEveryEventType runs `bridge demo` as the binary and expects
// a line of each of the nine event types and a summary line counting all
// nine. The demo's own flags and variables shorten it (polls every 200 ms,
// stale after 1 s without a successful poll, snapshots every 3 s); at its
// defaults the same scenario shows all nine within its first minute.
func TestDemoShowsEveryEventType(t *testing.T) {
	h := &harness{t: t}
	p := h.start(map[string]string{
		"BRIDGE_DATA_DIR":             t.TempDir(),
		"BRIDGE_EMBEDDED_NATS_LISTEN": "127.0.0.1:-1",
		"BRIDGE_HTTP_ADDR":            "127.0.0.1:0",
		"BRIDGE_STALE_AFTER":          "1s",
		"BRIDGE_SNAPSHOT_INTERVAL":    "3s",
	}, "demo", "--agents", "6", "--interval", "200ms", "--summary", "1s")
	types := detector.Types()
	if len(types) != 9 {
		t.Fatalf("the detector has %d event types, want 9", len(types))
	}
	start := time.Now()
	testwait.Until(t, waitScale*60*time.Second, "an event line of every type and a summary counting them", func() bool {
		out := p.output()
		for _, typ := range types {
			if !demoEventLine(out, typ) {
				return false
			}
		}
		return demoSummaryCounts(out, types)
	})
	t.Logf("every event type shown after %s", time.Since(start).Round(time.Millisecond))
	if code := p.stop(t, syscall.SIGINT, 20*time.Second); code != 0 {
		t.Fatalf("demo exit status %d after Ctrl-C\n%s", code, p.output())
	}
}

// demoEventLine reports whether out has an event line of type typ: the
// type as a whole word of a line that is not a summary.
func demoEventLine(out, typ string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "summary:") {
			continue
		}
		if slices.Contains(strings.Fields(line), typ) {
			return true
		}
	}
	return false
}

// demoSummaryCounts reports whether a summary line of out counts every one
// of types with a positive number (type=N).
func demoSummaryCounts(out string, types []string) bool {
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "summary:") {
			continue
		}
		all := true
		for _, typ := range types {
			i := strings.Index(line, typ+"=")
			if i < 0 {
				all = false
				break
			}
			rest := line[i+len(typ)+1:]
			if n, err := strconv.Atoi(strings.Fields(rest)[0]); err != nil || n < 1 {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}
