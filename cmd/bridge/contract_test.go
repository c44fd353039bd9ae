package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// TestSourceSequenceOrdersEachAgent runs the bridge with several agents and
// reads the stream as a spec-following consumer does (header values
// percent-decoded). The CloudEvents sequence extension orders events within
// a source, so every agent must have its own source, the Dataverse URI
// <org>/api/data/v9.2/systemusers(<agentId>), and (source, sequence) must
// be unique and increasing per source across the run. (BRIDGE_ORG_URL
// takes no path, so the percent-encoding of characters such as "%" in a
// source is tested on the encoder: TestEncodeMatchesSDKWriteMsg.)
func TestSourceSequenceOrdersEachAgent(t *testing.T) {
	h := newHarness(t, 6, 23)
	org := h.simURL
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := h.start(h.env(map[string]string{"BRIDGE_ORG_URL": org}), "run")
	c := h.collect(ctx)
	testwait.Until(t, waitScale*30*time.Second, "first sight of every agent", func() bool { return h.caughtUp(c) })
	// Step the organisation until every agent has several events (a
	// change round does not change every agent).
	for i := 0; i < 60 && !everyAgentHas(c, 6, 5); i++ {
		h.sim.Step()
		testwait.Until(t, waitScale*20*time.Second, fmt.Sprintf("round %d on the stream", i), func() bool { return h.caughtUp(c) })
	}
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("bridge exit status %d after SIGTERM", code)
	}

	events, errs := c.snapshot()
	for _, err := range errs {
		t.Error(err)
	}
	type key struct {
		source string
		seq    uint64
	}
	seen := map[key]string{}
	last := map[string]uint64{}
	perSource := map[string]int{}
	for _, ev := range events {
		want := org + "/api/data/v9.2/systemusers(" + ev.Agent + ")"
		if ev.Source != want {
			t.Errorf("event %s: source %q, want %q", ev.ID, ev.Source, want)
		}
		k := key{ev.Source, ev.Sequence}
		if other, dup := seen[k]; dup {
			t.Errorf("(source, sequence) = (%s, %d) held by %s and %s", k.source, k.seq, other, ev.ID)
		}
		seen[k] = ev.ID
		if ev.Sequence <= last[ev.Source] {
			t.Errorf("source %s: sequence %d after %d", ev.Source, ev.Sequence, last[ev.Source])
		}
		last[ev.Source] = ev.Sequence
		perSource[ev.Source]++
	}
	if len(perSource) != 6 {
		t.Fatalf("%d sources on the stream, want one per agent (6)", len(perSource))
	}
	for src, n := range perSource {
		if n < 5 {
			t.Errorf("source %s has %d events: too few to show an order", src, n)
		}
	}

	// The raw header carries the percent-encoded form.
	stream, err := h.js.Stream(ctx, contract.Stream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, contract.StreamSubjects(contract.SubjectPrefix))
	if err != nil {
		t.Fatal(err)
	}
	if raw := msg.Header.Get("ce-source"); !strings.HasPrefix(raw, org+"/api/data/v9.2/systemusers(") {
		t.Errorf("ce-source on the wire %q, want the agent's Dataverse URI under %s", raw, org)
	}
}

// everyAgentHas reports whether the collector holds at least n events of
// each of agents agents.
func everyAgentHas(c *collector, agents, n int) bool {
	events, _ := c.snapshot()
	count := map[string]int{}
	for _, ev := range events {
		count[ev.Agent]++
	}
	if len(count) < agents {
		return false
	}
	for _, k := range count {
		if k < n {
			return false
		}
	}
	return true
}
