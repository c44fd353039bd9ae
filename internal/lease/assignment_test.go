package lease

import (
	"slices"
	"sync"
	"testing"
)

func TestAssignment(t *testing.T) {
	all := []string{
		"394382b6-a4d4-ee11-904c-00224808a166", "cc05cf62-6242-ee11-be6e-6045bdd7ac2c",
		"1c1e1f20-3811-4605-887d-2f06032d2f7e", "7306ad85-7d02-4d02-a61c-e7ff818d3ce9",
		"eb190a88-f300-42ee-836e-d79e27ccadba", "928bab48-b3ec-4774-a8ee-39d03fe50329",
	}
	for k := range 3 {
		if len(AgentsOf(all, k, 3)) == 0 || len(AgentsOf(all[:2], 0, 3)) == 0 {
			t.Fatalf("test data must put agents in every shard (shard %d is empty)", k)
		}
	}
	var mu sync.Mutex
	var applied []string
	apply := func(ids []string) { mu.Lock(); applied = slices.Clone(ids); mu.Unlock() }
	got := func() []string { mu.Lock(); defer mu.Unlock(); return applied }

	t.Run("without leases every agent", func(t *testing.T) {
		a := NewAssignment(nil, 3, false, apply)
		a.SetAgents(all)
		if !slices.Equal(got(), all) {
			t.Fatalf("applied %v, want all", got())
		}
	})
	t.Run("with leases only held shards", func(t *testing.T) {
		a := NewAssignment(all, 3, true, apply)
		a.Hold(1, true)
		if want := AgentsOf(all, 1, 3); !slices.Equal(got(), want) {
			t.Fatalf("holding shard 1: applied %v, want %v", got(), want)
		}
		a.Hold(2, true)
		for _, id := range got() {
			if s := ShardOf(id, 3); s != 1 && s != 2 {
				t.Fatalf("agent %s of shard %d applied while holding 1 and 2", id, s)
			}
		}
		if n := len(AgentsOf(all, 1, 3)) + len(AgentsOf(all, 2, 3)); len(got()) != n {
			t.Fatalf("applied %d agents, want %d", len(got()), n)
		}
		if !slices.Equal(a.Held(), []int{1, 2}) {
			t.Fatalf("Held = %v", a.Held())
		}
		a.Hold(1, false)
		a.Hold(2, false)
		if len(got()) != 0 {
			t.Fatalf("applied %v after every shard was released", got())
		}
		a.Hold(0, true)
		a.SetAgents(all[:2]) // the agent file changed
		if want := AgentsOf(all[:2], 0, 3); !slices.Equal(got(), want) {
			t.Fatalf("after the list changed: applied %v, want %v", got(), want)
		}
	})
}
