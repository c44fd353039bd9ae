package main

import (
	"sort"
	"sync"

	"github.com/ccaas/presence-bridge/internal/lease"
)

// assignment decides which configured agents this process polls: all of
// them without leases, or those of the shards whose lease it holds. Every
// change of either the agent list or the held shards is applied to the
// poller at once.
type assignment struct {
	shards int
	apply  func(ids []string)

	mu     sync.Mutex
	all    []string
	held   map[int]bool
	leased bool // false: every agent, no lease
}

func newAssignment(all []string, shards int, leased bool, apply func([]string)) *assignment {
	return &assignment{shards: shards, apply: apply, all: all, held: map[int]bool{}, leased: leased}
}

// SetAgents replaces the configured agent list (the agent file changed).
func (a *assignment) SetAgents(ids []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.all = ids
	a.applyLocked()
}

// Agents returns the configured agents of shard.
func (a *assignment) Agents(shard int) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return lease.AgentsOf(a.all, shard, a.shards)
}

// Hold starts or stops polling the agents of shard.
func (a *assignment) Hold(shard int, held bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if held {
		a.held[shard] = true
	} else {
		delete(a.held, shard)
	}
	a.applyLocked()
}

// Held returns the shards being polled, sorted.
func (a *assignment) Held() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]int, 0, len(a.held))
	for k := range a.held {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

func (a *assignment) applyLocked() {
	if !a.leased {
		a.apply(a.all)
		return
	}
	ids := make([]string, 0, len(a.all))
	for _, id := range a.all {
		if a.held[lease.ShardOf(id, a.shards)] {
			ids = append(ids, id)
		}
	}
	a.apply(ids)
}
