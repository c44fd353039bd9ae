package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ccaas/presence-bridge/internal/contract"
	"github.com/ccaas/presence-bridge/internal/simulator"
	"github.com/ccaas/presence-bridge/internal/testwait"
)

// leaseHolder returns the instance holding shard k's lease, or "".
func (h *harness) leaseHolder(ctx context.Context, k int) string {
	kv, err := h.js.KeyValue(ctx, contract.LeaseBucket)
	if err != nil {
		return ""
	}
	e, err := kv.Get(ctx, fmt.Sprintf("shard.%d", k))
	if err != nil {
		return ""
	}
	var rec struct {
		Instance string `json:"instance"`
	}
	if json.Unmarshal(e.Value(), &rec) != nil {
		return ""
	}
	return rec.Instance
}

// checkStream asserts that every agent's events have sequences 1..n exactly
// once and that the presence history equals the simulator's ground truth.
func (h *harness) checkStream(t *testing.T, c *collector) {
	t.Helper()
	events, errs := c.snapshot()
	for _, err := range errs {
		t.Error(err)
	}
	ids := map[string]bool{}
	last := map[string]uint64{}
	got := map[string][]string{}
	for _, ev := range events {
		if ids[ev.ID] {
			t.Errorf("duplicate event %s", ev.ID)
		}
		ids[ev.ID] = true
		if ev.Sequence != last[ev.Agent]+1 {
			t.Errorf("agent %s: sequence %d after %d", ev.Agent, ev.Sequence, last[ev.Agent])
		}
		last[ev.Agent] = ev.Sequence
		if ev.Type == "presence.changed" {
			got[ev.Agent] = append(got[ev.Agent], ev.Data["current"].(map[string]any)["id"].(string))
		}
	}
	for agent, hist := range h.presenceHistory() {
		if strings.Join(got[agent], ",") != strings.Join(hist, ",") {
			t.Errorf("agent %s presence history:\n got %v\nwant %v", agent, got[agent], hist)
		}
	}
}

// TestFailoverAfterLeaderIsKilled: two bridges share one JetStream and the
// simulator; the leader is killed with SIGKILL; the standby takes over
// within the lease TTL and the stream shows no duplicate and no missing
// transition.
func TestFailoverAfterLeaderIsKilled(t *testing.T) {
	const ttl = 2 * time.Second
	h := newHarness(t, 8, 21)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := func(id string) map[string]string {
		return h.env(map[string]string{"BRIDGE_INSTANCE_ID": id, "BRIDGE_LEASE_TTL": ttl.String()})
	}
	a := h.start(env("bridge-a"), "run")
	c := h.collect(ctx)
	testwait.Until(t, waitScale*30*time.Second, "bridge-a to lead and publish every agent", func() bool {
		return h.leaseHolder(ctx, 0) == "bridge-a" && h.caughtUp(c)
	})
	b := h.start(env("bridge-b"), "run")
	bOps := opsAddr(t, b)
	testwait.Until(t, waitScale*20*time.Second, "bridge-b ready but idle", func() bool {
		return strings.Contains(scrape(bOps, "/readyz"), `"status":"standby"`) &&
			strings.Contains(scrape(bOps, "/metrics"), `ccaas_bridge_leader{shard="0"} 0`)
	})
	for i := 0; i < 3; i++ {
		h.sim.Step()
		testwait.Until(t, waitScale*20*time.Second, "a round on the stream", func() bool { return h.caughtUp(c) })
	}
	if got := h.leaseHolder(ctx, 0); got != "bridge-a" {
		t.Fatalf("lease holder %q while bridge-a is alive, want bridge-a", got)
	}

	killed := time.Now()
	if code := a.stop(t, syscall.SIGKILL, 10*time.Second); code != -int(syscall.SIGKILL) {
		t.Fatalf("bridge-a exit %d, want killed", code)
	}
	h.sim.Step() // changes while nobody polls
	testwait.Until(t, waitScale*2*ttl, "bridge-b to take the lease", func() bool { return h.leaseHolder(ctx, 0) == "bridge-b" })
	// The lease expires after the TTL and the standby, retrying every
	// third of it, takes it at its next attempt: well within twice the TTL
	// however loaded the runner (a standby that ignored the expiry would
	// wait for a restart, not a TTL).
	if took := time.Since(killed); took > 2*ttl {
		t.Errorf("standby took %s to take over, want within the lease TTL %s", took, ttl)
	} else {
		t.Logf("standby took over %s after the leader died (TTL %s)", took.Round(time.Millisecond), ttl)
	}
	testwait.Until(t, waitScale*20*time.Second, "bridge-b to publish the change made during failover", func() bool { return h.caughtUp(c) })
	if m := scrape(bOps, "/metrics"); !strings.Contains(m, `ccaas_bridge_leader{shard="0"} 1`) {
		t.Errorf("bridge-b leads but its metric says otherwise:\n%s", m)
	}
	testwait.Until(t, waitScale*10*time.Second, "bridge-b ready and active", func() bool {
		return strings.Contains(scrape(bOps, "/readyz"), `"status":"ready"`)
	})
	for i := 0; i < 3; i++ {
		h.sim.Step()
		testwait.Until(t, waitScale*20*time.Second, "a round after failover", func() bool { return h.caughtUp(c) })
	}
	h.checkStream(t, c)
}

