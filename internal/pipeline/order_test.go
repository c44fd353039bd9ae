package pipeline

import (
	"sync"
	"testing"
)

// An agent's order lock excludes its other holders, and the pipeline keeps
// it only while somebody holds or waits for it.
func TestOrderLock(t *testing.T) {
	p := &Pipeline{order: map[string]*orderLock{}}
	agents := []string{"a", "b", "c"}
	counts := map[string]*int{}
	for _, id := range agents {
		counts[id] = new(int)
	}
	const perAgent = 200
	var wg sync.WaitGroup
	for _, id := range agents {
		for range 4 {
			wg.Go(func() {
				for range perAgent / 4 {
					unlock := p.lockOrder(id)
					*counts[id]++ // unguarded but for the order lock: -race sees two holders
					unlock()
				}
			})
		}
	}
	wg.Wait()
	for _, id := range agents {
		if *counts[id] != perAgent {
			t.Errorf("agent %s: %d increments, want %d", id, *counts[id], perAgent)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.order) != 0 {
		t.Errorf("%d order locks kept with nobody holding them", len(p.order))
	}
}
