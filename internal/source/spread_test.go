package source

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock that moves only when the test advances it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       chan time.Time
	at      time.Time
	stopped bool
	fired   bool
	clk     *fakeClock
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{c: make(chan time.Time, 1), at: f.now.Add(d), clk: f}
	if d <= 0 {
		t.fired = true
		t.c <- f.now
		return t
	}
	f.timers = append(f.timers, t)
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

// Advance moves the clock and fires due timers.
func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	keep := f.timers[:0]
	for _, t := range f.timers {
		switch {
		case t.stopped || t.fired:
		case !t.at.After(f.now):
			t.fired = true
			t.c <- f.now
		default:
			keep = append(keep, t)
		}
	}
	f.timers = keep
}

// pending counts armed timers.
func (f *fakeClock) pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, t := range f.timers {
		if !t.stopped && !t.fired {
			n++
		}
	}
	return n
}

// clockedGetter records when (in fake time) each agent was polled and
// fails every poll while down is set.
type clockedGetter struct {
	clk   *fakeClock
	mu    sync.Mutex
	times []time.Duration // since start
	start time.Time
	down  bool
}

func (g *clockedGetter) Get(_ context.Context, id string) (Snapshot, error) {
	now := g.clk.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.times = append(g.times, now.Sub(g.start))
	if g.down {
		return Snapshot{}, &PollError{AgentID: id, Class: ClassTransport, Err: errors.New("connection refused")}
	}
	return Snapshot{AgentID: id}, nil
}

// TestScheduleSpreadsTenThousandAgents runs the real dispatcher and
// workers on a fake clock: 10,000 agents every 10 s. In steady state, and
// again once an 11 s outage of every agent is over, no 100 ms window may hold
// more than twice the average number of polls, and no agent is polled more
// than once per interval.
func TestScheduleSpreadsTenThousandAgents(t *testing.T) {
	const (
		agents   = 10_000
		interval = 10 * time.Second
		step     = 10 * time.Millisecond
		window   = 100 * time.Millisecond
	)
	clk := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	g := &clockedGetter{clk: clk, start: clk.now}
	p, err := NewPoller(PollerOptions{
		Getter: g, Sink: SinkFunc(func(context.Context, Observation) error { return nil }),
		Interval: interval, MaxConcurrency: 16, Clock: clk,
		BackoffMax: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, agents)
	for i := range ids {
		ids[i] = fmt.Sprintf("%08x-0000-4000-8000-%012x", i*2654435761%(1<<32), i)
	}
	p.SetAgents(ids)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// settle waits until the dispatcher sleeps on a timer and every poll
	// it handed out is finished.
	settle := func() {
		deadline := time.Now().Add(10 * time.Second)
		for clk.pending() == 0 || p.inflight.Load() != 0 {
			if time.Now().After(deadline) {
				t.Fatal("poller did not settle")
			}
			runtime.Gosched()
		}
	}
	run := func(until time.Duration) {
		for clk.Now().Sub(g.start) < until {
			settle()
			clk.Advance(step)
		}
		settle()
	}
	check := func(name string, from, to time.Duration, steady bool) {
		t.Helper()
		g.mu.Lock()
		defer g.mu.Unlock()
		counts := make([]int, (to-from)/window)
		total := 0
		for _, at := range g.times {
			if at >= from && at < to {
				counts[(at-from)/window]++
				total++
			}
		}
		avg := float64(total) / float64(len(counts))
		peak := 0
		for _, c := range counts {
			peak = max(peak, c)
		}
		t.Logf("%s: %d polls, %.1f per 100ms window on average, peak %d", name, total, avg, peak)
		if want := int(float64(agents) * float64(to-from) / float64(interval)); steady && (total < want*99/100 || total > want*101/100) {
			t.Errorf("%s: %d polls, want about %d (each agent once per interval)", name, total, want)
		}
		if steady && float64(peak) > 2*avg {
			t.Errorf("%s: a 100ms window holds %d polls, more than twice the average %.1f", name, peak, avg)
		}
		if steadyAvg := float64(agents) * float64(window) / float64(interval); float64(peak) > 2*steadyAvg {
			t.Errorf("%s: a 100ms window holds %d polls, more than twice the steady average %.1f", name, peak, steadyAvg)
		}
	}

	run(2 * interval)
	check("steady state", interval, 2*interval, true)
	if st := p.Status(); !st.FirstRoundDone || p.StateCounts()["healthy"] != agents {
		t.Errorf("status after two rounds = %+v", st)
	}

	// Outage: every poll fails for 11 s; agents back off with jitter and
	// return to their own place in the interval when it ends. At no
	// time does a window exceed twice the steady average.
	g.mu.Lock()
	g.down = true
	g.mu.Unlock()
	run(3*interval + time.Second)
	if st := p.StateCounts(); st["backing_off"] != agents {
		t.Errorf("during the outage: %v", st)
	}
	g.mu.Lock()
	g.down = false
	g.mu.Unlock()
	run(8 * interval)
	check("outage and recovery", 2*interval, 7*interval, false)
	check("after the outage", 7*interval, 8*interval, true)
	if st := p.StateCounts(); st["healthy"] != agents {
		t.Errorf("after the outage: %v", st)
	}
}

// TestSlotWidthFor checks the default scheduling granularity: a hundredth of
// the interval, never below MinSlotWidth nor above MaxSlotWidth.
func TestSlotWidthFor(t *testing.T) {
	for _, tc := range []struct {
		interval, want time.Duration
	}{
		{50 * time.Millisecond, MinSlotWidth},
		{time.Second, 10 * time.Millisecond},
		{2 * time.Second, 20 * time.Millisecond},
		{10 * time.Second, 100 * time.Millisecond},
		{25 * time.Second, 250 * time.Millisecond},
		{30 * time.Second, MaxSlotWidth},
		{time.Hour, MaxSlotWidth},
	} {
		if got := SlotWidthFor(tc.interval); got != tc.want {
			t.Errorf("SlotWidthFor(%s) = %s, want %s", tc.interval, got, tc.want)
		}
	}
}
