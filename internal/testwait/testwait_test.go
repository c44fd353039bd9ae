package testwait

import (
	"fmt"
	"runtime"
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

// recordingTB is a testing.TB that keeps what Fatalf says and stops the
// goroutine as a real test's Fatalf does.
type recordingTB struct {
	testing.TB
	msg string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestUntilStatedSaysWhatItSawLast: the failure names what was waited for
// and the condition's last state.
func TestUntilStatedSaysWhatItSawLast(t *testing.T) {
	r := &recordingTB{TB: t}
	var n int
	done := make(chan struct{})
	go func() {
		defer close(done)
		UntilStated(r, 20*time.Millisecond, "the answer", func() (bool, string) {
			n++
			return false, fmt.Sprintf("seen %d", n)
		})
	}()
	<-done
	want := fmt.Sprintf("timed out after 20ms waiting for the answer (last: seen %d)", n)
	if r.msg != want {
		t.Errorf("failure %q, want %q", r.msg, want)
	}
}
