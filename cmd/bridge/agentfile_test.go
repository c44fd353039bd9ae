package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// The agent file read at start is the list in force: a bridge with leases
// on polls its agents and no other, applies a rewritten file while it runs
// (the agent added is polled, the agent removed is forgotten: a change of
// its presence afterwards brings no event), and logs "agent file changed"
// for the rewrite only, not for the file it started with.
func TestAgentFileChangesApplyWhileRunning(t *testing.T) {
	h := newHarness(t, 3, 11, withSim(func(o *simulator.Options) { o.ChangeProbability = 0 }))
	ids := h.sim.AgentIDs()
	kept, removed, added := ids[0], ids[1], ids[2]
	path := filepath.Join(t.TempDir(), "agents")
	write := func(lines ...string) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("# two of the organisation's three agents", kept, removed)
	env := h.env(map[string]string{"BRIDGE_AGENT_IDS_FILE": path})
	delete(env, "BRIDGE_AGENT_IDS")
	p := h.start(env, "run")
	c := h.collect(t.Context())

	count := func(agent string) int {
		events, errs := c.snapshot()
		if len(errs) > 0 {
			t.Fatalf("undecodable events: %v", errs)
		}
		n := 0
		for _, ev := range events {
			if ev.Agent == agent {
				n++
			}
		}
		return n
	}
	// change gives agent a presence other than its current one.
	change := func(agent string) string {
		t.Helper()
		next := simulator.PresenceBusy
		if st, _ := h.sim.State(agent); st.PresenceID == next {
			next = simulator.PresenceAway
		}
		if _, changed, err := h.sim.SetPresence(agent, next); err != nil || !changed {
			t.Fatalf("set the presence of %s: changed %v, %v", agent, changed, err)
		}
		return next
	}
	presenceOnStream := func(agent, presence string) func() bool {
		return func() bool {
			events, _ := c.snapshot()
			return latestPresence(events)[agent] == presence
		}
	}
	testwait.Until(t, waitScale*30*time.Second, "the file's agents on the stream", func() bool { return count(kept) > 0 && count(removed) > 0 })
	if n := count(added); n != 0 {
		t.Fatalf("%d events of an agent the file does not list", n)
	}

	write(kept, added)
	testwait.Until(t, waitScale*30*time.Second, "the added agent on the stream", func() bool { return count(added) > 0 })
	before := count(removed)
	change(removed)
	// Three changes of another agent, each seen before the next is made:
	// the polls that see them are at least two intervals after the
	// removed agent's change, which a bridge still polling it would have
	// published by then.
	for i := range 3 {
		presence := change(kept)
		testwait.Until(t, waitScale*20*time.Second, fmt.Sprintf("change %d of the kept agent on the stream", i+1), presenceOnStream(kept, presence))
	}
	if n := count(removed); n != before {
		t.Errorf("the removed agent has %d events after its removal", n-before)
	}
	if n := strings.Count(p.output(), `"msg":"agent file changed"`); n != 1 {
		t.Errorf(`"agent file changed" logged %d times, want once (the rewrite)`, n)
	}
}
