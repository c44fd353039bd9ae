package lease

import "sync"

// Assignment decides which configured agents this process polls: all of
// them without leases, or those of the shards whose lease it holds. Every
// change of either the agent list or the held shards is passed to apply
// (normally the poller's SetAgents) at once. It is safe for concurrent use.
type Assignment struct {
	shards int
	apply  func(ids []string)

	mu     sync.Mutex
	all    []string
	held   map[int]bool
	leased bool // false: every agent, no lease
}

// NewAssignment returns an Assignment of the agents all over shards. With
// leased false every agent is assigned as soon as SetAgents is called;
// otherwise only those of the shards passed to Hold.
func NewAssignment(all []string, shards int, leased bool, apply func([]string)) *Assignment {
	return &Assignment{shards: shards, apply: apply, all: all, held: map[int]bool{}, leased: leased}
}

// SetAgents replaces the configured agent list (the agent file changed).
func (a *Assignment) SetAgents(ids []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.all = ids
	a.applyLocked()
}

// Agents returns the configured agents of shard.
func (a *Assignment) Agents(shard int) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return AgentsOf(a.all, shard, a.shards)
}

// Hold starts or stops polling the agents of shard.
func (a *Assignment) Hold(shard int, held bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if held {
		a.held[shard] = true
	} else {
		delete(a.held, shard)
	}
	a.applyLocked()
}

func (a *Assignment) applyLocked() {
	if !a.leased {
		a.apply(a.all)
		return
	}
	ids := make([]string, 0, len(a.all))
	for _, id := range a.all {
		if a.held[ShardOf(id, a.shards)] {
			ids = append(ids, id)
		}
	}
	a.apply(ids)
}