// TestShardsSplitAgentsAcrossProcesses: three processes, three shards:
// each process ends up with one shard, and every agent is polled by exactly
// one process.
func TestShardsSplitAgentsAcrossProcesses(t *testing.T) {
	tokens := []string{"token-p0", "token-p1", "token-p2"}
	var mu sync.Mutex
	recording := false
	pollers := map[string]map[string]bool{} // agent -> tokens seen
	wrap := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			agent := strings.ToLower(r.Header.Get("MSCRMCallerID"))
			tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			mu.Lock()
			if recording && agent != "" {
				if pollers[agent] == nil {
					pollers[agent] = map[string]bool{}
				}
				pollers[agent][tok] = true
			}
			mu.Unlock()
			next.ServeHTTP(w, r)
		})
	}
	h := newHarness(t, 30, 5, withSim(func(o *simulator.Options) { o.StaticTokens = tokens }), withHandler(wrap))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, tok := range tokens {
		h.start(h.env(map[string]string{
			"BRIDGE_INSTANCE_ID": fmt.Sprintf("p%d", i), "BRIDGE_TOKEN": tok, "BRIDGE_SHARD_COUNT": "3", "BRIDGE_LEASE_TTL": "2s",
		}), "run")
	}
	c := h.collect(ctx)
	balanced := func() bool {
		seen := map[string]bool{}
		for k := 0; k < 3; k++ {
			holder := h.leaseHolder(ctx, k)
			if holder == "" || seen[holder] {
				return false
			}
			seen[holder] = true
		}
		return true
	}
	testwait.Until(t, waitScale*30*time.Second, "one shard per process", balanced)
	testwait.Until(t, waitScale*30*time.Second, "every agent on the stream", func() bool { return h.caughtUp(c) })

	// Record who polls whom over a few poll intervals of the balanced state.
	mu.Lock()
	recording = true
	mu.Unlock()
	for i := 0; i < 3; i++ {
		h.sim.Step()
		testwait.Until(t, waitScale*20*time.Second, "a round on the stream", func() bool { return h.caughtUp(c) })
	}
	mu.Lock()
	recording = false
	mu.Unlock()
	if !balanced() {
		t.Fatal("shards moved while recording; the assignment is not stable")
	}
	mu.Lock()
	defer mu.Unlock()
	perToken := map[string]int{}
	for _, id := range h.sim.AgentIDs() {
		if n := len(pollers[id]); n != 1 {
			t.Errorf("agent %s polled by %d processes %v, want exactly one", id, n, pollers[id])
		}
		for tok := range pollers[id] {
			perToken[tok]++
		}
	}
	if len(perToken) != 3 {
		t.Errorf("agents per process %v: want all three processes polling", perToken)
	}
	h.checkStream(t, c)
}
