package testwait

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	tests := []struct {
		name   string
		within time.Duration
		holdAt int32 // the call from which cond holds; 0 never
		want   bool
	}{
		{name: "holds at once", within: time.Second, holdAt: 1, want: true},
		{name: "holds after a few polls", within: 5 * time.Second, holdAt: 4, want: true},
		{name: "never holds", within: 30 * time.Millisecond, holdAt: 0, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			start := time.Now()
			got := poll(tt.within, func() bool {
				n := calls.Add(1)
				return tt.holdAt != 0 && n >= tt.holdAt
			})
			if got != tt.want {
				t.Fatalf("poll = %v after %d calls, want %v", got, calls.Load(), tt.want)
			}
			if !tt.want && time.Since(start) < tt.within {
				t.Errorf("gave up after %s, before the deadline %s", time.Since(start), tt.within)
			}
			if tt.holdAt > 0 && calls.Load() != tt.holdAt {
				t.Errorf("cond called %d times, want %d (no call after it held)", calls.Load(), tt.holdAt)
			}
		})
	}
}
