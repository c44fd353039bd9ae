package lease

import "sort"

// Held returns the shards being polled, sorted.
func (a *Assignment) Held() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]int, 0, len(a.held))
	for k := range a.held {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

// InstanceID returns the name this process uses in the bucket.
func (s *Set) InstanceID() string { return s.opts.InstanceID }
